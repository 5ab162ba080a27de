"""Time-bounded training: a wall-clock budget stops the next-item model and the lookalike
classifier cleanly, keeping a usable model, and says so; the thread count follows the
cores the process may use."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest
import torch

from segmentation_dagster.core.sequence.data import (
    build_vocabulary,
    encode_sequences,
    leave_last_out,
    order_events,
)
from segmentation_dagster.core.sequence.metrics import ndcg
from segmentation_dagster.core.sequence.synthetic import make_behaviour_dataset
from segmentation_dagster.core.sequence.train import (
    LookalikeClassifier,
    NextItemModel,
    UniconConfig,
    available_cores,
    thread_count,
)

# far more epochs than 3 s allow, and a patience that never stops them first
ENDLESS = UniconConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.1, learning_rate=5e-3,
                       max_epochs=100_000, patience=100_000, threads=1, batch_size=32)
BUDGET = 3.0
# one batch, the validation pass after it and the restore of the best weights: well under
# a second here; the margin is for a busy machine
MARGIN = 4.0


@pytest.fixture(scope="module")
def world():
    """(vocabulary, sequences) of 200 synthetic customers with item attributes."""
    data = make_behaviour_dataset(200, 64, 2, n_behaviour_segments=2, mean_events=12, seed=1)
    events = data.interactions.assign(customer_id=data.interactions["customer_id"].astype(str),
                                      item_id=data.interactions["item_id"].astype(str))
    items = data.items.assign(item_id=data.items["item_id"].astype(str))
    customers = data.customers.assign(customer_id=data.customers["customer_id"].astype(str))
    ordered = order_events(events, 20)
    vocabulary = build_vocabulary(ordered, items, customers)
    return vocabulary, encode_sequences(ordered, vocabulary, customers).data


def test_next_item_training_stops_at_the_budget_with_the_best_model(world, caplog) -> None:
    vocabulary, data = world
    split = leave_last_out(data)
    model = NextItemModel(UniconConfig(**{**vars(ENDLESS), "max_seconds": BUDGET}))
    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="segmentation_dagster.core.sequence.train"):
        model.fit(split.train, vocabulary, validation=(split.train, split.validation_targets))
    seconds = time.perf_counter() - started

    assert BUDGET <= seconds < BUDGET + MARGIN
    assert model.stopped_by_ == "budget"
    assert 1 <= len(model.history_) < ENDLESS.max_epochs
    # the kept weights are those of the best finished epoch, not of the interrupted one
    best = max(model.history_, key=lambda r: r.validation_ndcg)
    assert model.best_epoch_ == best.epoch
    ranks = model.rank(split.train, split.validation_targets)
    assert ndcg(ranks, ENDLESS.eval_k) == pytest.approx(best.validation_ndcg, abs=1e-6)
    scores = model.next_item_scores(split.test_inputs)
    assert np.isfinite(scores).all() and np.isfinite(model.embed(data)).all()
    # every epoch logged with the time elapsed and an estimate of the time left
    assert all(r.elapsed <= seconds and 0 <= r.seconds_left <= BUDGET for r in model.history_)
    lines = [r.getMessage() for r in caplog.records if "next-item epoch" in r.getMessage()]
    assert len(lines) == len(model.history_) and "s left" in lines[-1]


def test_a_budget_shorter_than_one_epoch_still_keeps_a_usable_model(world) -> None:
    vocabulary, data = world
    split = leave_last_out(data)
    model = NextItemModel(UniconConfig(**{**vars(ENDLESS), "max_seconds": 0.05})).fit(
        split.train, vocabulary, validation=(split.train, split.validation_targets))
    assert model.stopped_by_ == "budget" and len(model.history_) == 1
    assert np.isfinite(model.next_item_scores(split.test_inputs)).all()


def test_without_a_budget_the_epoch_cap_or_the_patience_stops(world) -> None:
    vocabulary, data = world
    split = leave_last_out(data)
    capped = NextItemModel(UniconConfig(**{**vars(ENDLESS), "max_epochs": 2})).fit(
        split.train, vocabulary, validation=(split.train, split.validation_targets))
    assert capped.stopped_by_ == "max_epochs" and len(capped.history_) == 2
    impatient = NextItemModel(UniconConfig(**{**vars(ENDLESS), "max_epochs": 50,
                                              "patience": 1})).fit(
        split.train, vocabulary, validation=(split.train, split.validation_targets))
    assert impatient.stopped_by_ in ("patience", "max_epochs")
    assert impatient.stopped_by_ == "patience" or len(impatient.history_) == 50


def test_lookalike_classifier_stops_at_the_budget_and_predicts(world) -> None:
    vocabulary, data = world
    labels = (np.arange(len(data)) % 3 == 0).astype(float)
    train, validation = np.arange(0, len(data), 2), np.arange(1, len(data), 2)
    classifier = LookalikeClassifier(UniconConfig(**{**vars(ENDLESS), "max_seconds": BUDGET}))
    started = time.perf_counter()
    classifier.fit(data.subset(train), labels[train], vocabulary,
                   validation=(data.subset(validation), labels[validation]))
    seconds = time.perf_counter() - started
    assert BUDGET <= seconds < BUDGET + MARGIN
    assert classifier.stopped_by_ == "budget" and len(classifier.history_) >= 1
    assert {"elapsed", "seconds_left"} <= set(classifier.history_[-1])
    probabilities = classifier.predict_proba(data)
    assert np.isfinite(probabilities).all() and ((0 <= probabilities) & (probabilities <= 1)).all()


def test_bad_budgets_are_refused_by_name(world) -> None:
    vocabulary, data = world
    with pytest.raises(ValueError, match="max_seconds must be positive"):
        NextItemModel(UniconConfig(**{**vars(ENDLESS), "max_seconds": 0})).fit(data, vocabulary)


def test_threads_are_capped_by_the_cores_this_process_may_use(world) -> None:
    cores = available_cores()
    assert 1 <= cores <= len(os.sched_getaffinity(0))
    assert thread_count(10_000) == cores
    assert thread_count(0) == cores
    assert thread_count(1) == 1
    with pytest.raises(ValueError, match="threads must be"):
        thread_count(-1)
    vocabulary, data = world
    previous = torch.get_num_threads()
    model = NextItemModel(UniconConfig(**{**vars(ENDLESS), "max_epochs": 1,
                                          "threads": 10_000})).fit(data, vocabulary)
    assert model.threads_ == cores
    assert torch.get_num_threads() == previous  # restored after the fit
