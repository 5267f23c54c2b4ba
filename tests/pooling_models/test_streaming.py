"""Records streamed from a bucket (a real GCS emulator) into tf.data: shard order, single
reads in evaluation, the shard cache and its cap, corrupt shards named by URL."""

import collections
import contextlib
import json
import os
import subprocess
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from features import gcs, storage
from features.record_stream import match_record_files, record_stream
from features.records import encode_frame_example
from features.shard_cache import ShardCache
from features.tfrecord_framing import frame_record
from pooling_models import eval_pool, train_pool
from pooling_models.data import frame_dataset
from tests import gcs_emulator

SHARDS = 6
VIDEOS_PER_SHARD = 4
FRAMES = 12
DIMS = 8
NUM_CLASSES = 4


def shard_bytes(
    shard: int, videos: int = VIDEOS_PER_SHARD, dims: int = DIMS, num_frames: int = FRAMES
) -> bytes:
    """A TFRecord file of frame-level records with ids `s<shard>-v<video>`."""
    records = []
    for video in range(videos):
        video_id = f"s{shard}-v{video}"
        rng = np.random.default_rng(zlib.crc32(video_id.encode()))
        frames = rng.integers(0, 256, size=(num_frames, dims), dtype=np.uint8)
        records.append(encode_frame_example(video_id, [video % NUM_CLASSES], {"rgb": frames}))
    return b"".join(frame_record(record) for record in records)


def upload_shards(folder: str, shards: int = SHARDS, **kwargs: int) -> int:
    """Writes the shards under `folder` (gs://); returns their total bytes."""
    total = 0
    for shard in range(shards):
        data = shard_bytes(shard, **kwargs)
        gcs_emulator.write(f"{folder}/part-{shard}.tfrecord", data)
        total += len(data)
    return total


@pytest.fixture
def reads(monkeypatch) -> collections.Counter:
    """Objects opened or downloaded from the bucket, counted per URL."""
    counts: collections.Counter = collections.Counter()
    for name in ("open_read", "download"):
        original = getattr(gcs, name)

        def counted(url, *args, original=original):
            counts[url] += 1
            return original(url, *args)

        monkeypatch.setattr(gcs, name, counted)
    return counts


def read_ids(dataset: tf.data.Dataset) -> list[str]:
    return [video_id.decode() for inputs, _ in dataset for video_id in inputs["id"].numpy()]


def dataset(pattern: str, training: bool, **kwargs) -> tf.data.Dataset:
    kwargs.setdefault("batch_size", VIDEOS_PER_SHARD)
    return frame_dataset(
        pattern, num_classes=NUM_CLASSES, feature_sizes=(DIMS,), training=training, **kwargs
    )


def all_ids() -> set[str]:
    return {f"s{s}-v{v}" for s in range(SHARDS) for v in range(VIDEOS_PER_SHARD)}


@pytest.fixture(scope="module")
def shards(gcs_bucket) -> str:
    folder = f"{gcs_bucket}/streamed"
    upload_shards(folder)
    return f"{folder}/*.tfrecord"


def shard_orders(pattern: str, seed: int, epochs: int) -> list[tuple[int, ...]]:
    """The shard order of each epoch, seen at the record stream (one file at a time):
    training parses batches in parallel and hands them on as they finish, so past the stream
    whole shards may trade places."""
    stream = record_stream(match_record_files(pattern), shuffle=True, seed=seed, parallel_reads=1)
    orders = []
    for _ in range(epochs):
        ids = [
            tf.train.SequenceExample.FromString(record.numpy())
            .context.feature["id"]
            .bytes_list.value[0]
            .decode()
            for record in stream
        ]
        assert sorted(ids) == sorted(all_ids())  # every video, once per epoch
        orders.append(tuple(dict.fromkeys(int(video_id[1]) for video_id in ids)))
    return orders


def test_shard_order_is_drawn_afresh_each_epoch_from_the_seed(tmp_path):
    # Local files: the order is drawn before any reader, whichever reads the files (and
    # TensorFlow's reader is faster, keeping the nine epochs read here cheap).
    for shard in range(SHARDS):
        (tmp_path / f"part-{shard}.tfrecord").write_bytes(shard_bytes(shard))
    shards = str(tmp_path / "*.tfrecord")
    orders = shard_orders(shards, seed=3, epochs=3)
    assert all(sorted(order) == list(range(SHARDS)) for order in orders)
    assert len(set(orders)) > 1  # reshuffled: three alike would be chance 1/720**2
    assert shard_orders(shards, seed=3, epochs=3) == orders  # same seed, same draws
    assert shard_orders(shards, seed=4, epochs=2) != orders[:2]


