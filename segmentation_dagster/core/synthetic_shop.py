"""Small planted shops for the item-level segment models, baselines and model selection.

Each generator returns a :class:`Shop`: the graph, every customer's planted segment and
the planted like-probability of every (segment, item) pair. Edges are drawn as
``degree`` uniform items per customer (repeats collapse to one edge), so no dense
customers x items array is ever built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from .graph import DISLIKE, LIKE, PreferenceGraph


@dataclass(frozen=True)
class Shop:
    """A planted shop.

    ``item_rates`` is (K, n_items): P(like) of each segment on each item. When customers
    have their own effects (:func:`make_customer_effect_shop`) it is the segment-free
    item rate (one row) and ``customer_effects`` holds the per-customer logit shifts.
    """

    graph: PreferenceGraph
    segments: np.ndarray
    item_rates: np.ndarray
    customer_effects: np.ndarray | None = None


def _check(n_customers: int, degree: int, n_items: int) -> None:
    if n_customers < 1:
        raise ValueError(f"n_customers must be >= 1, got {n_customers}")
    if not 1 <= degree <= n_items:
        raise ValueError(f"degree must be between 1 and n_items={n_items}, got {degree}")


def _draw_graph(
    p_like_of_edge,
    n_customers: int,
    n_items: int,
    degree: int,
    rng: np.random.Generator,
    item_categories: np.ndarray | None = None,
) -> PreferenceGraph:
    """``degree`` uniform items per customer; label +1 with ``p_like_of_edge(rows, cols)``."""
    rows = np.repeat(np.arange(n_customers), degree)
    cols = rng.integers(n_items, size=len(rows))
    labels = np.where(rng.random(len(rows)) < p_like_of_edge(rows, cols), LIKE, DISLIKE)
    return PreferenceGraph.from_arrays(
        rows, cols, labels.astype(np.int8), item_categories=item_categories,
        customer_ids=np.arange(n_customers), item_ids=np.arange(n_items),
    )


def _segments(n_customers: int, proportions, rng: np.random.Generator) -> np.ndarray:
    proportions = np.asarray(proportions, dtype=float)
    return rng.choice(len(proportions), size=n_customers, p=proportions / proportions.sum())


def make_category_shop(
    n_customers: int = 800,
    items_per_category: int = 40,
    degree: int = 120,
    seed: int = 0,
) -> Shop:
    """Four segments that differ ONLY within categories: every segment likes 40 % of what
    it sees overall, so one global like-rate cannot tell them apart.

    Categories a, b, c, d. Segment rates per category are
    (0.70, 0.70, 0.10, 0.10), (0.55, 0.55, 0.25, 0.25), (0.25, 0.25, 0.55, 0.55) and
    (0.10, 0.10, 0.70, 0.70): the per-category scores of the four segments lie on one
    line, so a rank-2 per-category embedding (Alg. 4) separates them.
    """
    _check(n_customers, degree, 4 * items_per_category)
    rng = np.random.default_rng(seed)
    by_category = np.array(
        [[0.70, 0.70, 0.10, 0.10], [0.55, 0.55, 0.25, 0.25],
         [0.25, 0.25, 0.55, 0.55], [0.10, 0.10, 0.70, 0.70]]
    )
    categories = np.repeat(np.array(["a", "b", "c", "d"]), items_per_category)
    category_index = np.repeat(np.arange(4), items_per_category)
    item_rates = by_category[:, category_index]
    segments = _segments(n_customers, np.ones(4), rng)
    graph = _draw_graph(
        lambda r, c: item_rates[segments[r], c], n_customers, len(categories), degree, rng,
        item_categories=categories,
    )
    return Shop(graph, segments, item_rates)


def make_like_rate_shop(
    n_customers: int = 800,
    n_items: int = 120,
    degree: int = 60,
    segment_logits: tuple[float, ...] = (-1.5, 0.0, 1.5),
    proportions: tuple[float, ...] | None = None,
    n_categories: int = 4,
    seed: int = 0,
) -> Shop:
    """Segments that differ ONLY in their overall like-rate: p_kj = sigma(a_k + b_j), with
    item effects b_j ~ N(0, 0.5) shared by all segments. Items carry ``n_categories``
    categories that play no role, so a per-category model has nothing to add."""
    _check(n_customers, degree, n_items)
    rng = np.random.default_rng(seed)
    a = np.asarray(segment_logits, dtype=float)
    item_effect = rng.normal(0.0, 0.5, size=n_items)
    item_rates = expit(a[:, None] + item_effect[None, :])
    segments = _segments(n_customers, np.ones(len(a)) if proportions is None else proportions, rng)
    categories = np.array([f"c{b}" for b in range(n_categories)])[np.arange(n_items) % n_categories]
    graph = _draw_graph(
        lambda r, c: item_rates[segments[r], c], n_customers, n_items, degree, rng,
        item_categories=categories,
    )
    return Shop(graph, segments, item_rates)


def make_item_class_shop(
    n_customers: int = 600,
    n_items: int = 100,
    degree: int = 40,
    n_segments: int = 3,
    spread: float = 1.5,
    seed: int = 0,
) -> Shop:
    """Item-level latent classes: p_kj = sigma(b_j + g_kj), b_j ~ N(0, 0.5), g_kj ~
    N(0, spread). Segments have about the same overall like-rate but like different
    items: the home ground of item-level latent class and item-level segment models."""
    _check(n_customers, degree, n_items)
    rng = np.random.default_rng(seed)
    item_effect = rng.normal(0.0, 0.5, size=n_items)
    deviation = rng.normal(0.0, spread, size=(n_segments, n_items))
    deviation -= deviation.mean(axis=0, keepdims=True)
    item_rates = expit(item_effect[None, :] + deviation)
    segments = _segments(n_customers, np.ones(n_segments), rng)
    graph = _draw_graph(
        lambda r, c: item_rates[segments[r], c], n_customers, n_items, degree, rng
    )
    return Shop(graph, segments, item_rates)


def make_customer_effect_shop(
    n_customers: int = 600,
    n_items: int = 100,
    degree: int = 40,
    customer_spread: float = 1.2,
    seed: int = 0,
) -> Shop:
    """No segments, but every customer has their own logit shift: p_ij = sigma(u_i + b_j),
    u_i ~ N(0, customer_spread), b_j ~ N(0, 1). A customer + item logit is the right
    model; item popularity misses the u_i."""
    _check(n_customers, degree, n_items)
    rng = np.random.default_rng(seed)
    item_effect = rng.normal(0.0, 1.0, size=n_items)
    customer_effect = rng.normal(0.0, customer_spread, size=n_customers)
    graph = _draw_graph(
        lambda r, c: expit(customer_effect[r] + item_effect[c]), n_customers, n_items, degree,
        rng,
    )
    return Shop(graph, np.zeros(n_customers, dtype=int), expit(item_effect)[None, :],
                customer_effect)


def add_artefact_segment(
    shop: Shop, share: float = 0.015, seed: int = 0
) -> Shop:
    """Turn a ``share`` of the customers into a tiny segment that likes everything it saw
    (the music-log artefact of issue 12: one artist played, or all play counts equal)."""
    if not 0 < share < 1:
        raise ValueError(f"share must be in (0, 1), got {share}")
    rng = np.random.default_rng(seed)
    graph = shop.graph
    chosen = rng.random(graph.n_customers) < share
    matrix = graph.matrix.copy()
    rows = np.repeat(np.arange(graph.n_customers), np.diff(matrix.indptr))
    matrix.data = np.where(chosen[rows], LIKE, matrix.data).astype(np.int8)
    segments = np.where(chosen, shop.segments.max() + 1, shop.segments)
    rates = np.vstack([shop.item_rates, np.ones((1, shop.item_rates.shape[1]))])
    new = PreferenceGraph(matrix, graph.customer_ids, graph.item_ids, graph.item_categories)
    return Shop(new, segments, rates, shop.customer_effects)

