"""ModelEmbeddingSegmenter: fitting, stable numbering, new customers, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.metrics import hungarian_accuracy, sorted_label_accuracy
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter, segment_like_rates


def test_recovers_easy_segments_in_alpha_order(easy_graph):
    graph, segments = easy_graph
    model = ModelEmbeddingSegmenter(3).fit(graph)
    # the true segments are numbered by alpha too, so the sorting rule applies as is
    assert sorted_label_accuracy(segments, model.labels_) > 0.98
    assert np.all(np.diff(model.segment_alpha_) > 0)
    assert np.allclose(model.segment_alpha_, [0.05, 0.5, 0.95], atol=0.03)
    assert model.segment_sizes_.sum() == graph.n_customers
    assert model.embedding_.shape == (graph.n_customers,)


def test_numbering_is_stable_and_follows_alpha(synthetic_graph):
    graph, _ = synthetic_graph(500, 40, 5, 0.5, seed=11)
    first = ModelEmbeddingSegmenter(5).fit(graph)
    second = ModelEmbeddingSegmenter(5).fit(graph)
    assert np.array_equal(first.labels_, second.labels_)
    rates = segment_like_rates(graph, first.labels_, 5)
    assert np.all(np.diff(rates) > 0)
    assert np.allclose(rates, first.segment_alpha_)


def test_alpha_order_also_when_pool_is_above_one_half(synthetic_graph):
    # alpha_pool > 1/2 reverses the embedding's order; labels must still follow alpha
    graph, segments = synthetic_graph(400, 60, 3, 1.0, seed=12,
                                      proportions=np.array([0.1, 0.2, 0.7]))
    model = ModelEmbeddingSegmenter(3).fit(graph)
    assert model.pooled_model_.alpha_pool_ > 0.5
    assert sorted_label_accuracy(segments, model.labels_) > 0.95


@pytest.mark.parametrize("normalisation", ["entropy", "degree"])
@pytest.mark.parametrize("pooled", ["global", "item"])
def test_pooled_and_normalisation_options(easy_graph, pooled, normalisation):
    graph, segments = easy_graph
    model = ModelEmbeddingSegmenter(3, pooled=pooled, normalisation=normalisation).fit(graph)
    assert hungarian_accuracy(segments, model.labels_) > 0.95


def test_feature_pooled_model(easy_graph):
    graph, segments = easy_graph
    features = np.random.default_rng(0).normal(size=(graph.n_items, 2))
    model = ModelEmbeddingSegmenter(
        3, pooled="features", pooled_kwargs={"item_features": features}
    ).fit(graph)
    assert hungarian_accuracy(segments, model.labels_) > 0.95


def test_category_rank_recovers_category_segments(categorised_graph):
    graph, segments = categorised_graph
    model = ModelEmbeddingSegmenter(3, pooled="category:global", category_rank=2).fit(graph)
    assert model.embedding_.shape == (graph.n_customers, 2)
    assert hungarian_accuracy(segments, model.labels_) > 0.9
    assert list(model.categories_) == ["a", "b", "c", "d"]


def test_predict_proba_is_the_segment_rate(easy_graph):
    graph, _ = easy_graph
    model = ModelEmbeddingSegmenter(3).fit(graph)
    rows = np.array([0, 5, 7])
    p = model.predict_proba(rows, np.array([0, 1, 2]))
    assert np.allclose(p, model.segment_alpha_[model.labels_[rows]])
    assert ((p > 0) & (p < 1)).all()


def new_customers_graph(graph: PreferenceGraph, model: ModelEmbeddingSegmenter, prefix: str):
    """The same customers' edges under new ids, built on the fitted item universe."""
    frame = graph.to_frame()
    frame["customer_id"] = prefix + frame["customer_id"].astype(str)
    return PreferenceGraph.from_edges(
        frame, item_ids=model.item_ids_, item_categories=None if graph.item_categories is None
        else pd.Series(graph.item_categories, index=graph.item_ids),
    )


def test_assign_new_customers_without_refit(synthetic_graph):
    graph, _ = synthetic_graph(400, 50, 4, 0.6, seed=13)
    model = ModelEmbeddingSegmenter(4).fit(graph)
    alpha_before = model.segment_alpha_.copy()
    pool_before = model.pooled_model_.alpha_pool_
    fresh = new_customers_graph(graph, model, "new-")
    assigned = model.assign(fresh)
    # map the new ids back to the fitted rows
    fitted_row = {str(c): i for i, c in enumerate(graph.customer_ids)}
    rows = np.array([fitted_row[c.removeprefix("new-")] for c in fresh.customer_ids])
    assert np.allclose(model.transform(fresh), model.embedding_[rows])
    assert np.array_equal(assigned, model.labels_[rows])
    assert np.array_equal(model.segment_alpha_, alpha_before)  # nothing refitted
    assert model.pooled_model_.alpha_pool_ == pool_before


