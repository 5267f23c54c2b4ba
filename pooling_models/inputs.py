"""Checks on the record inputs of train_pool and eval_pool, made before any training.

Each failure is a one-line UsageError naming the flag or file and the fix, instead of a
TensorFlow traceback minutes into a run.
"""

import re
import struct

import tensorflow as tf

from features import storage
from features.cli import UsageError
from features.records import CorruptRecordError

_CORRUPT = re.compile(
    r"\[(.+?): corrupt, truncated or unreadable TFRecord file \((\d+) of its (\d+) bytes read\)\]"
)
_LEVEL_FIX = {
    "frame": "pass frame-level records (<features>/frame/*.tfrecord)",
    "video": "pass video-level records (<features>/video/*.tfrecord)",
}


def matched_files(pattern: str, flag: str) -> list[str]:
    """The files a records glob matches (local or gs://); UsageError when none."""
    files = storage.match(pattern)
    if not files:
        raise UsageError("no TFRecord files matched", f"{flag} {pattern}", "check the glob")
    return files


def record_level(path: str) -> str:
    """ "frame" (SequenceExample with feature lists), "video" (Example), or "" when the file
    holds no record. Reads the first record's framing itself: no TensorFlow op needed.

    An Example's bytes also parse as a SequenceExample (its features land in the context),
    so a record without any feature list is taken as video-level."""
    with storage.open_read(path) as source:
        header = source.read(12)
        if len(header) < 12:
            return ""
        (length,) = struct.unpack("<Q", header[:8])
        payload = source.read(length)
    if len(payload) < length:
        return ""  # truncated: the reader names the file and offset later
    try:
        example = tf.train.SequenceExample.FromString(payload)
    except Exception:  # noqa: BLE001 -- protobuf's DecodeError; not a record we know
        return ""
    return "frame" if example.feature_lists.feature_list else "video"


def check_level(files: list[str], expected: str, flag: str, pattern: str) -> None:
    """UsageError when the first file's records are of the other level."""
    found = record_level(files[0])
    if found and found != expected:
        fix = _LEVEL_FIX[expected]
        if expected == "frame":
            fix += ", or evaluate a video-level model (--data_level video) on mean_rgb"
        raise UsageError(
            f"{found}-level records where {expected}-level records are needed",
            f"{flag} {pattern}",
            fix,
        )


def count_records(files: list[str]) -> int:
    """How many records the (local) files hold, read whole."""
    return sum(1 for _ in tf.data.TFRecordDataset(files).ignore_errors())


def is_empty(dataset: tf.data.Dataset) -> bool:
    """Whether a (hold-out) dataset yields nothing; stops at its first batch."""
    return not any(True for _ in dataset.take(1))


def explain_data_error(error: Exception, where: str) -> UsageError:
    """A one-line UsageError for what the readers raise on bad records: a corrupt or
    truncated file (named, with the byte where its records end) or a failed check."""
    if isinstance(error, CorruptRecordError):
        path, _, detail = str(error).partition(": ")
        return UsageError(
            detail.splitlines()[0], path, "re-extract it, or leave it out of the glob"
        )
    message = getattr(error, "message", str(error))
    corrupt = _CORRUPT.search(message)
    if corrupt:
        path, read, size = corrupt.groups()
        return UsageError(
            f"corrupt or truncated TFRecord file: its records end at byte {read} of {size}",
            path,
            "re-extract it, or leave it out of the glob",
        )
    detail = message.split("assertion failed: ", 1)[-1].splitlines()[0]
    detail = re.sub(r"\]\s*\[", " ", detail).strip("[] ")
    return UsageError(f"records cannot be read: {detail}", where, "check the records and flags")
