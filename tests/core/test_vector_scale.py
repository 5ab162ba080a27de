"""The numpy side of the vector embedding at scale (core.vector_scale): the sample's
low-rank completion is the in-memory one, ridge coordinates on its factors reproduce the
in-memory embedding, and clusters known by their sums fold and number as in memory."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from segmentation_dagster.core.embedding import complete_low_rank, principal_axes
from segmentation_dagster.core.selection import fold_small_segments
from segmentation_dagster.core.vector_scale import (
    SQL_RANK,
    ClusterSegmentMap,
    SampledLowRankEmbedding,
    pivot_scores,
    ridge_coordinates,
)


def scores(m: int = 300, b: int = 5, seed: int = 0) -> np.ndarray:
    """(m, b) per-category scores with 40 % unobserved, every row with an entry."""
    rng = np.random.default_rng(seed)
    v = rng.normal(1.0, 0.3, (m, b)) + rng.integers(2, size=m)[:, None] * np.linspace(
        -0.5, 0.5, b)
    v[rng.random(v.shape) < 0.4] = np.nan
    v[np.isnan(v).all(axis=1), 0] = 1.0
    return v


def test_the_sample_fit_is_the_in_memory_completion_and_ridge_reproduces_it():
    v = scores()
    model = SampledLowRankEmbedding(2, random_state=3).fit(v)
    u, y = complete_low_rank(v, 2, random_state=3)
    axes = principal_axes(u, y)
    np.testing.assert_allclose(model.sample_embedding_, u @ axes, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.completion_factors_, y, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.axes_, axes, rtol=1e-12, atol=1e-14)
    # every customer, sampled or not, by ridge on factors_: a sampled one's coordinates
    # are exactly their in-memory ones
    np.testing.assert_allclose(model.transform(v), u @ axes, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ridge_coordinates(v, model.factors_, model.axes_),
                               u @ axes, rtol=1e-12, atol=1e-14)


def test_ridge_coordinates_solve_each_rows_ridge():
    v = scores(20, 4)
    y = np.random.default_rng(1).normal(size=(4, 3))
    got = ridge_coordinates(v, y, regularisation=0.5)
    for i in range(3):  # the normal equations, row by row (a check, not the method)
        seen = np.isfinite(v[i])
        gram = y[seen].T @ y[seen] + 0.5 * np.eye(3)
        np.testing.assert_allclose(got[i], np.linalg.solve(gram, y[seen].T @ v[i, seen]))
    with pytest.raises(ValueError, match="share B"):
        ridge_coordinates(v, y[:3])
    with pytest.raises(ValueError, match="positive"):
        ridge_coordinates(v, y, regularisation=0.0)


def test_tables_are_padded_to_the_sql_rank():
    v = scores()
    model = SampledLowRankEmbedding(2).fit(v)
    factors = model.factors_table(np.array(list("abcde")))
    assert list(factors.columns) == ["category"] + [f"y{a}" for a in range(SQL_RANK)]
    np.testing.assert_array_equal(factors[["y0", "y1"]].to_numpy(), model.factors_)
    assert (factors["y2"] == 0).all()
    axes = model.axes_table()
    assert len(axes) == 1 and axes.loc[0, "t01"] == model.axes_[0, 1]
    assert axes.loc[0, "t22"] == axes.loc[0, "t02"] == 0
    with pytest.raises(ValueError, match="5 columns"):
        model.factors_table(["a"])


def test_pivot_and_refusals():
    matrix, customers, categories = pivot_scores(["c2", "c1", "c2"], ["b", "a", "a"],
                                                 [1.0, 2.0, 3.0])
    assert customers.tolist() == ["c1", "c2"] and categories.tolist() == ["a", "b"]
    np.testing.assert_array_equal(matrix, [[2.0, np.nan], [3.0, 1.0]])
    with pytest.raises(ValueError, match="more than once"):
        pivot_scores(["c1", "c1"], ["a", "a"], [1.0, 2.0])
    with pytest.raises(ValueError, match="rank=4"):
        SampledLowRankEmbedding(4).fit(scores(b=3))
    with pytest.raises(ValueError, match="every category"):
        SampledLowRankEmbedding(1).fit(np.array([[1.0, np.nan], [2.0, np.nan]]))
    with pytest.raises(NotFittedError):
        SampledLowRankEmbedding().transform(scores())
    assert clone(SampledLowRankEmbedding(3, n_iter=7)).get_params() == {
        "rank": 3, "regularisation": 0.1, "n_iter": 7, "random_state": 0}


@pytest.mark.parametrize("min_share", [0.0, 0.1, 0.3])
def test_cluster_sums_fold_and_number_as_per_customer(min_share):
    rng = np.random.default_rng(2)
    clusters = rng.choice(5, size=500, p=[0.4, 0.3, 0.2, 0.07, 0.03])
    x = rng.normal(size=(500, 2)) + clusters[:, None]
    edges = rng.integers(1, 20, 500)
    likes = rng.binomial(edges, 0.1 + 0.15 * clusters)
    sums = np.vstack([np.bincount(clusters, x[:, d]) for d in range(2)]).T
    fitted = ClusterSegmentMap(min_share).fit(np.bincount(clusters), sums,
                                              np.bincount(clusters, likes),
                                              np.bincount(clusters, edges))
    # the same partition as core.selection.fold_small_segments on every customer
    folded = fold_small_segments(clusters, x, min_share)[clusters]
    labels = fitted.cluster_map_[clusters]
    assert len({(a, b) for a, b in zip(labels, folded, strict=True)}) == len(set(folded))
    rates = (np.bincount(labels, likes) + 1) / (np.bincount(labels, edges) + 2)
    np.testing.assert_allclose(fitted.segment_alpha_, rates)
    assert np.all(np.diff(fitted.segment_alpha_) > 0)  # numbered by like-rate
    np.testing.assert_array_equal(fitted.segment_sizes_, np.bincount(labels))
    np.testing.assert_allclose(fitted.segment_centres_[labels[0]],
                               x[labels == labels[0]].mean(axis=0))
    table = fitted.map_table(np.arange(fitted.n_segments_) + 10)
    assert table["segment"].tolist() == (fitted.cluster_map_ + 10).tolist()


def test_an_empty_cluster_folds_into_the_nearest():
    fitted = ClusterSegmentMap().fit([5, 0, 5], [[0.0], [0.0], [50.0]], [1, 0, 4], [5, 0, 5],
                                     centres=[[0.0], [9.0], [10.0]])
    assert fitted.n_segments_ == 2 and fitted.cluster_map_.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="centre"):
        ClusterSegmentMap().fit([5, 0], [[0.0], [0.0]], [1, 0], [5, 0])
