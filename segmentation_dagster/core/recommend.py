"""Top-k recommendation from segments and factorisations, and its offline evaluation.

Protocol (full ranking, no sampled negatives): interactions are split per customer
into train and held-out test (:func:`leave_out_split`); a scorer fitted on the train
matrix scores EVERY product for a customer; products the customer has in train are
removed; the top k of the rest are compared with the customer's held-out products.

Scorers share one small interface: ``fit(train)`` then ``score(rows) -> (len(rows), n)``
dense array (higher = recommend first); each is a scikit-learn ``BaseEstimator``:
- :class:`FactorScorer` / :class:`NMFScorer`: W[rows] @ H (NMF co-segmentation);
- :class:`PopularityScorer`: how many training customers have each product;
- :class:`SegmentPopularityScorer`: the same count within the customer's segment, for
  any hard segmentation (NMF segments, model-based embedding segments, ...).

Customers are scored in chunks so that only a chunk x products dense block exists at
any time, never the full customers x products matrix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .nmf import CoSegmentation

# check_is_fitted's message for the scorers (it raises NotFittedError, a ValueError)
_NOT_FITTED = "%(name)s is not fitted; call fit(train) first"

# Cells (customers x products) of one dense score block: 2**24 float64 = 128 MB.
MAX_BLOCK_CELLS = 1 << 24


# --------------------------------------------------------------------------------------
# Held-out split
# --------------------------------------------------------------------------------------


def leave_out_split(
    customer_ids: Iterable,
    item_ids: Iterable,
    fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random per-customer hold-out of interactions; returns (train_mask, test_mask).

    The unit held out is a distinct (customer, item) pair: every interaction of a pair
    goes to the same side, so a repeat purchase cannot leak a test item into train.
    A customer with d >= 2 distinct items holds out round(fraction * d) of them, at
    least 1 and at most d - 1 (so every customer keeps training data); a customer with
    one distinct item stays entirely in train. The masks are boolean over the input
    rows, complementary, and reproducible from ``seed``.
    """
    customers = np.asarray(customer_ids)
    items = np.asarray(item_ids)
    if customers.ndim != 1 or len(customers) != len(items):
        raise ValueError(
            f"customer_ids and item_ids must be 1-D of equal length; got {customers.shape} "
            f"and {items.shape}"
        )
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1); got {fraction}")
    if len(customers) == 0:
        return np.zeros(0, bool), np.zeros(0, bool)
    cust_code = pd.factorize(customers)[0]
    item_code = pd.factorize(items)[0]
    key = cust_code.astype(np.int64) * (int(item_code.max()) + 1) + item_code
    pair_keys, pair_code = np.unique(key, return_inverse=True)
    pair_customer = pair_keys // (int(item_code.max()) + 1)
    n_pairs = np.bincount(pair_customer)
    n_test = np.floor(fraction * n_pairs + 0.5).astype(np.int64)
    n_test = np.where(n_pairs >= 2, np.clip(n_test, 1, n_pairs - 1), 0)
    # rank each customer's pairs in a random order; the first n_test go to test
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(pair_customer)), pair_customer))
    starts = np.concatenate(([0], np.cumsum(n_pairs)[:-1]))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order)) - np.repeat(starts, n_pairs)
    pair_test = rank < n_test[pair_customer]
    test_mask = pair_test[pair_code]
    return ~test_mask, test_mask


@dataclass(frozen=True)
class HeldOutData:
    """Aligned sparse train and test matrices over one customer and item universe.

    train, test : csr (m, n) with 1 where the customer has the item on that side
    customer_ids, item_ids : row and column ids (sorted), over ALL interactions
    """

    train: sp.csr_matrix
    test: sp.csr_matrix
    customer_ids: np.ndarray
    item_ids: np.ndarray = field(repr=False)


