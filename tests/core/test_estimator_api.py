"""scikit-learn manners of the core estimators: get_params, clone, repr, NotFittedError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

import segmentation_dagster.core as core
from segmentation_dagster.core.baselines import (
    CategoryLatentClassEM,
    DemographicSegmenter,
    EmpiricalBayes,
    KMedoidsCosine,
    LatentClassEM,
    PopulationModel,
    SpectralCosine,
)
from segmentation_dagster.core.clustering import SegmentClusterer
from segmentation_dagster.core.pooled import (
    FeatureLogistic,
    GlobalBernoulli,
    ItemBernoulli,
    PerCategory,
    StoredPooledModel,
)
from segmentation_dagster.core.recommend import (
    FactorScorer,
    NMFScorer,
    PopularityScorer,
    SegmentPopularityScorer,
)
from segmentation_dagster.core.segment_classifier import SegmentClassifiers
from segmentation_dagster.core.segmenters import HardSegmenter, ModelEmbeddingSegmenter
from segmentation_dagster.core.sequence.lookalike import BagOfItemsLogistic
from segmentation_dagster.core.sequence.segments import BehaviourSegmenter
from segmentation_dagster.core.sequence.train import LookalikeClassifier, NextItemModel

ROWS = np.array([0])
X = np.zeros((2, 3))

# (estimator, what a fitted estimator may do but an unfitted one must refuse)
UNFITTED_CALLS = {
    "ModelEmbeddingSegmenter": (
        lambda: ModelEmbeddingSegmenter(3),
        lambda m, graph: m.transform(graph),
    ),
    "ModelEmbeddingSegmenter.predict_proba": (
        lambda: ModelEmbeddingSegmenter(2, pooled="item", pooled_kwargs={"prior_strength": 1}),
        lambda m, graph: m.predict_proba(ROWS),
    ),
    "PopulationModel": (PopulationModel, lambda m, graph: m.predict_proba(ROWS)),
    "LatentClassEM": (lambda: LatentClassEM(2), lambda m, graph: m.predict_proba(ROWS)),
    "CategoryLatentClassEM": (
        lambda: CategoryLatentClassEM(2, alpha_prior=(1.5, 1.5)),
        lambda m, graph: m.predict_proba(ROWS, ROWS),
    ),
    "EmpiricalBayes": (EmpiricalBayes, lambda m, graph: m.predict_proba(ROWS)),
    "DemographicSegmenter": (
        lambda: DemographicSegmenter(pd.DataFrame({"age": ["young"]}, index=[0]), ["age"]),
        lambda m, graph: m.predict_proba(ROWS),
    ),
    "KMedoidsCosine": (lambda: KMedoidsCosine(2, n_init=2), lambda m, graph: m.predict_proba(ROWS)),
    "SpectralCosine": (lambda: SpectralCosine(2), lambda m, graph: m.predict_proba(ROWS)),
    "SegmentClusterer": (
        lambda: SegmentClusterer(2, method="spectral"),
        lambda m, graph: m.predict(np.array([1.0])),
    ),
    "GlobalBernoulli": (GlobalBernoulli, lambda m, graph: m.predict_proba(ROWS)),
    "ItemBernoulli": (
        lambda: ItemBernoulli(prior_strength=0.5),
        lambda m, graph: m.predict_proba(ROWS),
    ),
    "FeatureLogistic": (
        lambda: FeatureLogistic(np.ones((3, 2)), C=0.5),
        lambda m, graph: m.predict_proba(ROWS),
    ),
    "PerCategory": (PerCategory, lambda m, graph: m.predict_proba(ROWS)),
    "SegmentClassifiers": (
        lambda: SegmentClassifiers(C=0.1),
        lambda m, graph: m.predict_proba(X, np.zeros(2)),
    ),
    "SegmentClassifiers.population_proba": (
        SegmentClassifiers,
        lambda m, graph: m.population_proba(X),
    ),
    "NMFScorer": (lambda: NMFScorer(n_components=2, loss="kl"), lambda m, graph: m.score(ROWS)),
    "PopularityScorer": (PopularityScorer, lambda m, graph: m.score(ROWS)),
    "SegmentPopularityScorer": (
        lambda: SegmentPopularityScorer(np.array([0, 1, -1])),
        lambda m, graph: m.score(ROWS),
    ),
    "BehaviourSegmenter": (
        lambda: BehaviourSegmenter((2, 3), n_init=1),
        lambda m, graph: m.predict(X),
    ),
    "BagOfItemsLogistic": (
        lambda: BagOfItemsLogistic(c_grid=(1.0,)),
        lambda m, graph: m.predict_proba(sp.csr_matrix(X)),
    ),
    # the unfitted check comes before the input is looked at
    "NextItemModel": (NextItemModel, lambda m, graph: m.last_outputs(None)),
    "LookalikeClassifier": (
        lambda: LookalikeClassifier(head_lr_factor=2.0),
        lambda m, graph: m.predict_proba(None),
    ),
}

# estimators that are fitted by construction (they wrap given, already fitted values)
PREFITTED = {
    "FactorScorer": lambda: FactorScorer(np.ones((3, 1)), np.ones((1, 4))),
    "StoredPooledModel": lambda: StoredPooledModel(np.array([0.2, 0.7]), 0.4),
}

FACTORIES = {name: make for name, (make, _) in UNFITTED_CALLS.items()} | PREFITTED


def _same(a, b) -> bool:
    """Parameter values equal (arrays and frames by value)."""
    if isinstance(a, pd.DataFrame | pd.Series):
        return a.equals(b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, BaseEstimator):
        return type(a) is type(b) and _same_params(a.get_params(), b.get_params())
    return a is b or a == b


def _same_params(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(_same(first[k], second[k]) for k in first)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_clone_and_get_params_round_trip(name):
    estimator = FACTORIES[name]()
    params = estimator.get_params(deep=False)
    copy = clone(estimator)
    assert type(copy) is type(estimator) and copy is not estimator
    assert _same_params(copy.get_params(deep=False), params)
    rebuilt = type(estimator)(**params)
    assert _same_params(rebuilt.get_params(deep=False), params)
    assert rebuilt.set_params(**params) is rebuilt
    assert _same_params(rebuilt.get_params(deep=False), params)
    assert repr(estimator).startswith(type(estimator).__name__ + "(")


@pytest.mark.parametrize("name", sorted(UNFITTED_CALLS))
def test_use_before_fit_raises_not_fitted(name, easy_graph):
    make, use = UNFITTED_CALLS[name]
    estimator = make()
    with pytest.raises(NotFittedError, match="not fitted"):
        use(estimator, easy_graph[0])
    with pytest.raises(NotFittedError):
        check_is_fitted(estimator)


@pytest.mark.parametrize("name", sorted(PREFITTED))
def test_wrappers_of_given_values_are_fitted_by_construction(name):
    estimator = PREFITTED[name]()
    check_is_fitted(estimator)
    check_is_fitted(clone(estimator))


def test_set_params_changes_a_parameter_and_clone_forgets_the_fit(easy_graph):
    graph, _ = easy_graph
    model = KMedoidsCosine(3, n_init=1).fit(graph)
    fresh = clone(model).set_params(n_segments=2)
    assert fresh.n_segments == 2 and model.n_segments == 3
    with pytest.raises(NotFittedError):
        fresh.predict_proba(ROWS)
    scorer = NMFScorer(n_components=2).set_params(loss="kl")
    assert scorer.get_params() == {"n_components": 2, "loss": "kl"}


def test_fit_predict_returns_the_labels(easy_graph):
    graph, _ = easy_graph
    model = ModelEmbeddingSegmenter(3)
    assert np.array_equal(model.fit_predict(graph), model.labels_)
    x = np.array([0.0, 0.1, 5.0, 5.1])
    assert SegmentClusterer(2).fit_predict(x).tolist() == [0, 0, 1, 1]


def _core_estimators() -> list[type]:
    """Every BaseEstimator subclass defined in the core (its modules imported)."""
    for module in pkgutil.walk_packages(core.__path__, core.__name__ + "."):
        importlib.import_module(module.name)
    found, pending = set(), [BaseEstimator]
    while pending:
        for subclass in pending.pop().__subclasses__():
            if subclass not in found:
                found.add(subclass)
                pending.append(subclass)
    return sorted(
        (c for c in found if c.__module__.startswith(core.__name__ + ".")),
        key=lambda c: c.__qualname__,
    )


# __init__ does more than store: FactorScorer checks that its factors conform (they are
# all it has), NMFScorer passes **kwargs on (its get_params lists them)
STORES_MORE = {"FactorScorer", "NMFScorer"}


def test_every_core_estimator_stores_its_arguments_unchanged():
    """Each __init__ argument is stored under its own name (what get_params/clone need),
    checked with a distinct sentinel per argument; covers every segmenter in the tree."""
    estimators = _core_estimators()
    assert HardSegmenter in estimators and ModelEmbeddingSegmenter in estimators
    checked = []
    for estimator in estimators:
        if estimator.__name__ in STORES_MORE:
            continue
        names = [
            p.name for p in inspect.signature(estimator.__init__).parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        sentinels = {name: object() for name in names}
        params = estimator(**sentinels).get_params(deep=False)
        assert params.keys() == sentinels.keys(), estimator
        assert all(params[n] is sentinels[n] for n in names), estimator
        checked.append(estimator.__name__)
    assert {"NMFSegmenter", "ContextEmbeddingSegmenter", "KMedoidsCosine"} <= set(checked)
