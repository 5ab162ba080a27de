"""Clustering embeddings, exact 1-D k-means, stable numbering and choosing K."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.cluster import KMeans
from threadpoolctl import threadpool_limits

from segmentation_dagster.core.clustering import (
    SegmentClusterer,
    candidate_ks,
    kde_modes,
    kmeans_1d_exact,
    renumber_by,
    select_k,
)
from segmentation_dagster.core.metrics import hungarian_accuracy


def within_ss(values, weights, labels):
    total = 0.0
    for k in np.unique(labels):
        v, w = values[labels == k], weights[labels == k]
        total += (w * (v - np.average(v, weights=w)) ** 2).sum()
    return total


def mixture(centres, n=200, scale=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, scale, n) for c in centres])
    return x, np.repeat(np.arange(len(centres)), n)


def test_exact_1d_kmeans_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(25):
        u = int(rng.integers(2, 9))
        values = np.sort(rng.normal(size=u))
        weights = rng.integers(1, 5, size=u).astype(float)
        k = int(rng.integers(1, u + 1))
        labels = kmeans_1d_exact(values, weights, k)
        assert np.all(np.diff(labels) >= 0) and len(np.unique(labels)) == k
        best = min(
            within_ss(values, weights, np.repeat(np.arange(k), np.diff([0, *cuts, u])))
            for cuts in itertools.combinations(range(1, u), k - 1)
        )
        assert within_ss(values, weights, labels) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("u", [2, 57, 300])
def test_exact_1d_kmeans_clusters_are_runs_with_the_optimal_cut(u):
    """Each cluster is a run of the sorted values, and moving any cut between two
    neighbouring clusters by one value never lowers the within-cluster sum of squares
    (a necessary condition of the optimum, checkable at any size)."""
    rng = np.random.default_rng(u)
    values = np.sort(rng.choice(np.linspace(0, 1, 5 * u), size=u, replace=False))
    weights = rng.integers(1, 9, size=u).astype(float)
    for k in sorted({1, min(2, u), min(7, u)}):
        labels = kmeans_1d_exact(values, weights, k)
        np.testing.assert_array_equal(labels, np.sort(labels))
        assert len(np.unique(labels)) == k
        best = within_ss(values, weights, labels)
        for cut in np.flatnonzero(np.diff(labels)):
            for moved in (cut, cut + 1):  # the last value of the left run, the first of the right
                other = labels.copy()
                other[moved] = labels[cut + 1] if moved == cut else labels[cut]
                if len(np.unique(other)) == k:
                    assert best <= within_ss(values, weights, other) + 1e-12


def test_exact_1d_kmeans_never_worse_than_lloyd():
    x, _ = mixture([0, 1, 1.5, 3, 3.2, 5], n=60, scale=0.4, seed=1)
    values = np.unique(x)
    weights = np.random.default_rng(1).integers(1, 4, size=len(values)).astype(float)
    with threadpool_limits(1):
        for k in (2, 6, 9):
            exact = within_ss(values, weights, kmeans_1d_exact(values, weights, k))
            lloyd = KMeans(k, n_init=10, random_state=0).fit(
                values[:, None], sample_weight=weights
            ).labels_
            assert exact <= within_ss(values, weights, lloyd) + 1e-9


def test_exact_1d_kmeans_bad_input():
    with pytest.raises(ValueError, match="K=3 must be between 1 and the 2 distinct values"):
        kmeans_1d_exact(np.array([0.0, 1.0]), np.ones(2), 3)
    with pytest.raises(ValueError, match="sorted and distinct"):
        kmeans_1d_exact(np.array([1.0, 0.0]), np.ones(2), 1)


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
@pytest.mark.parametrize("method", ["kmeans", "meanshift", "spectral"])
def test_clusterer_recovers_separated_groups(method):
    x, truth = mixture([0, 4, 8], n=100, seed=2)
    model = SegmentClusterer(3, method=method).fit(x)
    assert model.n_segments_ == 3
    assert hungarian_accuracy(truth, model.labels_) > 0.97
    # segments are numbered by increasing centre
    assert np.all(np.diff(model.cluster_centers_[:, 0]) > 0)
    assert np.mean(x[model.labels_ == 0]) < np.mean(x[model.labels_ == 2])


def test_clusterer_2d_and_predict():
    rng = np.random.default_rng(3)
    centres = np.array([[0, 0], [5, 0], [0, 5]])
    x = np.concatenate([rng.normal(c, 0.5, size=(80, 2)) for c in centres])
    model = SegmentClusterer(3).fit(x)
    assert np.array_equal(model.predict(x), model.labels_)
    assert model.predict(np.array([[5.1, 0.2]]))[0] == model.predict(centres[1:2])[0]


def test_rerun_gives_same_labels():
    x, _ = mixture([0, 1, 2, 3], n=100, scale=0.5, seed=4)
    first = SegmentClusterer(4).fit(x).labels_
    second = SegmentClusterer(4).fit(x.copy()).labels_
    assert np.array_equal(first, second)


def test_clusterer_bad_input():
    with pytest.raises(ValueError, match="K=3 is larger than the 2 distinct customer embeddings"):
        SegmentClusterer(3).fit(np.array([1.0, 1.0, 2.0, 2.0]))
    with pytest.raises(ValueError, match="1 embeddings are NaN or inf"):
        SegmentClusterer(2).fit(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="non-empty"):
        SegmentClusterer(2).fit(np.array([]))
    with pytest.raises(ValueError, match="method must be one of"):
        SegmentClusterer(2, method="dbscan").fit(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="positive integer"):
        SegmentClusterer(0).fit(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="not fitted"):
        SegmentClusterer(2).predict(np.array([1.0]))


def test_kde_modes_counts_modes_of_a_separated_mixture():
    for centres in ([0, 5], [0, 5, 10], [0, 4, 8, 12]):
        x, _ = mixture(centres, n=300, scale=0.5, seed=len(centres))
        modes, grid, density = kde_modes(x)
        assert len(modes) == len(centres)
        assert np.allclose(np.sort(modes), centres, atol=0.5)
        assert len(grid) == len(density)
    assert len(kde_modes(np.full(10, 2.0))[0]) == 1


def test_candidate_ks_surround_the_mode_count():
    x, _ = mixture([0, 5, 10], n=300, scale=0.5, seed=5)
    assert candidate_ks(x) == [2, 3, 4]
    assert candidate_ks(x, around=0) == [3]
    assert candidate_ks(x, k_max=3) == [2, 3]


def test_select_k_picks_best_and_breaks_ties_small():
    scores = {2: 0.5, 3: 0.8, 4: 0.8, 5: 0.1}
    best, seen = select_k([5, 4, 3, 2], scores.get)
    assert best == 3 and seen == scores
    assert select_k([2, 3, 4], scores.get, higher_is_better=False)[0] == 2
    with pytest.raises(ValueError, match="no candidate K"):
        select_k([], scores.get)


def test_select_k_with_held_out_likelihood_finds_true_k(synthetic_graph):
    # choose K by the log-likelihood of held-out labels under the segment like rates
    from segmentation_dagster.core.graph import LIKE
    from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter

    graph, _ = synthetic_graph(600, 200, 3, 1.0, seed=6, proportions=np.array([1, 1, 1]) / 3)
    rows, cols, labels = graph.edges()
    held_out = (cols % 4) == 0
    train = type(graph)(graph.matrix.copy(), graph.customer_ids, graph.item_ids)
    train.matrix.data[held_out] = 0
    train.matrix.eliminate_zeros()

    def score(k):
        model = ModelEmbeddingSegmenter(k).fit(train)
        p = model.predict_proba(rows[held_out])
        y = labels[held_out] == LIKE
        return float(np.mean(np.where(y, np.log(p), np.log1p(-p))))

    best, _ = select_k([1, 2, 3, 4], score)
    assert best == 3


def test_renumber_by_orders_segments_by_key():
    labels = np.array([5, 5, 2, 2, 9])
    key = np.array([1.0, 1.0, 3.0, 3.0, 0.0])
    assert renumber_by(labels, key).tolist() == [1, 1, 2, 2, 0]
