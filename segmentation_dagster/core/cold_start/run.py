"""The cold-start protocol run per genre (Tables 2, 3, 7) and its results.

K is chosen on validation accuracy alone (``method_run``); the test numbers at every K
are only reported (Table 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..graph import LIKE, PreferenceGraph
from ..registry import MethodContext
from .method_run import (
    KS,
    Methods,
    per_user_accuracy,
    predict_held_out,
    run_methods,
    user_mean_accuracy,
)
from .split import check_split, held_out, split_by_rating_count

# The paper's methods (Tables 2 and 6), in its order.
PAPER_METHODS = (
    "population", "model_embedding", "latent_class", "empirical_bayes", "demographic",
    "kmedoids", "spectral",
)

# --- one genre ------------------------------------------------------------------------


@dataclass
class GenreResult:
    """Everything one genre's run measured (fractions, not percentages)."""

    genre: str
    summary: pd.DataFrame  # method, n_segments, accuracy, validation_accuracy, seconds, ...
    k_sweep: pd.DataFrame  # method, n_segments, validation_accuracy, accuracy, seconds
    segments: pd.DataFrame  # Table 3: model_embedding segments vs population
    stats: dict
    models: dict = field(default_factory=dict)  # method -> model fitted on all train


def run_genre(
    edges: pd.DataFrame,
    item_ids: Sequence,
    methods: Methods,
    ks: Sequence[int] = KS,
    genre: str = "",
    train_min_ratings: int = 30,
    validation_max_ratings: int = 50,
    timing_budget: float = 0.0,
    context: MethodContext | None = None,
    item_features: pd.DataFrame | None = None,
    random_state: int = 0,
) -> GenreResult:
    """The cold-start protocol on the movies ``item_ids`` (one genre).

    ``methods`` are registry names (or reported name -> registry name), built with
    ``context`` (customer attributes, embedding options, ...; ``item_features``, indexed
    by item id, are aligned with each training graph) and ``random_state``.
    ``timing_budget`` > 0 repeats each final fit (up to 10 times, while their total time
    stays under the budget) and reports the fastest, for stable timings of quick fits.
    """
    genre_edges = edges[edges["item_id"].isin(pd.Index(item_ids))]
    split = split_by_rating_count(genre_edges, train_min_ratings, validation_max_ratings)
    check_split(split, f"genre {genre!r}")
    train_graph = PreferenceGraph.from_edges(split.train)
    fit_graph = PreferenceGraph.from_edges(split.fit)
    test = held_out(train_graph, split.test)
    validation = held_out(fit_graph, split.validation)
    for name, held in (("test", test), ("validation", validation)):
        if len(held.rows) == 0:
            raise ValueError(f"genre {genre!r}: no {name} user has a training rating")

    runs = run_methods(methods, ks, fit_graph, train_graph, validation, context,
                        item_features, random_state, timing_budget)
    summary, sweep, models, user_acc = [], [], {}, {}
    for run in runs:
        test_acc = {k: user_mean_accuracy(test.rows, test.likes, predict_held_out(model, test))
                    for k, model in run.fitted.items()}
        if run.uses_k:
            sweep += [
                {"method": run.label, "n_segments": k,
                 "validation_accuracy": run.sweep.mean(k), "accuracy": test_acc[k],
                 "seconds": run.seconds[k]}
                for k in run.sweep.ks
            ]
        chosen, model = run.sweep.chosen, run.model
        models[run.label] = model
        correct = (predict_held_out(model, test) >= 0.5) == test.likes
        user_acc[run.label] = per_user_accuracy(test.rows, correct, train_graph.n_customers)
        summary.append(
            {
                "method": run.label,
                "n_segments": int(getattr(model, "n_segments_", 1)),
                "accuracy": test_acc[chosen],
                "validation_accuracy": run.sweep.mean(chosen),
                "seconds": run.seconds[chosen],
                "seconds_all_fits": float(sum(run.seconds.values())),
            }
        )
    stats = {
        "genre": genre,
        "train_users": train_graph.n_customers,
        "train_movies": train_graph.n_items,
        "train_ratings": train_graph.n_edges,
        "fit_movies": fit_graph.n_items,
        "validation_movies": int(split.validation["item_id"].nunique()),
        "validation_ratings": len(validation.rows),
        "validation_users": validation.n_users,
        "validation_users_without_fit": validation.n_users_dropped,
        "test_movies": int(split.test["item_id"].nunique()),
        "test_ratings": len(test.rows),
        "test_users": test.n_users,
        "users_without_train": test.n_users_dropped,
        "test_ratings_dropped": test.n_edges_dropped,
        "alpha_pool": float((train_graph.matrix.data == LIKE).mean()),
    }
    segments = _segment_table(models, user_acc, stats["alpha_pool"])
    return GenreResult(genre, pd.DataFrame(summary), pd.DataFrame(sweep), segments, stats, models)


