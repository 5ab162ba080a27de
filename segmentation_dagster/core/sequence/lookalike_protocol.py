"""The lookalike protocol, end to end (the steps themselves are in :mod:`.lookalike` and
:mod:`.train`).

Core: customers meeting the business rule on their history up to the cutoff. A
transformer pretrained on next-item prediction over those histories is fine-tuned on core
vs random non-core customers (not new at the cutoff); tau maximises F2 on a validation
split, its customers weighted to the population's core / non-core balance (slice
``validation_core`` is scored the same way); the audience is every non-core customer
scoring above tau.

Honest evaluation (slice ``future``): on non-core customers never used for training,
does the audience meet the rule after the cutoff? Against a random audience, the
heuristic "closest to meeting the rule" and logistic regression on bag-of-items counts,
all with an audience of the same size (so precision and recall compare like with like)
and by average precision.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score

from . import figures
from . import lookalike as lk
from .data import SequenceData, Vocabulary, leave_last_out
from .train import LookalikeClassifier, NextItemModel, UniconConfig

# the columns of the lookalike_labels model (dbt_like_sql/lookalike_labels.sql) used here
LABEL_COLUMNS = ("core", "joins_core_after", "new_at_cutoff", "matches_before",
                 "rule_item_events_before")
METRICS = ("precision", "recall", "f2", "average_precision")


@dataclass(frozen=True)
class LookalikeResult:
    """What the protocol found.

    ``audience``: customer_id, score, rank (non-core customers above ``tau``, best first);
    ``scores``: slice (``future`` or ``validation_core``), method, metric, value, seconds;
    ``scores_all``: every customer's classifier score (NaN for core customers).
    """

    audience: pd.DataFrame
    scores: pd.DataFrame
    tau: float
    validation_f2: float
    split: lk.LookalikeSplit
    classifier: LookalikeClassifier
    core: np.ndarray
    scores_all: np.ndarray
    validation_scores: np.ndarray
    validation_weights: np.ndarray
    noncore_validation_scores: np.ndarray
    noncore_validation_matches: np.ndarray  # rule matches before the cutoff
    candidates_joining_core_after: int
    candidate_audience_size: int

    def summary(self) -> dict[str, int | float]:
        """Counts and the threshold, for metadata and MLflow."""
        return {
            "customers_before_cutoff": len(self.core), "core": int(self.core.sum()),
            "noncore": int((~self.core).sum()), "train": len(self.split.train),
            "validation": len(self.split.validation),
            "candidates": len(self.split.candidates),
            "candidates_joining_core_after": self.candidates_joining_core_after,
            "tau": self.tau, "validation_f2": self.validation_f2,
            "lookalikes": len(self.audience),
            "candidate_audience_size": self.candidate_audience_size,
        }

    def figure(self, title: str) -> Figure:
        """The paper's Figure 4: score distributions of core and non-core customers."""
        validation_core = self.core[self.split.validation]
        return figures.lookalike(
            core_scores=self.validation_scores[validation_core],
            noncore_scores=self.noncore_validation_scores,
            noncore_with_matches=self.noncore_validation_matches > 0,
            pool_scores=self.scores_all[~self.core],
            tau=self.tau,
            validation_labels=validation_core,
            validation_scores=self.validation_scores,
            validation_weights=self.validation_weights,
            title=title,
        )


def _labels(labels: pd.DataFrame, n: int) -> dict[str, np.ndarray]:
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise ValueError(f"labels lack the columns {missing} (see lookalike_labels.sql)")
    if len(labels) != n:
        raise ValueError(f"labels has {len(labels)} rows for {n} customers: one row per "
                         "customer of data, in its order")
    return {c: labels[c].to_numpy() for c in LABEL_COLUMNS}


