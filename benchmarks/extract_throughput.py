"""Throughput of extract_features against its parts and against a naive loop, in one run.

    python benchmarks/extract_throughput.py [--backbone inception_v3] [--clips 3] [--seconds 60]
        [--cache_dir /tmp/framevlad-bench] [--frames_per_batch 32|auto] [--precision P]
        [--decode_workers N|auto] [--decode_device D] [--repeat 1] [--rgb_only]
        [Beam flags for the job...]

The clips carry a 48 kHz AAC track. Every rate is in sampled (1 fps, i.e. output) frames per
second; an audio row counts as one frame (one example per rgb sample):
  decode-only   iter_frame_chunks(fps=1, frame_size=backbone input) over the corpus
  bare CNN      FrameEmbedder on the same decoded uint8 frames (graph traced beforehand)
  audio decode  decode_audio: the first audio stream, resampled to 16 kHz mono
  log-mel       log_mel_spectrogram + examples_at (one 0.96 s example per rgb sample)
  audio CNN     AudioEmbedder (VGGish, random weights) on those examples (traced beforehand)
  pipeline      extract_features (DirectRunner, --weights random, --pca a pca.npz fitted
                beforehand, so the PCA fit pass is excluded): frames written / job wall time;
                a 5 s clip estimates the job's fixed cost, giving a steady-state rate too;
                once with --streams rgb, once with --streams rgb,audio (--audio_weights
                random, --audio_pca fitted beforehand): audio's share of the wall time
  naive         every frame decoded to an ndarray, nearest one per second kept, tf.image.resize,
                model.predict on one frame at a time
Unrecognised flags go to every job run (e.g. --direct_num_workers 2). --frames_per_batch,
--precision, --decode_workers and --decode_device mean what they mean to extract_features and
go to the jobs too (the last three only when given), so that the parts measure what the job
runs: --precision for the bare CNN, --decode_workers videos decoded at once on threads of one
process (as the job's local runner decodes them; default: one video at a time) on
--decode_device. --repeat K puts every clip K times into the jobs' input (hard links, distinct
video ids) and into decode-only, so that many decode workers have videos to share without
encoding more. --rgb_only skips the audio parts, the rgb,audio jobs and the naive loop. Where
nvidia-smi answers, each job's GPU utilisation and memory are sampled every 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import av
import keras
import numpy as np
import tensorflow as tf
from corpus import DEFAULT_CACHE_DIR, ClipSpec, ensure_clips

from features.audio import decode_audio, examples_at, log_mel_spectrogram
from features.backbones import BACKBONES, DEFAULT_BACKBONE, build_backbone
from features.decoding import DECODE_DEVICES, DEVICE_CPU
from features.embedder import FrameEmbedder
from features.formats import FLOAT32, MANIFEST_FILE, MAX_PCA_DIMS, PRECISIONS
from features.frames import iter_frame_chunks
from features.manifest import read_manifest
from features.pca import PcaRankWarning, fit_pca
from features.precision import auto_frames_per_batch
from features.vggish import EMBEDDING_DIMS, AudioEmbedder, build_vggish

HEIGHT, WIDTH, FPS = 720, 1280, 30
OVERHEAD_CLIP_SECONDS = 5
PIPELINE_TARGET = 0.8  # pipeline / min(decode-only, bare CNN)
NAIVE_TARGET = 2.0  # pipeline / naive
AUDIO_TARGET = 0.30  # extra wall time of rgb,audio over rgb, at most
GPU_MACHINE_TARGET = 340.0  # sampled frames/s per 16-core 1-GPU machine (issue 13)

T = TypeVar("T")


@dataclass
class Timing:
    """Wall and CPU seconds (all threads of the measured process) of one step."""

    wall_s: float
    cpu_s: float

    @property
    def cores(self) -> float:
        return self.cpu_s / self.wall_s


def timed(step: Callable[..., T], *args) -> tuple[T, Timing]:
    """step(*args) and how long it took in this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = step(*args)
    return result, Timing(time.perf_counter() - wall, time.process_time() - cpu)


