"""The K sweep, written once: fit a model per candidate K, score it on validation data,
and choose K by a rule.

Two protocols use it:

- the pipeline's choice of K (:func:`select_embedding_k`, the ``k_selection`` asset):
  k-means on the customer embedding per K, each validation customer's summed edge
  log-likelihood, and the one-standard-error rule;
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
import pandas as pd
from sklearn.metrics import silhouette_score

from .clustering import candidate_ks, select_k, select_k_one_standard_error
from .graph import LIKE, PreferenceGraph
from .pooled import edge_log_likelihood
from .segmenters import ModelEmbeddingSegmenter

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


def silhouette(embedding: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of a 1-D clustering; NaN where it is undefined (K >= distinct points)."""
    if not 2 <= len(np.unique(labels)) < len(np.unique(embedding)):
        return float("nan")
    return float(silhouette_score(embedding[:, None], labels))


def embedding_candidate_ks(embedding: np.ndarray, k_min: int, k_max: int) -> list[int]:
    """The Ks in [k_min, k_max] next to the number of KDE modes of the embedding (Figure
    1) that leave no empty segment; ``[k_min]`` when none is (and k_min is possible)."""
    n_distinct = len(np.unique(embedding))
    near_modes = candidate_ks(embedding, around=1)
    ks = [k for k in range(k_min, k_max + 1) if k in near_modes and k <= n_distinct]
    return ks or [k for k in (k_min,) if k <= n_distinct]


@dataclass(frozen=True)
class EmbeddingKSelection:
    """The chosen K, the candidates, and one row per K: k, validation_log_likelihood (per
    edge), validation_accuracy, silhouette, standard_error (of the one-standard-error
    rule), segment_sizes (as text) and chosen."""

    chosen: int
    candidates: list[int]
    table: pd.DataFrame


# the per-K numbers of EmbeddingKSelection.table that are metrics (MLflow logs them)
K_SELECTION_METRICS = (
    "validation_log_likelihood", "validation_accuracy", "silhouette", "standard_error",
)


def select_embedding_k(
    train: PreferenceGraph,
    embedding: np.ndarray,
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    k_min: int,
    k_max: int,
    random_state: int = 0,
    silhouette_sample: int = 5000,
) -> EmbeddingKSelection:
    """Choose K for the model-based embedding (the pipeline's ``k_selection``).

    Candidates come from :func:`embedding_candidate_ks`; per K the customers of ``train``
    are clustered on ``embedding`` (aligned with its rows) and the validation edges
    ``(rows, cols, labels)`` scored. K is the smallest within one standard error of the
    best mean per-customer log-likelihood. ``random_state`` seeds the segmenters and the
    silhouette's sample of ``silhouette_sample`` customers.
    """
    embedding = np.asarray(embedding, dtype=float)
    if embedding.shape != (train.n_customers,):
        raise ValueError(
            f"embedding must hold one value per customer of train ({train.n_customers}), "
            f"got shape {embedding.shape}"
        )
    ks = embedding_candidate_ks(embedding, k_min, k_max)
    if not ks:
        raise ValueError(f"no K in [{k_min}, {k_max}] is possible with this embedding")
    rows, cols, labels = validation
    # customers, not edges, are the independent units: score each customer's sum
    scored = np.bincount(rows, minlength=train.n_customers) > 0

    def fit(k: int) -> ModelEmbeddingSegmenter:
        return ModelEmbeddingSegmenter(k, random_state=random_state).fit_embedding(
            train, embedding
        )

    def score(model: ModelEmbeddingSegmenter) -> np.ndarray:
        log_likelihood = edge_log_likelihood(model.predict_proba(rows, cols), labels)
        return np.bincount(rows, log_likelihood, train.n_customers)[scored]

    sweep = sweep_k(ks, fit, score, rule="one_standard_error")
    sample = np.random.default_rng(random_state).permutation(len(embedding))[:silhouette_sample]
    table = []
    for k in ks:
        model = sweep.models[k]
        p = model.predict_proba(rows, cols)
        table.append({
            "k": k,
            "validation_log_likelihood": float(edge_log_likelihood(p, labels).mean()),
            "validation_accuracy": float(((p >= 0.5) == (labels == LIKE)).mean()),
            "silhouette": silhouette(embedding[sample], model.labels_[sample]),
            "standard_error": sweep.selection[k]["se"],
            "segment_sizes": str(model.segment_sizes_.tolist()),
            "chosen": k == sweep.chosen,
        })
    return EmbeddingKSelection(int(sweep.chosen), ks, pd.DataFrame(table))
