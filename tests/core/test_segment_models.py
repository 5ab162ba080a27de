"""Per-segment models of the pooled model's class, on planted shops."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.base import clone

from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.segment_models import (
    STRENGTH_GRID,
    SegmentCategoryModel,
    SegmentFeatureLogistic,
    SegmentGlobalModel,
    SegmentItemModel,
    segment_model_for,
    split_validation_edges,
)
from segmentation_dagster.core.segmenters import segment_like_rates
from segmentation_dagster.core.synthetic_shop import (
    _draw_graph,
    make_category_shop,
    make_item_class_shop,
)


def _table(model, k):
    return np.vstack([model.segment_item_proba(s) for s in range(k)])


@pytest.fixture(scope="module")
def item_shop():
    return make_item_class_shop(n_customers=600, n_items=100, degree=40, seed=1)


def test_item_model_recovers_planted_segment_item_rates(item_shop):
    graph, segments = item_shop.graph, item_shop.segments
    model = SegmentItemModel().fit(graph, segments)
    error = np.abs(_table(model, 3) - item_shop.item_rates).mean()
    global_error = np.abs(_table(SegmentGlobalModel().fit(graph, segments), 3)
                          - item_shop.item_rates).mean()
    assert error < 0.06
    assert error < 0.4 * global_error
    assert model.strength_ in STRENGTH_GRID
    assert set(model.validation_scores_) == set(STRENGTH_GRID)
    # only observed (segment, item) pairs are stored, never a dense K x items table
    assert len(model.pair_keys_) <= graph.n_edges


def test_unobserved_pair_gets_the_shifted_pooled_prior(item_shop):
    graph, segments = item_shop.graph, item_shop.segments
    # segment 0 never sees item 0: drop those edges
    rows, cols, labels = graph.edges()
    keep = ~((segments[rows] == 0) & (cols == 0))
    sub = PreferenceGraph.from_arrays(rows[keep], cols[keep], labels[keep],
                                      customer_ids=graph.customer_ids, item_ids=graph.item_ids)
    model = SegmentItemModel(strength=10.0).fit(sub, segments)
    expected = expit(np.log(model.unit_proba_[0] / (1 - model.unit_proba_[0]))
                     + model.segment_delta_[0])
    assert model.predict_segment_proba(np.array([0]), np.array([0]))[0] == pytest.approx(expected)
    alpha_k = segment_like_rates(sub, segments, 3)
    assert np.allclose(model.segment_alpha_, alpha_k)


def test_strength_chosen_on_given_validation_edges(item_shop):
    train, (rows, cols, labels) = split_validation_edges(item_shop.graph, 0.2, random_state=3)
    model = SegmentItemModel().fit(train, item_shop.segments, validation=(rows, cols, labels))
    scores = model.validation_scores_
    assert model.strength_ == max(scores, key=scores.get)
    same = SegmentItemModel().select_strength(train, item_shop.segments, rows, cols, labels)
    assert same.strength_ == model.strength_
    with pytest.raises(ValueError, match="validation cols"):
        SegmentItemModel().fit(train, item_shop.segments, validation=(rows, cols + 10**6, labels))


def test_category_model_recovers_segment_category_rates():
    shop = make_category_shop(n_customers=400, items_per_category=20, degree=60, seed=2)
    model = SegmentCategoryModel().fit(shop.graph, shop.segments)
    assert list(model.categories_) == ["a", "b", "c", "d"]
    assert np.abs(_table(model, 4) - shop.item_rates).max() < 0.05
    with pytest.raises(ValueError, match="item_categories"):
        SegmentCategoryModel().fit(make_item_class_shop(50, 20, 5).graph, np.zeros(50, int))


def test_feature_logistic_recovers_planted_segment_coefficients():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(100, 3))
    weights = np.array([[1.5, 0.0, -1.0], [-1.0, 1.5, 0.0], [0.0, -1.0, 1.5]])
    rates = expit(features @ weights.T).T
    segments = rng.integers(3, size=600)
    graph = _draw_graph(lambda r, c: rates[segments[r], c], 600, 100, 40, rng)
    model = SegmentFeatureLogistic(features).fit(graph, segments)
    assert np.abs(_table(model, 3) - rates).mean() < 0.03
    # an enormous penalty leaves the pooled model shifted by each segment's own rate
    flat = SegmentFeatureLogistic(features, strength=1e8).fit(graph, segments)
    assert np.abs(flat.coef_).max() < 1e-3


def test_global_model_is_todays_single_rate(item_shop):
    graph, segments = item_shop.graph, item_shop.segments
    model = SegmentGlobalModel().fit(graph, segments)
    assert np.allclose(model.segment_alpha_, segment_like_rates(graph, segments, 3))
    rows = np.arange(10)
    assert np.allclose(model.predict_proba(rows, rows), model.segment_alpha_[segments[rows]])


def test_factory_and_sklearn_manners():
    features = np.zeros((5, 2))
    assert type(segment_model_for("global")) is SegmentGlobalModel
    assert type(segment_model_for("item")) is SegmentItemModel
    assert type(segment_model_for("category:item")) is SegmentItemModel
    assert type(segment_model_for("category:global")) is SegmentCategoryModel
    assert segment_model_for("category:features", features).add_category_indicators
    with pytest.raises(ValueError, match="needs item_features"):
        segment_model_for("features")
    with pytest.raises(ValueError, match="unknown pooled model"):
        segment_model_for("nope")
    model = SegmentItemModel(strength=3.0, strength_grid=(1.0, 2.0))
    assert clone(model).get_params() == model.get_params()


def test_bad_input_is_refused(item_shop):
    graph = item_shop.graph
    with pytest.raises(ValueError, match="one segment per customer"):
        SegmentItemModel().fit(graph, np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="strength must be > 0"):
        SegmentItemModel(strength=0.0).fit(graph, item_shop.segments)
    with pytest.raises(ValueError, match="not fitted|fit"):
        SegmentItemModel().predict_proba(np.array([0]), np.array([0]))
    model = SegmentItemModel(strength=5.0).fit(graph, item_shop.segments)
    with pytest.raises(ValueError, match="cols"):
        model.predict_proba(np.array([0]), np.array([graph.n_items]))


def test_split_keeps_an_edge_per_customer(item_shop):
    graph = item_shop.graph
    train, (rows, cols, labels) = split_validation_edges(graph, 0.3, random_state=0)
    assert train.n_edges + len(rows) == graph.n_edges
    assert (train.customer_degrees() >= 1).all()
    assert abs(len(rows) / graph.n_edges - 0.3) < 0.03
    # held-out edges are not in the training graph and keep their labels
    assert (np.asarray(train.matrix[rows, cols]).ravel() == 0).all()
    assert (np.asarray(graph.matrix[rows, cols]).ravel() == labels).all()
