"""Scoring whole videos and their segments with a trained pooling model (numpy in and out)."""

from dataclasses import dataclass

import keras
import numpy as np

from features.formats import RGB_KEY
from pooling_models.data import NUM_FRAMES_KEY


@dataclass(frozen=True)
class VideoScores:
    video: np.ndarray  # [C] mean over max_frames-long clips
    segments: np.ndarray  # [S, C] per segment, smoothed over the last `smooth` segments


def predict_windows(model: keras.Model, windows: list[np.ndarray], batch_size: int) -> np.ndarray:
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
        probabilities = model({RGB_KEY: padded, NUM_FRAMES_KEY: lengths}, training=False)
        outputs.append(np.asarray(probabilities, np.float32))
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
    model: keras.Model,
    frames: np.ndarray,
    max_frames: int,
    frames_per_segment: int,
    smooth: int,
    batch_size: int = 32,
) -> VideoScores:
    """frames: [T, D] float32 dequantized features, T >= 1."""
    clips = predict_windows(model, split_frames(frames, max_frames), batch_size)
    segments = predict_windows(model, split_frames(frames, frames_per_segment), batch_size)
    return VideoScores(clips.mean(axis=0), trailing_mean(segments, smooth))


def top_labels(scores: np.ndarray, top_k: int, min_score: float) -> list[tuple[int, float]]:
    """(label index, score) best first, at most top_k, each >= min_score; ties by index."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(int(label), float(scores[label])) for label in order if scores[label] >= min_score]
