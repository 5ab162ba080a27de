"""Data-driven segments from consumer embeddings (the paper's Section 3.1 and 4.1).

- k-means on L2-normalised embeddings, so Euclidean k-means follows cosine similarity;
  a customer's distance to its centre is the cosine distance 1 - cos(x, centre).
  The embeddings are centred first (their mean removed): mean-pooled transformer outputs
  share a large common direction (positions, the final norm's bias), which squeezes every
  cosine towards 1 and lets k-means split on small residuals (measured on the synthetic
  set: cosine distances to the centres of 0.01-0.02 without centring);
- K over a range: the silhouette (cosine) of each K, and the distribution of distances to
  the centres (Figure 2) against the *similarity length scale*, the embedding distance at
  which the attribute similarity of eq. (2) decays by 1/e. Rule: among the Ks whose
  segments are on average tighter than that length scale, the best silhouette (all Ks
  when none is, or when no length scale could be fitted);
- representative items: the most popular items among a segment's customers within a
  radius of its centre, at most a given share per category;
- eq. (2): S(u1, u2) = sum_a w_a [1 - JSD(P(a, u1) || P(a, u2))] with equal weights (no
  expert annotation to fit them to), JSD in bits so S is in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import curve_fit
from sklearn.base import BaseEstimator
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score, silhouette_score
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits

from .data import PAD, SequenceData, Vocabulary


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit length (float64; an all-zero row stays zero)."""
    x = np.asarray(x, dtype=np.float64)
    # checked here, not left to scikit-learn, so the message says what holds the NaN
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    return normalize(x, norm="l2", axis=1)


@dataclass
class KResult:
    k: int
    silhouette: float
    labels: np.ndarray
    centres: np.ndarray  # unit vectors
    distances: np.ndarray  # cosine distance of each customer to its centre
    sizes: np.ndarray
    segment_mean_distance: np.ndarray
    segment_std_distance: np.ndarray

    @property
    def mean_distance(self) -> float:
        """Average over segments of the mean distance to the centre (Figure 2's bars)."""
        return float(self.segment_mean_distance.mean())


def cosine_kmeans(x: np.ndarray, k: int, seed: int = 0, n_init: int = 4) -> KResult:
    """k-means on unit vectors; centres re-normalised, segments numbered by size (largest
    first) so numbering is stable across seeds when the clustering is."""
    unit = l2_normalise(x)
    with threadpool_limits(2):
        fitted = KMeans(k, n_init=n_init, random_state=seed).fit(unit)
    sizes = np.bincount(fitted.labels_, minlength=k)
    order = np.argsort(-sizes, kind="stable")
    relabel = np.empty(k, dtype=np.int64)
    relabel[order] = np.arange(k)
    labels = relabel[fitted.labels_]
    centres = l2_normalise(fitted.cluster_centers_[order])
    distances = 1.0 - np.einsum("ij,ij->i", unit, centres[labels])
    counts = np.bincount(labels, minlength=k)
    mean = np.bincount(labels, distances, k) / np.maximum(counts, 1)
    var = np.bincount(labels, distances**2, k) / np.maximum(counts, 1) - mean**2
    return KResult(k, float("nan"), labels, centres, distances, counts, mean,
                   np.sqrt(np.maximum(var, 0.0)))


def cosine_silhouette(x: np.ndarray, labels: np.ndarray, sample: int = 4000,
                      seed: int = 0) -> float:
    """Silhouette with the cosine metric on a seeded sample (it is quadratic)."""
    if len(np.unique(labels)) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(x))[:sample]
    if len(np.unique(labels[rows])) < 2:
        return float("nan")
    with threadpool_limits(2):
        return float(silhouette_score(x[rows], labels[rows], metric="cosine"))