def test_assign_new_customers_with_category_rank(categorised_graph):
    graph, _ = categorised_graph
    model = ModelEmbeddingSegmenter(3, pooled="category:global", category_rank=2).fit(graph)
    fresh = new_customers_graph(graph, model, "new-")
    fitted_row = {str(c): i for i, c in enumerate(graph.customer_ids)}
    rows = np.array([fitted_row[c.removeprefix("new-")] for c in fresh.customer_ids])
    assigned = model.assign(fresh)
    # the completed embedding of a new customer is re-solved against the stored factors,
    # so it may move slightly; nearly every customer must land in the same segment
    assert np.mean(assigned == model.labels_[rows]) > 0.97


def test_transform_needs_the_fitted_item_universe(easy_graph):
    graph, _ = easy_graph
    model = ModelEmbeddingSegmenter(3).fit(graph)
    other = PreferenceGraph.from_edges(graph.to_frame(), item_ids=graph.item_ids[:-1])
    with pytest.raises(ValueError, match="fitted item universe"):
        model.assign(other)
    with pytest.raises(ValueError, match="not fitted"):
        ModelEmbeddingSegmenter(3).transform(graph)
    with pytest.raises(ValueError, match="not fitted"):
        ModelEmbeddingSegmenter(3).predict_proba(np.array([0]))


def test_new_customer_without_edges_is_refused(easy_graph):
    graph, _ = easy_graph
    model = ModelEmbeddingSegmenter(3).fit(graph)
    frame = graph.to_frame().head(30)
    fresh = PreferenceGraph.from_edges(
        frame, item_ids=model.item_ids_,
        customer_ids=np.append(pd.unique(frame["customer_id"]), -1),
    )
    with pytest.raises(ValueError, match="customers have no edges \\(e.g. \\[-1\\]\\)"):
        model.assign(fresh)


def test_fit_refuses_customer_without_edges():
    table = pd.DataFrame({"customer_id": [0, 0, 1], "item_id": [0, 1, 0], "label": [1, -1, -1]})
    graph = PreferenceGraph.from_edges(table, customer_ids=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="1 customers have no edges \\(e.g. \\[2\\]\\)"):
        ModelEmbeddingSegmenter(2).fit(graph)


def test_k_larger_than_distinct_customers():
    table = pd.DataFrame({"customer_id": [0, 1, 2, 2, 2], "item_id": [0, 0, 0, 1, 2],
                          "label": [1, -1, 1, -1, -1]})
    graph = PreferenceGraph.from_edges(table)
    with pytest.raises(ValueError, match="K=4 is larger than the 3 distinct customer embeddings"):
        ModelEmbeddingSegmenter(4).fit(graph)
    # customer 2 likes as often as customer 0 now: their embeddings coincide
    table["label"] = [1, -1, 1, 1, 1]
    graph = PreferenceGraph.from_edges(table)
    with pytest.raises(ValueError, match="K=3 is larger than the 2 distinct"):
        ModelEmbeddingSegmenter(3).fit(graph)


def test_pool_of_one_half_makes_global_embeddings_equal():
    # documented limit of the global model: H(a, 1/2) = log 2 for every a, so every
    # customer embeds at exactly 1 and no K > 1 is possible; the error says so
    table = pd.DataFrame({"customer_id": [0, 1, 2, 2], "item_id": [0, 0, 0, 1],
                          "label": [1, -1, 1, -1]})
    graph = PreferenceGraph.from_edges(table)
    with pytest.raises(ValueError, match="K=2 is larger than the 1 distinct"):
        ModelEmbeddingSegmenter(2).fit(graph)
    # an item-level pooled model still separates these customers
    assert ModelEmbeddingSegmenter(2, pooled="item").fit(graph).n_segments_ == 2


def test_all_labels_identical():
    table = pd.DataFrame({"customer_id": [0, 1, 2], "item_id": [0, 0, 1], "label": [-1, -1, -1]})
    graph = PreferenceGraph.from_edges(table)
    with pytest.raises(ValueError, match="every one of the 3 labels is dislike"):
        ModelEmbeddingSegmenter(2).fit(graph)
