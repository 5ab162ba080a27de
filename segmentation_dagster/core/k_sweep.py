"""The K sweep, written once: fit a model per candidate K, score it on validation data,
and choose K by a rule.

The cold-start protocol uses it (the pipeline's ``k_selection`` chooses K together with
the pooled model and the embedding, in ``core.selection``, whose one-standard-error rule
generalises this one; both take their candidate Ks from :func:`embedding_candidate_ks`
when they follow the paper's rule):

- the cold-start protocol (``core.cold_start``): every method fitted per K on the
  training movies above the validation threshold, each validation user's accuracy, and
  the best mean (ties to the smaller K).

Scores are one number per independent unit (a customer), higher is better, aligned
across K, so that a rule can weigh a gain against its noise.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .clustering import candidate_ks, select_k, select_k_one_standard_error

Rule = Literal["best", "one_standard_error"]
RULES = ("best", "one_standard_error")


@dataclass(frozen=True)
class KSweep:
    """What a sweep measured.

    ``scores[k]``: the validation score of each unit for K=k; ``models[k]``: the model
    fitted for it; ``selection[k]``: the rule's summary (``mean``, and for the
    one-standard-error rule ``gap_to_best`` and ``se``); ``chosen``: the chosen K. A
    method whose segments do not depend on K sweeps the single candidate ``None``.
    """

    ks: list
    scores: dict
    models: dict
    selection: dict
    chosen: Hashable

    def mean(self, k: Hashable) -> float:
        """The mean validation score of K=k (e.g. the validation accuracy)."""
        return self.selection[k]["mean"]


def sweep_k(
    ks: Sequence[int | None],
    fit: Callable[[int | None], object],
    score: Callable[[object], np.ndarray],
    rule: Rule = "best",
) -> KSweep:
    """Fit ``fit(k)`` for every K in ``ks``, score it with ``score(model)`` (one value per
    validation unit, higher is better) and choose K by ``rule``:

    - ``"best"``: the highest mean score, ties to the smaller K (:func:`select_k`);
    - ``"one_standard_error"``: the smallest K within one standard error of the best
      (:func:`select_k_one_standard_error`).

    With one candidate there is nothing to choose: it is chosen.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    ks = list(ks)
    if not ks:
        raise ValueError("no candidate K to sweep")
    models, scores = {}, {}
    for k in ks:
        models[k] = fit(k)
        scores[k] = np.asarray(score(models[k]), dtype=float)
    if rule == "one_standard_error":
        chosen, selection = select_k_one_standard_error(scores)
    else:
        means = {k: float(scores[k].mean()) for k in ks}
        chosen = ks[0] if len(ks) == 1 else select_k(ks, means.__getitem__)[0]
        selection = {k: {"mean": means[k]} for k in ks}
    return KSweep(ks, scores, models, selection, chosen)


# --- the pipeline's choice of K on the customer embedding -----------------------------


def embedding_candidate_ks(embedding: np.ndarray, k_min: int, k_max: int) -> list[int]:
    """The Ks in [k_min, k_max] next to the number of KDE modes of the embedding (Figure
    1) that leave no empty segment; ``[k_min]`` when none is (and k_min is possible)."""
    n_distinct = len(np.unique(embedding))
    near_modes = candidate_ks(embedding, around=1)
    ks = [k for k in range(k_min, k_max + 1) if k in near_modes and k <= n_distinct]
    return ks or [k for k in (k_min,) if k <= n_distinct]
