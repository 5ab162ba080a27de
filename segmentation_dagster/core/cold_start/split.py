"""The cold-start data: like labels, demographic attributes, the split of movies by
rating count, and held-out edges mapped onto a training graph."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..graph import LIKE, PreferenceGraph
from ..labels import ratings_to_likes
from ..movielens import genre_column

AGE_BANDS = ((24, "<=24"), (44, "25-44"), (64, "45-64"), (np.inf, "65+"))


# --- labels and attributes ------------------------------------------------------------


def like_edges(ratings: pd.DataFrame) -> pd.DataFrame:
    """(customer_id, item_id, label) with label +1 iff rating >= the user's mean rating
    over ALL their ratings (the paper's Section 5 rule)."""
    for col in ("customer_id", "item_id", "value"):
        if col not in ratings.columns:
            raise ValueError(f"ratings have no column {col!r}; columns are {list(ratings.columns)}")
    return pd.DataFrame(
        {
            "customer_id": ratings["customer_id"].to_numpy(),
            "item_id": ratings["item_id"].to_numpy(),
            "label": ratings_to_likes(ratings).to_numpy(),
        }
    )


def age_group(age: pd.Series) -> pd.Series:
    """<=24, 25-44, 45-64, 65+. For ml-1m, whose ages are band lower bounds, the 56+ band
    lands in 45-64."""
    age = pd.to_numeric(age, errors="coerce")
    bins = [-np.inf] + [upper for upper, _ in AGE_BANDS]
    return pd.cut(age, bins=bins, labels=[name for _, name in AGE_BANDS]).astype("string")


def demographic_attributes(users: pd.DataFrame) -> pd.DataFrame:
    """Age group x gender per user, indexed by customer_id (for DemographicSegmenter)."""
    for col in ("customer_id", "age", "gender"):
        if col not in users.columns:
            raise ValueError(f"users have no column {col!r}; columns are {list(users.columns)}")
    return pd.DataFrame(
        {"age_group": age_group(users["age"]).to_numpy(), "gender": users["gender"].to_numpy()},
        index=pd.Index(users["customer_id"].to_numpy(), name="customer_id"),
    )


def single_genre_movies(movies: pd.DataFrame, genres: Sequence[str]) -> pd.Series:
    """Appendix D.3: the movies tagged with exactly one of ``genres`` (other genres may
    be present), mapped to that genre. Returns a Series item_id -> genre."""
    columns = [genre_column(g) for g in genres]
    missing = [c for c in columns if c not in movies.columns]
    if missing:
        raise ValueError(f"movies have no genre columns {missing}")
    flags = movies[columns].to_numpy().astype(bool)
    one = flags.sum(axis=1) == 1
    chosen = np.asarray(genres, dtype=object)[flags[one].argmax(axis=1)]
    return pd.Series(chosen, index=pd.Index(movies["item_id"].to_numpy()[one], name="item_id"))


# --- splits ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ColdStartSplit:
    """Edges of one protocol run, split by the movies' rating counts.

    ``fit`` (> validation_max ratings) + ``validation`` (train_min..validation_max) make
    ``train``; ``test`` holds the movies with fewer than train_min ratings.
    """

    train: pd.DataFrame
    fit: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    train_min_ratings: int
    validation_max_ratings: int


def split_by_rating_count(
    edges: pd.DataFrame, train_min_ratings: int = 30, validation_max_ratings: int = 50
) -> ColdStartSplit:
    """Split edges by how often their movie was rated (counted on ``edges``, which should
    hold every rating of the movies concerned)."""
    if validation_max_ratings < train_min_ratings:
        raise ValueError(
            f"validation_max_ratings ({validation_max_ratings}) must be >= "
            f"train_min_ratings ({train_min_ratings})"
        )
    counts = edges["item_id"].map(edges["item_id"].value_counts()).to_numpy()
    in_train = counts >= train_min_ratings
    in_fit = counts > validation_max_ratings
    return ColdStartSplit(
        train=edges[in_train],
        fit=edges[in_fit],
        validation=edges[in_train & ~in_fit],
        test=edges[~in_train],
        train_min_ratings=train_min_ratings,
        validation_max_ratings=validation_max_ratings,
    )


def check_split(split: ColdStartSplit, what: str) -> None:
    """Raise when a part of the split is empty (``what`` names the run in the message)."""
    for part in ("fit", "validation", "test"):
        if len(getattr(split, part)) == 0:
            raise ValueError(f"{what}: the {part} set is empty")


# --- held-out edges -------------------------------------------------------------------


@dataclass(frozen=True)
class HeldOut:
    """Held-out edges mapped onto a training graph's rows (unscorable users removed)."""

    rows: np.ndarray
    cols: np.ndarray  # item index in ``items`` (categories for the multi-genre run)
    likes: np.ndarray
    n_users: int
    n_users_dropped: int
    n_edges_dropped: int


def held_out(graph: PreferenceGraph, edges: pd.DataFrame) -> HeldOut:
    """``edges`` of users in ``graph``, as its rows; the others are counted and dropped:
    a user without a training rating has no segment, so no method can score them."""
    rows = pd.Index(graph.customer_ids).get_indexer(edges["customer_id"])
    known = rows >= 0
    users = edges["customer_id"]
    return HeldOut(
        rows=rows[known],
        cols=np.zeros(int(known.sum()), dtype=int),
        likes=edges["label"].to_numpy()[known] == LIKE,
        n_users=int(users[known].nunique()),
        n_users_dropped=int(users[~known].nunique()),
        n_edges_dropped=int((~known).sum()),
    )


def category_held_out(graph: PreferenceGraph, edges: pd.DataFrame) -> HeldOut:
    """:func:`held_out` with ``cols`` the index of each edge's ``category`` among the
    graph's sorted categories (the multi-genre models predict per category)."""
    held = held_out(graph, edges)
    categories = np.unique(graph.item_categories)
    known = pd.Index(graph.customer_ids).get_indexer(edges["customer_id"]) >= 0
    cols = np.searchsorted(categories, edges["category"].to_numpy()[known])
    return HeldOut(
        held.rows, cols, held.likes, held.n_users, held.n_users_dropped, held.n_edges_dropped
    )
