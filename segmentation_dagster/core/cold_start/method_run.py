"""One method through the cold-start protocol: the K sweep on validation accuracy
(``core.k_sweep``, the best mean, ties to the smaller K), then a refit per K on all
training movies, timed; and the paper's per-user accuracy.

Methods are registry names (``core.registry``), built with
``make_method(name, k, random_state, context)`` for each graph they are fitted on.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..graph import PreferenceGraph
from ..k_sweep import KSweep, sweep_k
from ..registry import METHODS, MethodContext, make_method
from .split import HeldOut

KS = (2, 3, 4, 5)

# registry names, or reported name -> registry name
Methods = Sequence[str] | Mapping[str, str]


# --- scoring --------------------------------------------------------------------------


def per_user_accuracy(
    rows: np.ndarray, correct: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """(users, accuracy): each user's share of correct predictions, for users with edges."""
    counts = np.bincount(rows, minlength=n_rows)
    hits = np.bincount(rows, weights=correct, minlength=n_rows)
    users = np.flatnonzero(counts)
    return users, hits[users] / counts[users]


def user_mean_accuracy(rows: np.ndarray, likes: np.ndarray, p_like: np.ndarray) -> float:
    """The paper's aggregate accuracy: predict like iff P >= 0.5, average per user."""
    if len(rows) == 0:
        raise ValueError("no held-out edge to score")
    n = int(rows.max()) + 1
    return float(per_user_accuracy(rows, (p_like >= 0.5) == likes, n)[1].mean())


def predict_held_out(model, held: HeldOut) -> np.ndarray:
    """P(like) of a fitted method for the held-out edges (rows, items or categories)."""
    return np.asarray(model.predict_proba(held.rows, held.cols), dtype=float)


def _user_accuracies(model, held: HeldOut) -> np.ndarray:
    """Each validation user's accuracy: the units of the K sweep."""
    correct = (predict_held_out(model, held) >= 0.5) == held.likes
    return per_user_accuracy(held.rows, correct, int(held.rows.max()) + 1)[1]


def timed_fit(
    make: Callable[[], object], graph: PreferenceGraph, budget: float = 0.0,
    max_repeats: int = 10,
) -> tuple[object, float]:
    """Fit ``make()`` on ``graph`` and time the fit: the fastest of repeated fits while
    their total stays under ``budget`` seconds (at most ``max_repeats``). Millisecond fits
    on a shared machine are dominated by noise, and the minimum is the usual robust
    estimate (as timeit)."""
    best = np.inf
    spent = 0.0
    for _ in range(max_repeats):
        model = make()
        start = time.perf_counter()
        model.fit(graph)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent >= budget:
            break
    return model, best


# --- one method: the K sweep and the refits -------------------------------------------


def method_labels(methods: Methods) -> dict[str, str]:
    """Reported name -> registry name. A sequence reports each method under its own
    name; a mapping renames (e.g. the multi-genre variants under the paper's names)."""
    labels = dict(methods) if isinstance(methods, Mapping) else {m: m for m in methods}
    if not isinstance(methods, Mapping) and len(labels) != len(methods):
        raise ValueError(f"methods are listed twice: {list(methods)}")
    unknown = sorted(set(labels.values()) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown segmentation methods {unknown}; known: {sorted(METHODS)}")
    return labels


def graph_context(
    context: MethodContext, graph: PreferenceGraph, item_features: pd.DataFrame | None
) -> MethodContext:
    """``context`` for fits on ``graph``: its customer count, and ``item_features``
    (indexed by item id) aligned with its columns."""
    changes: dict = {"n_customers": graph.n_customers}
    if item_features is not None:
        aligned = item_features.reindex(graph.item_ids)
        if aligned.isna().any().any():
            raise ValueError("item_features lack some training items")
        changes["item_features"] = aligned.to_numpy(dtype=float)
    return dataclasses.replace(context, **changes)


@dataclass
class MethodRun:
    """One method's sweep (validation fits) and its refits on all training movies."""

    label: str
    sweep: KSweep
    fitted: dict  # K -> model fitted on the training graph
    seconds: dict  # K -> seconds of that fit

    @property
    def model(self):
        return self.fitted[self.sweep.chosen]

    @property
    def uses_k(self) -> bool:
        return self.sweep.ks != [None]


def run_method(
    label: str,
    name: str,
    ks: Sequence[int],
    fit_graph: PreferenceGraph,
    train_graph: PreferenceGraph,
    validation: HeldOut,
    contexts: tuple[MethodContext, MethodContext],
    random_state: int = 0,
    timing_budget: float = 0.0,
) -> MethodRun | None:
    """Sweep K for registry method ``name`` (fits on ``fit_graph``, accuracy on
    ``validation``), then refit every K on ``train_graph``. None when the data do not
    support the method (the registry's factory returns None)."""
    fit_context, train_context = contexts
    uses_k = METHODS[name].uses_k
    candidates = [k for k in ks if k <= train_graph.n_customers] if uses_k else [None]
    if candidates and make_method(name, candidates[0], random_state, train_context) is None:
        return None
    sweep = sweep_k(
        candidates,
        fit=lambda k: make_method(name, k, random_state, fit_context).fit(fit_graph),
        score=lambda model: _user_accuracies(model, validation),
    )
    fitted, seconds = {}, {}
    for k in candidates:
        fitted[k], seconds[k] = timed_fit(
            lambda k=k: make_method(name, k, random_state, train_context), train_graph,
            timing_budget,
        )
    return MethodRun(label, sweep, fitted, seconds)


def run_methods(
    methods: Methods,
    ks: Sequence[int],
    fit_graph: PreferenceGraph,
    train_graph: PreferenceGraph,
    validation: HeldOut,
    context: MethodContext | None = None,
    item_features: pd.DataFrame | None = None,
    random_state: int = 0,
    timing_budget: float = 0.0,
) -> list[MethodRun]:
    """:func:`run_method` for every method, in order, with ``context`` made specific to
    each graph (:func:`graph_context`); methods the data do not support are left out."""
    context = context or MethodContext()
    contexts = (graph_context(context, fit_graph, item_features),
                graph_context(context, train_graph, item_features))
    runs = [
        run_method(label, name, ks, fit_graph, train_graph, validation, contexts,
                   random_state, timing_budget)
        for label, name in method_labels(methods).items()
    ]
    return [r for r in runs if r is not None]
