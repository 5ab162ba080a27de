"""The per-category VECTOR embedding (Algorithm 4) at scale: the numpy side of the engine.

In memory, :class:`~segmentation_dagster.core.segmenters.ModelEmbeddingSegmenter` completes
the whole (customers x categories) matrix V by ALS. At scale the engine keeps V in LONG
format (dbt_like_sql/category_embeddings.sql: one row per observed (customer, category))
and only small inputs come here:

1. :class:`SampledLowRankEmbedding` fits the category factors Y (B x r) and the principal
   axes T (r x r) on a SAMPLE of customers pivoted to a small dense matrix, by the
   in-memory path's ALS (complete_low_rank, principal_axes);
2. the engine solves every customer's ridge regression on the FIXED Y
   (dbt_like_sql/vector_coordinates.sql, closed form for r <= 3); :func:`ridge_coordinates`
   is the same computation in numpy (the tests' reference, and what the in-memory path
   uses for new customers);
3. k-means runs on the coordinates (scikit-learn or Spark MLlib), the engine assigns each
   customer to the nearest centre, and :class:`ClusterSegmentMap` folds small clusters
   and numbers the segments by like-rate from per-cluster sums only, as
   :class:`~segmentation_dagster.core.selection.SegmentedModelEmbedding` does per customer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .clustering import renumber_by
from .embedding import _ridge_rows, complete_low_rank, principal_axes

# The engine's SQL solves the r x r ridge system in closed form with three coordinate
# columns (vector_coordinates.sql); a smaller rank is padded with zero factors, which
# the ridge term decouples exactly (those coordinates solve to 0).
SQL_RANK = 3
# the ridge of complete_low_rank / ModelEmbeddingSegmenter (both use 0.1)
RIDGE = 0.1


def pivot_scores(customers, categories, values, customer_order=None,
                 category_order=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The long (customer, category, value) rows as a dense (customers x categories)
    matrix, NaN where a customer has no value; with the customers and categories in the
    order of the rows and columns (sorted unless given). Meant for a SAMPLE: the matrix
    is customers x B with B (categories) small, never customers x items."""
    customers = np.asarray(customers)
    categories = np.asarray(categories)
    values = np.asarray(values, dtype=float)
    if not len(customers) == len(categories) == len(values):
        raise ValueError("customers, categories and values must be of one length; got "
                         f"{len(customers)}, {len(categories)}, {len(values)}")
    rows_index = pd.Index(np.unique(customers) if customer_order is None else customer_order)
    cols_index = pd.Index(np.unique(categories) if category_order is None
                          else category_order)
    rows = rows_index.get_indexer(customers)
    cols = cols_index.get_indexer(categories)
    if (rows < 0).any() or (cols < 0).any():
        raise ValueError("every row's customer and category must be in customer_order "
                         "and category_order")
    if len(pd.Index(rows * len(cols_index) + cols).unique()) != len(rows):
        raise ValueError("a (customer, category) pair appears more than once")
    matrix = np.full((len(rows_index), len(cols_index)), np.nan)
    matrix[rows, cols] = values
    return matrix, rows_index.to_numpy(), cols_index.to_numpy()


def ridge_coordinates(scores: np.ndarray, factors: np.ndarray, axes: np.ndarray | None = None,
                      regularisation: float = RIDGE) -> np.ndarray:
    """Each row's ridge regression on the fixed category factors, in principal axes:
    u_i = argmin_u sum_observed (v_ib - u . y_b)^2 + lambda |u|^2, returned as u_i T.

    ``scores`` is (m, B) with NaN where unobserved; ``factors`` Y is (B, r); ``axes`` T is
    (r, r) (None: the identity). The same ridge as core.embedding._ridge_rows."""
    scores = np.asarray(scores, dtype=float)
    factors = np.asarray(factors, dtype=float)
    if scores.ndim != 2 or factors.ndim != 2 or scores.shape[1] != factors.shape[0]:
        raise ValueError(f"scores (m, B) and factors (B, r) must share B; got "
                         f"{scores.shape} and {factors.shape}")
    if not regularisation > 0:
        raise ValueError(f"regularisation must be positive, got {regularisation!r}")
    rank = factors.shape[1]
    observed = np.isfinite(scores)
    u = _ridge_rows(observed.astype(float), np.where(observed, scores, 0.0), factors,
                    regularisation * np.eye(rank))
    return u if axes is None else u @ np.asarray(axes, dtype=float)


