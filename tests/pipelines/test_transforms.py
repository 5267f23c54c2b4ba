"""The extraction DoFns on their own, with TestPipeline and real videos."""

import apache_beam as beam
import numpy as np
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from features.labels import Vocabulary
from features.synthetic_video import render_index_frame, write_video
from pipelines import extract_features, model_handler
from pipelines.elements import Failure, VideoInput
from pipelines.transforms import FAILED, SUMMARY, DecodeFrames, JoinLabels, KeepFirstPath
from tests.broken_videos import write_empty
from tests.extraction import tiny_args


def test_keep_first_path_fails_the_others():
    with TestPipeline() as pipeline:
        kept = pipeline | beam.Create([("a", ["/l/a.mp4", "/l/a.avi"]), ("b", ["/l/b.mkv"])])
        split = kept | beam.ParDo(KeepFirstPath()).with_outputs(FAILED, main="unique")
        assert_that(split.unique, equal_to([("a", "/l/a.avi"), ("b", "/l/b.mkv")]), "unique")
        failure = Failure("/l/a.mp4", "a", "duplicate_id", "/l/a.avi has the same id")
        assert_that(split[FAILED], equal_to([failure]), "failed")


def test_join_labels_resolves_names_and_counts_orphans():
    vocabulary = Vocabulary(("cat", "dog"))
    joined = [
        ("v1", {"paths": ["/l/v1.mp4"], "rows": [["dog", "cat"]]}),
        ("v2", {"paths": ["/l/v2.mp4"], "rows": []}),
        ("v3", {"paths": ["/l/v3.mp4"], "rows": [["cow"]]}),
        ("ghost", {"paths": [], "rows": [["cat"]]}),
    ]
    with TestPipeline() as pipeline:
        vocabulary_input = beam.pvalue.AsSingleton(pipeline | "V" >> beam.Create([vocabulary]))
        resolved = (
            pipeline
            | beam.Create(joined)
            | beam.ParDo(JoinLabels(), vocabulary_input).with_outputs(FAILED, "counts", main="v")
        )
        expected = [
            VideoInput("v1", "/l/v1.mp4", (0, 1), True),
            VideoInput("v2", "/l/v2.mp4", (), False),
        ]
        assert_that(resolved.v, equal_to(expected), "videos")
        reasons = resolved[FAILED] | beam.Map(lambda failure: (failure.video_id, failure.reason))
        assert_that(reasons, equal_to([("v3", "unknown_label")]), "failed")
        assert_that(resolved.counts, equal_to([("labels_without_video", 1)]), "counts")


def test_decode_frames_streams_keyed_chunks_then_a_summary(tmp_path):
    video_path = str(tmp_path / "v.mp4")
    write_video(video_path, (render_index_frame(i, 96, 128) for i in range(150)), fps=30)
    write_empty(str(tmp_path / "e.mp4"))
    videos = [
        VideoInput("v", video_path, (1,), True),
        VideoInput("e", str(tmp_path / "e.mp4"), (), False),
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
            (("v", 0), (2, 32, 48, 3)),
            (("v", 2), (2, 32, 48, 3)),
            (("v", 4), (1, 32, 48, 3)),
        ]
        assert_that(shapes, equal_to(expected), "chunks")
        summaries = decoded[SUMMARY] | beam.MapTuple(
            lambda video_id, summary: (video_id, summary.frames, summary.truncated)
        )
        assert_that(summaries, equal_to([("v", 5, False)]), "summary")
        reasons = decoded[FAILED] | beam.Map(lambda failure: (failure.video_id, failure.reason))
        assert_that(reasons, equal_to([("e", "empty_file")]), "failed")


def test_decoded_chunks_are_uint8_frames(tmp_path):
    video_path = str(tmp_path / "v.mp4")
    write_video(video_path, (render_index_frame(i, 96, 128) for i in range(60)), fps=30)
    decode = DecodeFrames(1.0, 0, (32, 48), 8)
    outputs = list(decode.process(VideoInput("v", video_path, (), False)))
    (key, frames), summary = outputs[0], outputs[1]
    assert key == ("v", 0) and frames.dtype == np.uint8 and frames.shape == (2, 32, 48, 3)
    assert summary.tag == SUMMARY


def test_backbone_loads_once_per_process_across_worker_threads(extracted, tmp_path):
    before = model_handler.loads_in_this_process()
    args = tiny_args(
        extracted.library, tmp_path / "out", "--pca", str(extracted.output / "pca.npz")
    )
    threads = ["--direct_num_workers", "2", "--direct_running_mode", "multi_threading"]
    extract_features.run(args + threads).wait_until_finish()
    assert model_handler.loads_in_this_process() - before == 1
