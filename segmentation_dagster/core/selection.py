"""Choosing the pooled model, the normalisation, the embedding and K on validation edges.

Every candidate (pooled model x normalisation x scalar / per-category vector embedding
x K) segments the training customers; item-level segment models
(:mod:`~segmentation_dagster.core.segment_models`) are fitted on those segments and score
the held-out VALIDATION edges. The criterion is each validation customer's summed
log-likelihood of their validation edges, averaged over customers (nats per customer).
The one-standard-error rule then takes the SIMPLEST candidate whose score is within one
standard error (of the paired per-customer difference) of the best, and a minimum
segment share rejects candidates with an artefact segment. Test edges never enter.

Cost: one pooled fit and embedding per (pooled model, normalisation, embedding kind);
one clustering and one segment-model fit (closed form, a group-by over the edges) per K.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from .clustering import SegmentClusterer, as_2d, one_standard_error_choice, renumber_by
from .graph import PreferenceGraph
from .k_sweep import embedding_candidate_ks
from .pooled import edge_log_likelihood
from .segment_models import (
    SegmentItemModel,
    Validation,
    check_validation,
    segment_model_for,
    split_validation_edges,
)
from .segmenters import ModelEmbeddingSegmenter, segment_like_rates

SCALE = (
    "validation log-likelihood: mean over validation customers of the sum over their "
    "validation edges (nats per customer, higher is better)"
)
# Simplicity order of the pooled models for the one-standard-error rule.
POOLED_ORDER = ("global", "category:global", "item", "category:item", "features",
                "category:features")
SEGMENT_MODELS = ("item", "pooled")
SMALL_SEGMENT_RULES = ("fold", "reject")


@dataclass(frozen=True)
class CandidateSpec:
    """One candidate segmentation. ``category_rank`` None is the scalar embedding."""

    pooled: str
    normalisation: str
    category_rank: int | None
    n_segments: int

    @property
    def embedding(self) -> str:
        return "scalar" if self.category_rank is None else f"vector (rank {self.category_rank})"

    def complexity(self, normalisations: Sequence[str]) -> tuple:
        """Fewer segments first, then the simpler pooled model, scalar before vector
        (lower rank first), then the normalisation in the order given."""
        return (
            self.n_segments,
            POOLED_ORDER.index(self.pooled) if self.pooled in POOLED_ORDER else len(POOLED_ORDER),
            0 if self.category_rank is None else self.category_rank,
            list(normalisations).index(self.normalisation),
        )


class SegmentationSelector(BaseEstimator):
    """Model embedding with the pooled model, normalisation, embedding and K chosen on
    validation edges, and item-level segment models for prediction.

    Parameters (each a list of options; pin a choice by giving one option)
    ----------
    pooled : pooled models to try; None tries 'global' and 'item', plus
        'category:global' when items have categories and 'features' when
        ``item_features`` is given
    normalisations : 'entropy' and/or 'degree' (the first is preferred on ties)
    category_ranks : None for the scalar embedding, or a rank for the per-category vector
        embedding (Alg. 4); vector candidates need item categories and rank <= categories
    ks : numbers of segments; K=1 (no segmentation: the pooled item model) is one
        candidate, not one per embedding
    min_share : the smallest share of the customers a segment may hold; smaller ones are
        artefacts (e.g. a handful of customers who "like" everything they played)
    small_segments : what happens to a candidate with a segment below ``min_share``:
        'reject' drops the candidate; 'fold' (default) moves those customers to the
        nearest large segment (by embedding centre) and scores the candidate with the
        segments that remain. Rejecting alone can throw away the real structure: a
        far-away artefact is isolated first by k-means, so every larger K carries it
    segment_model : 'item' (score every candidate with :class:`SegmentItemModel`) or
        'pooled' (with the segment model of the candidate's pooled class)
    strength_grid : shrinkage strengths for the segment models (None: their default)
    validation_fraction : share of each customer's edges held out when ``fit`` gets no
        validation edges; the chosen spec is then refitted on the whole graph
    k_candidates : 'all' tries every K of ``ks`` for every embedding; 'kde' only the Ks
        next to the number of KDE modes of the embedding (the paper's Figure 1 rule; the
        first coordinate of a vector embedding)

    Fitted attributes: ``table_`` (every candidate: score, se, gap_to_best, eligible,
    chosen, scale), ``spec_`` (the chosen :class:`CandidateSpec`), ``strength_``,
    ``segmenter_`` (a fitted :class:`ModelEmbeddingSegmenter`, or None for K=1),
    ``segment_model_``, ``labels_``, ``n_segments_``, ``segment_sizes_``.
    """

    name = "model_embedding_selected"

    def __init__(
        self,
        pooled: Sequence[str] | None = None,
        normalisations: Sequence[str] = ("entropy", "degree"),
        category_ranks: Sequence[int | None] = (None, 2),
        ks: Sequence[int] = (1, 2, 3, 4, 5, 6),
        min_share: float = 0.02,
        small_segments: str = "fold",
        segment_model: str = "item",
        strength_grid: Sequence[float] | None = None,
        cluster_method: str = "kmeans",
        item_features: np.ndarray | None = None,
        validation_fraction: float = 0.1,
        k_candidates: str = "all",
        random_state: int = 0,
    ):
        self.pooled = pooled
        self.normalisations = normalisations
        self.category_ranks = category_ranks
        self.ks = ks
        self.min_share = min_share
        self.small_segments = small_segments
        self.segment_model = segment_model
        self.strength_grid = strength_grid
        self.cluster_method = cluster_method
        self.item_features = item_features
        self.validation_fraction = validation_fraction
        self.k_candidates = k_candidates
        self.random_state = random_state

    # ---------------------------------------------------------------- candidates
    def _ks_for(self, embedding: np.ndarray, ks: list[int]) -> list[int]:
        """The Ks (> 1) to try for one embedding."""
        wanted = [k for k in ks if k > 1]
        if self.k_candidates == "all" or not wanted:
            return wanted
        first = as_2d(embedding)[:, 0]
        return embedding_candidate_ks(first, min(wanted), max(wanted))

    def _pooled_options(self, graph: PreferenceGraph) -> list[str]:
        if self.pooled is not None:
            options = list(self.pooled)
            if not options:
                raise ValueError("pooled must name at least one pooled model")
            return options
        options = ["global", "item"]
        if graph.item_categories is not None:
            options.insert(1, "category:global")
        if self.item_features is not None:
            options.append("features")
        return options

    def _rank_options(self, graph: PreferenceGraph) -> list[int | None]:
        ranks = list(self.category_ranks)
        if not ranks:
            raise ValueError("category_ranks must hold at least one option (None = scalar)")
        if graph.item_categories is None:
            kept = [r for r in ranks if r is None]
            return kept or [None]
        n_categories = len(np.unique(graph.item_categories))
        return [r for r in ranks if r is None or 1 <= int(r) <= n_categories] or [None]

    def _check_params(self) -> None:
        ks = list(self.ks)
        if not ks or any(int(k) != k or k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {self.ks!r}")
        if not 0 <= self.min_share < 1:
            raise ValueError(f"min_share must be in [0, 1), got {self.min_share}")
        if self.small_segments not in SMALL_SEGMENT_RULES:
            raise ValueError(f"small_segments must be one of {SMALL_SEGMENT_RULES}, "
                             f"got {self.small_segments!r}")
        if self.segment_model not in SEGMENT_MODELS:
            raise ValueError(f"segment_model must be one of {SEGMENT_MODELS}, "
                             f"got {self.segment_model!r}")
        if not list(self.normalisations):
            raise ValueError("normalisations must hold at least one option")
        if self.k_candidates not in ("all", "kde"):
            raise ValueError(f"k_candidates must be 'all' or 'kde', got {self.k_candidates!r}")

    def _new_segment_model(self, pooled: str):
        params = {} if self.strength_grid is None else {"strength_grid": self.strength_grid}
        if self.segment_model == "item":
            return SegmentItemModel(**params)
        return segment_model_for(pooled, self.item_features, **params)

    def _segmenter(self, spec: CandidateSpec) -> ModelEmbeddingSegmenter:
        pooled_kwargs = None
        if "features" in spec.pooled:
            pooled_kwargs = {"item_features": self.item_features}
        return ModelEmbeddingSegmenter(
            spec.n_segments, pooled=spec.pooled, normalisation=spec.normalisation,
            category_rank=spec.category_rank, cluster_method=self.cluster_method,
            random_state=self.random_state, pooled_kwargs=pooled_kwargs,
        )

    # ---------------------------------------------------------------- fit
    def fit(
        self, graph: PreferenceGraph, validation: Validation | None = None
    ) -> SegmentationSelector:
        """Score every candidate on ``validation`` (edges of ``graph``'s customers held out
        of it) or, without it, on a split of ``graph``; then fit the chosen one."""
        self._check_params()
        if validation is None:
            train, validation = split_validation_edges(
                graph, self.validation_fraction, self.random_state
            )
        else:
            train = graph
        rows, cols, y = check_validation(validation, train)
        m = train.n_customers
        customers = np.unique(rows)  # validation customers: one score column each
        records: list[dict] = []
        per_customer: list[np.ndarray] = []

        def score(spec: CandidateSpec, clusters: np.ndarray | None,
                  embedding: np.ndarray | None, reason: str = "") -> None:
            record = {"spec": spec, "n_effective": spec.n_segments, "folded": 0,
                      "share": np.nan, "strength": np.nan, "reason": reason, "ok": False}
            records.append(record)
            if clusters is None:
                per_customer.append(np.full(len(customers), np.nan))
                return
            labels, folded = clusters, 0
            if spec.n_segments > 1:
                mapping = fold_small_segments(clusters, embedding, self.min_share)
                labels = mapping[clusters]
                folded = int((mapping != np.arange(len(mapping)))[clusters].sum())
            sizes = np.bincount(labels)
            record["share"] = float(sizes.min() / m)
            record["n_effective"] = len(sizes)
            record["folded"] = folded
            if folded and self.small_segments == "reject":
                record["reason"] = (f"a segment of {folded / m:.2%} of the customers is below "
                                    f"min_share {self.min_share:.2%}")
                per_customer.append(np.full(len(customers), np.nan))
                return
            model = self._new_segment_model(spec.pooled)
            model.select_strength(train, labels, rows, cols, y)
            ll = edge_log_likelihood(model.predict_proba(rows, cols), y)
            per_customer.append(np.bincount(rows, weights=ll, minlength=m)[customers])
            record["strength"] = model.strength_
            record["ok"] = True
            if folded:
                record["reason"] = (f"{folded} customers of segments below min_share "
                                    f"{self.min_share:.2%} folded into the nearest segment")

        ks = sorted({int(k) for k in self.ks})
        normalisations = list(self.normalisations)
        pooled_options = self._pooled_options(train)
        rank_options = self._rank_options(train)  # counts the categories once
        if 1 in ks:
            score(CandidateSpec(pooled_options[0], normalisations[0], None, 1),
                  np.zeros(m, dtype=np.int64), None)
        for pooled in pooled_options:
            for normalisation in normalisations:
                for rank in rank_options:
                    try:  # one pooled fit and embedding for every K
                        embedding = self._segmenter(
                            CandidateSpec(pooled, normalisation, rank, 1)
                        ).fit(train).embedding_
                    except ValueError as error:
                        for k in ks[1:] if ks[0] == 1 else ks:
                            score(CandidateSpec(pooled, normalisation, rank, k), None, None,
                                  f"embedding failed: {error}")
                        continue
                    for k in self._ks_for(embedding, ks):
                        spec = CandidateSpec(pooled, normalisation, rank, k)
                        try:
                            clusters = SegmentClusterer(
                                k, self.cluster_method, self.random_state
                            ).fit(embedding).labels_
                        except ValueError as error:
                            score(spec, None, None, f"clustering failed: {error}")
                            continue
                        score(spec, clusters.astype(np.int64), embedding)

        specs = [r["spec"] for r in records]
        eligible = np.array([r["ok"] for r in records])
        if not eligible.any():
            raise ValueError(
                "no candidate could be scored: " + "; ".join(sorted({r["reason"] for r in records}))
            )
        # simplicity counts the segments actually kept (after folding)
        complexity = [
            (r["n_effective"],) + r["spec"].complexity(normalisations)[1:] for r in records
        ]
        chosen, mean, se, gap = one_standard_error_choice(
            np.vstack(per_customer), complexity, eligible
        )
        self.table_ = pd.DataFrame({
            "candidate": [f"{s.pooled} / {s.normalisation} / {s.embedding} / K={s.n_segments}"
                          for s in specs],
            "pooled": [s.pooled for s in specs],
            "normalisation": [s.normalisation for s in specs],
            "embedding": [s.embedding for s in specs],
            "category_rank": pd.array([s.category_rank for s in specs], dtype="Int64"),
            "n_clusters": [s.n_segments for s in specs],
            "n_segments": [r["n_effective"] for r in records],
            "folded_customers": [r["folded"] for r in records],
            "smallest_segment_share": [r["share"] for r in records],
            "score": mean,
            "se": se,
            "gap_to_best": gap,
            "strength": [r["strength"] for r in records],
            "eligible": eligible,
            "within_one_se": eligible & (gap <= se),
            "chosen": np.arange(len(specs)) == chosen,
            "note": [r["reason"] for r in records],
            "scale": SCALE,
            "n_validation_customers": len(customers),
            "n_validation_edges": len(rows),
        })
        self.spec_ = specs[chosen]
        self.strength_ = float(records[chosen]["strength"])
        self._fit_chosen(graph)
        return self

    def chosen_method(self) -> SegmentedModelEmbedding:
        """The chosen candidate as an unfitted end-to-end estimator (strength fixed)."""
        check_is_fitted(self, "spec_")
        spec = self.spec_
        return SegmentedModelEmbedding(
            spec.n_segments, pooled=spec.pooled, normalisation=spec.normalisation,
            category_rank=spec.category_rank, segment_model=self.segment_model,
            strength=self.strength_, min_share=self.min_share,
            cluster_method=self.cluster_method, item_features=self.item_features,
            random_state=self.random_state,
        )

    def _fit_chosen(self, graph: PreferenceGraph) -> None:
        fitted = self.chosen_method().fit(graph)
        self.method_ = fitted
        self.segmenter_ = fitted.segmenter_
        self.segment_model_ = fitted.segment_model_
        self.labels_ = fitted.labels_
        self.n_segments_ = fitted.n_segments_
        self.segment_sizes_ = fitted.segment_sizes_

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """P(like) for edges (customer row of the fitted graph, item column)."""
        check_is_fitted(self, "segment_model_")
        return self.segment_model_.predict_proba(rows, cols)

    def assign(self, graph: PreferenceGraph) -> np.ndarray:
        """Segments of NEW customers (graph built with the fitted item ids): the nearest
        stored cluster centre, then the same folding of small segments."""
        check_is_fitted(self, "method_")
        return self.method_.assign(graph)


class SegmentedModelEmbedding(ClusterMixin, BaseEstimator):
    """The method end to end, as the pipeline and every comparison run it: ONE pooled
    model, each customer's embedding under it, k-means into K clusters (clusters under
    ``min_share`` of the customers folded into the nearest large one), and one model per
    segment (step 4) that predicts held-out edges.

    ``segment_model``: 'pooled' fits the segment model of the pooled model's class
    ('global': one like-rate per segment, the paper's alpha_k; 'item': per-item rates
    shrunk toward the pooled item rate shifted by the segment's offset; 'category:*': per
    category; 'features': a logistic regression per segment around the pooled one);
    'item' fits item-level segment rates whatever the embedding's pooled model.
    ``strength``: the segment model's shrinkage (None: its default; 'auto': chosen on a
    validation split of the training edges).

    Segments are numbered by increasing like-rate, as every segmenter here.
    Fitted: ``segmenter_`` (the :class:`ModelEmbeddingSegmenter`, None for K=1),
    ``embedding_``, ``cluster_map_`` (cluster -> segment), ``labels_``, ``n_segments_``,
    ``segment_sizes_``, ``segment_alpha_``, ``cluster_centers_`` (per segment, in the
    embedding), ``segment_model_``.
    """

    name = "model_embedding"

    def __init__(
        self,
        n_segments: int = 3,
        pooled: str = "global",
        normalisation: str = "entropy",
        category_rank: int | None = None,
        segment_model: str = "pooled",
        strength: float | str | None = None,
        min_share: float = 0.0,
        cluster_method: str = "kmeans",
        item_features: np.ndarray | None = None,
        random_state: int = 0,
    ):
        self.n_segments = n_segments
        self.pooled = pooled
        self.normalisation = normalisation
        self.category_rank = category_rank
        self.segment_model = segment_model
        self.strength = strength
        self.min_share = min_share
        self.cluster_method = cluster_method
        self.item_features = item_features
        self.random_state = random_state

    def _new_segment_model(self):
        if self.segment_model not in SEGMENT_MODELS:
            raise ValueError(f"segment_model must be one of {SEGMENT_MODELS}, "
                             f"got {self.segment_model!r}")
        params = {} if self.strength is None else {"strength": self.strength}
        if self.segment_model == "item":
            return SegmentItemModel(**params)
        return segment_model_for(self.pooled, self.item_features, **params)

    def fit(self, graph: PreferenceGraph, y=None) -> SegmentedModelEmbedding:
        if int(self.n_segments) < 1:
            raise ValueError(f"n_segments must be >= 1, got {self.n_segments!r}")
        pooled_kwargs = ({"item_features": self.item_features}
                         if "features" in self.pooled else None)
        segmenter = ModelEmbeddingSegmenter(
            max(int(self.n_segments), 1), pooled=self.pooled,
            normalisation=self.normalisation, category_rank=self.category_rank,
            cluster_method=self.cluster_method, random_state=self.random_state,
            pooled_kwargs=pooled_kwargs,
        )
        if self.n_segments == 1:  # no segmentation: the pooled model's class, once
            self.segmenter_ = None
            self.embedding_ = None
            clusters = np.zeros(graph.n_customers, dtype=np.int64)
            self.cluster_map_ = np.zeros(1, dtype=np.int64)
        else:
            self.segmenter_ = segmenter.fit(graph)
            self.embedding_ = self.segmenter_.embedding_
            clusters = np.asarray(self.segmenter_.labels_, dtype=np.int64)
            folded = fold_small_segments(clusters, self.embedding_, self.min_share)
            # number the kept segments by increasing like-rate, as every segmenter here
            n = int(folded.max()) + 1
            rates = segment_like_rates(graph, folded[clusters], n)
            order = renumber_by(np.arange(n), rates)
            self.cluster_map_ = order[folded]
        labels = self.cluster_map_[clusters]
        self.labels_ = labels
        self.n_segments_ = int(labels.max()) + 1
        self.segment_sizes_ = np.bincount(labels, minlength=self.n_segments_)
        self.segment_alpha_ = segment_like_rates(graph, labels, self.n_segments_)
        if self.embedding_ is not None:
            x = as_2d(self.embedding_)
            sums = np.zeros((self.n_segments_, x.shape[1]))
            np.add.at(sums, labels, x)
            self.cluster_centers_ = sums / self.segment_sizes_[:, None]
        self.segment_model_ = self._new_segment_model().fit(graph, labels)
        return self

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """P(like) for edges (customer row of the fitted graph, item column)."""
        check_is_fitted(self, "segment_model_")
        return self.segment_model_.predict_proba(rows, cols)

    def transform(self, graph: PreferenceGraph) -> np.ndarray:
        """Embed NEW customers under the stored pooled model (graph with the fitted items)."""
        check_is_fitted(self, "segment_model_")
        if self.segmenter_ is None:
            return np.zeros(graph.n_customers)
        return self.segmenter_.transform(graph)

    def assign(self, graph: PreferenceGraph) -> np.ndarray:
        """Segments of NEW customers: the nearest stored cluster, then the same folding."""
        check_is_fitted(self, "segment_model_")
        if self.segmenter_ is None:
            return np.zeros(graph.n_customers, dtype=np.int64)
        return self.cluster_map_[self.segmenter_.assign(graph)]


def fold_small_segments(
    clusters: np.ndarray, embedding: np.ndarray | None, min_share: float
) -> np.ndarray:
    """A map cluster -> segment that folds every cluster holding fewer than ``min_share``
    of the customers into the nearest (by centre, in the embedding) large cluster, then
    numbers the segments 0..K'-1 in the clusters' order. Identity when none is small, or
    when every cluster is small."""
    clusters = np.asarray(clusters)
    sizes = np.bincount(clusters)
    large = sizes >= min_share * len(clusters)
    if large.all() or not large.any():
        return np.arange(len(sizes))
    x = as_2d(embedding)
    present = sizes > 0
    centres = np.zeros((len(sizes), x.shape[1]))
    np.add.at(centres, clusters, x)
    centres[present] /= sizes[present, None]
    distance = ((centres[:, None, :] - centres[None, large, :]) ** 2).sum(axis=2)
    target = np.flatnonzero(large)[distance.argmin(axis=1)]
    target[large] = np.flatnonzero(large)
    return np.unique(target, return_inverse=True)[1].reshape(-1)


__all__ = [
    "SCALE",
    "CandidateSpec",
    "SegmentationSelector",
    "SegmentedModelEmbedding",
    "fold_small_segments",
    "one_standard_error_choice",
]
