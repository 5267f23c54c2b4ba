"""Learning tests: each pooling learns what it should, and mean pooling fails where it must.

Synthetic frame features, in memory: D = 16, 12 to 20 real frames per video (zero-padded
to 20, as the readers pad), N(0, 1) noise in every frame, planted patterns of norm 3 along
orthonormal directions. 400 training and 400 held-out videos, two classes (one-hot labels,
binary cross-entropy as in training), Adam(1e-2), batch 32, fixed seeds. Accuracy is the
argmax of the two probabilities on the held-out videos.

a. Same mean, different content. Class 0 videos hold 4 frames + v and 4 frames - v,
   class 1 videos 4 frames + w and 4 frames - w (on top of the noise, at random real
   positions). The planted vectors cancel exactly, so every video's mean frame is its
   noise's mean frame, whose distribution does not depend on the class.
   NetVLAD (K = 8): held-out accuracy >= 0.9 (measured 1.000 with data and training seeds
   0, 1 and 2). Mean pooling: <= 0.65 (measured 0.51 to 0.52; chance is 0.5, one standard
   error 0.025).
b. Order. Every video holds a 4-frame block of pattern p and one of pattern q, non
   overlapping, at random real positions; the label says whether p comes first. Both
   classes have the same frames up to order, so the same mean.
   LSTM (1 layer, 16 units): >= 0.9 (measured 0.9925 to 0.995). Mean pooling: <= 0.65
   (measured 0.50 to 0.53).
The tests use seed 0; on CPU, runs with the same seed gave identical accuracies.
"""

import keras
import numpy as np

from pooling_models.builder import build_model
from pooling_models.layers import masked_mean
from pooling_models.model_config import ModelConfig

DIMS = 16
MAX_FRAMES = 20
MIN_FRAMES = 12
AMPLITUDE = 3.0
PLANTED = 4  # frames per sign (task a) or per block (task b)
TRAIN_VIDEOS = 400
EVAL_VIDEOS = 400
LEARNED_MIN_ACCURACY = 0.9
CHANCE_MAX_ACCURACY = 0.65

Videos = tuple[dict[str, np.ndarray], np.ndarray]  # inputs, labels [N] in {0, 1}


def _noise_videos(rng: np.random.Generator, count: int) -> dict[str, np.ndarray]:
    """Noise frames [N, T, D], zero past each video's num_frames [N]."""
    num_frames = rng.integers(MIN_FRAMES, MAX_FRAMES + 1, count).astype(np.int32)
    frames = rng.normal(size=(count, MAX_FRAMES, DIMS)).astype(np.float32)
    frames[np.arange(MAX_FRAMES)[None, :] >= num_frames[:, None]] = 0.0
    return {"rgb": frames, "num_frames": num_frames}


def _directions(rng: np.random.Generator) -> np.ndarray:
    """Two orthonormal directions scaled to AMPLITUDE -> [2, D]."""
    return AMPLITUDE * np.linalg.qr(rng.normal(size=(DIMS, DIMS)))[0][:, :2].T


def _same_mean_videos(rng: np.random.Generator, count: int) -> Videos:
    """Task a: class c plants +u_c and -u_c PLANTED times each; the mean frame is unchanged."""
    inputs = _noise_videos(rng, count)
    directions = _directions(rng)
    labels = rng.integers(0, 2, count)
    for video, (label, length) in enumerate(zip(labels, inputs["num_frames"], strict=True)):
        positions = rng.permutation(length)[: 2 * PLANTED]
        inputs["rgb"][video, positions[:PLANTED]] += directions[label]
        inputs["rgb"][video, positions[PLANTED:]] -= directions[label]
    return inputs, labels