def similarity_length_scale(distance: np.ndarray, similarity: np.ndarray,
                            n_bins: int = 20, min_pairs: int = 10) -> float:
    """The embedding distance at which the attribute similarity decays to 1/e of its value
    at distance 0: fit S(d) = a exp(-d / l) to S averaged in regular bins of d (the
    paper's Figure 2 red line). NaN when there are too few pairs or the fit fails."""
    distance, similarity = np.asarray(distance, float), np.asarray(similarity, float)
    keep = np.isfinite(distance) & np.isfinite(similarity)
    distance, similarity = distance[keep], similarity[keep]
    if len(distance) < n_bins * min_pairs:
        return float("nan")
    low, high = np.quantile(distance, [0.005, 0.995])
    if not high > low:
        return float("nan")
    edges = np.linspace(low, high, n_bins + 1)
    which = np.clip(np.searchsorted(edges, distance, side="right") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    sums = np.bincount(which, similarity, n_bins)
    ok = counts >= min_pairs
    if ok.sum() < 4:
        return float("nan")
    x, y = ((edges[:-1] + edges[1:]) / 2)[ok], sums[ok] / counts[ok]
    if y.max() <= 0:
        return float("nan")
    try:
        (_, scale), _ = curve_fit(
            lambda d, a, scale: a * np.exp(-d / scale), x, y,
            p0=(y.max(), high - low), bounds=([0.0, 1e-6], [np.inf, np.inf]), maxfev=5000,
        )
    except (RuntimeError, ValueError):
        return float("nan")
    return float(scale) if np.isfinite(scale) else float("nan")


class BehaviourSegmenter(BaseEstimator):
    """k-means (cosine) for every K in ``k_values``; K by the rule in the module docstring.

    ``fit(embeddings, length_scale=None)`` sets ``results_`` (one :class:`KResult` per K),
    ``k_``, ``labels_``, ``centres_``, ``distances_``.

    A scikit-learn estimator (``get_params``, ``clone``). Not a ``ClusterMixin``: its
    ``predict`` returns the distances to the centres besides the segments.
    """

    def __init__(
        self,
        k_values: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8),
        seed: int = 0,
        n_init: int = 4,
        silhouette_sample: int = 4000,
    ) -> None:
        self.k_values = k_values
        self.seed = seed
        self.n_init = n_init
        self.silhouette_sample = silhouette_sample

    def fit(self, embeddings: np.ndarray, length_scale: float | None = None
            ) -> BehaviourSegmenter:
        self.mean_ = np.asarray(embeddings, dtype=np.float64).mean(axis=0)
        x = l2_normalise(embeddings - self.mean_)
        ks = [k for k in sorted(set(self.k_values)) if 2 <= k < len(x)]
        if not ks:
            raise ValueError(
                f"no K in {list(self.k_values)} fits {len(x)} customers (need 2 <= K < n)"
            )
        self.results_ = {}
        for k in ks:
            result = cosine_kmeans(x, k, self.seed, self.n_init)
            result.silhouette = cosine_silhouette(x, result.labels, self.silhouette_sample,
                                                  self.seed)
            self.results_[k] = result
        self.length_scale_ = length_scale
        self.k_ = select_k(self.results_, length_scale)
        chosen = self.results_[self.k_]
        self.labels_, self.centres_, self.distances_ = (
            chosen.labels, chosen.centres, chosen.distances
        )
        return self

    def predict(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest centre (cosine) and the distance to it, for new embeddings."""
        check_is_fitted(
            self, "centres_", msg="%(name)s is not fitted; call fit(embeddings) first"
        )
        unit = l2_normalise(embeddings - self.mean_)
        similarity = unit @ self.centres_.T
        labels = similarity.argmax(axis=1)
        return labels, 1.0 - similarity[np.arange(len(unit)), labels]


def select_k(results: dict[int, KResult], length_scale: float | None) -> int:
    silhouettes = {k: r.silhouette if np.isfinite(r.silhouette) else -np.inf
                   for k, r in results.items()}
    candidates = list(results)
    if length_scale is not None and np.isfinite(length_scale):
        tight = [k for k in candidates if results[k].mean_distance <= length_scale]
        candidates = tight or candidates
    return max(candidates, key=lambda k: (silhouettes[k], -k))


# -------------------------------------------------------------------- eq. (2)


def attribute_distributions(data: SequenceData, vocabulary: Vocabulary,
                            attributes: list[str] | None = None) -> dict[str, np.ndarray]:
    """Per attribute a, the [n, values] distribution P(a, u) of attribute values over each
    customer's events (a flag attribute shares an event's weight among its flags; a row
    with no value is all zero). Default attributes: the flag groups (genres) if any, else
    the categorical attributes."""
    if attributes is None:
        attributes = list(vocabulary.flags) or list(vocabulary.categorical)
    counts = data.item_counts(vocabulary.n_items)
    out = {}
    for name in attributes:
        if name in vocabulary.flags:
            table = vocabulary.flags[name]
            table = table / np.maximum(table.sum(axis=1, keepdims=True), 1.0)
        elif name in vocabulary.categorical:
            codes = vocabulary.categorical[name]
            levels = len(vocabulary.categorical_levels[name])
            table = sp.csr_matrix(
                (np.ones(int((codes > PAD).sum())), (np.flatnonzero(codes > PAD),
                                                     codes[codes > PAD] - 1)),
                shape=(len(codes), levels),
            )
        else:
            raise ValueError(f"no item attribute {name!r}; known: "
                             f"{list(vocabulary.flags) + list(vocabulary.categorical)}")
        product = counts @ table
        mass = product.toarray() if sp.issparse(product) else np.asarray(product)
        totals = mass.sum(axis=1, keepdims=True)
        out[name] = np.divide(mass, totals, out=np.zeros_like(mass, dtype=float),
                              where=totals > 0)
    return out


def jensen_shannon(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon divergence in bits (in [0, 1])."""
    m = (p + q) / 2

    def kl(a: np.ndarray) -> np.ndarray:
        ratio = np.divide(a, m, out=np.ones_like(a), where=a > 0)
        return (a * np.log2(ratio)).sum(axis=1)

    return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)


