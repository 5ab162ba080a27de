"""Pooled models: closed forms against numerical optima, fallbacks, and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from segmentation_dagster.core.graph import LIKE, PreferenceGraph
from segmentation_dagster.core.pooled import (
    EPS,
    FeatureLogistic,
    GlobalBernoulli,
    ItemBernoulli,
    PerCategory,
    bernoulli_entropy,
    edge_log_likelihood,
    make_pooled_model,
)


def random_graph(n_customers=300, n_items=20, seed=0, item_rates=None):
    rng = np.random.default_rng(seed)
    rates = rng.uniform(0.1, 0.9, n_items) if item_rates is None else item_rates
    present = rng.random((n_customers, n_items)) < 0.4
    rows, cols = np.nonzero(present)
    like = rng.random(len(rows)) < rates[cols]
    table = pd.DataFrame({"customer_id": rows, "item_id": cols, "label": np.where(like, 1, -1)})
    return PreferenceGraph.from_edges(table, item_ids=np.arange(n_items)), rates


def test_entropy_and_log_likelihood():
    p = np.array([0.5, 0.2, 0.0, 1.0])
    h = bernoulli_entropy(p)
    assert h[0] == pytest.approx(np.log(2))
    assert h[1] == pytest.approx(-(0.2 * np.log(0.2) + 0.8 * np.log(0.8)))
    assert np.isfinite(h).all() and (h > 0).all()  # clipped, never 0 * log 0
    ll = edge_log_likelihood(p, np.array([1, -1, 1, -1]))
    assert ll[0] == pytest.approx(np.log(0.5)) and ll[1] == pytest.approx(np.log(0.8))
    assert np.isfinite(ll).all() and ll[2] == pytest.approx(np.log(EPS))


def test_global_bernoulli_is_the_like_share():
    graph, _ = random_graph()
    model = GlobalBernoulli().fit(graph)
    assert model.alpha_pool_ == pytest.approx((graph.matrix.data == LIKE).mean())
    assert np.all(model.predict_proba(np.arange(5)) == model.alpha_pool_)
    assert model.n_parameters == 1


def test_item_mle_matches_numerical_optimum():
    graph, _ = random_graph(seed=3)
    model = ItemBernoulli(prior_strength=0).fit(graph)
    _, cols, labels = graph.edges()
    for j in range(graph.n_items):
        y = labels[cols == j] == LIKE

        def negative_log_likelihood(p, y=y):
            return -(y.sum() * np.log(p) + (~y).sum() * np.log1p(-p))

        best = minimize_scalar(
            negative_log_likelihood, bounds=(1e-6, 1 - 1e-6), method="bounded",
            options={"xatol": 1e-10},
        )
        assert model.item_proba_[j] == pytest.approx(best.x, abs=1e-5)
        # and the closed form is at least as good as the optimiser's answer
        assert negative_log_likelihood(model.item_proba_[j]) <= best.fun + 1e-9


def test_item_prior_shrinks_towards_pool():
    graph, _ = random_graph(seed=4)
    mle = ItemBernoulli(prior_strength=0).fit(graph).item_proba_
    shrunk = ItemBernoulli(prior_strength=50).fit(graph)
    pool = shrunk.alpha_pool_
    assert np.all(np.abs(shrunk.item_proba_ - pool) <= np.abs(mle - pool) + 1e-12)
    assert np.any(np.abs(shrunk.item_proba_ - pool) < np.abs(mle - pool))


def test_item_without_edges_falls_back_to_pooled_rate():
    table = pd.DataFrame({"customer_id": [0, 0, 1], "item_id": ["a", "b", "a"],
                          "label": [1, -1, -1]})
    graph = PreferenceGraph.from_edges(table, item_ids=np.array(["a", "b", "never_seen"]))
    assert graph.item_degrees()[2] == 0
    for strength in (0.0, 2.0):
        model = ItemBernoulli(prior_strength=strength).fit(graph)
        assert np.isfinite(model.item_proba_).all()
        assert model.item_proba_[2] == pytest.approx(model.alpha_pool_)


def test_item_only_liked_is_not_probability_one():
    table = pd.DataFrame({"customer_id": [0, 1, 0], "item_id": [0, 0, 1], "label": [1, 1, -1]})
    graph = PreferenceGraph.from_edges(table)
    p = ItemBernoulli(prior_strength=0).fit(graph).predict_proba(np.array([0]))
    assert 0 < p[0] < 1 and np.isfinite(np.log1p(-p[0]))
    assert ItemBernoulli(prior_strength=2).fit(graph).predict_proba(np.array([0]))[0] < 0.9


def test_feature_logistic_learns_the_feature_effect():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(40, 2))
    rates = 1 / (1 + np.exp(-(2.0 * features[:, 0])))  # only the first feature matters
    graph, _ = random_graph(n_customers=400, n_items=40, seed=5, item_rates=rates)
    model = FeatureLogistic(features).fit(graph)
    assert model.classifier_.coef_[0, 0] > 1.0
    assert abs(model.classifier_.coef_[0, 1]) < 0.5
    assert np.corrcoef(model.item_proba_, rates)[0, 1] > 0.95
    assert model.n_parameters == 3


def test_feature_logistic_bad_features():
    graph, _ = random_graph()
    with pytest.raises(ValueError, match="item_features must have shape \\(n_items=20"):
        FeatureLogistic(np.zeros((3, 2))).fit(graph)
    bad = np.zeros((20, 2))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        FeatureLogistic(bad).fit(graph)


def categorised(seed=0):
    """Items in two categories whose like rates follow a feature in opposite directions."""
    rng = np.random.default_rng(seed)
    n = 40
    features = rng.normal(size=(n, 1))
    category = np.where(np.arange(n) < n // 2, "up", "down")
    sign = np.where(category == "up", 1.0, -1.0)
    rates = 1 / (1 + np.exp(-2.0 * sign * features[:, 0]))
    graph, _ = random_graph(n_customers=500, n_items=n, seed=seed, item_rates=rates)
    graph = PreferenceGraph(graph.matrix, graph.customer_ids, graph.item_ids, category)
    return graph, features, rates


def test_per_category_global_rates_are_each_categorys_share():
    graph, _, _ = categorised()
    model = make_pooled_model("category:global").fit(graph)
    assert isinstance(model, PerCategory)
    _, cols, labels = graph.edges()
    for name in ("up", "down"):
        in_category = graph.item_categories[cols] == name
        expected = (labels[in_category] == LIKE).mean()
        assert model.models_[name].alpha_pool_ == pytest.approx(expected)
        assert np.allclose(model.item_proba_[graph.item_categories == name], expected)


def test_per_category_features_fits_one_logistic_per_category():
    graph, features, rates = categorised()
    model = make_pooled_model("category:features", item_features=features).fit(graph)
    assert model.models_["up"].classifier_.coef_[0, 0] > 0.5
    assert model.models_["down"].classifier_.coef_[0, 0] < -0.5
    assert np.corrcoef(model.item_proba_, rates)[0, 1] > 0.9
    # one logistic for all items cannot follow both directions
    pooled = FeatureLogistic(features).fit(graph)
    assert np.corrcoef(pooled.item_proba_, rates)[0, 1] < 0.5


def test_per_category_degenerate_category_falls_back_to_global():
    table = pd.DataFrame({"customer_id": [0, 1, 0, 1], "item_id": [0, 0, 1, 1],
                          "label": [1, -1, 1, 1]})
    graph = PreferenceGraph.from_edges(table, item_categories=pd.Series({0: "mixed", 1: "liked"}))
    model = PerCategory().fit(graph)
    assert "liked" not in model.models_
    assert model.item_proba_[1] == pytest.approx(model.alpha_pool_)


def test_per_category_needs_categories():
    graph, _ = random_graph()
    with pytest.raises(ValueError, match="item_categories"):
        PerCategory().fit(graph)


def test_all_labels_identical_is_refused():
    table = pd.DataFrame({"customer_id": [0, 1, 1], "item_id": [0, 0, 1], "label": [1, 1, 1]})
    graph = PreferenceGraph.from_edges(table)
    for model in (GlobalBernoulli(), ItemBernoulli(), FeatureLogistic(np.zeros((2, 1)))):
        with pytest.raises(ValueError, match="every one of the 3 labels is like"):
            model.fit(graph)


def test_unfitted_and_unknown_models():
    with pytest.raises(ValueError, match="not fitted"):
        GlobalBernoulli().predict_proba(np.arange(2))
    with pytest.raises(ValueError, match="unknown pooled model 'logit'"):
        make_pooled_model("logit")
    with pytest.raises(ValueError, match="prior_strength must be >= 0"):
        ItemBernoulli(prior_strength=-1).fit(random_graph()[0])
