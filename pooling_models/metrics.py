"""YouTube-8M evaluation metrics: GAP, hit@k, PERR and mAP, batch and streaming.

Definitions follow YouTube-8M's eval_util (calculate_gap, calculate_hit_at_one,
calculate_precision_at_equal_recall_rate, EvaluationMetrics), with two deliberate choices:

- Ties. YouTube-8M shuffles the pairs (fixed seed) before sorting, so tied scores rank in
  an order set by their input positions, and AP changes with batch order or class order.
  Here AP steps over groups of tied scores at once (as scikit-learn's average_precision):
  the precision of a tied group is taken after the whole group, so AP does not depend on
  the order in which tied pairs arrive. This is what lets the streaming accumulator equal
  the batch functions exactly. Without ties the two definitions agree.
- Top-k selection. Among equal scores the lower class index ranks first (as numpy's
  argmax, which YouTube-8M's hit@1 uses).

Predictions are [N, C] float scores; labels are [N, C] with positives > 0.
"""

import numpy as np

DEFAULT_TOP_K = 20
RESULT_KEYS = ("gap", "hit_at_1", "hit_at_5", "perr", "map", "num_videos")


def gap(predictions: np.ndarray, labels: np.ndarray, top_k: int = DEFAULT_TOP_K) -> float:
    """Global average precision, YouTube-8M's headline metric.

    Each video contributes only its top_k (score, is_positive) pairs; all pairs of all videos
    are pooled and ranked by score, and AP is taken over that one list with the TOTAL number
    of positive labels as denominator. Positives that fall outside a video's top_k therefore
    count as never retrieved, which caps GAP below 1 for videos with more than top_k labels.

    Returns:
      GAP in [0, 1]; 0.0 when there are no positive labels at all.
    """
    scores, hits = _as_arrays(predictions, labels)
    order = _ranked_classes(scores)
    top_scores, top_hits, _ = _top_k_pairs(scores, hits, order, top_k)
    return _average_precision(top_scores.ravel(), top_hits.ravel(), int(hits.sum()))