def held_out_matrices(
    customer_ids: Iterable, item_ids: Iterable, test_mask: np.ndarray
) -> HeldOutData:
    """Binary train / test matrices from interactions and a test mask.

    Rows and columns cover every customer and item of the input, so items seen only in
    test are columns of zeros in train (every scorer must rank them too).
    """
    customers = np.asarray(customer_ids)
    items = np.asarray(item_ids)
    test_mask = np.asarray(test_mask, dtype=bool)
    if not (len(customers) == len(items) == len(test_mask)):
        raise ValueError(
            f"customer_ids, item_ids and test_mask differ in length: {len(customers)}, "
            f"{len(items)}, {len(test_mask)}"
        )
    rows, row_ids = pd.factorize(customers, sort=True)
    cols, col_ids = pd.factorize(items, sort=True)
    shape = (len(row_ids), len(col_ids))

    def build(mask: np.ndarray) -> sp.csr_matrix:
        X = sp.csr_matrix((np.ones(int(mask.sum())), (rows[mask], cols[mask])), shape=shape)
        X.sum_duplicates()
        X.data[:] = 1.0
        return X

    return HeldOutData(
        build(~test_mask), build(test_mask), np.asarray(row_ids), np.asarray(col_ids)
    )


# --------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------


def _check_matrix(train) -> sp.csr_matrix:
    X = sp.csr_matrix(train, dtype=float)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"train must be a non-empty customers x products matrix; got {X.shape}")
    if (X.data < 0).any():
        raise ValueError(f"train has {int((X.data < 0).sum())} negative entries")
    return X


def _check_factors(W, H) -> None:
    shapes = np.shape(W), np.shape(H)
    if len(shapes[0]) != 2 or len(shapes[1]) != 2 or shapes[0][1] != shapes[1][0]:
        raise ValueError(f"W (m, k) and H (k, n) do not conform: {shapes[0]} and {shapes[1]}")


class FactorScorer(BaseEstimator):
    """score(rows) = W[rows] @ H for given factors (e.g. a fitted CoSegmentation).

    Fitted by construction: ``W_`` and ``H_`` are the parameters ``W`` and ``H`` (stored
    unchanged, so ``clone`` works) as float arrays; ``fit`` only checks the shape.
    """

    name = "factors"

    def __init__(self, W: np.ndarray, H: np.ndarray):
        self.W = W
        self.H = H
        # refused at construction, as before: the factors are all this scorer has
        _check_factors(W, H)

    @property
    def W_(self) -> np.ndarray:
        return np.asarray(self.W, dtype=float)

    @property
    def H_(self) -> np.ndarray:
        return np.asarray(self.H, dtype=float)

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, train=None) -> FactorScorer:
        if train is not None and train.shape != (len(self.W_), self.H_.shape[1]):
            raise ValueError(
                f"train has shape {train.shape} but the factors give "
                f"{(len(self.W_), self.H_.shape[1])}"
            )
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        check_is_fitted(self, msg=_NOT_FITTED)
        return self.W_[np.asarray(rows)] @ self.H_


class NMFScorer(FactorScorer):
    """Fit a :class:`~segmentation_dagster.core.nmf.CoSegmentation` on train; score W H.

    Keyword arguments go to CoSegmentation (n_components, loss, init, ...). They are the
    estimator's parameters: ``get_params`` lists them and ``set_params`` changes them, so
    ``clone`` works although ``__init__`` takes ``**kwargs``, which scikit-learn's
    introspection of the signature cannot see.
    """

    name = "nmf"

    def __init__(self, **cosegmentation_kwargs):
        self.cosegmentation_kwargs = cosegmentation_kwargs

    def get_params(self, deep: bool = True) -> dict:
        return dict(self.cosegmentation_kwargs)

    def set_params(self, **params) -> NMFScorer:
        self.cosegmentation_kwargs = {**self.cosegmentation_kwargs, **params}
        return self

    @property
    def W_(self) -> np.ndarray:
        check_is_fitted(self, msg=_NOT_FITTED)
        return self.model_.W_

    @property
    def H_(self) -> np.ndarray:
        check_is_fitted(self, msg=_NOT_FITTED)
        return self.model_.H_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def fit(self, train) -> NMFScorer:
        self.model_ = CoSegmentation(**self.cosegmentation_kwargs).fit(_check_matrix(train))
        return self


