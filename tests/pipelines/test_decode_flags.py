"""--decode and --decode_device through extract_features and tag_videos: one-line errors,
what the manifest records, and the count that keeps a maximum."""

from __future__ import annotations

import json
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from features import streams
from features.decoding import gpu_decode_problem
from features.frames import DecodeReport, iter_frame_chunks
from framevlad_proto import framevlad_pb2
from pipelines.config import check_decode_device
from pipelines.transforms import count_outcomes
from tests.extraction import (
    exit_status,
    frame_records,
    index_library,
    index_run_args,
    one_line_error,
)

FPS = 10  # samples per second of 30 fps videos: every 3rd frame, some of them B-frames fast skips


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 4 s, 30 fps H.264 videos with B-frames, and a PCA for the tiny backbone (so no
    fit pass runs)."""
    return index_library(tmp_path_factory.mktemp("decode_library"), (0, 40), 120, fps=30)


def run_args(library: Path, output: Path, *extra: str) -> list[str]:
    return index_run_args(library, output, FPS, *extra)


def test_fast_with_a_stream_that_needs_every_frame_is_one_line(library, tmp_path, capsys):
    args = run_args(library, tmp_path / "out", "--decode", "fast", "--streams", "rgb,flow")
    assert exit_status(args) == 2
    line = one_line_error(capsys)
    assert "(--decode fast)" in line and "flow" in line and "--decode exact" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not gpu_decode_problem(), reason="this machine has a GPU decoder")
def test_gpu_without_one_is_one_line_before_any_work(library, tmp_path, capsys):
    args = run_args(library, tmp_path / "out", "--decode_device", "gpu")
    assert exit_status(args) == 2
    line = one_line_error(capsys)
    assert "(--decode_device gpu)" in line and "NVIDIA" in line
    assert not (tmp_path / "out").exists()
    # A Dataflow job's workers hold the GPU: its launcher does not look for one.
    check_decode_device("gpu", ["--runner", "DataflowRunner"])


def test_fast_run_records_its_mode_and_largest_sample_error(library, tmp_path, capsys):
    output = tmp_path / "out"
    assert exit_status(run_args(library, output, "--decode", "fast")) == 0
    videos = sorted((library / "videos").glob("*.mp4"))
    exact, fast = [], []
    for path in videos:
        for mode, reports in (("exact", exact), ("fast", fast)):
            report = DecodeReport()
            for _ in iter_frame_chunks(str(path), fps=FPS, report=report, decode=mode):
                pass
            reports.append(report)
    largest = max(report.max_sample_error_s for report in fast)
    assert largest > max(report.max_sample_error_s for report in exact) == 0

    run = json.loads(next((output / "manifests").glob("*.json")).read_text())
    aggregate = json.loads((output / "manifest.json").read_text())
    for manifest in (run, aggregate):
        assert manifest["decode_mode"] == "fast" and manifest["decode_device"] == "auto"
        assert manifest["max_sample_error_s"] == pytest.approx(largest)
        gpu_videos = 0 if gpu_decode_problem() else len(videos)
        assert manifest["counts"]["hw_decoded"] == gpu_videos
        assert manifest["counts"]["hw_decode_fallbacks"] == 0
    # Rows per video are exact mode's.
    rows = {record.video_id: len(record.features["rgb"]) for record in frame_records(output)}
    assert rows == {path.stem: report.frames for path, report in zip(videos, exact, strict=True)}

    # Adding exact-decoded videos to a fast output would mix two sampling contracts.
    capsys.readouterr()
    assert exit_status(run_args(library, output, "--skip_existing")) == 2
    assert "decode mode differs from the committed runs'" in one_line_error(capsys)


def test_counts_sum_but_the_sample_error_keeps_its_maximum():
    with TestPipeline() as pipeline:
        failures = pipeline | "Failures" >> beam.Create([])
        counts = pipeline | "Counts" >> beam.Create(
            [("ok", 1), ("ok", 1), ("max_sample_error_s", 0.02), ("max_sample_error_s", 0.05)]
        )
        outcome = count_outcomes(failures, counts)
        assert_that(outcome, equal_to([{"ok": 2, "max_sample_error_s": 0.05}]))


def test_tagging_rebuilds_features_with_the_manifests_decode_mode(tmp_path):
    manifest = framevlad_pb2.Manifest(fps=1.0)
    manifest.streams.add(name="rgb", backbone="tiny", frame_height=64, frame_width=64, dims=8)
    manifest.streams[0].pca.file = "pca.npz"
    assert streams.specs_from_manifest(manifest, str(tmp_path))[0].decode == "exact"  # older
    manifest.decode_mode = "fast"
    assert streams.specs_from_manifest(manifest, str(tmp_path))[0].decode == "fast"
