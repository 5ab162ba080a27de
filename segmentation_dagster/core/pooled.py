"""Pooled models: ONE model fitted to every customer's observations at once.

Each model predicts, for an item column index, the probability of a like. From that the
embedding takes the log-likelihood of the observed label and the entropy of the
prediction. Every probability is clipped into [EPS, 1 - EPS] so no edge yields log 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from .graph import LIKE, PreferenceGraph

EPS = 1e-6


def bernoulli_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) = -p log p - (1-p) log(1-p), in nats."""
    p = np.clip(p, EPS, 1 - EPS)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def edge_log_likelihood(p_like: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """log f(x_ij): log p for a like, log(1 - p) for a dislike."""
    p = np.clip(p_like, EPS, 1 - EPS)
    return np.where(labels == LIKE, np.log(p), np.log1p(-p))


def _like_rate(graph: PreferenceGraph) -> float:
    if graph.n_edges == 0:
        raise ValueError("the graph has no edges: nothing to fit a pooled model on")
    rate = float((graph.matrix.data == LIKE).mean())
    if rate in (0.0, 1.0):
        word = "like (+1)" if rate == 1.0 else "dislike (-1)"
        raise ValueError(
            f"every one of the {graph.n_edges} labels is {word}: the pooled probability is "
            f"{rate:.0f}, its entropy is 0 and no customer differs from any other"
        )
    return rate


class PooledModel(BaseEstimator):
    """Interface: ``fit(graph)`` then ``predict_proba(cols)`` -> P(like) per item column.

    A scikit-learn estimator: ``__init__`` stores its arguments unchanged, ``fit`` sets
    ``alpha_pool_`` (and the other attributes ending in ``_``).
    """

    def fit(self, graph: PreferenceGraph) -> PooledModel:  # pragma: no cover - interface
        raise NotImplementedError

    def predict_proba(self, cols: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def _check_fitted(self) -> None:
        # NotFittedError is a ValueError, so callers catching ValueError still do
        check_is_fitted(self, "alpha_pool_", msg="%(name)s is not fitted; call fit(graph) first")


class _ItemTableModel(PooledModel):
    """A pooled model whose fit leaves one probability per item column in ``item_proba_``."""

    def predict_proba(self, cols: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return self.item_proba_[cols]


class GlobalBernoulli(PooledModel):
    """One like-probability alpha_pool for every item: the paper's alpha-embed model."""

    def fit(self, graph: PreferenceGraph) -> GlobalBernoulli:
        self.alpha_pool_ = _like_rate(graph)
        self.n_items_ = graph.n_items
        return self

    def predict_proba(self, cols: np.ndarray) -> np.ndarray:
        self._check_fitted()
        return np.full(len(cols), self.alpha_pool_)

    @property
    def n_parameters(self) -> int:
        return 1


class ItemBernoulli(_ItemTableModel):
    """One like-probability per item (the binary logit omega_j = logit p_j), closed form.

    The MLE is likes_j / d_j. It is shrunk towards alpha_pool by ``prior_strength``
    pseudo-observations, p_j = (likes_j + s * alpha_pool) / (d_j + s), so an item seen
    once, or only liked, never gets probability 0 or 1. ``prior_strength=0`` gives the
    plain MLE (then clipped by EPS).
    """

    def __init__(self, prior_strength: float = 2.0):
        self.prior_strength = prior_strength

    def fit(self, graph: PreferenceGraph) -> ItemBernoulli:
        if self.prior_strength < 0:
            raise ValueError(f"prior_strength must be >= 0, got {self.prior_strength}")
        self.alpha_pool_ = _like_rate(graph)
        likes = graph.item_likes()
        degrees = graph.item_degrees()
        s = self.prior_strength
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (likes + s * self.alpha_pool_) / (degrees + s)
        p[degrees + s == 0] = self.alpha_pool_
        self.item_proba_ = np.clip(p, EPS, 1 - EPS)
        return self

    @property
    def n_parameters(self) -> int:
        return len(self.item_proba_)


class FeatureLogistic(_ItemTableModel):
    """Logistic regression of the label on item features, p_j = sigma(w . y_j) (eBay case).

    ``item_features`` is an (n_items, f) array in the graph's column order.
    """

    def __init__(self, item_features: np.ndarray, C: float = 1.0, max_iter: int = 500):
        self.item_features = item_features
        self.C = C
        self.max_iter = max_iter

    def fit(self, graph: PreferenceGraph) -> FeatureLogistic:
        features = np.asarray(self.item_features, dtype=float)
        if features.ndim != 2 or features.shape[0] != graph.n_items or features.shape[1] == 0:
            raise ValueError(
                f"item_features must have shape (n_items={graph.n_items}, f >= 1); "
                f"got {features.shape}"
            )
        if not np.isfinite(features).all():
            raise ValueError("item_features contain NaN or inf")
        self.alpha_pool_ = _like_rate(graph)
        _, cols, labels = graph.edges()
        self.classifier_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
        self.classifier_.fit(features[cols], labels == LIKE)
        self.item_proba_ = np.clip(self.classifier_.predict_proba(features)[:, 1], EPS, 1 - EPS)
        return self

    @property
    def n_parameters(self) -> int:
        return int(self.classifier_.coef_.size + 1)


class PerCategory(_ItemTableModel):
    """A separate copy of ``base`` per item category: the partially specified model class.

    ``make_base(item_mask)`` builds a fresh pooled model for the subgraph of the items in
    ``item_mask``. Categories with a single label value fall back to the global rate, so
    none is degenerate.
    """

    def __init__(self, make_base=lambda item_mask: GlobalBernoulli()):
        self.make_base = make_base

    def fit(self, graph: PreferenceGraph) -> PerCategory:
        if graph.item_categories is None:
            raise ValueError("PerCategory needs a graph built with item_categories")
        self.alpha_pool_ = _like_rate(graph)
        self.categories_, self.item_category_ = np.unique(
            graph.item_categories, return_inverse=True
        )
        self.item_proba_ = np.full(graph.n_items, self.alpha_pool_)
        self.models_ = {}
        for b, category in enumerate(self.categories_):
            mask = self.item_category_ == b
            sub = graph.restrict_items(mask)
            labels = sub.matrix.data
            if sub.n_edges == 0 or (labels == labels[0]).all():
                continue
            model = self.make_base(mask).fit(sub)
            self.models_[category] = model
            self.item_proba_[mask] = model.predict_proba(np.arange(sub.n_items))
        return self


POOLED_MODELS = {"global": GlobalBernoulli, "item": ItemBernoulli}


def make_pooled_model(name: str, **kwargs) -> PooledModel:
    """A pooled model by name: 'global', 'item', 'features' (needs item_features),
    or any of them prefixed 'category:' for the per-category version."""
    if name.startswith("category:"):
        base = name.split(":", 1)[1]
        if base == "features":
            features = np.asarray(kwargs.pop("item_features"))
            return PerCategory(lambda mask: FeatureLogistic(features[mask], **kwargs))
        return PerCategory(lambda mask: make_pooled_model(base, **kwargs))
    if name == "features":
        return FeatureLogistic(**kwargs)
    if name not in POOLED_MODELS:
        raise ValueError(
            f"unknown pooled model {name!r}; choose from {sorted(POOLED_MODELS) + ['features']}"
        )
    return POOLED_MODELS[name](**kwargs)


class StoredPooledModel(_ItemTableModel):
    """A pooled model rebuilt from its stored item probabilities (no refit), so new
    customers can be scored against the model the segments were built with.

    It is fitted by construction: ``item_proba_`` and ``alpha_pool_`` are read from the
    parameters ``item_proba`` and ``alpha_pool`` (stored unchanged, so ``clone`` works),
    and ``fit`` does nothing.
    """

    def __init__(self, item_proba: np.ndarray, alpha_pool: float):
        self.item_proba = item_proba
        self.alpha_pool = alpha_pool

    @property
    def item_proba_(self) -> np.ndarray:
        return np.clip(np.asarray(self.item_proba, dtype=float), EPS, 1 - EPS)

    @property
    def alpha_pool_(self) -> float:
        return float(self.alpha_pool)

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, graph: PreferenceGraph | None = None) -> StoredPooledModel:
        return self
