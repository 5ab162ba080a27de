"""Several genres at once (Appendix D.3, Table 8): one run over the movies of several
genres, each movie in one category, with methods that predict per (customer, category)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..graph import PreferenceGraph
from ..registry import MethodContext
from .method_run import KS, Methods, predict_held_out, run_methods, user_mean_accuracy
from .split import HeldOut, category_held_out, check_split, split_by_rating_count

# Appendix D.3's three methods, reported under the single-genre names: per-genre pooled
# rates, the latent class model with per-genre rates, and Algorithm 4 (per-genre pooled
# model, rank-2 completion, k-means) with per-(segment, genre) rates.
MULTI_GENRE_METHODS = {
    "population": "population_by_category",
    "model_embedding": "model_embedding_by_category",
    "latent_class": "latent_class_by_category",
}


@dataclass
class MultiGenreResult:
    summary: pd.DataFrame  # genre ('all' = every test movie), method, n_segments, accuracy, ...
    k_sweep: pd.DataFrame
    stats: pd.DataFrame
    models: dict = field(default_factory=dict)


def run_multi_genre(
    edges: pd.DataFrame,
    item_genre: pd.Series,
    methods: Methods = MULTI_GENRE_METHODS,
    ks: Sequence[int] = KS,
    train_min_ratings: int = 30,
    validation_max_ratings: int = 50,
    timing_budget: float = 0.0,
    context: MethodContext | None = None,
    random_state: int = 0,
) -> MultiGenreResult:
    """Appendix D.3: one run over the movies of several genres, each movie in one
    category (``item_genre``: item_id -> genre, e.g. from ``single_genre_movies``).
    K is chosen on validation accuracy over all validation movies. The methods predict
    per (customer, category): by default :data:`MULTI_GENRE_METHODS`."""
    sub = edges[edges["item_id"].isin(item_genre.index)]
    sub = sub.assign(category=sub["item_id"].map(item_genre).to_numpy())
    split = split_by_rating_count(sub, train_min_ratings, validation_max_ratings)
    check_split(split, "multi-genre run")

    def graph_of(part: pd.DataFrame) -> PreferenceGraph:
        categories = part.drop_duplicates("item_id").set_index("item_id")["category"]
        return PreferenceGraph.from_edges(part, item_categories=categories)

    train_graph, fit_graph = graph_of(split.train), graph_of(split.fit)
    if len(np.unique(fit_graph.item_categories)) != len(np.unique(train_graph.item_categories)):
        raise ValueError("some genre has no movie above validation_max_ratings")
    test = category_held_out(train_graph, split.test)
    validation = category_held_out(fit_graph, split.validation)
    categories = np.unique(train_graph.item_categories)
    runs = run_methods(methods, ks, fit_graph, train_graph, validation, context, None,
                        random_state, timing_budget)
    summary, sweep, models = [], [], {}
    for run in runs:
        if run.uses_k:
            sweep += [
                {"method": run.label, "n_segments": k,
                 "validation_accuracy": run.sweep.mean(k),
                 "accuracy": user_mean_accuracy(test.rows, test.likes,
                                                predict_held_out(run.fitted[k], test)),
                 "seconds": run.seconds[k]}
                for k in run.sweep.ks
            ]
        model = models[run.label] = run.model
        p = predict_held_out(model, test)
        for b, genre in [(None, "all")] + list(enumerate(categories)):
            mask = np.ones(len(p), bool) if b is None else test.cols == b
            summary.append(
                {
                    "genre": genre,
                    "method": run.label,
                    "n_segments": int(getattr(model, "n_segments_", 1)),
                    "accuracy": user_mean_accuracy(test.rows[mask], test.likes[mask], p[mask]),
                    "validation_accuracy": run.sweep.mean(run.sweep.chosen)
                    if b is None else np.nan,
                    "seconds": run.seconds[run.sweep.chosen],
                }
            )
    stats = _multi_genre_stats(split, test, categories)
    return MultiGenreResult(pd.DataFrame(summary), pd.DataFrame(sweep), stats, models)


def _multi_genre_stats(split, test: HeldOut, categories: np.ndarray) -> pd.DataFrame:
    stats = []
    for genre in ["all", *categories]:
        tr = split.train if genre == "all" else split.train[split.train["category"] == genre]
        te_mask = np.ones(len(test.rows), bool) if genre == "all" else (
            test.cols == np.searchsorted(categories, genre)
        )
        stats.append(
            {
                "genre": genre,
                "train_users": int(tr["customer_id"].nunique()),
                "train_movies": int(tr["item_id"].nunique()),
                "train_ratings": len(tr),
                "test_movies": int(
                    split.test["item_id"].nunique() if genre == "all"
                    else split.test.loc[split.test["category"] == genre, "item_id"].nunique()
                ),
                "test_ratings": int(te_mask.sum()),
                "test_users": int(len(np.unique(test.rows[te_mask]))),
                "users_without_train": test.n_users_dropped if genre == "all" else np.nan,
            }
        )
    return pd.DataFrame(stats)
