"""Segmenters that use the items' categories (e.g. movie genres), for the multi-genre
cold-start runs (Appendix D.3, Algorithm 4).

- :class:`SegmentCategoryRates`: any hard segmenter's segments, with one like-rate per
  (segment, item category) instead of one per segment;
- :class:`ContextEmbeddingSegmenter`: users segmented on a wider graph (several genres)
  than the one they are predicted on (one genre).

They live outside ``core.cold_start`` because the registry (``core.registry``) builds
them, and the cold-start protocol builds its methods from the registry.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.utils.validation import check_is_fitted

from .graph import PreferenceGraph, category_counts
from .segmenters import NOT_FITTED, HardSegmenter, ModelEmbeddingSegmenter


class SegmentCategoryRates(ClusterMixin, BaseEstimator):
    """Predictions alpha_{k,b} of a hard segmenter: each segment's like-rate within each
    item category (the segment model of Definition 2). Each cell is shrunk toward the
    category's pooled rate by ``2 * prior`` pseudo-edges, so a (segment, category) cell
    with few edges predicts close to that category's population rate.

    ``segmenter`` is cloned before fitting (``segmenter_`` is the fitted copy), as
    scikit-learn's meta-estimators do.
    """

    def __init__(self, segmenter: HardSegmenter | None = None, prior: float = 1.0):
        self.segmenter = segmenter
        self.prior = prior

    @property
    def name(self) -> str:
        return getattr(self.segmenter, "name", "segment_category_rates")

    def fit(self, graph: PreferenceGraph) -> SegmentCategoryRates:
        if self.segmenter is None:
            raise ValueError("segmenter must be a hard segmenter, got None")
        if not self.prior >= 0:
            raise ValueError(f"prior must be >= 0, got {self.prior!r}")
        self.segmenter_ = clone(self.segmenter).fit(graph)
        labels = self.segmenter_.labels_
        likes, degrees, self.categories_ = category_counts(graph)
        k = int(labels.max()) + 1
        seg_likes = np.zeros((k, likes.shape[1]))
        seg_edges = np.zeros_like(seg_likes)
        np.add.at(seg_likes, labels, likes)
        np.add.at(seg_edges, labels, degrees)
        pooled = likes.sum(axis=0) / np.maximum(degrees.sum(axis=0), 1)
        s = self.prior
        with np.errstate(invalid="ignore", divide="ignore"):
            alpha = (seg_likes + 2 * s * pooled) / (seg_edges + 2 * s)
        self.alpha_ = np.where(seg_edges + 2 * s > 0, alpha, pooled)
        self.labels_ = labels
        self.n_segments_ = k
        self.segment_sizes_ = np.bincount(labels, minlength=k)
        return self

    def predict_proba(self, rows: np.ndarray, categories: np.ndarray) -> np.ndarray:
        """alpha_{k,b} for edges (customer row, category index into ``categories_``)."""
        check_is_fitted(self, "alpha_", msg=NOT_FITTED)
        return self.alpha_[self.labels_[np.asarray(rows)], np.asarray(categories)]


class ContextEmbeddingSegmenter(HardSegmenter):
    """Segments users from a wider graph than the one predicted on (Algorithm 4).

    The users are embedded on ``context_edges`` (e.g. the movies of several genres, each
    item in one category of ``item_category``) with a per-category pooled model and a
    rank-``rank`` completion, clustered by k-means, and each segment's alpha_k is then
    estimated on the graph passed to ``fit`` (one genre) as usual.

    To keep the protocol's held-out movies out of the embedding, only context items
    rated at least as often as the least-rated item of the fitted graph are used: that
    graph holds every rating of the movies above the split's threshold, so its least
    rated item sits at the threshold and new (or validation) movies stay below it.
    """

    name = "model_embedding_context"

    def __init__(
        self,
        n_segments: int = 3,
        context_edges: pd.DataFrame | None = None,
        item_category: pd.Series | None = None,
        rank: int = 2,
        normalisation: str = "entropy",
        random_state: int = 0,
    ):
        self.n_segments = n_segments
        self.context_edges = context_edges
        self.item_category = item_category
        self.rank = rank
        self.normalisation = normalisation
        self.random_state = random_state

    def fit(self, graph: PreferenceGraph) -> ContextEmbeddingSegmenter:
        context = self.context_edges
        if context is None or self.item_category is None:
            raise ValueError(
                "context_edges and item_category are required, got "
                f"context_edges={type(context).__name__}, "
                f"item_category={type(self.item_category).__name__}"
            )
        counts = context["item_id"].map(context["item_id"].value_counts())
        threshold = int(graph.item_degrees().min())
        keep = (counts >= threshold).to_numpy() & context["customer_id"].isin(
            graph.customer_ids
        ).to_numpy()
        context_graph = PreferenceGraph.from_edges(
            context[keep], item_categories=self.item_category,
            customer_ids=graph.customer_ids,
        )
        self.segmenter_ = ModelEmbeddingSegmenter(
            self.n_segments, pooled="category:global", normalisation=self.normalisation,
            category_rank=self.rank, random_state=self.random_state,
        ).fit(context_graph)
        self.context_items_ = context_graph.n_items
        self._finish(graph, self.segmenter_.labels_)
        return self
