"""Label transforms: the own-mean rule for ratings, purchases and clicks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.labels import (
    clicks_to_labels,
    purchases_to_labels,
    ratings_to_likes,
)


def test_ratings_like_when_at_least_own_mean():
    ratings = pd.DataFrame(
        {
            "customer_id": ["a", "a", "a", "b", "b", "b"],
            "value": [1, 2, 3, 4, 5, 5],  # a's mean 2, b's mean 4.67
        }
    )
    labels = ratings_to_likes(ratings)
    # a rating equal to the customer's mean counts as a like; 4 is a dislike for b
    assert labels.tolist() == [-1, 1, 1, -1, 1, 1]
    assert labels.index.equals(ratings.index)


def test_ratings_scale_is_removed():
    # the same preferences on a harsher scale give the same labels
    soft = pd.DataFrame({"customer_id": ["a"] * 3, "value": [3, 4, 5]})
    harsh = pd.DataFrame({"customer_id": ["a"] * 3, "value": [1, 2, 3]})
    assert ratings_to_likes(soft).tolist() == ratings_to_likes(harsh).tolist()


def test_ratings_bad_input():
    with pytest.raises(ValueError, match="column 'value' has 1 missing or non-numeric"):
        ratings_to_likes(pd.DataFrame({"customer_id": ["a", "a"], "value": [3, np.nan]}))
    with pytest.raises(ValueError, match="column 'value' has 1 missing or non-numeric"):
        ratings_to_likes(pd.DataFrame({"customer_id": ["a", "a"], "value": [3, "five"]}))
    with pytest.raises(ValueError, match="column 'customer_id' has 1 null ids"):
        ratings_to_likes(pd.DataFrame({"customer_id": ["a", None], "value": [3, 4]}))
    with pytest.raises(ValueError, match="no column 'stars'"):
        ratings_to_likes(pd.DataFrame({"customer_id": ["a"], "value": [3]}), value_col="stars")


def test_purchases():
    assert purchases_to_labels(pd.Series([0, 2, 1])).tolist() == [-1, 1, 1]
    with pytest.raises(ValueError, match="non-negative"):
        purchases_to_labels(pd.Series([1, -1]))
    with pytest.raises(ValueError, match="non-negative"):
        purchases_to_labels(pd.Series([1, np.nan]))


@pytest.mark.parametrize(
    "flags", [[True, False, True], [1, 0, 1], ["1", "0", "1"], ["true", "false", "true"]]
)
def test_clicks(flags):
    assert clicks_to_labels(pd.Series(flags)).tolist() == [1, -1, 1]


def test_unknown_click_flags_are_named():
    with pytest.raises(ValueError, match="found \\['maybe'\\]"):
        clicks_to_labels(pd.Series([1, "maybe"]))
    with pytest.raises(ValueError, match="click flags"):
        clicks_to_labels(pd.Series([1.0, np.nan]))
