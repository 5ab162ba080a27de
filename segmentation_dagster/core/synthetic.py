"""Synthetic data: the paper's Section 4 generator and its sparse, large-scale variant.

The pipeline's default source, which adds item attributes, demographics, timestamps, events
and behaviour over time to these like-rate segments, is
:func:`segmentation_dagster.core.sequence.synthetic.make_behaviour_dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .graph import DISLIKE, LIKE


def paper_alphas(n_segments: int) -> np.ndarray:
    """alpha_k = 0.05 + 0.9 (k - 1) / (K - 1): K evenly spaced points in [0.05, 0.95]."""
    if n_segments < 2:
        raise ValueError("the paper's generator needs K >= 2 segments")
    return 0.05 + 0.9 * np.arange(n_segments) / (n_segments - 1)


def draw_proportions(n_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Segment proportions ~ Dirichlet(K + 1, ..., K + 1) (drawn once per K in the paper)."""
    return rng.dirichlet(np.full(n_segments, n_segments + 1.0))


def draw_segments(
    n_customers: int,
    n_segments: int,
    rng: np.random.Generator,
    proportions: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alphas, proportions, segments): the paper's alpha_k, the segment proportions
    (drawn unless given) and every customer's segment drawn by them."""
    alphas = paper_alphas(n_segments)
    if proportions is None:
        proportions = draw_proportions(n_segments, rng)
    segments = rng.choice(n_segments, size=n_customers, p=proportions)
    return alphas, np.asarray(proportions), segments


def _draw_labels(p_like: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """+1 with probability ``p_like``, else -1, per edge (int8, as the graph stores them)."""
    return np.where(rng.random(len(p_like)) < p_like, LIKE, DISLIKE).astype(np.int8)


@dataclass(frozen=True)
class SyntheticGraph:
    """Edges (customer_id, item_id, label in {-1, +1}) and the truth behind them."""

    edges: pd.DataFrame
    segments: np.ndarray  # true segment of customer i, numbered by increasing alpha
    alphas: np.ndarray
    proportions: np.ndarray


def make_segmented_graph(
    n_customers: int = 2000,
    n_items: int = 100,
    n_segments: int = 5,
    edge_probability: float = 1.0,
    proportions: np.ndarray | None = None,
    seed: int = 0,
) -> SyntheticGraph:
    """Section 4 exactly: segments by ``proportions``, Erdos-Renyi edges with probability p,
    label +1 with probability alpha_k of the customer's segment.

    Customer ids are 0..m-1 and item ids 0..n-1. A customer who draws no edge gets one
    edge on a random item, so every customer has an embedding (this only happens when
    p is tiny).
    """
    if not 0 < edge_probability <= 1:
        raise ValueError(f"edge_probability must be in (0, 1], got {edge_probability}")
    rng = np.random.default_rng(seed)
    alphas, proportions, segments = draw_segments(n_customers, n_segments, rng, proportions)
    present = rng.random((n_customers, n_items)) < edge_probability
    lonely = ~present.any(axis=1)
    present[lonely, rng.integers(n_items, size=int(lonely.sum()))] = True
    rows, cols = np.nonzero(present)
    labels = _draw_labels(alphas[segments[rows]], rng)
    edges = pd.DataFrame({"customer_id": rows, "item_id": cols, "label": labels})
    return SyntheticGraph(edges, segments, alphas, proportions)


def make_sparse_segmented_graph(
    n_customers: int, n_items: int, n_edges: int, n_segments: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A large, very sparse version of Section 4 without any dense array: ``n_edges``
    uniform (customer, item) pairs (repeats are rare and left to the graph's duplicate
    rule). Returns (rows, cols, labels, segments) as arrays."""
    rng = np.random.default_rng(seed)
    alphas, _, segments = draw_segments(n_customers, n_segments, rng)
    rows = rng.integers(n_customers, size=n_edges)
    cols = rng.integers(n_items, size=n_edges)
    return rows, cols, _draw_labels(alphas[segments[rows]], rng), segments
