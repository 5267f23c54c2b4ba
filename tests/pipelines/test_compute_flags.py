"""--frames_per_batch auto, --precision, --jit_compile and --decode_workers: what each sets, the
one-line errors, and a job at mixed precision on two decode threads against one at float32 on
one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from features.cli import UsageError
from features.streams import FeatureSpec
from pipelines import compute_flags
from pipelines.compute_flags import (
    count_or_auto,
    resolve_frames_per_batch,
    with_decode_workers,
)
from tests.extraction import (
    exit_status,
    frame_records,
    index_library,
    index_run_args,
    one_line_error,
    tiny_config,
)

RGB = FeatureSpec("rgb", "tiny", "random", 0, (64, 64), 1.0, "fit", 8)
DATAFLOW = ("--runner", "DataflowRunner")
THREADS = ("--direct_running_mode", "in_memory")


def test_counts_read_auto_as_zero_and_refuse_the_rest():
    assert (count_or_auto("auto"), count_or_auto("12")) == (0, 12)
    for text in ("0", "-3", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match="neither auto nor"):
            count_or_auto(text)


def test_decode_workers_auto_runs_one_thread_per_core_locally(monkeypatch):
    monkeypatch.setattr(compute_flags, "local_cores", lambda: 16)
    assert with_decode_workers(0, ["--x"]) == ("--x", "--direct_num_workers", "16", *THREADS)
    monkeypatch.setattr(compute_flags, "local_cores", lambda: 1)
    assert with_decode_workers(0, []) == ()  # one core: the in-memory runner, as before


def test_decode_workers_explicit_and_beams_own_settings():
    assert with_decode_workers(3, []) == ("--direct_num_workers", "3", *THREADS)
    assert with_decode_workers(1, ["--runner", "DirectRunner"]) == ("--runner", "DirectRunner")
    own = ("--direct_num_workers=4", "--direct_running_mode=multi_processing")
    assert with_decode_workers(0, own) == own  # Beam's flags win over auto
    with pytest.raises(UsageError, match="--decode_workers and --direct_num_workers"):
        with_decode_workers(2, own)
    assert with_decode_workers(8, ["--runner", "PrismRunner"]) == ("--runner", "PrismRunner")


def test_decode_workers_on_dataflow_are_harness_threads():
    assert with_decode_workers(0, DATAFLOW) == DATAFLOW  # launch_dataflow.sh sets them
    threads = ("--number_of_worker_harness_threads", "16")
    assert with_decode_workers(16, DATAFLOW) == (*DATAFLOW, *threads)
    with pytest.raises(UsageError, match="number_of_worker_harness_threads"):
        with_decode_workers(16, (*DATAFLOW, *threads))


def test_frames_per_batch_auto_is_the_cpu_default_here_and_refused_for_dataflow():
    from features.precision import CPU_FRAMES_PER_BATCH, gpus

    assert resolve_frames_per_batch(48, RGB, DATAFLOW) == 48
    if not gpus():
        assert resolve_frames_per_batch(0, RGB, []) == CPU_FRAMES_PER_BATCH
    with pytest.raises(UsageError, match="Dataflow's workers are other machines"):
        resolve_frames_per_batch(0, RGB, DATAFLOW)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 3 s videos and a PCA for the tiny backbone (no fit pass)."""
    return index_library(tmp_path_factory.mktemp("compute_library"), (0, 30, 60), 45, fps=15)


def run_args(library: Path, output: Path, *extra: str) -> list[str]:
    return index_run_args(library, output, 5, *extra)


def test_config_carries_the_compute_flags(library, tmp_path):
    config = tiny_config(
        library / "videos", tmp_path / "out", "--streams", "rgb", "--precision", "mixed",
        "--jit_compile", "off", "--frames_per_batch", "auto", "--decode_workers", "2",
    )  # fmt: skip
    assert (config.rgb.precision, config.rgb.jit_compile) == ("mixed", False)
    assert config.frames_per_batch >= 1
    assert config.beam_args[-4:] == ("--direct_num_workers", "2", *THREADS)


def test_auto_batches_for_dataflow_is_one_line_before_any_work(library, tmp_path, capsys):
    args = run_args(library, tmp_path / "out", "--frames_per_batch", "auto", *DATAFLOW)
    assert exit_status(args) == 2
    line = one_line_error(capsys)
    assert "(--frames_per_batch auto)" in line and "pass a number" in line
    assert not (tmp_path / "out").exists()


def test_mixed_on_two_decode_threads_matches_float32_on_one(library, tmp_path):
    single, threaded = tmp_path / "float32", tmp_path / "mixed"
    assert exit_status(run_args(library, single, "--decode_workers", "1")) == 0
    flags = ("--precision", "mixed", "--decode_workers", "2", "--frames_per_batch", "auto")
    assert exit_status(run_args(library, threaded, *flags)) == 0

    manifests = [json.loads((out / "manifest.json").read_text()) for out in (single, threaded)]
    assert [manifest.get("precision") for manifest in manifests] == ["float32", "mixed"]
    assert [manifest["counts"]["ok"] for manifest in manifests] == [3, 3]
    rows = [
        {record.video_id: record.features["rgb"] for record in frame_records(out)}
        for out in (single, threaded)
    ]
    assert sorted(rows[0]) == sorted(rows[1]) == ["a", "b", "c"]
    differences = np.concatenate(
        [np.abs(rows[0][vid].astype(int) - rows[1][vid]).ravel() for vid in rows[0]]
    )
    assert len(differences) == 3 * 15 * 32
    assert (differences <= 1).mean() >= 0.99
