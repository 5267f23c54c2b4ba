"""The RunInference handlers build their embedder at the spec's precision and XLA setting."""

import dataclasses

import numpy as np
import pytest

from features.streams import FeatureSpec
from features.vggish import AudioEmbedder
from pipelines.model_handler import AudioModelHandler, BackboneModelHandler, handler_for

TINY = FeatureSpec("rgb", "tiny", "random", 0, (64, 64), 1.0, "fit", 8)
AUDIO = FeatureSpec("audio", "vggish", "random", 0, (96, 64), 1.0, "fit", 16)


def test_defaults_keep_float32_without_xla_on_cpu():
    embedder = BackboneModelHandler(TINY, 4).load_model().embedder
    assert (embedder.precision, embedder.jit_compile, embedder.batch_size) == ("float32", False, 4)


def test_precision_and_jit_reach_the_embedder():
    handler = handler_for(dataclasses.replace(TINY, precision="mixed", jit_compile=True), 4)
    embedder = handler.load_model().embedder
    assert (embedder.precision, embedder.jit_compile) == ("mixed", True)
    frames = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    ((key, features),) = handler.run_inference([((b"v", 0), frames)], handler.load_model())
    assert key == (b"v", 0) and features.shape == (3, 256) and features.dtype == np.float32


@pytest.mark.slow
def test_audio_handler_passes_precision_to_vggish():
    handler = handler_for(dataclasses.replace(AUDIO, precision="mixed", jit_compile=False), 4)
    assert type(handler) is AudioModelHandler
    embedder = handler.load_model().embedder
    assert isinstance(embedder, AudioEmbedder) and embedder.precision == "mixed"
