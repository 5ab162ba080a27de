"""Segment profiles on small planted data, rated and purchase-only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.profiles import (
    SegmentProfiles,
    profile_headline,
    profiles_markdown,
    segment_profiles,
)

GENRES = np.array(["Comedy", "Horror", "Romance"])


def planted_purchase_graph(seed: int = 0):
    """Segment k buys mostly from category GENRES[k]; item 60 (its own category
    'Oddity') is bought once, by customer 0 of segment 0."""
    rng = np.random.default_rng(seed)
    m, block, n_buy = 300, 20, 12
    segments = rng.choice(3, size=m, p=[0.5, 0.3, 0.2])
    item_category = np.repeat(np.arange(3), block)
    weight = np.where(item_category[None, :] == segments[:, None], 0.8 / block, 0.2 / 40)
    keys = np.log(weight) + rng.gumbel(size=weight.shape)
    cols = np.argsort(-keys, axis=1)[:, :n_buy].ravel()
    rows = np.repeat(np.arange(m), n_buy)
    first = np.flatnonzero(segments == 0)[0]
    rows = np.append(rows, first)
    cols = np.append(cols, 3 * block)
    categories = np.append(GENRES[item_category], "Oddity")
    graph = PreferenceGraph.from_arrays(
        rows,
        cols,
        np.ones(len(rows), dtype=np.int8),
        customer_ids=np.arange(1000, 1000 + m),
        item_ids=np.arange(3 * block + 1),
        item_categories=categories,
    )
    return graph, segments, 3 * block


def planted_rated_graph(seed: int = 0):
    """Everyone rates every item; segment k likes GENRES[k] items with p 0.85, others
    0.35, so segment k's favourite category is GENRES[k]."""
    rng = np.random.default_rng(seed)
    m, block = 240, 10
    segments = rng.choice(3, size=m, p=[0.4, 0.35, 0.25])
    item_category = np.repeat(np.arange(3), block)
    p = np.where(item_category[None, :] == segments[:, None], 0.85, 0.35)
    labels = np.where(rng.random(p.shape) < p, 1, -1).ravel()
    rows = np.repeat(np.arange(m), 3 * block)
    cols = np.tile(np.arange(3 * block), m)
    graph = PreferenceGraph.from_arrays(rows, cols, labels, item_categories=GENRES[item_category])
    return graph, segments


def test_purchase_only_profiles_find_favourite_category():
    graph, segments, _ = planted_purchase_graph()
    profiles = segment_profiles(graph, segments)
    assert isinstance(profiles, SegmentProfiles) and profiles.purchase_only
    summary = profiles.summary
    assert summary["n_customers"].sum() == graph.n_customers
    assert summary["share"].sum() == pytest.approx(1.0)
    assert summary["like_rate"].isna().all()
    np.testing.assert_allclose(summary["activity"], summary["n_edges"] / summary["n_customers"])
    cats = profiles.categories
    for k in range(3):
        mine = cats[(cats["segment"] == k) & cats["supported"]]
        assert mine.iloc[0]["category"] == GENRES[k]  # sorted by lift, descending
        assert mine.iloc[0]["lift"] > 1.5
        assert mine.iloc[-1]["lift"] < 1
    # shares of each segment's purchases sum to 1 over categories
    np.testing.assert_allclose(cats.groupby("segment")["share"].sum(), 1.0)


@pytest.mark.parametrize("min_support", [5.0, 0.0])
def test_one_off_item_does_not_top_the_list(min_support):
    graph, segments, odd_item = planted_purchase_graph()
    profiles = segment_profiles(graph, segments, min_support=min_support)
    items = profiles.items
    more = items[(items["segment"] == 0) & (items["direction"] == "more")]
    assert len(more) > 0
    assert more.iloc[0]["item_id"] != odd_item
    assert more.iloc[0]["category"] == GENRES[0]
    if min_support > 0:
        assert odd_item not in set(items["item_id"])
    else:
        # its raw lift is the largest of all: only the shrinkage keeps it down
        odd = items[items["item_id"] == odd_item]
        if len(odd):
            assert odd.iloc[0]["raw_lift"] > more.iloc[0]["raw_lift"]
    # never-bought but expected items can show up as bought less
    less = items[items["direction"] == "less"]
    assert (less["lift"] < 1).all() and (less["support"] >= min_support).all()


def test_rated_profiles_find_favourite_category_and_like_rate():
    graph, segments = planted_rated_graph()
    profiles = segment_profiles(graph, segments)
    assert not profiles.purchase_only
    assert profiles.summary["like_rate"].between(0.4, 0.7).all()
    cats = profiles.categories
    for k in range(3):
        mine = cats[cats["segment"] == k]
        assert mine.iloc[0]["category"] == GENRES[k]
        assert mine.iloc[0]["lift"] > 1.2
    items = profiles.items
    top = items[(items["direction"] == "more") & (items["rank"] == 1)]
    assert list(top["category"]) == list(GENRES)
    headline = profile_headline(profiles).splitlines()
    assert len(headline) == 3
    assert headline[1].startswith("segment 1 (")
    assert "likes Horror x" in headline[1]
    assert "dislikes" in headline[1]


def test_demographic_mix_sums_to_one():
    graph, segments, _ = planted_purchase_graph()
    rng = np.random.default_rng(5)
    ids = graph.customer_ids
    attributes = pd.DataFrame(
        {
            "gender": np.where(segments == 1, "F", rng.choice(["F", "M"], size=len(ids))),
            "age": rng.integers(18, 70, size=len(ids)).astype(float),
        },
        index=ids,
    ).iloc[:-3]  # three customers without attributes
    profiles = segment_profiles(graph, segments, customer_attributes=attributes)
    demo = profiles.demographics
    sums = demo.groupby(["segment", "attribute"])["share"].sum()
    np.testing.assert_allclose(sums, 1.0)
    assert set(demo["attribute"]) == {"gender", "age"}
    assert demo[demo["attribute"] == "age"]["value"].nunique() <= 5  # 4 quartiles + missing
    f_share = demo[(demo["segment"] == 1) & (demo["value"] == "F")]["share"].iloc[0]
    assert f_share > 0.95
    assert "missing" in set(demo["value"])
    shifted = attributes.set_axis(attributes.index - 10**6)
    with pytest.raises(ValueError, match="index it by customer id"):
        segment_profiles(graph, segments, customer_attributes=shifted)


def test_purchase_headline_and_markdown():
    graph, segments, _ = planted_purchase_graph()
    profiles = segment_profiles(graph, segments)
    headline = profile_headline(profiles)
    assert headline.splitlines()[0].startswith("segment 0 (")
    assert "buys more Comedy x" in headline.splitlines()[0]
    markdown = profiles_markdown(profiles)
    assert "#### summary" in markdown and "| segment |" in markdown
    assert set(profiles.tables()) == {"summary", "categories", "items"}


def test_profiles_validate_inputs():
    graph, segments, _ = planted_purchase_graph()
    with pytest.raises(ValueError, match="one segment per customer"):
        segment_profiles(graph, segments[:-1])
    with pytest.raises(ValueError, match="pooled_item_proba"):
        segment_profiles(graph, segments, pooled_item_proba=np.ones(3))
    with pytest.raises(ValueError, match="top_n"):
        segment_profiles(graph, segments, top_n=0)
