"""The next-item protocol (data-driven training): train the transformer on all but each
customer's last two events, early-stop on the second-to-last, then rank the last item
over every item, against popularity on the same inputs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .data import SequenceData, Vocabulary, leave_last_out
from .metrics import PopularityRanker, hit_rate, ndcg, rank_targets
from .train import EpochRecord, NextItemModel, UniconConfig


@dataclass(frozen=True)
class NextItemEvaluation:
    """The fitted model and its test scores.

    ``scores``: one row per (method, metric) with columns method, metric, value, seconds
    (methods ``unicon`` and ``popularity``; metrics ``hr@10`` and ``ndcg@10``).
    """

    model: NextItemModel
    scores: pd.DataFrame
    seconds: float
    exclude_seen: bool
    tested: int
    customers_without_target: int

    @property
    def protocol(self) -> str:
        seen = "excluded" if self.exclude_seen else "kept (customers repeat items)"
        return (f"leave-last-out, full ranking over {self.model.vocabulary_.n_items} items, "
                f"seen items {seen}, {self.tested} customers")


def evaluate_next_item(
    data: SequenceData,
    vocabulary: Vocabulary,
    config: UniconConfig,
    max_len: int | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> NextItemEvaluation:
    """Fit a :class:`NextItemModel` with ``config`` by leave-last-out and score it.

    Items a customer already has are left out of the ranking when no customer repeats an
    item (then they cannot come next); otherwise they stay in.
    """
    if len(data) == 0:
        raise ValueError("data has no customer: nothing to train a next-item model on")
    split = leave_last_out(data)
    exclude_seen = not data.has_repeats()
    model = NextItemModel(config)
    started = time.perf_counter()
    model.fit(split.train, vocabulary, validation=(split.train, split.validation_targets),
              exclude_seen=exclude_seen, max_len=max_len, on_epoch=on_epoch)
    seconds = time.perf_counter() - started
    ranks = model.rank(split.test_inputs, split.test_targets)
    tested = np.flatnonzero(split.test_targets > 0)
    popularity = PopularityRanker().fit(split.test_inputs, vocabulary.n_items)
    seen = split.test_inputs.items[tested] if exclude_seen else None
    popularity_ranks = rank_targets(popularity.scores(len(tested)),
                                    split.test_targets[tested], seen)
    rows = []
    for method, r, s in (("unicon", ranks, seconds), ("popularity", popularity_ranks, 0.0)):
        rows.append({"method": method, "metric": "hr@10", "value": hit_rate(r), "seconds": s})
        rows.append({"method": method, "metric": "ndcg@10", "value": ndcg(r), "seconds": s})
    return NextItemEvaluation(model, pd.DataFrame(rows), seconds, exclude_seen, len(tested),
                              int((split.test_targets == 0).sum()))
