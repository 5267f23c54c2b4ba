"""Training input from a bucket: streamed shard by shard against staged (downloaded) first.

    python benchmarks/train_input.py [--shards 8] [--videos 24] [--frames 300] [--rounds 3]
        [--parallel_reads 16]

A real GCS emulator (tests/gcs_emulator.py, in memory) holds --shards TFRecord shards of
frame-level records (rgb 1024 + audio 128 bytes a frame, --frames frames a video: ~0.35 MB a
record at 300, as YouTube-8M's). pooling_models.data.frame_dataset reads them as train_pool
does (training: shuffled shards and records, batch 80, ids parsed, frames dequantized); only
the input is timed (no model; datasets built, and their functions traced, before the clock
starts), one pass over the data per measure, in alternating rounds:

  staged      storage.stage_glob downloads every shard to local disk, then the reader reads
              the copies (the path before issue 13): first-epoch rate includes the download;
              `staged, local read` is the reader alone on the copies (a later epoch)
  streamed    the reader streams the shards from the bucket (google-cloud-storage reads and
              Python TFRecord framing, as against any emulator); nothing is written locally
  cache 1st   --cache_dir in effect: each shard copied whole into the cache, then read
  cache 2nd   the next epoch, every shard read from the cache

Against real GCS, TensorFlow's own gs:// reader (C++) streams instead of the Python one: this
script measures the emulator path only. Numbers are videos per second and MB per second of
records; the ratios are what to read on a shared machine.
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
BATCH_SIZE = 80
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


def reader(pattern: str, parallel_reads: int, cache: ShardCache | None = None):
    """The training input of train_pool over `pattern` (built, not yet read)."""
    from pooling_models.data import frame_dataset

    return frame_dataset(
        pattern,
        feature_names=(RGB_KEY, AUDIO_KEY),
        feature_sizes=(MAX_PCA_DIMS, AUDIO_DIMS),
        num_classes=NUM_CLASSES,
        batch_size=BATCH_SIZE,
        training=True,
        parallel_reads=parallel_reads,
        cache=cache,
    )


def epoch(dataset) -> tuple[float, int]:
    """(seconds, videos) of one pass over a built dataset."""
    start = time.perf_counter()
    videos = sum(int(inputs["num_frames"].shape[0]) for inputs, _ in dataset)
    return time.perf_counter() - start, videos


def staged(pattern: str, parallel_reads: int) -> tuple[float, float]:
    """(seconds to download and read, seconds to read the local copies)."""
    start = time.perf_counter()
    local = storage.stage_glob(pattern)
    downloaded = time.perf_counter() - start
    seconds, _ = epoch(reader(local, parallel_reads))
    shutil.rmtree(os.path.dirname(local))
    return downloaded + seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--videos", type=int, default=24, help="per shard")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel_reads", type=int, default=16)
    args = parser.parse_args()
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
        videos = args.shards * args.videos
        print(f"{args.shards} shards, {videos} videos, {total / MB:.1f} MB of records")
        epoch(reader(pattern, args.parallel_reads))  # warm-up: tracing, connections
        times: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            first, local = staged(pattern, args.parallel_reads)
            times.setdefault("staged, 1st epoch (download + read)", []).append(first)
            times.setdefault("staged, local read", []).append(local)
            seconds, count = epoch(reader(pattern, args.parallel_reads))
            assert count == videos, (count, videos)
            times.setdefault("streamed (every epoch)", []).append(seconds)
            cache_dir = work / "cache"
            cached = reader(pattern, args.parallel_reads, ShardCache(str(cache_dir), 10 * total))
            times.setdefault("cache, 1st epoch", []).append(epoch(cached)[0])
            times.setdefault("cache, 2nd epoch", []).append(epoch(cached)[0])
            shutil.rmtree(cache_dir)
    shutil.rmtree(work, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    staged_first = medians["staged, 1st epoch (download + read)"]
    print(f"{'input':40s} {'s':>7s} {'videos/s':>9s} {'MB/s':>7s} {'vs staged 1st':>14s}")
    for name, seconds in medians.items():
        print(
            f"{name:40s} {seconds:7.2f} {videos / seconds:9.1f} {total / MB / seconds:7.1f} "
            f"{staged_first / seconds:14.2f}"
        )
    later = medians["staged, local read"] / medians["streamed (every epoch)"]
    print(f"streamed / staged local read (a later epoch): {later:.2f}")
    print(f"cores: {os.cpu_count()}, rounds: {args.rounds} (medians)")


if __name__ == "__main__":
    main()
