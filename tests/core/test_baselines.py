"""Baselines: LC by EM, empirical Bayes, demographic groups, k-medoids, spectral."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core import cold_start
from segmentation_dagster.core.baselines import (
    CategoryLatentClassEM,
    DemographicSegmenter,
    EmpiricalBayes,
    KMedoidsCosine,
    LatentClassEM,
    PopulationModel,
    SpectralCosine,
    cosine_similarity_matrix,
)
from segmentation_dagster.core.graph import LIKE, PreferenceGraph
from segmentation_dagster.core.metrics import hungarian_accuracy, sorted_label_accuracy


def all_baselines(graph):
    attributes = pd.DataFrame(
        {"band": np.arange(graph.n_customers) % 3}, index=graph.customer_ids
    )
    return [
        PopulationModel(),
        LatentClassEM(3),
        EmpiricalBayes(),
        DemographicSegmenter(attributes),
        KMedoidsCosine(3),
        SpectralCosine(3),
    ]


def test_every_baseline_fits_and_predicts_probabilities(synthetic_graph):
    graph, _ = synthetic_graph(150, 30, 3, 0.5, seed=21)
    rows = np.arange(0, graph.n_customers, 7)
    for model in all_baselines(graph):
        model.fit(graph)
        assert model.labels_.shape == (graph.n_customers,)
        p = model.predict_proba(rows, np.zeros(len(rows), dtype=int))
        assert p.shape == rows.shape, model.name
        assert np.all((p > 0) & (p < 1)), model.name


def test_population_model_is_one_segment(easy_graph):
    graph, _ = easy_graph
    model = PopulationModel().fit(graph)
    assert model.n_segments_ == 1
    share = (graph.matrix.data == LIKE).mean()
    assert model.segment_alpha_[0] == pytest.approx(share, abs=1e-3)


def test_latent_class_recovers_alphas_and_proportions(synthetic_graph):
    graph, segments = synthetic_graph(1500, 100, 3, 1.0, seed=22,
                                      proportions=np.array([0.2, 0.3, 0.5]))
    model = LatentClassEM(3).fit(graph)
    assert model.converged_ and model.n_iter_ < model.max_iter
    assert np.allclose(model.alpha_, [0.05, 0.5, 0.95], atol=0.01)
    assert np.allclose(model.weights_, np.bincount(segments) / len(segments), atol=0.01)
    assert sorted_label_accuracy(segments, model.labels_) > 0.99
    # the kept restart is the best one, and responsibilities are distributions
    assert model.log_posterior_ == pytest.approx(model.restart_log_posteriors_.max())
    assert np.allclose(model.responsibilities_.sum(axis=1), 1)
    p = model.predict_proba(np.arange(5))
    assert np.allclose(p, model.responsibilities_[:5] @ model.alpha_)


def test_latent_class_is_reproducible(synthetic_graph):
    graph, _ = synthetic_graph(300, 40, 4, 0.4, seed=23)
    first, second = LatentClassEM(4).fit(graph), LatentClassEM(4).fit(graph)
    assert np.array_equal(first.labels_, second.labels_)
    assert np.all(np.diff(first.alpha_) >= 0)


def test_latent_class_gives_customers_with_equal_counts_equal_posteriors(synthetic_graph):
    graph, _ = synthetic_graph(300, 20, 3, 0.5, seed=24)
    model = LatentClassEM(3).fit(graph)
    likes, degrees = graph.customer_likes(), graph.customer_degrees()
    key = likes * 1000 + degrees
    for value in np.unique(key)[:10]:
        same = np.flatnonzero(key == value)
        assert np.allclose(model.responsibilities_[same], model.responsibilities_[same[0]])


def test_latent_class_customer_without_edges_gets_the_prior_weights():
    table = pd.DataFrame({"customer_id": [0, 0, 1, 1], "item_id": [0, 1, 0, 1],
                          "label": [1, 1, -1, -1]})
    graph = PreferenceGraph.from_edges(table, customer_ids=np.array([0, 1, 2]))
    model = LatentClassEM(2).fit(graph)
    assert np.allclose(model.responsibilities_[2], model.weights_)
    assert np.isfinite(model.predict_proba(np.array([2]))).all()


def test_empirical_bayes_posterior_between_rate_and_prior(synthetic_graph):
    graph, _ = synthetic_graph(300, 40, 3, 0.3, seed=25)
    model = EmpiricalBayes().fit(graph)
    rate = graph.customer_likes() / graph.customer_degrees()
    prior = model.prior_a_ / (model.prior_a_ + model.prior_b_)
    posterior = model.predict_proba(np.arange(graph.n_customers))
    assert np.all(posterior >= np.minimum(rate, prior) - 1e-12)
    assert np.all(posterior <= np.maximum(rate, prior) + 1e-12)
    # strictly shrunk for customers whose rate differs from the prior mean
    differs = np.abs(rate - prior) > 0.05
    assert np.all(np.abs(posterior - prior)[differs] < np.abs(rate - prior)[differs])
    assert model.n_segments_ == 1


def test_empirical_bayes_customer_without_edges_gets_prior_mean():
    table = pd.DataFrame({"customer_id": [0, 0, 1, 1, 3], "item_id": [0, 1, 0, 1, 0],
                          "label": [1, 1, -1, 1, -1]})
    graph = PreferenceGraph.from_edges(table, customer_ids=np.array([0, 1, 2, 3]))
    model = EmpiricalBayes().fit(graph)
    prior = model.prior_a_ / (model.prior_a_ + model.prior_b_)
    assert model.predict_proba(np.array([2]))[0] == pytest.approx(prior)


def test_demographic_groups_by_attributes_with_unknown(easy_graph):
    graph, _ = easy_graph
    ids = graph.customer_ids
    attributes = pd.DataFrame(
        {"gender": np.where(np.arange(len(ids)) % 2 == 0, "F", "M"),
         "band": np.where(np.arange(len(ids)) % 3 == 0, "young", "old")},
        index=ids,
    ).astype(object)
    attributes.iloc[:5, 0] = None  # missing gender
    attributes = attributes.drop(index=ids[-4:])  # customers absent from the table
    model = DemographicSegmenter(attributes, ["gender", "band"]).fit(graph)
    names = model.segment_names_
    assert "F|young" in names and "M|old" in names
    assert any(name.startswith("unknown|") for name in names)
    assert "unknown|unknown" in names
    absent = names[model.labels_[-1]]
    assert absent == "unknown|unknown"
    # customers with the same attributes share a segment
    key = attributes.reindex(ids).fillna("unknown").astype(str).agg("|".join, axis=1)
    for label in range(model.n_segments_):
        assert key[model.labels_ == label].nunique() == 1
    assert np.all(np.diff(model.segment_alpha_) >= 0)


def test_demographic_unknown_column_is_named(easy_graph):
    graph, _ = easy_graph
    with pytest.raises(ValueError, match="no column \\['age'\\]"):
        DemographicSegmenter(pd.DataFrame({"g": []}), ["age"]).fit(graph)


# alpha 0.05 against 0.95: the clipped cosine graph splits into the two segments
@pytest.mark.filterwarnings("ignore:Graph is not fully connected")
@pytest.mark.parametrize("method", [KMedoidsCosine, SpectralCosine])
def test_distance_methods_beat_chance_on_easy_dense_data(synthetic_graph, method):
    graph, segments = synthetic_graph(300, 40, 2, 1.0, seed=26, proportions=np.array([0.5, 0.5]))
    model = method(2).fit(graph)
    assert hungarian_accuracy(segments, model.labels_) > 0.9
    assert np.all(np.diff(model.segment_alpha_) > 0)


def test_kmedoids_is_reproducible(synthetic_graph):
    graph, _ = synthetic_graph(200, 30, 3, 0.6, seed=27)
    first, second = KMedoidsCosine(3).fit(graph), KMedoidsCosine(3).fit(graph)
    assert np.array_equal(first.labels_, second.labels_)
    assert first.inertia_ >= 0


def test_cosine_similarity_of_sign_vectors():
    table = pd.DataFrame({"customer_id": [0, 0, 1, 1, 2], "item_id": [0, 1, 0, 1, 0],
                          "label": [1, -1, 1, -1, -1]})
    graph = PreferenceGraph.from_edges(table)
    s = cosine_similarity_matrix(graph)
    assert s[0, 1] == pytest.approx(1.0)
    assert s[0, 2] == pytest.approx(-1 / np.sqrt(2))
    with pytest.raises(ValueError, match="the limit is 2"):
        cosine_similarity_matrix(graph, max_customers=2)


@pytest.mark.parametrize(
    "model", [LatentClassEM(4), KMedoidsCosine(4), SpectralCosine(4)], ids=lambda m: m.name
)
def test_k_larger_than_customers_is_refused(model):
    table = pd.DataFrame({"customer_id": [0, 1, 2], "item_id": [0, 0, 1], "label": [1, -1, 1]})
    graph = PreferenceGraph.from_edges(table)
    with pytest.raises(ValueError, match="K=4 is larger than the 3 distinct customers"):
        model.fit(graph)


def _opposite_tastes_graph(n_per_group=150, n_items=40, seed=0):
    """Two groups with the same overall like-rate but opposite tastes in two categories:
    group 0 likes category 'x' with probability 0.85 and 'y' with 0.15, group 1 the
    reverse. Each customer rates each item with probability 0.5."""
    rng = np.random.default_rng(seed)
    group = np.repeat([0, 1], n_per_group)
    category = np.where(np.arange(n_items) < n_items // 2, "x", "y")
    rows, cols = np.nonzero(rng.random((len(group), n_items)) < 0.5)
    p_like = np.where((group[rows] == 0) == (category[cols] == "x"), 0.85, 0.15)
    table = pd.DataFrame(
        {"customer_id": rows, "item_id": cols,
         "label": np.where(rng.random(len(rows)) < p_like, 1, -1)}
    )
    graph = PreferenceGraph.from_edges(table, item_categories=pd.Series(category))
    return graph, group


def test_category_latent_class_separates_tastes_that_one_rate_cannot():
    graph, group = _opposite_tastes_graph()
    model = CategoryLatentClassEM(2).fit(graph)
    assert model.converged_ and list(model.categories_) == ["x", "y"]
    assert hungarian_accuracy(group, model.labels_) > 0.97
    # each class has the planted rates, one per category: (0.85, 0.15) and (0.15, 0.85)
    by_x = model.alpha_[np.argsort(model.alpha_[:, 0])]
    assert np.allclose(by_x, [[0.15, 0.85], [0.85, 0.15]], atol=0.05)
    rows = np.arange(graph.n_customers)
    p = model.predict_proba(rows, np.zeros_like(rows))
    assert np.allclose(p, model.responsibilities_ @ model.alpha_[:, 0])
    # with one rate per class the two groups look alike
    assert hungarian_accuracy(group, LatentClassEM(2).fit(graph).labels_) < 0.75


def test_category_latent_class_is_importable_from_cold_start():
    assert cold_start.CategoryLatentClassEM is CategoryLatentClassEM


@pytest.mark.parametrize("model_class", [LatentClassEM, CategoryLatentClassEM])
def test_latent_class_bad_restarts(model_class):
    graph, _ = _opposite_tastes_graph(20, 10)
    with pytest.raises(ValueError, match="n_restarts must be >= 1"):
        model_class(2, n_restarts=0).fit(graph)
    with pytest.raises(ValueError, match="K=41 is larger than the 40 distinct customers"):
        model_class(41).fit(graph)


def test_unfitted_baselines_say_so():
    for model in (LatentClassEM(2), EmpiricalBayes(), PopulationModel()):
        with pytest.raises(ValueError, match="not fitted"):
            model.predict_proba(np.array([0]))
    with pytest.raises(ValueError, match="not fitted"):
        CategoryLatentClassEM(2).predict_proba(np.array([0]), np.array([0]))
