"""Per-segment models of the pooled model's class: step 4 of the method at the item level.

Given a segmentation (one segment per customer) every class here fits one model per
segment and predicts P(like) for edges (customer row, item column):

- :class:`SegmentGlobalModel`: one like-rate per segment (today's segment model);
- :class:`SegmentItemModel`: per-segment item rates alpha_kj, shrunk toward the pooled
  item rate shifted by the segment's own logit offset (docs/method.md, "Segment models at
  the item level");
- :class:`SegmentCategoryModel`: the same per (segment, item category);
- :class:`SegmentFeatureLogistic`: a logistic regression on item features per segment,
  regularised toward the pooled one.

The shrinkage strength is chosen on VALIDATION edges from a small grid: pass them to
``fit(graph, labels, validation=(rows, cols, labels))`` or call :meth:`select_strength`;
with ``strength="auto"`` and no validation edges, ``fit`` holds out a share of the
training edges itself (:func:`split_validation_edges`). Test edges are never involved.

Everything is sparse group-bys (``np.bincount`` over edges); the (segment, item) table
is stored only for the pairs that have edges, never as a dense K x items matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import expit, logit
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .graph import LIKE, PreferenceGraph
from .pooled import EPS, FeatureLogistic, edge_log_likelihood

Validation = tuple[np.ndarray, np.ndarray, np.ndarray]

# Pseudo-edges of the shrinkage toward the shifted pooled rate. Geometric, because the
# log-likelihood is flat in s on a log scale; from "barely shrunk" to "nearly the prior".
STRENGTH_GRID: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
# L2 penalties on a segment's deviation from the pooled logistic regression.
PENALTY_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)


def split_validation_edges(
    graph: PreferenceGraph, fraction: float = 0.1, random_state: int = 0
) -> tuple[PreferenceGraph, Validation]:
    """(training graph, validation edges): about ``fraction`` of EACH customer's edges held
    out at random, never a customer's last edge (so everyone keeps an embedding).

    The number held out per customer is fraction * d_i with randomised rounding, so
    light customers still contribute validation edges in expectation. Validation edges
    are (rows, cols, labels) in the graph's row and column positions.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(random_state)
    rows, cols, labels = graph.edges()
    degrees = graph.customer_degrees()
    n_held = np.floor(fraction * degrees + rng.random(len(degrees))).astype(np.int64)
    n_held = np.minimum(n_held, np.maximum(degrees - 1, 0))
    # a random order within each customer (rows are already sorted in CSR order)
    order = np.lexsort((rng.random(len(rows)), rows))
    rank = np.empty(len(rows), dtype=np.int64)
    rank[order] = np.arange(len(rows)) - graph.matrix.indptr[:-1][rows[order]]
    held = rank < n_held[rows]
    matrix = sp.csr_matrix(
        (labels[~held].astype(np.int8), (rows[~held], cols[~held])), shape=graph.matrix.shape
    )
    matrix.sort_indices()
    train = PreferenceGraph(matrix, graph.customer_ids, graph.item_ids, graph.item_categories)
    return train, (rows[held], cols[held], labels[held])


def check_validation(validation: Validation, graph: PreferenceGraph) -> Validation:
    """Validated (rows, cols, labels) edges inside ``graph``'s customers and items."""
    if len(validation) != 3:
        raise ValueError("validation must be a (rows, cols, labels) tuple")
    rows, cols, labels = (np.asarray(a) for a in validation)
    if not len(rows) == len(cols) == len(labels):
        raise ValueError(
            f"validation rows, cols and labels differ in length: {len(rows)}, {len(cols)}, "
            f"{len(labels)}"
        )
    if len(rows) == 0:
        raise ValueError("validation has no edges")
    _check_positions(rows, graph.n_customers, "validation rows")
    _check_positions(cols, graph.n_items, "validation cols")
    if not np.isin(labels, (LIKE, -LIKE)).all():
        raise ValueError("validation labels must be +1 or -1")
    return rows.astype(np.int64), cols.astype(np.int64), labels


def _check_positions(values: np.ndarray, size: int, name: str) -> None:
    if values.dtype.kind not in "iu":
        raise ValueError(f"{name} must be integer positions, got dtype {values.dtype}")
    if len(values) and (values.min() < 0 or values.max() >= size):
        raise ValueError(f"{name} must lie in [0, {size}); got [{values.min()}, {values.max()}]")


def _check_segment_labels(labels: np.ndarray, graph: PreferenceGraph) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (graph.n_customers,):
        raise ValueError(
            f"labels must have one segment per customer, shape ({graph.n_customers},); "
            f"got {labels.shape}"
        )
    if labels.dtype.kind not in "iu" or (len(labels) and labels.min() < 0):
        raise ValueError("labels must be non-negative integer segment numbers")
    return labels.astype(np.int64)


