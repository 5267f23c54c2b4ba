"""Training input from records against the in-memory step rate of NetVLAD, and streamed
against staged reads from a bucket.

    python benchmarks/train_input.py [--shards 8] [--videos 24] [--frames 300] [--rounds 3]
        [--parallel_reads 16] [--batch_size 32] [--clusters 64] [--warmup_steps 2]
        [--steps 4] [--mixed_precision] [--skip_reads]

A real GCS emulator (tests/gcs_emulator.py, in memory) holds --shards TFRecord shards of
frame-level records (rgb 1024 + audio 128 bytes a frame, --frames frames a video: ~0.35 MB a
record at 300, as YouTube-8M's). pooling_models.data.frame_dataset reads them as train_pool
does (training: shuffled shards and records, --batch_size videos, ids parsed, frames
dequantized).

Reads (skipped with --skip_reads): only the input is timed (no model; datasets built, and
their functions traced, before the clock starts), one pass over the data per measure, in
alternating rounds:

  staged      storage.stage_glob downloads every shard to local disk, then the reader reads
              the copies (the path before issue 13): first-epoch rate includes the download;
              `staged, local read` is the reader alone on the copies (a later epoch)
  streamed    the reader streams the shards from the bucket (google-cloud-storage reads and
              Python TFRecord framing, as against any emulator); nothing is written locally
  cache 1st   --cache_dir in effect: each shard copied whole into the cache, then read
  cache 2nd   the next epoch, every shard read from the cache

Training (issue 13's target: training input >= 0.9 x the in-memory step rate for NetVLAD
K=64): NetVLAD with --clusters clusters (audio half, as WILLOW), hidden 1024, gating, a MoE
head of 2 mixtures over 3862 classes, compiled as pooling_models.training.fit compiles it,
trained by model.fit on three inputs in alternating rounds: batches already in memory (the
first batches of the local reader, held as tensors: the step rate with no input cost), the
reader over local copies of the shards (TensorFlow's reader), and the reader streaming from
the emulator. Each fit runs --warmup_steps untimed steps (tracing, the shuffle buffer's
first fill), then --steps timed ones; the shards must hold that many batches, so the timed
steps lie inside one pass. Printed: each input's examples/s, fed / in memory (the target),
and the reads' input rate alone over the in-memory step rate (the input's headroom).

Against real GCS, TensorFlow's own gs:// reader (C++) streams instead of the Python one: this
script measures the emulator path only. Numbers are videos per second and MB per second of
records; the ratios are what to read on a shared machine. GPU size (the device check):
--shards 16 --videos 100 --batch_size 80 --warmup_steps 5 --steps 15 --rounds 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests/

from features import storage  # noqa: E402
from features.formats import AUDIO_KEY, MAX_PCA_DIMS, RGB_KEY  # noqa: E402
from features.records import encode_frame_example  # noqa: E402
from features.shard_cache import ShardCache  # noqa: E402
from features.tfrecord_framing import frame_record  # noqa: E402
from tests.gcs_emulator import BUCKET, client, running_emulator  # noqa: E402

AUDIO_DIMS = 128
NUM_CLASSES = 3862
MEMORY_BATCHES = 4  # distinct in-memory batches, cycled
INPUT_TARGET = 0.9  # fed step rate / in-memory step rate
MB = 1_000_000


def shard(index: int, videos: int, frames: int) -> bytes:
    records = []
    for video in range(videos):
        video_id = f"shard{index}-video{video}"
        rng = np.random.default_rng(zlib.crc32(video_id.encode()))
        features = {
            RGB_KEY: rng.integers(0, 256, (frames, MAX_PCA_DIMS), dtype=np.uint8),
            AUDIO_KEY: rng.integers(0, 256, (frames, AUDIO_DIMS), dtype=np.uint8),
        }
        labels = rng.choice(NUM_CLASSES, size=3, replace=False).tolist()
        records.append(frame_record(encode_frame_example(video_id, labels, features)))
    return b"".join(records)


def reader(pattern: str, args: argparse.Namespace, cache: ShardCache | None = None):
    """The training input of train_pool over `pattern` (built, not yet read)."""
    from pooling_models.data import frame_dataset

    return frame_dataset(
        pattern,
        feature_names=(RGB_KEY, AUDIO_KEY),
        feature_sizes=(MAX_PCA_DIMS, AUDIO_DIMS),
        num_classes=NUM_CLASSES,
        batch_size=args.batch_size,
        training=True,
        parallel_reads=args.parallel_reads,
        cache=cache,
    )


def epoch(dataset) -> tuple[float, int]:
    """(seconds, videos) of one pass over a built dataset."""
    start = time.perf_counter()
    videos = sum(int(inputs["num_frames"].shape[0]) for inputs, _ in dataset)
    return time.perf_counter() - start, videos


def staged(pattern: str, args: argparse.Namespace) -> tuple[float, float]:
    """(seconds to download and read, seconds to read the local copies)."""
    start = time.perf_counter()
    local = storage.stage_glob(pattern)
    downloaded = time.perf_counter() - start
    seconds, _ = epoch(reader(local, args))
    shutil.rmtree(os.path.dirname(local))
    return downloaded + seconds, seconds


def compare_reads(pattern: str, work: Path, args: argparse.Namespace, total: int) -> dict:
    """Median seconds of one pass per way of reading the bucket's records."""
    videos = args.shards * args.videos
    epoch(reader(pattern, args))  # warm-up: tracing, connections
    times: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        first, local = staged(pattern, args)
        times.setdefault("staged, 1st epoch (download + read)", []).append(first)
        times.setdefault("staged, local read", []).append(local)
        seconds, count = epoch(reader(pattern, args))
        assert count == videos, (count, videos)
        times.setdefault("streamed (every epoch)", []).append(seconds)
        cache_dir = work / "cache"
        cached = reader(pattern, args, ShardCache(str(cache_dir), 10 * total))
        times.setdefault("cache, 1st epoch", []).append(epoch(cached)[0])
        times.setdefault("cache, 2nd epoch", []).append(epoch(cached)[0])
        shutil.rmtree(cache_dir)
    medians = {name: statistics.median(values) for name, values in times.items()}
    staged_first = medians["staged, 1st epoch (download + read)"]
    print(f"\nreads, no model, median of {args.rounds} rounds")
    print(f"{'input':40s} {'s':>7s} {'videos/s':>9s} {'MB/s':>7s} {'vs staged 1st':>14s}")
    for name, seconds in medians.items():
        print(
            f"{name:40s} {seconds:7.2f} {videos / seconds:9.1f} {total / MB / seconds:7.1f} "
            f"{staged_first / seconds:14.2f}"
        )
    later = medians["staged, local read"] / medians["streamed (every epoch)"]
    print(f"streamed / staged local read (a later epoch): {later:.2f}")
    return medians


