"""DirectRunner with 2 worker processes against 1, on CPU, with and without a TF thread limit.

    python benchmarks/direct_workers.py [--backbone inception_v3] [--clips 6] [--seconds 30]
        [--height 720] [--width 1280] [--cache_dir /tmp/framevlad-bench]

The same extract_features job (--weights random, --pca a pca.npz fitted beforehand so no fit
pass runs, --max_frames 0) runs three times on one local corpus, each in a fresh process:
  1 worker         the default: in-memory DirectRunner, TensorFlow's pools sized to all cores
  2 workers, TF 1  --direct_num_workers 2 --direct_running_mode multi_processing, with
                   TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1: one TF thread per worker
  2 workers        the same two processes, each with TensorFlow's default pools
Wall time is the launcher's; CPU time is the launcher's and its reaped children's (the SDK
worker processes), from getrusage(RUSAGE_CHILDREN). A probe first checks that TensorFlow
honours the two variables: it counts the threads that do the work of a convolution loop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

from corpus import DEFAULT_CACHE_DIR, ClipSpec, ensure_clips
from extract_throughput import Timing, load_average, run_job
from gcs_bytes_read import prefit_pca

from features.backbones import BACKBONES

FPS = 30
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
TWO_PROCESSES = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
MODES = (
    ("1 worker (default)", [], {}),
    ("2 workers, TF 1 thread each", TWO_PROCESSES, ONE_THREAD),
    ("2 workers, TF default threads", TWO_PROCESSES, {}),
)
_PROBE_FLAG = "--tf_thread_probe"
_BUSY_SHARE = 0.05  # a thread counts as working when it did this share of the loop's CPU


def thread_cpu_ticks() -> dict[str, int]:
    """utime + stime of each thread of this process, in clock ticks."""
    ticks = {}
    for thread in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{thread}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks[thread] = int(fields[11]) + int(fields[12])
    return ticks


def tf_thread_probe() -> None:
    """Prints how many threads did a 3x3 convolution loop's work, and the cores it kept busy."""
    import tensorflow as tf

    images, kernel = tf.random.normal([16, 128, 128, 64]), tf.random.normal([3, 3, 64, 64])
    convolve = tf.function(lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"))
    convolve(images)  # traced outside the measurement
    before, wall, cpu = thread_cpu_ticks(), time.perf_counter(), time.process_time()
    for _ in range(30):
        result = convolve(images)
    result.numpy()
    cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
    spent = {name: ticks - before.get(name, 0) for name, ticks in thread_cpu_ticks().items()}
    working = sum(ticks > _BUSY_SHARE * sum(spent.values()) for ticks in spent.values())
    print(f"{working} working threads of {len(spent)}, {cores:.2f} cores busy")


def probe(extra_env: dict[str, str]) -> str:
    """tf_thread_probe's line in a fresh process with `extra_env`."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra_env}
    finished = subprocess.run(
        [sys.executable, __file__, _PROBE_FLAG], env=env, capture_output=True, text=True
    )
    if finished.returncode:
        sys.exit(f"TF thread probe failed:\n{finished.stderr[-2000:]}")
    return finished.stdout.strip()


@contextmanager
def environment(extra_env: dict[str, str]) -> Iterator[None]:
    """os.environ with `extra_env` for the block (run_job's children inherit it)."""
    saved = {name: os.environ.get(name) for name in extra_env}
    os.environ.update(extra_env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="inception_v3", choices=sorted(BACKBONES))
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--frames_per_batch", type=int, default=32)
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    args = parser.parse_args(argv)

    corpus_dir = os.path.join(
        args.cache_dir, f"{args.width}x{args.height}_{FPS}fps_{args.seconds:g}s_workers"
    )
    specs = [
        ClipSpec(args.height, args.width, FPS, args.seconds, 500 + seed)
        for seed in range(args.clips)
    ]
    paths = ensure_clips(specs, corpus_dir)
    extra = sorted(set(os.listdir(corpus_dir)) - {os.path.basename(path) for path in paths})
    if extra:
        sys.exit(f"--cache_dir {corpus_dir}: unexpected files {extra}; remove them")
    print(f"backbone {args.backbone} (random), batch {args.frames_per_batch}, {args.clips} x "
          f"{args.seconds:g} s {args.width}x{args.height} {FPS} fps H.264, "
          f"{os.cpu_count()} cores")  # fmt: skip
    print(f"TF probe, default:              {probe({})}")
    print(f"TF probe, {' '.join(f'{k}={v}' for k, v in ONE_THREAD.items())}: {probe(ONE_THREAD)}")

    rows: list[tuple[str, int, Timing, str]] = []
    with tempfile.TemporaryDirectory(prefix="framevlad-workers-") as work:
        pca_path = os.path.join(work, "pca.npz")
        # One clip is enough: the PCA's values do not change the job's speed.
        prefit_pca(paths[:1], args.backbone, args.frames_per_batch, pca_path)
        for index, (name, job_args, extra_env) in enumerate(MODES):
            load = load_average()
            job = argparse.Namespace(**vars(args), job_args=job_args)
            with environment(extra_env):
                frames, timing = run_job(
                    corpus_dir, os.path.join(work, f"out{index}"), job, pca_path
                )
            print(f"{name}: {frames} frames in {timing.wall_s:.1f} s, {timing.cpu_s:.1f} CPU s "
                  f"(load average before: {load})")  # fmt: skip
            rows.append((name, frames, timing, load))

    baseline = rows[0][2].wall_s
    print(f"\nload average {load_average()}\n")
    print("| mode | frames | wall s | CPU s | cores busy | speed-up vs 1 worker | load before |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, frames, timing, load in rows:
        print(f"| {name} | {frames} | {timing.wall_s:.1f} | {timing.cpu_s:.1f} | "
              f"{timing.cores:.2f} | {baseline / timing.wall_s:.2f} | {load} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == [_PROBE_FLAG]:
        tf_thread_probe()
        sys.exit(0)
    sys.exit(main())
