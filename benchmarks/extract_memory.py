"""Peak memory of extract_features with --max_frames 0: a long video must not cost more than a
short one (target: growth(long) <= growth(short) + 50 MB for rgb alone, + 100 MB with the
motion and clip streams), in one run.

    python benchmarks/extract_memory.py [--backbone inception_v3] [--streams rgb]
        [--decode_streams rgb,flow,i3d,c3d,fovea] [--short_minutes 1] [--long_minutes 30]
        [--height 240] [--width 320] [--cache_dir /tmp/framevlad-bench]

Each job runs in its own process (DirectRunner, --streams as given, every network's weights
random, identity-shaped PCAs made beforehand so no fit pass runs); its RSS is read from /proc
every 50 ms and its high-water mark from wait4's ru_maxrss. Baseline = peak RSS of a process
that only builds the backbone and embeds one batch; growth = job peak - baseline. With
--decode_streams, a process per clip first runs only the job's decode pass with those
streams' views (features.frames.iter_media_chunks, each chunk dropped as the job hands it on):
the views keep a window of decoded frames, which must not grow with the video. c3d costs about
1.7 s of CPU per row, so a 30-minute job with it takes most of an hour on 2 cores: give it to
--decode_streams, not --streams. Clips are small (320x240 by default): the claim is about
streaming frames through decode -> embed -> quantize, and every frame is resized to the
network's input before it is kept, whatever the source resolution (the window holds decoded
pictures at the source's size: about 0.1 MB each here, 1.4 MB at 720p).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter

import cv2
import numpy as np
from corpus import DEFAULT_CACHE_DIR, ClipSpec, ensure_clips
from extract_throughput import load_average
from stream_views import job_views, rgb_size

from features.backbones import BACKBONES, DEFAULT_BACKBONE, build_backbone
from features.embedder import FrameEmbedder
from features.formats import (
    AUDIO_KEY,
    C3D_BACKBONE,
    C3D_DIMS,
    C3D_KEY,
    DEFAULT_FPS,
    MANIFEST_FILE,
    MAX_PCA_DIMS,
    RGB_KEY,
)
from features.frames import AudioChunk, FrameChunk, iter_media_chunks
from features.manifest import read_manifest
from features.pca import PcaTransform
from features.stream_models import stream_feature_dims

MB = 1_000_000
GROWTH_SLACK_MB = 50  # rgb alone
STREAMS_SLACK_MB = 100  # with motion and clip streams (issue #12)
SAMPLE_PERIOD_S = 0.05


def peak_rss(command: list[str], log_path: str) -> tuple[float, float, list[tuple[float, float]]]:
    """Runs `command` -> (peak RSS in MB, wall seconds, [(seconds, RSS MB)] samples).

    The peak is wait4's ru_maxrss (the kernel's high-water mark, which no sampling can miss)
    or the highest sample, whichever is larger.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        samples = []
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            rss_kib = _rss_kib(process.pid)
            if rss_kib:
                samples.append((time.perf_counter() - start, rss_kib * 1024 / MB))
            time.sleep(SAMPLE_PERIOD_S)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - start
    if process.returncode:
        with open(log_path) as log:
            sys.exit(f"{' '.join(command)} exited {process.returncode}:\n{log.read()[-4000:]}")
    peak = max([usage.ru_maxrss * 1024 / MB] + [rss for _, rss in samples])
    return peak, wall_s, samples


def _rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB; 0 once it has exited (a zombie has no VmRSS line)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def baseline_child(backbone: str, batch_size: int) -> None:
    """What every job holds once its model is up: the backbone and one traced batch."""
    embedder = FrameEmbedder(build_backbone(backbone, "random"), batch_size)
    embedder.embed(np.zeros((batch_size, *embedder.frame_shape), np.uint8))


