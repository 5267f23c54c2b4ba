"""TFRecord files as tag_videos meets them: told apart from videos by their framing, checked
for frame-level content up front, and read with the byte offset of any damage.

A TFRecord is `uint64 length, uint32 masked crc32c(length), data, uint32 masked crc32c(data)`
(little endian), so the first 12 bytes of a file say whether it is one, whatever its name.
Reading the framing here (not through TensorFlow) lets a truncated or corrupt file be named
with the offset of the record that breaks, as one line instead of a runner's traceback.
"""

import struct
from collections.abc import Iterator
from typing import BinaryIO

import google_crc32c

from features import storage
from features.cli import UsageError
from features.formats import MEAN_RGB_KEY

HEADER_BYTES = 12  # length + its checksum
FOOTER_BYTES = 4  # the data's checksum
_MASK_DELTA = 0xA282EAD8
FRAME_LEVEL_HINT = "tag_videos needs frame-level records (<features>/frame/*.tfrecord)"


def masked_crc32c(data: bytes) -> int:
    """TFRecord's checksum: crc32c rotated right by 15 bits plus a constant (mod 2**32)."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def has_tfrecord_header(head: bytes) -> bool:
    """Whether a file's first bytes open a TFRecord: the length's checksum matches."""
    if len(head) < HEADER_BYTES:
        return False
    length_bytes, (checksum,) = head[:8], struct.unpack("<I", head[8:HEADER_BYTES])
    return masked_crc32c(length_bytes) == checksum


def file_kind(path: str) -> str:
    """ "records", "empty" (0 bytes: an empty TFRecord shard or a broken video) or "other"."""
    with storage.open_read(path) as source:
        head = source.read(HEADER_BYTES)
    if not head:
        return "empty"
    return "records" if has_tfrecord_header(head) else "other"


def iter_records(source: BinaryIO, path: str) -> Iterator[tuple[int, bytes]]:
    """(byte offset, data) of each record; a damaged record raises a UsageError naming the
    file and the offset where that record starts (records before it are yielded first)."""
    offset = 0
    while True:
        header = source.read(HEADER_BYTES)
        if not header:
            return
        if len(header) < HEADER_BYTES:
            raise _damaged("truncated TFRecord", path, offset)
        if not has_tfrecord_header(header):
            raise _damaged("corrupt TFRecord (bad length checksum)", path, offset)
        (length,) = struct.unpack("<Q", header[:8])
        data = source.read(length)
        footer = source.read(FOOTER_BYTES)
        if len(data) < length or len(footer) < FOOTER_BYTES:
            raise _damaged("truncated TFRecord", path, offset)
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            raise _damaged("corrupt TFRecord (bad data checksum)", path, offset)
        yield offset, data
        offset += HEADER_BYTES + length + FOOTER_BYTES


def count_records(path: str) -> int:
    """Records in a file, counted by reading each header and seeking past its data: a
    truncated or corrupt file is named here, before a job starts (cheap for local files)."""
    count = offset = 0
    with storage.open_read(path) as source:
        size = source.seek(0, 2)
        while offset < size:
            source.seek(offset)
            header = source.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES:
                raise _damaged("truncated TFRecord", path, offset)
            if not has_tfrecord_header(header):
                raise _damaged("corrupt TFRecord (bad length checksum)", path, offset)
            (length,) = struct.unpack("<Q", header[:8])
            if offset + HEADER_BYTES + length + FOOTER_BYTES > size:
                raise _damaged("truncated TFRecord", path, offset)
            offset += HEADER_BYTES + length + FOOTER_BYTES
            count += 1
    return count


def _damaged(what: str, path: str, offset: int) -> UsageError:
    return UsageError(
        what,
        f"{path} at byte {offset}",
        "re-extract this file or leave it out of --input; nothing was committed",
    )


def check_frame_level(path: str, feature_name: str, flag_value: str) -> None:
    """Fails up front when the first record of `path` is not a frame-level record holding
    `feature_name` (e.g. video-level records, which hold `mean_rgb` and no frames)."""
    import tensorflow as tf

    with storage.open_read(path) as source:
        first = next(iter_records(source, path), None)
    if first is None:
        return
    # A video-level tf.train.Example parses as a SequenceExample whose context is its features.
    example = tf.train.SequenceExample.FromString(first[1])
    if feature_name in example.feature_lists.feature_list:
        return
    if MEAN_RGB_KEY in example.context.feature or any(
        key.startswith("mean_") for key in example.context.feature
    ):
        what = f"{path} holds video-level records (one mean vector per video)"
        fix = f"{FRAME_LEVEL_HINT}; a video-level model is run by eval_pool on mean_rgb"
        raise UsageError(what, f"--input {flag_value}", fix)
    present = ", ".join(sorted(example.feature_lists.feature_list)) or "none"
    raise UsageError(
        f"{path} has no {feature_name!r} feature list (feature lists: {present})",
        f"--input {flag_value}",
        FRAME_LEVEL_HINT,
    )