def test_evaluation_reads_each_shard_and_record_once(shards, reads):
    data = dataset(shards, False, parallel_reads=4)
    first = read_ids(data)
    assert sorted(first) == sorted(all_ids()) and len(first) == len(all_ids())
    assert sorted(reads.values()) == [1] * SHARDS  # streamed: one read per object
    assert read_ids(data) == first  # a fixed order, as ensembles need


def test_cache_keeps_shards_and_later_epochs_read_it(gcs_bucket, tmp_path, reads):
    folder = f"{gcs_bucket}/cached"
    total = upload_shards(folder)
    pattern = f"{folder}/*.tfrecord"
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=total)
    data = dataset(pattern, True, cache=cache)
    for _ in range(2):
        assert sorted(read_ids(data)) == sorted(all_ids())
    assert sorted(reads.values()) == [1] * SHARDS  # the second epoch read no object
    copies = sorted(os.listdir(tmp_path / "cache"))
    assert len(copies) == SHARDS and cache.used_bytes == total
    for shard in range(SHARDS):
        (copy,) = [name for name in copies if name.endswith(f"-part-{shard}.tfrecord")]
        assert (tmp_path / "cache" / copy).read_bytes() == shard_bytes(shard)

    # A later run reuses the copies; an object replaced in the bucket is fetched afresh.
    gcs_emulator.write(f"{folder}/part-0.tfrecord", shard_bytes(0, videos=2))
    reads.clear()
    rerun = ShardCache(str(tmp_path / "cache"), max_bytes=total)
    assert rerun.used_bytes == total
    ids = read_ids(dataset(pattern, True, cache=rerun))
    assert sorted(ids) == sorted(all_ids() - {"s0-v2", "s0-v3"})
    assert dict(reads) == {f"{folder}/part-0.tfrecord": 1}
    assert len(os.listdir(tmp_path / "cache")) == SHARDS  # the stale copy is gone


def test_cache_cap_is_respected_and_the_rest_streams(gcs_bucket, tmp_path, reads):
    folder = f"{gcs_bucket}/capped"
    total = upload_shards(folder)
    shard_size = total // SHARDS
    cap = int(2.5 * shard_size)
    cache = ShardCache(str(tmp_path / "cache"), max_bytes=cap)
    data = dataset(f"{folder}/*.tfrecord", True, cache=cache)
    for _ in range(2):
        assert sorted(read_ids(data)) == sorted(all_ids())
    held = sum(entry.stat().st_size for entry in os.scandir(tmp_path / "cache"))
    assert held == 2 * shard_size == cache.used_bytes and held <= cap
    # Two shards copied once; four streamed in each of the two epochs.
    assert sorted(reads.values()) == [1, 1, 2, 2, 2, 2]


@pytest.mark.parametrize(
    ("damage", "training", "cached"),
    [("truncate", False, False), ("flip_payload", True, False), ("flip_length", True, True)],
)
def test_a_corrupt_streamed_shard_is_named_by_its_url(
    gcs_bucket, tmp_path, damage, training, cached
):
    folder = f"{gcs_bucket}/corrupt-{damage}"
    gcs_emulator.write(f"{folder}/good.tfrecord", shard_bytes(0))
    data = bytearray(shard_bytes(1))
    if damage == "truncate":
        data = data[:-10]
    elif damage == "flip_payload":
        data[len(data) // 2] ^= 0xFF
    else:
        data[0] ^= 0x01  # the first record's length no longer matches its checksum
    gcs_emulator.write(f"{folder}/bad.tfrecord", bytes(data))
    cache = ShardCache(str(tmp_path / "cache"), 10**9) if cached else None
    reader = dataset(f"{folder}/*.tfrecord", training, cache=cache)
    expected = f"{folder}/bad.tfrecord: corrupt, truncated or unreadable"
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected) as error:
        read_ids(reader)
    assert "good.tfrecord" not in str(error.value)


def test_listing_gives_sizes_and_generations(gcs_bucket, tmp_path):
    folder = f"{gcs_bucket}/listed"
    gcs_emulator.write(f"{folder}/a.tfrecord", b"12345")
    gcs_emulator.write(f"{folder}/b.tfrecord", b"123")
    remote = storage.match_entries(f"{folder}/*.tfrecord")
    assert [(entry.path, entry.size) for entry in remote] == [
        (f"{folder}/a.tfrecord", 5), (f"{folder}/b.tfrecord", 3),
    ]  # fmt: skip
    (single,) = storage.match_entries(f"{folder}/a.tfrecord")
    assert single == remote[0] and storage.match_entries(f"{folder}/c.tfrecord") == []
    gcs_emulator.write(f"{folder}/a.tfrecord", b"54321")
    assert storage.match_entries(f"{folder}/a.tfrecord")[0].version != single.version
    (tmp_path / "x.tfrecord").write_bytes(b"1234")
    (local,) = storage.match_entries(str(tmp_path / "*.tfrecord"))
    assert local.path == str(tmp_path / "x.tfrecord") and local.size == 4