def identity_pca(feature_dims: int, kept: int | None = None) -> PcaTransform:
    """A PCA of the right shape (`kept` dims, default min(MAX_PCA_DIMS, feature_dims)); the
    values change neither what a job keeps in memory nor what it costs."""
    kept = kept or min(MAX_PCA_DIMS, feature_dims)
    eye = np.eye(feature_dims, kept, dtype=np.float32)
    return PcaTransform(np.zeros(feature_dims), eye, np.ones(kept), epsilon=1e-4)


def rss_profile(samples: list[tuple[float, float]], points: int = 7) -> str:
    """RSS at evenly spaced moments of a run, to show whether it climbs with frames."""
    if not samples:
        return "no samples"
    picks = [samples[round(i * (len(samples) - 1) / (points - 1))] for i in range(points)]
    return ", ".join(f"{t:.0f} s: {rss:.0f}" for t, rss in picks)


def decode_child(args: argparse.Namespace, clip: str) -> None:
    """One decode pass as extract_features --streams args.decode_streams runs it (rgb frames,
    audio examples, every view's rows), each chunk dropped once counted, as the job hands
    it on; prints the rows per stream."""
    cv2.setNumThreads(1)  # as DecodeFrames.setup does with flow
    streams = args.decode_streams.split(",")
    rows: Counter[str] = Counter()
    for chunk in iter_media_chunks(
        clip,
        fps=DEFAULT_FPS,
        max_frames=0,
        frame_size=rgb_size(args.backbone),
        audio=AUDIO_KEY in streams,
        views=job_views(streams, args.backbone, args.frames_per_batch),
    ):
        if isinstance(chunk, FrameChunk):
            rows[RGB_KEY] += len(chunk.frames)
        elif isinstance(chunk, AudioChunk):
            rows[AUDIO_KEY] += len(chunk.examples)
        else:
            rows[chunk.name] += len(chunk.inputs)
    print("rows: " + ", ".join(f"{name} {count}" for name, count in rows.items()))


def pca_flags(args: argparse.Namespace, work: str) -> list[str]:
    """An identity-shaped PCA per stream of args.streams, as the job's PCA flags."""
    flags = []
    for stream in args.streams.split(","):
        network = C3D_BACKBONE if stream == C3D_KEY else args.backbone
        dims = stream_feature_dims(stream, network)
        path = os.path.join(work, f"{stream}_pca.npz")
        identity_pca(dims, C3D_DIMS if stream == C3D_KEY else None).save(path)
        flags += ["--pca" if stream == RGB_KEY else f"--{stream}_pca", path]
    return flags


def decode_runs(
    args: argparse.Namespace, specs: list[ClipSpec], clips: list[str], work: str
) -> list[tuple[str, str, float, float]]:
    """A decode-only process per clip -> (label, rows cut, peak RSS MB, wall s) each."""
    decoded = []
    for spec, clip in zip(specs, clips, strict=True):
        command = [
            sys.executable, os.path.abspath(__file__), "--decode_child", clip,
            "--decode_streams", args.decode_streams, "--backbone", args.backbone,
            "--frames_per_batch", str(args.frames_per_batch),
        ]  # fmt: skip
        log = os.path.join(work, f"decode_{spec.seconds:g}s.log")
        peak, wall_s, samples = peak_rss(command, log)
        with open(log) as counts:
            rows = counts.read().strip().removeprefix("rows: ")
        decoded.append((f"{spec.seconds / 60:g} min", rows, peak, wall_s))
        print(f"decode {decoded[-1][0]}: RSS over the run (MB): {rss_profile(samples)}")
    return decoded