class PopularityScorer(BaseEstimator):
    """Every customer gets the same ranking: products by number of training customers."""

    name = "popularity"

    def fit(self, train) -> PopularityScorer:
        X = _check_matrix(train)
        self.popularity_ = np.bincount(X.indices[X.data > 0], minlength=X.shape[1]).astype(float)
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "popularity_", msg=_NOT_FITTED)
        return np.tile(self.popularity_, (len(np.asarray(rows)), 1))


class SegmentPopularityScorer(BaseEstimator):
    """Products by their number of training customers within the customer's segment.

    ``segments`` is one hard segment per row of train (any integer labels; negative =
    no segment). Ties inside a segment, and customers without a segment, fall back to
    global popularity: score = segment count + global count / (max global count + 1),
    whose fractional part never overturns a difference of one segment customer.
    """

    name = "segment_popularity"

    def __init__(self, segments: np.ndarray):
        self.segments = segments

    def fit(self, train) -> SegmentPopularityScorer:
        X = _check_matrix(train)
        segments = np.asarray(self.segments)
        if segments.shape != (X.shape[0],):
            raise ValueError(
                f"segments must hold one label per training customer ({X.shape[0]}); got "
                f"shape {segments.shape}"
            )
        assigned = segments >= 0
        codes = np.full(len(segments), -1, dtype=np.int64)
        _, codes[assigned] = np.unique(segments[assigned], return_inverse=True)
        n_seg = int(codes.max()) + 1
        B = (X > 0).astype(float)
        onehot = sp.csr_matrix(
            (np.ones(int(assigned.sum())), (codes[assigned], np.flatnonzero(assigned))),
            shape=(n_seg, X.shape[0]),
        )
        glob = np.asarray(B.sum(axis=0)).ravel()
        # n_segments x products is small; one extra row (all zero) serves the unassigned
        counts = np.vstack([(onehot @ B).toarray(), np.zeros(X.shape[1])])
        self.codes_ = codes
        self.segment_counts_ = counts[:-1]
        self.table_ = counts + glob / (glob.max() + 1.0)
        return self

    def score(self, rows: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "table_", msg=_NOT_FITTED)
        # code -1 picks the last (all-zero) row: global popularity alone
        return self.table_[self.codes_[np.asarray(rows)]]


# --------------------------------------------------------------------------------------
# Ranking and evaluation
# --------------------------------------------------------------------------------------


