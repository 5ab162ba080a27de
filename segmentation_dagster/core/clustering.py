"""Clustering embeddings into segments, and choosing the number of segments K."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.signal import argrelextrema
from scipy.stats import gaussian_kde
from sklearn.cluster import KMeans, MeanShift, SpectralClustering
from threadpoolctl import threadpool_limits

METHODS = ("kmeans", "meanshift", "spectral")


def as_2d(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=float)
    x = x[:, None] if x.ndim == 1 else x
    if x.ndim != 2 or len(x) == 0:
        raise ValueError("embeddings must be a non-empty (m,) or (m, d) array")
    if not np.isfinite(x).all():
        raise ValueError(f"{int((~np.isfinite(x)).any(axis=1).sum())} embeddings are NaN or inf")
    return x


def kde_modes(
    embeddings: np.ndarray, grid_size: int = 512, max_points: int = 20000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The modes of a Gaussian KDE of a 1-D embedding (the paper's Figure 1).

    Returns (modes, grid, density). The number of modes is a candidate K. Large inputs
    are subsampled to ``max_points`` for speed; the density shape barely moves.
    """
    x = as_2d(embeddings)[:, 0]
    if np.ptp(x) == 0:
        return np.array([x[0]]), np.array([x[0]]), np.array([1.0])
    if len(x) > max_points:
        x = np.random.default_rng(seed).choice(x, max_points, replace=False)
    kde = gaussian_kde(x)
    pad = 0.1 * np.ptp(x)
    grid = np.linspace(x.min() - pad, x.max() + pad, grid_size)
    density = kde(grid)
    peaks = argrelextrema(density, np.greater)[0]
    # ignore ripples in the far tails: a mode must carry at least 1 % of the peak density
    peaks = peaks[density[peaks] >= 0.01 * density.max()]
    return grid[peaks], grid, density


def candidate_ks(embeddings: np.ndarray, around: int = 1, k_max: int | None = None) -> list[int]:
    """Candidate Ks: the number of KDE modes, and its neighbours within ``around``."""
    n_modes = len(kde_modes(embeddings)[0])
    ks = range(max(2, n_modes - around), n_modes + around + 1)
    return [k for k in ks if k_max is None or k <= k_max]


class SegmentClusterer:
    """Cluster embeddings into ``n_segments`` groups, numbered in a stable order.

    Segments are renumbered so that segment 0 has the smallest centre along the first
    embedding coordinate; a rerun with the same data and seed gives the same numbers.
    ``method`` is 'kmeans' (default), 'meanshift' (1-D; finds K itself) or 'spectral'.
    """

    def __init__(self, n_segments: int | None = 3, method: str = "kmeans", random_state: int = 0):
        self.n_segments = n_segments
        self.method = method
        self.random_state = random_state

    def fit(self, embeddings: np.ndarray) -> SegmentClusterer:
        x = as_2d(embeddings)
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.method != "meanshift":
            check_n_segments(self.n_segments, x)
        with threadpool_limits(1):
            labels = self._cluster(x)
        centres = np.array([x[labels == k].mean(axis=0) for k in np.unique(labels)])
        order = np.argsort(centres[:, 0], kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self.labels_ = rank[np.searchsorted(np.unique(labels), labels)]
        self.cluster_centers_ = centres[order]
        self.n_segments_ = len(order)
        return self

    def _cluster(self, x: np.ndarray) -> np.ndarray:
        if self.method == "kmeans":
            model = KMeans(self.n_segments, n_init=10, random_state=self.random_state)
            return model.fit_predict(x)
        if self.method == "meanshift":
            return MeanShift(bin_seeding=True).fit_predict(x)
        model = SpectralClustering(
            self.n_segments, affinity="nearest_neighbors", random_state=self.random_state
        )
        return model.fit_predict(x)

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """The nearest centre for new embeddings (no refit)."""
        if not hasattr(self, "cluster_centers_"):
            raise ValueError("SegmentClusterer is not fitted")
        x = as_2d(embeddings)
        distances = ((x[:, None, :] - self.cluster_centers_[None]) ** 2).sum(axis=2)
        return distances.argmin(axis=1)


def check_n_segments(n_segments: int | None, x: np.ndarray) -> None:
    distinct = len(np.unique(x, axis=0))
    if n_segments is None or n_segments < 1:
        raise ValueError(f"n_segments must be a positive integer, got {n_segments}")
    if n_segments > distinct:
        raise ValueError(
            f"K={n_segments} is larger than the {distinct} distinct customer embeddings"
        )


def renumber_by(labels: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Renumber segments so that their mean ``key`` increases with the segment number."""
    segments, inverse = np.unique(labels, return_inverse=True)
    means = np.bincount(inverse, weights=key) / np.bincount(inverse)
    rank = np.empty(len(segments), dtype=int)
    rank[np.argsort(means, kind="stable")] = np.arange(len(segments))
    return rank[inverse]


def select_k(
    ks: Sequence[int], score: Callable[[int], float], higher_is_better: bool = True
) -> tuple[int, dict[int, float]]:
    """Score every K with ``score(k)`` (e.g. validation accuracy) and return the best.

    Ties go to the smaller K.
    """
    if not ks:
        raise ValueError("no candidate K to choose from")
    scores = {int(k): float(score(int(k))) for k in sorted(set(ks))}
    sign = 1 if higher_is_better else -1
    best = max(scores, key=lambda k: (sign * scores[k], -k))
    return best, scores
