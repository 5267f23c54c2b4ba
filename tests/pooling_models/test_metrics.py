import heapq
import random

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
    # A miss for hit@1 (1 of 3 videos) and PERR 0 that still counts: (1/2 + 1/2 + 0) / 3.
    assert hit_at_k(predictions, labels, 1) == pytest.approx(1 / 3)
    assert perr(predictions, labels) == pytest.approx(1 / 3)
    # Its 0.95 negative now ranks first in class 0 and in the pooled list:
    # GAP top_k=2: 0.95 -, 0.9 +, 0.8 -, 0.75 -, 0.7 +, ... -> (1/2 + 2/5) / 4.
    assert gap(predictions, labels, top_k=2) == pytest.approx((1 / 2 + 2 / 5) / 4)
    metrics = EvaluationMetrics(num_classes=4, top_k=2)
    metrics.accumulate(predictions, labels)
    assert metrics.result()["perr"] == pytest.approx(1 / 3)
    assert metrics.result()["hit_at_1"] == pytest.approx(1 / 3)


def test_no_positives_anywhere():
    predictions = np.random.default_rng(0).random((3, 5))
    labels = np.zeros((3, 5))
    assert gap(predictions, labels) == 0.0
    assert mean_average_precision(predictions, labels) == 0.0
    assert perr(predictions, labels) == 0.0
    assert hit_at_k(predictions, labels, 1) == 0.0


# Two videos x three classes where every kept score is 0.5.
TIED_PREDICTIONS = np.array([[0.5, 0.5, 0.1], [0.5, 0.2, 0.5]])
TIED_LABELS = np.array([[0, 1, 0], [1, 0, 0]])


def test_tied_scores_by_hand():
    # The reference's shuffle: random.seed(0); random.sample(range(n), n).
    assert random.Random(0).sample(range(4), 4) == [3, 1, 0, 2]
    assert random.Random(0).sample(range(2), 2) == [1, 0]
    # top_k=2 keeps v0 {0, 1}, v1 {0, 2}. Pushed class by class: (0.5 -) v0c0, (0.5 +) v1c0,
    # (0.5 +) v0c1, (0.5 -) v1c2. The heap (a min-heap on (score, label)) lays them out as
    # [v0c0 -, v1c2 -, v0c1 +, v1c0 +] (the last push sifts above v1c0 since - < +).
    # Shuffled by [3, 1, 0, 2]: +, -, -, +; the stable sort keeps that order as all tie.
    # AP over 2 positives: (1/1 + 2/4) / 2 = 3/4. (Taking a tied group's precision after
    # the whole group, as this module did before, gave (2/4 + 2/4) / 2 = 1/2.)
    assert gap(TIED_PREDICTIONS, TIED_LABELS, top_k=2) == pytest.approx(0.75)
    # Class 0 pushes v0 -, v1 +; heap [-, +]; shuffled by [1, 0]: +, - -> AP 1. Class 1 holds
    # v0 + alone -> 1. Class 2 has no positive and stays out of the mean: mAP 1.
    assert mean_average_precision(TIED_PREDICTIONS, TIED_LABELS, top_k=2) == pytest.approx(1.0)
    # hit@1 takes the first of the tied best (numpy's argmax): v0 -> class 0, a miss;
    # v1 -> class 0, a hit.
    assert hit_at_k(TIED_PREDICTIONS, TIED_LABELS, 1) == pytest.approx(0.5)


def test_tied_top_n_follows_argpartition():
    # PERR's top n and GAP's top k among tied scores are whichever numpy's argpartition
    # picks, as in the reference.
    scores = TIED_PREDICTIONS[0]
    (picked,) = np.argpartition(scores, -1)[-1:]
    assert perr([scores], [np.eye(3)[picked]]) == 1.0
    assert perr([scores], [np.eye(3)[1 - picked]]) == 0.0
    tied = np.array([[0.5, 0.5, 0.5]])
    (kept,) = np.argpartition(tied[0], -1)[-1:]
    assert gap(tied, np.eye(3)[[kept]], top_k=1) == 1.0
    assert gap(tied, np.eye(3)[[(kept + 1) % 3]], top_k=1) == 0.0


def test_hit_at_k_ties_take_the_lower_class_index():
    tied = [[0.5] * 7]
    assert hit_at_k(tied, [np.eye(7)[4]], 5) == 1.0
    assert hit_at_k(tied, [np.eye(7)[5]], 5) == 0.0
    rng = np.random.default_rng(5)
    predictions = rng.integers(0, 3, (200, 9)) / 2  # heavy ties
    labels = rng.random((200, 9)) < 0.2
    for k in (1, 3, 5, 9, 12):
        best = np.argsort(-predictions, axis=1, kind="stable")[:, :k]
        expected = np.take_along_axis(labels, best, axis=1).any(axis=1).mean()
        assert hit_at_k(predictions, labels, k) == pytest.approx(expected), k