class SampledLowRankEmbedding(BaseEstimator):
    """Algorithm 4's low-rank completion fitted on a sample, to embed everyone else by
    ridge on its fixed factors.

    ``fit(scores)`` takes the sample's dense (customers x categories) matrix (NaN where
    unobserved) and runs complete_low_rank and principal_axes with the in-memory path's
    settings, so with the sample holding every customer the ALS is the in-memory one.
    Fitted: ``factors_`` (the Y that the sample's ALS coordinates U solve the ridge on,
    B x rank: the last-but-one ALS iterate), ``completion_factors_`` (the final Y of
    complete_low_rank), ``axes_`` (T, rank x rank, as in memory), ``sample_embedding_``
    (the sample's coordinates U T, the in-memory embedding), ``n_categories_``.
    ``transform(scores)`` gives ridge_coordinates on ``factors_``: what the engine
    computes for every customer, and for a sampled one exactly ``sample_embedding_``.
    """

    def __init__(self, rank: int = 2, regularisation: float = RIDGE, n_iter: int = 50,
                 random_state: int = 0):
        self.rank = rank
        self.regularisation = regularisation
        self.n_iter = n_iter
        self.random_state = random_state

    def fit(self, scores, y=None) -> SampledLowRankEmbedding:
        """Fit on the sample's (customers x categories) scores; ``y`` is ignored."""
        scores = np.asarray(scores, dtype=float)
        if scores.ndim != 2 or scores.shape[0] == 0:
            raise ValueError(f"scores must be a non-empty 2-D (customers x categories) "
                             f"array, got shape {scores.shape}")
        if int(self.rank) != self.rank or not 1 <= self.rank <= scores.shape[1]:
            raise ValueError(f"rank={self.rank!r} must be an integer between 1 and the "
                             f"{scores.shape[1]} categories")
        if not self.regularisation > 0:
            raise ValueError(f"regularisation={self.regularisation!r} must be positive")
        if int(self.n_iter) < 2:
            raise ValueError(f"n_iter={self.n_iter!r} must be at least 2")
        if not np.isfinite(scores).any(axis=0).all():
            raise ValueError("every category (column) needs an observed score in the sample")
        # complete_low_rank's last iteration, split open: U is the ridge solution on the
        # factors of the iteration before (Y_prev), and the final Y is fitted to U. ALS
        # is not converged after n_iter steps (the two Ys differ by about 1 % here), so
        # every customer is embedded on Y_prev: a sampled customer's coordinates are then
        # exactly their in-memory ones, and every other customer's follow the same rule.
        _, previous = complete_low_rank(scores, int(self.rank), self.regularisation,
                                        int(self.n_iter) - 1, self.random_state)
        observed = np.isfinite(scores)
        mask, filled = observed.astype(float), np.where(observed, scores, 0.0)
        ridge = self.regularisation * np.eye(int(self.rank))
        u = _ridge_rows(mask, filled, previous, ridge)
        final = _ridge_rows(mask.T, filled.T, u, ridge)
        self.factors_ = previous
        self.completion_factors_ = final
        # the in-memory path's axes: from its U and final Y
        self.axes_ = principal_axes(u, final)
        self.sample_embedding_ = u @ self.axes_
        self.n_categories_ = scores.shape[1]
        return self

    def transform(self, scores) -> np.ndarray:
        """Ridge coordinates of any customers' (m x categories) scores on the fixed
        factors, in the principal axes."""
        check_is_fitted(self, "factors_")
        scores = np.asarray(scores, dtype=float)
        if scores.ndim != 2 or scores.shape[1] != self.n_categories_:
            raise ValueError(f"scores must be (customers x {self.n_categories_} "
                             f"categories), got shape {scores.shape}")
        return ridge_coordinates(scores, self.factors_, self.axes_, self.regularisation)

    def factors_table(self, categories) -> pd.DataFrame:
        """Y as the engine's ``category_factors`` table: one row per category with
        y0..y2 (zeros beyond the rank, see SQL_RANK)."""
        check_is_fitted(self, "factors_")
        categories = np.asarray(categories)
        if len(categories) != self.n_categories_:
            raise ValueError(f"categories must name the {self.n_categories_} columns, got "
                             f"{len(categories)}")
        padded = _pad(self.factors_, (self.n_categories_, SQL_RANK))
        return pd.DataFrame({"category": categories.astype(str),
                             **{f"y{a}": padded[:, a] for a in range(SQL_RANK)}})

    def axes_table(self) -> pd.DataFrame:
        """T as the engine's one-row ``vector_axes`` table: t<a><k> is T[a, k] (zeros
        beyond the rank)."""
        check_is_fitted(self, "axes_")
        padded = _pad(self.axes_, (SQL_RANK, SQL_RANK))
        return pd.DataFrame({f"t{a}{k}": [padded[a, k]] for a in range(SQL_RANK)
                             for k in range(SQL_RANK)})


