"""Purchase-only (positive-only) logs: the multinomial logit (MNL) as the pooled model.

When every observation is a purchase there is no dislike to model, so the pooled model
of the paper (Section 2: "for the task of predicting which item will be purchased, F can
be the multinomial logit model class") predicts WHICH item a customer chooses:

- pooled model (:class:`MNLPooledModel`): pi_j proportional to purchases_j plus a
  smoothing pseudo-count, optionally per category, pi_j = P(category) P(j | category);
- embedding (:func:`choice_embedding`): each customer's normalised negative
  log-likelihood of the items they chose, -(1/d_i) sum_j log pi_j (degree) or the same
  divided by the entropy H(pi) (entropy, ~1 for a customer who chooses like everyone);
- segments: 1-D (or completed per-category vector) k-means on that embedding;
- per-segment models (:class:`SegmentChoiceModel`): segment item-choice probabilities
  p_kj = (c_kj + s pi_j) / (N_k + s), shrunk toward pi with a strength s chosen on
  validation purchases, stored sparsely in (segment, item);
- evaluation: ranking held-out purchases, items already bought excluded
  (:func:`recall_at_k`, :func:`ndcg_at_k`), against :class:`GlobalPopularityRecommender`;
- the method end to end (:class:`SegmentedPurchaseModel`) and its choice on validation
  purchases (:class:`PurchaseSelector`: pooled 'mnl' / 'mnl:category', normalisation,
  scalar / per-category embedding and K by the summed held-out log-likelihood per
  customer and the one-standard-error rule), as the pipeline runs them.

Everything takes a :class:`PreferenceGraph` whose edges all count as purchases (their
labels are ignored), or parallel (rows, cols) arrays of purchases. No Python loop runs
per customer; loops run over segments or over the shrinkage grid only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClusterMixin, clone
from sklearn.utils.validation import check_is_fitted

from .clustering import SegmentClusterer, as_2d
from .embedding import complete_low_rank, principal_axes
from .graph import PreferenceGraph, category_cells, require_edges_per_customer
from .k_sweep import embedding_candidate_ks
from .recommend import leave_out_split
from .segment_models import split_validation_edges
from .selection import CandidateSpec, fold_small_segments, one_standard_error_choice

# A probability floor so that log pi is finite even with smoothing=0.
TINY = 1e-300
NORMALISATIONS = ("degree", "entropy")
EMBEDDINGS = ("scalar", "category")
CRITERIA = ("log_likelihood", "recall")
# Shrinkage strengths s (pseudo-purchases drawn from the pooled pi) tried on validation;
# inf means "the pooled model itself". Geometric, because N_k ranges over orders of size.
DEFAULT_SHRINKAGE_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5, np.inf)

Purchases = PreferenceGraph | tuple[np.ndarray, np.ndarray] | sp.spmatrix


# --------------------------------------------------------------------------------------
# Detection and input handling
# --------------------------------------------------------------------------------------


def is_purchase_only(values) -> bool:
    """Whether a log's value column makes it a purchase-only (positive-only) log.

    The rule: the values are non-empty, all finite numbers (booleans count as 0/1), and
    ALL EQUAL TO THE SAME POSITIVE NUMBER (all 1, all True, all 5, ...). Such a column
    carries no strength and no negative, so each row only says "this customer chose this
    item". Anything else is not purchase-only: two or more distinct values (ratings, play
    counts, 0/1 labels), a constant 0 or negative value, or any NaN / non-numeric value
    (ambiguous: let the input check report it). ``values=None`` (a log without a value
    column) is purchase-only: an event log of (customer, item) pairs.
    """
    if values is None:
        return True
    array = np.asarray(values)
    if array.size == 0:
        return False
    if array.dtype.kind == "b":
        return bool(array.all())
    try:
        array = array.astype(float)
    except (TypeError, ValueError):
        return False
    if not np.isfinite(array).all():
        return False
    first = array.flat[0]
    return bool(first > 0 and (array == first).all())


def _purchase_edges(
    X: Purchases, n_customers: int | None = None, n_items: int | None = None, name: str = "X"
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) int64 positions of every purchase in a graph, sparse matrix or pair."""
    if isinstance(X, PreferenceGraph):
        rows, cols, _ = X.edges()
        shape = X.matrix.shape
    elif sp.issparse(X):
        coo = sp.coo_matrix(X)
        keep = coo.data != 0
        rows, cols, shape = coo.row[keep], coo.col[keep], coo.shape
    elif isinstance(X, tuple) and len(X) == 2:
        rows, cols = (np.asarray(a) for a in X)
        if rows.ndim != 1 or rows.shape != cols.shape:
            raise ValueError(
                f"{name} must be (rows, cols) 1-D arrays of equal length; got shapes "
                f"{rows.shape} and {cols.shape}"
            )
        if rows.dtype.kind not in "iu" or cols.dtype.kind not in "iu":
            raise ValueError(f"{name} rows and cols must be integer positions")
        shape = None
    else:
        raise ValueError(
            f"{name} must be a PreferenceGraph, a sparse matrix or a (rows, cols) tuple; "
            f"got {type(X).__name__}"
        )
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    for what, pos, size, given in (
        ("customers", rows, n_customers, None if shape is None else shape[0]),
        ("items", cols, n_items, None if shape is None else shape[1]),
    ):
        if size is not None and given is not None and given != size:
            raise ValueError(f"{name} has {given} {what}; expected {size}")
        if len(pos) and pos.min() < 0:
            raise ValueError(f"{name} has negative {what} positions")
        if size is not None and len(pos) and pos.max() >= size:
            raise ValueError(f"{name} has {what} position {int(pos.max())} >= {size}")
    return rows, cols


def _pattern(X: Purchases | None, n_rows: int, n_items: int, name: str) -> sp.csr_matrix:
    """A (n_rows, n_items) 0/1 CSR pattern with sorted indices (empty for None)."""
    if X is None:
        return sp.csr_matrix((n_rows, n_items), dtype=np.int8)
    rows, cols = _purchase_edges(X, n_rows, n_items, name)
    matrix = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_rows, n_items)
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1
    matrix.sort_indices()
    return matrix


