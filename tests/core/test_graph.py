"""PreferenceGraph: construction, the duplicate rule, accessors and bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.graph import DISLIKE, LIKE, PreferenceGraph


def table(rows):
    return pd.DataFrame(rows, columns=["customer_id", "item_id", "label"])


SMALL = table(
    [
        ("c2", "i1", 1),
        ("c1", "i1", -1),
        ("c1", "i2", 1),
        ("c1", "i3", 1),
        ("c3", "i3", -1),
    ]
)


def test_from_edges_sorts_ids_and_keeps_labels():
    graph = PreferenceGraph.from_edges(SMALL)
    assert list(graph.customer_ids) == ["c1", "c2", "c3"]
    assert list(graph.item_ids) == ["i1", "i2", "i3"]
    assert graph.matrix.dtype == np.int8
    dense = graph.matrix.toarray()
    assert dense.tolist() == [[-1, 1, 1], [1, 0, 0], [0, 0, -1]]
    assert graph.customer_degrees().tolist() == [3, 1, 1]
    assert graph.customer_likes().tolist() == [2, 1, 0]
    assert graph.item_degrees().tolist() == [2, 1, 2]
    assert graph.item_likes().tolist() == [1, 1, 1]
    assert graph.n_edges == 5


def test_edges_and_to_frame_round_trip():
    graph = PreferenceGraph.from_edges(SMALL)
    rows, cols, labels = graph.edges()
    assert len(rows) == len(cols) == len(labels) == 5
    back = PreferenceGraph.from_edges(graph.to_frame())
    assert (back.matrix != graph.matrix).nnz == 0
    assert list(back.customer_ids) == list(graph.customer_ids)


def test_customer_sums_add_the_value_of_each_edge_label():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(30, size=400), rng.integers(12, size=400)
    frame = pd.DataFrame({"customer_id": rows, "item_id": cols,
                          "label": rng.choice([LIKE, DISLIKE], size=400)})
    graph = PreferenceGraph.from_edges(frame)
    if_like, if_dislike = rng.normal(size=graph.n_items), rng.normal(size=graph.n_items)
    r, c, labels = graph.edges()
    per_edge = np.where(labels == LIKE, if_like[c], if_dislike[c])
    expected = np.bincount(r, weights=per_edge, minlength=graph.n_customers)
    np.testing.assert_allclose(graph.customer_sums(if_like, if_dislike), expected)
    np.testing.assert_array_equal(graph.customer_likes(),
                                  np.bincount(r, weights=labels == LIKE,
                                              minlength=graph.n_customers))


def test_duplicate_pair_last_row_wins():
    rows = table([("a", "x", 1), ("b", "x", 1), ("a", "x", -1), ("a", "y", -1), ("a", "y", 1)])
    graph = PreferenceGraph.from_edges(rows)
    assert graph.n_edges == 3
    assert graph.matrix.toarray().tolist() == [[DISLIKE, LIKE], [LIKE, 0]]


def test_from_arrays_matches_from_edges_including_duplicates():
    rng = np.random.default_rng(0)
    rows = rng.integers(50, size=2000)
    cols = rng.integers(30, size=2000)  # many repeated pairs
    labels = np.where(rng.random(2000) < 0.4, LIKE, DISLIKE).astype(np.int8)
    fast = PreferenceGraph.from_arrays(rows, cols, labels)
    slow = PreferenceGraph.from_edges(
        pd.DataFrame({"customer_id": rows, "item_id": cols, "label": labels})
    )
    assert fast.matrix.shape == slow.matrix.shape
    assert (fast.matrix != slow.matrix).nnz == 0
    assert np.array_equal(fast.matrix.indptr, slow.matrix.indptr)
    assert np.array_equal(fast.matrix.indices, slow.matrix.indices)
    assert fast.matrix.has_sorted_indices


def test_from_arrays_keeps_given_ids_and_empty_customers():
    graph = PreferenceGraph.from_arrays(
        np.array([0, 2]), np.array([1, 0]), np.array([1, -1]),
        customer_ids=np.array(["a", "b", "c"]), item_ids=np.array(["x", "y"]),
    )
    assert graph.customer_degrees().tolist() == [1, 0, 1]
    kept = graph.restrict_customers(graph.customer_degrees() > 0)
    assert list(kept.customer_ids) == ["a", "c"]
    assert kept.matrix.toarray().tolist() == [[0, 1], [-1, 0]]


def test_from_arrays_bad_input():
    one = np.array([0])
    with pytest.raises(ValueError, match="no edges"):
        PreferenceGraph.from_arrays(np.array([], int), np.array([], int), np.array([], int))
    with pytest.raises(ValueError, match="same length"):
        PreferenceGraph.from_arrays(np.array([0, 1]), one, one)
    with pytest.raises(ValueError, match="rows has 1 NaN"):
        PreferenceGraph.from_arrays(np.array([0.0, np.nan]), np.array([0, 1]), np.array([1, 1]))
    with pytest.raises(ValueError, match="labels must hold only"):
        PreferenceGraph.from_arrays(one, one, np.array([0]))
    with pytest.raises(ValueError, match="outside the 1 given ids"):
        PreferenceGraph.from_arrays(np.array([1]), one, np.array([1]), customer_ids=["a"])
    with pytest.raises(ValueError, match="customer_ids has duplicate ids"):
        PreferenceGraph.from_arrays(one, one, np.array([1]), customer_ids=["a", "a"])
    with pytest.raises(ValueError, match="cols has negative"):
        PreferenceGraph.from_arrays(one, np.array([-1]), np.array([1]))


def test_restrict_items_keeps_categories():
    cats = pd.Series({"i1": "A", "i2": "B", "i3": "A"})
    graph = PreferenceGraph.from_edges(SMALL, item_categories=cats)
    sub = graph.restrict_items(graph.item_categories == "A")
    assert list(sub.item_ids) == ["i1", "i3"]
    assert list(sub.item_categories) == ["A", "A"]
    assert sub.n_customers == 3 and sub.n_edges == 4


def test_given_ids_fix_order_and_drop_outsiders():
    graph = PreferenceGraph.from_edges(
        SMALL, item_ids=np.array(["i3", "i1"]), customer_ids=np.array(["c3", "c1", "c9"])
    )
    assert graph.matrix.toarray().tolist() == [[-1, 0], [1, -1], [0, 0]]
    assert graph.customer_degrees()[2] == 0  # c9: kept, without edges


def test_empty_table_is_refused():
    with pytest.raises(ValueError, match="edge table is empty"):
        PreferenceGraph.from_edges(table([]))


def test_missing_column_is_named():
    with pytest.raises(ValueError, match="no column 'label'"):
        PreferenceGraph.from_edges(SMALL.drop(columns="label"))


@pytest.mark.parametrize("bad", [np.nan, 0, 2, "like"])
def test_labels_other_than_plus_minus_one_are_refused(bad):
    rows = SMALL.astype({"label": object})
    rows.loc[1, "label"] = bad
    with pytest.raises(ValueError, match="must hold only \\+1 or -1"):
        PreferenceGraph.from_edges(rows)


@pytest.mark.parametrize("col", ["customer_id", "item_id"])
def test_null_ids_are_refused(col):
    rows = SMALL.copy()
    rows.loc[0, col] = None
    with pytest.raises(ValueError, match=f"column '{col}' has 1 null ids"):
        PreferenceGraph.from_edges(rows)


def test_duplicate_or_null_given_ids_are_refused():
    with pytest.raises(ValueError, match="customer_ids has duplicate ids"):
        PreferenceGraph.from_edges(SMALL, customer_ids=np.array(["c1", "c2", "c1"]))
    with pytest.raises(ValueError, match="item_ids has duplicate ids"):
        PreferenceGraph.from_edges(SMALL, item_ids=np.array(["i1", "i1"]))
    with pytest.raises(ValueError, match="customer_ids has 1 null ids"):
        PreferenceGraph.from_edges(SMALL, customer_ids=np.array(["c1", None], dtype=object))


def test_no_edge_inside_given_ids():
    with pytest.raises(ValueError, match="no edge falls inside"):
        PreferenceGraph.from_edges(SMALL, item_ids=np.array(["zzz"]))


def test_items_without_category_are_named():
    with pytest.raises(ValueError, match="items without a category.*i2"):
        PreferenceGraph.from_edges(SMALL, item_categories=pd.Series({"i1": "A", "i3": "B"}))