def decode_only(
    paths: list[str], frame_size: tuple[int, int], workers: int = 1, device: str = DEVICE_CPU
) -> np.ndarray:
    """All 1 fps samples of `paths`, as the job decodes them: `workers` videos at once on
    threads of this process (PyAV releases the GIL while decoding) -> [n, H, W, 3] uint8."""

    def samples(path: str) -> list[np.ndarray]:
        chunks = iter_frame_chunks(
            path, fps=1.0, max_frames=0, frame_size=frame_size, decode_device=device
        )
        return [chunk.frames for chunk in chunks]

    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate([frames for video in pool.map(samples, paths) for frames in video])


class GpuSampler:
    """nvidia-smi's utilisation and memory of every GPU every 0.5 s while in the `with` block;
    nothing where there is no nvidia-smi."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.samples: list[tuple[float, float]] = []  # (utilisation %, memory used MiB)

    def __enter__(self) -> GpuSampler:
        executable = shutil.which("nvidia-smi")
        if executable:
            query = "--query-gpu=utilization.gpu,memory.used"
            self._process = subprocess.Popen(
                [executable, query, "--format=csv,noheader,nounits", "-lms", "500"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process is None:
            return
        self._process.terminate()
        output, _ = self._process.communicate()
        for line in output.splitlines():
            fields = [field.strip() for field in line.split(",")]
            if len(fields) == 2 and all(field.replace(".", "").isdigit() for field in fields):
                self.samples.append((float(fields[0]), float(fields[1])))

    def summary(self) -> str:
        if not self.samples:
            return ""
        utilisation = [value for value, _ in self.samples]
        return (
            f"GPU utilisation mean {np.mean(utilisation):.0f} % (max {max(utilisation):.0f} %, "
            f"{len(utilisation)} samples), memory used up to "
            f"{max(memory for _, memory in self.samples):.0f} MiB"
        )


def audio_decode(paths: list[str]) -> list[np.ndarray]:
    """Each clip's first audio stream as 16 kHz mono -> [N] float32 per clip."""
    return [decode_audio(path).samples for path in paths]


def log_mel_examples(waveforms: list[np.ndarray], rows_per_clip: list[int]) -> np.ndarray:
    """One 0.96 s log-mel example per 1 fps sample of each clip -> [n, 96, 64] float32."""
    examples = [
        examples_at(log_mel_spectrogram(samples), np.arange(rows, dtype=np.float64))
        for samples, rows in zip(waveforms, rows_per_clip, strict=True)
    ]
    return np.concatenate(examples)


def naive_loop(paths: list[str], model: keras.Model, frame_size: tuple[int, int]) -> int:
    """What a first script does: decode and convert every frame, predict one at a time.

    Returns the frames embedded. Sampling matches the job's: the frame nearest each
    whole second before the last frame.
    """
    embedded = 0

    def embed(rgb: np.ndarray) -> None:
        resized = tf.cast(tf.round(tf.image.resize(rgb, frame_size)), tf.uint8)
        model.predict(resized[None], verbose=0)

    for path in paths:
        with av.open(path) as container:
            target, previous = 0, None
            for frame in container.decode(video=0):
                rgb, t = frame.to_ndarray(format="rgb24"), frame.time
                while previous is not None and target < t:
                    use_previous = target - previous[0] <= t - target
                    embed(previous[1] if use_previous else rgb)
                    embedded, target = embedded + 1, target + 1
                previous = (t, rgb)
    return embedded


