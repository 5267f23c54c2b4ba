"""How --labels, --labels_from_folders and --vocabulary reach the records."""

import pytest

from features.labels import Vocabulary
from tests.extraction import extract, frame_records, read_failures, sample_videos

VIDEOS = 8


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    return sample_videos(tmp_path_factory.mktemp("small_library"), VIDEOS)


def labels_by_id(output) -> dict[str, list[int]]:
    return {record.video_id: record.labels for record in frame_records(output)}


def run(library, output, *flags) -> dict:
    return extract(library, output, *flags).manifest


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
