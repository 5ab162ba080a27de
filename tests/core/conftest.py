"""Small shared data for the core tests: graphs built from the paper's generator."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.synthetic import make_segmented_graph


def _graph_from_synthetic(
    n_customers: int = 400,
    n_items: int = 60,
    n_segments: int = 3,
    edge_probability: float = 1.0,
    seed: int = 0,
    proportions: np.ndarray | None = None,
):
    """(graph, true segments) from the Section 4 generator."""
    synthetic = make_segmented_graph(
        n_customers, n_items, n_segments, edge_probability, proportions, seed=seed
    )
    return PreferenceGraph.from_edges(synthetic.edges), synthetic.segments


@pytest.fixture(scope="session")
def easy_graph():
    """Dense, well separated: 3 segments with alpha 0.05, 0.5, 0.95."""
    return _graph_from_synthetic(400, 60, 3, 1.0, seed=1, proportions=np.array([0.3, 0.3, 0.4]))


@pytest.fixture(scope="session")
def synthetic_graph():
    """The factory (n_customers, n_items, n_segments, edge_probability, seed, proportions)
    -> (graph, true segments), for tests that need their own sizes."""
    return _graph_from_synthetic


@pytest.fixture(scope="session")
def categorised_graph():
    """(graph, true segments) where segments differ only by item category."""
    return _categorised_graph()


def _categorised_graph(seed: int = 0, n_customers: int = 600, edge_probability: float = 0.3):
    """Three segments that differ only by category, not overall like rate.

    Segment 0 likes categories a, b (0.1) less than c, d (0.7); segment 1 the reverse;
    segment 2 likes everything at 0.4. Every segment's overall rate is 0.4, so a single
    global pooled model cannot tell them apart, while per-category models can.
    """
    rng = np.random.default_rng(seed)
    categories = np.repeat(["a", "b", "c", "d"], 50)
    alpha = np.array(
        [[0.1, 0.1, 0.7, 0.7], [0.7, 0.7, 0.1, 0.1], [0.4, 0.4, 0.4, 0.4]]
    )
    segments = rng.integers(3, size=n_customers)
    present = rng.random((n_customers, len(categories))) < edge_probability
    rows, cols = np.nonzero(present)
    category_index = np.searchsorted(np.unique(categories), categories)
    like = rng.random(len(rows)) < alpha[segments[rows], category_index[cols]]
    table = pd.DataFrame(
        {"customer_id": rows, "item_id": cols, "label": np.where(like, 1, -1)}
    )
    graph = PreferenceGraph.from_edges(
        table, item_categories=pd.Series(categories, index=np.arange(len(categories)))
    )
    return graph, segments[graph.customer_ids]
