"""What each picture stream (flow, i3d, c3d, fovea) costs on top of rgb alone, in one run.

    python benchmarks/stream_costs.py [--backbones tiny,mobilenet_v3_small] [--clips 2]
        [--seconds 30] [--c3d_seconds 6] [--repeats 3] [--quick] [--no_jobs]
        [--cache_dir /tmp/framevlad-bench] [Beam flags for the jobs...]

Every cost is per second of video: sampling is 1 fps, one row per stream per second.
Parts, in this process (cv2 at one thread, as DecodeFrames sets it in a job; each the best
wall and best CPU time of --repeats, the decode passes interleaved so load hits them alike):
  decode        iter_media_chunks(views=(the stream's view,)) less the rgb-only pass: what the
                view adds to the one decode pass (converting its frames; the flow view also
                computes the flow there)
  flow frames   that pass with the 11 frames a flow row reads as a plain clip view: the decode
                share of the flow stream
  flow          features.flow.flow_stack over those 11 frames per row: flow computation alone
                (DIS MEDIUM, as the job; FAST and ULTRAFAST for comparison)
  CNN           build_stream_model(stream, backbone, "random") in a FrameEmbedder at the job's
                batch (FeatureSpec.samples_per_batch), traced before the timed calls, rows
                repeated up to whole batches (a padded batch would bill its padding to them);
                c3d (about 1.7 s a clip on a 2-core CPU) on its first --c3d_rows rows only
Jobs (stream_jobs.py): extract_features with --streams rgb and rgb,<stream>, c3d's pair on its
own --c3d_seconds clip; with --short_seconds > 0 each also on a short clip, for steady state.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np
from corpus import DEFAULT_CACHE_DIR, ClipSpec, ensure_clips
from extract_throughput import Timing, load_average, timed
from stream_jobs import JobInput, measure_jobs, print_jobs
from stream_views import FLOW_FRAMES, batch_rows, rgb_size, stream_backbone, stream_view

from features.clips import View
from features.embedder import FrameEmbedder
from features.flow import flow_stack
from features.formats import C3D_KEY, FLOW_KEY, FOVEA_KEY, I3D_KEY, RGB_KEY
from features.frames import FrameChunk, iter_media_chunks
from features.inflate import multiply_adds
from features.stream_models import build_stream_model

HEIGHT, WIDTH, FPS = 360, 640, 30
EXTRA_STREAMS = (FLOW_KEY, I3D_KEY, C3D_KEY, FOVEA_KEY)
FLOW_TARGET = 1.0  # flow computation / rgb CNN per second of video, on CPU: at most
I3D_GPU_TARGET = 8.0  # i3d CNN / rgb CNN per second of video, on a GPU: at most
T = TypeVar("T")
DIS_PRESETS = {
    "MEDIUM": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
    "FAST": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "ULTRAFAST": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
}


@dataclass
class Part:
    """One measured part: `rows` rows (one per second of video) in `timing`."""

    name: str
    rows: int
    timing: Timing
    giga_macs: float | None = None  # multiply-adds per row, for a CNN

    @property
    def wall_ms(self) -> float:  # per second of video
        return 1000 * self.timing.wall_s / self.rows

    @property
    def cpu_ms(self) -> float:  # per second of video
        return 1000 * self.timing.cpu_s / self.rows


@dataclass
class Parts:
    """A backbone's parts in table order; by stream, its decode extra and its CNN."""

    table: list[Part] = field(default_factory=list)
    decode: dict[str, Part] = field(default_factory=dict)
    cnn: dict[str, Part] = field(default_factory=dict)
    flow: dict[str, Part] = field(default_factory=dict)  # by DIS preset

    def add(self, part: Part) -> Part:
        self.table.append(part)
        return part


def decode(paths: list[str], size: tuple[int, int], view: View | None) -> np.ndarray:
    """One decode pass per clip at 1 fps -> the view's rows, else the rgb frames."""
    rows = []
    for path in paths:
        for chunk in iter_media_chunks(
            path, fps=1.0, max_frames=0, frame_size=size, audio=False, views=[view] if view else []
        ):
            if isinstance(chunk, FrameChunk) == (view is None):
                rows.append(chunk.frames if view is None else chunk.inputs)
    return np.concatenate(rows)


def flow_stacks(clips: np.ndarray, preset: int) -> np.ndarray:
    """[n, 11, H, W, 3] uint8 -> [n, H, W, 20] uint8: flow computation alone."""
    estimator = cv2.DISOpticalFlow_create(preset)
    return np.stack([flow_stack(clip, estimator) for clip in clips])


def best_of(repeats: int, step: Callable[..., T], *args) -> tuple[T, Timing]:
    """The first result, and the best wall and best CPU time of `repeats` calls."""
    result, timing = timed(step, *args)
    for _ in range(repeats - 1):
        timing = fastest(timing, timed(step, *args)[1])
    return result, timing


