"""RunInference handlers that embed keyed chunks: uint8 frames, flow stacks or clips with the
stream's CNN (BackboneModelHandler: a `features.backbones` network, or its flow, inflated or
C3D variant), log-mel examples with VGGish (AudioModelHandler); handler_for picks the one a
FeatureSpec needs.

Beam's TFModelHandler pulls in tensorflow_hub and tf-keras; this one only needs Keras 3.
A chunk whose embedding fails comes back as its error message, not as an exception, so that
one bad video fails alone (embed_error in the dead letter) and the job goes on.
"""

import contextlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler

from features import storage
from features.embedder import FrameEmbedder
from features.formats import VGGISH_BACKBONE
from features.stream_models import build_stream_model
from features.streams import FeatureSpec
from features.vggish import AudioEmbedder, build_vggish
from pipelines.config import FaultPlan

NAMESPACE = "framevlad"
MODEL_LOADS = "model_loads"
ChunkKey = tuple[bytes, int]  # (decode_embed.beam_key of the id, the chunk's first frame)
# [n, H, W, 3] uint8 frames (rgb, fovea), [n, H, W, 2L] uint8 flow, [n, 16, H, W, 3] uint8
# clips (i3d, c3d), or [n, 96, 64] float32 log-mel examples (audio)
KeyedChunk = tuple[ChunkKey, np.ndarray]
# The chunk's features [n, D] float32, or why they could not be computed.
KeyedFeatures = tuple[ChunkKey, np.ndarray | str]


def allow_gpu_memory_growth() -> None:
    """TensorFlow otherwise takes all GPU memory at start, leaving none to a second model."""
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised: the setting stays
            tf.config.experimental.set_memory_growth(gpu, True)


class LoadedBackbone:
    """The shared model of one process, with its load not yet counted in a Beam metric:
    load_model runs in DoFn.setup, where metric updates are lost, so the first inference
    after a load counts it (as RunInference caches its own load metrics)."""

    def __init__(self, embedder: FrameEmbedder | AudioEmbedder) -> None:
        self.embedder = embedder
        self._uncounted = 1
        self._lock = threading.Lock()

    def take_uncounted_loads(self) -> int:
        with self._lock:
            loads, self._uncounted = self._uncounted, 0
        return loads


class BackboneModelHandler(ModelHandler[KeyedChunk, KeyedFeatures, LoadedBackbone]):
    """Examples are ((id, start), frames [n, H, W, 3] uint8); inferences ((id, start),
    features [n, D] float32 or an error message).

    Chunks from several videos are concatenated and run in fixed-size batches, so the compiled
    graph is traced once and a video's short last chunk does not waste a whole batch.
    The spec's `precision` and `jit_compile` go to FrameEmbedder; a precision the machine
    refuses fails at load, once per worker.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        frames_per_batch: int = 32,
        faults: FaultPlan | None = None,
        max_chunks_per_batch: int = 2,
    ) -> None:
        self._spec = spec
        self._frames_per_batch = frames_per_batch
        self._faults = faults or FaultPlan()
        self._max_chunks_per_batch = max_chunks_per_batch

    def load_model(self) -> LoadedBackbone:
        allow_gpu_memory_growth()
        weights = storage.stage_file(self._spec.weights)  # a gs:// weights file, once
        spec = self._spec
        model = build_stream_model(spec.name, spec.backbone, weights, spec.seed)
        batch_size = spec.samples_per_batch(self._frames_per_batch)
        embedder = FrameEmbedder(model, batch_size, spec.precision, spec.jit_compile)
        return LoadedBackbone(embedder)

    def run_inference(
        self,
        batch: Sequence[KeyedChunk],
        model: LoadedBackbone,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[KeyedFeatures]:
        loads = model.take_uncounted_loads()
        if loads:
            beam.metrics.Metrics.counter(NAMESPACE, MODEL_LOADS).inc(loads)
        keys = [key for key, _ in batch]
        try:
            features = self._embed(model.embedder, batch)
        except Exception:  # noqa: BLE001 -- retried chunk by chunk to find the bad one
            return [(key, self._embed_one(model.embedder, (key, frames))) for key, frames in batch]
        boundaries = np.cumsum([len(frames) for _, frames in batch])[:-1]
        return list(zip(keys, np.split(features, boundaries), strict=True))

    def _embed(
        self, embedder: FrameEmbedder | AudioEmbedder, batch: Sequence[KeyedChunk]
    ) -> np.ndarray:
        ids = [key[0].decode("utf-8", "surrogateescape") for key, _ in batch]
        failing = [video_id for video_id in ids if video_id in self._faults.fail_embed_ids]
        if failing:
            raise RuntimeError(f"injected CNN failure for {failing[0]!r}")
        features = embedder.embed(np.concatenate([frames for _, frames in batch]))
        start = 0
        for video_id, (_, frames) in zip(ids, batch, strict=True):
            if video_id in self._faults.nan_embed_ids:
                features[start : start + len(frames)] = np.nan
            start += len(frames)
        return features  # [sum n, D] float32

    def _embed_one(
        self, embedder: FrameEmbedder | AudioEmbedder, chunk: KeyedChunk
    ) -> np.ndarray | str:
        try:
            return self._embed(embedder, [chunk])
        except Exception as error:  # noqa: BLE001 -- the video fails, the job goes on
            return f"{type(error).__name__}: {error}"

    def get_num_bytes(self, batch: Sequence[KeyedChunk]) -> int:
        return sum(frames.nbytes for _, frames in batch)

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": 1, "max_batch_size": self._max_chunks_per_batch}

    def get_metrics_namespace(self) -> str:
        return f"framevlad_{self._spec.name}"


class AudioModelHandler(BackboneModelHandler):
    """Examples are ((id, start), log-mel [n, 96, 64] float32); inferences ((id, start),
    VGGish embeddings [n, 128] float32 or an error message). Batching, fault injection and
    per-chunk retries are the backbone handler's."""

    def load_model(self) -> LoadedBackbone:
        allow_gpu_memory_growth()
        weights = storage.stage_file(self._spec.weights)
        model = build_vggish(weights, seed=self._spec.seed)
        return LoadedBackbone(
            AudioEmbedder(
                model, self._frames_per_batch, self._spec.precision, self._spec.jit_compile
            )
        )


def handler_for(
    spec: FeatureSpec, frames_per_batch: int = 32, faults: FaultPlan | None = None
) -> BackboneModelHandler:
    """The RunInference handler that embeds `spec`'s chunks: VGGish for "vggish", else the
    stream's CNN, at the spec's precision and XLA setting."""
    handler = AudioModelHandler if spec.backbone == VGGISH_BACKBONE else BackboneModelHandler
    return handler(spec, frames_per_batch, faults)
