"""YouTube-8M evaluation metrics: GAP, hit@k, PERR and mAP, batch and streaming.

The values equal YouTube-8M's own eval_util (calculate_gap, calculate_hit_at_one,
calculate_precision_at_equal_recall_rate, EvaluationMetrics with MeanAveragePrecisionCalculator's
default filter_empty_classes=True) on the same predictions, ties and unlabelled videos
included. The reference's choices, restated:

- Top k per video. A video contributes `numpy.argpartition(scores, -k)[-k:]`; when scores tie
  at the k-th place, that numpy primitive decides which enter, so it is called here too.
- Ties in a ranked list. The reference pushes its (score, label) pairs onto a binary heap
  (heapq), reads the heap's array, shuffles it with Python's `random` seeded with 0 and sorts
  it stably by descending score. Tied scores thus rank in a fixed pseudo-random order that
  depends on the order the pairs were pushed. That order is rebuilt here whenever a list
  holds ties; without ties the ranking is simply the sort and no heap is built.
- GAP's pairs are pushed batch by batch, and within a batch class by class (videos in order
  within a class). With tied scores GAP therefore depends on how the videos were batched,
  in the reference as here: `gap()` equals `calculate_gap` (one batch), `EvaluationMetrics`
  equals the reference's EvaluationMetrics fed the same batches. A class's own list is
  pushed in video order whatever the batching, so mAP does not depend on it.
- hit@1 is the first highest-scored class (numpy's argmax); a video without labels is a miss.
- PERR of a video with n labels is the share of labels among its top n
  (`argpartition(scores, -n)`), counting only labels scored above 0. A video without labels
  scores 0 and still counts: PERR and hit@1 are means over ALL videos.
- mAP is the mean per-class AP over the classes with at least one positive; a class's AP
  ranks the videos that have it in their top k, over all videos labelled with it.

hit@5 has no reference; it uses the same ranking as hit@1 (ties: lower class index first).
Predictions are [N, C] float scores; labels are [N, C] multi-hot, positives > 0.
"""

import heapq
import random
from dataclasses import dataclass

import numpy as np

DEFAULT_TOP_K = 20
RESULT_KEYS = ("gap", "hit_at_1", "hit_at_5", "perr", "map", "num_videos")
_SHUFFLE_SEED = 0  # the reference's random.seed(0) before ranking a list


@dataclass(frozen=True)
class _Pairs:
    """Each video's top-k (score, is_positive, class), flat, in the reference's push order."""

    scores: np.ndarray  # [M] float
    hits: np.ndarray  # [M] bool
    classes: np.ndarray  # [M] int


def gap(predictions: np.ndarray, labels: np.ndarray, top_k: int = DEFAULT_TOP_K) -> float:
    """Global average precision, YouTube-8M's headline metric (its `calculate_gap`).

    Each video contributes only its top_k (score, is_positive) pairs; all pairs of all videos
    are pooled and ranked by score, and AP is taken over that one list with the TOTAL number
    of positive labels as denominator. Positives that fall outside a video's top_k therefore
    count as never retrieved, which caps GAP below 1 for videos with more than top_k labels.

    Returns:
      GAP in [0, 1]; 0.0 when there are no positive labels at all.
    """
    scores, hits = _as_arrays(predictions, labels)
    pairs = _top_k_pairs(scores, hits, top_k)
    return _average_precision(pairs.scores, pairs.hits, int(hits.sum()))


