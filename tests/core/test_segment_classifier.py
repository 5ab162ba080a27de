import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.segment_classifier import (
    SegmentClassifiers,
    compare_segmentations,
    edge_features,
    learned_item_features,
    segment_auc_table,
)


def _opposite_tastes(n: int, seed: int):
    """Two segments whose like-probability moves in OPPOSITE directions with feature 0,
    plus a shared effect of feature 1: the pooled fit averages the first effect away."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    segments = rng.integers(0, 2, size=n)
    slope = np.where(segments == 0, 2.5, -2.5)
    logits = slope * x[:, 0] + 0.5 * x[:, 1]
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-logits)), 1, -1)
    return x, y, segments


def test_segment_models_beat_the_population_when_coefficients_differ():
    x, y, seg = _opposite_tastes(4000, seed=0)
    xt, yt, segt = _opposite_tastes(2000, seed=1)
    model = SegmentClassifiers().fit(x, y, seg)
    assert model.fallback_ == {}
    assert set(model.models_) == {0, 1}
    # the segment coefficients recover the planted opposite slopes
    assert model.models_[0].coef_[0, 0] > 1.5 and model.models_[1].coef_[0, 0] < -1.5
    table = segment_auc_table(yt, model.predict_proba(xt, segt), model.population_proba(xt), segt)
    assert table["slice"].tolist() == ["all", "segment:0", "segment:1"]
    assert table["n_test"].tolist() == [2000, int((segt == 0).sum()), int((segt == 1).sum())]
    for _, row in table.iterrows():
        assert row["auc_segment"] > 0.75
        assert row["auc_segment"] > row["auc_population"] + 0.1
        assert row["improvement_pct"] == pytest.approx(
            100 * (row["auc_segment"] - row["auc_population"]) / row["auc_population"]
        )


def test_no_gain_when_segments_share_one_model():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 2))
    seg = rng.integers(0, 3, size=3000)
    y = np.where(rng.random(3000) < 1 / (1 + np.exp(-2 * x[:, 0])), 1, -1)
    model = SegmentClassifiers().fit(x[:2000], y[:2000], seg[:2000])
    table = segment_auc_table(
        y[2000:], model.predict_proba(x[2000:], seg[2000:]), model.population_proba(x[2000:]),
        seg[2000:],
    )
    assert (table["improvement_pct"].abs() < 3).all()


def test_single_class_segment_falls_back_to_population():
    x, y, seg = _opposite_tastes(1000, seed=2)
    seg = seg.copy()
    seg[:30] = 7
    y = y.copy()
    y[:30] = 1
    model = SegmentClassifiers().fit(x, y, seg)
    assert set(model.fallback_) == {7}
    assert "like" in model.fallback_[7]
    assert 7 not in model.models_
    p = model.predict_proba(x[:30], seg[:30])
    np.testing.assert_allclose(p, model.population_proba(x[:30]))
    # a segment never seen at fit time also gets the population model
    p_new = model.predict_proba(x[:5], np.full(5, 99))
    np.testing.assert_allclose(p_new, model.population_proba(x[:5]))


def test_tiny_segment_falls_back():
    x, y, seg = _opposite_tastes(500, seed=4)
    seg = seg.copy()
    seg[0] = 5
    model = SegmentClassifiers(min_edges=2).fit(x, y, seg)
    assert model.fallback_ == {5: "only 1 training edges"}


def test_auc_is_nan_on_a_single_class_slice():
    table = segment_auc_table(
        np.array([1, -1, 1, 1]), np.array([0.9, 0.1, 0.8, 0.7]), np.array([0.6, 0.4, 0.5, 0.5]),
        np.array([0, 0, 1, 1]),
    )
    row = table.set_index("slice").loc["segment:1"]
    assert np.isnan(row["auc_segment"]) and np.isnan(row["improvement_pct"])
    assert table.set_index("slice").loc["all", "auc_segment"] == 1.0


def test_edge_features_picks_item_rows_and_columns():
    items = pd.DataFrame(
        {"price": [1.0, 2.0, 3.0], "quality": [0.5, 0.1, 0.9], "name": list("abc")}
    )
    x = edge_features(items, np.array([2, 0, 2]), columns=["price", "quality"])
    np.testing.assert_array_equal(x, [[3.0, 0.9], [1.0, 0.5], [3.0, 0.9]])
    with pytest.raises(ValueError, match="name"):
        edge_features(items, np.array([0]))
    with pytest.raises(ValueError, match="range"):
        edge_features(items[["price"]], np.array([3]))
    with pytest.raises(ValueError, match="item_features must be a 2-D"):
        edge_features(np.array([1.0, 2.0]), np.array([0]))
    with pytest.raises(ValueError, match="item_features contains NaN or inf"):
        edge_features(np.array([[1.0], [np.nan]]), np.array([0]))


def test_input_validation():
    x, y, seg = _opposite_tastes(200, seed=5)
    with pytest.raises(ValueError, match="same class"):
        SegmentClassifiers().fit(x, np.ones(200), seg)
    with pytest.raises(ValueError, match="segments"):
        SegmentClassifiers().fit(x, y, seg[:10])
    with pytest.raises(ValueError, match="labels"):
        SegmentClassifiers().fit(x, np.full(200, 3), seg)
    with pytest.raises(ValueError, match="not fitted"):
        SegmentClassifiers().predict_proba(x, seg)
    model = SegmentClassifiers().fit(x, y, seg)
    bad = x.copy()
    bad[3, 0] = np.nan
    for predict in (lambda: model.predict_proba(bad, seg), lambda: model.population_proba(bad)):
        with pytest.raises(ValueError, match="X contains NaN or inf"):
            predict()
    with pytest.raises(ValueError, match="X must be a 2-D"):
        model.population_proba(x[:, 0])


def test_improvement_is_nan_where_population_auc_is_zero():
    # the population ranks every test edge exactly wrong: AUC 0, so no relative gain
    y = np.array([1, 1, -1, -1])
    p_population = np.array([0.1, 0.2, 0.8, 0.9])
    table = segment_auc_table(y, np.array([0.9, 0.8, 0.1, 0.2]), p_population, np.zeros(4))
    assert table.loc[0, "auc_population"] == 0.0
    assert np.isnan(table.loc[0, "improvement_pct"])


def test_compare_segmentations_scores_each_segmentation_on_the_same_edges():
    """Items carry the feature; customers of two planted segments react to it in opposite
    directions. The planted segmentation beats a random one, which does no better than
    the population model."""
    rng = np.random.default_rng(3)
    n_customers, n_items = 300, 80
    features = rng.normal(size=(n_items, 1))
    planted = rng.integers(0, 2, size=n_customers)

    def edges(n: int):
        rows = rng.integers(0, n_customers, size=n)
        cols = rng.integers(0, n_items, size=n)
        slope = np.where(planted[rows] == 0, 2.5, -2.5)
        labels = np.where(rng.random(n) < 1 / (1 + np.exp(-slope * features[cols, 0])), 1, -1)
        return rows, cols, labels

    comparison = compare_segmentations(
        features, edges(6000), edges(3000),
        {"planted": planted, "random": rng.integers(0, 2, size=n_customers)},
    )
    assert set(comparison.models) == set(comparison.aucs) == {"planted", "random"}
    planted_all = comparison.aucs["planted"].set_index("slice").loc["all"]
    random_all = comparison.aucs["random"].set_index("slice").loc["all"]
    assert planted_all["auc_segment"] > 0.75
    assert planted_all["auc_segment"] > planted_all["auc_population"] + 0.15
    assert abs(random_all["auc_segment"] - random_all["auc_population"]) < 0.05
    # the population model is the same fit whichever segmentation is scored
    assert planted_all["auc_population"] == pytest.approx(random_all["auc_population"])


def test_learned_item_features_are_standardised_popularity_and_like_rate(synthetic_graph):
    graph, _ = synthetic_graph(300, 50, 3, 0.3, seed=2)  # sparse: item degrees differ
    features = learned_item_features(graph)
    assert features.shape == (graph.n_items, 2)
    np.testing.assert_allclose(features.mean(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(features.std(axis=0), 1, rtol=1e-9)
    degrees = graph.item_degrees()
    # the first column orders items by popularity
    assert np.array_equal(np.argsort(features[:, 0], kind="stable"),
                          np.argsort(np.log1p(degrees), kind="stable"))