def run_lookalike(
    data: SequenceData,
    vocabulary: Vocabulary,
    labels: pd.DataFrame,
    classifier_config: UniconConfig,
    pretrain_config: UniconConfig | None = None,
    max_len: int | None = None,
    negatives_per_positive: float = 3.0,
    validation_share: float = 0.25,
    seed: int = 0,
) -> LookalikeResult:
    """Run the protocol on the customers of ``data`` (histories up to the cutoff).

    ``labels`` has one row per customer of ``data`` (same order) with the columns of
    :data:`LABEL_COLUMNS`. ``pretrain_config`` (None: no pretraining) trains the
    next-item model the classifier starts from, on sequences up to ``max_len``.
    ``seed`` draws the split, the random baseline and audience ties and seeds the
    logistic baseline; the networks take the seeds of their configurations.
    """
    columns = _labels(labels, len(data))
    core = columns["core"].astype(bool)
    future = columns["joins_core_after"].astype(bool)
    split = lk.split_customers(core, ~columns["new_at_cutoff"].astype(bool),
                               negatives_per_positive, validation_share, seed=seed)
    train, validation = split.train, split.validation
    started = time.perf_counter()
    classifier = _fit_classifier(data, vocabulary, core, split, classifier_config,
                                 pretrain_config, max_len)
    unicon_seconds = time.perf_counter() - started
    validation_scores = classifier.predict_proba(data.subset(validation))
    # F2 as it would be on the population, not on the sampled validation split
    weights = lk.population_weights(core[validation], int(core.sum()), int((~core).sum()))
    tau, validation_f2 = lk.choose_threshold(core[validation], validation_scores,
                                             weights=weights)
    noncore = np.flatnonzero(~core)
    scores = np.full(len(data), np.nan)
    scores[noncore] = classifier.predict_proba(data.subset(noncore))
    audience = pd.DataFrame({"customer_id": data.customer_ids[noncore],
                             "score": scores[noncore]})
    audience = audience[audience["score"] > tau].sort_values(
        ["score", "customer_id"], ascending=[False, True])
    audience["rank"] = np.arange(1, len(audience) + 1)

    # the honest evaluation, on candidates (non-core, never trained or validated on)
    candidates = split.candidates
    size = int((scores[candidates] > tau).sum())
    started = time.perf_counter()
    counts = data.item_counts(vocabulary.n_items)
    logistic = lk.BagOfItemsLogistic(seed=seed).fit(counts[train], core[train],
                                                    counts[validation], core[validation])
    logistic_seconds = time.perf_counter() - started
    heuristic = lk.rule_progress(columns["matches_before"], columns["rule_item_events_before"])
    rows = _future_rows(future[candidates], candidates, size, seed, {
        "unicon": (scores, unicon_seconds),
        "logistic_bag_of_items": (logistic.predict_proba(counts), logistic_seconds),
        "heuristic_rule_progress": (heuristic, 0.0),
        "random": (np.random.default_rng(seed).random(len(data)), 0.0),
    })
    rows += _validation_rows(core[validation], weights, {
        "unicon": validation_scores,
        "logistic_bag_of_items": logistic.predict_proba(counts[validation])})

    noncore_validation = validation[~core[validation]]
    return LookalikeResult(
        audience.reset_index(drop=True), pd.DataFrame(rows), tau, validation_f2, split,
        classifier, core, scores, validation_scores, weights,
        classifier.predict_proba(data.subset(noncore_validation)),
        np.asarray(columns["matches_before"])[noncore_validation],
        int(future[candidates].sum()), size,
    )


def _fit_classifier(data: SequenceData, vocabulary: Vocabulary, core: np.ndarray,
                    split: lk.LookalikeSplit, config: UniconConfig,
                    pretrain_config: UniconConfig | None, max_len: int | None
                    ) -> LookalikeClassifier:
    """Pretrain on next-item prediction over every history (no labels are used), then
    fine-tune on the split's core vs non-core customers."""
    pretrained = None
    if pretrain_config is not None:
        history = leave_last_out(data)
        pretrained = NextItemModel(pretrain_config).fit(
            history.train, vocabulary, validation=(history.train, history.validation_targets),
            max_len=max_len)
    return LookalikeClassifier(config, pretrained).fit(
        data.subset(split.train), core[split.train], vocabulary,
        validation=(data.subset(split.validation), core[split.validation]))


def _future_rows(y_future: np.ndarray, candidates: np.ndarray, size: int, seed: int,
                 methods: dict[str, tuple[np.ndarray, float]]) -> list[dict]:
    """Each method's top-``size`` audience among the candidates (scores of every
    customer, seconds spent), against who meets the rule after the cutoff."""
    rows = []
    for method, (method_scores, seconds) in methods.items():
        result = lk.audience_scores(y_future, method_scores[candidates], size, seed=seed)
        rows += [{"slice": "future", "method": method, "metric": metric,
                  "value": result[metric], "seconds": seconds} for metric in METRICS]
    return rows


def _validation_rows(y: np.ndarray, weights: np.ndarray,
                     method_scores: dict[str, np.ndarray]) -> list[dict]:
    """Each method at its own best-F2 threshold on the (population-weighted) validation
    split: how well it separates the core it was trained on."""
    rows = []
    for method, s in method_scores.items():
        method_tau, _ = lk.choose_threshold(y, s, weights=weights)
        precision, recall, f2 = lk.f_beta_at(y, s > method_tau, weights=weights)
        ap = average_precision_score(y, s, sample_weight=weights)
        for metric, value in zip(METRICS, (precision, recall, f2, ap), strict=True):
            rows.append({"slice": "validation_core", "method": method, "metric": metric,
                         "value": float(value), "seconds": float("nan")})
    return rows
