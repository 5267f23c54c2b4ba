"""TFRecord files, local or in a bucket, as one tf.data stream of serialized records: read
shard by shard (several at once, interleaved), never staged, each file checked whole.

Readers. Local files, and gs:// objects on real GCS, are read by tf.data.TFRecordDataset
through TensorFlow's own file systems (its gs:// client streams an object with read-ahead).
That client's endpoint is fixed, so it cannot reach a GCS emulator: with STORAGE_EMULATOR_HOST
set, gs:// objects are streamed by google-cloud-storage (features.storage.open_read) and framed
in Python (features.tfrecord_framing) through Dataset.from_generator, a block of whole records
at a time (one bytes object and the records' offsets, cut apart by tf.strings.substr:
handing TensorFlow one object per record cost more than the reading).

Corrupt files. TensorFlow's DataLossError says "corrupted record at 244" but not in which
file, and an interleave mixes many. So each file is read with errors ignored (both readers
stop at the first damaged record) while the bytes its records account for are counted
(payload + 16 bytes of framing each); at the end of the file the count must equal its size,
taken from the listing (one request per 1000 objects on gs://). A truncated, bit-flipped or
unreadable file thus fails the stream with an InvalidArgumentError whose message starts with
the file's path or URL. Only uncompressed TFRecords (as YouTube-8M's) are read.

Cache. With a features.shard_cache.ShardCache, a gs:// shard is copied whole to local disk the
first time it is read (while the cap allows) and read from there afterwards.
"""

import os
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from features import gcs, storage
from features.shard_cache import ShardCache
from features.tfrecord_framing import FRAMING_BYTES, DamagedRecordError, iter_record_blocks

DEFAULT_PARALLEL_READS = 16
CORRUPT_FILE = ": corrupt, truncated or unreadable TFRecord file ({} of its {} bytes read)"
_CHECK_BATCH = 256  # records counted together by the corrupt-file check
_STREAM_BLOCK_BYTES = 8 << 20  # what the Python reader hands TensorFlow at a time
_REMOTE_BUFFER_BYTES = 8 << 20  # TFRecordDataset's read size on gs:// (256 KiB locally)


def match_record_files(file_pattern: str | Sequence[str]) -> list[storage.FileEntry]:
    """The files one or more globs match (local or gs://), with their sizes, sorted by path;
    FileNotFoundError naming a pattern that matches nothing."""
    patterns = [file_pattern] if isinstance(file_pattern, str | os.PathLike) else file_pattern
    if not patterns:
        raise ValueError("file_pattern: no patterns given")
    files: dict[str, storage.FileEntry] = {}
    for pattern in map(os.fspath, patterns):
        matched = storage.match_entries(pattern)
        if not matched:
            raise FileNotFoundError(f"{pattern}: no TFRecord files matched")
        files.update((entry.path, entry) for entry in matched)
    return [files[path] for path in sorted(files)]


def tensorflow_reads(path: str) -> bool:
    """Whether TensorFlow's own file systems can read `path`: local paths, and gs:// unless a
    GCS emulator stands in for the bucket."""
    if not storage.is_remote(path):
        return True
    return path.startswith(gcs.SCHEME) and not os.environ.get(gcs.EMULATOR_ENV)


def record_stream(
    files: Sequence[storage.FileEntry],
    *,
    shuffle: bool,
    seed: int = 0,
    parallel_reads: int = DEFAULT_PARALLEL_READS,
    cache: ShardCache | None = None,
) -> tf.data.Dataset:
    """Scalar string records of every file, each file checked whole (see the module doc).

    `parallel_reads` files are open at once, their records interleaved. shuffle: the file
    order is drawn afresh each epoch (each iteration) from `seed`, and records come in
    whatever order the reads finish (with one read at a time, file by file in the drawn
    order); otherwise files are read in the given order and the records come out in a fixed
    order (every record exactly once either way).
    """
    if not files:
        raise ValueError("record_stream: no files")
    if parallel_reads < 1:
        raise ValueError(f"parallel_reads={parallel_reads} < 1")
    paths = [entry.path for entry in files]
    sizes = np.array([entry.size for entry in files], np.int64)
    # (path or URL to name in errors, path to read, size); the cache changes the second.
    listed = tf.data.Dataset.from_tensor_slices((paths, paths, sizes))
    if shuffle:
        listed = listed.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    cycle_length = min(len(files), parallel_reads)
    # Shuffled reads take records as reads finish; one file at a time has no order to gain,
    # and keeps the drawn file order (TensorFlow would otherwise prefetch the next file and
    # mix in its records whenever the current one stalls).
    deterministic = not shuffle or cycle_length == 1
    if cache is not None:
        listed = _through_cache(listed, files, cache, cycle_length, deterministic)
    streamed = not all(tensorflow_reads(entry.path) for entry in files)
    remote = any(storage.is_remote(entry.path) for entry in files)
    buffer_size = _REMOTE_BUFFER_BYTES if remote else None

    def batches(path: tf.Tensor) -> tf.data.Dataset:
        if not streamed:
            return _tensorflow_batches(path, buffer_size)
        if cache is None:
            return _streamed_batches(path)
        # Against an emulator with a cache: TensorFlow reads the cached copies (local), the
        # Python stream the rest. Exactly one of the two filters lets the path through.
        path_only = tf.data.Dataset.from_tensors(path)
        copies = path_only.filter(_is_local).flat_map(lambda p: _tensorflow_batches(p, None))
        rest = path_only.filter(lambda p: ~_is_local(p)).flat_map(_streamed_batches)
        return copies.concatenate(rest)

    return listed.interleave(
        lambda path, readable, size: _checked_records(path, size, batches(readable)),
        cycle_length=cycle_length,
        num_parallel_calls=cycle_length,
        deterministic=deterministic,
    )


