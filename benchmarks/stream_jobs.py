"""extract_features runs for stream_costs.py: --streams rgb against rgb,<stream>.

Each job runs in a fresh process (DirectRunner; --weights random and every other stream's
weights random; identity-shaped PCAs of --pca_dims rows given beforehand, so no fit pass runs),
timed by wall clock and by its CPU seconds (RUSAGE_CHILDREN). A job's fixed cost (imports,
model builds, tracing: about 10 s on 2 cores) is in its whole-job time; with a short clip,
every stream also runs on it, and steady state per second of video = (long job - short job) /
(their difference in seconds of video) leaves that cost out.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

from extract_memory import identity_pca
from extract_throughput import Timing

from features.formats import C3D_BACKBONE, C3D_KEY, MANIFEST_FILE, RGB_KEY
from features.manifest import read_manifest
from features.stream_models import stream_feature_dims


@dataclass(frozen=True)
class JobInput:
    path: str  # a clip, or a folder of clips
    seconds: float  # of video in it


@dataclass
class Job:
    """One --streams setting: its long input's run, and its short clip's when measured."""

    streams: str  # "rgb" | "rgb,<stream>"
    source: JobInput
    frames: int
    timing: Timing
    short: Timing | None = None

    def steady_ms(self, short_seconds: float) -> Timing | None:
        """Wall and CPU ms (in Timing's two fields) per second of video, without the fixed
        cost; None without a short run."""
        if self.short is None:
            return None
        seconds = self.source.seconds - short_seconds
        return Timing(
            1000 * (self.timing.wall_s - self.short.wall_s) / seconds,
            1000 * (self.timing.cpu_s - self.short.cpu_s) / seconds,
        )


def run_job(
    source: str,
    output: str,
    backbone: str,
    streams: list[str],
    pcas: dict[str, str],
    args: argparse.Namespace,
) -> tuple[int, Timing]:
    """extract_features in a fresh process -> (frames written, timing incl. its children)."""
    flags = ["--pca", pcas[RGB_KEY], "--pca_dims", str(args.pca_dims)]
    for stream in streams[1:]:
        flags += [f"--{stream}_pca", pcas[stream], f"--{stream}_pca_dims", str(args.pca_dims)]
    command = [
        sys.executable, "-m", "pipelines.extract_features", "--input", source,
        "--output", output, "--backbone", backbone, "--streams", ",".join(streams),
        "--weights", "random", "--flow_weights", "random", "--i3d_weights", "random",
        "--c3d_weights", "random", "--max_frames", "0",
        "--frames_per_batch", str(args.frames_per_batch), *flags, *args.job_args,
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start_wall, start_cpu = time.perf_counter(), _children_cpu_s()
    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    timing = Timing(time.perf_counter() - start_wall, _children_cpu_s() - start_cpu)
    if finished.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stderr[-4000:]}")
    return read_manifest(os.path.join(output, MANIFEST_FILE)).counts.frames, timing


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure_jobs(
    args: argparse.Namespace,
    backbone: str,
    corpus: JobInput,
    c3d: JobInput,
    short: JobInput | None,
    work: str,
) -> list[Job]:
    """rgb on the corpus, then rgb,<stream> for each of args.streams on the corpus (c3d on
    its own clip, beside rgb on that clip); each on `short` too when given."""
    pcas = {}
    for stream in (RGB_KEY, *args.streams):
        dims = stream_feature_dims(stream, C3D_BACKBONE if stream == C3D_KEY else backbone)
        pcas[stream] = os.path.join(work, f"{backbone}_{stream}_pca.npz")
        identity_pca(dims, min(args.pca_dims, dims)).save(pcas[stream])
    runs = [(RGB_KEY, corpus)] + [
        (stream, c3d if stream == C3D_KEY else corpus) for stream in args.streams
    ]
    if C3D_KEY in args.streams:
        runs.insert(1, (RGB_KEY, c3d))
    jobs = []
    for stream, source in runs:
        streams = [RGB_KEY] if stream == RGB_KEY else [RGB_KEY, stream]
        name = ",".join(streams)
        output = os.path.join(work, f"{backbone}_{stream}_{len(jobs)}")
        job = Job(name, source, *run_job(source.path, output, backbone, streams, pcas, args))
        if short is not None and (stream, source) != (RGB_KEY, c3d):  # rgb's short is run once
            _, job.short = run_job(short.path, output + "_short", backbone, streams, pcas, args)
        fixed = f", short clip {job.short.wall_s:.1f} s" if job.short else ""
        print(f"  job {name} on {source.seconds:g} s: {job.timing.wall_s:.1f} s{fixed}")
        jobs.append(job)
    return jobs


def print_jobs(jobs: list[Job], short: JobInput | None) -> None:
    """Whole jobs against rgb on the same input; steady state against rgb's on the corpus."""
    print("\n| job --streams | video s | frames | wall s | CPU s | cores busy | extra over rgb, "
          "wall / CPU | steady ms per s of video, wall / CPU | steady extra over rgb, "
          "wall / CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|")  # fmt: skip
    rgb_by_input = {job.source: job for job in jobs if job.streams == RGB_KEY}
    rgb_steady = jobs[0].steady_ms(short.seconds) if short else None
    for job in jobs:
        timing, rgb = job.timing, rgb_by_input[job.source].timing
        steady = job.steady_ms(short.seconds) if short else None
        steady_cells = "| | |"
        if steady and rgb_steady:
            steady_cells = (
                f"| {steady.wall_s:.0f} / {steady.cpu_s:.0f} | "
                f"{steady.wall_s / rgb_steady.wall_s - 1:+.2f} / "
                f"{steady.cpu_s / rgb_steady.cpu_s - 1:+.2f} |"
            )
        print(f"| {job.streams} | {job.source.seconds:g} | {job.frames} | {timing.wall_s:.1f} | "
              f"{timing.cpu_s:.1f} | {timing.cores:.2f} | {timing.wall_s / rgb.wall_s - 1:+.2f} / "
              f"{timing.cpu_s / rgb.cpu_s - 1:+.2f} {steady_cells}")  # fmt: skip
