"""Cost of tagging raw videos over extracting their features alone, in one run.

    python benchmarks/tag_throughput.py [--backbone inception_v3] [--weights random]
        [--clips 6] [--seconds 60] [--rounds 2] [--record_copies 50] [--frames_per_batch 32]
        [--cache_dir /tmp/framevlad-bench-tag] [Beam flags for the jobs...]

Every job runs in a fresh process, as a user would start it, timed by wall clock and by the
child's CPU seconds (steadier on a shared machine):
  extract      extract_features --pca <pca.npz made beforehand> --max_frames 0 over the corpus
  tag raw      tag_videos with a NetVLAD model (K=8, hidden 64, 1 epoch, trained untimed on the
               extract job's records) over the same clips: decode, CNN, pooling model,
               segments, Parquet/CSV, thumbnails and the HTML report
  tag records  tag_videos over the extract job's frame records, and over --record_copies
               copies of them (renamed ids) for a videos/s rate that start-up does not swamp
Each job also runs on one 5 s clip (or its record) to estimate its fixed cost; the difference
gives the steady state. Extract and tag raw (corpus and 5 s clip) alternate for --rounds
rounds and are averaged; the per-round ratios show the noise. Target: tag raw / extract - 1
<= 10 %. The corpus is --clips H.264 clips, 640x360 30 fps, in two class folders (the folder
is the label). Afterwards the tagging-only steps are timed in this process, on the same
records and model, to show what the overhead is made of. Unrecognised flags go to every
extract_features and tag_videos run.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np
import tensorflow as tf
from corpus import ClipSpec, ensure_clips
from extract_memory import identity_pca
from extract_throughput import Timing, _children_cpu_s, load_average, timed

from features import records
from features.backbones import BACKBONES, DEFAULT_BACKBONE
from features.formats import MANIFEST_FILE, RECORD_SUFFIX, RGB_KEY
from features.manifest import read_manifest
from features.quantize import dequantize
from pipelines import report
from pooling_models import model_dir, tagging

DEFAULT_CACHE_DIR = "/tmp/framevlad-bench-tag"
HEIGHT, WIDTH, FPS = 360, 640, 30
CLASSES = 2
JOB_STEPS = ("extract", "tag_raw", "extract_small", "tag_raw_small")  # repeated each round
OVERHEAD_CLIP_SECONDS = 5
OVERHEAD_TARGET = 0.10  # tag raw / extract - 1
SEGMENT_SECONDS, SMOOTH = 5, 3  # tag_videos' defaults
TRAIN_FLAGS = [
    "--pooling", "netvlad", "--epochs", "1", "--cluster_size", "8", "--hidden_size", "64",
]  # fmt: skip


def run_child(command: list[str], log_path: str) -> Timing:
    """Runs `command` in a fresh process -> its wall and CPU seconds; exits if it fails."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start_wall, start_cpu = time.perf_counter(), _children_cpu_s()
    with open(log_path, "w") as log:
        finished = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    timing = Timing(time.perf_counter() - start_wall, _children_cpu_s() - start_cpu)
    if finished.returncode:
        with open(log_path) as log:
            sys.exit(f"{' '.join(command)} failed:\n{log.read()[-4000:]}")
    return timing


def extract(args: argparse.Namespace, input_dir: str, output: str, pca_path: str) -> Timing:
    command = [
        sys.executable, "-m", "pipelines.extract_features", "--input", input_dir,
        "--output", output, "--backbone", args.backbone, "--weights", args.weights,
        "--pca", pca_path, "--max_frames", "0", "--labels_from_folders",
        "--frames_per_batch", str(args.frames_per_batch), *args.job_args,
    ]  # fmt: skip
    return run_child(command, output + ".log")


