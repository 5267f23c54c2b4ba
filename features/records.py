"""YouTube-8M record codecs: frame-level tf.train.SequenceExample, video-level tf.train.Example.

Frame level: context `id` (one bytes value) and `labels` (int64 list); one feature list per
feature name (`rgb`, `audio`) holding, per frame, ONE bytes value of D quantized uint8s.
Video level: `id`, `labels` and a float list [D] per feature name (`mean_rgb`, ...).
Both may carry more int64 scalars in their context (`has_audio`: 0/1 with an audio stream).
Records with zero frames are rejected when encoding, as YouTube-8M's extractor skips such
videos; an empty feature list met when decoding someone else's file gives [0, 0] uint8.
"""

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from features.formats import ID_KEY, LABELS_KEY, LEGACY_ID_KEY, MEAN_RGB_KEY, RGB_KEY


class CorruptRecordError(OSError):
    """A TFRecord file is corrupt or truncated; the message names the file."""


@dataclass(eq=False)
class FrameRecord:
    """A decoded frame-level record."""

    video_id: str
    labels: list[int]
    features: dict[str, np.ndarray]  # name -> [T, D] uint8
    context: dict[str, int] = field(default_factory=dict)  # other int64 scalars: has_audio


@dataclass(eq=False)
class VideoRecord:
    """A decoded video-level record."""

    video_id: str
    labels: list[int]
    features: dict[str, np.ndarray]  # name -> [D] float32
    context: dict[str, int] = field(default_factory=dict)  # other int64 scalars: has_audio


def encode_frame_example(
    video_id: str,
    labels: Sequence[int],
    features: Mapping[str, np.ndarray],
    context: Mapping[str, int] | None = None,
) -> bytes:
    """Serializes a frame-level SequenceExample.

    Args:
      video_id: stored UTF-8 encoded under context `id`.
      labels: class indices, stored under context `labels`.
      features: name -> [T, D] uint8 quantized frames; every name has the same T >= 1.
      context: more int64 scalars for the context (`has_audio`); None adds none.
    """
    if not features:
        raise ValueError(f"video {video_id!r}: no feature lists to encode")
    num_frames = {name: _check_frames(video_id, name, frames) for name, frames in features.items()}
    if len(set(num_frames.values())) > 1:
        raise ValueError(f"video {video_id!r}: feature lists differ in frame count {num_frames}")
    example = tf.train.SequenceExample()
    _set_id_and_labels(example.context, video_id, labels)
    _set_scalars(example.context, video_id, context)
    for name, frames in features.items():
        feature_list = example.feature_lists.feature_list[name].feature
        for frame in np.asarray(frames):
            feature_list.add().bytes_list.value.append(frame.tobytes())
    return example.SerializeToString()


def decode_frame_example(
    serialized: bytes, feature_names: Sequence[str] = (RGB_KEY,)
) -> FrameRecord:
    """Parses a frame-level record: ours or YouTube-8M's (context `id` or older `video_id`)."""
    example = tf.train.SequenceExample.FromString(serialized)
    video_id, labels = _id_and_labels(example.context)
    feature_lists = example.feature_lists.feature_list
    features = {}
    context = _scalars(example.context)
    for name in feature_names:
        if name not in feature_lists:
            present = ", ".join(sorted(feature_lists)) or "none"
            raise ValueError(
                f"video {video_id!r}: no feature list {name!r} in frame record "
                f"(feature lists: {present})"
            )
        features[name] = _frames_from_bytes(video_id, name, feature_lists[name].feature)
    return FrameRecord(video_id=video_id, labels=labels, features=features, context=context)


def encode_video_example(
    video_id: str,
    labels: Sequence[int],
    means: Mapping[str, np.ndarray],
    context: Mapping[str, int] | None = None,
) -> bytes:
    """Serializes a video-level Example.

    Args:
      video_id: stored UTF-8 encoded under `id`.
      labels: class indices, stored under `labels`.
      means: name (e.g. `mean_rgb`) -> [D] float vector, stored as a float list.
      context: more int64 scalars (`has_audio`); None adds none.
    """
    example = tf.train.Example()
    _set_id_and_labels(example.features, video_id, labels)
    _set_scalars(example.features, video_id, context)
    for name, values in means.items():
        vector = np.asarray(values, dtype=np.float32)
        if vector.ndim != 1:
            raise ValueError(f"video {video_id!r}: {name!r} must be [D], got shape {vector.shape}")
        example.features.feature[name].float_list.value.extend(vector.tolist())
    return example.SerializeToString()


