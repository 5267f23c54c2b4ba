import numpy as np
import pytest

from pooling_models.metrics import (
    RESULT_KEYS,
    EvaluationMetrics,
    gap,
    hit_at_k,
    mean_average_precision,
    perr,
)

# Two videos x four classes, worked by hand below.
PREDICTIONS = np.array(
    [
        [0.9, 0.8, 0.3, 0.1],  # video 0
        [0.75, 0.7, 0.6, 0.4],  # video 1
    ]
)
LABELS = np.array(
    [
        [1, 0, 1, 0],
        [0, 1, 0, 1],
    ]
)


def test_gap_by_hand():
    # top_k=2 keeps v0: (0.9 +), (0.8 -); v1: (0.75 -), (0.7 +). Pooled ranking:
    # 0.9 +, 0.8 -, 0.75 -, 0.7 +  -> precision at the positives 1/1 and 2/4;
    # 4 positives in all (two are outside the top 2): (1 + 1/2) / 4 = 0.375.
    assert gap(PREDICTIONS, LABELS, top_k=2) == pytest.approx(0.375)
    # Every pair: 0.9+ 0.8- 0.75- 0.7+ 0.6- 0.4+ 0.3+ 0.1- -> precisions 1/1, 2/4, 3/6, 4/7;
    # (1 + 1/2 + 1/2 + 4/7) / 4 = 9/14.
    assert gap(PREDICTIONS, LABELS, top_k=20) == pytest.approx(9 / 14)


def test_hit_at_k_by_hand():
    # Best class: v0 -> 0 (a label), v1 -> 0 (not a label).
    assert hit_at_k(PREDICTIONS, LABELS, 1) == pytest.approx(0.5)
    # Best two: v0 -> {0, 1} holds 0; v1 -> {0, 1} holds 1.
    assert hit_at_k(PREDICTIONS, LABELS, 2) == pytest.approx(1.0)


def test_perr_by_hand():
    # v0 has 2 labels; its top 2 {0, 1} hold one -> 1/2. v1: top 2 {0, 1} hold one -> 1/2.
    assert perr(PREDICTIONS, LABELS) == pytest.approx(0.5)
    # v0 with labels {0, 1} instead: top 2 hold both -> 1; mean (1 + 1/2) / 2.
    assert perr(PREDICTIONS, [[1, 1, 0, 0], [0, 1, 0, 1]]) == pytest.approx(0.75)


def test_map_by_hand():
    # top_k=2: class 0 list v0 (0.9 +), v1 (0.75 -) -> AP 1. Class 1: v0 (0.8 -), v1 (0.7 +)
    # -> 1/2. Classes 2 and 3 are in no video's top 2 but have one positive each -> AP 0.
    # Mean over the four labelled classes: 1.5 / 4.
    assert mean_average_precision(PREDICTIONS, LABELS, top_k=2) == pytest.approx(0.375)
    # All pairs: class 2 ranks v1 (0.6 -) above v0 (0.3 +) -> 1/2; class 3 ranks
    # v1 (0.4 +) first -> 1. Mean (1 + 1/2 + 1/2 + 1) / 4.
    assert mean_average_precision(PREDICTIONS, LABELS, top_k=20) == pytest.approx(0.75)


def test_map_skips_classes_nobody_has():
    # A fifth class, scored lowest and never a label, neither enters a top 4 nor the mean.
    predictions = np.hstack([PREDICTIONS, [[0.05], [0.05]]])
    labels = np.hstack([LABELS, [[0], [0]]])
    assert mean_average_precision(predictions, labels, top_k=4) == pytest.approx(0.75)
    assert gap(predictions, labels, top_k=20) == pytest.approx(9 / 14)


def test_video_without_labels():
    predictions = np.vstack([PREDICTIONS, [[0.95, 0.2, 0.2, 0.2]]])
    labels = np.vstack([LABELS, [[0, 0, 0, 0]]])
    # A miss for hit@1 (1 of 3 videos), left out of PERR (still 1/2).
    assert hit_at_k(predictions, labels, 1) == pytest.approx(1 / 3)
    assert perr(predictions, labels) == pytest.approx(0.5)
    # Its 0.95 negative now ranks first in class 0 and in the pooled list:
    # GAP top_k=2: 0.95 -, 0.9 +, 0.8 -, 0.75 -, 0.7 +, ... -> (1/2 + 2/5) / 4.
    assert gap(predictions, labels, top_k=2) == pytest.approx((1 / 2 + 2 / 5) / 4)


def test_no_positives_anywhere():
    predictions = np.random.default_rng(0).random((3, 5))
    labels = np.zeros((3, 5))
    assert gap(predictions, labels) == 0.0
    assert mean_average_precision(predictions, labels) == 0.0
    assert perr(predictions, labels) == 0.0
    assert hit_at_k(predictions, labels, 1) == 0.0


