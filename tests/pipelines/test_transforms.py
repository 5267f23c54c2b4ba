"""The extraction steps on their own, with TestPipeline and real videos."""

import collections
import json

import apache_beam as beam
import numpy as np
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from features.pca import fit_pca
from features.streams import FeatureSpec
from features.synthetic_video import render_index_frame, write_video
from pipelines import extract_features
from pipelines.config import FaultPlan
from pipelines.decode_embed import (
    EMBED_ERROR,
    FAILED,
    SUMMARY,
    AssembleVideo,
    DecodeFrames,
    WhitenAndQuantize,
)
from pipelines.elements import DecodeSummary, QuantizedChunk, VideoInput
from pipelines.model_handler import MODEL_LOADS, NAMESPACE, BackboneModelHandler, LoadedBackbone
from tests.broken_videos import write_empty
from tests.extraction import run_tiny, tiny_config

TINY = FeatureSpec("rgb", "tiny", "random", 0, (64, 64), 1.0, "fit", 8)


def test_decode_frames_streams_keyed_chunks_then_a_summary(tmp_path):
    video_path = str(tmp_path / "v.mp4")
    write_video(video_path, (render_index_frame(i, 96, 128) for i in range(150)), fps=30)
    write_empty(str(tmp_path / "e.mp4"))
    videos = [
        VideoInput("v", video_path, (1,), True),
        VideoInput("e", str(tmp_path / "e.mp4"), (), False),
        VideoInput("gone", str(tmp_path / "gone.mp4"), (), False),
    ]
    with TestPipeline() as pipeline:
        decoded = (
            pipeline
            | beam.Create(videos)
            | beam.ParDo(DecodeFrames(1.0, 0, (32, 48), 2)).with_outputs(
                FAILED, SUMMARY, main="chunks"
            )
        )
        shapes = decoded.chunks | beam.MapTuple(lambda key, frames: (key, frames.shape))
        expected = [
            ((b"v", 0), (2, 32, 48, 3)),
            ((b"v", 2), (2, 32, 48, 3)),
            ((b"v", 4), (1, 32, 48, 3)),
        ]
        assert_that(shapes, equal_to(expected), "chunks")
        summaries = decoded[SUMMARY] | beam.MapTuple(
            lambda video_id, summary: (video_id, summary.frames, summary.truncated)
        )
        assert_that(summaries, equal_to([(b"v", 5, False)]), "summary")
        reasons = decoded[FAILED] | beam.Map(lambda failure: (failure.video_id, failure.reason))
        assert_that(reasons, equal_to([("e", "empty_file"), ("gone", "read_error")]), "failed")


def test_whiten_and_quantize_turns_errors_and_nan_into_failed_chunks(tmp_path):
    pca = fit_pca(np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32), 4)
    pca_path = tmp_path / "pca.npz"
    pca.save(str(pca_path))
    step = WhitenAndQuantize(str(pca_path))
    step.setup()
    features = np.ones((3, 16), np.float32)
    ((_, ok),) = step.process((("a", 0), features))
    ((_, nan),) = step.process((("b", 0), np.full((3, 16), np.nan, np.float32)))
    ((_, failed),) = step.process((("c", 0), "RuntimeError: the CNN broke"))
    assert ok.quantized.shape == (3, 4) and ok.quantized.dtype == np.uint8 and not ok.error
    assert "NaN" in nan.error and nan.quantized is None
    assert failed.error == "RuntimeError: the CNN broke"


def test_assemble_orders_chunks_and_fails_a_video_with_a_failed_chunk():
    video = VideoInput("v", "/l/v.mp4", (2,), True)
    summary = DecodeSummary(video, frames=3, truncated=False, error="", span_s=2.0)
    ones = np.ones(4)
    chunks = [
        QuantizedChunk(2, np.full((1, 4), 9, np.uint8), 3 * ones),
        QuantizedChunk(0, np.full((2, 4), 7, np.uint8), ones),
    ]
    step = AssembleVideo(["rgb"])
    (embedded,) = step.process((b"v", {"rgb": chunks, SUMMARY: [summary]}))
    assert embedded.features["rgb"][:, 0].tolist() == [7, 7, 9]
    np.testing.assert_allclose(embedded.means["rgb"], 4 / 3 * ones)
    broken = [*chunks, QuantizedChunk(3, None, None, error="quantize: 2 NaN values")]
    (failure,) = step.process((b"v", {"rgb": broken, SUMMARY: [summary]}))
    assert failure.tag == FAILED and failure.value.reason == EMBED_ERROR
    assert failure.value.detail == "quantize: 2 NaN values"


def test_the_handler_fails_only_the_faulty_chunk_of_a_batch():
    faults = FaultPlan(fail_embed_ids=frozenset({"bad"}))
    handler = BackboneModelHandler(TINY, frames_per_batch=4, faults=faults)
    model = handler.load_model()
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    results = dict(handler.run_inference([((b"good", 0), frames), ((b"bad", 0), frames)], model))
    assert results[(b"good", 0)].shape == (2, 256)
    assert "injected CNN failure" in results[(b"bad", 0)]
    assert isinstance(model, LoadedBackbone) and model.take_uncounted_loads() == 0


def test_backbone_loads_once_per_process_across_worker_threads(extracted, tmp_path):
    pca = str(extracted.output / "pca.npz")
    result = run_tiny(extracted.library, tmp_path / "out", "--pca", pca, "--decode_workers", "2")
    counters = result.metrics().query(MetricsFilter().with_name(MODEL_LOADS))["counters"]
    streams = json.loads((tmp_path / "out/manifest.json").read_text())["streams"]
    assert sum(counter.committed for counter in counters) == len(streams)  # one CNN each


def test_run_takes_the_tests_own_pipeline_and_counts_in_beam_metrics(extracted, tmp_path):
    pca = str(extracted.output / "pca.npz")
    config = tiny_config(extracted.library, tmp_path / "out", "--pca", pca)
    result = extract_features.run(config, pipeline=TestPipeline(blocking=True))
    counters = collections.Counter()  # summed over steps: each stream's RunInference counts
    for counter in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        counters[counter.key.metric.name] += counter.committed
    counts = json.loads((tmp_path / "out/manifest.json").read_text())["counts"]
    assert counters["videos_ok"] == counts["ok"] and counters["frames"] == counts["frames"]
    streams = json.loads((tmp_path / "out/manifest.json").read_text())["streams"]
    assert counters["videos_failed"] == counts["failed"]
    assert counters["model_loads"] == len(streams)  # one CNN per stream: rgb, VGGish