def _chunks(rows: np.ndarray, n_items: int, chunk_size: int | None):
    size = chunk_size or max(1, MAX_BLOCK_CELLS // max(n_items, 1))
    for s in range(0, len(rows), size):
        yield rows[s : s + size]


def _top_k_block(scorer, train: sp.csr_matrix, rows: np.ndarray, k: int) -> np.ndarray:
    """Top-k unseen products of a chunk of customers, best first; -1 pads."""
    scores = np.array(scorer.score(rows), dtype=float)  # a writable copy
    if scores.shape != (len(rows), train.shape[1]):
        raise ValueError(
            f"{type(scorer).__name__}.score returned shape {scores.shape}; expected "
            f"{(len(rows), train.shape[1])}"
        )
    seen = train[rows]
    scores[np.repeat(np.arange(len(rows)), np.diff(seen.indptr)), seen.indices] = -np.inf
    n = scores.shape[1]
    kk = min(k, n)
    top = (
        np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        if kk < n
        else np.tile(np.arange(n), (len(rows), 1))
    )
    top_scores = np.take_along_axis(scores, top, axis=1)
    # best first; ties by product index so results do not depend on argpartition
    order = np.lexsort((top, -top_scores), axis=1)
    top = np.take_along_axis(top, order, axis=1)
    top[np.take_along_axis(top_scores, order, axis=1) == -np.inf] = -1
    if kk < k:
        top = np.hstack([top, np.full((len(rows), k - kk), -1)])
    return top


def top_k_items(
    scorer,
    train,
    rows: np.ndarray | None = None,
    k: int = 10,
    chunk_size: int | None = None,
) -> np.ndarray:
    """Column indices of each customer's top-k products not in train, best first.

    Returns (len(rows), k) ints; -1 where a customer has fewer than k unseen products.
    ``rows`` defaults to every customer; ``chunk_size`` customers are scored at a time
    (default: as many as fit in ``MAX_BLOCK_CELLS`` cells).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    X = _check_matrix(train)
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros((0, k), dtype=np.int64)
    return np.vstack([_top_k_block(scorer, X, r, k) for r in _chunks(rows, X.shape[1], chunk_size)])


@dataclass(frozen=True)
class RankingMetrics:
    """recall@k and nDCG@k averaged over evaluated customers, plus per-customer values.

    customers : train-matrix rows evaluated (those with >= 1 held-out unseen product)
    """

    k: int
    recall: float
    ndcg: float
    n_customers: int
    customers: np.ndarray = field(repr=False)
    recall_per_customer: np.ndarray = field(repr=False)
    ndcg_per_customer: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        return {
            f"recall@{self.k}": self.recall,
            f"ndcg@{self.k}": self.ndcg,
            "n_customers": self.n_customers,
        }


def evaluate_recommendations(
    scorer,
    train,
    test,
    k: int = 10,
    chunk_size: int | None = None,
) -> RankingMetrics:
    """recall@k and nDCG@k of a fitted scorer on held-out interactions (full ranking).

    For customer i, let T_i be the held-out products NOT in i's training set (held-out
    products already in train could never be recommended and are ignored), and
    R_i = (r_1, ..., r_k) the top-k products by score among those not in i's training
    set. With rel_j = 1 if r_j is in T_i, else 0:

    - recall@k = |R_i ∩ T_i| / |T_i|
    - DCG@k = sum_{j=1..k} rel_j / log2(j + 1); IDCG@k = sum_{j=1..min(k, |T_i|)}
      1 / log2(j + 1) (all hits on top); nDCG@k = DCG@k / IDCG@k.

    Both are averaged (unweighted) over customers with |T_i| >= 1. Products never
    bought in train are still ranked (as misses for popularity scorers, etc.).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    X = _check_matrix(train)
    T = _check_matrix(test)
    if T.shape != X.shape:
        raise ValueError(f"train {X.shape} and test {T.shape} must have the same shape")
    T = (T > 0).astype(np.int8)
    T = (T - T.multiply(X > 0)).tocsr()  # drop held-out items already in train
    T.eliminate_zeros()
    n_relevant = np.diff(T.indptr)
    customers = np.flatnonzero(n_relevant > 0)
    if len(customers) == 0:
        raise ValueError("no customer has a held-out product outside their training set")
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discount)
    recall, ndcg = [], []
    for rows in _chunks(customers, X.shape[1], chunk_size):
        top = _top_k_block(scorer, X, rows, k)
        relevant = T[rows].toarray().astype(bool)  # chunk x products, bounded by the chunk
        hits = np.take_along_axis(relevant, np.clip(top, 0, None), axis=1) & (top >= 0)
        n_rel = n_relevant[rows]
        recall.append(hits.sum(axis=1) / n_rel)
        ndcg.append((hits @ discount) / ideal[np.minimum(n_rel, k) - 1])
    recall_c, ndcg_c = np.concatenate(recall), np.concatenate(ndcg)
    return RankingMetrics(
        k=k,
        recall=float(recall_c.mean()),
        ndcg=float(ndcg_c.mean()),
        n_customers=len(customers),
        customers=customers,
        recall_per_customer=recall_c,
        ndcg_per_customer=ndcg_c,
    )
