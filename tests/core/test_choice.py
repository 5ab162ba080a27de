"""Purchase-only logs: the MNL pooled model, the choice embedding, segment choice models."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from segmentation_dagster.core.choice import (
    GlobalPopularityRecommender,
    MNLPooledModel,
    PurchaseSegmenter,
    SegmentChoiceModel,
    category_choice_embedding,
    choice_embedding,
    is_purchase_only,
    ndcg_at_k,
    ranking_metrics,
    recall_at_k,
)
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.recommend import leave_out_split


def planted_purchases(
    n_customers: int = 600,
    block_size: int = 40,
    proportions=(0.5, 0.3, 0.2),
    purchases: int = 20,
    in_block: float = 0.85,
    seed: int = 0,
):
    """(rows, cols, segments, categories): segment k buys mostly from item block k.

    Items come in len(proportions) blocks (also their categories); each customer buys
    ``purchases`` distinct items, a share ``in_block`` of the choice mass on their own
    block. Distinct draws use the Gumbel top-k trick (a dense m x n array: test data only).
    """
    rng = np.random.default_rng(seed)
    n_blocks = len(proportions)
    n_items = n_blocks * block_size
    segments = rng.choice(n_blocks, size=n_customers, p=proportions)
    categories = np.repeat(np.arange(n_blocks), block_size)
    weight = np.where(
        categories[None, :] == segments[:, None],
        in_block / block_size,
        (1 - in_block) / (n_items - block_size),
    )
    keys = np.log(weight) + rng.gumbel(size=weight.shape)
    cols = np.argsort(-keys, axis=1)[:, :purchases].ravel()
    rows = np.repeat(np.arange(n_customers), purchases)
    return rows, cols, segments, categories


def graph_of(rows, cols, categories=None, n_customers=None, n_items=None):
    n_items = len(categories) if categories is not None else n_items
    return PreferenceGraph.from_arrays(
        rows,
        cols,
        np.ones(len(rows), dtype=np.int8),
        customer_ids=None if n_customers is None else np.arange(n_customers),
        item_ids=None if n_items is None else np.arange(n_items),
        item_categories=categories,
    )


@pytest.fixture(scope="module")
def planted():
    rows, cols, segments, categories = planted_purchases()
    return graph_of(rows, cols, categories), segments


@pytest.fixture(scope="module")
def planted_split():
    """Train / validation / test purchases of the planted log (validation from train)."""
    rows, cols, segments, categories = planted_purchases(purchases=30, seed=3)
    train_mask, test_mask = leave_out_split(rows, cols, 0.2, seed=1)
    tr_rows, tr_cols = rows[train_mask], cols[train_mask]
    fit_mask, val_mask = leave_out_split(tr_rows, tr_cols, 0.15, seed=2)
    m = len(segments)
    return {
        "train": graph_of(tr_rows, tr_cols, categories, n_customers=m),
        "fit": graph_of(tr_rows[fit_mask], tr_cols[fit_mask], categories, n_customers=m),
        "validation": (tr_rows[val_mask], tr_cols[val_mask]),
        "test": (rows[test_mask], cols[test_mask]),
        "segments": segments,
    }


# ----- detection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, expected",
    [
        (np.ones(5), True),
        (np.full(3, 5.0), True),
        (np.array([True, True]), True),
        (None, True),
        (np.array([1, -1, 1]), False),
        (np.array([1, 0, 1]), False),
        (np.array([4.0, 5.0]), False),
        (np.zeros(3), False),
        (np.full(2, -1), False),
        (np.array([1.0, np.nan]), False),
        (np.array([]), False),
        (np.array(["a", "a"]), False),
    ],
)
def test_is_purchase_only(values, expected):
    assert is_purchase_only(values) is expected


# ----- pooled model and embedding -----------------------------------------------------


def test_mnl_pooled_is_smoothed_popularity():
    rows = np.array([0, 0, 1, 2])
    cols = np.array([0, 1, 0, 0])
    model = MNLPooledModel(smoothing=1.0).fit((rows, cols), n_items=4)
    # counts 3, 1, 0, 0 plus 1 each over 4 + 4
    np.testing.assert_allclose(model.item_proba_, [4 / 8, 2 / 8, 1 / 8, 1 / 8])
    np.testing.assert_allclose(model.log_proba([1]), np.log([0.25]))
    assert model.entropy_ == pytest.approx(-(model.item_proba_ * np.log(model.item_proba_)).sum())
    # the same from a graph, whatever its labels
    graph = PreferenceGraph.from_arrays(rows, cols, np.array([1, -1, 1, 1]), item_ids=np.arange(4))
    np.testing.assert_allclose(MNLPooledModel().fit(graph).item_proba_, model.item_proba_)
    assert clone(model).get_params() == {"smoothing": 1.0, "by_category": False}


def test_mnl_pooled_by_category():
    cols = np.array([0, 0, 0, 1, 2])
    categories = np.array(["a", "a", "b"])
    model = MNLPooledModel(smoothing=0.0, by_category=True).fit(
        (np.zeros(5, dtype=int), cols), n_items=3, item_categories=categories
    )
    # P(a) = 4/5, P(0 | a) = 3/4, P(1 | a) = 1/4, P(b) = 1/5, P(2 | b) = 1
    np.testing.assert_allclose(model.item_proba_, [0.6, 0.2, 0.2])
    np.testing.assert_allclose(model.category_proba_, [0.8, 0.2])
    with pytest.raises(ValueError, match="needs item categories"):
        MNLPooledModel(by_category=True).fit((np.zeros(5, dtype=int), cols))
    with pytest.raises(ValueError, match="smoothing"):
        MNLPooledModel(smoothing=-1).fit((np.zeros(5, dtype=int), cols))


def test_choice_embedding_scalar_and_entropy():
    rows = np.array([0, 0, 1])
    cols = np.array([0, 1, 0])
    graph = graph_of(rows, cols, n_items=3)
    pooled = MNLPooledModel(smoothing=1.0).fit(graph)
    pi = pooled.item_proba_
    degree = choice_embedding(graph, pooled, "degree")
    np.testing.assert_allclose(degree, [-(np.log(pi[0]) + np.log(pi[1])) / 2, -np.log(pi[0])])
    entropy = choice_embedding(graph, pooled, "entropy")
    np.testing.assert_allclose(entropy, degree / pooled.entropy_)
    with pytest.raises(ValueError, match="normalisation"):
        choice_embedding(graph, pooled, "median")


def test_choice_embedding_by_category_has_nan_where_unobserved():
    rows = np.array([0, 0, 1])
    cols = np.array([0, 2, 1])
    categories = np.array(["x", "x", "y"])
    graph = graph_of(rows, cols, categories)
    pooled = MNLPooledModel(smoothing=1.0).fit(graph)
    scores, cats = choice_embedding(graph, pooled, "degree", by_category=True)
    assert list(cats) == ["x", "y"]
    pi = pooled.item_proba_
    within_x = pi[:2] / pi[:2].sum()
    np.testing.assert_allclose(scores[0], [-np.log(within_x[0]), 0.0])  # y has one item
    assert np.isnan(scores[1, 1])  # customer 1 bought nothing in y
    assert scores[1, 0] == pytest.approx(-np.log(within_x[1]))
    entropy_scores, _ = choice_embedding(graph, pooled, "entropy", by_category=True)
    h_x = -(within_x * np.log(within_x)).sum()
    np.testing.assert_allclose(entropy_scores[0], [-np.log(within_x[0]) / h_x, 1.0])


# ----- segments and recommendations ---------------------------------------------------


def test_purchase_segmenter_recovers_planted_segments(planted):
    graph, truth = planted
    model = PurchaseSegmenter(n_segments=3, shrinkage=10.0).fit(graph)
    assert model.n_segments_ == 3
    assert adjusted_rand_score(truth, model.labels_) >= 0.8
    # segment 0 chooses the most popular items: the largest planted segment
    assert np.bincount(truth[model.labels_ == 0]).argmax() == 0
    entropy = PurchaseSegmenter(n_segments=3, normalisation="entropy", shrinkage=10.0).fit(graph)
    assert adjusted_rand_score(truth, entropy.labels_) >= 0.8
    assert list(model.predict(graph)) == list(model.labels_)


def test_purchase_segmenter_category_embedding(planted):
    graph, truth = planted
    model = PurchaseSegmenter(n_segments=3, embedding="category", shrinkage=10.0).fit(graph)
    assert model.embedding_.shape == (graph.n_customers, 2)
    # the within-category cells are flat here (items of a block are equally liked): the
    # category-choice column carries the segments
    assert adjusted_rand_score(truth, model.labels_) >= 0.8
    with pytest.raises(ValueError, match="predict"):
        model.predict(graph)


def test_category_choice_embedding_by_hand():
    rows = np.array([0, 0, 1])
    cols = np.array([0, 2, 1])
    graph = graph_of(rows, cols, np.array(["x", "x", "y"]))
    pooled = MNLPooledModel(smoothing=0.0).fit(graph)  # pi = (1/3, 1/3, 1/3)
    p_x, p_y = 2 / 3, 1 / 3
    # customer 0 bought an x and a y item, customer 1 an x item
    expected = np.array([-(np.log(p_x) + np.log(p_y)) / 2, -np.log(p_x)])
    np.testing.assert_allclose(category_choice_embedding(graph, pooled), expected)
    entropy = -(p_x * np.log(p_x) + p_y * np.log(p_y))
    np.testing.assert_allclose(
        category_choice_embedding(graph, pooled, "entropy"), expected / entropy
    )


def test_recommend_excludes_bought_items(planted):
    graph, _ = planted
    model = PurchaseSegmenter(n_segments=3, shrinkage=10.0).fit(graph)
    rows = np.arange(0, graph.n_customers, 7)
    top = model.recommend(rows, n=10, exclude=graph)
    assert top.shape == (len(rows), 10)
    assert (top >= 0).all()
    bought = graph.matrix[rows].toarray() != 0  # small test data
    assert not np.take_along_axis(bought, top, axis=1).any()
    assert all(len(set(r)) == 10 for r in top)
    # a customer of segment k is offered items of the block their segment buys most
    popular = GlobalPopularityRecommender().fit(graph).recommend(rows, 10, exclude=graph)
    assert not np.take_along_axis(bought, popular, axis=1).any()


def test_recommend_pads_when_too_few_items_left():
    rows = np.array([0, 0, 0, 1])
    cols = np.array([0, 1, 2, 0])
    graph = graph_of(rows, cols, n_items=4)
    popular = GlobalPopularityRecommender().fit(graph)
    top = popular.recommend(np.array([0, 1]), n=3, exclude=graph)
    np.testing.assert_array_equal(top, [[3, -1, -1], [1, 2, 3]])


def test_segment_choice_model_probabilities_and_shrinkage():
    rows = np.array([0, 0, 1, 2])
    cols = np.array([0, 1, 1, 2])
    labels = np.array([0, 0, 1])
    pooled = MNLPooledModel(smoothing=1.0).fit((rows, cols), n_items=3)
    model = SegmentChoiceModel(shrinkage=2.0).fit((rows, cols), labels, pooled)
    pi = pooled.item_proba_
    # segment 0: counts (1, 2, 0), N = 3
    np.testing.assert_allclose(
        model.predict_proba(np.zeros(3, int), np.arange(3)), (np.array([1, 2, 0]) + 2 * pi) / 5
    )
    for k in range(2):
        total = model.predict_proba(np.full(3, k), np.arange(3)).sum()
        assert total == pytest.approx(1.0)
    pooled_only = SegmentChoiceModel(shrinkage=np.inf).fit((rows, cols), labels, pooled)
    np.testing.assert_allclose(pooled_only.predict_proba(np.array([0, 1]), np.array([2, 2])), pi[2])


def test_segment_choice_model_beats_popularity(planted_split):
    data = planted_split
    train, test = data["train"], data["test"]
    model = PurchaseSegmenter(n_segments=3).fit(train, validation=None)
    # the shrinkage was chosen on purchases held out of train, never on test
    assert model.choice_model_.shrinkage_ in model.choice_model_.validation_scores_
    customers = np.unique(test[0])
    ours = model.recommend(customers, 10, exclude=train)
    popular = GlobalPopularityRecommender().fit(train).recommend(customers, 10, exclude=train)
    ours_recall = recall_at_k(ours, test, 10, exclude=train, rows=customers)
    popular_recall = recall_at_k(popular, test, 10, exclude=train, rows=customers)
    assert ours_recall > popular_recall + 0.05
    assert ndcg_at_k(ours, test, 10, exclude=train, rows=customers) > ndcg_at_k(
        popular, test, 10, exclude=train, rows=customers
    )


@pytest.mark.parametrize("criterion", ["log_likelihood", "recall"])
def test_shrinkage_chosen_on_given_validation(planted_split, criterion):
    data = planted_split
    fit_graph = data["fit"]
    pooled = MNLPooledModel().fit(fit_graph)
    labels = data["segments"]
    model = SegmentChoiceModel(criterion=criterion).fit(
        fit_graph, labels, pooled, validation=data["validation"]
    )
    scores = model.validation_scores_
    assert model.shrinkage_ == max(scores, key=lambda s: (scores[s], s))
    # with the true segments a finite shrinkage beats the pooled model
    assert np.isfinite(model.shrinkage_)
    assert scores[model.shrinkage_] > scores[np.inf]


def test_log_likelihood_renormalises_over_unbought_items():
    rows = np.array([0, 0, 1])
    cols = np.array([0, 1, 2])
    labels = np.array([0, 0])
    pooled = MNLPooledModel(smoothing=1.0).fit((rows, cols), n_items=4)
    model = SegmentChoiceModel(shrinkage=np.inf).fit((rows, cols), labels, pooled)
    pi = pooled.item_proba_
    held_out = (np.array([0, 0]), np.array([3, 0]))  # item 0 was bought: dropped
    ll = model.log_likelihood(labels, held_out, exclude=(rows, cols))
    np.testing.assert_allclose(ll, [np.log(pi[3] / (1 - pi[0] - pi[1]))])


# ----- metrics ------------------------------------------------------------------------


def test_ranking_metrics_by_hand():
    recommended = np.array([[5, 1, 2], [0, 3, -1], [4, 4, 4]])
    held_out = sp.csr_matrix((np.ones(4), ([0, 0, 1, 2], [1, 9, 3, 2])), shape=(3, 10))
    exclude = sp.csr_matrix((np.ones(1), ([2], [2])), shape=(3, 10))
    result = ranking_metrics(recommended, held_out, k=2, exclude=exclude)
    # customer 2's only held-out item was already bought: skipped
    assert result["n_customers"] == 2
    discount = 1 / np.log2([2, 3])
    np.testing.assert_allclose(result["recall_per_customer"], [0.5, 1.0])
    np.testing.assert_allclose(
        result["ndcg_per_customer"], [discount[1] / discount.sum(), discount[1] / discount[0]]
    )
    assert recall_at_k(recommended, held_out, 2, exclude) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="k=4"):
        ranking_metrics(recommended, held_out, k=4)
