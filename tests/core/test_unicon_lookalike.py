"""Lookalike audiences: thresholds, splits, the rule checks, and the classifier ranking
planted future-core customers first."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import roc_auc_score

from segmentation_dagster.core.sequence import lookalike as lk
from segmentation_dagster.core.sequence.data import (
    build_vocabulary,
    encode_sequences,
    leave_last_out,
    order_events,
)
from segmentation_dagster.core.sequence.synthetic import (
    DEFAULT_RULE_MIN_COUNT,
    PREMIUM_PRICE,
    make_behaviour_dataset,
)
from segmentation_dagster.core.sequence.train import (
    LookalikeClassifier,
    NextItemModel,
    UniconConfig,
)


def _brute_force_f2(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    best = (-1.0, None)
    for t in np.unique(scores):
        selected = scores >= t
        tp = (y & selected).sum()
        if tp == 0:
            continue
        p, r = tp / selected.sum(), tp / y.sum()
        f = 5 * p * r / (4 * p + r)
        if f > best[0]:
            best = (f, t)
    return best


def test_threshold_maximises_f2_and_separates_the_kept_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.2
    scores = np.round(np.where(y, rng.beta(4, 2, 300), rng.beta(2, 4, 300)), 2)  # ties
    tau, f2 = lk.choose_threshold(y, scores)
    best_f, best_t = _brute_force_f2(y, scores)
    assert f2 == pytest.approx(best_f)
    assert ((scores > tau) == (scores >= best_t)).all()
    precision, recall, f = lk.f_beta_at(y, scores > tau)
    assert f == pytest.approx(best_f)


def test_population_weights_make_the_threshold_stricter_on_a_balanced_sample() -> None:
    """Half core in the validation sample, one in eleven in the population: weighted, each
    negative counts 10 times, and F2 no longer rewards calling everyone a lookalike."""
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(100, bool), np.zeros(100, bool)]
    scores = np.where(y, rng.beta(3, 2, 200), rng.beta(2, 3, 200))
    weights = lk.population_weights(y, n_positive=100, n_negative=1000)
    assert weights[y].tolist() == [1.0] * 100 and weights[~y].tolist() == [10.0] * 100
    plain_tau, _ = lk.choose_threshold(y, scores)
    weighted_tau, weighted_f2 = lk.choose_threshold(y, scores, weights=weights)
    assert (scores > weighted_tau).sum() < (scores > plain_tau).sum()
    # brute force on the population the weights stand for: negatives repeated 10 times
    population_y = np.r_[y[y], np.repeat(y[~y], 10)]
    population_scores = np.r_[scores[y], np.repeat(scores[~y], 10)]
    best_f, _ = _brute_force_f2(population_y, population_scores)
    assert weighted_f2 == pytest.approx(best_f)
    assert lk.f_beta_at(y, scores > weighted_tau, weights=weights)[2] == pytest.approx(best_f)


def test_audience_scores_at_a_fixed_size() -> None:
    y = np.array([True, False, True, False, False])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.0])
    result = lk.audience_scores(y, scores, size=2)
    assert result["precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(0.5)
    assert result["f2"] == pytest.approx(5 * 0.25 / (2.0 + 0.5))
    assert result["average_precision"] == pytest.approx((1 + 2 / 3) / 2)
    empty = lk.audience_scores(y, scores, size=0)
    assert np.isnan(empty["precision"]) and empty["recall"] == 0


def test_a_rule_matching_nobody_or_everybody_is_refused_by_name() -> None:
    rule = lk.RuleSpec("event = 'purchase' AND price >= 50", 3)
    with pytest.raises(ValueError, match=r"price >= 50\) matches no customer"):
        lk.check_core(np.zeros(5, bool), rule, "2025-10-01")
    with pytest.raises(ValueError, match="matches every customer"):
        lk.check_core(np.ones(5, bool), rule, "2025-10-01")
    with pytest.raises(ValueError, match="min_count"):
        lk.RuleSpec("event = 'purchase'", 0)


def test_split_keeps_candidates_out_of_training_and_new_customers_out_of_negatives() -> None:
    rng = np.random.default_rng(1)
    core = rng.random(400) < 0.1
    old = rng.random(400) < 0.8
    split = lk.split_customers(core, old, negatives_per_positive=3, seed=0)
    used = np.r_[split.train, split.validation]
    assert len(np.intersect1d(split.train, split.validation)) == 0
    assert len(np.intersect1d(used, split.candidates)) == 0
    assert set(np.flatnonzero(core)) <= set(used)  # every core customer is a positive
    negatives = used[~core[used]]
    assert old[negatives].all()
    assert not core[split.candidates].any()
    assert len(negatives) == min(round(3 * core.sum()), int(0.5 * (old & ~core).sum()))


def test_rule_progress_orders_by_matches_then_related_events() -> None:
    scores = lk.rule_progress(np.array([2, 1, 1, 0]), np.array([0, 9, 3, 50]))
    assert np.argsort(-scores).tolist() == [0, 1, 2, 3]


def test_bag_of_items_logistic_picks_c_on_validation() -> None:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(rng.poisson(0.3, size=(200, 30)).astype(float))
    y = np.asarray(x[:, 0].toarray().ravel() > 0)
    model = lk.BagOfItemsLogistic().fit(x[:150], y[:150], x[150:], y[150:])
    assert model.c_ in model.c_grid
    assert roc_auc_score(y[150:], model.predict_proba(x[150:])) > 0.9


@pytest.fixture(scope="module")
def lookalike_world():
    """800 synthetic customers; the rule "at least 3 premium purchases" up to the 75th
    percentile of time. Returns the sequences up to the cutoff (core customers cut just
    before the purchase that completed the rule), labels and the planted affinity."""
    world = make_behaviour_dataset(800, 150, 3, seed=0)
    events = world.interactions.merge(world.items, on="item_id")
    events = events.assign(customer_id=events["customer_id"].astype(str),
                           item_id=events["item_id"].astype(str))
    events = events.sort_values(["customer_id", "timestamp"], kind="stable")
    cutoff = events["timestamp"].quantile(0.75)
    events["matches"] = (events["event"] == "purchase") & (events["price"] >= PREMIUM_PRICE)
    events["so_far"] = events.groupby("customer_id")["matches"].cumsum()
    before = events[events["timestamp"] <= cutoff]
    matches_before = before.groupby("customer_id")["matches"].sum()
    matches_total = events.groupby("customer_id")["matches"].sum()
    core_ids = set(matches_before.index[matches_before >= DEFAULT_RULE_MIN_COUNT])
    history = before[~(before["customer_id"].isin(core_ids)
                       & (before["so_far"] >= DEFAULT_RULE_MIN_COUNT))]
    items = world.items.assign(item_id=world.items["item_id"].astype(str))
    customers = world.customers.assign(customer_id=world.customers["customer_id"].astype(str))
    ordered = order_events(history, 40)
    vocabulary = build_vocabulary(ordered, items, customers)
    data = encode_sequences(ordered, vocabulary, customers,
                            customer_ids=matches_before.index.to_numpy()).data
    core = matches_before.reindex(data.customer_ids).to_numpy() >= DEFAULT_RULE_MIN_COUNT
    future = ~core & (matches_total.reindex(data.customer_ids).to_numpy()
                      >= DEFAULT_RULE_MIN_COUNT)
    first_seen = events.groupby("customer_id")["timestamp"].min().reindex(data.customer_ids)
    old = (first_seen <= cutoff - pd.Timedelta(days=7)).to_numpy()
    return data, vocabulary, core, future, old


def test_lookalike_classifier_ranks_future_core_customers_first(lookalike_world) -> None:
    """Measured with this setup on seeds 0-4 of the generator: AUC 0.70-0.94 for
    customers who meet the rule only after the cutoff, among the held-out non-core
    customers (0.5 = chance). The test runs seed 0 (0.83); 0.7 leaves room for platform
    differences."""
    data, vocabulary, core, future, old = lookalike_world
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        split = lk.split_customers(core, old, seed=0)
        tiny = UniconConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.1,
                            learning_rate=5e-3, max_epochs=5, patience=5, threads=1,
                            batch_size=64)
        pretrained = NextItemModel(tiny).fit(leave_last_out(data).train, vocabulary)
        classifier = LookalikeClassifier(
            UniconConfig(**{**vars(tiny), "max_epochs": 40, "learning_rate": 3e-3,
                            "batch_size": 32}), pretrained,
        ).fit(data.subset(split.train), core[split.train], vocabulary,
              validation=(data.subset(split.validation), core[split.validation]))
        scores = classifier.predict_proba(data.subset(split.candidates))
    finally:
        torch.set_num_threads(previous)
    assert np.all((scores > 0) & (scores < 1))
    assert future[split.candidates].sum() >= 10
    assert roc_auc_score(future[split.candidates], scores) > 0.7


def test_classifier_needs_both_classes(lookalike_world) -> None:
    data, vocabulary, core, _, _ = lookalike_world
    with pytest.raises(ValueError, match="both core and non-core"):
        LookalikeClassifier(UniconConfig(threads=1)).fit(
            data.subset(np.flatnonzero(core)), core[core], vocabulary)
