"""Every input the matcher meets is accounted for: symlinks, dangling links, other files."""

import os
import shutil

import pytest

from features.cli import UsageError
from pipelines.inputs import find_inputs, resolve_input
from tests.extraction import extract, frame_records


@pytest.fixture
def linked_library(extracted, tmp_path):
    """Real videos reached directly, through a linked file, a linked folder and a link loop,
    plus a dangling link and a file that is not a video."""
    videos = sorted(extracted.library.glob("*/*.mp4"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(videos[0], elsewhere / "far.mp4")
    library = tmp_path / "library"
    (library / "own").mkdir(parents=True)
    shutil.copy(videos[1], library / "own/a.mp4")
    os.symlink(videos[2], library / "own/linked_file.mp4")
    os.symlink(elsewhere, library / "linked_folder")
    os.symlink(library, library / "own/loop")  # back up the tree: walked once only
    os.symlink(tmp_path / "no_such.mp4", library / "own/dangling.mp4")
    (library / "own/notes.txt").write_text("not a video")
    return library


def test_symlinks_are_followed_and_a_dangling_one_is_a_failure(linked_library):
    found = find_inputs(resolve_input(str(linked_library)))
    assert [video_id for video_id, _ in found.videos] == [
        "linked_folder/far",
        "own/a",
        "own/linked_file",
    ]
    ((dangling),) = found.failures
    assert dangling.video_id == "own/dangling" and dangling.reason == "unreadable"
    assert "No such file" in dangling.detail
    assert found.skipped_extension == {".txt": 1} and found.seen == 4


def test_every_path_met_is_in_the_records_or_the_dead_letter(extracted, linked_library, tmp_path):
    pca = str(extracted.output / "pca.npz")
    result = extract(linked_library, tmp_path / "out", "--pca", pca, "--streams", "rgb")
    counts = result.manifest["counts"]
    assert counts["seen"] == counts["ok"] + counts["failed"] == 4
    assert counts["skipped_extension"] == {".txt": 1}
    assert [failure["reason"] for failure in result.failures] == ["unreadable"]
    assert len(frame_records(tmp_path / "out")) == 3


def test_a_missing_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="no such file or folder"):
        resolve_input(str(tmp_path / "nothing_here"))


def test_a_glob_still_matches_when_no_such_path_exists(extracted):
    resolved = resolve_input(str(extracted.library / "*" / "*.mp4"))
    assert not resolved.is_folder and resolved.id_root == str(extracted.library)
    assert len(find_inputs(resolved).videos) >= 16