def run_job(
    input_dir: str, output: str, args: argparse.Namespace, pca_path: str, audio_pca: str = ""
) -> tuple[int, Timing]:
    """Runs extract_features in a fresh process, as a user would -> frames written, timing;
    prints the GPU's utilisation during the job where there is one.

    With `audio_pca` the job writes rgb and audio (random VGGish), else rgb only."""
    streams = ["--streams", "rgb"]
    if audio_pca:
        streams = ["--streams", "rgb,audio", "--audio_weights", "random", "--audio_pca", audio_pca]
    command = [
        sys.executable, "-m", "pipelines.extract_features",
        "--input", input_dir, "--output", output, "--backbone", args.backbone,
        "--weights", "random", "--pca", pca_path, "--max_frames", "0",
        "--frames_per_batch", str(args.frames_per_batch), *streams, *args.job_args,
    ]  # fmt: skip
    for flag in ("precision", "decode_workers", "decode_device"):
        if getattr(args, flag) is not None:
            command += [f"--{flag}", str(getattr(args, flag))]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start_wall, start_cpu = time.perf_counter(), _children_cpu_s()
    with GpuSampler() as gpu:
        finished = subprocess.run(command, env=env, capture_output=True, text=True)
    timing = Timing(time.perf_counter() - start_wall, _children_cpu_s() - start_cpu)
    if gpu.summary():
        print(f"  {os.path.basename(output)} job: {gpu.summary()}")
    if finished.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stderr[-4000:]}")
    return read_manifest(os.path.join(output, MANIFEST_FILE)).counts.frames, timing


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load_average() -> str:
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def print_tables(
    rows: list[tuple[str, int, Timing | None, float]],
    ratios: list[tuple[str, float, float | None]],
) -> None:
    """Markdown tables: (measure, frames, timing, frames/s) and (ratio, value, target)."""
    print("| measure | sampled frames | wall s | cores busy | sampled frames/s |")
    print("|---|---:|---:|---:|---:|")
    for name, count, timing, rate in rows:
        wall, cores = (
            ("", "") if timing is None else (f"{timing.wall_s:.1f}", f"{timing.cores:.2f}")
        )
        print(f"| {name} | {count} | {wall} | {cores} | {rate:.2f} |")
    print("\n| ratio | value | target |\n|---|---:|---:|")
    for name, value, target in ratios:
        if target is None:
            verdict = ""
        elif target < 0:  # an upper bound: -target at most
            verdict = f"≤ {-target:g} {'met' if value <= -target else 'MISSED'}"
        else:
            verdict = f"≥ {target:g} {'met' if value >= target else 'MISSED'}"
        print(f"| {name} | {value:.2f} | {verdict} |")


