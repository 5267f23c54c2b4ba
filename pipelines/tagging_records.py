"""TFRecord files as tag_videos meets them: told apart from videos by their framing, checked
for frame-level content up front, and read with the byte offset of any damage.

A TFRecord is `uint64 length, uint32 masked crc32c(length), data, uint32 masked crc32c(data)`
(little endian; features.tfrecord_framing reads it), so the first 12 bytes of a file say
whether it is one, whatever its name. Reading the framing in Python (not through TensorFlow)
lets a truncated or corrupt file be named with the offset of the record that breaks, as one
line instead of a runner's traceback.
"""

import struct
from collections.abc import Iterator
from typing import BinaryIO

from features import storage, tfrecord_framing
from features.cli import UsageError
from features.formats import MEAN_RGB_KEY
from features.tfrecord_framing import FOOTER_BYTES, HEADER_BYTES, has_tfrecord_header

FRAME_LEVEL_HINT = "tag_videos needs frame-level records (<features>/frame/*.tfrecord)"


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
    try:
        yield from tfrecord_framing.iter_records(source)
    except tfrecord_framing.DamagedRecordError as error:
        raise _damaged(error.what, path, error.offset) from None


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
