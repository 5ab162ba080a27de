"""The lookalike protocol end to end, without Dagster: split, pretraining, fine-tuning,
threshold, audience and the honest evaluation against the baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from segmentation_dagster.core.sequence.data import (
    build_vocabulary,
    encode_sequences,
    order_events,
)
from segmentation_dagster.core.sequence.lookalike_protocol import LABEL_COLUMNS, run_lookalike
from segmentation_dagster.core.sequence.synthetic import (
    DEFAULT_RULE_MIN_COUNT,
    PREMIUM_PRICE,
    make_behaviour_dataset,
)
from segmentation_dagster.core.sequence.train import UniconConfig

METHODS = {"unicon", "logistic_bag_of_items", "heuristic_rule_progress", "random"}
METRICS = {"precision", "recall", "f2", "average_precision"}


def _labelled_world(seed: int = 0):
    """800 synthetic customers and the rule "at least 3 premium purchases" at the 75th
    percentile of time, labelled as dbt_like_sql/lookalike_labels.sql does: (histories up
    to the cutoff, core customers cut before the purchase that completed the rule;
    vocabulary; one label row per customer)."""
    world = make_behaviour_dataset(800, 150, 3, seed=seed)
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
    ids = data.customer_ids
    matches = matches_before.reindex(ids).to_numpy()
    core = matches >= DEFAULT_RULE_MIN_COUNT
    first_seen = events.groupby("customer_id")["timestamp"].min().reindex(ids)
    rule_items = set(before.loc[before["matches"], "item_id"])
    related = before[before["item_id"].isin(rule_items)].groupby("customer_id").size()
    labels = pd.DataFrame({
        "core": core,
        "joins_core_after": ~core & (matches_total.reindex(ids).to_numpy()
                                     >= DEFAULT_RULE_MIN_COUNT),
        "new_at_cutoff": (first_seen > cutoff - pd.Timedelta(days=7)).to_numpy(),
        "matches_before": matches,
        "rule_item_events_before": related.reindex(ids, fill_value=0).to_numpy(),
    }, index=pd.Index(ids, name="customer_id"))
    return data, vocabulary, labels


TINY = UniconConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.1, learning_rate=5e-3,
                    max_epochs=5, patience=5, threads=1, batch_size=64)
CLASSIFIER = UniconConfig(**{**vars(TINY), "max_epochs": 40, "learning_rate": 3e-3,
                             "batch_size": 32})


@pytest.fixture(scope="module")
def world():
    return _labelled_world()


@pytest.fixture(scope="module")
def result(world):
    """The protocol with a tiny pretrained model (about 8 s on one thread)."""
    data, vocabulary, labels = world
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield run_lookalike(data, vocabulary, labels, CLASSIFIER, TINY, max_len=40, seed=0)
    finally:
        torch.set_num_threads(previous)


def test_the_audience_is_non_core_customers_above_tau_best_first(world, result) -> None:
    data, _, labels = world
    audience = result.audience
    assert list(audience.columns) == ["customer_id", "score", "rank"]
    assert len(audience) > 0
    core_ids = set(labels.index[labels["core"]])
    assert not set(audience["customer_id"]) & core_ids
    assert (audience["score"] > result.tau).all()
    assert audience["score"].is_monotonic_decreasing
    assert audience["rank"].tolist() == list(range(1, len(audience) + 1))
    # every non-core customer above tau is in it
    noncore = ~labels["core"].to_numpy()
    assert len(audience) == int((result.scores_all[noncore] > result.tau).sum())
    assert np.isnan(result.scores_all[~noncore]).all()
    summary = result.summary()
    assert summary["lookalikes"] == len(audience)
    assert summary["core"] + summary["noncore"] == summary["customers_before_cutoff"] == len(data)


def test_candidates_were_never_trained_or_validated_on(world, result) -> None:
    _, _, labels = world
    split = result.split
    used = np.r_[split.train, split.validation]
    assert not np.intersect1d(used, split.candidates).size
    assert not labels["core"].to_numpy()[split.candidates].any()
    negatives = used[~labels["core"].to_numpy()[used]]
    assert not labels["new_at_cutoff"].to_numpy()[negatives].any()


def test_the_honest_evaluation_beats_a_random_audience(world, result) -> None:
    """Measured with this setup (seeds 0-4 of the generator): on held-out non-core
    customers, average precision for meeting the rule after the cutoff 0.17-0.36 for
    UNICON against 0.04-0.07 for random scores (base rate about 0.05), F2 of the audience
    0.23-0.41 against 0.03-0.09. The rule-progress heuristic is strong on this generator
    (AP 0.30-0.63): the test does not rank UNICON against it. Seed 0 runs here (AP 0.36,
    F2 0.41 against 0.07, 0.09)."""
    scores = result.scores
    assert set(scores["slice"]) == {"future", "validation_core"}
    future = scores[scores["slice"] == "future"].set_index(["method", "metric"])["value"]
    assert set(future.index) == {(m, k) for m in METHODS for k in METRICS}
    assert future["unicon", "average_precision"] > 2 * future["random", "average_precision"]
    assert future["unicon", "f2"] > future["random", "f2"] + 0.1
    assert future["unicon", "average_precision"] > 0.15
    validation = scores[scores["slice"] == "validation_core"].set_index(
        ["method", "metric"])["value"]
    assert set(validation.index) == {(m, k) for m in ("unicon", "logistic_bag_of_items")
                                     for k in METRICS}
    assert validation["unicon", "f2"] == pytest.approx(result.validation_f2)
    assert scores["value"].dropna().between(0, 1).all()
    timed = scores[scores["slice"] == "future"].set_index("method")["seconds"]
    assert (timed["unicon"] > 0).all() and (timed["random"] == 0).all()
    assert result.candidate_audience_size == int(
        (result.scores_all[result.split.candidates] > result.tau).sum())


def test_figure_4_is_titled_by_the_rule(result) -> None:
    figure = result.figure("Lookalikes of: a rule")
    assert len(figure.axes) >= 2
    assert figure.get_suptitle() == "Lookalikes of: a rule"


@pytest.mark.parametrize("column", LABEL_COLUMNS)
def test_labels_missing_a_column_are_refused_by_name(world, column) -> None:
    data, vocabulary, labels = world
    with pytest.raises(ValueError, match=column):
        run_lookalike(data, vocabulary, labels.drop(columns=[column]), CLASSIFIER)


def test_labels_of_other_customers_are_refused(world) -> None:
    data, vocabulary, labels = world
    with pytest.raises(ValueError, match="one row per customer"):
        run_lookalike(data, vocabulary, labels.iloc[:-1], CLASSIFIER)
