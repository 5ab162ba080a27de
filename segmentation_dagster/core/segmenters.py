"""Segmentation methods behind one interface, the model-based embedding first.

Every method has ``fit(graph)``, then:
- ``labels_``: one segment per customer (row of the graph), numbered so that the
  segment like-rate alpha_k increases with the segment number;
- ``n_segments_``;
- ``predict_proba(rows, cols)``: P(like) for edges of the fitted customers on any item,
  including items never seen in training (cold start).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from .clustering import SegmentClusterer, as_2d, check_n_segments, renumber_by
from .embedding import (
    _ridge_rows,
    complete_low_rank,
    embed,
    embed_by_category,
    principal_axes,
)
from .graph import PreferenceGraph
from .pooled import make_pooled_model


def segment_like_rates(
    graph: PreferenceGraph, labels: np.ndarray, n_segments: int, prior: float = 1.0
) -> np.ndarray:
    """alpha_k: each segment's share of likes, with ``prior`` pseudo-counts per label."""
    likes = np.bincount(labels, weights=graph.customer_likes(), minlength=n_segments)
    edges = np.bincount(labels, weights=graph.customer_degrees(), minlength=n_segments)
    return (likes + prior) / (edges + 2 * prior)


# check_is_fitted's message for every segmenter (it raises NotFittedError, a ValueError)
NOT_FITTED = "%(name)s is not fitted; call fit(graph) first"


class HardSegmenter(ClusterMixin, BaseEstimator):
    """Shared tail of every hard-segmentation method: alpha_k and predictions.

    A scikit-learn estimator: subclasses store their ``__init__`` arguments unchanged
    under their own names (so ``get_params``, ``clone`` and the repr work) and set
    fitted attributes, ending in ``_``, only in ``fit(graph)``. ``fit_predict(graph)``
    (from ``ClusterMixin``) returns ``labels_``.
    """

    name = "hard"

    def _finish(self, graph: PreferenceGraph, labels: np.ndarray) -> None:
        labels = np.unique(labels, return_inverse=True)[1]
        n = int(labels.max()) + 1
        rates = segment_like_rates(graph, labels, n)
        self.labels_ = renumber_by(labels, rates[labels])
        self.n_segments_ = n
        self.segment_alpha_ = np.sort(rates)
        self.segment_sizes_ = np.bincount(self.labels_, minlength=n)

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        check_is_fitted(self, "labels_", msg=NOT_FITTED)
        return self.segment_alpha_[self.labels_[np.asarray(rows)]]


class ModelEmbeddingSegmenter(HardSegmenter):
    """The paper's method: ONE pooled model, embed, cluster, one model per segment.

    Parameters
    ----------
    n_segments : K
    pooled : 'global' (alpha-embed), 'item', 'features', or 'category:<base>'
    normalisation : 'entropy' (Algorithm 3) or 'degree' (Algorithm 2)
    category_rank : if set, Algorithm 4: per-category scores completed to this rank
    cluster_method : 'kmeans', 'meanshift' or 'spectral'
    pooled_kwargs : passed to the pooled model (e.g. item_features)
    """

    name = "model_embedding"

    def __init__(
        self,
        n_segments: int = 3,
        pooled: str = "global",
        normalisation: str = "entropy",
        category_rank: int | None = None,
        cluster_method: str = "kmeans",
        random_state: int = 0,
        pooled_kwargs: dict | None = None,
    ):
        self.n_segments = n_segments
        self.pooled = pooled
        self.normalisation = normalisation
        self.category_rank = category_rank
        self.cluster_method = cluster_method
        self.random_state = random_state
        self.pooled_kwargs = pooled_kwargs

    def fit(self, graph: PreferenceGraph) -> ModelEmbeddingSegmenter:
        return self.fit_embedding(graph, self.embed(graph))

    def embed(self, graph: PreferenceGraph) -> np.ndarray:
        """Steps 1 and 2 alone: fit the pooled model and return the customers' embedding
        (1-D, or (m, rank) for the per-category vector embedding)."""
        self.pooled_model_ = make_pooled_model(self.pooled, **(self.pooled_kwargs or {}))
        self.pooled_model_.fit(graph)
        self.item_ids_ = graph.item_ids
        self.embedding_ = self._embed(graph, fit=True)
        return self.embedding_

    def fit_embedding(
        self, graph: PreferenceGraph, embedding: np.ndarray
    ) -> ModelEmbeddingSegmenter:
        """Cluster a precomputed embedding (lets a K sweep embed once)."""
        self.embedding_ = embedding
        self.clusterer_ = SegmentClusterer(
            self.n_segments, self.cluster_method, self.random_state
        ).fit(embedding)
        self._finish(graph, self.clusterer_.labels_)
        # keep centres in the final (alpha-ordered) numbering for assigning new customers
        x = as_2d(embedding)
        self.cluster_centers_ = np.array(
            [x[self.labels_ == k].mean(axis=0) for k in range(self.n_segments_)]
        )
        return self

    def _embed(self, graph: PreferenceGraph, fit: bool) -> np.ndarray:
        if self.category_rank is None:
            return embed(graph, self.pooled_model_, self.normalisation)
        scores, categories = embed_by_category(graph, self.pooled_model_, self.normalisation)
        if fit:
            self.categories_ = categories
            u, self.category_factors_ = complete_low_rank(
                scores, self.category_rank, random_state=self.random_state
            )
            self.category_axes_ = principal_axes(u, self.category_factors_)
            return u @ self.category_axes_
        if not np.array_equal(categories, self.categories_):
            scores = _align_columns(scores, categories, self.categories_)
        observed = np.isfinite(scores)
        ridge = 0.1 * np.eye(self.category_rank)
        filled = np.where(observed, scores, 0.0)
        u = _ridge_rows(observed.astype(float), filled, self.category_factors_, ridge)
        return u @ self.category_axes_

    def transform(self, graph: PreferenceGraph) -> np.ndarray:
        """Embed NEW customers under the stored pooled model (no refit).

        Build ``graph`` with ``item_ids=segmenter.item_ids_`` so columns line up.
        """
        check_is_fitted(self, "pooled_model_", msg=NOT_FITTED)
        if len(graph.item_ids) != len(self.item_ids_) or not np.array_equal(
            graph.item_ids, self.item_ids_
        ):
            raise ValueError(
                "the new customers' graph must use the fitted item universe: "
                "build it with item_ids=segmenter.item_ids_"
            )
        return self._embed(graph, fit=False)

    def assign(self, graph: PreferenceGraph) -> np.ndarray:
        """Segments of NEW customers: embed them, then take the nearest stored centre."""
        x = as_2d(self.transform(graph))
        distances = ((x[:, None, :] - self.cluster_centers_[None]) ** 2).sum(axis=2)
        return distances.argmin(axis=1)


def _align_columns(scores: np.ndarray, have: np.ndarray, want: np.ndarray) -> np.ndarray:
    out = np.full((len(scores), len(want)), np.nan)
    position = {c: i for i, c in enumerate(want)}
    for j, category in enumerate(have):
        if category in position:
            out[:, position[category]] = scores[:, j]
    return out


__all__ = ["HardSegmenter", "ModelEmbeddingSegmenter", "segment_like_rates", "check_n_segments"]
