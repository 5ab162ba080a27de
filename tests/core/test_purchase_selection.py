"""Choosing the purchase-only segmentation on validation purchases (core.choice):
PurchaseSelector and SegmentedPurchaseModel on planted purchase logs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from segmentation_dagster.core.choice import (
    PURCHASE_SCALE,
    GlobalPopularityRecommender,
    PurchaseSelector,
    SegmentChoiceModel,
    SegmentedPurchaseModel,
    recall_at_k,
)
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.recommend import leave_out_split
from segmentation_dagster.core.selection import CandidateSpec

TABLE_COLUMNS = {
    "candidate", "pooled", "normalisation", "embedding", "category_rank", "n_clusters",
    "n_segments", "score", "se", "gap_to_best", "eligible", "within_one_se", "chosen", "note",
    "scale", "strength", "smallest_segment_share", "folded_customers",
    "n_validation_customers", "n_validation_edges",
}


def planted_log(proportions=(0.5, 0.3, 0.2), n_customers=500, block_size=30, purchases=15,
                in_block=0.85, seed=0):
    """(graph, segments): segment k buys mostly (``in_block`` of its choice mass) from
    item block k; blocks are also the item categories. Gumbel top-k draws of distinct
    items (a dense customers x items array: small test data only)."""
    rng = np.random.default_rng(seed)
    n_blocks = len(proportions)
    n_items = n_blocks * block_size
    segments = rng.choice(n_blocks, size=n_customers, p=proportions)
    categories = np.repeat(np.arange(n_blocks), block_size)
    own = categories[None, :] == segments[:, None]
    weight = np.where(own, in_block / block_size, (1 - in_block) / (n_items - block_size))
    keys = np.log(weight) + rng.gumbel(size=weight.shape)
    cols = np.argsort(-keys, axis=1)[:, :purchases].ravel()
    rows = np.repeat(np.arange(n_customers), purchases)
    graph = PreferenceGraph.from_arrays(
        rows, cols, np.ones(len(rows), dtype=np.int8), customer_ids=np.arange(n_customers),
        item_ids=np.arange(n_items), item_categories=categories,
    )
    return graph, segments


def split(graph: PreferenceGraph, fraction: float, seed: int):
    """(train graph, (rows, cols) held out) by leave_out_split."""
    rows, cols, _ = graph.edges()
    train, held = leave_out_split(rows, cols, fraction, seed=seed)
    train_graph = PreferenceGraph.from_arrays(
        rows[train], cols[train], np.ones(int(train.sum()), dtype=np.int8),
        customer_ids=graph.customer_ids, item_ids=graph.item_ids,
        item_categories=graph.item_categories,
    )
    return train_graph, (rows[held], cols[held])


@pytest.fixture(scope="module")
def planted():
    return planted_log()


@pytest.fixture(scope="module")
def selected(planted):
    graph, _ = planted
    train, validation = split(graph, 0.15, seed=1)
    return train, validation, PurchaseSelector(random_state=0).fit(train, validation)


def test_selector_recovers_the_planted_segments(planted, selected) -> None:
    _, segments = planted
    train, validation, selector = selected
    assert selector.n_segments_ == 3
    assert adjusted_rand_score(segments, selector.labels_) > 0.9
    table = selector.table_
    assert set(table.columns) == TABLE_COLUMNS
    assert table["chosen"].sum() == 1
    chosen = table[table["chosen"]].iloc[0]
    assert chosen["eligible"] and chosen["within_one_se"]
    assert set(table["pooled"]) == {"mnl", "mnl:category"}  # items carry categories
    assert set(table["embedding"]) == {"scalar", "vector (rank 2)"}
    assert (table["scale"] == PURCHASE_SCALE).all()
    assert (table["n_validation_edges"] == len(validation[0])).all()
    assert (table["n_validation_customers"] == len(np.unique(validation[0]))).all()
    # K=1 (the pooled MNL) is one candidate and clearly worse than the planted K
    one = table[table["n_clusters"] == 1]
    assert len(one) == 1 and one["gap_to_best"].iloc[0] > 5 * one["se"].iloc[0]
    # every candidate within one SE of the best is at least as complex as the chosen one
    assert (table.loc[table["within_one_se"], "n_segments"] >= chosen["n_segments"]).all()
    assert isinstance(selector.spec_, CandidateSpec)
    assert selector.spec_.pooled == chosen["pooled"]
    assert selector.strength_ == chosen["strength"]


def test_chosen_method_is_an_unfitted_estimator_with_the_chosen_spec(selected) -> None:
    train, _, selector = selected
    method = selector.chosen_method()
    assert not hasattr(method, "labels_")
    params = clone(method).get_params()
    assert params["n_segments"] == selector.spec_.n_segments
    assert params["pooled"] == selector.spec_.pooled
    assert params["category_rank"] == selector.spec_.category_rank
    assert params["strength"] == selector.strength_
    refit = method.fit(train)
    np.testing.assert_array_equal(refit.labels_, selector.labels_)
    assert refit.segment_model_.strength_ == selector.strength_


def test_selected_model_ranks_held_out_purchases_better_than_popularity(planted) -> None:
    graph, _ = planted
    rest, test = split(graph, 0.2, seed=7)
    selector = PurchaseSelector(random_state=0).fit(rest)  # validation split from rest only
    customers = np.unique(test[0])
    ours = recall_at_k(selector.recommend(customers, 10, exclude=rest), test, 10,
                       exclude=rest, rows=customers)
    popularity = GlobalPopularityRecommender().fit(rest)
    theirs = recall_at_k(popularity.recommend(customers, 10, exclude=rest), test, 10,
                         exclude=rest, rows=customers)
    assert ours > theirs + 0.05


def test_no_structure_chooses_one_segment() -> None:
    """Everyone chooses from the same distribution: K=1 (the pooled MNL) is within one
    standard error of anything more complex, so the rule keeps it. The rule is a test
    at roughly the 16 % level, so it may be fooled on some draws: most must keep K=1."""
    chosen = []
    for seed in range(5):
        # two "blocks" that every customer chooses from equally: no taste to find
        graph, _ = planted_log(proportions=(0.5, 0.5), n_customers=400, in_block=0.5,
                               seed=seed)
        selector = PurchaseSelector(ks=(1, 2, 3), category_ranks=(None,)).fit(graph)
        assert selector.table_["chosen"].sum() == 1
        chosen.append(selector.n_segments_)
    assert chosen.count(1) >= 4, chosen


def test_a_tiny_segment_is_folded_or_rejected() -> None:
    """A 1 % group with its own taste: k-means isolates it first; min_share folds it."""
    graph, segments = planted_log(proportions=(0.59, 0.40, 0.01), n_customers=600, seed=4)
    assert 0 < (segments == 2).mean() < 0.02
    options = dict(ks=(3,), pooled=("mnl",), category_ranks=(None,), normalisations=("degree",))
    folded = PurchaseSelector(min_share=0.02, **options).fit(graph)
    row = folded.table_.iloc[0]
    assert row["n_clusters"] == 3 and row["n_segments"] == 2 and row["folded_customers"] > 0
    assert "folded" in row["note"]
    assert folded.n_segments_ == 2 and folded.segment_sizes_.min() >= 0.02 * 600
    with pytest.raises(ValueError, match="no candidate could be scored.*min_share"):
        PurchaseSelector(min_share=0.02, small_segments="reject", **options).fit(graph)
    kept = PurchaseSelector(min_share=0.0, **options).fit(graph)
    assert kept.n_segments_ == 3


def test_pinned_options_are_the_only_candidates(planted) -> None:
    graph, _ = planted
    selector = PurchaseSelector(pooled=("mnl:category",), normalisations=("degree",),
                                category_ranks=(2,), ks=(3,), strength_grid=(10.0,)).fit(graph)
    assert len(selector.table_) == 1
    assert selector.spec_ == CandidateSpec("mnl:category", "degree", 2, 3)
    assert selector.strength_ == 10.0


def test_items_without_categories_try_the_scalar_mnl_only(planted) -> None:
    graph, _ = planted
    rows, cols, labels = graph.edges()
    plain = PreferenceGraph.from_arrays(rows, cols, labels, customer_ids=graph.customer_ids,
                                        item_ids=graph.item_ids)
    selector = PurchaseSelector(ks=(1, 3)).fit(plain)
    assert set(selector.table_["pooled"]) == {"mnl"}
    assert set(selector.table_["embedding"]) == {"scalar"}


def test_segmented_purchase_model(planted) -> None:
    graph, segments = planted
    model = SegmentedPurchaseModel(3, strength=5.0).fit(graph)
    assert adjusted_rand_score(segments, model.labels_) > 0.9
    assert model.segment_sizes_.sum() == graph.n_customers
    np.testing.assert_allclose(model.segment_alpha_.sum(), 1.0)
    assert isinstance(model.segment_model_, SegmentChoiceModel)
    assert model.segment_model_.strength_ == 5.0
    rows = np.array([0, 1, 2, 0])
    cols = np.array([3, 40, 70, 10])
    np.testing.assert_allclose(
        model.predict_proba(rows, cols),
        model.segment_model_.predict_proba(model.labels_[rows], cols),
    )
    # every segment's choice probabilities sum to one over the items
    all_items = np.arange(graph.n_items)
    for k in range(model.n_segments_):
        total = model.segment_model_.predict_proba(np.full(graph.n_items, k), all_items).sum()
        assert total == pytest.approx(1.0)
    top = model.recommend(np.arange(5), 10, exclude=graph)
    bought = graph.matrix[:5].tocsr()
    for i in range(5):
        assert not set(top[i]) & set(bought[i].indices)
    assert model.cluster_centers_.shape == (3, 1)
    # the training customers' own segments come back from assign
    assert (model.assign(graph) == model.labels_).mean() > 0.99


def test_one_segment_is_the_pooled_choice_model(planted) -> None:
    graph, _ = planted
    model = SegmentedPurchaseModel(1, strength=float("inf")).fit(graph)
    assert model.n_segments_ == 1 and model.embedding_ is None
    np.testing.assert_allclose(model.predict_proba(np.zeros(5, dtype=int), np.arange(5)),
                               model.pooled_.item_proba_[:5])
    assert (model.assign(graph) == 0).all()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pooled": "global"}, "pooled must be one of"),
        ({"n_segments": 0}, "n_segments"),
        ({"normalisation": "mean"}, "normalisation"),
        ({"min_share": 1.0}, "min_share"),
    ],
)
def test_segmented_purchase_model_refuses_bad_parameters(planted, params, message) -> None:
    graph, _ = planted
    with pytest.raises(ValueError, match=message):
        SegmentedPurchaseModel(**params).fit(graph)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"pooled": ("item",)}, "pooled must be one of"),
        ({"ks": (0, 2)}, "ks"),
        ({"small_segments": "drop"}, "small_segments"),
        ({"k_candidates": "some"}, "k_candidates"),
        ({"normalisations": ("mean",)}, "normalisations"),
    ],
)
def test_selector_refuses_bad_parameters(planted, params, message) -> None:
    graph, _ = planted
    with pytest.raises(ValueError, match=message):
        PurchaseSelector(**params).fit(graph)
