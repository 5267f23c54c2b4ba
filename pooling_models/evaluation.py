"""Evaluating a model (or an ensemble) over a dataset with the YouTube-8M metrics, and
Kaggle predictions."""

import contextlib
import csv
from collections.abc import Iterable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from features import storage
from pooling_models.builder import model_inputs
from pooling_models.ensemble import weighted_mean
from pooling_models.metrics import DEFAULT_TOP_K, EvaluationMetrics


def predict_batches(
    model: keras.Model, dataset: tf.data.Dataset
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids [B] str, predictions [B, C], labels [B, C]) per batch, in inference mode."""
    for inputs, labels in dataset:
        predictions = model(model_inputs(model, inputs), training=False)
        ids = [video_id.decode(errors="backslashreplace") for video_id in inputs["id"].numpy()]
        yield np.asarray(ids), np.asarray(predictions, np.float32), labels.numpy()


class NoVideosError(ValueError):
    """The dataset yielded no video: there is nothing to measure."""


def evaluate(
    model: keras.Model, dataset: tf.data.Dataset, num_classes: int, predictions_csv: str = ""
) -> dict[str, float]:
    """gap, hit_at_1, hit_at_5, perr, map, num_videos and loss; optionally writes predictions
    (local path or gs:// URL, whole or not at all)."""
    return evaluate_batches(predict_batches(model, dataset), num_classes, predictions_csv)


def ensemble_batches(
    models: Sequence[keras.Model], datasets: Sequence[tf.data.Dataset], weights: Sequence[float]
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """predict_batches of several models, each over its own dataset (the same records read
    with that model's features), with the predictions averaged by `weights` (sum 1).

    The readers are deterministic in evaluation, so the models see the same videos in the
    same batches; a batch whose ids differ between them is an error, never a silent mix.
    """
    streams = [predict_batches(model, data) for model, data in zip(models, datasets, strict=True)]
    for parts in zip(*streams, strict=True):
        ids, _, labels = parts[0]
        if any(not np.array_equal(other_ids, ids) for other_ids, _, _ in parts[1:]):
            raise ValueError("the models' readers yielded different videos in one batch")
        yield ids, weighted_mean([predictions for _, predictions, _ in parts], weights), labels


def evaluate_batches(
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    num_classes: int,
    predictions_csv: str = "",
) -> dict[str, float]:
    """`evaluate` over (ids, predictions [B, C], labels [B, C]) batches from any source."""
    metrics = EvaluationMetrics(num_classes)
    loss_sum, count = 0.0, 0
    with contextlib.ExitStack() as stack:
        writer = None
        if predictions_csv:
            writer = stack.enter_context(PredictionsWriter(predictions_csv))
        for ids, predictions, labels in batches:
            metrics.accumulate(predictions, labels)
            clipped = np.clip(predictions, 1e-7, 1 - 1e-7)
            cross_entropy = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
            loss_sum += float(cross_entropy.mean(axis=1).sum())
            count += len(ids)
            if writer:
                writer.write(ids, predictions)
        if count == 0:
            raise NoVideosError("the evaluation data holds no videos")
    return {**metrics.result(), "loss": loss_sum / count}


class PredictionsWriter:
    """Kaggle's `VideoId,LabelConfidencePairs`: "label score label score ..." best first.

    A context manager: the file appears at `path` (local or gs://) only when the block ends
    without an error. Rows are CSV with the csv module's quoting and `\n` line ends, so an id
    holding a newline, comma or quote reads back whole. Scores are written with the fewest
    digits that read back as the same float (float32: at most 9), so distinct scores stay
    distinct (`%.6f` made 4.9e-7 and 3.2e-7 both 0.000000).
    """

    def __init__(self, path: str, top_k: int = DEFAULT_TOP_K) -> None:
        self._path = path
        self._top_k = top_k
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "PredictionsWriter":
        local = self._stack.enter_context(storage.local_output(self._path))
        sink = self._stack.enter_context(open(local, "w", newline="", encoding="utf-8"))
        self._writer = csv.writer(sink, lineterminator="\n")
        self._writer.writerow(["VideoId", "LabelConfidencePairs"])
        return self

    def write(self, ids: Sequence[str], predictions: np.ndarray) -> None:
        """One row per video: its top_k classes, best first (ties: lower class first)."""
        top = np.argsort(-predictions, axis=1, kind="stable")[:, : self._top_k]
        for video_id, classes, scores in zip(ids, top, predictions, strict=True):
            pairs = " ".join(f"{label} {scores[label]}" for label in classes)
            self._writer.writerow([video_id, pairs])

    def __exit__(self, *exc_info: object) -> None:
        self._stack.__exit__(*exc_info)