def test_tied_scores_do_not_depend_on_order():
    # One tied group holding one positive out of two: precision 1/2 after the group,
    # whichever of the two comes first.
    assert gap([[0.5, 0.5]], [[0, 1]]) == pytest.approx(0.5)
    assert gap([[0.5, 0.5]], [[1, 0]]) == pytest.approx(0.5)
    # Permuting classes changes neither GAP nor mAP when scores tie.
    rng = np.random.default_rng(1)
    predictions = rng.integers(0, 3, size=(6, 7)) / 2  # heavy ties
    labels = rng.random((6, 7)) < 0.4
    columns = rng.permutation(7)
    assert gap(predictions, labels) == gap(predictions[:, columns], labels[:, columns])
    assert mean_average_precision(predictions, labels) == pytest.approx(
        mean_average_precision(predictions[:, columns], labels[:, columns])
    )


def test_top_k_ties_pick_lower_class_index():
    # All three classes tie; the best one is class 0, as numpy's argmax.
    assert hit_at_k([[0.5, 0.5, 0.5]], [[0, 0, 1]], 1) == 0.0
    assert hit_at_k([[0.5, 0.5, 0.5]], [[1, 0, 0]], 1) == 1.0
    # With top_k=1 only (0.5, -) is kept of the one positive -> GAP 0.
    assert gap([[0.5, 0.5, 0.5]], [[0, 0, 1]], top_k=1) == 0.0


def test_shape_mismatch_and_nan_are_errors():
    with pytest.raises(ValueError, match=r"\(2, 4\).*\(2, 3\)"):
        gap(PREDICTIONS, LABELS[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        perr([[np.nan, 0.1]], [[1, 0]])
    with pytest.raises(ValueError, match="expected 4"):
        EvaluationMetrics(num_classes=4).accumulate(np.zeros((1, 3)), np.zeros((1, 3)))


def test_streaming_equals_batch_on_uneven_batches():
    rng = np.random.default_rng(7)
    num_videos, num_classes, top_k = 103, 30, 6
    predictions = np.round(rng.random((num_videos, num_classes)), 2)  # some ties
    labels = rng.random((num_videos, num_classes)) < 0.1  # some videos have no labels
    labels[:, 29] = False  # and a class nobody has
    metrics = EvaluationMetrics(num_classes, top_k=top_k)
    for start, end in [(0, 1), (1, 1), (1, 18), (18, 60), (60, 103)]:
        metrics.accumulate(predictions[start:end], labels[start:end])
    result = metrics.result()
    assert tuple(result) == RESULT_KEYS
    assert result == pytest.approx(
        {
            "gap": gap(predictions, labels, top_k=top_k),
            "hit_at_1": hit_at_k(predictions, labels, 1),
            "hit_at_5": hit_at_k(predictions, labels, 5),
            "perr": perr(predictions, labels),
            "map": mean_average_precision(predictions, labels, top_k=top_k),
            "num_videos": num_videos,
        },
        rel=1e-12,
    )
    # Only each video's top_k triples are kept.
    assert sum(len(scores) for scores in metrics._scores) == num_videos * top_k


def test_perr_reaches_beyond_top_k_in_streaming():
    # A video with more labels than top_k: PERR still ranks all of its classes.
    predictions = np.array([[0.9, 0.8, 0.7, 0.1]])
    labels = np.array([[1, 1, 0, 1]])
    metrics = EvaluationMetrics(num_classes=4, top_k=1)
    metrics.accumulate(predictions, labels)
    assert metrics.result()["perr"] == pytest.approx(2 / 3) == perr(predictions, labels)


def test_clear_and_empty():
    metrics = EvaluationMetrics(num_classes=4)
    assert metrics.result() == dict.fromkeys(RESULT_KEYS, 0)
    metrics.accumulate(PREDICTIONS, LABELS)
    assert metrics.result()["num_videos"] == 2
    metrics.clear()
    assert metrics.result() == dict.fromkeys(RESULT_KEYS, 0)


def _reference_ap(pairs: list[tuple[float, bool]], num_positives: int) -> float:
    """AP by its textbook loop: precision at each positive's rank, over all positives."""
    ranked = sorted(pairs, key=lambda pair: -pair[0])
    found, total = 0, 0.0
    for rank, (_, positive) in enumerate(ranked, start=1):
        if positive:
            found += 1
            total += found / rank
    return total / num_positives if num_positives else 0.0


def test_matches_loop_definitions_without_ties():
    rng = np.random.default_rng(3)
    predictions = rng.random((40, 12))  # continuous: no ties
    labels = rng.random((40, 12)) < 0.2
    top_k = 5
    best = np.argsort(-predictions, axis=1)[:, :top_k]
    pairs = [(predictions[v, c], labels[v, c]) for v in range(40) for c in best[v]]
    assert gap(predictions, labels, top_k) == pytest.approx(_reference_ap(pairs, labels.sum()))
    class_aps = [
        _reference_ap(
            [(s, h) for (s, h), c in zip(pairs, best.ravel(), strict=True) if c == k],
            labels[:, k].sum(),
        )
        for k in range(12)
        if labels[:, k].any()
    ]
    assert mean_average_precision(predictions, labels, top_k) == pytest.approx(np.mean(class_aps))