def fastest(a: Timing, b: Timing) -> Timing:
    return Timing(min(a.wall_s, b.wall_s), min(a.cpu_s, b.cpu_s))


def minus(a: Timing, b: Timing) -> Timing:
    return Timing(a.wall_s - b.wall_s, a.cpu_s - b.cpu_s)


@dataclass
class Pass:
    """A decode pass: the rows it cut (c3d: the first --c3d_rows), how many, best timing."""

    rows: np.ndarray
    count: int
    timing: Timing


def decode_passes(args: argparse.Namespace, backbone: str, paths: list[str]) -> dict[str, Pass]:
    """rgb alone, the flow frames and each stream's view, interleaved --repeats times."""
    size = rgb_size(backbone)
    names = [RGB_KEY, FLOW_FRAMES, *args.streams]
    views = {name: stream_view(name, backbone, args.frames_per_batch) for name in names[1:]}
    passes: dict[str, Pass] = {}
    for _ in range(args.repeats):
        for name in names:
            rows, timing = timed(decode, paths, size, views.get(name))
            if name in passes:
                passes[name].timing = fastest(passes[name].timing, timing)
            else:
                kept = rows[: args.c3d_rows] if name == C3D_KEY else rows
                passes[name] = Pass(kept, len(rows), timing)
            del rows
    return passes


def embed_part(stream: str, backbone: str, rows: np.ndarray, args: argparse.Namespace) -> Part:
    """The stream's CNN over `rows` (c3d: once; others: best of --repeats)."""
    start = time.perf_counter()
    model = build_stream_model(stream, stream_backbone(stream, backbone), "random", 0)
    build_s = time.perf_counter() - start
    embedder = FrameEmbedder(model, batch_rows(stream, args.frames_per_batch))
    embedder.embed(rows[: embedder.batch_size])  # traces the graph, untimed
    # Whole batches only: the embedder pads a short one, which would bill padding to the rows.
    rows = rows[np.arange(len(rows) + -len(rows) % embedder.batch_size) % len(rows)]
    repeats = 1 if stream == C3D_KEY else args.repeats
    _, timing = best_of(repeats, embedder.embed, rows)
    name = f"{stream}: CNN, batch {embedder.batch_size} (built in {build_s:.1f} s)"
    return Part(name, len(rows), timing, multiply_adds(model) / 1e9)


def measure_parts(args: argparse.Namespace, backbone: str, paths: list[str]) -> Parts:
    """Every part of `backbone`'s streams over the clips at `paths`."""
    parts = Parts()
    passes = decode_passes(args, backbone, paths)
    rgb = passes.pop(RGB_KEY)
    parts.decode[RGB_KEY] = parts.add(Part("rgb: decode (no view)", rgb.count, rgb.timing))
    parts.cnn[RGB_KEY] = parts.add(embed_part(RGB_KEY, backbone, rgb.rows, args))
    flow_frames = passes.pop(FLOW_FRAMES)
    clips, share = flow_frames.rows, minus(flow_frames.timing, rgb.timing)
    parts.add(Part("flow: decode share (its 11 frames as a clip view)", len(clips), share))
    for preset, value in DIS_PRESETS.items():
        _, timing = best_of(args.repeats if preset == "MEDIUM" else 1, flow_stacks, clips, value)
        used = ", as the job" if preset == "MEDIUM" else ", for comparison"
        name = f"flow: flow computation alone (flow_stack, DIS {preset}{used})"
        parts.flow[preset] = parts.add(Part(name, len(clips), timing))
    for stream in args.streams:
        view = passes.pop(stream)
        note = " (incl. flow computation)" if stream == FLOW_KEY else ""
        extra = Part(
            f"{stream}: decode, extra over rgb{note}", view.count, minus(view.timing, rgb.timing)
        )
        parts.decode[stream] = parts.add(extra)
        parts.cnn[stream] = parts.add(embed_part(stream, backbone, view.rows, args))
    return parts