def _pair_keys(matrix: sp.csr_matrix) -> np.ndarray:
    """Sorted keys row * n_items + col of a CSR pattern with sorted indices."""
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    return rows * np.int64(matrix.shape[1]) + matrix.indices


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Membership of ``keys`` in a sorted key array (vectorised binary search)."""
    if len(sorted_keys) == 0:
        return np.zeros(keys.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


# --------------------------------------------------------------------------------------
# The pooled MNL and the embedding
# --------------------------------------------------------------------------------------


class MNLPooledModel(BaseEstimator):
    """The pooled item-choice model: pi_j proportional to purchases_j + ``smoothing``.

    With ``by_category=True`` (needs item categories) the choice is made in two steps,
    pi_j = P(b) P(j | b) with P(b) = (C_b + a) / (N + a B) and
    P(j | b) = (c_j + a) / (C_b + a n_b), so a category with few items is not drowned by
    the pseudo-counts of the many items of another category. ``smoothing`` (a >= 0)
    keeps items never bought at a small positive probability; with a = 0 their log
    probability is floored at log(1e-300).

    Fitted attributes: ``item_counts_`` (purchases per item), ``n_purchases_``,
    ``item_proba_`` (pi, sums to 1), ``entropy_`` (H(pi), nats), ``n_items_``; with
    categories also ``categories_``, ``item_category_`` (codes), ``category_proba_``.
    """

    def __init__(self, smoothing: float = 1.0, by_category: bool = False):
        self.smoothing = smoothing
        self.by_category = by_category

    def fit(
        self,
        X: Purchases,
        y=None,
        *,
        n_items: int | None = None,
        item_categories: np.ndarray | None = None,
    ) -> MNLPooledModel:
        """Fit on a graph (every edge is a purchase) or on (rows, cols) purchase arrays.

        ``n_items`` sizes the catalogue for arrays (default: the largest col + 1);
        ``item_categories`` (length n_items) overrides the graph's categories.
        """
        if not (np.isscalar(self.smoothing) and self.smoothing >= 0):
            raise ValueError(f"smoothing must be a number >= 0, got {self.smoothing!r}")
        if isinstance(X, PreferenceGraph):
            n_items = X.n_items if n_items is None else n_items
            if item_categories is None:
                item_categories = X.item_categories
        _, cols = _purchase_edges(X, n_items=n_items)
        if len(cols) == 0:
            raise ValueError("no purchases: the MNL pooled model needs at least one")
        n = int(cols.max()) + 1 if n_items is None else int(n_items)
        a = float(self.smoothing)
        counts = np.bincount(cols, minlength=n).astype(float)
        total = counts.sum()
        self.n_items_ = n
        self.item_counts_ = counts
        self.n_purchases_ = int(total)
        if self.by_category:
            if item_categories is None:
                raise ValueError("by_category=True needs item categories (graph or argument)")
            item_categories = np.asarray(item_categories)
            if len(item_categories) != n:
                raise ValueError(
                    f"item_categories has {len(item_categories)} entries for {n} items"
                )
            self.categories_, self.item_category_ = np.unique(item_categories, return_inverse=True)
            b = len(self.categories_)
            cat_counts = np.bincount(self.item_category_, weights=counts, minlength=b)
            cat_sizes = np.bincount(self.item_category_, minlength=b)
            self.category_proba_ = (cat_counts + a) / (total + a * b)
            denominator = (cat_counts + a * cat_sizes)[self.item_category_]
            with np.errstate(invalid="ignore", divide="ignore"):
                within = np.where(
                    denominator > 0,
                    (counts + a) / denominator,
                    1.0 / cat_sizes[self.item_category_],  # a = 0 and an unbought category
                )
            proba = self.category_proba_[self.item_category_] * within
        else:
            proba = (counts + a) / (total + a * n)
        self.item_proba_ = proba / proba.sum()
        p = self.item_proba_[self.item_proba_ > 0]
        self.entropy_ = float(-(p * np.log(p)).sum())
        return self

    def predict_proba(self, cols: np.ndarray) -> np.ndarray:
        """pi_j for item columns ``cols``."""
        check_is_fitted(self, "item_proba_")
        return self.item_proba_[np.asarray(cols, dtype=np.int64)]

    def log_proba(self, cols: np.ndarray) -> np.ndarray:
        """log pi_j for item columns ``cols`` (floored at log 1e-300)."""
        return np.log(np.maximum(self.predict_proba(cols), TINY))

    @property
    def n_parameters(self) -> int:
        check_is_fitted(self, "item_proba_")
        return self.n_items_ - 1


def choice_embedding(
    graph: PreferenceGraph,
    pooled: MNLPooledModel,
    normalisation: str = "degree",
    by_category: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Each customer's normalised negative log-likelihood of the items they chose.

    Scalar (``by_category=False``), shape (m,):
    - ``degree``: v_i = -(1/d_i) sum_{j in N(i)} log pi_j;
    - ``entropy``: v_i = -sum_j log pi_j / (d_i H(pi)); E[-log pi_j] under pi is H(pi),
      so a customer choosing like the population sits near 1.

    Per category (``by_category=True``, needs graph.item_categories), returns
    (V, categories) with V of shape (m, B), NaN where customer i bought nothing in
    category b (Algorithm 4, step 3). Each cell uses the WITHIN-category choice
    probabilities P(j | b) = pi_j / sum_{j' in b} pi_j': the category's own term
    -log P(b) would only shift a whole column by a constant. ``entropy`` divides by
    H(P(. | b)); a category with a single item (entropy 0) gets the neutral value 1.

    Every edge of the graph counts as a purchase; all sums are sparse products or
    bincounts over the CSR arrays.
    """
    _check_choice("normalisation", normalisation, NORMALISATIONS)
    check_is_fitted(pooled, "item_proba_")
    if pooled.n_items_ != graph.n_items:
        raise ValueError(
            f"the pooled model has {pooled.n_items_} items but the graph {graph.n_items}"
        )
    require_edges_per_customer(graph)
    m = graph.matrix
    degrees = graph.customer_degrees().astype(float)
    proba = np.maximum(pooled.item_proba_, TINY)
    if not by_category:
        pattern = sp.csr_matrix((np.ones(m.nnz), m.indices, m.indptr), shape=m.shape)
        nll = pattern @ -np.log(proba)
        scale = degrees if normalisation == "degree" else degrees * max(pooled.entropy_, TINY)
        return nll / scale
    if graph.item_categories is None:
        raise ValueError("by_category=True needs a graph built with item_categories")
    rows, cols, _ = graph.edges()
    categories, cells = category_cells(graph, rows, cols)
    codes = np.unique(graph.item_categories, return_inverse=True)[1]
    b = len(categories)
    mass = np.bincount(codes, weights=proba, minlength=b)
    within = proba / mass[codes]
    terms = within * np.log(np.maximum(within, TINY))
    category_entropy = -np.bincount(codes, weights=terms, minlength=b)
    size = graph.n_customers * b
    nll = np.bincount(cells, weights=-np.log(np.maximum(within, TINY))[cols], minlength=size)
    counts = np.bincount(cells, minlength=size).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(counts > 0, nll / counts, np.nan).reshape(-1, b)
    if normalisation == "entropy":
        flat = category_entropy <= 1e-12
        with np.errstate(invalid="ignore", divide="ignore"):
            scores = scores / np.where(flat, 1.0, category_entropy)[None, :]
        scores[:, flat] = np.where(np.isnan(scores[:, flat]), np.nan, 1.0)
    return scores, categories


def category_choice_embedding(
    graph: PreferenceGraph, pooled: MNLPooledModel, normalisation: str = "degree"
) -> np.ndarray:
    """The category half of the choice: -(1/d_i) sum_{j in N(i)} log P(b_j), shape (m,).

    pi_j = P(b_j) P(j | b_j), so the scalar embedding is this term plus the mean of the
    within-category terms of :func:`choice_embedding` (``by_category=True``). Those
    cells cannot see WHICH categories a customer buys from (-log P(b) is constant down a
    column), so :class:`PurchaseSegmenter` adds this always-observed column to them.
    ``entropy`` divides by the entropy of P(b).
    """
    _check_choice("normalisation", normalisation, NORMALISATIONS)
    check_is_fitted(pooled, "item_proba_")
    if graph.item_categories is None:
        raise ValueError("category_choice_embedding needs a graph with item_categories")
    require_edges_per_customer(graph)
    codes = np.unique(graph.item_categories, return_inverse=True)[1]
    mass = np.bincount(codes, weights=pooled.item_proba_)
    nll_category = -np.log(np.maximum(mass, TINY))
    rows, cols, _ = graph.edges()
    nll = np.bincount(rows, weights=nll_category[codes[cols]], minlength=graph.n_customers)
    scores = nll / graph.customer_degrees()
    if normalisation == "entropy":
        p = mass[mass > 0]
        scores = scores / max(float(-(p * np.log(p)).sum()), TINY)
    return scores


