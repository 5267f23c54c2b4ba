"""tf.data readers for YouTube-8M frame-level and video-level TFRecords.

Records are laid out as features.records writes them and YouTube-8M publishes them (keys
from features.formats); frame bytes dequantize exactly as features.quantize.dequantize.
Pipeline: files -> interleaved records -> (hold-out split) -> shuffle -> batch of serialized
records -> one vectorized parse per batch -> prefetch.

Files come from features.record_stream: local files and gs:// objects alike, streamed shard
by shard (`parallel_reads` at once, in a shard order reshuffled each training epoch), never
staged; a truncated, bit-flipped or unreadable file fails the pipeline with an
InvalidArgumentError whose message starts with the file's path or URL. A ShardCache keeps
gs:// shards on local disk for later epochs. Training then shuffles records in a buffer of
`shuffle_buffer` records, so memory stays bounded whatever the data's size.
"""

from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from features.formats import (
    DEFAULT_MAX_FRAMES,
    ID_KEY,
    LABELS_KEY,
    LEGACY_ID_KEY,
    MAX_PCA_DIMS,
    MEAN_RGB_KEY,
    QUANTIZE_LEVELS,
    QUANTIZE_MAX,
    QUANTIZE_MIN,
    RGB_KEY,
)
from features.record_stream import DEFAULT_PARALLEL_READS, match_record_files, record_stream
from features.shard_cache import ShardCache
from pooling_models.model_config import NUM_FRAMES_KEY

SPLITS = ("all", "train", "eval")

_RANGE = QUANTIZE_MAX - QUANTIZE_MIN
# The same float32 constants as features.quantize.dequantize, so both give identical floats.
_STEP = np.float32(_RANGE / (QUANTIZE_LEVELS - 1))
_BIAS = np.float32(_RANGE / 512.0 + QUANTIZE_MIN)
_SPLIT_BUCKETS = 1_000_000
_FRAME_KEY_BUCKETS = 2**62
_SPLIT_PARSE_BATCH = 256
_ID_FEATURES = {
    ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
    LEGACY_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
}
_CONTEXT_FEATURES = {**_ID_FEATURES, LABELS_KEY: tf.io.VarLenFeature(tf.int64)}

Inputs = dict[str, tf.Tensor]


def dequantize_tf(quantized: tf.Tensor) -> tf.Tensor:
    """Bytes (string tensor, one D-byte string per vector) or uint8 [..., D] -> float32 [..., D].

    Mirrors features.quantize.dequantize (YouTube-8M's utils.Dequantize): q * range/255 +
    range/512 + min, in float32, so a model sees the same floats whichever reader fed it.
    """
    levels = tf.convert_to_tensor(quantized)
    if levels.dtype == tf.string:
        levels = tf.io.decode_raw(levels, tf.uint8)
    if levels.dtype != tf.uint8:
        raise TypeError(f"dequantize_tf: expected bytes or uint8, got {levels.dtype.name}")
    return tf.cast(levels, tf.float32) * _STEP + _BIAS