def tag(args: argparse.Namespace, model: str, input_pattern: str, output: str) -> Timing:
    command = [
        sys.executable, "-m", "pipelines.tag_videos", "--model", model,
        "--input", input_pattern, "--output", output,
        "--frames_per_batch", str(args.frames_per_batch),
        *args.job_args,
    ]  # fmt: skip
    timing = run_child(command, output + ".log")
    with open(os.path.join(output, "tagging.json")) as summary:
        counts = json.load(summary)["counts"]
    if counts["failed"]:
        sys.exit(f"tag_videos --input {input_pattern}: {counts['failed']} failed, see {output}")
    return timing


def train(work: str, frame_pattern: str) -> str:
    """A small NetVLAD model on the extract job's records (untimed) -> its directory."""
    model = os.path.join(work, "model")
    command = [
        sys.executable, "-m", "pooling_models.train_pool", *TRAIN_FLAGS,
        "--train_data", frame_pattern, "--eval_data", frame_pattern, "--output", model,
    ]  # fmt: skip
    run_child(command, model + ".log")
    return model


def frame_records(output: str) -> str:
    return os.path.join(output, "frame", f"*{RECORD_SUFFIX}")


def copy_records(pattern: str, copies: int, path: str) -> int:
    """`copies` renamed copies of every record matching `pattern` into `path` -> videos."""
    serialized = list(records.read_tfrecords(sorted(glob.glob(pattern))))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for copy in range(copies):
            for item in serialized:
                record = records.decode_frame_example(item)
                renamed = f"copy{copy}/{record.video_id}"
                writer.write(records.encode_frame_example(renamed, record.labels, record.features))
    return copies * len(serialized)


def tagging_parts(model_path: str, pattern: str, tag_output: str) -> list[tuple[str, int, Timing]]:
    """The steps tag_videos adds to extraction, timed in this process on the corpus records.

    Returns (step, items, timing) rows.
    """
    videos = [
        records.decode_frame_example(item).features[RGB_KEY]
        for item in records.read_tfrecords(sorted(glob.glob(pattern)))
    ]
    scorer, load = timed(lambda path: tagging.WindowScorer(model_dir.load_model(path)), model_path)
    max_frames = model_dir.read_train_config(model_path).max_frames

    def score(quantized: list[np.ndarray]) -> None:
        for frames in quantized:
            tagging.score_video(scorer, dequantize(frames), max_frames, SEGMENT_SECONDS, SMOOTH)

    _, first = timed(score, videos[:1])
    _, rest = timed(score, videos[1:])
    thumbnail = np.random.default_rng(0).integers(0, 256, (299, 299, 3), np.uint8)

    def encode() -> None:
        for _ in videos:
            report.encode_thumbnail(thumbnail, (HEIGHT, WIDTH))

    _, thumbnails = timed(encode)
    _, page = timed(report.write_report, tag_output)
    return [
        ("load the pooling model (keras load_model)", 1, load),
        ("score_video, first video (eager warm-up)", 1, first),
        ("score_video, the other videos", len(videos) - 1, rest),
        ("thumbnail JPEGs (299x299 -> 240 px)", len(videos), thumbnails),
        ("HTML report (reads the Parquet files)", 1, page),
    ]


def overhead(tag_timing: Timing, extract_timing: Timing) -> tuple[float, float]:
    """(wall, CPU) ratios tag / extract - 1."""
    return (
        tag_timing.wall_s / extract_timing.wall_s - 1,
        tag_timing.cpu_s / extract_timing.cpu_s - 1,
    )


def minus(whole: Timing, part: Timing) -> Timing:
    return Timing(whole.wall_s - part.wall_s, whole.cpu_s - part.cpu_s)


def mean(timings: list[Timing]) -> Timing:
    return Timing(
        sum(t.wall_s for t in timings) / len(timings), sum(t.cpu_s for t in timings) / len(timings)
    )