def print_decoded(decoded: list[tuple[str, str, float, float]], streams: str) -> None:
    print(f"\n| decode only, views of --streams {streams} | rows cut | peak RSS MB | wall s |")
    print("|---|---|---:|---:|")
    for label, rows, peak, wall_s in decoded:
        print(f"| {label} | {rows} | {peak:.0f} | {wall_s:.0f} |")
    growth = decoded[1][2] - decoded[0][2]
    print(f"\npeak({decoded[1][0]}) - peak({decoded[0][0]}), decode only: {growth:+.0f} MB "
          f"(target <= +{STREAMS_SLACK_MB} MB): {verdict(growth, STREAMS_SLACK_MB)}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES))
    parser.add_argument("--streams", default=RGB_KEY, help="the jobs' --streams (rgb first)")
    parser.add_argument(
        "--decode_streams", default="", help="also decode-only runs cutting these streams' views"
    )
    parser.add_argument("--short_minutes", type=float, default=1)
    parser.add_argument("--long_minutes", type=float, default=30)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--frames_per_batch", type=int, default=32)
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--baseline_child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--decode_child", help=argparse.SUPPRESS)
    args, job_args = parser.parse_known_args(argv)
    if args.baseline_child:
        baseline_child(args.backbone, args.frames_per_batch)
        return 0
    if args.decode_child:
        decode_child(args, args.decode_child)
        return 0

    specs = [
        ClipSpec(args.height, args.width, args.fps, minutes * 60, seed=200)
        for minutes in (args.short_minutes, args.long_minutes)
    ]
    clips = ensure_clips(specs, os.path.join(args.cache_dir, "memory"))
    slack_mb = GROWTH_SLACK_MB if args.streams == RGB_KEY else STREAMS_SLACK_MB
    print(f"backbone {args.backbone}, batch {args.frames_per_batch}, --max_frames 0, --streams "
          f"{args.streams}; clips {args.width}x{args.height} {args.fps} fps H.264 of "
          f"{args.short_minutes:g} and {args.long_minutes:g} min; RSS in MB (10^6 bytes); "
          f"load average {load_average()}")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="framevlad-memory-") as work:
        decoded = decode_runs(args, specs, clips, work) if args.decode_streams else []
        baseline_command = [
            sys.executable, os.path.abspath(__file__), "--baseline_child",
            "--backbone", args.backbone, "--frames_per_batch", str(args.frames_per_batch),
        ]  # fmt: skip
        baseline, baseline_s, _ = peak_rss(baseline_command, os.path.join(work, "baseline.log"))
        flags = pca_flags(args, work)
        rows = []
        for spec, clip in zip(specs, clips, strict=True):
            output = os.path.join(work, f"out_{spec.seconds:g}s")
            job_command = [
                sys.executable, "-m", "pipelines.extract_features",
                "--input", clip, "--output", output, "--backbone", args.backbone,
                "--streams", args.streams, "--weights", "random", "--flow_weights", "random",
                "--i3d_weights", "random", "--c3d_weights", "random", "--max_frames", "0",
                "--frames_per_batch", str(args.frames_per_batch), *flags, *job_args,
            ]  # fmt: skip
            peak, wall_s, samples = peak_rss(job_command, output + ".log")
            frames = read_manifest(os.path.join(output, MANIFEST_FILE)).counts.frames
            rows.append((f"{spec.seconds / 60:g} min", frames, peak, peak - baseline, wall_s))
            print(f"{rows[-1][0]}: RSS over the run (MB): {rss_profile(samples)}")

    if decoded:
        print_decoded(decoded, args.decode_streams)
    print("\n| video | frames written | peak RSS MB | growth above baseline MB | wall s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| baseline: backbone + one batch | | {baseline:.0f} | | {baseline_s:.0f} |")
    for label, frames, peak, growth, wall_s in rows:
        print(f"| {label} | {frames} | {peak:.0f} | {growth:+.0f} | {wall_s:.0f} |")
    short, long = rows[0][3], rows[1][3]
    print(f"\ngrowth({rows[1][0]}) - growth({rows[0][0]}) = {long - short:+.0f} MB "
          f"(target <= +{slack_mb} MB): {verdict(long - short, slack_mb)}")  # fmt: skip
    print(f"load average {load_average()}")
    return 0


def verdict(growth_mb: float, slack_mb: float) -> str:
    return "met" if growth_mb <= slack_mb else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
