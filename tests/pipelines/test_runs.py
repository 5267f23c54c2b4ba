"""Several runs into one output: commit markers, --skip_existing, leases, crashes and reruns."""

import errno
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from features import lease, storage
from features.pca import fit_pca
from pipelines import extract_features
from pipelines.config import FaultPlan
from pipelines.transforms import InjectedFaultError
from tests import extraction
from tests.extraction import (
    exit_status,
    frame_records,
    one_line_error,
    run_tiny,
    sample_videos,
    tiny_args,
    tiny_config,
)

VIDEOS = 6
# PCAs made up front (rgb and audio): runs that need not fit one skip the fit pass (about 40%
# of a run).
SHARED_PCA: list[str] = []


@pytest.fixture(scope="module", autouse=True)
def shared_pca(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pca")
    rng = np.random.default_rng(0)
    fit_pca(rng.normal(size=(64, 256)).astype(np.float32), 32).save(str(folder / "pca.npz"))
    audio = rng.normal(size=(256, 128)).astype(np.float32)
    fit_pca(audio, 128).save(str(folder / "audio_pca.npz"))
    SHARED_PCA[:] = ["--pca", str(folder / "pca.npz"), "--audio_pca", str(folder / "audio_pca.npz")]


def extract(library, output, *flags: str) -> extraction.Extracted:
    """extraction.extract with the shared PCAs (a later --pca in `flags` wins)."""
    return extraction.extract(library, output, *SHARED_PCA, *flags)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return sample_videos(tmp_path_factory.mktemp("runs_library"), VIDEOS)


def ids_in_records(output) -> list[str]:
    return [record.video_id for record in frame_records(output)]


def partial_copy(library, target, keep: int):
    """The first `keep` videos of the library, same layout."""
    for path in sorted(library.glob("*/*.mp4"))[:keep]:
        (target / path.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.parent.name / path.name)
    return target


def test_skip_existing_processes_only_new_videos(library, tmp_path):
    growing = partial_copy(library, tmp_path / "library", keep=4)
    output = tmp_path / "features"
    first = extract(growing, output, "--labels_from_folders").manifest
    partial_copy(library, growing, keep=VIDEOS)  # two new videos arrive
    second = extract(growing, output, "--labels_from_folders", "--skip_existing").manifest
    (run_a, run_b) = sorted((output / "manifests").glob("*.json"))
    latest = json.loads(run_b.read_text())
    assert latest["counts"]["ok"] == 2 and latest["counts"]["skipped"] == 4
    assert second["runs"] == [first["run_id"], latest["run_id"]]
    assert second["counts"]["ok"] == VIDEOS and second["counts"]["seen"] == VIDEOS
    found = ids_in_records(output)
    assert sorted(found) == sorted(set(found)) and len(found) == VIDEOS
    # Nothing new: a third run adds nothing and writes nothing twice.
    third = extract(growing, output, "--labels_from_folders", "--skip_existing").manifest
    assert third["counts"]["ok"] == VIDEOS and len(ids_in_records(output)) == VIDEOS


def test_hostile_ids_are_neither_duplicated_nor_lost(library, tmp_path):
    videos = sorted(library.glob("*/*.mp4"))
    growing = tmp_path / "library"
    growing.mkdir()
    not_utf8 = os.fsdecode(b"caf\xe9")  # a Latin-1 file name
    hostile = ["x\ny", "tab\there", 'quote"d', "comma,d", not_utf8]
    for name, video in zip(hostile, videos, strict=False):
        shutil.copy(video, growing / f"{name}.mp4")
    (growing / f"{not_utf8}-notes.mp4").write_text("not a video")
    output = tmp_path / "features"
    (failure,) = extract(growing, output).failures
    assert failure["video_id"] == f"{not_utf8}-notes" and failure["reason"] == "not_a_video"
    # "y" is the tail of the id "x\ny": a line-based id list would count it as done.
    shutil.copy(videos[-1], growing / "y.mp4")
    latest = extract(growing, output, "--skip_existing").manifest
    assert latest["counts"]["ok"] == len(hostile) + 1 and latest["counts"]["failed"] == 1
    assert sorted(ids_in_records(output)) == sorted([*hostile, "y"])


def test_id_lists_of_older_runs_are_still_read(library, tmp_path):
    output = tmp_path / "features"
    extract(library, output)
    (run_path,) = (output / "manifests").glob("2*Z-??????.json")
    run = json.loads(run_path.read_text())
    (jsonl,) = run["ok_ids_files"]
    ids = [json.loads(line) for line in (output / jsonl).read_text().splitlines()]
    (output / jsonl).unlink()
    txt = jsonl.replace(".jsonl", ".txt")
    (output / txt).write_text("".join(f"{video_id}\n" for video_id in ids))
    run["ok_ids_files"] = [txt]
    run_path.write_text(json.dumps(run))
    latest = extract(library, output, "--skip_existing").manifest
    assert latest["counts"]["ok"] == VIDEOS and len(ids_in_records(output)) == VIDEOS


def test_a_plain_rerun_into_a_committed_output_is_refused(library, tmp_path, capsys):
    output = tmp_path / "features"
    extract(library, output)
    assert exit_status(tiny_args(library, output)) == 2
    assert "--skip_existing" in one_line_error(capsys)


def test_skip_existing_refuses_another_feature_space(library, tmp_path, capsys):
    output = tmp_path / "features"
    extract(library, output)
    assert exit_status(tiny_args(library, output, "--skip_existing", "--seed", "7")) == 2
    assert "backbone" in one_line_error(capsys)


def test_a_second_writer_is_refused_naming_the_holder(library, tmp_path, capsys):
    output = tmp_path / "features"
    with lease.acquire(str(output), "tag_videos", 60, False):
        assert exit_status(tiny_args(library, output)) == 2
        line = one_line_error(capsys)
    assert f"is being written by tag_videos pid {os.getpid()}" in line
    assert not (output / "manifest.json").exists()
    extract(library, output)
    assert not (output / lease.LEASE_FILE).exists()  # released at the end


def test_a_stale_lease_is_broken_only_when_asked(library, tmp_path, capsys):
    output = tmp_path / "features"
    code = f"from features import lease; lease.acquire({str(output)!r}, 'gone', 60, False)"
    subprocess.run([sys.executable, "-c", code], check=True)  # exits holding the lease
    assert exit_status(tiny_args(library, output)) == 2
    assert "pass --break_lease" in one_line_error(capsys)
    assert extract(library, output, "--break_lease").manifest["counts"]["ok"] == VIDEOS


@pytest.mark.parametrize(
    "faults", [FaultPlan(fail_after_videos=3), FaultPlan(fail_before_commit=True)]
)
def test_crash_then_rerun_leaves_every_video_exactly_once(library, tmp_path, faults):
    output = tmp_path / "features"
    with pytest.raises(InjectedFaultError):
        run_tiny(library, output, *SHARED_PCA, faults=faults)
    assert not (output / "manifest.json").exists()
    assert not (output / lease.LEASE_FILE).exists()  # released on failure too
    manifest = extract(library, output).manifest
    assert manifest["counts"]["ok"] == VIDEOS and len(manifest["runs"]) == 1
    found = ids_in_records(output)
    assert len(found) == len(set(found)) == VIDEOS
    assert not list(output.rglob(f"{storage.TEMP_PREFIX}*"))
    if faults.fail_before_commit:  # its shards were final but never committed
        assert list((output / "uncommitted").rglob("*.tfrecord"))


def test_disk_full_at_the_commit_is_one_line_and_a_rerun_resumes(
    library, tmp_path, capsys, monkeypatch
):
    output = tmp_path / "features"
    write_bytes = storage.write_bytes

    def full_disk(path: str, data: bytes) -> None:
        if "/manifests/" in path:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        write_bytes(path, data)

    monkeypatch.setattr(storage, "write_bytes", full_disk)
    assert exit_status(tiny_args(library, output, *SHARED_PCA)) == 2
    line = one_line_error(capsys)
    assert "No space left on device" in line and str(output / "manifests") in line
    assert line.endswith("nothing was committed; rerun to resume")
    monkeypatch.setattr(storage, "write_bytes", write_bytes)
    assert extract(library, output).manifest["counts"]["ok"] == VIDEOS
    assert len(set(ids_in_records(output))) == len(ids_in_records(output)) == VIDEOS


def test_the_same_weights_from_another_path_are_the_same_feature_space(library, tmp_path):
    from features.backbones import build_backbone

    first, second = tmp_path / "a/tiny.weights.h5", tmp_path / "b/tiny.weights.h5"
    first.parent.mkdir()
    second.parent.mkdir()
    build_backbone("tiny", "random", seed=3).save_weights(str(first))
    shutil.copy(first, second)
    output = tmp_path / "features"
    extract(library, output, "--weights", str(first))
    latest = extract(library, output, "--weights", str(second), "--skip_existing").manifest
    assert latest["counts"]["ok"] == VIDEOS and latest["weights"]["kind"] == "path"


def test_skip_existing_never_replaces_the_committed_pca(library, tmp_path, capsys):
    output = tmp_path / "features"
    extract(library, output)
    committed = (output / "pca.npz").read_bytes()
    other = tmp_path / "other"
    extract(library, other, "--pca", "fit")  # another PCA
    for pca in ("fit", str(other / "pca.npz")):
        args = tiny_args(library, output, "--skip_existing", "--pca", pca)
        assert exit_status(args) == 2
        assert "committed runs' records were whitened with" in one_line_error(capsys)
        assert (output / "pca.npz").read_bytes() == committed
    copy = tmp_path / "copy.npz"
    copy.write_bytes(committed)
    latest = extract(library, output, "--skip_existing", "--pca", str(copy)).manifest
    assert latest["counts"]["ok"] == VIDEOS and (output / "pca.npz").read_bytes() == committed


def test_the_job_gives_the_lease_back_at_its_commit(library, tmp_path):
    """A Flex Template launcher returns once the job is submitted (wait=False) and never
    releases the lease; the job's commit step does."""
    output = tmp_path / "features"
    result = extract_features.run(tiny_config(library, output, *SHARED_PCA), wait=False)
    result.wait_until_finish()
    assert (output / "manifest.json").exists() and not (output / lease.LEASE_FILE).exists()


def test_aggregate_sums_counts_and_keeps_the_largest_sample_error():
    from framevlad_proto import framevlad_pb2
    from pipelines.runs import aggregate

    first = framevlad_pb2.Manifest(run_id="a", max_sample_error_s=0.05, precision="float32")
    first.counts.ok, first.counts.frames, first.counts.hw_decoded = 2, 20, 2
    first.counts.hw_decode_fallbacks = 1
    second = framevlad_pb2.Manifest(run_id="b", max_sample_error_s=0.01, precision="mixed")
    second.counts.ok, second.counts.frames, second.counts.failed = 1, 7, 1
    second.counts.hw_decoded = 1
    combined = aggregate([first, second])
    assert (combined.counts.ok, combined.counts.frames, combined.counts.seen) == (3, 27, 4)
    assert (combined.counts.hw_decoded, combined.counts.hw_decode_fallbacks) == (3, 1)
    assert combined.max_sample_error_s == 0.05
    assert combined.precision == "mixed" and list(combined.runs) == ["a", "b"]
