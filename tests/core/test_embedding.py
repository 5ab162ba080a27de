"""Embeddings: Lemma 1, the two normalisations, Algorithm 4 and the ALS completion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.clustering import SegmentClusterer
from segmentation_dagster.core.embedding import complete_low_rank, embed, embed_by_category
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.metrics import hungarian_accuracy
from segmentation_dagster.core.pooled import (
    GlobalBernoulli,
    ItemBernoulli,
    bernoulli_entropy,
    make_pooled_model,
)


def cross_entropy(a, b):
    """H(a, b) = -a log b - (1 - a) log(1 - b)."""
    return -a * np.log(b) - (1 - a) * np.log(1 - b)


def test_lemma1_embeddings_concentrate_at_cross_entropy_ratio(synthetic_graph):
    graph, segments = synthetic_graph(1500, 400, 4, 1.0, seed=7)
    pooled = GlobalBernoulli().fit(graph)
    v = embed(graph, pooled, "entropy")
    alphas = 0.05 + 0.9 * np.arange(4) / 3
    target = cross_entropy(alphas, pooled.alpha_pool_) / bernoulli_entropy(pooled.alpha_pool_)
    assert len(np.unique(np.round(target, 3))) == 4  # distinct targets: separable segments
    for k in range(4):
        members = v[segments == k]
        assert members.mean() == pytest.approx(target[k], abs=0.01)
        # every customer, not only the average, is near its segment's value
        assert np.quantile(np.abs(members - target[k]), 0.99) < 0.12


def test_homogeneous_population_embeds_near_one(synthetic_graph):
    # everyone in the segment with alpha 0.275 (K=5): a homogeneous population
    graph, _ = synthetic_graph(800, 400, 5, 1.0, seed=2, proportions=np.eye(5)[1])
    v = embed(graph, GlobalBernoulli().fit(graph), "entropy")
    assert v.mean() == pytest.approx(1.0, abs=0.01)
    assert np.quantile(np.abs(v - 1), 0.99) < 0.15


def test_degree_and_entropy_agree_up_to_a_constant_for_iid_items(synthetic_graph):
    graph, _ = synthetic_graph(300, 50, 3, 0.5, seed=3)
    pooled = GlobalBernoulli().fit(graph)
    by_degree = embed(graph, pooled, "degree")
    by_entropy = embed(graph, pooled, "entropy")
    ratio = by_degree / by_entropy
    assert np.allclose(ratio, bernoulli_entropy(pooled.alpha_pool_))
    # with item-specific probabilities the denominators differ customer by customer
    item = ItemBernoulli(prior_strength=0).fit(graph)
    ratio_item = embed(graph, item, "degree") / embed(graph, item, "entropy")
    assert np.std(ratio_item) > 1e-3


def test_degree_normalisation_is_mean_negative_log_likelihood():
    table = pd.DataFrame({"customer_id": [0, 0, 1], "item_id": [0, 1, 0], "label": [1, -1, -1]})
    graph = PreferenceGraph.from_edges(table)
    pooled = GlobalBernoulli().fit(graph)  # alpha_pool = 1/3
    v = embed(graph, pooled, "degree")
    assert v[0] == pytest.approx(-(np.log(1 / 3) + np.log(2 / 3)) / 2)
    assert v[1] == pytest.approx(-np.log(2 / 3))


def test_customer_without_edges_is_refused_by_name():
    table = pd.DataFrame({"customer_id": ["a", "a", "b"], "item_id": [0, 1, 0],
                          "label": [1, -1, -1]})
    graph = PreferenceGraph.from_edges(table, customer_ids=np.array(["a", "b", "ghost"]))
    pooled = GlobalBernoulli().fit(graph)
    with pytest.raises(ValueError, match="1 customers have no edges \\(e.g. \\['ghost'\\]\\)"):
        embed(graph, pooled)
    with pytest.raises(ValueError, match="no edges"):
        embed_by_category(
            PreferenceGraph(graph.matrix, graph.customer_ids, graph.item_ids,
                            np.array(["x", "y"])),
            pooled,
        )


def test_item_without_edges_gives_finite_embeddings():
    table = pd.DataFrame({"customer_id": [0, 0, 1, 1], "item_id": [0, 1, 0, 1],
                          "label": [1, -1, -1, -1]})
    graph = PreferenceGraph.from_edges(table, item_ids=np.array([0, 1, 2]))
    pooled = ItemBernoulli(prior_strength=0).fit(graph)
    assert np.isfinite(pooled.item_proba_).all()
    for normalisation in ("entropy", "degree"):
        assert np.isfinite(embed(graph, pooled, normalisation)).all()


def test_catalogue_larger_than_the_edges_embeds_like_a_per_edge_sum():
    """A few new customers against a large catalogue: only the items they touched are
    predicted, and the result is the per-edge definition of Algorithms 2 and 3."""
    rng = np.random.default_rng(3)
    fitted = PreferenceGraph.from_edges(pd.DataFrame({
        "customer_id": rng.integers(40, size=600), "item_id": rng.integers(300, size=600),
        "label": rng.choice([1, -1], size=600)}))
    pooled = ItemBernoulli().fit(fitted)
    new = PreferenceGraph.from_edges(
        pd.DataFrame({"customer_id": [0, 0, 1], "item_id": fitted.item_ids[[5, 9, 5]],
                      "label": [1, -1, -1]}),
        item_ids=fitted.item_ids,
    )
    assert new.n_items > new.n_edges
    p = pooled.item_proba_
    nll = np.array([-np.log(p[5]) - np.log(1 - p[9]), -np.log(1 - p[5])])
    entropy = bernoulli_entropy(p)
    np.testing.assert_allclose(embed(new, pooled, "degree"), nll / [2, 1])
    np.testing.assert_allclose(embed(new, pooled, "entropy"),
                               nll / [entropy[5] + entropy[9], entropy[5]])


def test_unknown_normalisation():
    table = pd.DataFrame({"customer_id": [0, 1], "item_id": [0, 0], "label": [1, -1]})
    graph = PreferenceGraph.from_edges(table)
    with pytest.raises(ValueError, match="normalisation must be one of"):
        embed(graph, GlobalBernoulli().fit(graph), "median")


def test_embed_by_category_marks_missing_cells_nan():
    table = pd.DataFrame({"customer_id": [0, 0, 1], "item_id": [0, 1, 0], "label": [1, -1, -1]})
    graph = PreferenceGraph.from_edges(table, item_categories=pd.Series({0: "A", 1: "B"}))
    scores, categories = embed_by_category(graph, make_pooled_model("category:global").fit(graph))
    assert list(categories) == ["A", "B"]
    assert scores.shape == (2, 2)
    assert np.isfinite(scores[0]).all() and np.isnan(scores[1, 1]) and np.isfinite(scores[1, 0])


def test_algorithm4_recovers_segments_a_global_model_cannot(categorised_graph):
    graph, segments = categorised_graph
    scores, _ = embed_by_category(graph, make_pooled_model("category:global").fit(graph))
    u, y = complete_low_rank(scores, rank=2)
    assert u.shape == (graph.n_customers, 2) and y.shape == (4, 2)
    labels = SegmentClusterer(3).fit(u).labels_
    assert hungarian_accuracy(segments, labels) > 0.9
    # the same customers under one global model: the segments share one like rate
    one_d = embed(graph, GlobalBernoulli().fit(graph))
    assert hungarian_accuracy(segments, SegmentClusterer(3).fit(one_d).labels_) < 0.7


def test_als_reconstructs_planted_low_rank_matrix():
    rng = np.random.default_rng(0)
    u0 = rng.normal(size=(300, 2))
    y0 = rng.normal(size=(6, 2))
    full = u0 @ y0.T
    observed = rng.random(full.shape) < 0.7
    observed[np.arange(300), rng.integers(6, size=300)] = True
    scores = np.where(observed, full, np.nan)
    u, y = complete_low_rank(scores, rank=2, regularisation=1e-6, n_iter=100)
    fitted = u @ y.T
    assert np.sqrt(np.mean((fitted - full)[observed] ** 2)) < 0.01
    # rows with more observed entries than the rank are pinned down: check them off the mask
    well = observed.sum(axis=1) >= 3
    assert np.sqrt(np.mean((fitted - full)[well[:, None] & ~observed] ** 2)) < 0.1


def test_complete_low_rank_bad_input():
    with pytest.raises(ValueError, match="rank must be between 1 and the number of categories 3"):
        complete_low_rank(np.ones((4, 3)), rank=4)
    with pytest.raises(ValueError, match="some customers have no observed category score"):
        complete_low_rank(np.array([[1.0, np.nan], [np.nan, np.nan]]), rank=1)
    with pytest.raises(ValueError, match="2-D"):
        complete_low_rank(np.ones(3))