def hit_at_k(predictions: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of videos whose k best-scored classes include at least one true label.

    Videos without labels count as misses, as in YouTube-8M's hit@1 (k=1).
    """
    scores, hits = _as_arrays(predictions, labels)
    return float(_hits_at_k(hits, _ranked_classes(scores), k).mean()) if len(scores) else 0.0


def perr(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Precision at equal recall rate: for a video with n labels, the precision of its top n.

    Averaged over videos with at least one label. YouTube-8M divides by all videos instead,
    so its PERR drops whenever a split holds unlabelled videos; leaving them out keeps PERR a
    property of the predictions alone. 0.0 when no video has a label.
    """
    scores, hits = _as_arrays(predictions, labels)
    total, count = _perr_sum_and_count(hits, _ranked_classes(scores))
    return total / count if count else 0.0


def mean_average_precision(
    predictions: np.ndarray, labels: np.ndarray, top_k: int = DEFAULT_TOP_K
) -> float:
    """YouTube-8M's mAP: per-class AP over videos, from each video's top_k predictions only.

    A class's ranked list holds the videos that have it among their top_k; its denominator is
    the number of videos labelled with it (retrieved or not). The mean runs over classes with
    at least one positive, as YouTube-8M's MeanAveragePrecisionCalculator by default
    (filter_empty_classes=True; Model Garden's yt8m EvaluationMetrics divides by all classes
    instead): a class nobody is labelled with has no recall to measure, and counting it as 0
    would make mAP depend on how much of the vocabulary a split happens to cover.
    0.0 when no class has a positive.
    """
    scores, hits = _as_arrays(predictions, labels)
    top_scores, top_hits, top_classes = _top_k_pairs(scores, hits, _ranked_classes(scores), top_k)
    return _mean_class_ap(
        top_scores.ravel(), top_hits.ravel(), top_classes.ravel(), hits.sum(axis=0)
    )


class EvaluationMetrics:
    """Streaming GAP, hit@1, hit@5, PERR and mAP over batches of predictions.

    Per-video metrics are summed as batches arrive; GAP and mAP need a global ranking, so only
    each video's top_k (score, is_positive, class) triples are kept: memory is O(N * top_k)
    rather than O(N * C). `result()` equals the batch functions on the concatenated data.
    """

    def __init__(self, num_classes: int, top_k: int = DEFAULT_TOP_K) -> None:
        if num_classes < 1 or top_k < 1:
            raise ValueError(f"num_classes={num_classes} and top_k={top_k} must be >= 1")
        self.num_classes = num_classes
        self.top_k = top_k
        self.clear()

    def clear(self) -> None:
        """Forgets every accumulated batch."""
        self._scores: list[np.ndarray] = []
        self._hits: list[np.ndarray] = []
        self._classes: list[np.ndarray] = []
        self._positives_per_class = np.zeros(self.num_classes, dtype=np.int64)
        self._hits_at_1 = 0
        self._hits_at_5 = 0
        self._perr_sum = 0.0
        self._perr_count = 0
        self._num_videos = 0

    def accumulate(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        """Adds one batch: predictions [B, C] scores, labels [B, C] (positives > 0)."""
        scores, hits = _as_arrays(predictions, labels)
        if scores.shape[1] != self.num_classes:
            raise ValueError(
                f"predictions have {scores.shape[1]} classes, expected {self.num_classes}"
            )
        order = _ranked_classes(scores)
        top_scores, top_hits, top_classes = _top_k_pairs(scores, hits, order, self.top_k)
        self._scores.append(top_scores.ravel())
        self._hits.append(top_hits.ravel())
        self._classes.append(top_classes.ravel().astype(np.int32))
        self._positives_per_class += hits.sum(axis=0)
        self._hits_at_1 += int(_hits_at_k(hits, order, 1).sum())
        self._hits_at_5 += int(_hits_at_k(hits, order, 5).sum())
        perr_sum, perr_count = _perr_sum_and_count(hits, order)
        self._perr_sum += perr_sum
        self._perr_count += perr_count
        self._num_videos += len(scores)

    def result(self) -> dict[str, float]:
        """Metrics over everything accumulated since construction or `clear()`."""
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        hits = np.concatenate(self._hits) if self._hits else np.zeros(0, dtype=bool)
        classes = np.concatenate(self._classes) if self._classes else np.zeros(0, dtype=np.int32)
        videos = self._num_videos
        return {
            "gap": _average_precision(scores, hits, int(self._positives_per_class.sum())),
            "hit_at_1": self._hits_at_1 / videos if videos else 0.0,
            "hit_at_5": self._hits_at_5 / videos if videos else 0.0,
            "perr": self._perr_sum / self._perr_count if self._perr_count else 0.0,
            "map": _mean_class_ap(scores, hits, classes, self._positives_per_class),
            "num_videos": videos,
        }


def _as_arrays(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated [N, C] float scores and [N, C] bool positives."""
    scores = np.asarray(predictions)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    positives = np.asarray(labels)
    if scores.ndim != 2 or scores.shape != positives.shape:
        raise ValueError(
            f"predictions {scores.shape} and labels {positives.shape} must both be [N, C]"
        )
    if np.isnan(scores).any():
        raise ValueError(f"predictions hold {int(np.isnan(scores).sum())} NaN scores")
    return scores, positives > 0


def _ranked_classes(scores: np.ndarray) -> np.ndarray:
    """[N, C] class indices, best score first; ties keep the lower class index first."""
    return np.argsort(-scores, axis=1, kind="stable")


def _top_k_pairs(
    scores: np.ndarray, hits: np.ndarray, order: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each video's top_k (score, is_positive, class), each [N, min(top_k, C)]."""
    top_classes = order[:, :top_k]
    return (
        np.take_along_axis(scores, top_classes, axis=1),
        np.take_along_axis(hits, top_classes, axis=1),
        top_classes,
    )


def _hits_at_k(hits: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
    """[N] bool: a true label among the video's k best classes."""
    return np.take_along_axis(hits, order[:, :k], axis=1).any(axis=1)


def _perr_sum_and_count(hits: np.ndarray, order: np.ndarray) -> tuple[float, int]:
    """Sum of per-video PERR over labelled videos, and how many there are."""
    num_positives = hits.sum(axis=1)  # [N]
    labelled = num_positives > 0
    if not labelled.any():
        return 0.0, 0
    ranked_hits = np.take_along_axis(hits[labelled], order[labelled], axis=1)
    found = np.cumsum(ranked_hits, axis=1)  # [N', C]: positives among the top 1..C
    n = num_positives[labelled]
    found_in_top_n = found[np.arange(len(n)), n - 1]
    return float((found_in_top_n / n).sum()), int(labelled.sum())


def _average_precision(scores: np.ndarray, hits: np.ndarray, num_positives: int) -> float:
    """AP of one ranked list, over `num_positives` positives (some may be absent from it).

    Tied scores form one step: each group adds (its positives / num_positives) times the
    precision after the whole group, so the result does not depend on input order.
    """
    if num_positives == 0 or len(scores) == 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")
    ranked_scores = scores[order]
    found = np.cumsum(hits[order])  # positives among the top 1..M
    group_ends = np.append(ranked_scores[1:] != ranked_scores[:-1], True)
    found_at_end = found[group_ends]
    rank_at_end = np.flatnonzero(group_ends) + 1
    found_in_group = np.diff(found_at_end, prepend=0)
    return float((found_in_group * found_at_end / rank_at_end).sum() / num_positives)


def _mean_class_ap(
    scores: np.ndarray, hits: np.ndarray, classes: np.ndarray, positives_per_class: np.ndarray
) -> float:
    """Mean per-class AP over classes with positives, from pooled (score, hit, class) triples."""
    labelled_classes = np.flatnonzero(positives_per_class)
    if len(labelled_classes) == 0:
        return 0.0
    by_class = np.argsort(classes, kind="stable")
    sorted_classes = classes[by_class]
    starts = np.searchsorted(sorted_classes, labelled_classes, side="left")
    ends = np.searchsorted(sorted_classes, labelled_classes, side="right")
    aps = [
        _average_precision(
            scores[by_class[start:end]], hits[by_class[start:end]], int(positives_per_class[c])
        )
        for c, start, end in zip(labelled_classes, starts, ends, strict=True)
    ]
    return float(np.mean(aps))