def frame_dataset(
    file_pattern: str | Sequence[str],
    *,
    feature_names: Sequence[str] = (RGB_KEY,),
    feature_sizes: Sequence[int] = (MAX_PCA_DIMS,),
    num_classes: int,
    batch_size: int,
    max_frames: int = DEFAULT_MAX_FRAMES,
    sample_frames: int = 0,
    training: bool,
    shuffle_buffer: int = 1024,
    seed: int = 0,
    eval_fraction: float = 0.0,
    split: str = "all",
    parallel_reads: int = DEFAULT_PARALLEL_READS,
    cache: ShardCache | None = None,
) -> tf.data.Dataset:
    """Batches of frame-level SequenceExamples as `(inputs, labels)`.

    inputs: each feature name -> float32 [B, T, D], zero past a video's frames;
    `num_frames` -> int32 [B]; `id` -> string [B] (context `id`, or `video_id` in older
    YouTube-8M files). labels: float32 multi-hot [B, num_classes].

    T is the longest video of the batch after truncation to max_frames. Features of one
    video are aligned frame by frame and cut to the shortest of them. When training with
    sample_frames > 0, each video keeps that many of its frames (all if it has fewer),
    drawn without replacement and kept in time order, so T <= sample_frames; draws follow
    `seed` and differ from epoch to epoch. Evaluation reads every frame up to max_frames.

    split: "all" reads every record (eval_fraction is ignored); "eval" keeps the videos
    whose id hashes into the first eval_fraction of buckets and "train" the rest. The hash
    (tf.strings.to_hash_bucket_fast, FarmHash) depends on the id alone, so a video stays on
    its side of the split across runs, seeds and file layouts.

    file_pattern: globs or paths, local or gs://. parallel_reads: files read at once.
    cache: keeps gs:// shards on local disk once read (see features.shard_cache).
    shuffle_buffer: records shuffled together when training (held in memory).
    """
    _check_common(num_classes, batch_size, eval_fraction, split)
    features = _named_sizes(feature_names, feature_sizes)
    if max_frames < 1 or sample_frames < 0:
        raise ValueError(f"max_frames={max_frames} < 1 or sample_frames={sample_frames} < 0")

    def parse(serialized: tf.Tensor, draw: tf.Tensor | None = None) -> tuple[Inputs, tf.Tensor]:
        context, sequences, lengths = tf.io.parse_sequence_example(
            serialized,
            context_features=_CONTEXT_FEATURES,
            sequence_features={
                name: tf.io.FixedLenSequenceFeature([], tf.string) for name, _ in features
            },
        )
        ids = _video_ids(context)
        num_frames = tf.reduce_min([lengths[name] for name, _ in features], axis=0)
        num_frames = tf.cast(tf.minimum(num_frames, max_frames), tf.int32)  # [B]
        if draw is None:
            longest = tf.reduce_max(num_frames)
            chosen = {name: sequences[name][:, :longest] for name, _ in features}
        else:
            positions = _sampled_positions(ids, num_frames, sample_frames, draw)  # [B, S]
            chosen = {
                name: tf.gather(sequences[name], positions, batch_dims=1) for name, _ in features
            }
            longest = tf.shape(positions)[1]
            num_frames = tf.minimum(num_frames, longest)
        valid = tf.sequence_mask(num_frames, longest)  # [B, T]
        inputs = {
            name: _dequantized_frames(chosen[name], valid, ids, name, size)
            for name, size in features
        }
        inputs[NUM_FRAMES_KEY] = num_frames
        inputs[ID_KEY] = ids
        return inputs, _multi_hot(context[LABELS_KEY], ids, num_classes)

    records = _records(file_pattern, training, seed, parallel_reads, cache)
    batches = _serialized_batches(
        records, _frame_ids, batch_size, training, shuffle_buffer, seed, eval_fraction, split
    )
    if training and sample_frames > 0:
        # One draw per epoch: frames then depend on (seed, epoch, video), not on batching.
        epochs = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        serialized_batches = batches
        batches = epochs.flat_map(lambda draw: serialized_batches.map(lambda b: (b, draw)))
    parsed = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    return parsed.prefetch(tf.data.AUTOTUNE)


def video_dataset(
    file_pattern: str | Sequence[str],
    *,
    feature_names: Sequence[str] = (MEAN_RGB_KEY,),
    feature_sizes: Sequence[int] = (MAX_PCA_DIMS,),
    num_classes: int,
    batch_size: int,
    training: bool,
    shuffle_buffer: int = 1024,
    seed: int = 0,
    eval_fraction: float = 0.0,
    split: str = "all",
    parallel_reads: int = DEFAULT_PARALLEL_READS,
    cache: ShardCache | None = None,
) -> tf.data.Dataset:
    """Batches of video-level Examples as `(inputs, labels)`.

    inputs: each feature name (`mean_rgb`, `mean_audio`) -> float32 [B, D]; `id` -> string
    [B]. labels: float32 multi-hot [B, num_classes]. Files, shuffling and the hold-out split
    behave as in frame_dataset.
    """
    _check_common(num_classes, batch_size, eval_fraction, split)
    features = _named_sizes(feature_names, feature_sizes)
    spec = {**_CONTEXT_FEATURES}
    spec.update({name: tf.io.FixedLenFeature([size], tf.float32) for name, size in features})

    def parse(serialized: tf.Tensor) -> tuple[Inputs, tf.Tensor]:
        parsed = tf.io.parse_example(serialized, spec)
        ids = _video_ids(parsed)
        inputs = {name: parsed[name] for name, _ in features}
        inputs[ID_KEY] = ids
        return inputs, _multi_hot(parsed[LABELS_KEY], ids, num_classes)

    records = _records(file_pattern, training, seed, parallel_reads, cache)
    batches = _serialized_batches(
        records, _example_ids, batch_size, training, shuffle_buffer, seed, eval_fraction, split
    )
    parsed = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=not training)
    return parsed.prefetch(tf.data.AUTOTUNE)


def _check_common(num_classes: int, batch_size: int, eval_fraction: float, split: str) -> None:
    if num_classes < 1 or batch_size < 1:
        raise ValueError(f"num_classes={num_classes} and batch_size={batch_size} must be >= 1")
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if split != "all" and not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"split={split!r} needs 0 < eval_fraction < 1, got {eval_fraction}")


def _named_sizes(names: Sequence[str], sizes: Sequence[int]) -> list[tuple[str, int]]:
    if isinstance(names, str) or not names or len(names) != len(sizes):
        raise ValueError(f"feature_names {names!r} and feature_sizes {sizes!r} must pair up")
    return list(zip(names, (int(size) for size in sizes), strict=True))


def _records(
    file_pattern: str | Sequence[str],
    training: bool,
    seed: int,
    parallel_reads: int,
    cache: ShardCache | None,
) -> tf.data.Dataset:
    files = match_record_files(file_pattern)
    return record_stream(
        files, shuffle=training, seed=seed, parallel_reads=parallel_reads, cache=cache
    )


