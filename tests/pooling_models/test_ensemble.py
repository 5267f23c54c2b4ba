"""eval_pool with several --model flags: metrics of the weighted mean of the models'
probabilities, each model reading its own features (and clip length) from one set of
records; models that disagree on the vocabulary are refused before any work.

Model directories are written straight from a ModelConfig (random weights), so the tests
train nothing."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from features.formats import AUDIO_KEY, RGB_KEY
from pooling_models import eval_pool
from pooling_models.config import EvalPoolConfig, normalized_weights, split_weights
from pooling_models.metrics import EvaluationMetrics
from pooling_models.model_config import ModelConfig
from tests.pooling_models.synthetic import NUM_CLASSES, write_model_dir, write_records

SIZES = {RGB_KEY: 24, AUDIO_KEY: 8}
NAMES = ("cat", "dog", "eel")
VIDEOS = 30
TINY = {"num_classes": NUM_CLASSES, "cluster_size": 2, "hidden_size": 8, "head": "logistic"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("records")
    write_records(folder, VIDEOS, 3, SIZES, frames=-9)  # 1..9 frames per video
    return str(folder / "frame/*.tfrecord")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    """An rgb mean-pooling model reading 4 frames and an audio NetVLAD reading them all."""
    root = tmp_path_factory.mktemp("models")
    rgb = ModelConfig(pooling="mean", feature_names=(RGB_KEY,), feature_sizes=(24,), **TINY)
    audio = ModelConfig(feature_names=(AUDIO_KEY,), feature_sizes=(8,), **TINY)
    first = write_model_dir(root / "rgb", rgb, seed=1, max_frames=4, label_names=NAMES)
    second = write_model_dir(root / "audio", audio, seed=2, label_names=NAMES)
    return str(first), str(second)


def read_predictions(path) -> dict[str, np.ndarray]:
    """predictions.csv -> id: float32 [C] (every class is among the top 20 here)."""
    scores = {}
    with open(path, newline="") as source:
        for video_id, pairs in list(csv.reader(source))[1:]:
            tokens = pairs.split()
            row = np.zeros(NUM_CLASSES, np.float32)
            row[[int(label) for label in tokens[::2]]] = np.array(tokens[1::2], np.float32)
            scores[video_id] = row
    return scores


def eval_metrics(model: str) -> dict:
    return json.loads((Path(model) / "eval_metrics.json").read_text())


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval_pool: error: "), lines
    return lines[0]


def test_metrics_are_those_of_the_weighted_mean_of_the_models(models, data, tmp_path):
    rgb, audio = models
    for name, model in (("rgb", rgb), ("audio", audio)):
        args = ["--model", model, "--eval_data", data]
        assert eval_pool.main([*args, "--predictions", str(tmp_path / f"{name}.csv")]) == 0
    singles = {model: eval_metrics(model) for model in models}
    args = ["--model", rgb, "--model", audio, "--ensemble_weights", "1,3", "--eval_data", data]
    args += ["--predictions", str(tmp_path / "both.csv")]
    assert eval_pool.main([*args, "--metrics_output", str(tmp_path / "both.json")]) == 0

    first, second = read_predictions(tmp_path / "rgb.csv"), read_predictions(tmp_path / "audio.csv")
    both = read_predictions(tmp_path / "both.csv")
    assert sorted(both) == sorted(first) and len(both) == VIDEOS
    ids = sorted(both)
    by_hand = np.stack(
        [(0.25 * first[i].astype(np.float64) + 0.75 * second[i]).astype(np.float32) for i in ids]
    )
    # Equal up to float32 rounding: a model's outputs may differ by an ulp between runs.
    np.testing.assert_allclose(np.stack([both[i] for i in ids]), by_hand, rtol=0, atol=1e-6)
    assert np.abs(by_hand - np.stack([first[i] for i in ids])).max() > 1e-3  # a real mix

    labels = np.zeros((VIDEOS, NUM_CLASSES), np.float32)
    labels[np.arange(VIDEOS), [int(i.split("_")[1]) % NUM_CLASSES for i in ids]] = 1
    metrics = EvaluationMetrics(NUM_CLASSES)
    metrics.accumulate(by_hand, labels)
    expected = metrics.result()
    written = json.loads((tmp_path / "both.json").read_text())
    for key in ("gap", "hit_at_1", "hit_at_5", "perr", "map"):
        assert written[key] == pytest.approx(expected[key], abs=1e-6), key
    assert written["models"] == [rgb, audio] and written["weights"] == [0.25, 0.75]
    # The ensemble's metrics went to --metrics_output only, not into a model's folder.
    assert {model: eval_metrics(model) for model in models} == singles


def test_without_metrics_output_an_ensemble_only_prints(models, data, capsys):
    rgb, audio = models
    before = {model: eval_metrics(model) for model in models}
    assert eval_pool.main(["--model", rgb, "--model", audio, "--eval_data", data]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_videos"] == VIDEOS
    assert {model: eval_metrics(model) for model in models} == before


def test_models_that_disagree_on_the_vocabulary_are_one_line_before_any_work(
    models, tmp_path, capsys
):
    rgb, _ = models
    config = ModelConfig(pooling="mean", feature_names=(RGB_KEY,), feature_sizes=(24,), **TINY)
    renamed = write_model_dir(tmp_path / "renamed", config, 1, label_names=("cat", "dog", "fox"))
    wider = ModelConfig(**{**config.to_dict(), "num_classes": 4})
    four = write_model_dir(tmp_path / "four", wider, 1, label_names=(*NAMES, "gnu"))
    bare = write_model_dir(tmp_path / "bare", config, 1)
    missing = str(tmp_path / "no_records/*.tfrecord")  # never read: the check comes first
    cases = [
        (renamed, f"class 2 is 'fox', 'eel' in --model {rgb}"),
        (four, f"4 classes, 3 in --model {rgb}"),
        (bare, f"--model {rgb} names its classes (vocabulary.csv), it has bare indices"),
    ]
    for other, detail in cases:
        assert eval_pool.main(["--model", rgb, "--model", str(other), "--eval_data", missing]) == 2
        error = one_line_error(capsys)
        assert error == (
            f"eval_pool: error: models disagree on the vocabulary (--model {other}): {detail}: "
            "pass models trained on one vocabulary"
        )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("1", "1 weights for 2 models (--ensemble_weights 1)"),
        ("0,0", "the weights sum to 0 (--ensemble_weights 0,0)"),
        ("1,nan", "'nan' is not a finite number >= 0 (--ensemble_weights 1,nan)"),
        ("1,-2", "'-2' is not a finite number >= 0"),
    ],
)
def test_ensemble_weights_that_cannot_work_are_one_line(weights, message, capsys):
    args = ["--model", "a", "--model", "b", "--eval_data", "x", "--ensemble_weights", weights]
    assert eval_pool.main(args) == 2
    assert message in one_line_error(capsys)


def test_weights_are_normalized_and_default_to_equal():
    assert normalized_weights((), 3) == (1 / 3,) * 3
    assert normalized_weights(split_weights("2, 6"), 2) == (0.25, 0.75)
    config = EvalPoolConfig("a", "data", extra_models=("b",), ensemble_weights=(1.0, 0.0))
    assert config.models == ("a", "b") and config.model_weights == (1.0, 0.0)
    assert EvalPoolConfig("a", "data").model_weights == (1.0,)