def test_positive_scored_zero_does_not_count_for_perr():
    # The reference counts a label in the top n only when its score is above 0.
    assert perr([[0.0, 0.0]], [[1, 1]]) == 0.0
    assert perr([[0.3, 0.0]], [[1, 1]]) == pytest.approx(0.5)


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
    predictions = rng.random((num_videos, num_classes))  # continuous: no ties
    labels = rng.random((num_videos, num_classes)) < 0.1  # some videos have no labels
    labels[:, 29] = False  # and a class nobody has
    metrics = EvaluationMetrics(num_classes, top_k=top_k)
    for start, end in BATCHES:
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
    assert sum(len(batch.scores) for batch in metrics._batches) == num_videos * top_k


BATCHES = [(0, 1), (1, 1), (1, 18), (18, 60), (60, 103)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_the_reference_loops_with_ties_and_unlabelled_videos(seed):
    rng = np.random.default_rng(seed)
    num_videos, num_classes, top_k = 103, 12, 5
    predictions = (rng.integers(0, 6, (num_videos, num_classes)) / 5).astype(np.float32)
    labels = (rng.random((num_videos, num_classes)) < 0.15).astype(np.float32)
    labels[::7] = 0  # unlabelled videos
    reference = ReferenceMetrics(num_classes, top_k)
    metrics = EvaluationMetrics(num_classes, top_k=top_k)
    for start, end in BATCHES:
        reference.accumulate(predictions[start:end], labels[start:end])
        metrics.accumulate(predictions[start:end], labels[start:end])
    expected = reference.result()
    result = metrics.result()
    for key in ("gap", "hit_at_1", "perr", "map"):
        assert result[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-15), key
    # One batch: the batch functions equal the reference's calculate_* and mAP.
    whole = ReferenceMetrics(num_classes, top_k)
    whole.accumulate(predictions, labels)
    expected = whole.result()
    assert gap(predictions, labels, top_k) == pytest.approx(expected["gap"], rel=1e-12)
    assert hit_at_k(predictions, labels, 1) == pytest.approx(expected["hit_at_1"], rel=1e-12)
    assert perr(predictions, labels) == pytest.approx(expected["perr"], rel=1e-12)
    assert mean_average_precision(predictions, labels, top_k) == pytest.approx(
        expected["map"], rel=1e-12
    )


class ReferenceMetrics:
    """YouTube-8M's eval_util.EvaluationMetrics restated as plain loops, for comparison:
    argpartition top k, (score, label) pairs pushed onto heaps class by class, each list
    shuffled with random seeded 0 and sorted stably by descending score."""

    def __init__(self, num_classes: int, top_k: int) -> None:
        self.num_classes, self.top_k = num_classes, top_k
        self.global_heap: list = []
        self.class_heaps: list[list] = [[] for _ in range(num_classes)]
        self.positives = np.zeros(num_classes)
        self.hits_at_1 = self.perr_sum = 0.0
        self.videos = 0

    def accumulate(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        per_class: list[list] = [[] for _ in range(self.num_classes)]
        k = min(self.top_k, self.num_classes)
        for scores, actual in zip(predictions, labels, strict=True):
            self.hits_at_1 += float(actual[np.argmax(scores)])
            n = int(actual.sum())
            top = np.argpartition(scores, -n)[-n:]  # n == 0: every class
            self.perr_sum += sum(float(actual[c]) for c in top if scores[c] > 0) / top.size
            for c in np.argpartition(scores, -k)[-k:]:
                per_class[c].append((scores[c], actual[c]))
        for c, pairs in enumerate(per_class):
            for pair in pairs:
                heapq.heappush(self.global_heap, pair)
                heapq.heappush(self.class_heaps[c], pair)
        self.positives += labels.sum(axis=0)
        self.videos += len(predictions)

    @staticmethod
    def average_precision(heap: list, num_positives: float) -> float:
        if not heap or num_positives == 0:
            return 0.0
        shuffled = [heap[i] for i in random.Random(0).sample(range(len(heap)), len(heap))]
        ranked = sorted(shuffled, key=lambda pair: pair[0], reverse=True)
        found, total = 0, 0.0
        for rank, (_, actual) in enumerate(ranked, start=1):
            if actual > 0:
                found += 1
                total += found / rank / num_positives
        return total

    def result(self) -> dict[str, float]:
        aps = [
            self.average_precision(self.class_heaps[c], self.positives[c])
            for c in range(self.num_classes)
            if self.positives[c] > 0
        ]
        return {
            "gap": self.average_precision(self.global_heap, self.positives.sum()),
            "hit_at_1": self.hits_at_1 / self.videos,
            "perr": self.perr_sum / self.videos,
            "map": float(np.mean(aps)),
        }


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
