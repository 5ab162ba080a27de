"""Next-item ranking metrics (full ranking: every item is a candidate)."""

from __future__ import annotations

import numpy as np

from .data import PAD, SequenceData


def hit_rate(ranks: np.ndarray, k: int = 10) -> float:
    """Share of targets ranked in the top k (rank 0 = first)."""
    ranks = np.asarray(ranks)
    if not len(ranks):
        return float("nan")
    return float((ranks < k).mean())


def ndcg(ranks: np.ndarray, k: int = 10) -> float:
    """NDCG@k with one relevant item: 1 / log2(rank + 2) inside the top k, else 0."""
    ranks = np.asarray(ranks, dtype=float)
    if not len(ranks):
        return float("nan")
    return float(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0).mean())


def rank_targets(
    scores: np.ndarray, targets: np.ndarray, seen: np.ndarray | None = None
) -> np.ndarray:
    """Rank (0 = best) of each row's target code among all items.

    ``scores`` [n, n_items] score item codes 1..n_items; ``targets`` are item codes;
    ``seen`` [n, L] item codes removed from the ranking (0 = padding). A target that is
    itself seen can then never be hit, which is why callers only exclude seen items
    where customers never repeat an item.
    """
    scores = np.array(scores, dtype=np.float64)
    if seen is not None:
        rows = np.repeat(np.arange(len(scores)), seen.shape[1])
        cols = seen.ravel().astype(np.int64) - 1
        keep = cols >= 0
        scores[rows[keep], cols[keep]] = -np.inf
    target_index = np.asarray(targets, dtype=np.int64) - 1
    target_scores = scores[np.arange(len(scores)), target_index][:, None]
    # ties go to the smaller item code, the same rule for every scorer (popularity has many)
    earlier = np.arange(scores.shape[1])[None, :] < target_index[:, None]
    return (scores > target_scores).sum(axis=1) + ((scores == target_scores) & earlier).sum(axis=1)


def top_k(scores: np.ndarray, k: int, seen: np.ndarray | None = None) -> np.ndarray:
    """[n, k] item codes of the k best scores, seen items removed."""
    scores = np.array(scores, dtype=np.float64)
    if seen is not None:
        rows = np.repeat(np.arange(len(scores)), seen.shape[1])
        cols = seen.ravel().astype(np.int64) - 1
        keep = cols >= 0
        scores[rows[keep], cols[keep]] = -np.inf
    k = min(k, scores.shape[1])
    # a full sort, so ties go to the smaller code as in rank_targets (argpartition would
    # pick among ties at the boundary arbitrarily)
    codes = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.lexsort((codes, -scores), axis=1)[:, :k] + 1


def category_diversity(recommended: np.ndarray, item_category: np.ndarray) -> np.ndarray:
    """Per row: distinct categories among the recommended item codes, divided by the most
    a list of that length could have (min(k, number of categories))."""
    categories = item_category[recommended]
    n_categories = max(int(len(np.unique(item_category[item_category != PAD]))), 1)
    ordered = np.sort(categories, axis=1)
    distinct = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(axis=1)
    return distinct / min(recommended.shape[1], n_categories)


class PopularityRanker:
    """Items ranked by how often they occur in the training sequences (all events)."""

    def fit(self, train: SequenceData, n_items: int) -> PopularityRanker:
        counts = np.bincount(train.items.ravel(), minlength=n_items + 1).astype(float)
        self.counts_ = counts[1:]
        return self

    def scores(self, n_rows: int) -> np.ndarray:
        return np.broadcast_to(self.counts_, (n_rows, len(self.counts_)))
