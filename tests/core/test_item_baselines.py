"""Item-level baselines: item popularity, item-level latent class, customer + item logit."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from segmentation_dagster.core.item_baselines import (
    CustomerItemLogit,
    ItemPopularity,
    LatentClassItems,
)
from segmentation_dagster.core.metrics import adjusted_rand, auc
from segmentation_dagster.core.pooled import ItemBernoulli
from segmentation_dagster.core.segment_models import split_validation_edges
from segmentation_dagster.core.synthetic_shop import (
    make_customer_effect_shop,
    make_item_class_shop,
)


@pytest.fixture(scope="module")
def item_shop():
    return make_item_class_shop(n_customers=600, n_items=100, degree=40, seed=1)


def test_item_popularity_is_the_pooled_item_model(item_shop):
    graph = item_shop.graph
    model = ItemPopularity().fit(graph)
    assert (model.labels_ == 0).all() and model.n_segments_ == 1
    cols = np.arange(graph.n_items)
    expected = ItemBernoulli().fit(graph).predict_proba(cols)
    assert np.allclose(model.predict_proba(np.zeros_like(cols), cols), expected)


def test_latent_class_items_recovers_planted_item_classes(item_shop):
    graph = item_shop.graph
    before = graph.matrix.copy()
    model = LatentClassItems(3, n_restarts=4, random_state=0).fit(graph)
    assert adjusted_rand(item_shop.segments, model.labels_) > 0.9
    assert model.alpha_.shape == (3, graph.n_items)
    assert len(model.restart_log_posteriors_) == 4
    assert model.log_posterior_ == pytest.approx(model.restart_log_posteriors_.max())
    assert np.all(np.diff(model.segment_alpha_) >= 0)
    # recovered item rates of matched classes are close to the planted ones
    errors = [np.abs(model.alpha_[model.labels_[item_shop.segments == k][0]]
                     - item_shop.item_rates[k]).mean() for k in range(3)]
    assert max(errors) < 0.1
    rows, cols, _ = graph.edges()
    p = model.predict_proba(rows[:50], cols[:50])
    assert p.shape == (50,) and ((p > 0) & (p < 1)).all()
    assert (graph.matrix != before).nnz == 0  # the graph is not modified


def test_customer_item_logit_beats_item_popularity_with_customer_effects():
    shop = make_customer_effect_shop(n_customers=500, n_items=80, degree=40, seed=2)
    train, (rows, cols, labels) = split_validation_edges(shop.graph, 0.2, random_state=0)
    logit_model = CustomerItemLogit().fit(train)
    popularity = ItemPopularity().fit(train)
    liked = labels == 1
    gain = auc(liked, logit_model.predict_proba(rows, cols)) - auc(
        liked, popularity.predict_proba(rows, cols)
    )
    assert gain > 0.05
    assert (logit_model.labels_ == 0).all() and logit_model.n_segments_ == 1
    assert logit_model.l2_ in logit_model.l2_grid
    assert np.corrcoef(logit_model.customer_effects_, shop.customer_effects)[0, 1] > 0.8


def test_bad_input_and_sklearn_manners(item_shop):
    graph = item_shop.graph
    with pytest.raises(ValueError, match="n_restarts"):
        LatentClassItems(2, n_restarts=0).fit(graph)
    with pytest.raises(ValueError, match="l2 must be > 0"):
        CustomerItemLogit(l2=-1.0).fit(graph)
    model = ItemPopularity().fit(graph)
    with pytest.raises(ValueError, match="cols"):
        model.predict_proba(np.array([0]), np.array([graph.n_items]))
    for estimator in (ItemPopularity(3.0), LatentClassItems(4), CustomerItemLogit(2.0)):
        assert clone(estimator).get_params() == estimator.get_params()