def attribute_similarity(distributions: dict[str, np.ndarray], first: np.ndarray,
                         second: np.ndarray) -> np.ndarray:
    """Eq. (2) for the pairs (first[i], second[i]), equal weights over the attributes
    both customers have (NaN when they share none)."""
    total = np.zeros(len(first))
    weight = np.zeros(len(first))
    for table in distributions.values():
        p, q = table[first], table[second]
        both = (p.sum(axis=1) > 0) & (q.sum(axis=1) > 0)
        total += np.where(both, 1.0 - jensen_shannon(p, q), 0.0)
        weight += both
    return np.divide(total, weight, out=np.full(len(first), np.nan), where=weight > 0)


def sample_pairs(n: int, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random pairs of distinct rows."""
    if n < 2:
        raise ValueError("pairs need at least two customers")
    rng = np.random.default_rng(seed)
    first = rng.integers(n, size=n_pairs)
    second = (first + rng.integers(1, n, size=n_pairs)) % n
    return first, second


def cosine_of_pairs(x: np.ndarray, first: np.ndarray, second: np.ndarray,
                    centre: bool = True) -> np.ndarray:
    """Cosine similarity of pairs of rows, after removing the mean row (as for k-means)."""
    x = np.asarray(x, dtype=np.float64)
    unit = l2_normalise(x - x.mean(axis=0) if centre else x)
    return np.einsum("ij,ij->i", unit[first], unit[second])


def same_segment_auc(similarity: np.ndarray, labels: np.ndarray, first: np.ndarray,
                     second: np.ndarray) -> float:
    """ROC-AUC of the attribute similarity for telling same-segment pairs apart (the
    paper's Table 2 consistency metric); NaN when one class is missing."""
    same = labels[first] == labels[second]
    keep = np.isfinite(similarity)
    if len(np.unique(same[keep])) < 2:
        return float("nan")
    return float(roc_auc_score(same[keep], similarity[keep]))


# -------------------------------------------------------------------- representative items


def representative_items(
    counts: sp.csr_matrix,
    labels: np.ndarray,
    distances: np.ndarray,
    item_category: np.ndarray,
    top_n: int = 20,
    radius_quantile: float = 0.5,
    max_category_share: float = 0.3,
) -> pd.DataFrame:
    """The most popular items of each segment among its customers within a radius of the
    centre (the ``radius_quantile`` of that segment's distances), counting customers not
    events, at most ceil(top_n * max_category_share) items per category.

    ``counts``: customers x item codes (column 0 unused); returns segment, rank, item
    (code), category (code), customers (inner customers who had it), share (of them).
    """
    if not 0 < radius_quantile <= 1:
        raise ValueError(f"radius_quantile must be in (0, 1], got {radius_quantile}")
    labels = np.asarray(labels)
    k = int(labels.max()) + 1
    radius = np.array([
        np.quantile(distances[labels == s], radius_quantile) if (labels == s).any() else -1
        for s in range(k)  # a loop over segments, not customers
    ])
    inner = distances <= radius[labels]
    binary = (counts[inner] > 0).astype(np.float32)
    membership = sp.csr_matrix(
        (np.ones(int(inner.sum())), (labels[inner], np.arange(int(inner.sum())))),
        shape=(k, int(inner.sum())),
    )
    popularity = (membership @ binary).tocoo()
    table = pd.DataFrame({"segment": popularity.row, "item": popularity.col,
                          "customers": popularity.data.astype(np.int64)})
    table = table[table["item"] > PAD]
    table["category"] = item_category[table["item"].to_numpy()]
    table = table.sort_values(["segment", "customers", "item"], ascending=[True, False, True])
    cap = max(1, math.ceil(top_n * max_category_share))
    table = table[table.groupby(["segment", "category"]).cumcount() < cap]
    table = table.groupby("segment", sort=True).head(top_n).copy()
    table["rank"] = table.groupby("segment").cumcount() + 1
    inner_sizes = np.bincount(labels[inner], minlength=k)
    table["share"] = table["customers"] / inner_sizes[table["segment"].to_numpy()]
    return table[["segment", "rank", "item", "category", "customers", "share"]].reset_index(
        drop=True
    )


def bag_of_categories(data: SequenceData, vocabulary: Vocabulary) -> np.ndarray:
    """[n, categories] share of each customer's events per category (the baseline)."""
    category = vocabulary.category_codes()
    n_levels = int(category.max()) + 1
    rows, cols = np.nonzero(data.items)
    values = category[data.items[rows, cols]]
    matrix = np.zeros((len(data), n_levels))
    np.add.at(matrix, (rows, values), 1.0)
    matrix = matrix[:, 1:] if n_levels > 1 else matrix
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)


def backfill(
    data: SequenceData,
    segments: np.ndarray,
    representatives: pd.DataFrame,
    share: float = 0.2,
    event_code: int = 1,
    max_len: int | None = None,
) -> SequenceData:
    """The paper's Approach 2: ceil(share * n) of the segment's representative items
    (best first, skipping items the customer already has) put in front of each
    customer's history, as the oldest events. When the result is longer than
    ``max_len``, the customer's oldest own events make room."""
    if not 0 <= share < 1:
        raise ValueError(f"share must be in [0, 1), got {share}")
    lengths = data.lengths
    wanted = np.ceil(share * lengths).astype(np.int64)
    k = int(segments.max(initial=0)) + 1
    top = int(representatives["rank"].max()) if len(representatives) else 0
    table = np.zeros((k, max(top, 1)), dtype=np.int64)
    if len(representatives):
        table[representatives["segment"].to_numpy(),
              representatives["rank"].to_numpy() - 1] = representatives["item"].to_numpy()
    candidates = table[segments]  # [n, top]
    seen = np.zeros(candidates.shape, dtype=bool)
    for start in range(0, len(data), 2048):  # chunks bound the [chunk, top, L] comparison
        block = slice(start, start + 2048)
        seen[block] = (candidates[block, :, None] == data.items[block, None, :]).any(axis=2)
    usable = (candidates > PAD) & ~seen
    order = np.cumsum(usable, axis=1)
    take = usable & (order <= wanted[:, None])
    added = take.sum(axis=1)
    width = max_len or int((lengths + added).max(initial=1))
    own = np.minimum(lengths, width - np.minimum(added, width))
    added = np.minimum(added, width - own)
    new_lengths = added + own
    items = np.zeros((len(data), width), dtype=np.int32)
    events = np.zeros_like(items)
    # representatives first: their rank among the taken ones is their position
    rows, cols = np.nonzero(take)
    position = np.cumsum(take, axis=1)[rows, cols] - 1
    keep = position < added[rows]
    items[rows[keep], position[keep]] = candidates[rows[keep], cols[keep]]
    events[rows[keep], position[keep]] = event_code
    # then the customer's last ``own`` events
    rows, cols = np.nonzero(data.items)
    first_kept = lengths - own
    keep = cols >= first_kept[rows]
    target = added[rows] + cols - first_kept[rows]
    items[rows[keep], target[keep]] = data.items[rows[keep], cols[keep]]
    events[rows[keep], target[keep]] = data.events[rows[keep], cols[keep]]
    return SequenceData(data.customer_ids, items, events, new_lengths, data.features)