def decode_video_example(
    serialized: bytes, feature_names: Sequence[str] = (MEAN_RGB_KEY,)
) -> VideoRecord:
    """Parses a video-level record: ours or YouTube-8M's (`id` or older `video_id`)."""
    example = tf.train.Example.FromString(serialized)
    video_id, labels = _id_and_labels(example.features)
    stored = example.features.feature
    features = {}
    for name in feature_names:
        if name not in stored or stored[name].WhichOneof("kind") != "float_list":
            raise ValueError(f"video {video_id!r}: no float feature {name!r} in video record")
        features[name] = np.array(stored[name].float_list.value, dtype=np.float32)  # [D]
    context = _scalars(example.features)
    return VideoRecord(video_id=video_id, labels=labels, features=features, context=context)


def read_tfrecords(paths: Iterable[str | os.PathLike[str]]) -> Iterator[bytes]:
    """Yields the serialized records of each TFRecord file in turn.

    Raises:
      FileNotFoundError: a path does not exist.
      CorruptRecordError: a file is corrupt or truncated (records before the damage are
        yielded first).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for path in paths:
        name = os.fspath(path)
        try:
            for record in tf.data.TFRecordDataset(name):
                yield record.numpy()
        except tf.errors.NotFoundError as error:
            raise FileNotFoundError(f"{name}: no such TFRecord file") from error
        except tf.errors.OpError as error:
            raise CorruptRecordError(
                f"{name}: corrupt or truncated TFRecord file ({_reason(error)})"
            ) from error


def _reason(error: tf.errors.OpError) -> str:
    """TensorFlow's error message without its op and function-node decorations."""
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", error.message)
    return re.sub(r"\s*\[Op:.*$", "", message, flags=re.DOTALL).strip()


def _check_frames(video_id: str, name: str, frames: np.ndarray) -> int:
    """Validates [T, D] uint8 frames and returns T."""
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 2:
        raise ValueError(
            f"video {video_id!r}: {name!r} must be [T, D] uint8 (quantize first), "
            f"got {array.dtype} of shape {array.shape}"
        )
    if len(array) == 0:
        raise ValueError(f"video {video_id!r}: {name!r} has zero frames")
    return len(array)


def _set_id_and_labels(features: tf.train.Features, video_id: str, labels: Sequence[int]) -> None:
    # Ids are paths, and a path may hold bytes that are not UTF-8 (os gives them to Python as
    # surrogate escapes): they are stored as the original bytes, and read back the same.
    features.feature[ID_KEY].bytes_list.value.append(video_id.encode("utf-8", "surrogateescape"))
    label_list = features.feature[LABELS_KEY].int64_list
    label_list.SetInParent()  # present even when empty, as in YouTube-8M's test split
    label_list.value.extend(int(label) for label in labels)


def _set_scalars(
    features: tf.train.Features, video_id: str, scalars: Mapping[str, int] | None
) -> None:
    for name, value in (scalars or {}).items():
        if name in (ID_KEY, LABELS_KEY, LEGACY_ID_KEY) or name in features.feature:
            raise ValueError(f"video {video_id!r}: context {name!r} clashes with another feature")
        features.feature[name].int64_list.value.append(int(value))


def _scalars(features: tf.train.Features) -> dict[str, int]:
    """Int64 features holding one value, other than labels: has_audio and the like."""
    return {
        name: int(feature.int64_list.value[0])
        for name, feature in features.feature.items()
        if name != LABELS_KEY
        and feature.WhichOneof("kind") == "int64_list"
        and len(feature.int64_list.value) == 1
    }


def _id_and_labels(features: tf.train.Features) -> tuple[str, list[int]]:
    stored = features.feature
    for key in (ID_KEY, LEGACY_ID_KEY):
        if key in stored and stored[key].bytes_list.value:
            video_id = stored[key].bytes_list.value[0].decode("utf-8", "surrogateescape")
            break
    else:
        raise ValueError(f"record has neither {ID_KEY!r} nor {LEGACY_ID_KEY!r} bytes feature")
    labels = list(stored[LABELS_KEY].int64_list.value) if LABELS_KEY in stored else []
    return video_id, labels


def _frames_from_bytes(video_id: str, name: str, frames: Sequence[tf.train.Feature]) -> np.ndarray:
    """Per-frame bytes features -> [T, D] uint8."""
    if not frames:
        return np.zeros((0, 0), dtype=np.uint8)
    frame_bytes = []
    for index, frame in enumerate(frames):
        values = frame.bytes_list.value
        if len(values) != 1:
            raise ValueError(
                f"video {video_id!r}: {name!r} frame {index} holds {len(values)} bytes "
                "values, expected 1"
            )
        frame_bytes.append(values[0])
    dims = len(frame_bytes[0])
    if any(len(value) != dims for value in frame_bytes):
        raise ValueError(f"video {video_id!r}: {name!r} frames differ in length")
    joined = bytearray(b"".join(frame_bytes))  # writable, unlike bytes
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(frame_bytes), dims)  # [T, D]