def _segment_table(models: dict, user_acc: dict, alpha_pool: float) -> pd.DataFrame:
    """Table 3: accuracy of population and model_embedding within each embedding segment."""
    if "model_embedding" not in models or "population" not in user_acc:
        return pd.DataFrame()
    me = models["model_embedding"]
    users, acc_me = user_acc["model_embedding"]
    users_pop, acc_pop = user_acc["population"]
    if not np.array_equal(users, users_pop):
        raise AssertionError("both methods must be scored on the same test users")
    seg = me.labels_[users]
    rows = []
    for k in range(me.n_segments_):
        mask = seg == k
        pop = float(acc_pop[mask].mean()) if mask.any() else np.nan
        emb = float(acc_me[mask].mean()) if mask.any() else np.nan
        rows.append(
            {
                "segment": k + 1,
                "size": int(me.segment_sizes_[k]),
                "alpha_pool": alpha_pool,
                "alpha_k": float(me.segment_alpha_[k]),
                "n_test_users": int(mask.sum()),
                "accuracy_population": pop,
                "accuracy_model_embedding": emb,
                "increase_pct": 100 * (emb - pop) / pop if pop > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


@dataclass
class ColdStartResult:
    genres: list[GenreResult]

    def _stack(self, attribute: str) -> pd.DataFrame:
        frames = [getattr(g, attribute).assign(genre=g.genre) for g in self.genres]
        frames = [f for f in frames if len(f)]
        if not frames:
            return pd.DataFrame()
        table = pd.concat(frames, ignore_index=True)
        return table[["genre"] + [c for c in table.columns if c != "genre"]]

    @property
    def summary(self) -> pd.DataFrame:
        """genre, method, n_segments, accuracy, validation_accuracy, seconds, ..."""
        return self._stack("summary")

    @property
    def k_sweep(self) -> pd.DataFrame:
        return self._stack("k_sweep")

    @property
    def segments(self) -> pd.DataFrame:
        return self._stack("segments")

    @property
    def stats(self) -> pd.DataFrame:
        return pd.DataFrame([g.stats for g in self.genres])


def run_cold_start(
    edges: pd.DataFrame,
    genre_items: dict[str, Sequence],
    methods: Methods,
    ks: Sequence[int] = KS,
    train_min_ratings: int = 30,
    validation_max_ratings: int = 50,
    timing_budget: float = 0.0,
    context: MethodContext | None = None,
    item_features: pd.DataFrame | None = None,
    random_state: int = 0,
) -> ColdStartResult:
    """:func:`run_genre` for every genre in ``genre_items`` (genre -> its item ids)."""
    return ColdStartResult(
        [
            run_genre(
                edges, items, methods, ks, genre, train_min_ratings, validation_max_ratings,
                timing_budget, context, item_features, random_state,
            )
            for genre, items in genre_items.items()
        ]
    )
