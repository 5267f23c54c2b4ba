"""How --labels, --labels_from_folders and --vocabulary reach the records."""

import json
import shutil

import numpy as np
import pytest

from features.labels import Vocabulary
from features.pca import fit_pca
from tests.extraction import (
    exit_status,
    extract,
    frame_records,
    one_line_error,
    read_failures,
    sample_videos,
    tiny_args,
)

VIDEOS = 8


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return sample_videos(tmp_path_factory.mktemp("small_library"), VIDEOS)


def labels_by_id(output) -> dict[str, list[int]]:
    return {record.video_id: record.labels for record in frame_records(output)}


def run(library, output, *flags) -> dict:
    """rgb only: these tests are about labels, and the audio stream would only add time."""
    pca = str(pca_path(output))
    return extract(library, output, "--pca", pca, "--streams", "rgb", *flags).manifest


def pca_path(output):
    """One made-up PCA per test folder: these tests check labels, and skip the fit pass."""
    path = output.parent / "shared_pca.npz"
    if not path.exists():
        features = np.random.default_rng(0).normal(size=(64, 256)).astype(np.float32)
        fit_pca(features, 32).save(str(path))
    return path


def test_csv_join_counts_unlabeled_videos_and_rows_without_video(library, tmp_path):
    ids = sorted(labels_by_id_from_csv(library))
    labels_csv = tmp_path / "labels.csv"
    rows = [f"{video_id},{video_id.split('/')[0]};shared" for video_id in ids[:5]]
    labels_csv.write_text("id,labels\n" + "\n".join(rows + ["ghost/video,stripes"]) + "\n")
    manifest = run(library, tmp_path / "out", "--labels", str(labels_csv))
    counts = manifest["counts"]
    assert counts["ok"] == VIDEOS and counts["unlabeled"] == VIDEOS - 5
    assert counts["labels_without_video"] == 1
    vocabulary = Vocabulary.from_csv((tmp_path / "out/vocabulary.csv").read_text())
    assert "shared" in vocabulary.names and "stripes" in vocabulary.names
    found = labels_by_id(tmp_path / "out")
    for video_id in ids:
        names = sorted(vocabulary.names[index] for index in found[video_id])
        expected = sorted([video_id.split("/")[0], "shared"]) if video_id in ids[:5] else []
        assert names == expected


def test_labels_from_folders(library, tmp_path):
    manifest = run(library, tmp_path / "out", "--labels_from_folders")
    vocabulary = Vocabulary.from_csv((tmp_path / "out/vocabulary.csv").read_text())
    assert manifest["num_classes"] == len(vocabulary) == 4
    for video_id, labels in labels_by_id(tmp_path / "out").items():
        assert [vocabulary.names[index] for index in labels] == [video_id.split("/")[0]]


def test_given_vocabulary_fixes_indices_and_rejects_unknown_names(library, tmp_path):
    vocabulary_csv = tmp_path / "vocabulary.csv"
    vocabulary_csv.write_text("Index,Name\n0,stripes\n1,checker\n2,red_then_blue\n")
    flags = ["--labels_from_folders", "--vocabulary", str(vocabulary_csv)]
    manifest = run(library, tmp_path / "out", *flags)
    failures = read_failures(tmp_path / "out")
    assert {failure["reason"] for failure in failures} == {"unknown_label"}
    assert all("blue_then_red" in failure["video_id"] for failure in failures)
    assert manifest["counts"]["ok"] + len(failures) == VIDEOS
    for video_id, labels in labels_by_id(tmp_path / "out").items():
        assert labels == [["stripes", "checker", "red_then_blue"].index(video_id.split("/")[0])]
    written = Vocabulary.from_csv((tmp_path / "out/vocabulary.csv").read_text())
    assert written.names == ("stripes", "checker", "red_then_blue")


def labels_by_id_from_csv(library) -> list[str]:
    lines = (library / "labels.csv").read_text().splitlines()[1:]
    return [line.split(",")[0] for line in lines]


def test_skip_existing_never_renumbers_committed_classes(library, tmp_path):
    growing = tmp_path / "library"
    for folder in ("checker", "stripes"):
        shutil.copytree(library / folder, growing / folder)
    output = tmp_path / "out"
    first = run(growing, output, "--labels_from_folders")
    assert Vocabulary.from_csv((output / "vocabulary.csv").read_text()).names == (
        "checker",
        "stripes",
    )
    shutil.copytree(library / "blue_then_red", growing / "blue_then_red")  # sorts first
    run(growing, output, "--labels_from_folders", "--skip_existing")
    vocabulary = Vocabulary.from_csv((output / "vocabulary.csv").read_text())
    assert vocabulary.names == ("checker", "stripes", "blue_then_red")
    for video_id, labels in labels_by_id(output).items():
        assert [vocabulary.names[index] for index in labels] == [video_id.split("/")[0]]
    runs = [
        json.loads(path.read_text()) for path in sorted((output / "manifests").glob("*Z-*.json"))
    ]
    assert [run["vocabulary"]["size"] for run in runs] == [2, 3]
    assert runs[0]["vocabulary"]["sha256"] == first["vocabulary"]["sha256"]
    assert runs[1]["vocabulary"]["sha256"] == vocabulary.sha256()


def test_a_given_vocabulary_that_would_renumber_is_refused(library, tmp_path, capsys):
    output = tmp_path / "out"
    run(library, output, "--labels_from_folders")
    reordered = tmp_path / "vocabulary.csv"
    names = Vocabulary.from_csv((output / "vocabulary.csv").read_text()).names
    reordered.write_text(Vocabulary(tuple(reversed(names))).to_csv())
    args = tiny_args(
        library, output, "--labels_from_folders", "--skip_existing", "--streams", "rgb"
    )
    assert exit_status([*args, "--vocabulary", str(reordered)]) == 2
    assert "would renumber" in one_line_error(capsys)


def test_labels_saved_by_excel_with_conflicting_rows(library, tmp_path):
    ids = sorted(labels_by_id_from_csv(library))
    rows = [f'"{video_id}","{video_id.split("/")[0]};x,y"' for video_id in ids]
    rows.append(f"{ids[0]},other")  # disagrees with the first row of ids[0]
    rows.append(rows[1])  # the same row twice is no conflict
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_bytes(("\ufeffid,labels\r\n" + "\r\n".join(rows) + "\r\n").encode())
    manifest = run(library, tmp_path / "out", "--labels", str(labels_csv))
    assert manifest["counts"]["conflicting_label_rows"] == 1
    vocabulary = Vocabulary.from_csv((tmp_path / "out/vocabulary.csv").read_text())
    assert "labels" not in vocabulary.names and "x,y" in vocabulary.names
    assert manifest["counts"]["ok"] == VIDEOS and manifest["counts"]["unlabeled"] == 0
