"""Top-k recommendation: split, scorers, metrics on a known case, NMF vs popularity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from segmentation_dagster.core.recommend import (
    FactorScorer,
    NMFScorer,
    PopularityScorer,
    SegmentPopularityScorer,
    evaluate_recommendations,
    held_out_matrices,
    leave_out_split,
    top_k_items,
)


def matrix(rows, cols, shape):
    return sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)


# 3 customers x 6 products; the scorer ranks products 0, 1, 2, ... for everyone
TRAIN = matrix([0, 1, 1, 2], [0, 0, 1, 0], (3, 6))
TEST = matrix([0, 0, 1, 2], [2, 5, 3, 0], (3, 6))  # customer 2's test item is in train
DESCENDING = FactorScorer(np.ones((3, 1)), np.array([[6.0, 5, 4, 3, 2, 1]]))


def test_metrics_on_a_hand_made_case():
    result = evaluate_recommendations(DESCENDING, TRAIN, TEST, k=2)
    d2 = 1 / np.log2(3)  # discount of rank 2
    # customer 0: top-2 unseen = [1, 2], held out {2, 5}: one hit at rank 2
    # customer 1: top-2 unseen = [2, 3], held out {3}: one hit at rank 2
    # customer 2: its only held-out product is in train -> not evaluated
    assert result.customers.tolist() == [0, 1]
    np.testing.assert_allclose(result.recall_per_customer, [1 / 2, 1])
    np.testing.assert_allclose(result.ndcg_per_customer, [d2 / (1 + d2), d2 / 1])
    assert result.recall == pytest.approx(0.75)
    assert result.ndcg == pytest.approx((d2 / (1 + d2) + d2) / 2)
    assert result.as_dict()["n_customers"] == 2


def test_chunking_does_not_change_the_result():
    whole = evaluate_recommendations(DESCENDING, TRAIN, TEST, k=3)
    one_by_one = evaluate_recommendations(DESCENDING, TRAIN, TEST, k=3, chunk_size=1)
    assert whole.recall == one_by_one.recall
    assert whole.ndcg == one_by_one.ndcg


def test_top_k_skips_seen_products_and_pads():
    top = top_k_items(DESCENDING, TRAIN, k=6)
    assert top[0].tolist() == [1, 2, 3, 4, 5, -1]
    assert top[1].tolist() == [2, 3, 4, 5, -1, -1]
    assert top_k_items(DESCENDING, TRAIN, rows=np.array([2]), k=2).tolist() == [[1, 2]]


def test_popularity_and_segment_popularity_scores():
    train = matrix([0, 1, 2, 2, 3], [0, 0, 1, 2, 2], (4, 3))
    pop = PopularityScorer().fit(train)
    assert pop.popularity_.tolist() == [2, 1, 2]
    seg = SegmentPopularityScorer(np.array([0, 0, 1, -1])).fit(train)
    assert seg.segment_counts_.tolist() == [[2, 0, 0], [0, 1, 1]]
    s = seg.score(np.array([0, 2, 3]))
    # segment 0 prefers product 0, then breaks the 1-vs-2 tie by global popularity
    assert np.argsort(-s[0]).tolist() == [0, 2, 1]
    # segment 1: products 1 and 2 tie in the segment; 2 is more popular overall
    assert np.argsort(-s[1]).tolist() == [2, 1, 0]
    # no segment: global popularity alone
    assert np.argsort(-s[2], kind="stable").tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="one label per training customer"):
        SegmentPopularityScorer(np.array([0, 1])).fit(train)


def test_leave_out_split_per_customer():
    rng = np.random.default_rng(0)
    customers = np.repeat(np.arange(50), rng.integers(1, 12, 50))
    items = rng.integers(0, 30, len(customers))
    train, test = leave_out_split(customers, items, fraction=0.2, seed=1)
    assert (train ^ test).all()
    for c in range(50):
        mine = customers == c
        pairs = set(items[mine])
        test_pairs = set(items[mine & test])
        assert test_pairs.isdisjoint(items[mine & train])  # a pair never straddles
        if len(pairs) == 1:
            assert not test[mine].any()
        else:
            assert len(test_pairs) == min(
                max(1, int(np.floor(0.2 * len(pairs) + 0.5))), len(pairs) - 1
            )
    again = leave_out_split(customers, items, fraction=0.2, seed=1)[1]
    other = leave_out_split(customers, items, fraction=0.2, seed=2)[1]
    assert (again == test).all() and (other != test).any()


def test_nmf_beats_popularity_on_held_out_blocks():
    rng = np.random.default_rng(3)
    m, n, k = 400, 200, 4
    cust_seg = rng.choice(k, m, p=[0.4, 0.3, 0.2, 0.1])  # popularity favours block 0
    prod_seg = rng.integers(0, k, n)
    p = np.where(cust_seg[:, None] == prod_seg[None, :], 0.25, 0.01)
    rows, cols = np.nonzero(rng.random((m, n)) < p)
    _, test_mask = leave_out_split(rows, cols, fraction=0.2, seed=0)
    data = held_out_matrices(rows, cols, test_mask)
    seg_rows = cust_seg[data.customer_ids]
    results = {
        name: evaluate_recommendations(scorer.fit(data.train), data.train, data.test, k=10)
        for name, scorer in {
            "nmf": NMFScorer(n_components=k),
            "popularity": PopularityScorer(),
            "segments": SegmentPopularityScorer(seg_rows),
        }.items()
    }
    assert results["nmf"].recall > results["popularity"].recall
    assert results["nmf"].ndcg > results["popularity"].ndcg
    # knowing the planted segments also beats popularity (the baseline is not broken)
    assert results["segments"].recall > results["popularity"].recall