def print_tables(rows, ratios, parts) -> None:
    """Markdown tables: jobs, ratios against the target, and the in-process tagging steps."""
    print("| job | videos | sampled frames | wall s | CPU s | cores busy | videos/s (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, videos, frames, timing in rows:
        print(f"| {name} | {videos} | {frames} | {timing.wall_s:.1f} | {timing.cpu_s:.1f} | "
              f"{timing.cores:.2f} | {videos / timing.wall_s:.2f} |")  # fmt: skip
    print("\n| ratio | wall | CPU | target |\n|---|---:|---:|---|")
    for name, (wall, cpu), target in ratios:
        if target is None:
            verdict = ""
        else:
            met = ["met" if value <= target else "MISSED" for value in (wall, cpu)]
            verdict = f"≤ {target:+.0%}: wall {met[0]}, CPU {met[1]}"
        print(f"| {name} | {wall:+.1%} | {cpu:+.1%} | {verdict} |")
    print("\n| tagging step, in this process | items | wall s | CPU s | CPU ms per item |")
    print("|---|---:|---:|---:|---:|")
    for name, items, timing in parts:
        per_item = 1000 * timing.cpu_s / max(items, 1)
        print(f"| {name} | {items} | {timing.wall_s:.3f} | {timing.cpu_s:.3f} | {per_item:.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, choices=sorted(BACKBONES))
    parser.add_argument("--weights", default="random", help="as extract_features --weights")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--record_copies", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="extract/tag raw repeats")
    parser.add_argument("--frames_per_batch", type=int, default=32)
    parser.add_argument("--cache_dir", default=DEFAULT_CACHE_DIR)
    args, args.job_args = parser.parse_known_args(argv)

    name = f"{WIDTH}x{HEIGHT}_{FPS}fps_{args.seconds:g}s_x{args.clips}"
    corpus_dir = os.path.join(args.cache_dir, name)
    specs = [ClipSpec(HEIGHT, WIDTH, FPS, args.seconds, seed) for seed in range(args.clips)]
    for label in range(CLASSES):
        ensure_clips(specs[label::CLASSES], os.path.join(corpus_dir, f"class{label}"))
    overhead_dir = os.path.join(args.cache_dir, f"{WIDTH}x{HEIGHT}_{FPS}fps_overhead")
    small_spec = ClipSpec(HEIGHT, WIDTH, FPS, OVERHEAD_CLIP_SECONDS, 100)
    ensure_clips([small_spec], os.path.join(overhead_dir, "class0"))
    # The jobs read folders; a stray (e.g. half-written) file would be tagged too.
    expected = {spec.file_name for spec in specs} | {f"class{c}" for c in range(CLASSES)}
    found = {entry for _, dirs, files in os.walk(corpus_dir) for entry in dirs + files}
    if found - expected:
        sys.exit(f"--cache_dir {corpus_dir}: unexpected files {sorted(found - expected)}")
    print(f"backbone {args.backbone} ({args.weights} weights), batch {args.frames_per_batch}, "
          f"{args.clips} x {args.seconds:g} s {WIDTH}x{HEIGHT} {FPS} fps H.264; "
          f"load average {load_average()}", flush=True)  # fmt: skip

    with tempfile.TemporaryDirectory(prefix="framevlad-tag-throughput-") as work:
        pca_path = os.path.join(work, "pca.npz")
        identity_pca(BACKBONES[args.backbone].feature_dims).save(pca_path)
        runs: dict[str, list[Timing]] = defaultdict(list)

        def record(step: str, timing: Timing) -> None:
            runs[step].append(timing)
            print(f"{step} {len(runs[step])}: {timing.wall_s:.1f} s, {timing.cpu_s:.1f} CPU-s",
                  flush=True)  # fmt: skip

        # Extract and tag alternate, so slow drift in the machine's load hits both alike.
        model = ""
        for round_index in range(args.rounds):
            out = {step: os.path.join(work, f"{step}{round_index}") for step in JOB_STEPS}
            record("extract", extract(args, corpus_dir, out["extract"], pca_path))
            record("extract_small", extract(args, overhead_dir, out["extract_small"], pca_path))
            model = model or train(work, frame_records(out["extract"]))
            record("tag_raw", tag(args, model, corpus_dir, out["tag_raw"]))
            record("tag_raw_small", tag(args, model, overhead_dir, out["tag_raw_small"]))
        extracted = os.path.join(work, "extract0")
        frames, small_frames = (
            read_manifest(os.path.join(work, f"{step}0", MANIFEST_FILE)).counts.frames
            for step in ("extract", "extract_small")
        )
        copies_path = os.path.join(work, "copies", "frame", f"copies{RECORD_SUFFIX}")
        copied = copy_records(frame_records(extracted), args.record_copies, copies_path)
        inputs = {
            "tag_records": frame_records(extracted),
            "tag_records_small": frame_records(os.path.join(work, "extract_small0")),
            "tag_records_copies": copies_path,
        }
        for step, pattern in inputs.items():
            record(step, tag(args, model, pattern, os.path.join(work, step)))
        parts = tagging_parts(model, frame_records(extracted), os.path.join(work, "tag_raw0"))

    jobs = {step: mean(timings) for step, timings in runs.items()}
    steady = {
        job: minus(jobs[job], jobs[f"{job}_small"]) for job in ("extract", "tag_raw", "tag_records")
    }
    copies_steady = minus(jobs["tag_records_copies"], jobs["tag_records_small"])
    steady_frames = frames - small_frames
    clips = args.clips
    rows = [
        ("extract_features, corpus", clips, frames, jobs["extract"]),
        (f"extract_features, one {OVERHEAD_CLIP_SECONDS} s clip (fixed cost)", 1, small_frames,
         jobs["extract_small"]),
        ("extract_features, steady state", clips - 1, steady_frames, steady["extract"]),
        ("tag_videos raw, corpus", clips, frames, jobs["tag_raw"]),
        (f"tag_videos raw, one {OVERHEAD_CLIP_SECONDS} s clip (fixed cost)", 1, small_frames,
         jobs["tag_raw_small"]),
        ("tag_videos raw, steady state", clips - 1, steady_frames, steady["tag_raw"]),
        ("tag_videos records, corpus", clips, frames, jobs["tag_records"]),
        ("tag_videos records, one record (fixed cost)", 1, small_frames,
         jobs["tag_records_small"]),
        (f"tag_videos records, {args.record_copies} copies of the corpus", copied,
         frames * args.record_copies, jobs["tag_records_copies"]),
        ("tag_videos records, copies steady state", copied - 1,
         frames * args.record_copies - small_frames, copies_steady),
    ]  # fmt: skip
    ratios = [
        ("tag raw / extract - 1, whole jobs", overhead(jobs["tag_raw"], jobs["extract"]),
         OVERHEAD_TARGET),
        ("tag raw / extract - 1, steady state", overhead(steady["tag_raw"], steady["extract"]),
         OVERHEAD_TARGET),
        (f"tag raw / extract - 1, one {OVERHEAD_CLIP_SECONDS} s clip (fixed costs)",
         overhead(jobs["tag_raw_small"], jobs["extract_small"]), None),
        ("tag records / extract - 1, whole jobs", overhead(jobs["tag_records"], jobs["extract"]),
         None),
    ]  # fmt: skip
    for index, (extract_run, tag_run, extract_small, tag_small) in enumerate(
        zip(*(runs[step] for step in JOB_STEPS), strict=True), start=1
    ):
        steady_ratio = overhead(minus(tag_run, tag_small), minus(extract_run, extract_small))
        ratios.append((f"round {index}: whole jobs", overhead(tag_run, extract_run), None))
        ratios.append((f"round {index}: steady state", steady_ratio, None))
    print(f"\nload average {load_average()}, {os.cpu_count()} cores; "
          f"extract and tag raw rows are means of {args.rounds} rounds\n")  # fmt: skip
    print_tables(rows, ratios, parts)
    print(f"\nvideos/s tagging from records: {copied / jobs['tag_records_copies'].wall_s:.2f} "
          f"whole job ({copied} videos), {(copied - 1) / copies_steady.wall_s:.2f} steady state; "
          f"CPU-s per video at steady state {copies_steady.cpu_s / (copied - 1):.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
