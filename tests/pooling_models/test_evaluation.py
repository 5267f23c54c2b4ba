"""predictions.csv: CSV that survives hostile ids, scores that stay distinct, whole or absent."""

import numpy as np
import pandas as pd
import pytest

from pooling_models.evaluation import PredictionsWriter

HOSTILE_IDS = ["plain", "line\nbreak", "comma,inside", 'quote"inside', "crlf\r\nend", "ünï"]


def write(path, ids, predictions, top_k=3) -> None:
    with PredictionsWriter(str(path), top_k=top_k) as writer:
        writer.write(ids, predictions)


def test_hostile_ids_round_trip_through_pandas(tmp_path):
    path = tmp_path / "predictions.csv"
    rng = np.random.default_rng(0)
    predictions = rng.random((len(HOSTILE_IDS), 5)).astype(np.float32)
    write(path, HOSTILE_IDS, predictions)
    raw = path.read_bytes()
    assert b"\r\n" not in raw.replace(b"crlf\r\nend", b"")  # line ends are \n, not CRLF
    frame = pd.read_csv(path, keep_default_na=False)
    assert list(frame.columns) == ["VideoId", "LabelConfidencePairs"]
    assert frame["VideoId"].tolist() == HOSTILE_IDS
    for row, pairs in zip(predictions, frame["LabelConfidencePairs"], strict=True):
        fields = pairs.split()
        labels = [int(label) for label in fields[::2]]
        assert labels == np.argsort(-row, kind="stable")[:3].tolist()
        assert [np.float32(score) for score in fields[1::2]] == row[labels].tolist()


def test_small_scores_stay_distinct(tmp_path):
    path = tmp_path / "predictions.csv"
    write(path, ["v"], np.array([[4.9e-7, 3.2e-7, 0.5]], np.float32), top_k=3)
    pairs = pd.read_csv(path)["LabelConfidencePairs"][0].split()
    scores = [float(score) for score in pairs[1::2]]
    assert pairs[::2] == ["2", "0", "1"]
    assert scores == pytest.approx([0.5, 4.9e-7, 3.2e-7], rel=1e-6)
    assert len(set(scores)) == 3


def test_nothing_is_written_when_the_run_fails(tmp_path):
    path = tmp_path / "predictions.csv"
    with pytest.raises(RuntimeError), PredictionsWriter(str(path)) as writer:
        writer.write(["a"], np.array([[0.1, 0.2]], np.float32))
        raise RuntimeError("interrupted")
    assert not path.exists() and list(tmp_path.iterdir()) == []
