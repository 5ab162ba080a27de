"""Segment identity across refreshes: matching, relabelling, transitions and drift."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.stability import (
    SegmentMatching,
    drift_warnings,
    match_segments,
    moved_customers,
    relabel,
    stability_summary,
    transitions,
)

# the fresh clustering numbers segments its own way: previous id -> current label
SHUFFLE = {0: 2, 1: 0, 2: 1}


@pytest.fixture
def previous() -> pd.Series:
    """300 customers in stable segments 0, 1, 2 of 100 each, in a random order."""
    rng = np.random.default_rng(0)
    ids = np.array([f"c{i:03d}" for i in range(300)])
    segments = np.repeat([0, 1, 2], 100)
    order = rng.permutation(300)
    return pd.Series(segments[order], index=ids[order], name="segment")


def _profiles(index, centre, like_rate, share) -> pd.DataFrame:
    return pd.DataFrame(
        {"centre": centre, "like_rate": like_rate, "category_share": share}, index=index
    )


PREVIOUS_PROFILES = _profiles([0, 1, 2], [0.6, 1.0, 1.4], [0.2, 0.5, 0.8], [0.1, 0.3, 0.6])


def test_unchanged_data_with_shuffled_labels_keeps_every_id(previous) -> None:
    current = previous.map(SHUFFLE).sample(frac=1.0, random_state=1)
    matching = match_segments(previous, current)
    assert matching.mapping == {2: 0, 0: 1, 1: 2}
    assert set(matching.method.values()) == {"customers"}
    assert matching.score == {0: 1.0, 1: 1.0, 2: 1.0}
    assert matching.vanished == [] and matching.new_segments == [] and not matching.first_run

    stable = relabel(current, matching)
    pd.testing.assert_series_equal(stable.sort_index(), previous.sort_index())
    summary = stability_summary(previous, stable)
    assert summary["ari"] == 1.0
    assert summary["moved_share"] == 0.0 and summary["n_moved"] == 0
    assert (summary["n_shared"], summary["n_new"], summary["n_left"]) == (300, 0, 0)
    assert summary["max_share_change"] == 0.0
    assert summary["new_segments"] == [] and summary["vanished_segments"] == []
    assert not summary["first_run"]
    assert drift_warnings(summary, min_ari=0.8, max_share_change=0.05) == []

    table = transitions(previous, stable)
    assert list(table.columns) == ["from_segment", "to_segment", "customers"]
    assert table.to_dict("list") == {
        "from_segment": [0, 1, 2], "to_segment": [0, 1, 2], "customers": [100, 100, 100]
    }
    assert len(moved_customers(previous, stable)) == 0


def test_planted_move_is_reported(previous) -> None:
    planted = previous.index[previous == 0][:30]
    changed = previous.copy()
    changed.loc[planted] = 1
    current = changed.map(SHUFFLE)

    matching = match_segments(previous, current)
    assert matching.mapping == {2: 0, 0: 1, 1: 2}
    stable = relabel(current, matching)
    assert set(moved_customers(previous, stable)) == set(planted)

    table = transitions(previous, stable)
    moved = table[table["from_segment"] != table["to_segment"]]
    assert moved.to_dict("list") == {"from_segment": [0], "to_segment": [1], "customers": [30]}
    stayed = table[table["from_segment"] == table["to_segment"]]
    assert stayed["customers"].tolist() == [70, 100, 100]
    assert table["customers"].sum() == 300

    summary = stability_summary(previous, stable)
    assert summary["ari"] < 1.0
    assert summary["moved_share"] == pytest.approx(30 / 300)
    assert summary["n_moved"] == 30
    assert summary["max_share_change"] == pytest.approx(0.1)
    assert summary["max_share_change_segment"] in (0, 1)
    warnings = drift_warnings(summary, min_ari=0.99, max_share_change=0.05)
    assert any("adjusted Rand index" in w and "10% of them changed segment" in w for w in warnings)
    assert "segment 0 shrank from 33% to 23% of customers" in warnings
    assert "segment 1 grew from 33% to 43% of customers" in warnings
    assert drift_warnings(summary, min_ari=0.0, max_share_change=0.2) == []


def test_new_segment_gets_a_fresh_id(previous) -> None:
    current = previous.map(SHUFFLE)
    # 20 of segment 2's customers form a segment of their own, plus 10 new customers
    splinter = previous.index[previous == 2][:20]
    current.loc[splinter] = 7
    newcomers = pd.Series(7, index=[f"n{i}" for i in range(10)])
    current = pd.concat([current, newcomers])

    matching = match_segments(previous, current)
    assert matching.mapping == {0: 1, 1: 2, 2: 0, 7: 3}
    assert matching.method[7] == "new" and math.isnan(matching.score[7])
    assert matching.new_segments == [3] and matching.vanished == []

    # ids used by earlier runs are never reused
    assert match_segments(previous, current, retired_ids=[5]).mapping[7] == 6

    stable = relabel(current, matching)
    summary = stability_summary(previous, stable)
    assert summary["new_segments"] == [3]
    assert (summary["n_new"], summary["n_left"]) == (10, 0)
    table = transitions(previous, stable)
    new_rows = table[table["from_segment"].isna()]
    assert new_rows["to_segment"].tolist() == [3] and new_rows["customers"].tolist() == [10]
    assert table["from_segment"].dtype == "Int64"
    assert table.loc[(table["from_segment"] == 2) & (table["to_segment"] == 3),
                     "customers"].tolist() == [20]


def test_vanished_segment_is_listed(previous) -> None:
    # every customer of segment 2 leaves
    current = previous[previous != 2].map(SHUFFLE)
    matching = match_segments(previous, current)
    assert matching.vanished == [2]
    stable = relabel(current, matching)
    summary = stability_summary(previous, stable)
    assert summary["vanished_segments"] == [2]
    assert summary["n_left"] == 100 and summary["ari"] == 1.0
    table = transitions(previous, stable)
    left = table[table["to_segment"].isna()]
    assert left["from_segment"].tolist() == [2] and left["customers"].tolist() == [100]
    assert "segment 2 vanished; it held 33% of customers" in drift_warnings(summary, 0.5, 0.1)


def test_merge_keeps_the_larger_id(previous) -> None:
    # segments 1 and 2 merge, with half of segment 1's customers gone: the merged segment
    # is mostly former segment 2, so it keeps id 2 and id 1 vanishes
    leaving = previous.index[previous == 1][:50]
    current = previous.drop(leaving).map({0: 5, 1: 6, 2: 6})
    matching = match_segments(previous, current)
    assert matching.mapping == {5: 0, 6: 2}
    assert matching.vanished == [1]
    assert matching.score[6] == pytest.approx(100 / 150)


def test_splinter_below_min_overlap_is_new(previous) -> None:
    # segment 0 splits 45 / 55: only the majority keeps the id
    part = previous.index[previous == 0][:45]
    current = previous.copy()
    current.loc[part] = 3
    matching = match_segments(previous, current)
    assert matching.mapping == {0: 0, 1: 1, 2: 2, 3: 3}
    assert matching.method[3] == "new"
    # a stricter threshold refuses the 55 % piece too, and segment 0 vanishes
    strict = match_segments(previous, current, min_overlap=0.6)
    assert strict.method[0] == "new" and strict.vanished == [0]


def test_all_new_customers_are_matched_by_profile(previous) -> None:
    shifted = previous.map(SHUFFLE)
    current = pd.Series(shifted.to_numpy(), index=[f"n{i}" for i in range(300)])
    # current labels 2, 0, 1 describe previous segments 0, 1, 2, measured with a little noise
    current_profiles = _profiles(
        [2, 0, 1], [0.62, 1.03, 1.38], [0.21, 0.52, 0.77], [0.12, 0.28, 0.61]
    ).sort_index()
    matching = match_segments(previous, current, PREVIOUS_PROFILES, current_profiles)
    assert matching.mapping == {2: 0, 0: 1, 1: 2}
    assert set(matching.method.values()) == {"profile"}
    assert all(s > 0.9 for s in matching.score.values())
    assert matching.vanished == []

    summary = stability_summary(previous, relabel(current, matching))
    assert summary["n_shared"] == 0 and math.isnan(summary["ari"])
    assert math.isnan(summary["moved_share"]) and summary["max_share_change"] == 0.0
    warnings = drift_warnings(summary, 0.8, 0.05)
    assert len(warnings) == 1 and "no customer of this run was in the previous run" in warnings[0]

    # without profiles nothing links the runs: every segment is new, every old one vanished
    blind = match_segments(previous, current)
    assert blind.mapping == {0: 3, 1: 4, 2: 5}
    assert set(blind.method.values()) == {"new"} and blind.vanished == [0, 1, 2]


def test_profile_fallback_only_takes_segments_customers_left_unmatched(previous) -> None:
    # segments 0 and 1 keep their customers; segment 2's customers are all replaced
    kept = previous[previous != 2].map(SHUFFLE)
    current = pd.concat([kept, pd.Series(9, index=[f"n{i}" for i in range(80)])])
    # the profiles of 2 and 0 are swapped on purpose: customers must win where they decide
    current_profiles = _profiles([2, 0, 9], [1.0, 0.6, 1.41], [0.5, 0.2, 0.79], [0.3, 0.1, 0.6])
    matching = match_segments(previous, current, PREVIOUS_PROFILES, current_profiles)
    assert matching.mapping == {0: 1, 2: 0, 9: 2}
    assert matching.method == {0: "customers", 2: "customers", 9: "profile"}
    # a dissimilar profile is not enough: the segment is new and 2 vanishes
    far = current_profiles.copy()
    far.loc[9] = [0.6, 0.2, 0.1]
    other = match_segments(previous, current, PREVIOUS_PROFILES, far)
    assert other.method[9] == "new" and other.vanished == [2]


@pytest.mark.parametrize("empty", [None, pd.Series([], dtype=np.int64)])
def test_first_run_numbers_segments_in_order(empty) -> None:
    current = pd.Series([2, 0, 1, 1, 2, 2], index=list("abcdef"))
    matching = match_segments(empty, current)
    assert matching.first_run
    assert matching.mapping == {0: 0, 1: 1, 2: 2}
    assert set(matching.method.values()) == {"new"} and matching.vanished == []
    stable = relabel(current, matching)
    summary = stability_summary(empty, stable)
    assert summary["first_run"] and math.isnan(summary["ari"])
    assert math.isnan(summary["max_share_change"]) and summary["max_share_change_segment"] is None
    assert (summary["n_shared"], summary["n_new"], summary["n_left"]) == (0, 6, 0)
    assert summary["new_segments"] == [0, 1, 2] and summary["vanished_segments"] == []
    assert drift_warnings(summary, 0.8, 0.05) == []
    table = transitions(empty, stable)
    assert table["from_segment"].isna().all()
    assert table["to_segment"].tolist() == [0, 1, 2] and table["customers"].tolist() == [1, 2, 3]


def test_first_run_after_retired_ids_starts_after_them() -> None:
    matching = match_segments(None, pd.Series(["b", "a"], index=[1, 2]), retired_ids=[0, 4])
    assert matching.mapping == {"a": 5, "b": 6}


def test_table_lists_every_segment(previous) -> None:
    matching = match_segments(previous, previous.map(SHUFFLE))
    table = matching.table()
    assert list(table.columns) == ["label", "stable_id", "method", "score"]
    assert table["stable_id"].tolist() == [1, 2, 0]
    assert isinstance(matching, SegmentMatching)


def test_many_customers_are_handled_without_a_loop_per_customer() -> None:
    rng = np.random.default_rng(3)
    n = 200_000
    previous = pd.Series(rng.integers(0, 8, n), index=np.arange(n))
    current = (previous + 3) % 8
    flip = rng.random(n) < 0.05
    current[flip] = rng.integers(0, 8, flip.sum())
    matching = match_segments(previous, current)
    assert matching.mapping == {label: (label - 3) % 8 for label in range(8)}
    summary = stability_summary(previous, relabel(current, matching))
    assert summary["moved_share"] == pytest.approx(0.05 * 7 / 8, abs=0.005)


@pytest.mark.parametrize(
    ("previous", "current", "message"),
    [
        (pd.Series([0, 1], index=["a", "a"]), pd.Series([0], index=["a"]), "duplicate"),
        (pd.Series([0, -1], index=["a", "b"]), pd.Series([0], index=["a"]), "non-negative"),
        (pd.Series([0, 1.5], index=["a", "b"]), pd.Series([0], index=["a"]), "integer"),
        (pd.Series([0, 1], index=["a", "b"]), pd.Series([0, None], index=["a", "b"]),
         "without a segment"),
        ([0, 1], pd.Series([0], index=["a"]), "pandas Series"),
    ],
)
def test_bad_labels_are_refused(previous, current, message) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        match_segments(previous, current)


def test_bad_settings_and_profiles_are_refused(previous) -> None:
    current = previous.map(SHUFFLE)
    with pytest.raises(ValueError, match="min_overlap"):
        match_segments(previous, current, min_overlap=0)
    with pytest.raises(ValueError, match="retired_ids"):
        match_segments(previous, current, retired_ids=[-2])
    with pytest.raises(ValueError, match="or neither"):
        match_segments(previous, current, previous_profiles=PREVIOUS_PROFILES)
    with pytest.raises(ValueError, match="same non-empty columns"):
        match_segments(previous, current, PREVIOUS_PROFILES, PREVIOUS_PROFILES[["centre"]])
    with pytest.raises(ValueError, match=r"no row for segments \[2\]"):
        match_segments(previous, current, PREVIOUS_PROFILES, PREVIOUS_PROFILES.loc[[0, 1]])
    with pytest.raises(ValueError, match="no stable id for current labels"):
        relabel(current, {0: 1})
    with pytest.raises(ValueError, match="min_ari"):
        drift_warnings(stability_summary(previous, previous), min_ari=2, max_share_change=0.1)