class TempSpaceWatch(keras.callbacks.Callback):
    """The largest total size of the files under `folder`, sampled after every batch."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.peak = 0

    def measure(self) -> None:
        total = 0
        for root, _, names in os.walk(self.folder):
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # a temp file just removed
                    total += os.path.getsize(os.path.join(root, name))
        self.peak = max(self.peak, total)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.measure()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.measure()


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: int) -> Iterator[None]:
    """A tmpfs of `size` bytes mounted on `folder`; skips the test where mounting is refused
    (CI containers lack CAP_SYS_ADMIN)."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("temp_space", ["watched", pytest.param("tmpfs", marks=pytest.mark.slow)])
def test_training_streams_records_larger_than_the_temp_space(
    gcs_bucket, tmp_path, monkeypatch, temp_space
):
    """train_pool on bucket records four times the temp space allowed: nothing of the
    records' size lands in TMPDIR. `watched`: TMPDIR is a plain folder whose size is sampled
    after every batch; `tmpfs`: TMPDIR is a tmpfs that small (root only), so staging fails."""
    folder = f"{gcs_bucket}/large-{temp_space}"
    total = upload_shards(folder, shards=8, videos=8, dims=1024, num_frames=90)
    allowed = total // 4
    temp = tmp_path / "tmp"
    with contextlib.ExitStack() as stack:
        if temp_space == "tmpfs":
            stack.enter_context(small_tmpfs(temp, allowed))
        else:
            temp.mkdir()
        monkeypatch.setenv("TMPDIR", str(temp))
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        watch = TempSpaceWatch(temp)
        args, _ = train_pool.build_parser().parse([
            "--train_data", f"{folder}/*.tfrecord", "--output", f"{folder}-model",
            "--feature_names", "rgb", "--feature_sizes", "1024", "--eval_fraction", "0.25",
            "--cluster_size", "4", "--hidden_size", "8", "--batch_size", "8", "--epochs", "1",
            "--parallel_reads", "4",
        ])  # fmt: skip
        with pytest.warns(UserWarning, match="without a manifest"):
            metrics = train_pool.run(train_pool.config_from_args(vars(args)), [watch])
    assert metrics["num_videos"] > 0
    stored = json.loads(gcs_emulator.read(f"{folder}-model/metrics.json"))
    assert stored["num_videos"] == metrics["num_videos"]
    config = json.loads(gcs_emulator.read(f"{folder}-model/train_config.json"))
    assert config["model"]["num_classes"] == NUM_CLASSES  # labels scanned from the stream
    assert len(config["history"]["loss"]) == 1
    if temp_space == "watched":
        assert 0 < watch.peak < allowed, (watch.peak, allowed, total)


def test_train_pool_names_a_corrupt_bucket_shard_in_one_line(gcs_bucket, capsys):
    folder = f"{gcs_bucket}/corrupt-run"
    gcs_emulator.write(f"{folder}/good.tfrecord", shard_bytes(0))
    truncated = shard_bytes(1)[:-10]
    gcs_emulator.write(f"{folder}/bad.tfrecord", truncated)
    args = [
        "--train_data", f"{folder}/*.tfrecord", "--output", f"{folder}-model",
        "--feature_names", "rgb", "--feature_sizes", str(DIMS), "--eval_fraction", "0.5",
    ]  # fmt: skip
    assert train_pool.main(args) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" not in line]
    assert len(lines) == 1, lines
    assert "good.tfrecord" not in lines[0]
    assert lines[0].startswith(
        "train_pool: error: corrupt or truncated TFRecord file: its records end at byte"
    )
    assert f"of {len(truncated)} ({folder}/bad.tfrecord): re-extract it" in lines[0]


@pytest.mark.parametrize("script", [train_pool, eval_pool])
def test_a_cache_in_a_bucket_is_refused_in_one_line(script, capsys):
    data = ["--train_data" if script is train_pool else "--eval_data", "/data/*.tfrecord"]
    where = ["--output", "/out"] if script is train_pool else ["--model", "/model"]
    assert script.main([*data, *where, "--cache_dir", "gs://bucket/cache"]) == 2
    error = capsys.readouterr().err.strip()
    assert error == (
        f"{script.PROG}: error: the shard cache must be a local folder (--cache_dir "
        "gs://bucket/cache): pass a local folder, or no --cache_dir to stream every epoch"
    )
