"""Scoring whole videos and their segments with a trained pooling model, or an ensemble of
them (numpy in and out)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from features.formats import RGB_KEY
from pooling_models.data import NUM_FRAMES_KEY
from pooling_models.ensemble import weighted_mean


@dataclass(frozen=True)
class VideoScores:
    video: np.ndarray  # [C] mean over max_frames-long clips
    segments: np.ndarray  # [S, C] per segment, smoothed over the last `smooth` segments


Frames = Mapping[str, np.ndarray] | np.ndarray  # feature name -> [T, D]; a bare array is rgb


def named(frames: Frames) -> Mapping[str, np.ndarray]:
    return frames if isinstance(frames, Mapping) else {RGB_KEY: frames}


class WindowScorer:
    """A model's probabilities for batches of padded windows, through one graph traced for
    any batch size and length (eager Keras calls cost ~7x more per video). Takes every
    frame-level input of the model (rgb, audio, ...), in `feature_names`."""

    def __init__(self, model: keras.Model) -> None:
        inputs = [tensor for tensor in model.inputs if tensor.name != NUM_FRAMES_KEY]
        self.feature_names: tuple[str, ...] = tuple(tensor.name for tensor in inputs)
        self.feature_sizes: tuple[int, ...] = tuple(int(tensor.shape[-1]) for tensor in inputs)
        signature = [
            {
                name: tf.TensorSpec([None, None, size], tf.float32)
                for name, size in zip(self.feature_names, self.feature_sizes, strict=True)
            },
            tf.TensorSpec([None], tf.int32),
        ]

        @tf.function(input_signature=signature, reduce_retracing=True)
        def predict(frames: dict[str, tf.Tensor], num_frames: tf.Tensor) -> tf.Tensor:
            return model({**frames, NUM_FRAMES_KEY: num_frames}, training=False)

        self._predict = predict

    def __call__(self, frames: Frames, num_frames: np.ndarray) -> np.ndarray:
        """frames: name -> [B, T, D] float32 (a bare array: rgb); returns [B, C] float32."""
        given = named(frames)
        return self._predict({name: given[name] for name in self.feature_names}, num_frames).numpy()


def predict_windows(scorer: WindowScorer, windows: list[Frames], batch_size: int) -> np.ndarray:
    """Model probabilities for frame windows of different lengths, padded and masked.

    windows: each name -> [t, D] float32 (or a bare [t, D] rgb array) with t >= 1, the same t
    for every name; names the scorer's model does not take (another ensemble member's) are
    left out. Returns [len(windows), C] float32.
    """
    outputs = []
    for start in range(0, len(windows), batch_size):
        batch = [named(window) for window in windows[start : start + batch_size]]
        lengths = np.array([len(next(iter(window.values()))) for window in batch], np.int32)
        padded = {}
        for name in scorer.feature_names:
            dims = batch[0][name].shape[1]
            padded[name] = np.zeros((len(batch), lengths.max(), dims), np.float32)
            for row, window in enumerate(batch):
                padded[name][row, : lengths[row]] = window[name]
        outputs.append(np.asarray(scorer(padded, lengths), np.float32))
    return np.concatenate(outputs)


def split_frames(frames: Frames, window: int) -> list[Frames]:
    """Consecutive windows of `window` frames (of every feature); the last may be shorter."""
    if not isinstance(frames, Mapping):
        return [frames[start : start + window] for start in range(0, len(frames), window)]
    total = len(next(iter(frames.values())))
    return [
        {name: values[start : start + window] for name, values in frames.items()}
        for start in range(0, total, window)
    ]


def trailing_mean(scores: np.ndarray, window: int) -> np.ndarray:
    """Row k becomes the mean of rows max(0, k - window + 1) .. k: damps segment flicker."""
    cumulative = np.cumsum(np.concatenate([np.zeros_like(scores[:1]), scores]), axis=0)
    ends = np.arange(1, len(scores) + 1)
    starts = np.maximum(0, ends - window)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)[:, None]


def score_video(
    scorer: WindowScorer,
    frames: Frames,
    max_frames: int,
    frames_per_segment: int,
    smooth: int,
    batch_size: int = 32,
) -> VideoScores:
    """frames: name -> [T, D] float32 dequantized features (a bare array: rgb), T >= 1."""
    clips = predict_windows(scorer, split_frames(frames, max_frames), batch_size)
    segments = predict_windows(scorer, split_frames(frames, frames_per_segment), batch_size)
    return VideoScores(clips.mean(axis=0), trailing_mean(segments, smooth))


def ensemble_scores(scores: Sequence[VideoScores], weights: Sequence[float]) -> VideoScores:
    """The weighted mean (weights sum to 1) of several models' scores of one video, video
    and segments alike; one model's scores come back unchanged."""
    if len(scores) == 1:
        return scores[0]
    return VideoScores(
        weighted_mean([score.video for score in scores], weights),
        weighted_mean([score.segments for score in scores], weights),
    )


def top_labels(scores: np.ndarray, top_k: int, min_score: float) -> list[tuple[int, float]]:
    """(label index, score) best first, at most top_k, each >= min_score; ties by index."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(int(label), float(scores[label])) for label in order if scores[label] >= min_score]