def hit_at_k(predictions: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of videos whose k best-scored classes include at least one true label.

    Videos without labels count as misses, as in YouTube-8M's hit@1 (k=1).
    """
    scores, hits = _as_arrays(predictions, labels)
    return float(_hits_at_k(scores, hits, k).mean()) if len(scores) else 0.0


def perr(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Precision at equal recall rate: for a video with n labels, the precision of its top n.

    Averaged over all videos, as YouTube-8M: a video without labels scores 0, so a split
    holding unlabelled videos lowers PERR. 0.0 for no videos.
    """
    scores, hits = _as_arrays(predictions, labels)
    return _perr_sum(scores, hits) / len(scores) if len(scores) else 0.0


def mean_average_precision(
    predictions: np.ndarray, labels: np.ndarray, top_k: int = DEFAULT_TOP_K
) -> float:
    """YouTube-8M's mAP: per-class AP over videos, from each video's top_k predictions only.

    A class's ranked list holds the videos that have it among their top_k; its denominator is
    the number of videos labelled with it (retrieved or not). The mean runs over classes with
    at least one positive, as YouTube-8M's MeanAveragePrecisionCalculator by default
    (Model Garden's yt8m copy divides by all classes instead). 0.0 when no class has one.
    """
    scores, hits = _as_arrays(predictions, labels)
    return _mean_class_ap(_top_k_pairs(scores, hits, top_k), hits.sum(axis=0))


class EvaluationMetrics:
    """Streaming GAP, hit@1, hit@5, PERR and mAP over batches of predictions.

    Per-video metrics are summed as batches arrive; GAP and mAP need a global ranking, so only
    each video's top_k (score, is_positive, class) triples are kept: memory is O(N * top_k)
    rather than O(N * C). `result()` equals YouTube-8M's EvaluationMetrics fed the same
    batches, and the batch functions on the concatenated data except GAP with tied scores
    (see the module docstring).
    """

    def __init__(self, num_classes: int, top_k: int = DEFAULT_TOP_K) -> None:
        if num_classes < 1 or top_k < 1:
            raise ValueError(f"num_classes={num_classes} and top_k={top_k} must be >= 1")
        self.num_classes = num_classes
        self.top_k = top_k
        self.clear()

    def clear(self) -> None:
        """Forgets every accumulated batch."""
        self._batches: list[_Pairs] = []
        self._positives_per_class = np.zeros(self.num_classes, dtype=np.int64)
        self._hits_at_1 = 0
        self._hits_at_5 = 0
        self._perr_sum = 0.0
        self._num_videos = 0

    def accumulate(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        """Adds one batch: predictions [B, C] scores, labels [B, C] (positives > 0)."""
        scores, hits = _as_arrays(predictions, labels)
        if scores.shape[1] != self.num_classes:
            raise ValueError(
                f"predictions have {scores.shape[1]} classes, expected {self.num_classes}"
            )
        if not len(scores):
            return
        self._batches.append(_top_k_pairs(scores, hits, self.top_k))
        self._positives_per_class += hits.sum(axis=0)
        self._hits_at_1 += int(_hits_at_k(scores, hits, 1).sum())
        self._hits_at_5 += int(_hits_at_k(scores, hits, 5).sum())
        self._perr_sum += _perr_sum(scores, hits)
        self._num_videos += len(scores)

    def result(self) -> dict[str, float]:
        """Metrics over everything accumulated since construction or `clear()`."""
        pairs = _Pairs(
            scores=np.concatenate([b.scores for b in self._batches] or [np.zeros(0)]),
            hits=np.concatenate([b.hits for b in self._batches] or [np.zeros(0, bool)]),
            classes=np.concatenate([b.classes for b in self._batches] or [np.zeros(0, int)]),
        )
        videos = self._num_videos
        return {
            "gap": _average_precision(
                pairs.scores, pairs.hits, int(self._positives_per_class.sum())
            ),
            "hit_at_1": self._hits_at_1 / videos if videos else 0.0,
            "hit_at_5": self._hits_at_5 / videos if videos else 0.0,
            "perr": self._perr_sum / videos if videos else 0.0,
            "map": _mean_class_ap(pairs, self._positives_per_class),
            "num_videos": videos,
        }


def _as_arrays(predictions: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated [N, C] float scores (dtype kept: ties are decided on the values as given)
    and [N, C] bool positives."""
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


def _top_k_pairs(scores: np.ndarray, hits: np.ndarray, top_k: int) -> _Pairs:
    """The reference's top_k_by_class, flattened: class by class, videos in order."""
    if top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1")
    k = min(top_k, scores.shape[1])
    top_classes = np.argpartition(scores, -k, axis=1)[:, -k:]  # [N, k], the reference's pick
    flat_classes = top_classes.ravel()
    push_order = np.argsort(flat_classes, kind="stable")  # class-major, video order kept
    return _Pairs(
        scores=np.take_along_axis(scores, top_classes, axis=1).ravel()[push_order],
        hits=np.take_along_axis(hits, top_classes, axis=1).ravel()[push_order],
        classes=flat_classes[push_order],
    )


def _hits_at_k(scores: np.ndarray, hits: np.ndarray, k: int) -> np.ndarray:
    """[N] bool: a true label among the video's k best classes (ties: lower index first).

    Without sorting each row: the classes above the k-th best score are in, and the slots
    left go to the classes scored exactly that, lowest index first (numpy's argmax for k=1).
    """
    k = min(k, scores.shape[1])
    kth_best = np.partition(scores, -k, axis=1)[:, -k, np.newaxis]  # [N, 1]
    above = scores > kth_best
    at = scores == kth_best
    slots = k - above.sum(axis=1, keepdims=True)
    chosen = above | (at & (np.cumsum(at, axis=1) <= slots))
    return (hits & chosen).any(axis=1)


def _perr_sum(scores: np.ndarray, hits: np.ndarray) -> float:
    """Sum of per-video PERR over all videos (0 for a video without labels).

    A video's top n is the classes scored at least its n-th best score, unless that score
    ties with the (n+1)-th; only then is the reference's argpartition asked which of the
    tied classes it takes. Only the best max(n) + 1 scores of each video are sorted.
    """
    num_labels = hits.sum(axis=1)  # [N]
    labelled = np.flatnonzero(num_labels)
    if not len(labelled):
        return 0.0
    num_classes = scores.shape[1]
    counted = hits[labelled] & (scores[labelled] > 0)  # the reference skips labels scored <= 0
    n = num_labels[labelled]  # [L]
    depth = min(int(n.max()) + 1, num_classes)
    best = np.partition(scores[labelled], num_classes - depth, axis=1)[:, num_classes - depth :]
    best = -np.sort(-best, axis=1)  # [L, depth], best first
    rows = np.arange(len(labelled))
    nth_best = best[rows, n - 1]
    tied = (n < num_classes) & (best[rows, np.minimum(n, depth - 1)] == nth_best)
    found = (counted & (scores[labelled] >= nth_best[:, np.newaxis])).sum(axis=1)
    total = float((found / n)[~tied].sum())
    for row in np.flatnonzero(tied):
        top = np.argpartition(scores[labelled[row]], -n[row])[-n[row] :]
        total += counted[row, top].sum() / n[row]
    return total


def _average_precision(scores: np.ndarray, hits: np.ndarray, num_positives: int) -> float:
    """The reference's non-interpolated AP of one list pushed in the given order, over
    `num_positives` positives (some may be absent from the list)."""
    if num_positives == 0 or len(scores) == 0:
        return 0.0
    ranked_hits = hits[_reference_ranking(scores, hits)]
    found = np.cumsum(ranked_hits)
    ranks = np.flatnonzero(ranked_hits) + 1
    return float((found[ranked_hits] / ranks).sum() / num_positives)


def _reference_ranking(scores: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """Indices best first, ties ordered as the reference's heap + seeded shuffle + sort."""
    order = np.argsort(-scores, kind="stable")
    ranked = scores[order]
    if not (ranked[1:] == ranked[:-1]).any():
        return order
    heap: list[tuple[float, bool, int]] = []
    for index, pair in enumerate(zip(scores.tolist(), hits.tolist(), strict=True)):
        # The index never decides a comparison the reference would decide otherwise: the
        # item pushed last has the largest one, and the heap only compares it upwards.
        heapq.heappush(heap, (*pair, index))
    heap_array = np.array([index for _, _, index in heap])
    count = len(heap_array)
    shuffled = heap_array[random.Random(_SHUFFLE_SEED).sample(range(count), count)]
    return shuffled[np.argsort(-scores[shuffled], kind="stable")]


def _mean_class_ap(pairs: _Pairs, positives_per_class: np.ndarray) -> float:
    """Mean per-class AP over classes with positives; each class's pairs in push order."""
    labelled_classes = np.flatnonzero(positives_per_class)
    if len(labelled_classes) == 0:
        return 0.0
    by_class = np.argsort(pairs.classes, kind="stable")
    sorted_classes = pairs.classes[by_class]
    starts = np.searchsorted(sorted_classes, labelled_classes, side="left")
    ends = np.searchsorted(sorted_classes, labelled_classes, side="right")
    aps = [
        _average_precision(
            pairs.scores[by_class[start:end]],
            pairs.hits[by_class[start:end]],
            int(positives_per_class[c]),
        )
        for c, start, end in zip(labelled_classes, starts, ends, strict=True)
    ]
    return float(np.mean(aps))
