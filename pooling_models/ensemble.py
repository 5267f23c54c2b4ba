"""Several trained models used as one: their probabilities averaged with weights that sum to
1 (late fusion at test time, e.g. an rgb model with a flow model, as two-stream networks).

`eval_pool` and `tag_videos` both take `--model` more than once and `--ensemble_weights`;
this module holds what they share: the rules the members must agree on (a vocabulary; for
tagging raw videos, the extraction of every stream two of them take) and the average.
Light to import (numpy, protobuf and the model directory only).
"""

import hashlib
from collections.abc import Sequence

import numpy as np
from google.protobuf.message import Message

from features import storage
from features.cli import UsageError
from features.formats import VOCABULARY_FILE
from framevlad_proto import framevlad_pb2
from pooling_models import model_dir


def check_same_vocabulary(models: Sequence[str], num_classes: Sequence[int]) -> None:
    """UsageError, naming the first model that differs from the first --model, unless every
    model has as many classes and the same class names (vocabulary.csv; none in every model
    also agrees): an average of scores for different classes would mean nothing."""
    names = [model_dir.label_names(url) for url in models]
    first = models[0]
    for url, classes, labels in zip(models[1:], num_classes[1:], names[1:], strict=True):
        if classes != num_classes[0]:
            detail = f"{classes} classes, {num_classes[0]} in --model {first}"
        elif labels != names[0]:
            detail = _name_difference(labels, names[0], first)
        else:
            continue
        raise UsageError(
            "models disagree on the vocabulary",
            f"--model {url}",
            f"{detail}: pass models trained on one vocabulary",
        )


def _name_difference(labels: tuple[str, ...], first_labels: tuple[str, ...], first: str) -> str:
    if not labels or not first_labels:
        named, bare = ("it", f"--model {first}") if labels else (f"--model {first}", "it")
        return f"{named} names its classes ({VOCABULARY_FILE}), {bare} has bare indices"
    index = next(k for k, (a, b) in enumerate(zip(labels, first_labels, strict=True)) if a != b)
    return f"class {index} is {labels[index]!r}, {first_labels[index]!r} in --model {first}"


def weighted_mean(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """sum_i weights[i] * probabilities[i], summed in float64 in model order, as float32.

    probabilities: one array per model, all of one shape (e.g. [B, C]); weights sum to 1.
    """
    total = np.zeros(np.shape(probabilities[0]), np.float64)
    for values, weight in zip(probabilities, weights, strict=True):
        total += weight * np.asarray(values, np.float64)
    return total.astype(np.float32)


def stream_difference(
    stream: framevlad_pb2.StreamInfo,
    model_url: str,
    other: framevlad_pb2.StreamInfo,
    other_url: str,
) -> tuple[str, object, object] | None:
    """(field, value, other value) of the first way two models' manifests say one stream
    was made differently (e.g. ("backbone", "resnet50", "tiny")); None when alike."""
    return _first_difference(stream_identity(stream, model_url), stream_identity(other, other_url))


def stream_identity(stream: framevlad_pb2.StreamInfo, model_url: str) -> framevlad_pb2.StreamInfo:
    """What decides a stream's features, from its manifest record: everything but where
    files lay (a weights file known by its sha256, the PCA file's name) and how the PCA was
    come by (fitted or reused, frames sampled). A PCA without a recorded sha256 gets the
    sha256 of the model directory's copy (`model_url`)."""
    identity = framevlad_pb2.StreamInfo()
    identity.CopyFrom(stream)
    if identity.weights.sha256:  # a cache path differs between machines; content does not
        identity.weights.ClearField("path")
    pca_path = storage.join(model_url, stream.pca.file) if stream.pca.file else ""
    if not identity.pca.sha256 and pca_path and storage.exists(pca_path):
        identity.pca.sha256 = hashlib.sha256(storage.read_bytes(pca_path)).hexdigest()
    for field in ("file", "source", "sample_frames"):
        identity.pca.ClearField(field)
    return identity


def _first_difference(
    message: Message, other: Message, prefix: str = ""
) -> tuple[str, object, object] | None:
    """(dotted field name, value, other value) of the first field in which two messages of
    one type differ; None when they are equal."""
    for field in message.DESCRIPTOR.fields:
        value, other_value = getattr(message, field.name), getattr(other, field.name)
        if value == other_value:
            continue
        if field.message_type is not None and not field.is_repeated:
            return _first_difference(value, other_value, f"{prefix}{field.name}.")
        plain = (str, int, float, bool)
        shown = [item if isinstance(item, plain) else str(item) for item in (value, other_value)]
        return f"{prefix}{field.name}", shown[0], shown[1]
    return None
