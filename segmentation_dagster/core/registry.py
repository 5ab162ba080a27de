"""The one registry of segmentation methods: name -> how to build an unfitted estimator.

The pipeline (``assets/methods.py``), the cold-start protocol (``core.cold_start``) and
the benchmarks all build their methods here, so a new method is one ``register`` call
and every comparison picks it up.

A factory takes K, the random state and a :class:`MethodContext` (what some methods need
beyond K: item features, customer attributes, size limits, embedding options). It returns
an unfitted estimator with ``fit(graph)``, ``labels_``, ``n_segments_`` and
``predict_proba(rows, cols)``, or ``None`` when the data do not support the method (no
customer attributes for ``demographic``, too many customers for a pairwise method).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .baselines import (
    CategoryLatentClassEM,
    DemographicSegmenter,
    EmpiricalBayes,
    KMedoidsCosine,
    LatentClassEM,
    PopulationModel,
    SpectralCosine,
)
from .category_segmenters import ContextEmbeddingSegmenter, SegmentCategoryRates
from .item_baselines import CustomerItemLogit, ItemPopularity, LatentClassItems
from .nmf import NMFSegmenter
from .segmenters import ModelEmbeddingSegmenter
from .selection import SegmentedModelEmbedding


@dataclass(frozen=True)
class MethodContext:
    """What a factory may need beyond K and the seed.

    - ``item_features``: (n_items, f) aligned with the training graph's columns, for the
      ``features`` pooled model;
    - ``customer_attributes``: indexed by customer id, for ``demographic``;
    - ``demographic_columns``: which attribute columns define the demographic segments
      (None: all of them);
    - ``n_customers``: customers in the training graph (pairwise methods are skipped above
      ``max_customers_for_pairwise``);
    - ``embedding``: keyword arguments for :class:`ModelEmbeddingSegmenter` (pooled,
      normalisation, category_rank, ...);
    - ``context_edges`` and ``item_categories``: a wider set of edges (customer_id,
      item_id, label) and each of its items' category (a Series indexed by item id), on
      which ``model_embedding_context`` embeds the customers (the cold-start protocol's
      multi-genre context).
    """

    item_features: np.ndarray | None = None
    customer_attributes: pd.DataFrame | None = None
    demographic_columns: list[str] | None = None
    n_customers: int = 0
    max_customers_for_pairwise: int = 20000
    embedding: dict = field(default_factory=dict)
    context_edges: pd.DataFrame | None = None
    item_categories: pd.Series | None = None


Factory = Callable[[int | None, int, MethodContext], object | None]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method. ``uses_k`` is False for methods whose segments do not depend
    on K (population, empirical Bayes, demographic): a K sweep fits them once."""

    name: str
    description: str
    make: Factory
    uses_k: bool = True
    # False for protocol-specific variants (e.g. the multi-genre cold-start methods) that
    # the pipeline's held-out-edge comparison does not fit
    in_pipeline: bool = True


