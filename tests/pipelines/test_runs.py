"""Several runs into one output: commit markers, --skip_existing, crashes and reruns."""

import json
import shutil

import pytest

from pipelines import extract_features
from tests.extraction import extract, frame_records, sample_videos, tiny_args

VIDEOS = 6


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


def test_a_plain_rerun_into_a_committed_output_is_refused(library, tmp_path, capsys):
    output = tmp_path / "features"
    extract(library, output)
    assert extract_features.main(tiny_args(library, output)) == 2
    assert "--skip_existing" in capsys.readouterr().err


def test_skip_existing_refuses_another_feature_space(library, tmp_path, capsys):
    output = tmp_path / "features"
    extract(library, output)
    args = tiny_args(library, output, "--skip_existing", "--seed", "7")
    assert extract_features.main(args) == 2
    assert "backbone" in capsys.readouterr().err


@pytest.mark.parametrize("fault", ["after_videos:3", "before_commit"])
def test_crash_then_rerun_leaves_every_video_exactly_once(library, tmp_path, monkeypatch, fault):
    output = tmp_path / "features"
    monkeypatch.setenv("FRAMEVLAD_FAULT", fault)
    with pytest.raises(Exception, match="FRAMEVLAD_FAULT"):
        extract_features.run(tiny_args(library, output)).wait_until_finish()
    assert not (output / "manifest.json").exists()
    monkeypatch.delenv("FRAMEVLAD_FAULT")
    manifest = extract(library, output).manifest
    assert manifest["counts"]["ok"] == VIDEOS and len(manifest["runs"]) == 1
    found = ids_in_records(output)
    assert len(found) == len(set(found)) == VIDEOS
    assert not list(output.rglob("beam-temp-*"))
    if fault == "before_commit":  # its shards were final but never committed
        assert list((output / "uncommitted").rglob("*.tfrecord"))
