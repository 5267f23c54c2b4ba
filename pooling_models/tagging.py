"""Scoring whole videos and their segments with a trained pooling model (numpy in and out)."""

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from features.formats import RGB_KEY
from pooling_models.data import NUM_FRAMES_KEY


@dataclass(frozen=True)
class VideoScores:
    video: np.ndarray  # [C] mean over max_frames-long clips
    segments: np.ndarray  # [S, C] per segment, smoothed over the last `smooth` segments


class WindowScorer:
    """A model's probabilities for batches of padded windows, through one graph traced for
    any batch size and length (eager Keras calls cost ~7x more per video)."""

    def __init__(self, model: keras.Model) -> None:
        feature_size = model.input[RGB_KEY].shape[-1]
        signature = [
            tf.TensorSpec([None, None, feature_size], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ]

        @tf.function(input_signature=signature, reduce_retracing=True)
        def predict(frames: tf.Tensor, num_frames: tf.Tensor) -> tf.Tensor:
            return model({RGB_KEY: frames, NUM_FRAMES_KEY: num_frames}, training=False)

        self._predict = predict

    def __call__(self, frames: np.ndarray, num_frames: np.ndarray) -> np.ndarray:
        return self._predict(frames, num_frames).numpy()  # [B, C] float32


def predict_windows(scorer: WindowScorer, windows: list[np.ndarray], batch_size: int) -> np.ndarray:
    """Model probabilities for frame windows of different lengths, padded and masked.

    windows: each [t, D] float32 with t >= 1; returns [len(windows), C] float32.
    """
    outputs = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        lengths = np.array([len(window) for window in batch], np.int32)
        padded = np.zeros((len(batch), lengths.max(), batch[0].shape[1]), np.float32)
        for row, window in enumerate(batch):
            padded[row, : len(window)] = window
        outputs.append(np.asarray(scorer(padded, lengths), np.float32))
    return np.concatenate(outputs)


def split_frames(frames: np.ndarray, window: int) -> list[np.ndarray]:
    """Consecutive windows of `window` frames; the last one may be shorter."""
    return [frames[start : start + window] for start in range(0, len(frames), window)]


def trailing_mean(scores: np.ndarray, window: int) -> np.ndarray:
    """Row k becomes the mean of rows max(0, k - window + 1) .. k: damps segment flicker."""
    cumulative = np.cumsum(np.concatenate([np.zeros_like(scores[:1]), scores]), axis=0)
    ends = np.arange(1, len(scores) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)[:, None]


def score_video(
    scorer: WindowScorer,
    frames: np.ndarray,
    max_frames: int,
    frames_per_segment: int,
    smooth: int,
    batch_size: int = 32,
) -> VideoScores:
    """frames: [T, D] float32 dequantized features, T >= 1."""
    clips = predict_windows(scorer, split_frames(frames, max_frames), batch_size)
    segments = predict_windows(scorer, split_frames(frames, frames_per_segment), batch_size)
    return VideoScores(clips.mean(axis=0), trailing_mean(segments, smooth))


def top_labels(scores: np.ndarray, top_k: int, min_score: float) -> list[tuple[int, float]]:
    """(label index, score) best first, at most top_k, each >= min_score; ties by index."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(int(label), float(scores[label])) for label in order if scores[label] >= min_score]