METHODS: dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add (or replace) a method; every comparison that reads the registry picks it up."""
    METHODS[spec.name] = spec
    return spec


def make_method(
    name: str, k: int | None, random_state: int = 0, context: MethodContext | None = None
) -> object | None:
    """An unfitted estimator of method ``name``, or None when the data do not support it."""
    if name not in METHODS:
        raise ValueError(f"unknown segmentation method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name].make(k, random_state, context or MethodContext())


def method_names(include: Iterable[str] | None = None) -> list[str]:
    """Registered names in registration order, optionally only those in ``include``."""
    if include is None:
        return list(METHODS)
    wanted = list(include)
    unknown = set(wanted) - set(METHODS)
    if unknown:
        raise ValueError(
            f"unknown segmentation methods {sorted(unknown)}; known: {sorted(METHODS)}"
        )
    return [name for name in METHODS if name in wanted]


def _model_embedding(k: int | None, seed: int, context: MethodContext):
    # end to end: pooled model, embedding, clustering and the per-segment models that
    # predict; ``context.embedding`` pins the choices (k_selection's chosen spec)
    options = dict(context.embedding)
    if context.item_features is not None and "features" in options.get("pooled", "global"):
        options["item_features"] = context.item_features
    return SegmentedModelEmbedding(k, random_state=seed, **options)


def _demographic(k: int | None, seed: int, context: MethodContext):
    if context.customer_attributes is None or context.customer_attributes.empty:
        return None
    return DemographicSegmenter(context.customer_attributes, context.demographic_columns)


def _pairwise(cls):
    def make(k: int | None, seed: int, context: MethodContext):
        if context.n_customers > context.max_customers_for_pairwise:
            return None
        return cls(k, random_state=seed)

    return make


for _spec in (
    MethodSpec(
        "population", "One model for everyone.",
        lambda k, seed, context: PopulationModel(), uses_k=False,
    ),
    MethodSpec(
        "model_embedding",
        "The model-based embedding: pooled model, embedding and k-means with the chosen K, "
        "refitted end to end so its time is comparable.",
        _model_embedding,
    ),
    MethodSpec(
        "latent_class", "Latent class mixture by MAP-EM, 10 restarts, with the chosen K.",
        lambda k, seed, context: LatentClassEM(k, random_state=seed),
    ),
    MethodSpec(
        "empirical_bayes",
        "Beta-binomial empirical Bayes: each customer's posterior like-probability.",
        lambda k, seed, context: EmpiricalBayes(), uses_k=False,
    ),
    MethodSpec(
        "demographic",
        "Segments by demographic attributes (age band x gender where available).",
        _demographic, uses_k=False,
    ),
    MethodSpec(
        "kmedoids", "k-medoids on the cosine distance of the +1/-1 vectors, with the chosen K.",
        _pairwise(KMedoidsCosine),
    ),
    MethodSpec(
        "spectral",
        "Spectral clustering on the cosine similarity of the +1/-1 vectors, chosen K.",
        _pairwise(SpectralCosine),
    ),
    MethodSpec(
        "nmf", "NMF customer segments (which items a customer touches), with the chosen K.",
        lambda k, seed, context: NMFSegmenter(k, random_state=seed),
    ),
    MethodSpec(
        "item_popularity",
        "The pooled item model, no segments: each item's like-rate for everyone (the "
        "population model at the item level).",
        lambda k, seed, context: ItemPopularity(), uses_k=False,
    ),
    MethodSpec(
        "latent_class_items",
        "Item-level latent class: EM over the edges with per-class item like-rates "
        "(Beta-smoothed), 10 restarts, with the chosen K.",
        lambda k, seed, context: LatentClassItems(k, random_state=seed),
    ),
    MethodSpec(
        "customer_item_logit",
        "A personalised customer + item logit: a ceiling for comparison, not a "
        "segmentation (one 'segment').",
        lambda k, seed, context: CustomerItemLogit(), uses_k=False,
    ),
):
    register(_spec)


# --- cold-start variants (core.cold_start): not fitted by the pipeline's comparison -----


def _context_embedding(k: int | None, seed: int, context: MethodContext):
    if context.context_edges is None or context.item_categories is None:
        return None
    options = context.embedding
    return ContextEmbeddingSegmenter(
        k, context.context_edges, context.item_categories,
        rank=options.get("category_rank", 2),
        normalisation=options.get("normalisation", "entropy"), random_state=seed,
    )


def _model_embedding_by_category(k: int | None, seed: int, context: MethodContext):
    # Algorithm 4 (per-category pooled model, rank-2 completion) unless the options say
    # otherwise, with one like-rate per (segment, category)
    options = {"pooled": "category:global", "category_rank": 2, **context.embedding}
    return SegmentCategoryRates(ModelEmbeddingSegmenter(k, random_state=seed, **options))


for _spec in (
    MethodSpec(
        "model_embedding_context",
        "Algorithm 4 on a wider context (the movies of several genres, from the context's "
        "context_edges and item_categories), alpha_k on the predicted genre; chosen K.",
        _context_embedding, in_pipeline=False,
    ),
    MethodSpec(
        "population_by_category", "One model for everyone, one like-rate per item category.",
        lambda k, seed, context: SegmentCategoryRates(PopulationModel(), prior=0.0),
        uses_k=False, in_pipeline=False,
    ),
    MethodSpec(
        "model_embedding_by_category",
        "Algorithm 4 (per-category pooled model, rank-2 completion, k-means) with one "
        "like-rate per (segment, item category); chosen K.",
        _model_embedding_by_category, in_pipeline=False,
    ),
    MethodSpec(
        "latent_class_by_category",
        "Latent class mixture with one like-rate per (class, item category); chosen K.",
        lambda k, seed, context: CategoryLatentClassEM(k, random_state=seed),
        in_pipeline=False,
    ),
):
    register(_spec)
