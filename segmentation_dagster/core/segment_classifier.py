"""Per-segment classifiers: the paper's eBay study (Section 6, Table 4).

Once customers are segmented, one logistic regression f_k is fitted on the edges of
segment k alone, beside a population model f_pool fitted on every edge. Each segment's
test AUC under f_k is compared with its AUC under f_pool.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.utils.validation import check_is_fitted

from .graph import DISLIKE, LIKE, PreferenceGraph
from .metrics import auc


def edge_features(
    item_features: pd.DataFrame | np.ndarray, cols: np.ndarray, columns: list[str] | None = None
) -> np.ndarray:
    """The feature matrix of edges: row e is the feature vector of edge e's item.

    ``item_features`` is indexed in the graph's item-column order (row j = item column j),
    ``cols`` the item column of every edge (``graph.edges()[1]``). ``columns`` picks
    columns of a DataFrame; by default all are used and must be numeric.
    """
    if isinstance(item_features, pd.DataFrame):
        table = item_features if columns is None else item_features.loc[:, list(columns)]
        bad = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
        if bad:
            raise ValueError(f"item feature columns {bad} are not numeric")
        item_features = table.to_numpy(dtype=float)
    features = _finite_matrix(item_features, "item_features", "(n_items, f)")
    cols = np.asarray(cols)
    if len(cols) and (cols.min() < 0 or cols.max() >= len(features)):
        raise ValueError(f"edge item columns must lie in [0, {len(features)}); got out-of-range")
    return features[cols]


def learned_item_features(graph: PreferenceGraph, prior_edges: float = 5.0) -> np.ndarray:
    """Two item features learned from the graph's (training) edges only, standardised:
    log popularity, and the item's like-rate smoothed toward the overall rate with
    ``prior_edges`` pseudo-edges. (n_items, 2), in the graph's column order."""
    degrees = graph.item_degrees()
    alpha = float((graph.matrix.data == LIKE).mean())
    like_rate = (graph.item_likes() + prior_edges * alpha) / (degrees + prior_edges)
    learned = np.column_stack([np.log1p(degrees), like_rate])
    return (learned - learned.mean(axis=0)) / learned.std(axis=0).clip(min=1e-9)


def _binary(y: np.ndarray) -> np.ndarray:
    """Accept +1/-1 edge labels, 0/1 or booleans; return booleans (True = like)."""
    y = np.asarray(y)
    values = set(np.unique(y).tolist())
    if values <= {LIKE, DISLIKE}:
        return y == LIKE
    if values <= {0, 1}:
        return y.astype(bool)
    raise ValueError(f"labels must be +1/-1 or 0/1; found values {sorted(values)[:5]}")


def _finite_matrix(x: np.ndarray, name: str, shape: str) -> np.ndarray:
    """``x`` as a float array, which must be 2-D (``shape`` names its axes) and finite."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D {shape} array; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _check_inputs(x: np.ndarray, segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = _finite_matrix(x, "X", "(edges, features)")
    segments = np.asarray(segments)
    if segments.shape != (len(x),):
        raise ValueError(
            f"segments must have one entry per edge ({len(x)}); got shape {segments.shape}"
        )
    return x, segments


class SegmentClassifiers(BaseEstimator):
    """One logistic regression per segment, plus a population model on all edges.

    A scikit-learn estimator (``get_params``, ``clone``), but not a ``ClassifierMixin``:
    ``fit`` and ``predict_proba`` need each edge's segment besides X, and there is no
    ``predict``, so the mixin's ``score`` would not work.

    fit(X, y, segments): X holds one row per training edge (see :func:`edge_features`),
    y its label (+1/-1 or 0/1) and segments the segment of the edge's customer.

    A segment whose training labels are all one class (or with fewer than ``min_edges``
    edges) cannot have its own classifier: it falls back to the population model, and
    ``fallback_`` records why. A segment unseen at fit time also gets the population
    model at prediction time.

    Attributes
    ----------
    population_ : the LogisticRegression on all edges
    models_ : dict segment -> LogisticRegression (only segments with their own model)
    fallback_ : dict segment -> reason, for segments using the population model
    segment_sizes_ : dict segment -> number of training edges
    """

    def __init__(self, C: float = 1.0, max_iter: int = 1000, min_edges: int = 2):
        self.C = C
        self.max_iter = max_iter
        self.min_edges = min_edges

    def _classifier(self) -> LogisticRegression:
        return LogisticRegression(C=self.C, max_iter=self.max_iter)

    def fit(self, X: np.ndarray, y: np.ndarray, segments: np.ndarray) -> SegmentClassifiers:
        x, segments = _check_inputs(X, segments)
        likes = _binary(y)
        if likes.shape != (len(x),):
            raise ValueError(f"y must have one label per edge ({len(x)}); got {likes.shape}")
        if likes.all() or not likes.any():
            raise ValueError(
                "every training label is the same class: not even the population model "
                "can be fitted"
            )
        self.population_ = self._classifier().fit(x, likes)
        self.models_: dict = {}
        self.fallback_: dict = {}
        self.segment_sizes_: dict = {}
        codes, inverse = np.unique(segments, return_inverse=True)
        # one sort groups the edges by segment; K is small, so a loop over segments is fine
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(codes) + 1))
        for s, segment in enumerate(codes.tolist()):
            idx = order[bounds[s] : bounds[s + 1]]
            self.segment_sizes_[segment] = len(idx)
            n_like = int(likes[idx].sum())
            if len(idx) < self.min_edges:
                self.fallback_[segment] = f"only {len(idx)} training edges"
            elif n_like in (0, len(idx)):
                word = "like" if n_like else "dislike"
                self.fallback_[segment] = f"all {len(idx)} training labels are {word}"
            else:
                self.models_[segment] = self._classifier().fit(x[idx], likes[idx])
        return self

    def predict_proba(self, X: np.ndarray, segments: np.ndarray) -> np.ndarray:
        """P(like) for each edge under its segment's classifier (population as fallback)."""
        self._check_fitted()
        x, segments = _check_inputs(X, segments)
        proba = self.population_proba(x)
        for segment, model in self.models_.items():
            mask = segments == segment
            if mask.any():
                proba[mask] = model.predict_proba(x[mask])[:, 1]
        return proba

    def population_proba(self, X: np.ndarray) -> np.ndarray:
        """P(like) for each edge under the population model."""
        self._check_fitted()
        x = _finite_matrix(X, "X", "(edges, features)")
        return self.population_.predict_proba(x)[:, 1]

    def _check_fitted(self) -> None:
        check_is_fitted(
            self, "population_", msg="%(name)s is not fitted; call fit(X, y, segments) first"
        )