def _tensorflow_batches(path: tf.Tensor, buffer_size: int | None) -> tf.data.Dataset:
    """[n] serialized records of one file, read by TensorFlow; stops at the first damage."""
    records = tf.data.TFRecordDataset(path, buffer_size=buffer_size)
    return records.ignore_errors().batch(_CHECK_BATCH)


def _streamed_batches(path: tf.Tensor) -> tf.data.Dataset:
    """[n] serialized records of one file, streamed by features.storage and framed in
    Python; stops at the first damage."""
    spec = (
        tf.TensorSpec([], tf.string),  # a block of whole records
        tf.TensorSpec([None], tf.int64),  # where each record's data starts in it
        tf.TensorSpec([None], tf.int64),  # and its length
    )
    blocks = tf.data.Dataset.from_generator(_record_blocks, args=(path,), output_signature=spec)
    return blocks.map(tf.strings.substr)


def _is_local(path: tf.Tensor) -> tf.Tensor:
    return ~tf.strings.regex_full_match(path, ".*://.*")


def _through_cache(
    listed: tf.data.Dataset,
    files: Sequence[storage.FileEntry],
    cache: ShardCache,
    parallelism: int,
    deterministic: bool,
) -> tf.data.Dataset:
    """The path to read becomes the cached copy of each gs:// shard, made as the shard comes
    up (several at once, ahead of the readers), or stays its URL when it does not fit."""
    entries = {entry.path: entry for entry in files}

    def fetch(path: tf.Tensor) -> str:
        return cache.fetch(entries[path.numpy().decode()])

    def resolve(path: tf.Tensor, url: tf.Tensor, size: tf.Tensor) -> tuple:
        readable = tf.py_function(fetch, [url], tf.string)
        return path, tf.ensure_shape(readable, []), size

    return listed.map(resolve, num_parallel_calls=parallelism, deterministic=deterministic)


def _record_blocks(path: bytes) -> Iterator[tuple[bytes, np.ndarray, np.ndarray]]:
    """Blocks of whole records of one file read through features.storage, with each
    record's start and length in its block.

    Stops at the first damaged record, or when the read fails, as TFRecordDataset with
    ignore_errors does: the byte count then fails naming the file (a failed read also warns
    with its cause; a damaged record needs no more words)."""
    name = path.decode()
    try:
        with storage.open_read(name) as source:
            for block, starts, lengths in iter_record_blocks(source, _STREAM_BLOCK_BYTES):
                yield block, np.array(starts, np.int64), np.array(lengths, np.int64)
    except DamagedRecordError:
        pass  # the byte count fails, naming the file
    except Exception as error:  # noqa: BLE001 -- any read failure: the byte count names the file
        warnings.warn(f"{name}: reading failed: {type(error).__name__}: {error}", stacklevel=1)


def _checked_records(path: tf.Tensor, size: tf.Tensor, batches: tf.data.Dataset) -> tf.data.Dataset:
    """The records of one file; fails naming the file unless they account for all its bytes.

    Counts per batch of records: a per-record scan step cost ~5 CPU-ms per batch of 80 videos.
    """
    end = tf.data.Dataset.from_tensors((tf.constant([], tf.string), True))
    marked = batches.map(lambda batch: (batch, False)).concatenate(end)

    def count(consumed: tf.Tensor, element: tuple[tf.Tensor, tf.Tensor]) -> tuple:
        batch, at_end = element
        lengths = tf.cast(tf.strings.length(batch), tf.int64) + FRAMING_BYTES
        consumed += tf.reduce_sum(lengths)
        message = tf.strings.join([path, tf.strings.format(CORRUPT_FILE, [consumed, size])])
        check = tf.debugging.Assert(tf.logical_or(~at_end, consumed == size), [message])
        with tf.control_dependencies([check]):
            return consumed, (tf.identity(batch), at_end)

    checked = marked.scan(tf.constant(0, tf.int64), count)
    return checked.filter(lambda batch, at_end: ~at_end).map(lambda batch, at_end: batch).unbatch()