def _pad(matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if matrix.shape[0] > shape[0] or matrix.shape[1] > shape[1]:
        raise ValueError(f"the engine's SQL handles rank <= {SQL_RANK}, got factors of "
                         f"shape {matrix.shape}")
    out = np.zeros(shape)
    out[:matrix.shape[0], :matrix.shape[1]] = matrix
    return out


class ClusterSegmentMap(BaseEstimator):
    """Segments from k-means clusters known only by their sums (the engine's group-by).

    ``fit(customers, coordinate_sums, likes, edges, centres=None)`` takes one entry per
    cluster: its customers, the sum of their coordinates (K x d), likes and train edges.
    As SegmentedModelEmbedding does per customer: clusters holding fewer than
    ``min_share`` of the customers fold into the large cluster with the nearest centre
    (member means; an EMPTY cluster, which k-means can leave, always folds, placed at
    ``centres``), and segments are numbered by increasing like-rate
    (likes + 1) / (edges + 2).

    Fitted: ``cluster_map_`` (cluster -> segment), ``cluster_centers_`` (member means,
    K x d), ``n_segments_``, ``segment_sizes_``, ``segment_alpha_``,
    ``segment_centres_`` (member means per segment, n x d).
    """

    def __init__(self, min_share: float = 0.0):
        self.min_share = min_share

    def fit(self, customers, coordinate_sums, likes, edges,
            centres=None) -> ClusterSegmentMap:
        customers, likes, edges = (np.asarray(a, dtype=float) for a in
                                   (customers, likes, edges))
        sums = np.asarray(coordinate_sums, dtype=float)
        sums = sums[:, None] if sums.ndim == 1 else sums
        k = len(customers)
        if not (customers.ndim == likes.ndim == edges.ndim == 1 and k
                and len(likes) == len(edges) == len(sums) == k):
            raise ValueError("customers, coordinate_sums, likes and edges need one entry per "
                             f"cluster; got {customers.shape}, {sums.shape}, {likes.shape}, "
                             f"{edges.shape}")
        if np.any(customers < 0) or customers.sum() <= 0:
            raise ValueError("customers must be non-negative counts with a positive total")
        if not 0 <= self.min_share < 1:
            raise ValueError(f"min_share={self.min_share!r} must be in [0, 1)")
        present = customers > 0
        means = np.zeros_like(sums)
        means[present] = sums[present] / customers[present, None]
        if not present.all():
            if centres is None:
                raise ValueError("an empty cluster needs its centre: pass centres")
            means[~present] = np.asarray(centres, dtype=float).reshape(k, -1)[~present]
        # as core.selection.fold_small_segments, with the sizes given instead of counted
        large = (customers >= self.min_share * customers.sum()) & present
        if not large.any():
            large = present
        if large.all():
            folded = np.arange(k)
        else:
            distance = ((means[:, None, :] - means[None, large, :]) ** 2).sum(axis=2)
            target = np.flatnonzero(large)[distance.argmin(axis=1)]
            target[large] = np.flatnonzero(large)
            folded = np.unique(target, return_inverse=True)[1].reshape(-1)
        n = int(folded.max()) + 1
        seg_likes = np.bincount(folded, weights=likes, minlength=n)
        seg_edges = np.bincount(folded, weights=edges, minlength=n)
        rates = (seg_likes + 1.0) / (seg_edges + 2.0)
        self.cluster_map_ = renumber_by(np.arange(n), rates)[folded]
        self.cluster_centers_ = means
        self.n_segments_ = n
        sizes = np.bincount(self.cluster_map_, weights=customers, minlength=n)
        self.segment_sizes_ = sizes.astype(np.int64)
        self.segment_alpha_ = (np.bincount(self.cluster_map_, weights=likes, minlength=n)
                               + 1.0) / (np.bincount(self.cluster_map_, weights=edges,
                                                     minlength=n) + 2.0)
        self.segment_centres_ = np.vstack([
            np.bincount(self.cluster_map_, weights=sums[:, d], minlength=n)
            for d in range(sums.shape[1])]).T / sizes[:, None]
        return self

    def map_table(self, segment_ids=None) -> pd.DataFrame:
        """One row per cluster with its ``segment`` (through ``segment_ids``, e.g. stable
        ids; default the labels), for the engine's join (vector_segments.sql)."""
        check_is_fitted(self, "cluster_map_")
        ids = np.arange(self.n_segments_) if segment_ids is None else np.asarray(segment_ids)
        return pd.DataFrame({"cluster": np.arange(len(self.cluster_map_), dtype=np.int64),
                             "segment": ids[self.cluster_map_].astype(np.int64)})


__all__ = ["RIDGE", "SQL_RANK", "ClusterSegmentMap", "SampledLowRankEmbedding",
           "pivot_scores", "ridge_coordinates"]
