"""make_sample_library: UCF101 layout, labels.csv, decodable clips, class content, CLI errors."""

from __future__ import annotations

import csv
import filecmp
import os

import numpy as np
import pytest

from features.frames import DecodeReport, iter_frame_chunks
from features.sample_library import CLASSES, FRAME_RATES, LABELS_FILE, main, make_sample_library

VIDEOS = 8
SECONDS = 2.0


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> str:
    output = str(tmp_path_factory.mktemp("library"))
    assert main(["--output", output, "--videos", str(VIDEOS), "--seconds", str(SECONDS)]) == 0
    return output


def read_labels(output: str) -> list[dict[str, str]]:
    with open(os.path.join(output, LABELS_FILE), newline="") as labels_file:
        return list(csv.DictReader(labels_file))


def every_frame(path: str) -> np.ndarray:  # [T, H, W, 3]: all frames but the last
    return np.concatenate([chunk.frames for chunk in iter_frame_chunks(path, fps=60.0)])


def test_layout_and_labels(library):
    rows = read_labels(library)
    assert [row["labels"] for row in rows] == [CLASSES[k % len(CLASSES)] for k in range(VIDEOS)]
    for k, row in enumerate(rows):
        label = row["labels"]
        assert row["id"] == f"{label}/{label}_{k // len(CLASSES):03d}"
        assert os.path.dirname(row["id"]) == label  # the parent folder is the label
    on_disk = sorted(
        os.path.relpath(os.path.join(folder, name), library)
        for folder, _, names in os.walk(library)
        for name in names
    )
    assert on_disk == sorted([LABELS_FILE] + [row["id"] + ".mp4" for row in rows])


def test_every_clip_decodes(library):
    for row in read_labels(library):
        report = DecodeReport()
        for _ in iter_frame_chunks(os.path.join(library, row["id"] + ".mp4"), report=report):
            pass
        assert not report.truncated and report.error == ""
        assert 0.7 * SECONDS < report.span_s < 1.3 * SECONDS
        assert report.decoded_frames / (report.span_s + 1e-9) < max(FRAME_RATES) + 1
        assert report.width <= 176 and report.height <= 144


def colour_share(frames: np.ndarray, colour: str) -> np.ndarray:  # [T] fraction of pixels
    red, green, blue = (frames[..., c].astype(int) for c in range(3))
    if colour == "red":
        mask = (red > 150) & (green < 90) & (blue < 90)
    else:
        mask = (blue > 150) & (red < 90) & (green < 100)
    return mask.mean(axis=(1, 2))


@pytest.mark.parametrize(
    ("label", "first", "then"), [("red_then_blue", "red", "blue"), ("blue_then_red", "blue", "red")]
)
def test_order_classes_show_shapes_in_order(library, label, first, then):
    clip = every_frame(os.path.join(library, label, f"{label}_000.mp4"))
    opening, ending = clip[:1], clip[-1:]
    assert colour_share(opening, first)[0] > 0.005 and colour_share(opening, then)[0] == 0
    assert colour_share(ending, then)[0] > 0.005 and colour_share(ending, first)[0] == 0


def test_same_seed_same_library_other_seed_differs(library, tmp_path):
    make_sample_library(str(tmp_path / "again"), VIDEOS, seconds=SECONDS)
    make_sample_library(str(tmp_path / "other"), VIDEOS, seed=1, seconds=SECONDS)
    for row in read_labels(library):
        name = row["id"] + ".mp4"
        original = os.path.join(library, name)
        assert filecmp.cmp(original, str(tmp_path / "again" / name), shallow=False)
        assert not filecmp.cmp(original, str(tmp_path / "other" / name), shallow=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["--videos", "3"],
        ["--output", "OUT", "--videos", "0"],
        ["--output", "OUT", "--videos", "two"],
        ["--output", "OUT", "--videos", "3", "--seconds", "-1"],
        ["--output", "FILE", "--videos", "3"],
    ],
)
def test_bad_arguments_exit_2(tmp_path, capsys, argv):
    (tmp_path / "FILE").write_text("not a folder")
    argv = [str(tmp_path / arg) if arg in ("OUT", "FILE") else arg for arg in argv]
    try:
        status = main(argv)
    except SystemExit as raised:  # flag errors exit from the parser, the others return
        status = raised.code
    assert status == 2
    err = capsys.readouterr().err
    assert err.startswith("make_sample_library: error:") and err.count("\n") == 1, err
    assert not (tmp_path / "OUT").exists()


def test_summary_line(tmp_path, capsys):
    assert main(["--output", str(tmp_path), "--videos", "2", "--seconds", "0.5"]) == 0
    summary = capsys.readouterr().out
    assert summary.count("\n") == 1 and "wrote 2 videos" in summary
