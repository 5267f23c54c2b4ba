"""TFRecord framing in Python, which reader serves which path, and the shard cache's rules."""

import errno
import io

import pytest
import tensorflow as tf

from features import gcs, record_stream, storage
from features.shard_cache import ShardCache
from features.tfrecord_framing import (
    DamagedRecordError,
    frame_record,
    has_tfrecord_header,
    iter_record_blocks,
    iter_records,
)

PAYLOADS = [b"", b"x", b"hello world" * 100]


def test_framing_matches_tensorflow_both_ways(tmp_path):
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for payload in PAYLOADS:
            writer.write(payload)
    written = (tmp_path / "tf.tfrecord").read_bytes()
    assert written == b"".join(map(frame_record, PAYLOADS))
    records = list(iter_records(io.BytesIO(written)))
    assert [data for _, data in records] == PAYLOADS
    assert [offset for offset, _ in records] == [0, 16, 33]
    assert has_tfrecord_header(written) and not has_tfrecord_header(b"not a record")


def records_read(data: bytes, block_bytes: int, read: list[bytes]) -> None:
    """Appends to `read` the records found, one by one (iter_records, block_bytes=0) or cut
    out of iter_record_blocks' blocks; appends before any error is raised."""
    if not block_bytes:
        for _, payload in iter_records(io.BytesIO(data)):
            read.append(payload)
        return
    for block, starts, lengths in iter_record_blocks(io.BytesIO(data), block_bytes):
        for start, size in zip(starts, lengths, strict=True):
            read.append(block[start : start + size])


@pytest.mark.parametrize("block_bytes", [1, 20, 10**6])
def test_blocks_hold_whole_records_whatever_the_read_size(block_bytes):
    for data, expected in ((b"".join(map(frame_record, PAYLOADS)), PAYLOADS), (b"", [])):
        read = []
        records_read(data, block_bytes, read)
        assert read == expected


DAMAGES = [
    (lambda data: data[:-1], "truncated TFRecord", 33),
    (lambda data: data[:20], "truncated TFRecord", 16),
    (lambda data: data[:16] + bytes([data[16] ^ 1]) + data[17:], "bad length checksum", 16),
    (lambda data: data[:-10] + b"?" + data[-9:], "bad data checksum", 33),
]


@pytest.mark.parametrize(("damage", "what", "offset"), DAMAGES)
@pytest.mark.parametrize("block_bytes", [0, 5, 10**6])  # 0: iter_records, record by record
def test_damage_is_named_by_the_offset_of_its_record(damage, what, offset, block_bytes):
    data = damage(b"".join(map(frame_record, PAYLOADS)))
    read = []
    with pytest.raises(DamagedRecordError, match=what) as error:
        records_read(data, block_bytes, read)
    assert error.value.offset == offset
    assert read == PAYLOADS[: [0, 16, 33].index(offset)]  # every record before the damage
    assert str(error.value).endswith(f"at byte {offset}")


def test_tensorflow_reads_local_and_real_gcs_but_not_an_emulator(monkeypatch):
    monkeypatch.delenv(gcs.EMULATOR_ENV, raising=False)
    assert record_stream.tensorflow_reads("/data/a.tfrecord")
    assert record_stream.tensorflow_reads("gs://bucket/a.tfrecord")
    monkeypatch.setenv(gcs.EMULATOR_ENV, "http://127.0.0.1:9023")
    assert not record_stream.tensorflow_reads("gs://bucket/a.tfrecord")
    assert record_stream.tensorflow_reads("/data/a.tfrecord")


def test_cache_serves_local_files_in_place_and_refuses_a_bucket(tmp_path):
    cache = ShardCache(str(tmp_path / "cache"), 10)
    entry = storage.FileEntry(str(tmp_path / "a.tfrecord"), 100, "1")
    assert cache.fetch(entry) == entry.path and cache.used_bytes == 0
    with pytest.raises(ValueError, match="local folder"):
        ShardCache("gs://bucket/cache", 10)


def test_a_full_disk_stops_the_cache_and_the_shards_stream(tmp_path, monkeypatch):
    copies = []

    def disk_full(path: str, local_path: str) -> None:
        copies.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", local_path)

    monkeypatch.setattr(storage, "copy_to_local", disk_full)
    cache = ShardCache(str(tmp_path / "cache"), 10**9)
    first = storage.FileEntry("gs://b/part-0.tfrecord", 100, "7")
    with pytest.warns(UserWarning, match="is full"):
        assert cache.fetch(first) == first.path
    second = storage.FileEntry("gs://b/part-1.tfrecord", 100, "7")
    assert cache.fetch(second) == second.path  # no second attempt, no second warning
    assert copies == [first.path] and cache.used_bytes == 0


def test_a_failed_stream_fails_the_byte_count_naming_the_file(tmp_path, monkeypatch):
    path = tmp_path / "a.tfrecord"
    path.write_bytes(b"".join(map(frame_record, PAYLOADS)))
    entry = storage.match_entries(str(path))[0]

    def unreachable(name: str):
        raise ConnectionError(f"{name}: connection reset")

    monkeypatch.setattr(storage, "open_read", unreachable)
    monkeypatch.setenv(gcs.EMULATOR_ENV, "http://127.0.0.1:9")
    streamed = storage.FileEntry("gs://b/a.tfrecord", entry.size, entry.version)
    stream = record_stream.record_stream([streamed], shuffle=False)
    with (
        pytest.warns(UserWarning, match="connection reset"),
        pytest.raises(tf.errors.InvalidArgumentError, match=r"gs://b/a.tfrecord: corrupt.*\(0 of"),
    ):
        list(stream)
