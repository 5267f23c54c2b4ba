"""RunInference handler that embeds uint8 frame chunks with a `features.backbones` CNN.

Beam's TFModelHandler pulls in tensorflow_hub and tf-keras; this one only needs Keras 3.
"""

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from features.backbones import build_backbone
from features.embedder import FrameEmbedder
from pipelines import storage

_loads_in_this_process = 0


def loads_in_this_process() -> int:
    """How many backbones this process has built; RunInference's shared handle keeps it at
    one per process however many threads or bundles run."""
    return _loads_in_this_process


def allow_gpu_memory_growth() -> None:
    """TensorFlow otherwise takes all GPU memory at start, leaving none to a second model."""
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised: the setting stays
            tf.config.experimental.set_memory_growth(gpu, True)


class BackboneModelHandler(ModelHandler[np.ndarray, PredictionResult, FrameEmbedder]):
    """Examples are frame chunks [n, H, W, 3] uint8; inferences are features [n, D] float32.

    Chunks from several videos are concatenated and run in fixed-size batches, so the compiled
    graph is traced once and a video's short last chunk does not waste a whole batch.
    """

    def __init__(
        self,
        backbone: str,
        weights: str,
        seed: int = 0,
        batch_size: int = 32,
        max_chunks_per_batch: int = 2,
    ) -> None:
        self._backbone = backbone
        self._weights = weights
        self._seed = seed
        self._batch_size = batch_size
        self._max_chunks_per_batch = max_chunks_per_batch

    def load_model(self) -> FrameEmbedder:
        global _loads_in_this_process
        _loads_in_this_process += 1
        allow_gpu_memory_growth()
        weights = storage.stage_locally(self._weights)  # a gs:// weights file, once per worker
        model = build_backbone(self._backbone, weights=weights, seed=self._seed)
        return FrameEmbedder(model, batch_size=self._batch_size)

    def run_inference(
        self,
        batch: Sequence[np.ndarray],
        model: FrameEmbedder,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[PredictionResult]:
        features = model.embed(np.concatenate(batch))
        boundaries = np.cumsum([len(chunk) for chunk in batch])[:-1]
        # The frames are not echoed back: downstream needs only the features.
        return [PredictionResult(None, chunk) for chunk in np.split(features, boundaries)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(chunk.nbytes for chunk in batch)

    def batch_elements_kwargs(self) -> dict[str, int]:
        return {"min_batch_size": 1, "max_batch_size": self._max_chunks_per_batch}

    def get_metrics_namespace(self) -> str:
        return "framevlad_backbone"