def segment_auc_table(
    y: np.ndarray, p_segment: np.ndarray, p_population: np.ndarray, segments: np.ndarray
) -> pd.DataFrame:
    """Table 4: test AUC of the segment models and of the population model, per slice.

    Rows: slice 'all' then 'segment:<k>' for each segment, with auc_segment,
    auc_population, improvement_pct = 100 (auc_segment - auc_population) / auc_population,
    and n_test edges. AUC is NaN on a slice whose test labels are all one class.
    """
    likes = _binary(y)
    p_segment = np.asarray(p_segment, dtype=float)
    p_population = np.asarray(p_population, dtype=float)
    segments = np.asarray(segments)
    n = len(likes)
    for name, values in (("p_segment", p_segment), ("p_population", p_population),
                         ("segments", segments)):
        if values.shape != (n,):
            raise ValueError(f"{name} must have one entry per test edge ({n}); got {values.shape}")
    slices = [("all", np.ones(n, dtype=bool))]
    slices += [(f"segment:{k}", segments == k) for k in np.unique(segments).tolist()]
    rows = []
    for name, mask in slices:
        a_seg = auc(likes[mask], p_segment[mask])
        a_pop = auc(likes[mask], p_population[mask])
        rows.append(
            {
                "slice": name,
                "auc_segment": a_seg,
                "auc_population": a_pop,
                # NaN, not a crash, where the population AUC is 0 or undefined
                "improvement_pct": 100.0 * (a_seg - a_pop) / a_pop if a_pop > 0 else np.nan,
                "n_test": int(mask.sum()),
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class SegmentationComparison:
    """Per-segment classifiers fitted for each segmentation, with their AUC tables."""

    models: dict[str, SegmentClassifiers]
    aucs: dict[str, pd.DataFrame]  # segment_auc_table per segmentation


def compare_segmentations(
    item_features: np.ndarray,
    train: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    segmentations: dict[str, np.ndarray],
) -> SegmentationComparison:
    """The eBay protocol (Table 4) for several segmentations of the same customers: for
    each, one logistic regression per segment on the training edges' item features, and
    test AUC per slice against the population model fitted on the same edges.

    ``train`` and ``test`` are (customer rows, item columns, labels) edge arrays;
    ``segmentations`` maps a name to one segment per customer row.
    """
    rows, cols, labels = train
    test_rows, test_cols, test_labels = test
    x_train = edge_features(item_features, cols)
    x_test = edge_features(item_features, test_cols)
    models, aucs = {}, {}
    for name, segments in segmentations.items():
        segments = np.asarray(segments)
        model = SegmentClassifiers().fit(x_train, labels, segments[rows])
        p_segment = model.predict_proba(x_test, segments[test_rows])
        aucs[name] = segment_auc_table(test_labels, p_segment, model.population_proba(x_test),
                                       segments[test_rows])
        models[name] = model
    return SegmentationComparison(models, aucs)