def _ordered_videos(rng: np.random.Generator, count: int) -> Videos:
    """Task b: a block of p and a block of q; label 1 when p comes first."""
    inputs = _noise_videos(rng, count)
    patterns = _directions(rng)
    labels = rng.integers(0, 2, count)
    for video, (label, length) in enumerate(zip(labels, inputs["num_frames"], strict=True)):
        first = rng.integers(0, length - 2 * PLANTED + 1)
        second = rng.integers(first + PLANTED, length - PLANTED + 1)
        early, late = (patterns[0], patterns[1]) if label == 1 else (patterns[1], patterns[0])
        inputs["rgb"][video, first : first + PLANTED] += early
        inputs["rgb"][video, second : second + PLANTED] += late
    return inputs, labels


def _mask(inputs: dict[str, np.ndarray]) -> np.ndarray:
    return np.arange(MAX_FRAMES)[None, :] < inputs["num_frames"][:, None]


def _held_out_accuracy(config: ModelConfig, videos: Videos, epochs: int, seed: int) -> float:
    """Trains on the first TRAIN_VIDEOS videos; accuracy on the rest."""
    keras.utils.set_random_seed(seed)
    inputs, labels = videos
    train = {name: values[:TRAIN_VIDEOS] for name, values in inputs.items()}
    held_out = {name: values[TRAIN_VIDEOS:] for name, values in inputs.items()}
    one_hot = np.eye(2, dtype=np.float32)[labels]
    model = build_model(config)
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    model.fit(train, one_hot[:TRAIN_VIDEOS], batch_size=32, epochs=epochs, verbose=0)
    predictions = model.predict(held_out, batch_size=100, verbose=0)
    return float(np.mean(predictions.argmax(axis=1) == labels[TRAIN_VIDEOS:]))


def _config(pooling: str, **overrides) -> ModelConfig:
    return ModelConfig(pooling=pooling, num_classes=2, feature_sizes=(DIMS,), **overrides)


def test_same_mean_videos_have_the_mean_of_their_noise():
    rng = np.random.default_rng(0)
    videos, _ = _same_mean_videos(rng, 50)
    noise = _noise_videos(np.random.default_rng(0), 50)
    mask = _mask(videos)
    np.testing.assert_allclose(
        masked_mean(videos["rgb"], mask), masked_mean(noise["rgb"], mask), atol=1e-5
    )


def test_ordered_videos_differ_only_in_order():
    rng = np.random.default_rng(0)
    videos, labels = _ordered_videos(rng, 50)
    noise = _noise_videos(np.random.default_rng(0), 50)
    planted = videos["rgb"] - noise["rgb"]  # [N, T, D]
    totals = planted.sum(axis=1)
    np.testing.assert_allclose(totals, np.broadcast_to(totals[0], totals.shape), atol=1e-5)
    assert 0 < labels.mean() < 1


def test_netvlad_separates_videos_with_the_same_mean():
    videos = _same_mean_videos(np.random.default_rng(0), TRAIN_VIDEOS + EVAL_VIDEOS)
    config = _config("netvlad", cluster_size=8, hidden_size=16)
    accuracy = _held_out_accuracy(config, videos, epochs=8, seed=0)
    assert accuracy >= LEARNED_MIN_ACCURACY, accuracy


def test_mean_pooling_cannot_separate_videos_with_the_same_mean():
    videos = _same_mean_videos(np.random.default_rng(0), TRAIN_VIDEOS + EVAL_VIDEOS)
    accuracy = _held_out_accuracy(_config("mean"), videos, epochs=8, seed=0)
    assert accuracy <= CHANCE_MAX_ACCURACY, accuracy


def test_lstm_learns_frame_order():
    videos = _ordered_videos(np.random.default_rng(0), TRAIN_VIDEOS + EVAL_VIDEOS)
    config = _config("lstm", recurrent_layers=1, recurrent_units=16)
    accuracy = _held_out_accuracy(config, videos, epochs=10, seed=0)
    assert accuracy >= LEARNED_MIN_ACCURACY, accuracy


def test_mean_pooling_cannot_learn_frame_order():
    videos = _ordered_videos(np.random.default_rng(0), TRAIN_VIDEOS + EVAL_VIDEOS)
    accuracy = _held_out_accuracy(_config("mean"), videos, epochs=10, seed=0)
    assert accuracy <= CHANCE_MAX_ACCURACY, accuracy