def _like_rate(graph: PreferenceGraph) -> float:
    if graph.n_edges == 0:
        raise ValueError("the graph has no edges: nothing to fit segment models on")
    rate = float((graph.matrix.data == LIKE).mean())
    return float(np.clip(rate, EPS, 1 - EPS))


class _SegmentModel(BaseEstimator):
    """Shared fit / strength selection / prediction. Subclasses implement
    ``_fit_strength(graph, labels, strength)`` and ``_predict(segments, cols)``."""

    _default_grid: tuple[float, ...] = STRENGTH_GRID

    def fit(
        self,
        graph: PreferenceGraph,
        labels: np.ndarray,
        validation: Validation | None = None,
    ) -> _SegmentModel:
        """Fit one model per segment on ``graph`` with segments ``labels`` (length m).

        With ``strength="auto"`` the strength is chosen on ``validation`` (edges of the
        same customers held out of ``graph``), or, without it, on a split of ``graph``
        itself. A numeric ``strength`` is used as given and ``validation`` is ignored.
        """
        labels = _check_segment_labels(labels, graph)
        if self.strength == "auto":
            if validation is not None:
                return self.select_strength(graph, labels, *validation)
            train, held = split_validation_edges(
                graph, self.validation_fraction, self.random_state
            )
            if len(held[0]) == 0:
                raise ValueError(
                    "strength='auto' needs validation edges and the graph is too small to "
                    "hold any out; pass validation=(rows, cols, labels) or a numeric strength"
                )
            self._prepare(train, labels)
            best, scores = self._search(train, labels, held)
            self._prepare(graph, labels)
            self._fit_strength(graph, labels, best)
            self.validation_scores_ = scores
            return self
        strength = float(self.strength)
        if not strength > 0:
            raise ValueError(f"strength must be > 0 or 'auto', got {self.strength!r}")
        self._prepare(graph, labels)
        self._fit_strength(graph, labels, strength)
        return self

    def select_strength(
        self,
        graph: PreferenceGraph,
        labels: np.ndarray,
        val_rows: np.ndarray,
        val_cols: np.ndarray,
        val_labels: np.ndarray,
    ) -> _SegmentModel:
        """Fit on ``graph`` with the strength from the grid that maximises the mean
        log-likelihood of the validation edges; ``validation_scores_`` keeps every score."""
        labels = _check_segment_labels(labels, graph)
        validation = check_validation((val_rows, val_cols, val_labels), graph)
        self._prepare(graph, labels)
        best, scores = self._search(graph, labels, validation)
        self._fit_strength(graph, labels, best)
        self.validation_scores_ = scores
        return self

    def _grid(self) -> tuple[float, ...]:
        grid = tuple(self._default_grid if self.strength_grid is None else self.strength_grid)
        if not grid or min(grid) <= 0:
            raise ValueError(f"strength_grid must hold positive values, got {grid}")
        return grid

    def _search(
        self, graph: PreferenceGraph, labels: np.ndarray, validation: Validation
    ) -> tuple[float, dict[float, float]]:
        rows, cols, y = check_validation(validation, graph)
        scores = {}
        for strength in self._grid():
            self._fit_strength(graph, labels, float(strength))
            p = self._predict(labels[rows], cols)
            scores[float(strength)] = float(edge_log_likelihood(p, y).mean())
        # ties go to the stronger shrinkage: the simpler model
        best = max(scores, key=lambda s: (scores[s], s))
        return best, scores

    def _prepare(self, graph: PreferenceGraph, labels: np.ndarray) -> None:
        """Work that does not depend on the strength (e.g. the pooled model)."""
        self.labels_ = labels
        self.n_segments_ = int(labels.max()) + 1 if len(labels) else 0
        self.n_items_ = graph.n_items
        self.alpha_pool_ = _like_rate(graph)

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """P(like) for edges (customer row of the fitted graph, item column)."""
        check_is_fitted(self, "strength_")
        rows = np.asarray(rows)
        _check_positions(rows, len(self.labels_), "rows")
        return self.predict_segment_proba(self.labels_[rows], cols)

    def predict_segment_proba(self, segments: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """P(like) for (segment, item column) pairs, e.g. for new customers once assigned."""
        check_is_fitted(self, "strength_")
        segments, cols = np.asarray(segments), np.asarray(cols)
        if segments.shape != cols.shape:
            raise ValueError(f"segments and cols differ in shape: {segments.shape}, {cols.shape}")
        _check_positions(segments, self.n_segments_, "segments")
        _check_positions(cols, self.n_items_, "cols")
        return np.clip(self._predict(segments.astype(np.int64), cols.astype(np.int64)),
                       EPS, 1 - EPS)

    def segment_item_proba(self, segment: int, cols: np.ndarray | None = None) -> np.ndarray:
        """One segment's P(like) on the items ``cols`` (all items by default)."""
        cols = np.arange(self.n_items_) if cols is None else np.asarray(cols)
        return self.predict_segment_proba(np.full(len(cols), int(segment)), cols)


class SegmentGlobalModel(_SegmentModel):
    """One like-rate per segment, (likes_k + s) / (edges_k + 2 s): today's segment model
    (``segmenters.segment_like_rates`` with ``prior=s``); it ignores the item."""

    _default_grid = (0.5, 1.0, 2.0, 5.0, 10.0)

    def __init__(
        self,
        strength: float | str = 1.0,
        strength_grid: Sequence[float] | None = None,
        validation_fraction: float = 0.1,
        random_state: int = 0,
    ):
        self.strength = strength
        self.strength_grid = strength_grid
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _fit_strength(self, graph: PreferenceGraph, labels: np.ndarray, strength: float) -> None:
        k = self.n_segments_
        likes = np.bincount(labels, weights=graph.customer_likes(), minlength=k)
        edges = np.bincount(labels, weights=graph.customer_degrees(), minlength=k)
        self.segment_alpha_ = (likes + strength) / (edges + 2 * strength)
        self.strength_ = strength

    def _predict(self, segments: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return self.segment_alpha_[segments]


class _ShrunkUnitModel(_SegmentModel):
    """alpha_ku = (likes_ku + s prior_ku) / (edges_ku + s) over units u (items or item
    categories), prior_ku = sigma(logit(alpha_u) + delta_k),
    delta_k = logit(alpha_k) - logit(alpha_pool).

    alpha_u is the pooled unit rate, shrunk toward alpha_pool by ``pooled_strength``
    pseudo-edges (as :class:`~segmentation_dagster.core.pooled.ItemBernoulli`); alpha_k is
    the segment's overall like-rate with one pseudo-count per label. Counts are kept only
    for the (segment, unit) pairs that have edges, as sorted keys k * U + u; any other
    pair is its prior.
    """

    def __init__(
        self,
        strength: float | str = "auto",
        strength_grid: Sequence[float] | None = None,
        pooled_strength: float = 2.0,
        validation_fraction: float = 0.1,
        random_state: int = 0,
    ):
        self.strength = strength
        self.strength_grid = strength_grid
        self.pooled_strength = pooled_strength
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _units(self, graph: PreferenceGraph) -> tuple[np.ndarray, int]:  # pragma: no cover
        raise NotImplementedError

    def _prepare(self, graph: PreferenceGraph, labels: np.ndarray) -> None:
        super()._prepare(graph, labels)
        if self.pooled_strength < 0:
            raise ValueError(f"pooled_strength must be >= 0, got {self.pooled_strength}")
        self.unit_of_item_, self.n_units_ = self._units(graph)
        rows, cols, y = graph.edges()
        like = (y == LIKE).astype(float)
        units = self.unit_of_item_[cols]
        u, k, c = self.n_units_, self.n_segments_, self.pooled_strength
        unit_likes = np.bincount(units, weights=like, minlength=u)
        unit_edges = np.bincount(units, minlength=u)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = (unit_likes + c * self.alpha_pool_) / (unit_edges + c)
        rate[unit_edges + c == 0] = self.alpha_pool_
        self.unit_proba_ = np.clip(rate, EPS, 1 - EPS)
        segments = labels[rows]
        seg_likes = np.bincount(segments, weights=like, minlength=k)
        seg_edges = np.bincount(segments, minlength=k)
        self.segment_alpha_ = (seg_likes + 1.0) / (seg_edges + 2.0)
        self.segment_delta_ = logit(self.segment_alpha_) - logit(self.alpha_pool_)
        keys = segments * np.int64(u) + units
        self.pair_keys_, inverse = np.unique(keys, return_inverse=True)
        self.pair_likes_ = np.bincount(inverse, weights=like)
        self.pair_edges_ = np.bincount(inverse).astype(float)

    def _fit_strength(self, graph: PreferenceGraph, labels: np.ndarray, strength: float) -> None:
        # the counts are fixed by _prepare; the strength only enters at prediction
        self.strength_ = strength

    def _prior(self, segments: np.ndarray, units: np.ndarray) -> np.ndarray:
        return expit(logit(self.unit_proba_[units]) + self.segment_delta_[segments])

    def _predict(self, segments: np.ndarray, cols: np.ndarray) -> np.ndarray:
        units = self.unit_of_item_[cols]
        keys = segments * np.int64(self.n_units_) + units
        position = np.searchsorted(self.pair_keys_, keys)
        position = np.minimum(position, len(self.pair_keys_) - 1)
        found = self.pair_keys_[position] == keys
        likes = np.where(found, self.pair_likes_[position], 0.0)
        edges = np.where(found, self.pair_edges_[position], 0.0)
        s = self.strength_
        return (likes + s * self._prior(segments, units)) / (edges + s)

    def pair_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(segment, unit, likes, edges) of every observed (segment, unit) pair."""
        check_is_fitted(self, "strength_")
        u = self.n_units_
        return self.pair_keys_ // u, self.pair_keys_ % u, self.pair_likes_, self.pair_edges_


class SegmentItemModel(_ShrunkUnitModel):
    """Per-segment item rates alpha_kj = (likes_kj + s prior_kj) / (edges_kj + s) with
    prior_kj = sigma(logit(alpha_j) + delta_k): the segment model for the per-item pooled
    model. ``strength`` is s ('auto': chosen on validation edges from ``strength_grid``).

    Fitted attributes: ``labels_``, ``n_segments_``, ``alpha_pool_``, ``unit_proba_``
    (pooled alpha_j), ``segment_alpha_`` (alpha_k), ``segment_delta_`` (delta_k),
    ``strength_``, the observed pairs ``pair_keys_`` / ``pair_likes_`` / ``pair_edges_``
    and, when the strength was chosen, ``validation_scores_`` (s -> mean validation
    log-likelihood per edge).
    """

    def _units(self, graph: PreferenceGraph) -> tuple[np.ndarray, int]:
        return np.arange(graph.n_items), graph.n_items


class SegmentCategoryModel(_ShrunkUnitModel):
    """The same shrinkage per (segment, item category): the segment model for the
    per-category pooled model (one rate per category). Needs ``item_categories``;
    ``categories_`` holds the sorted categories (unit u is ``categories_[u]``)."""

    def _units(self, graph: PreferenceGraph) -> tuple[np.ndarray, int]:
        if graph.item_categories is None:
            raise ValueError("SegmentCategoryModel needs a graph built with item_categories")
        self.categories_, unit = np.unique(graph.item_categories, return_inverse=True)
        return unit.reshape(-1), len(self.categories_)


class SegmentFeatureLogistic(_SegmentModel):
    """A logistic regression per segment on item features, regularised toward the pooled
    one: P(like | k, j) = sigma(o_j + b_k + z_j . beta_k).

    o_j is the pooled :class:`~segmentation_dagster.core.pooled.FeatureLogistic` logit
    (fitted on every edge) used as a fixed OFFSET, z_j the standardised features, and
    (b_k, beta_k) the segment's deviation from the pooled model, fitted by L-BFGS with
    the L2 penalty ``strength`` / 2 * |beta_k|^2 (b_k, the segment's logit shift, gets
    only a tiny penalty so an empty or one-label segment stays finite). We chose the
    offset over a warm start: with an offset the penalty shrinks a segment toward the
    pooled model itself (beta_k = 0 IS the pooled model), whereas sklearn's L2 pulls a
    warm-started coefficient toward 0, not toward the pooled fit. A segment with few
    edges therefore predicts nearly the pooled model shifted by its own rate.

    ``add_category_indicators``: append one-hot item categories to the features (for
    the per-category feature model).
    """

    _default_grid = PENALTY_GRID

    def __init__(
        self,
        item_features: np.ndarray | None = None,
        strength: float | str = "auto",
        strength_grid: Sequence[float] | None = None,
        C: float = 1.0,
        add_category_indicators: bool = False,
        max_iter: int = 200,
        validation_fraction: float = 0.1,
        random_state: int = 0,
    ):
        self.item_features = item_features
        self.strength = strength
        self.strength_grid = strength_grid
        self.C = C
        self.add_category_indicators = add_category_indicators
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def _features(self, graph: PreferenceGraph) -> np.ndarray:
        if self.item_features is None:
            raise ValueError("SegmentFeatureLogistic needs item_features (n_items, f)")
        features = np.asarray(self.item_features, dtype=float)
        if features.ndim != 2 or features.shape[0] != graph.n_items or features.shape[1] == 0:
            raise ValueError(
                f"item_features must have shape (n_items={graph.n_items}, f >= 1); "
                f"got {features.shape}"
            )
        if not np.isfinite(features).all():
            raise ValueError("item_features contain NaN or inf")
        if self.add_category_indicators:
            if graph.item_categories is None:
                raise ValueError("add_category_indicators needs a graph with item_categories")
            codes = np.unique(graph.item_categories, return_inverse=True)[1].reshape(-1)
            features = np.hstack([features, np.eye(codes.max() + 1)[codes]])
        return features

    def _prepare(self, graph: PreferenceGraph, labels: np.ndarray) -> None:
        super()._prepare(graph, labels)
        features = self._features(graph)
        pooled = FeatureLogistic(features, C=self.C).fit(graph)
        self.item_offset_ = logit(pooled.item_proba_)
        self.feature_mean_ = features.mean(axis=0)
        scale = features.std(axis=0)
        self.feature_scale_ = np.where(scale > 0, scale, 1.0)
        self.z_ = (features - self.feature_mean_) / self.feature_scale_

    def _fit_strength(self, graph: PreferenceGraph, labels: np.ndarray, strength: float) -> None:
        rows, cols, y = graph.edges()
        sign = np.where(y == LIKE, 1.0, -1.0)
        segments = labels[rows]
        k, f = self.n_segments_, self.z_.shape[1]
        intercept, coef = np.zeros(k), np.zeros((k, f))
        order = np.argsort(segments, kind="stable")
        bounds = np.searchsorted(segments[order], np.arange(k + 1))
        for segment in range(k):  # K small fits, each vectorised over the segment's edges
            edges = order[bounds[segment]:bounds[segment + 1]]
            if len(edges) == 0:
                continue
            z, offset, s = self.z_[cols[edges]], self.item_offset_[cols[edges]], sign[edges]
            theta = _penalised_logit(z, offset, s, strength, self.max_iter)
            intercept[segment], coef[segment] = theta[0], theta[1:]
        self.intercept_, self.coef_ = intercept, coef
        self.strength_ = strength

    def _predict(self, segments: np.ndarray, cols: np.ndarray) -> np.ndarray:
        eta = (self.item_offset_[cols] + self.intercept_[segments]
               + np.einsum("ef,ef->e", self.z_[cols], self.coef_[segments]))
        return expit(eta)


def _penalised_logit(
    z: np.ndarray, offset: np.ndarray, sign: np.ndarray, penalty: float, max_iter: int
) -> np.ndarray:
    """argmin sum log(1 + exp(-s (o + b + z.beta))) + penalty/2 |beta|^2 + 1e-4/2 b^2."""
    weights = np.concatenate([[1e-4], np.full(z.shape[1], penalty)])
    design = np.hstack([np.ones((len(z), 1)), z])

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        margin = sign * (offset + design @ theta)
        loss = np.logaddexp(0.0, -margin).sum() + 0.5 * (weights * theta**2).sum()
        grad = design.T @ (-sign * expit(-margin)) + weights * theta
        return float(loss), grad

    result = minimize(objective, np.zeros(design.shape[1]), jac=True, method="L-BFGS-B",
                      options={"maxiter": max_iter})
    return result.x


def segment_model_for(
    pooled_kind: str, item_features: np.ndarray | None = None, **params
) -> _SegmentModel:
    """An unfitted per-segment model of the pooled model's class.

    'global' -> :class:`SegmentGlobalModel`; 'item' and 'category:item' ->
    :class:`SegmentItemModel` (per-item rates; with categories the item is the finer
    unit); 'category', 'category:global' -> :class:`SegmentCategoryModel`; 'features' ->
    :class:`SegmentFeatureLogistic`; 'category:features' -> the same with category
    indicators. ``params`` go to the class (e.g. strength, strength_grid).
    """
    if pooled_kind == "global":
        return SegmentGlobalModel(**params)
    if pooled_kind in ("item", "category:item"):
        return SegmentItemModel(**params)
    if pooled_kind in ("category", "category:global"):
        return SegmentCategoryModel(**params)
    if pooled_kind in ("features", "category:features"):
        if item_features is None:
            raise ValueError(f"pooled model {pooled_kind!r} needs item_features")
        return SegmentFeatureLogistic(
            item_features, add_category_indicators=pooled_kind.startswith("category:"),
            **params,
        )
    raise ValueError(
        f"unknown pooled model {pooled_kind!r}; choose from 'global', 'item', 'features', "
        "'category:global', 'category:item', 'category:features'"
    )


__all__ = [
    "PENALTY_GRID",
    "STRENGTH_GRID",
    "SegmentCategoryModel",
    "SegmentFeatureLogistic",
    "SegmentGlobalModel",
    "SegmentItemModel",
    "check_validation",
    "segment_model_for",
    "split_validation_edges",
]
