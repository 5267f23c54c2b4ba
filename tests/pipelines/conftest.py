"""A small real library (sample videos + broken files) extracted once per session with `tiny`."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from features import sample_library
from pipelines import extract_features

SAMPLE_VIDEOS = 16
# Every kind of unreadable input, with the reason the dead letter must give.
BROKEN_INPUTS = {
    "broken/empty.mp4": "empty_file",
    "broken/notes.mp4": "not_a_video",
}


@dataclass(frozen=True)
class Extracted:
    library: Path
    output: Path
    manifest: dict
    failures: list[dict]


def read_failures(output: Path) -> list[dict]:
    return [
        json.loads(line)
        for path in sorted(output.glob("failed*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def tiny_args(library: Path, output: Path, *extra: str) -> list[str]:
    return [
        "--input", str(library), "--output", str(output),
        "--backbone", "tiny", "--weights", "random", "--pca_dims", "32",
        "--batch_size", "16", *extra,
    ]  # fmt: skip


def make_library(root: Path, videos: int = SAMPLE_VIDEOS) -> Path:
    assert sample_library.main(["--output", str(root), "--videos", str(videos)]) == 0
    (root / "broken").mkdir()
    (root / "broken/empty.mp4").write_bytes(b"")
    (root / "broken/notes.mp4").write_text("these are meeting notes, not a video\n" * 50)
    # Same id as an existing video, other container: the later path in sorted order fails.
    first = sorted(root.glob("*/*.mp4"))[0]
    shutil.copy(first, first.with_suffix(".mkv"))
    return root


@pytest.fixture(scope="session")
def extracted(tmp_path_factory) -> Extracted:
    library = make_library(tmp_path_factory.mktemp("library"))
    output = tmp_path_factory.mktemp("features")
    args = tiny_args(library, output, "--labels", str(library / "labels.csv"))
    assert extract_features.main(args) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    return Extracted(library, output, manifest, read_failures(output))