def _category_choice_vectors(
    graph: PreferenceGraph, pooled: MNLPooledModel, normalisation: str, rank: int,
    random_state: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The per-category choice embedding completed to ``rank`` in principal coordinates
    (Algorithm 4), with :func:`category_choice_embedding` as an extra, always observed
    first column; returns ((m, rank) vectors, categories)."""
    scores, categories = choice_embedding(graph, pooled, normalisation, by_category=True)
    # first column: which categories the customer buys from (always observed)
    scores = np.column_stack([category_choice_embedding(graph, pooled, normalisation), scores])
    u, y_factors = complete_low_rank(
        scores, rank=min(int(rank), scores.shape[1]), random_state=random_state
    )
    return u @ principal_axes(u, y_factors), categories


def purchase_embedding(
    graph: PreferenceGraph,
    pooled: MNLPooledModel,
    normalisation: str = "entropy",
    category_rank: int | None = None,
    random_state: int = 0,
) -> np.ndarray:
    """The embedding the purchase segmenters cluster: the scalar :func:`choice_embedding`
    ((m,), ``category_rank=None``) or the per-category vector completed to
    ``category_rank`` in principal coordinates ((m, rank)), as :class:`PurchaseSegmenter`
    with ``embedding='category'``."""
    if category_rank is None:
        return choice_embedding(graph, pooled, normalisation)
    if int(category_rank) != category_rank or category_rank < 1:
        raise ValueError(f"category_rank must be None or a positive integer, got "
                         f"{category_rank!r}")
    return _category_choice_vectors(graph, pooled, normalisation, category_rank, random_state)[0]


# --------------------------------------------------------------------------------------
# Ranking top-n lists with bought items excluded
# --------------------------------------------------------------------------------------


def _top_n_excluding(
    scores_of_segment,
    n_segments: int,
    segments: np.ndarray,
    exclude: sp.csr_matrix,
    n: int,
) -> np.ndarray:
    """(len(segments), n) item indices, best first, items in ``exclude`` removed, -1 pad.

    ``scores_of_segment(k)`` gives the dense item scores of segment k (one vector of
    length n_items at a time). A customer's top n unbought items lie within the first
    n + d_i of the segment's ranking, so each segment keeps only its first
    L = n + (largest excluded count) items; candidates are laid out flat (one block of
    L per customer), the excluded ones masked by key lookup, and the first n survivors
    per customer kept. Ties go to the smaller item index.
    """
    n_items = exclude.shape[1]
    r = len(segments)
    out = np.full((r, n), -1, dtype=np.int64)
    if r == 0:
        return out
    excluded_per_row = np.diff(exclude.indptr)
    length = int(min(n_items, n + (excluded_per_row.max() if r else 0)))
    rankings = np.empty((n_segments, length), dtype=np.int64)
    for k in range(n_segments):
        score = np.asarray(scores_of_segment(k), dtype=float)
        if length < n_items:
            top = np.argpartition(-score, length - 1)[:length]
            # the boundary may split a tie: widen to every item tied with the L-th score
            cut = score[top].min()
            top = np.flatnonzero(score >= cut)
        else:
            top = np.arange(n_items)
        order = np.lexsort((top, -score[top]))[:length]
        rankings[k] = top[order]
    # flat layout: customer i gets a block of n + d_i candidates (d_i: its excluded
    # items), so the work is r * n + nnz(exclude), whatever the largest d_i
    block = np.minimum(n + excluded_per_row, length)
    starts = np.concatenate([[0], np.cumsum(block)[:-1]])
    owner = np.repeat(np.arange(r, dtype=np.int64), block)
    offset = np.arange(len(owner)) - starts[owner]
    candidates = rankings[segments[owner], offset]
    keep = ~_contains(_pair_keys(exclude), owner * n_items + candidates)
    kept_before = np.cumsum(keep) - keep
    position = kept_before - kept_before[starts][owner]
    take = keep & (position < n)
    out[owner[take], position[take]] = candidates[take]
    return out


def _check_n(n) -> int:
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


class GlobalPopularityRecommender(BaseEstimator):
    """The baseline: every customer gets the most purchased items they have not bought."""

    def fit(self, X: Purchases, y=None, *, n_items: int | None = None):
        if isinstance(X, PreferenceGraph):
            n_items = X.n_items
        _, cols = _purchase_edges(X, n_items=n_items)
        n = int(cols.max()) + 1 if n_items is None else int(n_items)
        self.item_counts_ = np.bincount(cols, minlength=n).astype(float)
        self.n_items_ = n
        return self

    def recommend(
        self, rows: np.ndarray | None = None, n: int = 10, exclude: Purchases | None = None
    ) -> np.ndarray:
        """Top-n item indices for customers ``rows`` (rows of ``exclude``, whose items
        are removed); (len(rows), n) with -1 padding. Without ``exclude``, ``rows`` only
        sets how many lists to return."""
        check_is_fitted(self, "item_counts_")
        n = _check_n(n)
        rows, pattern = _rows_and_pattern(rows, exclude, self.n_items_)
        return _top_n_excluding(
            lambda k: self.item_counts_, 1, np.zeros(len(rows), dtype=np.int64), pattern, n
        )


def _rows_and_pattern(
    rows: np.ndarray | None, exclude: Purchases | None, n_items: int, n_customers: int | None = None
) -> tuple[np.ndarray, sp.csr_matrix]:
    """The customer rows asked for and the bought-item pattern restricted to them."""
    if exclude is None:
        if rows is None:
            if n_customers is None:
                raise ValueError("give rows (or exclude) to say which customers to serve")
            rows = np.arange(n_customers)
        rows = np.asarray(rows, dtype=np.int64)
        return rows, sp.csr_matrix((len(rows), n_items), dtype=np.int8)
    if isinstance(exclude, PreferenceGraph):
        m = exclude.n_customers
    elif sp.issparse(exclude):
        m = exclude.shape[0]
    elif n_customers is not None:
        m = n_customers
    else:
        m = int(np.max(exclude[0])) + 1
    pattern = _pattern(exclude, m, n_items, "exclude")
    rows = np.arange(m) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= m):
        raise ValueError(f"rows must be customer positions in [0, {m}); got {rows.max()}")
    sub = pattern[rows]
    sub.sort_indices()
    return rows, sub


# --------------------------------------------------------------------------------------
# Per-segment choice models
# --------------------------------------------------------------------------------------


class SegmentChoiceModel(BaseEstimator):
    """Per-segment item-choice probabilities shrunk toward the pooled pi.

    p_kj = (c_kj + s pi_j) / (N_k + s), with c_kj the purchases of item j by segment k,
    N_k the segment's purchases and s the shrinkage strength (s pseudo-purchases drawn
    from pi; s = inf gives the pooled model). Only the nonzero c_kj are stored (sorted
    keys k * n_items + j), so memory grows with the data, not with K x n_items.

    ``shrinkage=None`` chooses s from ``shrinkage_grid`` on validation purchases by
    ``criterion``: 'log_likelihood' (mean held-out log p of the chosen item, renormalised
    over the items the customer has not bought) or 'recall' (recall@``k``). Validation
    purchases come from ``fit(..., validation=...)``; without them a random
    ``validation_fraction`` of each customer's purchases is held out of the training
    counts (:func:`leave_out_split`), s is chosen there, and the counts are refitted on
    everything. Test purchases must never be passed as validation.
    """

    def __init__(
        self,
        shrinkage: float | None = None,
        shrinkage_grid: tuple = DEFAULT_SHRINKAGE_GRID,
        criterion: str = "log_likelihood",
        k: int = 10,
        validation_fraction: float = 0.1,
        random_state: int = 0,
    ):
        self.shrinkage = shrinkage
        self.shrinkage_grid = shrinkage_grid
        self.criterion = criterion
        self.k = k
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(
        self,
        X: Purchases,
        labels: np.ndarray,
        pooled: MNLPooledModel,
        validation: Purchases | None = None,
    ) -> SegmentChoiceModel:
        """``X``: training purchases (graph, or (rows, cols)); ``labels``: one segment
        0..K-1 per customer row; ``pooled``: a fitted MNLPooledModel on the same items;
        ``validation``: held-out purchases of the same customers (never test)."""
        _check_choice("criterion", self.criterion, CRITERIA)
        check_is_fitted(pooled, "item_proba_")
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels < 0).any():
            raise ValueError("labels must be a 1-D array of segment numbers >= 0")
        n_items = pooled.n_items_
        rows, cols = _purchase_edges(X, len(labels), n_items, "X")
        s = self.shrinkage
        if s is None:
            s = self._choose_shrinkage(X, rows, cols, labels, pooled, validation)
        elif not (np.isscalar(s) and s >= 0):
            raise ValueError(f"shrinkage must be a number >= 0 or None, got {s!r}")
        self._fit_counts(rows, cols, labels, pooled)
        self.shrinkage_ = float(s)
        return self

    def _fit_counts(self, rows, cols, labels, pooled) -> None:
        n_items = pooled.n_items_
        self.n_items_ = n_items
        self.n_segments_ = int(labels.max()) + 1 if len(labels) else 0
        self.labels_ = labels.astype(np.int64)
        self.pooled_proba_ = np.asarray(pooled.item_proba_, dtype=float)
        # each (customer, item) pair counts once, as in the graph
        pair = np.unique(rows * np.int64(n_items) + cols)
        keys, counts = np.unique(
            self.labels_[pair // n_items] * np.int64(n_items) + pair % n_items,
            return_counts=True,
        )
        self.segment_item_keys_ = keys
        self.segment_item_counts_ = counts.astype(float)
        self.segment_totals_ = np.bincount(
            keys // n_items, weights=self.segment_item_counts_, minlength=self.n_segments_
        )

    def _choose_shrinkage(self, X, rows, cols, labels, pooled, validation) -> float:
        grid = [float(s) for s in self.shrinkage_grid]
        if not grid or any(not s >= 0 for s in grid):
            raise ValueError(f"shrinkage_grid must be numbers >= 0, got {self.shrinkage_grid}")
        if validation is not None:
            train_rows, train_cols, inner_pooled = rows, cols, pooled
            val_rows, val_cols = _purchase_edges(
                validation, len(labels), pooled.n_items_, "validation"
            )
        else:
            if not 0 < self.validation_fraction < 1:
                raise ValueError(
                    f"validation_fraction must be in (0, 1), got {self.validation_fraction}"
                )
            train_mask, val_mask = leave_out_split(
                rows, cols, self.validation_fraction, seed=self.random_state
            )
            if not val_mask.any():
                raise ValueError(
                    "no customer has 2 or more purchases to hold out for choosing the "
                    "shrinkage; pass shrinkage= or validation="
                )
            train_rows, train_cols = rows[train_mask], cols[train_mask]
            val_rows, val_cols = rows[val_mask], cols[val_mask]
            inner_pooled = clone(pooled).fit((train_rows, train_cols), n_items=pooled.n_items_)
        inner = clone(self).set_params(shrinkage=grid[0])
        inner._fit_counts(train_rows, train_cols, labels, inner_pooled)
        bought = _pattern((train_rows, train_cols), len(labels), pooled.n_items_, "X")
        scores = {}
        for s in grid:
            inner.shrinkage_ = s
            if self.criterion == "log_likelihood":
                ll = inner.log_likelihood(labels, (val_rows, val_cols), exclude=bought)
                scores[s] = float(ll.mean()) if len(ll) else -np.inf
            else:
                val = (val_rows, val_cols)
                val_customers = np.unique(val_rows)
                top = inner.recommend(labels[val_customers], self.k, exclude=bought[val_customers])
                scores[s] = recall_at_k(top, val, k=self.k, exclude=bought, rows=val_customers)
        self.validation_scores_ = scores
        # ties (e.g. a flat recall curve) go to the stronger shrinkage: the simpler model
        return max(grid, key=lambda s: (scores[s], s))

    @property
    def strength_(self) -> float:
        """The shrinkage strength s under the name every segment model uses."""
        check_is_fitted(self, "segment_item_keys_")
        return self.shrinkage_

    # ----- predictions -----------------------------------------------------------------

    def _counts_at(self, segments: np.ndarray, cols: np.ndarray) -> np.ndarray:
        keys = segments.astype(np.int64) * self.n_items_ + cols
        at = np.searchsorted(self.segment_item_keys_, keys)
        at = np.minimum(at, max(len(self.segment_item_keys_) - 1, 0))
        found = self.segment_item_keys_[at] == keys if len(self.segment_item_keys_) else False
        return np.where(found, self.segment_item_counts_[at], 0.0)

    def predict_proba(self, segments: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """p_kj for parallel arrays of segments k and item columns j."""
        check_is_fitted(self, "segment_item_keys_")
        segments = np.asarray(segments, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if segments.shape != cols.shape:
            raise ValueError("segments and cols must have the same shape")
        pi = self.pooled_proba_[cols]
        s = self.shrinkage_
        if np.isinf(s):
            return pi
        totals = self.segment_totals_[segments]
        with np.errstate(invalid="ignore", divide="ignore"):
            p = (self._counts_at(segments, cols) + s * pi) / (totals + s)
        return np.where(totals + s > 0, p, pi)  # an empty segment with s = 0: pooled

    def segment_scores(self, k: int) -> np.ndarray:
        """The dense item vector of segment k, proportional to p_kj (for ranking)."""
        check_is_fitted(self, "segment_item_keys_")
        s = self.shrinkage_
        if np.isinf(s):
            return self.pooled_proba_.copy()
        first = k * self.n_items_
        lo, hi = np.searchsorted(self.segment_item_keys_, [first, first + self.n_items_])
        score = s * self.pooled_proba_
        score[self.segment_item_keys_[lo:hi] - first] += self.segment_item_counts_[lo:hi]
        return score

    def log_likelihood(
        self, labels: np.ndarray, held_out: Purchases, exclude: Purchases | None = None
    ) -> np.ndarray:
        """Per held-out purchase (i, j): log p_{k(i) j} renormalised over the items i has
        not bought, log p_kj - log(1 - sum_{j' in exclude(i)} p_kj'). Held-out purchases
        of items already in ``exclude`` are dropped. ``labels`` gives every customer's
        segment (rows of ``held_out`` / ``exclude`` index it). One value per purchase,
        aligned across models, for the one-standard-error rule."""
        check_is_fitted(self, "segment_item_keys_")
        labels = np.asarray(labels, dtype=np.int64)
        m = len(labels)
        rows, cols = _purchase_edges(held_out, m, self.n_items_, "held_out")
        bought = _pattern(exclude, m, self.n_items_, "exclude")
        keys = rows * np.int64(self.n_items_) + cols
        fresh = ~_contains(_pair_keys(bought), keys)
        rows, cols = rows[fresh], cols[fresh]
        b_rows = np.repeat(np.arange(m), np.diff(bought.indptr))
        mass = np.bincount(
            b_rows, weights=self.predict_proba(labels[b_rows], bought.indices), minlength=m
        )
        p = self.predict_proba(labels[rows], cols)
        rest = np.maximum(1.0 - mass[rows], TINY)
        return np.log(np.maximum(p, TINY)) - np.log(rest)

    def recommend(
        self, segments: np.ndarray, n: int = 10, exclude: Purchases | None = None
    ) -> np.ndarray:
        """Top-n item indices per customer of the given ``segments``, best first, items in
        ``exclude`` (one row per entry of ``segments``) removed; -1 pads."""
        check_is_fitted(self, "segment_item_keys_")
        n = _check_n(n)
        segments = np.asarray(segments, dtype=np.int64)
        if len(segments) and (segments.min() < 0 or segments.max() >= self.n_segments_):
            raise ValueError(f"segments must be in [0, {self.n_segments_})")
        pattern = _pattern(exclude, len(segments), self.n_items_, "exclude")
        return _top_n_excluding(self.segment_scores, self.n_segments_, segments, pattern, n)


# --------------------------------------------------------------------------------------
# The whole method
# --------------------------------------------------------------------------------------


class PurchaseSegmenter(BaseEstimator):
    """Purchase-only segmentation: pooled MNL -> choice embedding -> k-means with K
    segments -> per-segment choice models -> recommendations.

    ``embedding='scalar'`` clusters the 1-D :func:`choice_embedding` exactly (1-D
    k-means); ``embedding='category'`` clusters the per-category matrix after low-rank
    completion (Algorithm 4, ``rank``) in principal coordinates, with
    :func:`category_choice_embedding` as an extra, always observed column. Segments are
    numbered by increasing first embedding coordinate (for the scalar embedding, segment
    0 chooses the most popular items).
    ``shrinkage`` and its selection are those of :class:`SegmentChoiceModel`.

    Fitted: ``pooled_``, ``embedding_`` ((m,) or (m, rank)), ``clusterer_``, ``labels_``,
    ``n_segments_``, ``segment_sizes_``, ``choice_model_``.
    """

    def __init__(
        self,
        n_segments: int = 3,
        normalisation: str = "degree",
        embedding: str = "scalar",
        rank: int = 2,
        smoothing: float = 1.0,
        by_category: bool = False,
        shrinkage: float | None = None,
        shrinkage_grid: tuple = DEFAULT_SHRINKAGE_GRID,
        criterion: str = "log_likelihood",
        validation_fraction: float = 0.1,
        random_state: int = 0,
    ):
        self.n_segments = n_segments
        self.normalisation = normalisation
        self.embedding = embedding
        self.rank = rank
        self.smoothing = smoothing
        self.by_category = by_category
        self.shrinkage = shrinkage
        self.shrinkage_grid = shrinkage_grid
        self.criterion = criterion
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(
        self, X: PreferenceGraph, y=None, validation: Purchases | None = None
    ) -> PurchaseSegmenter:
        """Fit on a graph of purchases (labels ignored); ``validation`` purchases of the
        same customers choose the shrinkage (see :class:`SegmentChoiceModel`)."""
        if not isinstance(X, PreferenceGraph):
            raise ValueError(f"X must be a PreferenceGraph, got {type(X).__name__}")
        _check_choice("embedding", self.embedding, EMBEDDINGS)
        _check_choice("normalisation", self.normalisation, NORMALISATIONS)
        self.pooled_ = MNLPooledModel(self.smoothing, self.by_category).fit(X)
        if self.embedding == "scalar":
            self.embedding_ = choice_embedding(X, self.pooled_, self.normalisation)
        else:
            self.embedding_, self.categories_ = _category_choice_vectors(
                X, self.pooled_, self.normalisation, self.rank, self.random_state
            )
        self.clusterer_ = SegmentClusterer(self.n_segments, random_state=self.random_state).fit(
            self.embedding_
        )
        self.labels_ = self.clusterer_.labels_.astype(np.int64)
        self.n_segments_ = self.clusterer_.n_segments_
        self.segment_sizes_ = np.bincount(self.labels_, minlength=self.n_segments_)
        self.choice_model_ = SegmentChoiceModel(
            shrinkage=self.shrinkage,
            shrinkage_grid=self.shrinkage_grid,
            criterion=self.criterion,
            validation_fraction=self.validation_fraction,
            random_state=self.random_state,
        ).fit(X, self.labels_, self.pooled_, validation=validation)
        return self

    def predict(self, X: PreferenceGraph) -> np.ndarray:
        """Segments of new customers (scalar embedding only): their choice embedding
        under the fitted pooled model, then the nearest segment centre."""
        check_is_fitted(self, "labels_")
        if self.embedding != "scalar":
            raise ValueError("predict is available for embedding='scalar' only")
        return self.clusterer_.predict(choice_embedding(X, self.pooled_, self.normalisation))

    def recommend(
        self, rows: np.ndarray | None = None, n: int = 10, exclude: Purchases | None = None
    ) -> np.ndarray:
        """Top-n item indices for fitted customers ``rows`` (default all), best first,
        excluding the items each has in ``exclude`` (typically the training graph, with
        the same customer rows); (len(rows), n), -1 pads."""
        check_is_fitted(self, "labels_")
        rows, pattern = _rows_and_pattern(
            rows, exclude, self.pooled_.n_items_, n_customers=len(self.labels_)
        )
        return self.choice_model_.recommend(self.labels_[rows], n, exclude=pattern)

    def log_likelihood(self, held_out: Purchases, exclude: Purchases | None = None):
        """Per held-out purchase log-likelihood (see SegmentChoiceModel.log_likelihood)."""
        check_is_fitted(self, "labels_")
        return self.choice_model_.log_likelihood(self.labels_, held_out, exclude)


# --------------------------------------------------------------------------------------
# Ranking metrics for held-out purchases
# --------------------------------------------------------------------------------------


def ranking_metrics(
    recommended: np.ndarray,
    held_out: Purchases,
    k: int = 10,
    exclude: Purchases | None = None,
    rows: np.ndarray | None = None,
) -> dict:
    """recall@k and nDCG@k of top-n lists against held-out purchases.

    ``recommended``: (r, >= k) item indices, best first, -1 padding, for customers
    ``rows`` (default 0..r-1), which index the rows of ``held_out`` and ``exclude``.
    For customer i, T_i is i's held-out items minus the items already bought
    (``exclude``, which could never be recommended); customers with empty T_i are
    skipped. recall@k = |top_k ∩ T_i| / |T_i|; nDCG@k = sum_hits 1/log2(rank + 1)
    divided by the ideal sum over min(k, |T_i|) ranks (the same definitions as
    :func:`segmentation_dagster.core.recommend.evaluate_recommendations`). Returns
    {'recall', 'ndcg', 'n_customers', 'recall_per_customer', 'ndcg_per_customer',
    'customers'}, averaged unweighted over customers.
    """
    k = _check_n(k)
    recommended = np.asarray(recommended)
    if recommended.ndim != 2 or recommended.shape[1] < k:
        raise ValueError(f"recommended must be (customers, >= k={k}); got {recommended.shape}")
    top = recommended[:, :k].astype(np.int64)
    rows = np.arange(len(top)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) != len(top):
        raise ValueError(f"rows has {len(rows)} entries for {len(top)} recommendation lists")
    if isinstance(held_out, PreferenceGraph):
        m, n_items = held_out.matrix.shape
    elif sp.issparse(held_out):
        m, n_items = held_out.shape
    else:
        h_rows, h_cols = _purchase_edges(held_out, name="held_out")
        m = int(max(h_rows.max(initial=-1), rows.max(initial=-1))) + 1
        n_items = int(max(h_cols.max(initial=-1), top.max(initial=-1))) + 1
        if exclude is not None and not isinstance(exclude, tuple):
            m, n_items = exclude.shape if sp.issparse(exclude) else exclude.matrix.shape
    relevant = _pattern(held_out, m, n_items, "held_out")[rows]
    if exclude is not None:
        bought = _pattern(exclude, m, n_items, "exclude")[rows]
        relevant = relevant - relevant.multiply(bought)
        relevant.eliminate_zeros()
    relevant = sp.csr_matrix(relevant)
    relevant.sort_indices()
    n_relevant = np.diff(relevant.indptr)
    keys = np.arange(len(top), dtype=np.int64)[:, None] * n_items + np.maximum(top, 0)
    hits = _contains(_pair_keys(relevant), keys) & (top >= 0)
    evaluated = n_relevant > 0
    if not evaluated.any():
        raise ValueError("no customer has a held-out purchase outside the excluded items")
    hits, n_rel = hits[evaluated], n_relevant[evaluated]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    recall = hits.sum(axis=1) / n_rel
    ndcg = (hits @ discount) / ideal
    return {
        "recall": float(recall.mean()),
        "ndcg": float(ndcg.mean()),
        "n_customers": int(evaluated.sum()),
        "recall_per_customer": recall,
        "ndcg_per_customer": ndcg,
        "customers": rows[evaluated],
    }


def recall_at_k(
    recommended: np.ndarray,
    held_out: Purchases,
    k: int = 10,
    exclude: Purchases | None = None,
    rows: np.ndarray | None = None,
) -> float:
    """Mean recall@k over customers with a held-out purchase (see :func:`ranking_metrics`)."""
    return ranking_metrics(recommended, held_out, k, exclude, rows)["recall"]


def ndcg_at_k(
    recommended: np.ndarray,
    held_out: Purchases,
    k: int = 10,
    exclude: Purchases | None = None,
    rows: np.ndarray | None = None,
) -> float:
    """Mean nDCG@k over customers with a held-out purchase (see :func:`ranking_metrics`)."""
    return ranking_metrics(recommended, held_out, k, exclude, rows)["ndcg"]


# --------------------------------------------------------------------------------------
# The segmentation end to end, and its choice on validation purchases
# --------------------------------------------------------------------------------------

PURCHASE_POOLED = ("mnl", "mnl:category")
PURCHASE_SCALE = (
    "validation log-likelihood of held-out purchases: mean over validation customers of "
    "the sum over their validation purchases of log p(item | segment), renormalised over "
    "the items they had not bought (nats per customer, higher is better)"
)


def _check_pooled(pooled: str) -> bool:
    """Whether a purchase pooled model is per category ('mnl:category')."""
    _check_choice("pooled", pooled, PURCHASE_POOLED)
    return pooled == "mnl:category"


class SegmentedPurchaseModel(ClusterMixin, BaseEstimator):
    """The purchase-only method end to end, as the pipeline runs it: the pooled MNL
    (``pooled`` 'mnl' or 'mnl:category'), each customer's choice embedding under it
    (scalar, or per category completed to ``category_rank``), k-means into K clusters
    (clusters under ``min_share`` of the customers folded into the nearest large one),
    and the per-segment choice models (:class:`SegmentChoiceModel`).

    The purchase counterpart of :class:`~.selection.SegmentedModelEmbedding`, with the
    same fitted attributes: ``pooled_``, ``embedding_`` (None for K=1), ``clusterer_``,
    ``cluster_map_`` (cluster -> segment), ``labels_``, ``n_segments_``,
    ``segment_sizes_``, ``segment_alpha_`` (each segment's share of the purchases: every
    like-rate of a purchase log is 1), ``cluster_centers_``, ``segment_model_`` (with
    ``strength_``). Segments are numbered by increasing first embedding coordinate
    (for the scalar embedding, segment 0 chooses the most popular items).
    ``strength``: the choice models' shrinkage s (None: chosen on a validation split of
    the training purchases). ``predict_proba(rows, cols)`` is the choice probability
    p_{k(i) j}, not a like-probability.
    """

    name = "model_embedding"

    def __init__(
        self,
        n_segments: int = 3,
        pooled: str = "mnl",
        normalisation: str = "entropy",
        category_rank: int | None = None,
        strength: float | None = None,
        min_share: float = 0.0,
        smoothing: float = 1.0,
        random_state: int = 0,
    ):
        self.n_segments = n_segments
        self.pooled = pooled
        self.normalisation = normalisation
        self.category_rank = category_rank
        self.strength = strength
        self.min_share = min_share
        self.smoothing = smoothing
        self.random_state = random_state

    def fit(self, graph: PreferenceGraph, y=None) -> SegmentedPurchaseModel:
        """Fit on a graph whose edges are all purchases (labels ignored)."""
        if not isinstance(graph, PreferenceGraph):
            raise ValueError(f"graph must be a PreferenceGraph, got {type(graph).__name__}")
        if isinstance(self.n_segments, bool) or int(self.n_segments) != self.n_segments \
                or self.n_segments < 1:
            raise ValueError(f"n_segments must be a positive integer, got {self.n_segments!r}")
        _check_choice("normalisation", self.normalisation, NORMALISATIONS)
        if not 0 <= self.min_share < 1:
            raise ValueError(f"min_share must be in [0, 1), got {self.min_share!r}")
        self.pooled_ = MNLPooledModel(self.smoothing, _check_pooled(self.pooled)).fit(graph)
        m = graph.n_customers
        if self.n_segments == 1:  # no segmentation: the pooled choice model, once
            self.embedding_, self.clusterer_ = None, None
            clusters = np.zeros(m, dtype=np.int64)
            self.cluster_map_ = np.zeros(1, dtype=np.int64)
        else:
            self.embedding_ = purchase_embedding(graph, self.pooled_, self.normalisation,
                                                 self.category_rank, self.random_state)
            self.clusterer_ = SegmentClusterer(int(self.n_segments),
                                               random_state=self.random_state).fit(self.embedding_)
            clusters = self.clusterer_.labels_.astype(np.int64)
            # the clusterer numbers clusters by their first coordinate; folding keeps it
            self.cluster_map_ = fold_small_segments(clusters, self.embedding_, self.min_share)
        self.labels_ = self.cluster_map_[clusters].astype(np.int64)
        self.n_segments_ = int(self.labels_.max()) + 1
        self.segment_sizes_ = np.bincount(self.labels_, minlength=self.n_segments_)
        if self.embedding_ is not None:
            x = as_2d(self.embedding_)
            sums = np.zeros((self.n_segments_, x.shape[1]))
            np.add.at(sums, self.labels_, x)
            self.cluster_centers_ = sums / self.segment_sizes_[:, None]
        self.segment_model_ = SegmentChoiceModel(
            shrinkage=self.strength, random_state=self.random_state
        ).fit(graph, self.labels_, self.pooled_)
        totals = self.segment_model_.segment_totals_
        self.segment_alpha_ = totals / max(totals.sum(), 1.0)
        return self

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The choice probability p_{k(i) j} of edges (customer row, item column)."""
        check_is_fitted(self, "segment_model_")
        rows = np.asarray(rows, dtype=np.int64)
        return self.segment_model_.predict_proba(self.labels_[rows], cols)

    def recommend(
        self, rows: np.ndarray | None = None, n: int = 10, exclude: Purchases | None = None
    ) -> np.ndarray:
        """Top-n item indices for fitted customers ``rows`` (default all), best first,
        items each has in ``exclude`` (e.g. the training graph) removed; -1 pads."""
        check_is_fitted(self, "segment_model_")
        rows, pattern = _rows_and_pattern(
            rows, exclude, self.pooled_.n_items_, n_customers=len(self.labels_)
        )
        return self.segment_model_.recommend(self.labels_[rows], n, exclude=pattern)

    def log_likelihood(self, held_out: Purchases, exclude: Purchases | None = None):
        """Per held-out purchase log-likelihood (see SegmentChoiceModel.log_likelihood)."""
        check_is_fitted(self, "segment_model_")
        return self.segment_model_.log_likelihood(self.labels_, held_out, exclude)

    def assign(self, graph: PreferenceGraph) -> np.ndarray:
        """Segments of NEW customers (graph with the fitted items; scalar embedding only):
        their choice embedding, the nearest cluster, then the same folding."""
        check_is_fitted(self, "segment_model_")
        if self.clusterer_ is None:
            return np.zeros(graph.n_customers, dtype=np.int64)
        if self.category_rank is not None:
            raise ValueError("assign is available for the scalar embedding only")
        embedding = choice_embedding(graph, self.pooled_, self.normalisation)
        return self.cluster_map_[self.clusterer_.predict(embedding)]


