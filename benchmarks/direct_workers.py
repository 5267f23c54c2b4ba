"""Decode workers on the local runner: --decode_workers 1 against the default (one thread per
core, one model per process), and against worker processes, on CPU, in one run.

    python benchmarks/direct_workers.py [--backbone inception_v3] [--clips 6] [--seconds 30]
        [--height 720] [--width 1280] [--rounds 1] [--cache_dir /tmp/framevlad-bench]

The same extract_features job (--weights random, --pca a pca.npz fitted beforehand so no fit
pass runs, --max_frames 0) runs once per mode and round (modes interleaved within a round) on
one local corpus, each in a fresh process:
  1 decode worker       --decode_workers 1: the in-memory DirectRunner, one video at a time
  auto                  the default: --decode_workers = cores, DirectRunner in-memory with
                        that many workers on threads sharing one model
  2 processes, TF 1     --direct_num_workers 2 --direct_running_mode multi_processing, with
                        TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1: a model per process
Wall time is the launcher's; CPU time and peak RSS are its reaped children's (the job and any
SDK worker processes), from wait4's rusage. A probe first checks that TensorFlow honours the
two variables: it counts the threads that do the work of a convolution loop.
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
from extract_throughput import Timing, load_average
from gcs_bytes_read import prefit_pca

from features.backbones import BACKBONES
from features.formats import MANIFEST_FILE
from features.manifest import read_manifest

FPS = 30
ONE_THREAD = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
TWO_PROCESSES = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
MODES = (
    ("--decode_workers 1", ["--decode_workers", "1"], {}),
    ("--decode_workers auto (default)", [], {}),
    ("2 processes, TF 1 thread each", TWO_PROCESSES, ONE_THREAD),
)
NO_REGRESSION = 0.95  # auto's speed / 1 worker's, at least (one run's noise on 2 cores)
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


def run_extract(
    corpus_dir: str, output: str, args: argparse.Namespace, pca_path: str, job_args: list[str]
) -> tuple[int, Timing, float]:
    """One extract_features job in a fresh process -> (frames written, timing, peak RSS MB of
    the job, from wait4: the largest of it and the worker processes it reaped)."""
    command = [
        sys.executable, "-m", "pipelines.extract_features", "--input", corpus_dir,
        "--output", output, "--backbone", args.backbone, "--weights", "random",
        "--pca", pca_path, "--max_frames", "0", "--streams", "rgb",
        "--frames_per_batch", str(args.frames_per_batch), *job_args,
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors = job.stderr.read() if job.stderr else b""
    _, status, usage = os.wait4(job.pid, 0)
    job.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - start
    if job.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{errors.decode()[-4000:]}")
    frames = read_manifest(os.path.join(output, MANIFEST_FILE)).counts.frames
    return frames, Timing(wall_s, usage.ru_utime + usage.ru_stime), usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="inception_v3", choices=sorted(BACKBONES))
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--frames_per_batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="each mode once per round")
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
          f"{len(os.sched_getaffinity(0))} cores")  # fmt: skip
    print(f"TF probe, default:              {probe({})}")
    print(f"TF probe, {' '.join(f'{k}={v}' for k, v in ONE_THREAD.items())}: {probe(ONE_THREAD)}")

    runs: dict[str, list[tuple[int, Timing, float, str]]] = {name: [] for name, _, _ in MODES}
    with tempfile.TemporaryDirectory(prefix="framevlad-workers-") as work:
        pca_path = os.path.join(work, "pca.npz")
        # One clip is enough: the PCA's values do not change the job's speed.
        prefit_pca(paths[:1], args.backbone, args.frames_per_batch, pca_path)
        for round_index in range(args.rounds):
            for index, (name, job_args, extra_env) in enumerate(MODES):
                load = load_average()
                output = os.path.join(work, f"out{round_index}_{index}")
                with environment(extra_env):
                    frames, timing, rss_mb = run_extract(
                        corpus_dir, output, args, pca_path, job_args
                    )
                print(f"{name}: {frames} frames in {timing.wall_s:.1f} s, {timing.cpu_s:.1f} "
                      f"CPU s, peak RSS {rss_mb:.0f} MB (load before: {load})")  # fmt: skip
                runs[name].append((frames, timing, rss_mb, load))

    best = {name: min(rows, key=lambda row: row[1].wall_s) for name, rows in runs.items()}
    baseline = best[MODES[0][0]][1].wall_s
    print(f"\nload average {load_average()}; best of {args.rounds} round(s) per mode\n")
    print("| mode | frames | wall s | CPU s | cores busy | peak RSS MB | speed vs 1 worker |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (frames, timing, rss_mb, _) in best.items():
        print(f"| {name} | {frames} | {timing.wall_s:.1f} | {timing.cpu_s:.1f} | "
              f"{timing.cores:.2f} | {rss_mb:.0f} | {baseline / timing.wall_s:.2f} |")  # fmt: skip
    speed = baseline / best[MODES[1][0]][1].wall_s
    verdict = "met" if speed >= NO_REGRESSION else "MISSED"
    print(f"\nauto / 1 worker: {speed:.2f} (no regression: >= {NO_REGRESSION}): {verdict}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == [_PROBE_FLAG]:
        tf_thread_probe()
        sys.exit(0)
    sys.exit(main())
