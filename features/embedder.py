"""Run a stream's CNN over any number of samples through one fixed-shape compiled graph."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from features.backbones import BackboneError
from features.formats import FLOAT32, MIXED
from features.precision import resolve_jit_compile, with_precision


class FrameEmbedder:
    """[n, *input shape] samples -> float32 [n, D] features, for a Beam ModelHandler.

    Samples are the model's input dtype and shape: uint8 frames [n, H, W, 3], flow stacks
    or clips for the picture streams, float32 log-mel examples for VGGish. Videos yield
    ragged counts; padding every chunk to `batch_size` keeps a single input shape, so the
    graph is traced (and XLA-compiled) once and never again per video.

    `precision` "mixed" runs a float16 copy of the model (features.precision), and checks
    that its features are finite (float16 overflows at 65504; NaN and inf would quantize
    silently). `jit_compile` None compiles with XLA where a GPU is present, not on CPU.
    """

    def __init__(
        self,
        model: keras.Model,
        batch_size: int = 32,
        precision: str = FLOAT32,
        jit_compile: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise BackboneError(f"batch_size {batch_size}: must be at least 1")
        self.model = with_precision(model, precision)
        self.batch_size = batch_size
        self.precision = precision
        self.jit_compile = resolve_jit_compile(jit_compile)
        self.input_shape: tuple[int, ...] = tuple(model.input_shape[1:])
        self.input_dtype = np.dtype(model.inputs[0].dtype)
        self.feature_dims: int = int(model.output_shape[-1])
        self._traces = 0
        run = self.model

        # A closure, not a bound method: tf.function's retracing detector keys bound methods
        # by class, so several embedders (one per backbone) would warn about each other.
        def embed_batch(samples: tf.Tensor) -> tf.Tensor:
            self._traces += 1
            return tf.cast(run(samples, training=False), tf.float32)

        signature = [tf.TensorSpec([batch_size, *self.input_shape], self.input_dtype)]
        self._embed_batch = tf.function(
            embed_batch, input_signature=signature, jit_compile=self.jit_compile
        )

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """One sample's shape, without the batch axis (a frame's for the rgb stream)."""
        return self.input_shape

    @property
    def traces(self) -> int:
        """How many times the batch graph has been traced (1 after the first embed)."""
        return self._traces

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Features of `frames`, row for row; n = 0 gives an empty [0, D] array."""
        frames = np.asarray(frames)
        if frames.dtype != self.input_dtype or frames.shape[1:] != self.input_shape:
            raise BackboneError(
                f"frames {frames.dtype}{list(frames.shape)}: expected {self.input_dtype} "
                f"[n, {', '.join(map(str, self.input_shape))}] (resize to the backbone's size)"
            )
        n = len(frames)
        features = np.empty((n, self.feature_dims), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            chunk = frames[start : start + self.batch_size]
            rows = len(chunk)
            if rows < self.batch_size:
                padding = np.zeros((self.batch_size - rows, *self.input_shape), self.input_dtype)
                chunk = np.concatenate([chunk, padding])
            features[start : start + rows] = self._embed_batch(chunk).numpy()[:rows]
        if self.precision == MIXED and not np.isfinite(features).all():
            raise BackboneError(
                f"--precision mixed: {int((~np.isfinite(features)).any(axis=1).sum())} of {n} "
                "samples' features overflowed float16; use --precision float32"
            )
        return features