class PurchaseSelector(BaseEstimator):
    """The purchase-only counterpart of :class:`~.selection.SegmentationSelector`: the
    pooled MNL ('mnl' or per category 'mnl:category'), the normalisation, the embedding
    (scalar or per-category vector) and K chosen on VALIDATION purchases.

    Every candidate segments the training customers and fits :class:`SegmentChoiceModel`
    (its shrinkage chosen on the same validation purchases). The criterion is each
    validation customer's summed log-likelihood of their validation purchases, each
    renormalised over the items they had not bought, averaged over customers
    (``PURCHASE_SCALE``). The one-standard-error rule
    (:func:`~.selection.one_standard_error_choice`) then takes the simplest candidate
    (fewer segments, 'mnl' before 'mnl:category', scalar before vector, the
    normalisations in the order given) within one standard error of the best; segments
    under ``min_share`` of the customers are folded ('fold') or reject the candidate
    ('reject'). Test purchases never enter.

    Parameters mirror SegmentationSelector's (each a list of options; one option pins
    it): ``pooled`` (None: 'mnl', plus 'mnl:category' when items have categories),
    ``normalisations``, ``category_ranks`` (None = scalar), ``ks`` (K=1 is one
    candidate: the pooled model), ``min_share``, ``small_segments``, ``strength_grid``
    (None: DEFAULT_SHRINKAGE_GRID), ``smoothing`` (the MNL's pseudo-count),
    ``validation_fraction`` (when ``fit`` gets no validation purchases),
    ``k_candidates`` ('all' or 'kde').

    Fitted: ``table_`` (the same columns as SegmentationSelector's), ``spec_`` (a
    :class:`~.selection.CandidateSpec`), ``strength_``, ``method_`` (the fitted
    :class:`SegmentedPurchaseModel`), ``segment_model_``, ``labels_``, ``n_segments_``,
    ``segment_sizes_``, ``embedding_``.
    """

    name = "model_embedding_selected"

    def __init__(
        self,
        pooled: Sequence[str] | None = None,
        normalisations: Sequence[str] = ("entropy", "degree"),
        category_ranks: Sequence[int | None] = (None, 2),
        ks: Sequence[int] = (1, 2, 3, 4, 5, 6),
        min_share: float = 0.02,
        small_segments: str = "fold",
        strength_grid: Sequence[float] | None = None,
        smoothing: float = 1.0,
        validation_fraction: float = 0.1,
        k_candidates: str = "all",
        random_state: int = 0,
    ):
        self.pooled = pooled
        self.normalisations = normalisations
        self.category_ranks = category_ranks
        self.ks = ks
        self.min_share = min_share
        self.small_segments = small_segments
        self.strength_grid = strength_grid
        self.smoothing = smoothing
        self.validation_fraction = validation_fraction
        self.k_candidates = k_candidates
        self.random_state = random_state

    # ---------------------------------------------------------------- options
    def _check_params(self) -> None:
        ks = list(self.ks)
        if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
            raise ValueError(f"ks must be positive integers, got {self.ks!r}")
        if not 0 <= self.min_share < 1:
            raise ValueError(f"min_share must be in [0, 1), got {self.min_share}")
        _check_choice("small_segments", self.small_segments, ("fold", "reject"))
        _check_choice("k_candidates", self.k_candidates, ("all", "kde"))
        if not list(self.normalisations):
            raise ValueError("normalisations must hold at least one option")
        for normalisation in self.normalisations:
            _check_choice("normalisations", normalisation, NORMALISATIONS)

    def _pooled_options(self, graph: PreferenceGraph) -> list[str]:
        if self.pooled is not None:
            options = list(self.pooled)
            if not options:
                raise ValueError("pooled must name at least one pooled model")
            for option in options:
                _check_pooled(option)
            return options
        return list(PURCHASE_POOLED) if graph.item_categories is not None else ["mnl"]

    def _rank_options(self, graph: PreferenceGraph) -> list[int | None]:
        ranks = list(self.category_ranks)
        if not ranks:
            raise ValueError("category_ranks must hold at least one option (None = scalar)")
        if graph.item_categories is None:
            return [None]
        n_categories = len(np.unique(graph.item_categories))
        # the vector has one column per category plus the category-choice column
        return [r for r in ranks if r is None or 1 <= int(r) <= n_categories + 1] or [None]

    def _ks_for(self, embedding: np.ndarray, ks: list[int]) -> list[int]:
        wanted = [k for k in ks if k > 1]
        if self.k_candidates == "all" or not wanted:
            return wanted
        return embedding_candidate_ks(as_2d(embedding)[:, 0], min(wanted), max(wanted))

    # ---------------------------------------------------------------- fit
    def fit(self, graph: PreferenceGraph, validation=None) -> PurchaseSelector:
        """Score every candidate on ``validation`` purchases of ``graph``'s customers
        ((rows, cols) or (rows, cols, labels), labels ignored) or, without them, on a
        split of ``graph``; then fit the chosen candidate on ``graph``."""
        if not isinstance(graph, PreferenceGraph):
            raise ValueError(f"graph must be a PreferenceGraph, got {type(graph).__name__}")
        self._check_params()
        if validation is None:
            train, held = split_validation_edges(graph, self.validation_fraction,
                                                 self.random_state)
            validation = held[:2]
        else:
            train = graph
            if not isinstance(validation, tuple) or len(validation) not in (2, 3):
                raise ValueError("validation must be (rows, cols) or (rows, cols, labels)")
            validation = tuple(validation[:2])
        m = train.n_customers
        rows, cols = _purchase_edges(validation, m, train.n_items, "validation")
        bought = _pattern(train, m, train.n_items, "graph")
        # a validation purchase of an item already bought in train cannot be predicted
        fresh = ~_contains(_pair_keys(bought), rows * np.int64(train.n_items) + cols)
        rows, cols = rows[fresh], cols[fresh]
        if len(rows) == 0:
            raise ValueError("validation has no purchase of an item not bought in training")
        customers = np.unique(rows)
        grid = tuple(DEFAULT_SHRINKAGE_GRID if self.strength_grid is None
                     else self.strength_grid)
        records: list[dict] = []
        per_customer: list[np.ndarray] = []

        def score(spec: CandidateSpec, pooled: MNLPooledModel | None,
                  clusters: np.ndarray | None, embedding: np.ndarray | None,
                  reason: str = "") -> None:
            record = {"spec": spec, "n_effective": spec.n_segments, "folded": 0,
                      "share": np.nan, "strength": np.nan, "reason": reason, "ok": False}
            records.append(record)
            if clusters is None:
                per_customer.append(np.full(len(customers), np.nan))
                return
            labels, folded = clusters, 0
            if spec.n_segments > 1:
                mapping = fold_small_segments(clusters, embedding, self.min_share)
                labels = mapping[clusters]
                folded = int((mapping != np.arange(len(mapping)))[clusters].sum())
            sizes = np.bincount(labels)
            record.update(share=float(sizes.min() / m), n_effective=len(sizes), folded=folded)
            if folded and self.small_segments == "reject":
                record["reason"] = (f"a segment of {folded / m:.2%} of the customers is below "
                                    f"min_share {self.min_share:.2%}")
                per_customer.append(np.full(len(customers), np.nan))
                return
            model = SegmentChoiceModel(shrinkage_grid=grid, random_state=self.random_state)
            model.fit(train, labels, pooled, validation=(rows, cols))
            ll = model.log_likelihood(labels, (rows, cols), exclude=bought)
            per_customer.append(np.bincount(rows, weights=ll, minlength=m)[customers])
            record.update(strength=model.strength_, ok=True)
            if folded:
                record["reason"] = (f"{folded} customers of segments below min_share "
                                    f"{self.min_share:.2%} folded into the nearest segment")

        ks = sorted({int(k) for k in self.ks})
        normalisations = list(self.normalisations)
        pooled_options = self._pooled_options(train)
        rank_options = self._rank_options(train)  # counts the categories once
        fitted_pooled = {
            p: MNLPooledModel(self.smoothing, _check_pooled(p)).fit(train)
            for p in pooled_options
        }
        if 1 in ks:
            score(CandidateSpec(pooled_options[0], normalisations[0], None, 1),
                  fitted_pooled[pooled_options[0]], np.zeros(m, dtype=np.int64), None)
        for pooled_name, pooled in fitted_pooled.items():
            for normalisation in normalisations:
                for rank in rank_options:
                    try:  # one embedding for every K
                        embedding = purchase_embedding(train, pooled, normalisation, rank,
                                                       self.random_state)
                    except ValueError as error:
                        for k in [k for k in ks if k > 1]:
                            score(CandidateSpec(pooled_name, normalisation, rank, k), None,
                                  None, None, f"embedding failed: {error}")
                        continue
                    for k in self._ks_for(embedding, ks):
                        spec = CandidateSpec(pooled_name, normalisation, rank, k)
                        try:
                            clusters = SegmentClusterer(
                                k, random_state=self.random_state
                            ).fit(embedding).labels_
                        except ValueError as error:
                            score(spec, None, None, None, f"clustering failed: {error}")
                            continue
                        score(spec, pooled, clusters.astype(np.int64), embedding)

        specs = [r["spec"] for r in records]
        eligible = np.array([r["ok"] for r in records])
        if not eligible.any():
            raise ValueError("no candidate could be scored: "
                             + "; ".join(sorted({r["reason"] for r in records})))
        # simplicity counts the segments actually kept (after folding)
        complexity = [
            (r["n_effective"], PURCHASE_POOLED.index(r["spec"].pooled),
             0 if r["spec"].category_rank is None else r["spec"].category_rank,
             normalisations.index(r["spec"].normalisation))
            for r in records
        ]
        chosen, mean, se, gap = one_standard_error_choice(
            np.vstack(per_customer), complexity, eligible
        )
        self.table_ = pd.DataFrame({
            "candidate": [f"{s.pooled} / {s.normalisation} / {s.embedding} / K={s.n_segments}"
                          for s in specs],
            "pooled": [s.pooled for s in specs],
            "normalisation": [s.normalisation for s in specs],
            "embedding": [s.embedding for s in specs],
            "category_rank": pd.array([s.category_rank for s in specs], dtype="Int64"),
            "n_clusters": [s.n_segments for s in specs],
            "n_segments": [r["n_effective"] for r in records],
            "folded_customers": [r["folded"] for r in records],
            "smallest_segment_share": [r["share"] for r in records],
            "score": mean,
            "se": se,
            "gap_to_best": gap,
            "strength": [r["strength"] for r in records],
            "eligible": eligible,
            "within_one_se": eligible & (gap <= se),
            "chosen": np.arange(len(specs)) == chosen,
            "note": [r["reason"] for r in records],
            "scale": PURCHASE_SCALE,
            "n_validation_customers": len(customers),
            "n_validation_edges": len(rows),
        })
        self.spec_ = specs[chosen]
        self.strength_ = float(records[chosen]["strength"])
        fitted = self.chosen_method().fit(graph)
        self.method_ = fitted
        self.segment_model_ = fitted.segment_model_
        self.labels_ = fitted.labels_
        self.n_segments_ = fitted.n_segments_
        self.segment_sizes_ = fitted.segment_sizes_
        self.embedding_ = fitted.embedding_
        return self

    def chosen_method(self) -> SegmentedPurchaseModel:
        """The chosen candidate as an unfitted end-to-end estimator (strength fixed)."""
        check_is_fitted(self, "spec_")
        spec = self.spec_
        return SegmentedPurchaseModel(
            spec.n_segments, pooled=spec.pooled, normalisation=spec.normalisation,
            category_rank=spec.category_rank, strength=self.strength_,
            min_share=self.min_share, smoothing=self.smoothing,
            random_state=self.random_state,
        )

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The chosen model's choice probability for (customer row, item column)."""
        check_is_fitted(self, "method_")
        return self.method_.predict_proba(rows, cols)

    def recommend(
        self, rows: np.ndarray | None = None, n: int = 10, exclude: Purchases | None = None
    ) -> np.ndarray:
        """Top-n unbought items of the chosen model (see SegmentedPurchaseModel)."""
        check_is_fitted(self, "method_")
        return self.method_.recommend(rows, n, exclude)
