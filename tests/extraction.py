"""A small real library (sample videos + broken files) and how the tests extract it."""

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features import records, sample_library
from features.pca import fit_pca
from features.synthetic_video import render_index_frame, write_video
from pipelines import extract_features
from pipelines.config import ExtractConfig, FaultPlan
from tests import broken_videos

SAMPLE_VIDEOS = 16
# Every kind of unreadable input, how to write it, and the reason the dead letter must give.
BROKEN_INPUTS = {
    "broken/empty.mp4": (broken_videos.write_empty, "empty_file"),
    "broken/noise.mp4": (broken_videos.write_not_media, "not_a_video"),
    "broken/notes.mp4": (broken_videos.write_text, "not_a_video"),
    "broken/sound.mp4": (broken_videos.write_audio_only, "no_video_stream"),
}
# Decodes partly: an ok video counted as truncated, with no --labels row.
TRUNCATED_INPUT = "cut/clip.mp4"


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
        "--frames_per_batch", "16", "--audio_weights", "random", *extra,
    ]  # fmt: skip


def index_library(root: Path, offsets: Sequence[int], frames: int, fps: int) -> Path:
    """H.264 videos a.mp4, b.mp4, ... under root/videos, one per offset, each of `frames`
    96x128 frames stamped with their index plus the offset, and root/pca.npz for the tiny
    backbone (32 dims), so runs with --pca skip the fit pass."""
    (root / "videos").mkdir()
    for name, offset in zip("abcdefgh", offsets, strict=False):
        stamped = (render_index_frame(k + offset, 96, 128) for k in range(frames))
        write_video(str(root / "videos" / f"{name}.mp4"), stamped, fps=fps)
    features = np.random.default_rng(0).normal(size=(300, 256)).astype(np.float32)
    fit_pca(features, 32).save(str(root / "pca.npz"))
    return root


def index_run_args(library: Path, output: Path, fps: float, *extra: str) -> list[str]:
    """tiny_args for an index_library: rgb only at `fps`, with its PCA."""
    pca = str(library / "pca.npz")
    rgb_only = ("--streams", "rgb", "--fps", str(fps), "--pca", pca)
    return tiny_args(library / "videos", output, *rgb_only, *extra)


def tiny_config(library: Path, output: Path, *extra: str) -> ExtractConfig:
    """The config `extract_features` would run for tiny_args, for tests that call run()."""
    args, beam_args = extract_features.build_parser().parse(tiny_args(library, output, *extra))
    return extract_features.config_from_args(args, beam_args)


def run_tiny(library: Path, output: Path, *extra: str, faults: FaultPlan | None = None):
    """run() with a FaultPlan; returns the PipelineResult (metrics) of the finished job."""
    return extract_features.run(tiny_config(library, output, *extra), faults=faults)


def exit_status(args: list[str]) -> int:
    """main()'s status; flag errors end in SystemExit, as argparse's do."""
    try:
        return extract_features.main(args)
    except SystemExit as exited:
        return exited.code


def one_line_error(capsys) -> str:
    """The single stderr line a failed main() printed (asserts there is exactly one)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert lines[0].startswith("extract_features: error: "), lines[0]
    return lines[0]


def sample_videos(root: Path, videos: int, seed: int = 0) -> Path:
    """A sample library of `videos` real H.264 clips (with labels.csv) at `root`."""
    args = ["--output", str(root), "--videos", str(videos), "--seed", str(seed)]
    assert sample_library.main(args) == 0
    return root


def frame_records(output: Path) -> list[records.FrameRecord]:
    """Every frame-level record an extraction wrote under `output/frame`, with every feature
    list its manifest names (rgb, audio); rgb when there is no manifest."""
    paths = sorted(str(path) for path in (output / "frame").glob("*.tfrecord"))
    names = ("rgb",)
    if (output / "manifest.json").exists():
        streams = json.loads((output / "manifest.json").read_text())["streams"]
        names = tuple(stream["name"] for stream in streams)
    return [records.decode_frame_example(raw, names) for raw in records.read_tfrecords(paths)]


def make_library(root: Path, videos: int = SAMPLE_VIDEOS) -> Path:
    sample_videos(root, videos)
    (root / "broken").mkdir()
    for relative, (write, _) in BROKEN_INPUTS.items():
        write(str(root / relative))
    videos = sorted(root.glob("*/*.mp4"))
    zeroed = root / "broken/zeros.mp4"
    shutil.copy(videos[1], zeroed)
    broken_videos.zero_media_payload(str(zeroed))
    (root / "cut").mkdir()
    broken_videos.cut_copy(str(videos[2]), str(root / TRUNCATED_INPUT), 0.6)
    # Same id as an existing video, other container: the later path in sorted order fails.
    shutil.copy(videos[0], videos[0].with_suffix(".mkv"))
    return root


def extract(library: Path, output: Path, *flags: str) -> Extracted:
    """Runs extract_features with the tiny backbone; fails the test on a non-zero exit."""
    assert extract_features.main(tiny_args(library, output, *flags)) == 0
    manifest = json.loads((output / "manifest.json").read_text())
    return Extracted(library, output, manifest, read_failures(output))
