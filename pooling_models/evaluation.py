"""Evaluating a model over a dataset with the YouTube-8M metrics, and Kaggle predictions."""

import csv
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from pooling_models.builder import model_inputs
from pooling_models.metrics import DEFAULT_TOP_K, EvaluationMetrics


def predict_batches(
    model: keras.Model, dataset: tf.data.Dataset
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids [B] str, predictions [B, C], labels [B, C]) per batch, in inference mode."""
    for inputs, labels in dataset:
        predictions = model(model_inputs(model, inputs), training=False)
        ids = [video_id.decode() for video_id in inputs["id"].numpy()]
        yield np.asarray(ids), np.asarray(predictions, np.float32), labels.numpy()


def evaluate(
    model: keras.Model, dataset: tf.data.Dataset, num_classes: int, predictions_csv: str = ""
) -> dict[str, float]:
    """gap, hit_at_1, hit_at_5, perr, map, num_videos and loss; optionally writes predictions."""
    metrics = EvaluationMetrics(num_classes)
    loss_sum, count = 0.0, 0
    writer = PredictionsWriter(predictions_csv) if predictions_csv else None
    for ids, predictions, labels in predict_batches(model, dataset):
        metrics.accumulate(predictions, labels)
        clipped = np.clip(predictions, 1e-7, 1 - 1e-7)
        cross_entropy = -(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped))
        loss_sum += float(cross_entropy.mean(axis=1).sum())
        count += len(ids)
        if writer:
            writer.write(ids, predictions)
    if writer:
        writer.close()
    if count == 0:
        raise ValueError("the evaluation data holds no videos")
    return {**metrics.result(), "loss": loss_sum / count}


class PredictionsWriter:
    """Kaggle's `VideoId,LabelConfidencePairs`: "label score label score ..." best first."""

    def __init__(self, path: str, top_k: int = DEFAULT_TOP_K) -> None:
        self._file = open(path, "w", newline="")  # noqa: SIM115  (closed by close())
        self._writer = csv.writer(self._file)
        self._writer.writerow(["VideoId", "LabelConfidencePairs"])
        self._top_k = top_k

    def write(self, ids: Sequence[str], predictions: np.ndarray) -> None:
        top = np.argsort(-predictions, axis=1, kind="stable")[:, : self._top_k]
        for video_id, classes, scores in zip(ids, top, predictions, strict=True):
            pairs = " ".join(f"{label} {scores[label]:.6f}" for label in classes)
            self._writer.writerow([video_id, pairs])

    def close(self) -> None:
        self._file.close()
