"""Lookalike audiences (the paper's Section 3.2 and 4.2): thresholds, splits, baselines
and the honest evaluation against what happens after the cutoff.

The core segment is set by a business rule evaluated on history up to a cutoff time;
a classifier learns core vs random non-core customers; the lookalikes are the non-core
customers whose P(core) exceeds tau, chosen by the best F2 on a validation split.

The honest question is whether the audience chosen at the cutoff meets the rule *after*
it. Customers used to train or validate the classifier are excluded from that
evaluation (their scores are in-sample), so it runs on held-out non-core candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_recall_fscore_support,
)
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import threadpool_limits


@dataclass(frozen=True)
class RuleSpec:
    """At least ``min_count`` interactions satisfying ``filter`` (an SQL predicate over an
    interaction joined with its item: event, value, timestamp, category, price, ...)."""

    filter: str
    min_count: int

    def __post_init__(self) -> None:
        if not self.filter.strip():
            raise ValueError("the business rule's filter is empty")
        if self.min_count < 1:
            raise ValueError(f"the business rule's min_count must be >= 1, got {self.min_count}")

    @property
    def text(self) -> str:
        return f"at least {self.min_count} interactions where {self.filter}"


def check_core(core: np.ndarray, rule: RuleSpec, cutoff: object) -> None:
    """A rule that matches nobody, or everybody, cannot define a lookalike audience."""
    core = np.asarray(core, dtype=bool)
    if not core.any():
        raise ValueError(
            f"the business rule ({rule.text}) matches no customer up to the cutoff {cutoff}"
        )
    if core.all():
        raise ValueError(
            f"the business rule ({rule.text}) matches every customer up to the cutoff "
            f"{cutoff}: there is no one left to find lookalikes among"
        )


def f_beta_curve(y_true: np.ndarray, scores: np.ndarray, beta: float = 2.0,
                 weights: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """F-beta, precision and recall of "score >= t" for every distinct score t
    (descending), each customer counting ``weights`` times (default 1). Returns
    (thresholds, f, precision, recall).

    Precision and recall are scikit-learn's ``precision_recall_curve`` (which drops
    customers of weight 0), turned to descending thresholds without its final
    (precision 1, recall 0) point; scikit-learn has no F-beta curve, so F-beta is
    computed from them (0 where precision and recall are both 0)."""
    y_true = np.asarray(y_true, dtype=bool)
    if not y_true.any():
        raise ValueError("F-beta needs at least one positive")
    precision, recall, thresholds = precision_recall_curve(
        y_true, np.asarray(scores, dtype=float), sample_weight=weights
    )
    precision, recall, thresholds = precision[-2::-1], recall[-2::-1], thresholds[::-1]
    b2 = beta**2
    denominator = b2 * precision + recall
    f = np.divide((1 + b2) * precision * recall, denominator,
                  out=np.zeros_like(precision), where=denominator > 0)
    return thresholds, f, precision, recall


def population_weights(y_true: np.ndarray, n_positive: int, n_negative: int) -> np.ndarray:
    """Weights that make a validation sample count like the population it was drawn from:
    each positive stands for n_positive / (positives in the sample) customers, each
    negative for n_negative / (negatives in the sample).

    The classifier's validation split has about one core customer in four (negatives
    are sampled), while the population may have one in twenty; unweighted, F2 rewards
    calling nearly everyone a lookalike (at a base rate of 0.5, "all positive" already
    scores F2 = 0.83)."""
    y_true = np.asarray(y_true, dtype=bool)
    positives, negatives = int(y_true.sum()), int((~y_true).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("population weights need positives and negatives in the sample")
    return np.where(y_true, n_positive / positives, n_negative / negatives)


def choose_threshold(y_true: np.ndarray, scores: np.ndarray, beta: float = 2.0,
                     weights: np.ndarray | None = None) -> tuple[float, float]:
    """tau with the best F-beta on (y_true, scores), placed halfway between the last
    score kept and the next lower one, so "score > tau" selects the same customers.
    Returns (tau, F-beta)."""
    thresholds, f, _, _ = f_beta_curve(y_true, scores, beta, weights)
    best = int(np.argmax(f))
    lower = thresholds[best + 1] if best + 1 < len(thresholds) else thresholds[best] - 1e-6
    return float((thresholds[best] + lower) / 2), float(f[best])


def f_beta_at(y_true: np.ndarray, selected: np.ndarray, beta: float = 2.0,
              weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """(precision, recall, F-beta) of a selection, by scikit-learn's
    ``precision_recall_fscore_support``; precision is NaN for an empty selection, recall
    and F-beta are NaN when there is no positive."""
    y_true, selected = np.asarray(y_true, bool), np.asarray(selected, bool)
    if len(y_true) == 0:  # scikit-learn refuses empty input; nothing selected, no positive
        return float("nan"), float("nan"), float("nan")
    precision, recall, f, _ = precision_recall_fscore_support(
        y_true, selected, beta=beta, sample_weight=weights, average="binary",
        zero_division=np.nan,
    )
    if not y_true.any():
        # scikit-learn scores F 0 for a non-empty selection without positives; the
        # F-beta of an audience for a rule nobody meets is undefined, as before
        f = float("nan")
    return float(precision), float(recall), float(f)


def top_m(scores: np.ndarray, m: int, seed: int = 0) -> np.ndarray:
    """Boolean mask of the m best scores, ties broken at random (seeded)."""
    scores = np.asarray(scores, dtype=float)
    tiebreak = np.random.default_rng(seed).random(len(scores))
    order = np.lexsort((tiebreak, -scores))
    selected = np.zeros(len(scores), dtype=bool)
    selected[order[:max(int(m), 0)]] = True
    return selected


def audience_scores(y_future: np.ndarray, scores: np.ndarray, size: int,
                    beta: float = 2.0, seed: int = 0) -> dict[str, float]:
    """Precision, recall and F-beta of the top-``size`` audience, and the average
    precision of the scores, against who meets the rule later."""
    y_future = np.asarray(y_future, dtype=bool)
    precision, recall, f = f_beta_at(y_future, top_m(scores, size, seed), beta)
    ap = (float(average_precision_score(y_future, scores))
          if y_future.any() and not y_future.all() else float("nan"))
    return {"precision": precision, "recall": recall, f"f{beta:g}": f,
            "average_precision": ap, "audience_size": float(size)}


@dataclass(frozen=True)
class LookalikeSplit:
    """Row indices (into the customers with history before the cutoff)."""

    train: np.ndarray
    validation: np.ndarray
    candidates: np.ndarray  # non-core, never trained on: scored for the honest evaluation


def split_customers(
    core: np.ndarray,
    eligible_negative: np.ndarray,
    negatives_per_positive: float = 3.0,
    validation_share: float = 0.25,
    max_negative_share: float = 0.5,
    seed: int = 0,
) -> LookalikeSplit:
    """Positives: every core customer. Negatives: random non-core customers among the
    ``eligible_negative`` ones (not new at the cutoff), ``negatives_per_positive`` per
    positive but at most ``max_negative_share`` of them, so at least the rest of the
    non-core customers stay held out. Positives and negatives are each split into train
    and validation. Every non-core customer not sampled is a candidate."""
    core = np.asarray(core, dtype=bool)
    eligible_negative = np.asarray(eligible_negative, dtype=bool) & ~core
    rng = np.random.default_rng(seed)
    positives = rng.permutation(np.flatnonzero(core))
    pool = rng.permutation(np.flatnonzero(eligible_negative))
    n_negatives = min(int(round(negatives_per_positive * len(positives))),
                      int(max_negative_share * len(pool)))
    if n_negatives < 2 or len(positives) < 2:
        raise ValueError(
            f"too few customers for a lookalike model: {len(positives)} core and "
            f"{len(pool)} eligible non-core customers"
        )
    negatives = pool[:n_negatives]

    def cut(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_validation = min(max(1, int(round(validation_share * len(rows)))), len(rows) - 1)
        return rows[n_validation:], rows[:n_validation]

    (pos_train, pos_val), (neg_train, neg_val) = cut(positives), cut(negatives)
    used = np.zeros(len(core), dtype=bool)
    used[negatives] = True
    candidates = np.flatnonzero(~core & ~used)
    return LookalikeSplit(np.sort(np.r_[pos_train, neg_train]),
                          np.sort(np.r_[pos_val, neg_val]), candidates)


def rule_progress(matches_before: np.ndarray, rule_item_events: np.ndarray) -> np.ndarray:
    """The heuristic "closest to meeting the rule": the number of rule-matching
    interactions so far; ties broken by the number of interactions with the items the rule
    concerns (any event), scaled below one so it never outranks a whole match."""
    matches_before = np.asarray(matches_before, dtype=float)
    related = np.asarray(rule_item_events, dtype=float)
    return matches_before + related / (related.max(initial=0.0) + 1.0)


class BagOfItemsLogistic(BaseEstimator):
    """Logistic regression on log(1 + counts) of each item in the history, class-balanced,
    C picked by validation average precision over a small grid.

    A scikit-learn estimator (``get_params``, ``clone``), but not a ``ClassifierMixin``:
    ``fit`` needs the validation split besides (x, y), and there is no ``predict``."""

    def __init__(self, c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0), seed: int = 0):
        self.c_grid = c_grid
        self.seed = seed

    def fit(self, x: sp.csr_matrix, y: np.ndarray, x_val: sp.csr_matrix,
            y_val: np.ndarray) -> BagOfItemsLogistic:
        x, x_val = x.log1p(), x_val.log1p()
        self.scores_ = {}
        best = None
        with threadpool_limits(2):
            for c in self.c_grid:
                model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000,
                                           random_state=self.seed).fit(x, y)
                ap = float(average_precision_score(y_val, model.predict_proba(x_val)[:, 1]))
                self.scores_[c] = ap
                if best is None or ap > best[0]:
                    best = (ap, c, model)
        _, self.c_, self.model_ = best
        return self

    def predict_proba(self, x: sp.csr_matrix) -> np.ndarray:
        check_is_fitted(self, "model_", msg="%(name)s is not fitted; call fit first")
        return self.model_.predict_proba(x.log1p())[:, 1]
