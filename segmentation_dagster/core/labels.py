"""Turn raw observations into +1/-1 edge labels. Vectorised over a long table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .graph import DISLIKE, LIKE


def ratings_to_likes(
    ratings: pd.DataFrame, customer_col: str = "customer_id", value_col: str = "value"
) -> pd.Series:
    """Like (+1) when a rating is at least that customer's own mean rating, else -1.

    This is the paper's rule (Section 5): it removes each customer's rating scale.
    """
    for col in (customer_col, value_col):
        if col not in ratings.columns:
            raise ValueError(f"ratings have no column {col!r}; columns are {list(ratings.columns)}")
    if ratings[customer_col].isna().any():
        # groupby would drop these rows and their mean would be NaN: every rating a dislike
        raise ValueError(
            f"column {customer_col!r} has {int(ratings[customer_col].isna().sum())} null ids"
        )
    values = pd.to_numeric(ratings[value_col], errors="coerce")
    if values.isna().any():
        raise ValueError(
            f"column {value_col!r} has {int(values.isna().sum())} missing or non-numeric ratings"
        )
    mean = values.groupby(ratings[customer_col]).transform("mean")
    return pd.Series(np.where(values >= mean, LIKE, DISLIKE).astype(np.int8), index=ratings.index)


def purchases_to_labels(values: pd.Series) -> pd.Series:
    """Purchase (+1) when the count is positive, no purchase (-1) when it is 0."""
    counts = pd.to_numeric(values, errors="coerce")
    if counts.isna().any() or (counts < 0).any():
        raise ValueError("purchase counts must be non-negative numbers")
    return pd.Series(np.where(counts > 0, LIKE, DISLIKE).astype(np.int8), index=values.index)


def clicks_to_labels(clicked: pd.Series) -> pd.Series:
    """Click (+1) versus an impression without a click (-1); accepts bools or 0/1."""
    # True == 1 and False == 0 as dict keys, so this covers bools and 0/1 alike
    flags = clicked.map({True: 1, False: 0, "1": 1, "0": 0, "true": 1, "false": 0})
    if flags.isna().any():
        bad = clicked[flags.isna()].unique()[:5].tolist()
        raise ValueError(f"click flags must be 0/1 or true/false; found {bad}")
    return pd.Series(np.where(flags > 0, LIKE, DISLIKE).astype(np.int8), index=clicked.index)