def compare_training(pattern: str, local: str, args: argparse.Namespace) -> dict[str, float]:
    """Examples/s of NetVLAD trained on each input (summed over the rounds), printed with
    the ratios of the fed inputs to the in-memory rate."""
    import keras
    from train_throughput import compiled, fit_timing, in_memory

    from pooling_models.builder import model_inputs
    from pooling_models.model_config import ModelConfig

    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    config = ModelConfig(
        pooling="netvlad",
        num_classes=NUM_CLASSES,
        feature_names=(RGB_KEY, AUDIO_KEY),
        feature_sizes=(MAX_PCA_DIMS, AUDIO_DIMS),
        cluster_size=args.clusters,
        hidden_size=1024,
        gating=True,
        head="moe",
        num_mixtures=2,
    )
    model = compiled(config)

    def fed(path: str):
        return reader(path, args).map(lambda inputs, labels: (model_inputs(model, inputs), labels))

    memory = in_memory(list(fed(local).take(MEMORY_BATCHES)))
    inputs = {"in memory": memory, "local records": local, "emulator, streamed": pattern}
    totals = dict.fromkeys(inputs, (0, 0.0, 0.0))  # (steps, wall s, CPU s)
    for round_index in range(args.rounds):
        for name, source in inputs.items():
            dataset = source if name == "in memory" else fed(source)
            timing = fit_timing(model, dataset, args.warmup_steps, args.steps)
            steps, wall, cpu = totals[name]
            totals[name] = (steps + timing.steps, wall + timing.wall_s, cpu + timing.cpu_s)
            print(f"round {round_index + 1} {name}: "
                  f"{timing.steps * args.batch_size / timing.wall_s:.1f} examples/s, "
                  f"{timing.cpu_s / timing.wall_s:.2f} cores busy", flush=True)  # fmt: skip
    print(f"\ntraining: NetVLAD K={args.clusters} (rgb + audio), hidden 1024, gating, MoE 2, "
          f"{model.count_params():,} parameters, batch {args.batch_size} x {args.frames} "
          f"frames, policy {keras.config.dtype_policy().name}; {args.steps} timed steps after "
          f"{args.warmup_steps} per fit, {args.rounds} round(s)")  # fmt: skip
    print("| input | steps | wall s | cores busy | examples/s |\n|---|---:|---:|---:|---:|")
    rates = {}
    for name, (steps, wall, cpu) in totals.items():
        rates[name] = steps * args.batch_size / wall
        print(f"| {name} | {steps} | {wall:.2f} | {cpu / wall:.2f} | {rates[name]:.1f} |")
    for name in ("local records", "emulator, streamed"):
        ratio = rates[name] / rates["in memory"]
        verdict = "met" if ratio >= INPUT_TARGET else "MISSED"
        print(f"training input ({name}) / in-memory step rate: {ratio:.2f} "
              f"(target >= {INPUT_TARGET:g} {verdict})")  # fmt: skip
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--videos", type=int, default=24, help="per shard")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel_reads", type=int, default=16)
    parser.add_argument("--batch_size", type=int, default=32, help="videos per step")
    parser.add_argument("--clusters", type=int, default=64, help="NetVLAD's K")
    parser.add_argument("--warmup_steps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per fit")
    parser.add_argument("--mixed_precision", action="store_true", help="as train_pool's")
    parser.add_argument("--skip_reads", action="store_true", help="only the training part")
    args = parser.parse_args()
    if args.warmup_steps < 1:
        parser.error(f"--warmup_steps {args.warmup_steps}: at least 1 (the step's tracing)")
    videos = args.shards * args.videos
    needed = (args.warmup_steps + args.steps) * args.batch_size
    if videos < needed:
        parser.error(
            f"--shards x --videos = {videos}: the timed steps need (--warmup_steps + --steps) "
            f"x --batch_size = {needed} videos in one pass; raise --videos"
        )
    work = Path(tempfile.mkdtemp(prefix="framevlad-bench-input-"))
    with running_emulator(work / "emulator.log") as host:
        os.environ["STORAGE_EMULATOR_HOST"] = host
        bucket = client().create_bucket(BUCKET)
        total = 0
        for index in range(args.shards):
            data = shard(index, args.videos, args.frames)
            bucket.blob(f"records/part-{index:03d}.tfrecord").upload_from_string(data)
            total += len(data)
        pattern = f"gs://{BUCKET}/records/*.tfrecord"
        print(f"{args.shards} shards, {videos} videos, {total / MB:.1f} MB of records")
        reads = {} if args.skip_reads else compare_reads(pattern, work, args, total)
        local = storage.stage_glob(pattern)
        rates = compare_training(pattern, local, args)
    shutil.rmtree(os.path.dirname(local), ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    for name in ("staged, local read", "streamed (every epoch)"):
        if name in reads:
            ratio = videos / reads[name] / rates["in memory"]
            print(f"input alone ({name}) / in-memory step rate: {ratio:.2f}")
    print(f"cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
