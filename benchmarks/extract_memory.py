"""Peak memory of extract_features with --max_frames 0: a long video must not cost more than a
short one (target: growth(long) <= growth(short) + 50 MB), in one run.

    python benchmarks/extract_memory.py [--backbone inception_v3] [--short_minutes 1]
        [--long_minutes 30] [--height 240] [--width 320] [--cache_dir /tmp/framevlad-bench]

Each job runs in its own process (DirectRunner, --weights random, a pca.npz made beforehand so
no fit pass runs); its RSS is read from /proc every 50 ms and its high-water mark from wait4's
ru_maxrss. Baseline = peak RSS of a process that only builds the backbone and embeds one batch;
growth = job peak - baseline. Clips are small (320x240 by default): the claim is about
streaming frames through decode -> embed -> quantize, and every frame is resized to the
backbone's input before it is kept, whatever the source resolution.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from corpus import DEFAULT_CACHE_DIR, ClipSpec, ensure_clips

from features.backbones import BACKBONES, DEFAULT_BACKBONE, build_backbone
from features.embedder import FrameEmbedder
from features.formats import MANIFEST_FILE, MAX_PCA_DIMS
from features.manifest import read_manifest
from features.pca import PcaTransform

MB = 1_000_000
GROWTH_SLACK_MB = 50
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


def identity_pca(feature_dims: int) -> PcaTransform:
    """A PCA of the right shape; the values do not change what the job keeps in memory."""
    kept = min(MAX_PCA_DIMS, feature_dims)
    eye = np.eye(feature_dims, kept, dtype=np.float32)
    return PcaTransform(np.zeros(feature_dims), eye, np.ones(kept), epsilon=1e-4)


def rss_profile(samples: list[tuple[float, float]], points: int = 7) -> str:
    """RSS at evenly spaced moments of a run, to show whether it climbs with frames."""
    if not samples:
        return "no samples"
    picks = [samples[round(i * (len(samples) - 1) / (points - 1))] for i in range(points)]
    return ", ".join(f"{t:.0f} s: {rss:.0f}" for t, rss in picks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES))
    parser.add_argument("--short_minutes", type=float, default=1)
    parser.add_argument("--long_minutes", type=float, default=30)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--frames_per_batch", type=int, default=32)
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    parser.add_argument("--baseline_child", action="store_true", help=argparse.SUPPRESS)
    args, job_args = parser.parse_known_args(argv)
    if args.baseline_child:
        baseline_child(args.backbone, args.frames_per_batch)
        return 0

    specs = [
        ClipSpec(args.height, args.width, args.fps, minutes * 60, seed=200)
        for minutes in (args.short_minutes, args.long_minutes)
    ]
    clips = ensure_clips(specs, os.path.join(args.cache_dir, "memory"))
    print(f"backbone {args.backbone}, batch {args.frames_per_batch}, --max_frames 0; clips "
          f"{args.width}x{args.height} {args.fps} fps H.264 of {args.short_minutes:g} and "
          f"{args.long_minutes:g} min; RSS in MB (10^6 bytes)")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="framevlad-memory-") as work:
        baseline_command = [
            sys.executable, os.path.abspath(__file__), "--baseline_child",
            "--backbone", args.backbone, "--frames_per_batch", str(args.frames_per_batch),
        ]  # fmt: skip
        baseline, baseline_s, _ = peak_rss(baseline_command, os.path.join(work, "baseline.log"))
        pca_path = os.path.join(work, "pca.npz")
        identity_pca(BACKBONES[args.backbone].feature_dims).save(pca_path)
        rows = []
        for spec, clip in zip(specs, clips, strict=True):
            output = os.path.join(work, f"out_{spec.seconds:g}s")
            job_command = [
                sys.executable, "-m", "pipelines.extract_features",
                "--input", clip, "--output", output, "--backbone", args.backbone,
                "--weights", "random", "--pca", pca_path, "--max_frames", "0",
                "--frames_per_batch", str(args.frames_per_batch), *job_args,
            ]  # fmt: skip
            peak, wall_s, samples = peak_rss(job_command, output + ".log")
            frames = read_manifest(os.path.join(output, MANIFEST_FILE)).counts.frames
            rows.append((f"{spec.seconds / 60:g} min", frames, peak, peak - baseline, wall_s))
            print(f"{rows[-1][0]}: RSS over the run (MB): {rss_profile(samples)}")

    print("\n| video | frames written | peak RSS MB | growth above baseline MB | wall s |")
    print("|---|---:|---:|---:|---:|")
    print(f"| baseline: backbone + one batch | | {baseline:.0f} | | {baseline_s:.0f} |")
    for label, frames, peak, growth, wall_s in rows:
        print(f"| {label} | {frames} | {peak:.0f} | {growth:+.0f} | {wall_s:.0f} |")
    short, long = rows[0][3], rows[1][3]
    verdict = "met" if long <= short + GROWTH_SLACK_MB else "MISSED"
    print(f"\ngrowth({rows[1][0]}) - growth({rows[0][0]}) = {long - short:+.0f} MB "
          f"(target <= +{GROWTH_SLACK_MB} MB): {verdict}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
