"""Run a backbone over any number of frames through one fixed-shape compiled graph."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from features.backbones import BackboneError


class FrameEmbedder:
    """uint8 [n, H, W, 3] frames -> float32 [n, D] features, for a Beam ModelHandler.

    Videos yield ragged frame counts; padding every chunk to `batch_size` keeps a single
    input shape, so the graph is traced once and never retraced per video.
    """

    def __init__(self, model: keras.Model, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise BackboneError(f"batch_size {batch_size}: must be at least 1")
        self.model = model
        self.batch_size = batch_size
        self.frame_shape: tuple[int, int, int] = tuple(model.input_shape[1:])
        self.feature_dims: int = int(model.output_shape[-1])
        self._traces = 0

        # A closure, not a bound method: tf.function's retracing detector keys bound methods
        # by class, so several embedders (one per backbone) would warn about each other.
        def embed_batch(frames: tf.Tensor) -> tf.Tensor:
            self._traces += 1
            return tf.cast(model(frames, training=False), tf.float32)

        # XLA measured slower for InceptionV3 on CPU (30 vs 37 frames/s), so it stays off.
        signature = [tf.TensorSpec([batch_size, *self.frame_shape], tf.uint8)]
        self._embed_batch = tf.function(embed_batch, input_signature=signature, jit_compile=False)

    @property
    def traces(self) -> int:
        """How many times the batch graph has been traced (1 after the first embed)."""
        return self._traces

    def embed(self, frames: np.ndarray) -> np.ndarray:
        """Features of `frames`, row for row; n = 0 gives an empty [0, D] array."""
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.shape[1:] != self.frame_shape:
            raise BackboneError(
                f"frames {frames.dtype}{list(frames.shape)}: expected uint8 "
                f"[n, {', '.join(map(str, self.frame_shape))}] (resize to the backbone's size)"
            )
        n = len(frames)
        features = np.empty((n, self.feature_dims), dtype=np.float32)
        for start in range(0, n, self.batch_size):
            chunk = frames[start : start + self.batch_size]
            rows = len(chunk)
            if rows < self.batch_size:
                padding = np.zeros((self.batch_size - rows, *self.frame_shape), np.uint8)
                chunk = np.concatenate([chunk, padding])
            features[start : start + rows] = self._embed_batch(chunk).numpy()[:rows]
        return features
