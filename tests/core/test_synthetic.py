"""The synthetic generators: Section 4's graph, the sparse large one, the rich dataset."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation_dagster.core.synthetic import (
    draw_proportions,
    draw_segments,
    make_segmented_graph,
    make_sparse_segmented_graph,
    paper_alphas,
)


def test_paper_alphas():
    assert np.allclose(paper_alphas(5), [0.05, 0.275, 0.5, 0.725, 0.95])
    with pytest.raises(ValueError, match="K >= 2"):
        paper_alphas(1)


def test_proportions_are_a_distribution():
    q = draw_proportions(7, np.random.default_rng(0))
    assert q.shape == (7,) and q.sum() == pytest.approx(1) and (q > 0).all()


def test_draw_segments_follows_given_or_drawn_proportions():
    rng = np.random.default_rng(0)
    alphas, q, segments = draw_segments(20000, 3, rng, np.array([0.2, 0.3, 0.5]))
    assert np.allclose(alphas, paper_alphas(3))
    assert np.allclose(np.bincount(segments) / len(segments), [0.2, 0.3, 0.5], atol=0.01)
    _, drawn, segments = draw_segments(20000, 4, np.random.default_rng(1))
    assert np.allclose(drawn, draw_proportions(4, np.random.default_rng(1)))
    assert np.allclose(np.bincount(segments) / len(segments), drawn, atol=0.01)


def test_segmented_graph_follows_the_model():
    g = make_segmented_graph(2000, 100, 3, edge_probability=0.3,
                             proportions=np.array([0.2, 0.3, 0.5]), seed=0)
    edges = g.edges
    assert set(edges.columns) == {"customer_id", "item_id", "label"}
    assert set(np.unique(edges["label"])) == {-1, 1}
    assert not edges.duplicated(["customer_id", "item_id"]).any()
    assert len(edges) / (2000 * 100) == pytest.approx(0.3, abs=0.01)
    assert np.allclose(np.bincount(g.segments) / 2000, [0.2, 0.3, 0.5], atol=0.03)
    seg = g.segments[edges["customer_id"].to_numpy()]
    for k, alpha in enumerate(g.alphas):
        assert (edges["label"].to_numpy()[seg == k] == 1).mean() == pytest.approx(alpha, abs=0.02)


def test_every_customer_has_an_edge_even_when_sparse():
    g = make_segmented_graph(500, 10, 2, edge_probability=0.02, seed=1)
    assert g.edges["customer_id"].nunique() == 500


def test_segmented_graph_is_reproducible_and_checks_p():
    a = make_segmented_graph(100, 20, 3, 0.5, seed=4)
    b = make_segmented_graph(100, 20, 3, 0.5, seed=4)
    assert a.edges.equals(b.edges) and np.array_equal(a.segments, b.segments)
    with pytest.raises(ValueError, match="edge_probability must be in \\(0, 1\\]"):
        make_segmented_graph(10, 10, 2, edge_probability=0)


def test_sparse_graph_arrays():
    rows, cols, labels, segments = make_sparse_segmented_graph(1000, 5000, 4000, 3, seed=2)
    assert len(rows) == len(cols) == len(labels) == 4000
    assert rows.max() < 1000 and cols.max() < 5000 and len(segments) == 1000
    assert set(np.unique(labels)) <= {-1, 1}
