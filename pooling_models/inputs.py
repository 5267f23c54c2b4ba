"""Checks on the record inputs of train_pool and eval_pool, made before any training.

Each failure is a one-line UsageError naming the flag or file and the fix, instead of a
TensorFlow traceback minutes into a run.
"""

import os
import re
import struct

import numpy as np
import tensorflow as tf

from features import storage
from features.cli import UsageError
from features.formats import LABELS_KEY
from features.record_stream import match_record_files, record_stream
from features.records import CorruptRecordError
from features.shard_cache import ShardCache

_CORRUPT = re.compile(
    r"\[(.+?): corrupt, truncated or unreadable TFRecord file \((\d+) of its (\d+) bytes read\)\]"
)
_SCAN_BATCH = 256
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


def first_record(path: str) -> tf.train.SequenceExample | None:
    """The file's first record, parsed as a SequenceExample (None: no readable record).
    Reads the TFRecord framing itself; no TensorFlow op needed.

    An Example's bytes also parse as a SequenceExample (its features land in the context),
    so a record without any feature list is a video-level one."""
    with storage.open_read(path) as source:
        header = source.read(12)
        if len(header) < 12:
            return None
        (length,) = struct.unpack("<Q", header[:8])
        payload = source.read(length)
    if len(payload) < length:
        return None  # truncated: the reader names the file and offset later
    try:
        return tf.train.SequenceExample.FromString(payload)
    except Exception:  # noqa: BLE001 -- protobuf's DecodeError; not a record we know
        return None


def check_records(
    files: list[str], level: str, sizes: dict[str, int], flag: str, pattern: str
) -> None:
    """UsageError when the first record is of the other level (frame vs video), lacks one
    of the features, or holds another number of values per frame than `sizes` says."""
    record = first_record(files[0])
    if record is None:
        return
    where = f"{flag} {pattern}"
    found = "frame" if record.feature_lists.feature_list else "video"
    if found != level:
        fix = _LEVEL_FIX[level]
        if level == "frame":
            fix += ", or evaluate a video-level model (--data_level video) on mean_rgb"
        what = f"{found}-level records where {level}-level records are needed"
        raise UsageError(what, where, fix)
    for name, size in sizes.items():
        held = record.feature_lists.feature_list if level == "frame" else record.context.feature
        if name not in held:
            what = f"the records hold no feature {name!r} (they hold {', '.join(sorted(held))})"
            raise UsageError(what, where, "pass records with it, or other --feature_names")
        got = _values_per_frame(record, name, level)
        if got is not None and got != size:
            what = f"feature {name!r} holds {got} values per frame, the model takes {size}"
            raise UsageError(what, where, "pass records extracted with the same PCA dims")


def _values_per_frame(record: tf.train.SequenceExample, name: str, level: str) -> int | None:
    if level == "video":
        return len(record.context.feature[name].float_list.value)
    frames = record.feature_lists.feature_list[name].feature
    if not frames or not frames[0].bytes_list.value:
        return None
    return len(frames[0].bytes_list.value[0])


def check_framing(files: list[str]) -> None:
    """Walks each local file's TFRecord framing (lengths only, payloads skipped): a file
    that ends inside a record is a one-line error naming it and the offset, before any
    training. A record damaged inside (a flipped bit) is found by the reader later, and so is
    a truncated gs:// object (walking its framing would cost a request per record)."""
    for path in files:
        if storage.is_remote(path):
            continue
        size = os.path.getsize(path)
        with open(path, "rb") as source:
            offset = 0
            while offset < size:
                header = source.read(8)
                end = offset + 16 + (struct.unpack("<Q", header)[0] if len(header) == 8 else size)
                if end > size:
                    raise UsageError(
                        f"truncated TFRecord file: a record at byte {offset} runs past its "
                        f"end at byte {size}",
                        path,
                        "re-extract it, or leave it out of the glob",
                    )
                offset = end
                source.seek(offset)


def count_records(pattern: str, cache: ShardCache | None = None) -> int:
    """How many records the matched files (local or gs://) hold, streamed once."""
    stream = record_stream(match_record_files(pattern), shuffle=False, cache=cache)
    return int(stream.reduce(np.int64(0), lambda count, _: count + 1))


def largest_label(pattern: str, data_level: str, cache: ShardCache | None = None) -> int:
    """The largest label index in the matched frame- or video-level records (-1 if none),
    streamed once and parsed a batch at a time."""
    labels = {LABELS_KEY: tf.io.VarLenFeature(tf.int64)}

    def largest(batch: tf.Tensor) -> tf.Tensor:
        if data_level == "frame":
            context, _, _ = tf.io.parse_sequence_example(batch, context_features=labels)
        else:
            context = tf.io.parse_example(batch, labels)
        return tf.reduce_max(tf.concat([context[LABELS_KEY].values, [-1]], axis=0))

    stream = record_stream(match_record_files(pattern), shuffle=False, cache=cache)
    return int(stream.batch(_SCAN_BATCH).map(largest).reduce(np.int64(-1), tf.maximum))


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