def _serialized_batches(
    records: tf.data.Dataset,
    parse_ids: Callable[[tf.Tensor], tf.Tensor],
    batch_size: int,
    training: bool,
    shuffle_buffer: int,
    seed: int,
    eval_fraction: float,
    split: str,
) -> tf.data.Dataset:
    """[B] string batches of serialized records: split, shuffled when training."""
    if split != "all":
        threshold = round(eval_fraction * _SPLIT_BUCKETS)

        def keep(serialized: tf.Tensor) -> tf.Tensor:
            in_eval = (
                tf.strings.to_hash_bucket_fast(parse_ids(serialized), _SPLIT_BUCKETS) < threshold
            )
            return tf.boolean_mask(serialized, in_eval if split == "eval" else ~in_eval)

        records = records.batch(_SPLIT_PARSE_BATCH)
        records = records.map(keep, tf.data.AUTOTUNE, deterministic=not training).unbatch()
    if training:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    return records.batch(batch_size)


def _frame_ids(serialized: tf.Tensor) -> tf.Tensor:
    context, _, _ = tf.io.parse_sequence_example(serialized, context_features=_ID_FEATURES)
    return _video_ids(context)


def _example_ids(serialized: tf.Tensor) -> tf.Tensor:
    return _video_ids(tf.io.parse_example(serialized, _ID_FEATURES))


def _video_ids(parsed: dict[str, tf.Tensor]) -> tf.Tensor:
    """[B] ids from `id`, else the legacy `video_id`; a record with neither is an error."""
    ids = tf.where(parsed[ID_KEY] != "", parsed[ID_KEY], parsed[LEGACY_ID_KEY])
    check = tf.debugging.Assert(
        tf.reduce_all(ids != ""), [f"records without an {ID_KEY} or {LEGACY_ID_KEY} feature"]
    )
    with tf.control_dependencies([check]):
        return tf.identity(ids)


def _sampled_positions(
    ids: tf.Tensor, num_frames: tf.Tensor, sample_frames: int, epoch_draw: tf.Tensor
) -> tf.Tensor:
    """[B, S] frame positions per video, S = min(sample_frames, longest): distinct, ascending.

    Each frame's key hashes (epoch draw, video id, position), so a video's draw does not
    depend on which batch it lands in, even when training reads files in no fixed order.
    The S smallest keys win, padding keyed above every frame: a video shorter than S keeps
    all its frames, followed by padding positions.
    """
    longest = tf.reduce_max(num_frames)
    videos = tf.strings.join([tf.strings.as_string(epoch_draw), ids], separator="/")  # [B]
    frames = tf.strings.as_string(tf.range(longest))  # [T]
    names = videos[:, tf.newaxis] + "/" + frames[tf.newaxis, :]  # [B, T]: "draw/id/position"
    keys = tf.strings.to_hash_bucket_fast(names, _FRAME_KEY_BUCKETS)  # [B, T] int64
    padding = tf.range(longest)[tf.newaxis, :] >= num_frames[:, tf.newaxis]
    keys = tf.where(padding, tf.constant(_FRAME_KEY_BUCKETS, tf.int64), keys)
    _, positions = tf.math.top_k(-keys, k=tf.minimum(sample_frames, longest))
    return tf.sort(positions, axis=1)


def _dequantized_frames(
    frame_bytes: tf.Tensor, valid: tf.Tensor, ids: tf.Tensor, name: str, size: int
) -> tf.Tensor:
    """[B, T] per-frame byte strings -> float32 [B, T, size], zero where not `valid`."""
    wrong_size = valid & (tf.strings.length(frame_bytes) != size)
    check = tf.debugging.Assert(
        ~tf.reduce_any(wrong_size),
        [
            f"feature {name}: frames are not {size} bytes (see feature_sizes) in videos:",
            tf.boolean_mask(ids, tf.reduce_any(wrong_size, axis=1)),
        ],
    )
    with tf.control_dependencies([check]):
        levels = tf.io.decode_raw(frame_bytes, tf.uint8, fixed_length=size)  # [B, T, size]
    frames = tf.where(valid[..., tf.newaxis], dequantize_tf(levels), 0.0)
    return tf.ensure_shape(frames, [None, None, size])


def _multi_hot(labels: tf.SparseTensor, ids: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Sparse [B, L] class indices -> float32 [B, num_classes]; out-of-range labels fail."""
    videos = labels.indices[:, 0]
    outside = (labels.values < 0) | (labels.values >= num_classes)
    check = tf.debugging.Assert(
        ~tf.reduce_any(outside),
        [
            f"labels outside [0, {num_classes}) -- is num_classes right? videos, labels:",
            tf.gather(ids, tf.boolean_mask(videos, outside)),
            tf.boolean_mask(labels.values, outside),
        ],
    )
    with tf.control_dependencies([check]):
        indices = tf.stack([videos, labels.values], axis=1)
    shape = tf.stack([tf.size(ids, out_type=tf.int64), num_classes])
    counts = tf.scatter_nd(indices, tf.ones_like(labels.values, tf.float32), shape)
    return tf.ensure_shape(tf.minimum(counts, 1.0), [None, num_classes])