def job_input(corpus_dir: str, paths: list[str], repeat: int) -> tuple[str, list[str]]:
    """The jobs' input folder and its videos: `paths` themselves, or each `repeat` times as
    hard links (distinct file names, so distinct video ids) in a folder of their own."""
    if repeat == 1:
        return corpus_dir, paths
    folder = f"{corpus_dir}_x{repeat}"
    os.makedirs(folder, exist_ok=True)
    linked = []
    for copy in range(repeat):
        for path in paths:
            stem, extension = os.path.splitext(os.path.basename(path))
            link = os.path.join(folder, f"{stem}_copy{copy}{extension}")
            if not os.path.exists(link):
                os.link(path, link)
            linked.append(link)
    return folder, linked


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES))
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--frames_per_batch", default="32", help="an integer, or auto")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: the job's (float32)")
    parser.add_argument("--decode_workers", help="an integer, or auto (this machine's cores)")
    parser.add_argument("--decode_device", choices=DECODE_DEVICES, help="default: cpu")
    parser.add_argument("--repeat", type=int, default=1, help="copies of each clip in the input")
    parser.add_argument("--rgb_only", action="store_true", help="no audio parts, no naive loop")
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    args, args.job_args = parser.parse_known_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat {args.repeat}: must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for gpu in tf.config.list_physical_devices("GPU"):
        # The jobs run beside this process on the same GPU: take memory only as needed.
        tf.config.experimental.set_memory_growth(gpu, True)
    spec = BACKBONES[args.backbone]
    batch = (
        auto_frames_per_batch((*spec.input_size, 3))
        if args.frames_per_batch == "auto"
        else int(args.frames_per_batch)
    )
    workers = (
        (os.cpu_count() or 1) if args.decode_workers == "auto" else int(args.decode_workers or 1)
    )
    device = args.decode_device or DEVICE_CPU

    corpus_dir = os.path.join(args.cache_dir, f"{WIDTH}x{HEIGHT}_{FPS}fps_{args.seconds:g}s_audio")
    specs = [
        ClipSpec(HEIGHT, WIDTH, FPS, args.seconds, seed, audio=True) for seed in range(args.clips)
    ]
    clips = ensure_clips(specs, corpus_dir, workers=os.cpu_count() or 1)
    overhead_dir = os.path.join(args.cache_dir, f"{WIDTH}x{HEIGHT}_{FPS}fps_overhead_audio")
    ensure_clips([ClipSpec(HEIGHT, WIDTH, FPS, OVERHEAD_CLIP_SECONDS, 100, True)], overhead_dir)
    # The job reads a folder; the corpus folder must hold exactly these clips.
    extra = sorted(set(os.listdir(corpus_dir)) - {os.path.basename(path) for path in clips})
    if extra:
        sys.exit(f"--cache_dir {corpus_dir}: unexpected files {extra}; remove them")
    input_dir, paths = job_input(corpus_dir, clips, args.repeat)
    print(f"backbone {args.backbone} {spec.input_size}, batch {batch}, precision "
          f"{args.precision or FLOAT32}, {args.clips} x {args.seconds:g} s x {args.repeat} "
          f"{WIDTH}x{HEIGHT} {FPS} fps H.264, decode-only {workers} at once on {device}; "
          f"load average {load_average()}")  # fmt: skip

    frames, decode = timed(decode_only, paths, spec.input_size, workers, device)
    print(f"decode-only: {len(frames)} frames in {decode.wall_s:.1f} s")
    model = build_backbone(args.backbone, "random")
    embedder = FrameEmbedder(model, batch, precision=args.precision or FLOAT32)
    embedder.embed(frames[:batch])  # traces the graph, untimed
    features, cnn = timed(embedder.embed, frames)
    print(f"bare CNN:    {len(frames)} frames in {cnn.wall_s:.1f} s")
    if not args.rgb_only:
        rows_per_clip = [len(decode_only([path], (8, 8))) for path in paths]  # untimed
        waveforms, audio = timed(audio_decode, paths)
        examples, mel = timed(log_mel_examples, waveforms, rows_per_clip)
        audio_embedder = AudioEmbedder(build_vggish("random"), batch)
        audio_embedder.embed(examples[:batch])  # traces the graph, untimed
        audio_features, audio_cnn = timed(audio_embedder.embed, examples)
        print(f"audio:       {len(examples)} examples: decode {audio.wall_s:.1f} s, log-mel "
              f"{mel.wall_s:.1f} s, CNN {audio_cnn.wall_s:.1f} s")  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="framevlad-throughput-") as work:
        pca_path = os.path.join(work, "pca.npz")
        with warnings.catch_warnings():
            # Fewer samples than dims leaves zero-variance components; speed does not care.
            warnings.simplefilter("ignore", PcaRankWarning)
            fit_pca(features, min(MAX_PCA_DIMS, spec.feature_dims)).save(pca_path)
            if not args.rgb_only:
                audio_pca = os.path.join(work, "audio_pca.npz")
                fit_pca(audio_features, EMBEDDING_DIMS).save(audio_pca)
        job_frames, job = run_job(input_dir, os.path.join(work, "out"), args, pca_path)
        print(f"pipeline:    {job_frames} frames in {job.wall_s:.1f} s")
        small_frames, small = run_job(overhead_dir, os.path.join(work, "small"), args, pca_path)
        print(f"pipeline on one {OVERHEAD_CLIP_SECONDS} s clip: {small_frames} frames in "
              f"{small.wall_s:.1f} s")  # fmt: skip
        if not args.rgb_only:
            both = run_job(input_dir, os.path.join(work, "both"), args, pca_path, audio_pca)
            print(f"pipeline rgb,audio: {both[0]} frames in {both[1].wall_s:.1f} s")
            small_both = run_job(
                overhead_dir, os.path.join(work, "small_both"), args, pca_path, audio_pca
            )

    steady = Timing(job.wall_s - small.wall_s, job.cpu_s - small.cpu_s)
    steady_frames = job_frames - small_frames
    decode_fps, cnn_fps = len(frames) / decode.wall_s, len(frames) / cnn.wall_s
    job_fps, steady_fps = job_frames / job.wall_s, steady_frames / steady.wall_s
    parts_fps = min(decode_fps, cnn_fps)
    # Decode and CNN taking turns, each on all cores (what one DirectRunner worker does).
    turns_fps = 1 / (1 / decode_fps + 1 / cnn_fps)
    # Decode and CNN overlapped perfectly: every core busy with their summed CPU work.
    overlap_fps = (os.cpu_count() or 1) * len(frames) / (decode.cpu_s + cnn.cpu_s)
    rows = [
        ("decode-only (iter_frame_chunks)", len(frames), decode, decode_fps),
        ("bare CNN (FrameEmbedder)", len(frames), cnn, cnn_fps),
        ("pipeline, job wall time", job_frames, job, job_fps),
        (f"pipeline, one {OVERHEAD_CLIP_SECONDS} s clip (fixed cost)", small_frames, small,
         small_frames / small.wall_s),
        ("pipeline, steady state (difference of the two)", steady_frames, steady, steady_fps),
        ("bound, decode and CNN take turns: 1/(1/d + 1/c)", len(frames), None, turns_fps),
        ("bound, decode and CNN overlap on all cores (CPU work)", len(frames), None, overlap_fps),
    ]  # fmt: skip
    ratios = [
        ("pipeline / min(decode, CNN), job wall time", job_fps / parts_fps, PIPELINE_TARGET),
        ("pipeline / min(decode, CNN), steady state", steady_fps / parts_fps, PIPELINE_TARGET),
        ("take-turns bound / min(decode, CNN)", turns_fps / parts_fps, None),
        ("overlap bound / min(decode, CNN)", overlap_fps / parts_fps, None),
        ("pipeline steady state / take-turns bound", steady_fps / turns_fps, None),
    ]
    if tf.config.list_physical_devices("GPU"):
        ratios.append(
            (f"pipeline steady state / {GPU_MACHINE_TARGET:g} sampled frames/s",
             steady_fps / GPU_MACHINE_TARGET, 1.0)
        )  # fmt: skip
    if not args.rgb_only:
        naive_frames, naive = timed(naive_loop, paths, model, spec.input_size)
        print(f"naive loop:  {naive_frames} frames in {naive.wall_s:.1f} s")
        naive_fps = naive_frames / naive.wall_s
        steady_both = Timing(
            both[1].wall_s - small_both[1].wall_s, both[1].cpu_s - small_both[1].cpu_s
        )
        audio_parts = Timing(
            audio.wall_s + mel.wall_s + audio_cnn.wall_s, audio.cpu_s + mel.cpu_s + audio_cnn.cpu_s
        )
        rgb_parts = Timing(decode.wall_s + cnn.wall_s, decode.cpu_s + cnn.cpu_s)
        n = len(examples)
        rows[5:5] = [
            ("naive loop (predict per frame)", naive_frames, naive, naive_fps),
            ("audio decode + resample to 16 kHz (decode_audio)", n, audio, n / audio.wall_s),
            ("audio log-mel + examples (log_mel_spectrogram)", n, mel, n / mel.wall_s),
            ("audio CNN (AudioEmbedder, VGGish)", n, audio_cnn, n / audio_cnn.wall_s),
            ("audio parts, summed", n, audio_parts, n / audio_parts.wall_s),
            ("rgb parts (decode-only + bare CNN), summed", len(frames), rgb_parts,
             len(frames) / rgb_parts.wall_s),
            ("pipeline rgb,audio, job wall time", both[0], both[1], both[0] / both[1].wall_s),
            (f"pipeline rgb,audio, one {OVERHEAD_CLIP_SECONDS} s clip", small_both[0],
             small_both[1], small_both[0] / small_both[1].wall_s),
            ("pipeline rgb,audio, steady state", both[0] - small_both[0], steady_both,
             (both[0] - small_both[0]) / steady_both.wall_s),
        ]  # fmt: skip
        ratios[2:2] = [
            ("pipeline / naive, job wall time", job_fps / naive_fps, NAIVE_TARGET),
            ("pipeline / naive, steady state", steady_fps / naive_fps, NAIVE_TARGET),
        ]
        ratios += [
            ("audio extra wall time: rgb,audio job / rgb job - 1",
             both[1].wall_s / job.wall_s - 1, -AUDIO_TARGET),
            ("audio extra wall time, steady state",
             steady_both.wall_s / steady.wall_s - 1, -AUDIO_TARGET),
            ("audio parts / rgb parts (wall, summed)", audio_parts.wall_s / rgb_parts.wall_s,
             None),
        ]  # fmt: skip
    print(f"\nload average {load_average()}, {os.cpu_count()} cores\n")
    print_tables(rows, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
