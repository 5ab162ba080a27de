"""Step 3 at scale: segments from the DISTINCT values of a scalar embedding.

When the embedding is one number per customer, k-means depends only on the distinct
values and how many customers hold each (``SegmentClusterer`` already clusters that way).
So an engine that holds millions of customers sends back one row per distinct value
(value, customers, likes, edges); this estimator finds the exact 1-D k-means clusters,
folds small ones, numbers the segments by like-rate exactly as
:class:`~segmentation_dagster.core.selection.SegmentedModelEmbedding` does, and returns
each cluster's value range, so the engine assigns every customer with a range join.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .clustering import kmeans_1d_exact, renumber_by
from .selection import fold_small_segments


class DistinctValueSegmenter(BaseEstimator):
    """Exact 1-D k-means on distinct embedding values weighted by their customers.

    ``fit(values, customers, likes, edges)`` takes one entry per distinct value (sorted
    or not): how many customers have it, and their like and edge counts summed (for the
    segments' like-rates). Clusters holding fewer than ``min_share`` of the customers are
    folded into the nearest large one, and segments are numbered by increasing like-rate
    (likes + 1) / (edges + 2), as in SegmentedModelEmbedding.

    Fitted: ``values_`` (sorted distinct values), ``value_cluster_``, ``cluster_map_``
    (cluster -> segment), ``cluster_lower_`` / ``cluster_upper_`` (a cluster holds the
    values v with lower < v <= upper; -inf / +inf at the ends), ``cluster_centers_``,
    ``n_segments_``, ``segment_sizes_``, ``segment_alpha_``, ``segment_centres_``.
    """

    def __init__(self, n_segments: int = 3, min_share: float = 0.0):
        self.n_segments = n_segments
        self.min_share = min_share

    def fit(self, values, customers, likes, edges) -> DistinctValueSegmenter:
        values, customers, likes, edges = (np.asarray(a, dtype=float) for a in
                                           (values, customers, likes, edges))
        if not values.ndim == 1 or not (len(values) == len(customers) == len(likes)
                                         == len(edges)):
            raise ValueError("values, customers, likes and edges must be 1-D and of one "
                             f"length; got {values.shape}, {customers.shape}, "
                             f"{likes.shape}, {edges.shape}")
        if len(values) == 0 or not np.isfinite(values).all():
            raise ValueError("values must be finite and non-empty (one per distinct "
                             "embedding value)")
        if np.any(customers <= 0):
            raise ValueError("customers must be positive counts")
        order = np.argsort(values, kind="stable")
        values, customers, likes, edges = (a[order] for a in (values, customers, likes, edges))
        if np.any(np.diff(values) <= 0):
            raise ValueError("values must be distinct (one row per distinct embedding value)")
        k = int(self.n_segments)
        if not 1 <= k <= len(values):
            raise ValueError(f"n_segments={self.n_segments!r} must be between 1 and the "
                             f"{len(values)} distinct values")
        clusters = kmeans_1d_exact(values, customers, k) if k > 1 else np.zeros(
            len(values), dtype=np.int64)
        n_clusters = int(clusters.max()) + 1
        # fold_small_segments works per customer; expanding the values by their counts
        # costs one float per customer, never a customer x item array
        per_customer = np.repeat(np.arange(len(values)), customers.astype(np.int64))
        folded = fold_small_segments(clusters[per_customer], values[per_customer],
                                     self.min_share)
        n = int(folded.max()) + 1
        seg_likes = np.bincount(folded[clusters], weights=likes, minlength=n)
        seg_edges = np.bincount(folded[clusters], weights=edges, minlength=n)
        order = renumber_by(np.arange(n), (seg_likes + 1.0) / (seg_edges + 2.0))
        self.cluster_map_ = order[folded]
        labels = self.cluster_map_[clusters]
        self.values_ = values
        self.value_cluster_ = clusters
        self.n_segments_ = n
        self.segment_sizes_ = np.bincount(labels, weights=customers, minlength=n).astype(
            np.int64)
        likes_k = np.bincount(labels, weights=likes, minlength=n)
        edges_k = np.bincount(labels, weights=edges, minlength=n)
        self.segment_alpha_ = (likes_k + 1.0) / (edges_k + 2.0)
        self.segment_centres_ = (np.bincount(labels, weights=values * customers, minlength=n)
                                 / self.segment_sizes_)
        cluster_sizes = np.bincount(clusters, weights=customers, minlength=n_clusters)
        self.cluster_centers_ = (np.bincount(clusters, weights=values * customers,
                                             minlength=n_clusters) / cluster_sizes)
        upper = np.array([values[clusters == c].max() for c in range(n_clusters)])
        self.cluster_upper_ = np.append(upper[:-1], np.inf)
        self.cluster_lower_ = np.concatenate([[-np.inf], upper[:-1]])
        return self

    def predict(self, embedding) -> np.ndarray:
        """The segment of each embedding value: its cluster's range, then the fold map."""
        check_is_fitted(self, "cluster_map_")
        x = np.asarray(embedding, dtype=float)
        cluster = np.searchsorted(self.cluster_upper_[:-1], x, side="left")
        return self.cluster_map_[cluster]

    def bounds_table(self, segment_ids: np.ndarray | None = None) -> pd.DataFrame:
        """One row per cluster: ``cluster``, ``lower``, ``upper`` (None at the open ends)
        and ``segment`` (through ``segment_ids``, e.g. stable ids; default the labels),
        for the engine's range join (dbt_like_sql/customer_segments.sql)."""
        check_is_fitted(self, "cluster_map_")
        ids = np.arange(self.n_segments_) if segment_ids is None else np.asarray(segment_ids)
        finite = np.isfinite
        return pd.DataFrame({
            "cluster": np.arange(len(self.cluster_map_), dtype=np.int64),
            "lower": pd.array([v if finite(v) else None for v in self.cluster_lower_],
                              dtype="Float64"),
            "upper": pd.array([v if finite(v) else None for v in self.cluster_upper_],
                              dtype="Float64"),
            "segment": ids[self.cluster_map_].astype(np.int64),
        })


# What the engine's SQL models implement (dbt_like_sql/pooled_item_terms.sql and
# segment_item_rates.sql): these pooled models, the scalar embedding, and segment models
# of one rate per segment or per (segment, item).
ENGINE_POOLED = ("global", "category:global", "item", "category:item")
# with segment_model='pooled', the per-category global model's segment model is per
# (segment, category), which has no SQL model: only these keep their own class
ENGINE_POOLED_OWN_CLASS = ("global", "item", "category:item")
# the per-category vector embedding's ranks the engine computes (its closed-form ridge
# in dbt_like_sql/vector_coordinates.sql; core.vector_scale.SQL_RANK)
ENGINE_MAX_CATEGORY_RANK = 3


def engine_selector_options(options: dict) -> dict:
    """SegmentationSelector options cut to the candidates the engine computes for every
    customer: scalar embeddings of the SQL pooled models, and their per-category vector
    embeddings up to rank ENGINE_MAX_CATEGORY_RANK. A pinned choice outside them is
    refused in plain words."""
    supported = (ENGINE_POOLED if options.get("segment_model") == "item"
                 else ENGINE_POOLED_OWN_CLASS)
    pinned = options.get("pooled")
    if pinned is not None:
        refused = [name for name in pinned if name not in supported]
        if refused:
            raise ValueError(
                f"pooled={refused[0]!r} is computed in memory only, and this run segments "
                f"in the engine (more customers than in_memory_customers, or the Spark "
                f"engine). Choose one of {list(supported)} in method_settings.pooled, or "
                "'auto'.")
    ranks = tuple(options.get("category_ranks", (None,)))
    kept = tuple(r for r in ranks if r is None or int(r) <= ENGINE_MAX_CATEGORY_RANK)
    if not kept:
        raise ValueError(
            f"embedding='vector' with category_rank={max(ranks)} is computed in memory "
            f"only, and this run segments in the engine (more customers than "
            f"in_memory_customers, or the Spark engine), whose SQL solves ranks up to "
            f"{ENGINE_MAX_CATEGORY_RANK}; set method_settings.category_rank to at most "
            f"{ENGINE_MAX_CATEGORY_RANK}, or method_settings.embedding to 'scalar'.")
    default = [name for name in supported if name != "category:item"]
    return {**options, "pooled": list(pinned) if pinned is not None else default,
            "category_ranks": kept}
