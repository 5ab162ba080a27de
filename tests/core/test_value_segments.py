"""Segments from the distinct values of a scalar embedding, and the engine's candidates."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from segmentation_dagster.core.clustering import SegmentClusterer
from segmentation_dagster.core.value_segments import (
    DistinctValueSegmenter,
    engine_selector_options,
)


def customers_and_values(seed: int = 0):
    """5,000 customers on 300 distinct values in three bumps, with likes and edges."""
    rng = np.random.default_rng(seed)
    embedding = np.round(np.concatenate([rng.normal(0.6, 0.05, 2000),
                                         rng.normal(1.0, 0.05, 2000),
                                         rng.normal(1.5, 0.05, 1000)]), 2)
    edges = rng.integers(1, 20, len(embedding))
    likes = rng.binomial(edges, np.clip(embedding / 2, 0, 1))
    values, inverse, counts = np.unique(embedding, return_inverse=True, return_counts=True)
    return (embedding, edges, likes, values, counts,
            np.bincount(inverse, likes), np.bincount(inverse, edges))


def test_distinct_values_give_the_customers_kmeans_and_like_rate_order():
    embedding, edges, likes, values, counts, value_likes, value_edges = customers_and_values()
    shuffled = np.random.default_rng(1).permutation(len(values))  # order does not matter
    segmenter = DistinctValueSegmenter(3).fit(values[shuffled], counts[shuffled],
                                              value_likes[shuffled], value_edges[shuffled])
    labels = segmenter.predict(embedding)
    clusters = SegmentClusterer(3).fit(embedding).labels_
    # the same partition as k-means on every customer
    assert len({(a, b) for a, b in zip(labels, clusters, strict=True)}) == 3
    rates = (np.bincount(labels, likes) + 1) / (np.bincount(labels, edges) + 2)
    np.testing.assert_allclose(segmenter.segment_alpha_, rates)
    assert np.all(np.diff(segmenter.segment_alpha_) > 0)  # numbered by like-rate
    np.testing.assert_array_equal(segmenter.segment_sizes_, np.bincount(labels))
    bounds = segmenter.bounds_table(segment_ids=np.array([10, 11, 12]))
    assert bounds["lower"].isna().iloc[0] and bounds["upper"].isna().iloc[-1]
    assert set(bounds["segment"]) == {10, 11, 12}


def test_small_clusters_fold_into_the_nearest():
    embedding, edges, likes, values, counts, value_likes, value_edges = customers_and_values()
    segmenter = DistinctValueSegmenter(6, min_share=0.15).fit(values, counts, value_likes,
                                                              value_edges)
    shares = segmenter.segment_sizes_ / counts.sum()
    assert segmenter.n_segments_ < 6 and shares.min() >= 0.15
    assert len(segmenter.cluster_map_) == 6  # every cluster still has its range


def test_one_segment_and_bad_input():
    _, _, _, values, counts, value_likes, value_edges = customers_and_values()
    one = DistinctValueSegmenter(1).fit(values, counts, value_likes, value_edges)
    assert one.n_segments_ == 1 and (one.predict(values) == 0).all()
    with pytest.raises(ValueError, match="distinct"):
        DistinctValueSegmenter(2).fit([1.0, 1.0], [1, 1], [0, 1], [1, 1])
    with pytest.raises(ValueError, match="n_segments"):
        DistinctValueSegmenter(5).fit([1.0, 2.0], [1, 1], [0, 1], [1, 1])
    with pytest.raises(ValueError, match="positive"):
        DistinctValueSegmenter(1).fit([1.0, 2.0], [0, 1], [0, 1], [1, 1])
    with pytest.raises(NotFittedError):
        DistinctValueSegmenter(2).predict([1.0])
    assert clone(DistinctValueSegmenter(4, min_share=0.1)).get_params() == {
        "n_segments": 4, "min_share": 0.1}


def test_engine_candidates_and_refusals():
    options = {"pooled": None, "category_ranks": (None, 2), "segment_model": "item",
               "ks": (2, 3)}
    cut = engine_selector_options(options)
    assert cut["category_ranks"] == (None, 2)  # vector up to rank 3 runs in the engine
    assert engine_selector_options({**options, "category_ranks": (None, 4)})[
        "category_ranks"] == (None,)
    assert cut["pooled"] == ["global", "category:global", "item"]
    own = engine_selector_options({**options, "segment_model": "pooled"})
    assert "category:global" not in own["pooled"]
    with pytest.raises(ValueError, match="features"):
        engine_selector_options({**options, "pooled": ["features"]})
    with pytest.raises(ValueError, match="vector"):
        engine_selector_options({**options, "category_ranks": (4,)})