def print_parts(parts: Parts) -> None:
    print("| part | rows | wall ms per s of video | CPU ms per s of video | cores busy | "
          "GMAC per row |\n|---|---:|---:|---:|---:|---:|")  # fmt: skip
    for part in parts.table:
        cores = f"{part.timing.cores:.2f}" if part.timing.wall_s > 0.05 else ""
        macs = f"{part.giga_macs:.3f}" if part.giga_macs is not None else ""
        print(f"| {part.name} | {part.rows} | {part.wall_ms:.1f} | {part.cpu_ms:.1f} | {cores} "
              f"| {macs} |")  # fmt: skip
    rgb_cnn = parts.cnn[RGB_KEY]
    rgb_wall = parts.decode[RGB_KEY].wall_ms + rgb_cnn.wall_ms
    rgb_cpu = parts.decode[RGB_KEY].cpu_ms + rgb_cnn.cpu_ms
    print("\n| ratio, per second of video | wall | CPU | target |\n|---|---:|---:|---|")
    for preset, flow in parts.flow.items():
        wall, cpu = flow.wall_ms / rgb_cnn.wall_ms, flow.cpu_ms / rgb_cnn.cpu_ms
        target = (
            f"≤ {FLOW_TARGET:g}: {verdict(wall)} (wall), {verdict(cpu)} (CPU)"
            if preset == "MEDIUM"
            else "(not the job's preset)"
        )
        print(f"| flow computation (DIS {preset}) / rgb CNN | {wall:.2f} | {cpu:.2f} | {target} |")
    for stream, cnn in parts.cnn.items():
        if stream == RGB_KEY:
            continue
        decode_extra = parts.decode[stream]
        print(f"| {stream}: (decode extra + CNN) / rgb (decode + CNN) | "
              f"{(decode_extra.wall_ms + cnn.wall_ms) / rgb_wall:.2f} | "
              f"{(decode_extra.cpu_ms + cnn.cpu_ms) / rgb_cpu:.2f} | |")  # fmt: skip
        macs = cnn.giga_macs / rgb_cnn.giga_macs
        target = f"on a GPU ≤ {I3D_GPU_TARGET:g}: not measured (CPU)" if stream == I3D_KEY else ""
        print(f"| {stream} CNN / rgb CNN (multiply-adds {macs:.1f}) | "
              f"{cnn.wall_ms / rgb_cnn.wall_ms:.2f} | {cnn.cpu_ms / rgb_cnn.cpu_ms:.2f} | "
              f"{target} |")  # fmt: skip


def verdict(ratio: float) -> str:
    return "met" if ratio <= FLOW_TARGET else "MISSED"


def clips_of(args: argparse.Namespace, seconds: float, seeds: range, name: str) -> list[str]:
    """Paths of the clips (640x360 30 fps) in their own cache folder, alone there."""
    folder = os.path.join(args.cache_dir, f"streams_{WIDTH}x{HEIGHT}_{name}_{seconds:g}s")
    paths = ensure_clips([ClipSpec(HEIGHT, WIDTH, FPS, seconds, seed) for seed in seeds], folder)
    extra = sorted(set(os.listdir(folder)) - {os.path.basename(path) for path in paths})
    if extra:
        sys.exit(f"--cache_dir {folder}: unexpected files {extra}; remove them")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", help="default tiny,mobilenet_v3_small (--quick: tiny)")
    parser.add_argument("--streams", default=",".join(EXTRA_STREAMS))
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--c3d_seconds", type=float, default=6)
    parser.add_argument("--short_seconds", type=float, default=2, help="0: no steady state")
    parser.add_argument("--c3d_rows", type=int, default=4, help="rows the c3d CNN part embeds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--frames_per_batch", type=int, default=32)
    parser.add_argument("--pca_dims", type=int, default=32)
    parser.add_argument(
        "--quick", action="store_true", help="tiny, 1 x 10 s, 1 repeat, no short-clip jobs"
    )
    parser.add_argument("--no_jobs", action="store_true", help="the parts only")
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    args, args.job_args = parser.parse_known_args(argv)
    if args.quick:
        args.clips, args.seconds, args.c3d_seconds, args.short_seconds = 1, 10, 3, 0
        args.c3d_rows, args.repeats = 2, 1
    args.backbones = args.backbones or ("tiny" if args.quick else "tiny,mobilenet_v3_small")
    args.streams = [stream for stream in args.streams.split(",") if stream]
    cv2.setNumThreads(1)  # as DecodeFrames.setup does in a job with flow
    paths = clips_of(args, args.seconds, range(300, 300 + args.clips), "corpus")
    corpus = JobInput(os.path.dirname(paths[0]), args.clips * args.seconds)
    c3d = JobInput(clips_of(args, args.c3d_seconds, range(399, 400), "c3d")[0], args.c3d_seconds)
    short = None
    if args.short_seconds:
        short_clip = clips_of(args, args.short_seconds, range(398, 399), "short")[0]
        short = JobInput(short_clip, args.short_seconds)
    print(f"{args.clips} x {args.seconds:g} s {WIDTH}x{HEIGHT} {FPS} fps H.264, sampled at 1 fps;"
          f" c3d job clip {args.c3d_seconds:g} s, c3d CNN part {args.c3d_rows} rows; short clip "
          f"{args.short_seconds:g} s; --frames_per_batch {args.frames_per_batch}; "
          f"{args.repeats} repeats; load average {load_average()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="framevlad-streams-") as work:
        for backbone in args.backbones.split(","):
            started = time.perf_counter()
            parts = measure_parts(args, backbone, paths)
            print(f"\n### {backbone} (parts: load average {load_average()})\n")
            print_parts(parts)
            if not args.no_jobs:
                jobs = measure_jobs(args, backbone, corpus, c3d, short, work)
                print_jobs(jobs, short)
            print(f"\n({backbone}: {time.perf_counter() - started:.0f} s; load average "
                  f"{load_average()}, {os.cpu_count()} cores)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
