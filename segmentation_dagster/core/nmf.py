"""Co-segmentation of customers and products by non-negative matrix factorisation (NMF).

The customers x products purchase matrix V (1 if ever bought, or purchase counts) is
factorised as V ~ W H with W >= 0 (customers x k) and H >= 0 (k x products). Each of the
k "bases" is at once a customer segment (the customers with large weight in that column
of W) and a product segment (the products with large weight in that row of H); see
``docs/papers/nmf-product-segmentation.txt``.

Main pieces:
- :func:`purchase_matrix`: long (customer, item[, value]) table -> sparse V with id maps;
- :class:`CoSegmentation`: the estimator (scikit-learn ``NMF`` on the sparse V);
- :func:`rank_sweep` / :func:`choose_rank`: choosing k by reconstruction error and the
  stability of the segments over random restarts (consensus matrix and its cophenetic
  correlation, as the R NMF package's ``nmfEstimateRank`` does);
- :func:`block_order` and the ``plot_*`` functions: heatmaps and rank-selection curves.

V is only ever held sparse; every quantity is computed from its non-zeros and the small
factors (no dense customers x products matrix).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.cluster.hierarchy import cophenet, leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from .graph import PreferenceGraph
from .segmenters import HardSegmenter

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# loss name -> (scikit-learn beta_loss, solver). The coordinate-descent solver only
# handles the Frobenius loss; the KL divergence needs multiplicative updates.
LOSSES = {"frobenius": ("frobenius", "cd"), "kullback-leibler": ("kullback-leibler", "mu")}
INITS = ("nndsvd", "nndsvda", "nndsvdar", "random")
RANK_RULES = ("plateau_end", "first_decrease", "largest_drop", "max")

# Consensus matrices are sample x sample; above this many customers a seeded random
# sample of this size is used (1000 x 1000 float32 = 4 MB per rank).
CONSENSUS_SAMPLE_SIZE = 1000


# --------------------------------------------------------------------------------------
# The purchase matrix
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseMatrix:
    """A sparse customers x products matrix with its id maps.

    Attributes
    ----------
    V : scipy.sparse.csr_matrix, float64, shape (m, n); no all-zero row or column
    customer_ids, item_ids : original ids in row and column order (sorted)
    n_dropped_customers, n_dropped_items : all-zero rows / columns removed when building
    binary : True if entries are 1 (ever bought), False if they are summed values
    """

    V: sp.csr_matrix
    customer_ids: np.ndarray
    item_ids: np.ndarray
    n_dropped_customers: int = 0
    n_dropped_items: int = 0
    binary: bool = True

    @property
    def shape(self) -> tuple[int, int]:
        return self.V.shape


def purchase_matrix(
    customer_ids: Iterable,
    item_ids: Iterable,
    values: Iterable | None = None,
    binary: bool = True,
) -> PurchaseMatrix:
    """Build the purchase matrix V from one row per interaction.

    Parameters
    ----------
    customer_ids, item_ids : equal-length sequences, one entry per interaction
    values : optional non-negative amounts per interaction (quantities, counts); default 1
    binary : if True, V[i, j] = 1 when customer i's summed value on j is > 0 ("ever
        bought"); if False, V[i, j] is the summed value (a count matrix).

    Customers or products whose row / column of V is all zero (e.g. only zero-quantity
    lines) are dropped, and their numbers reported in the result. Negative values raise a
    ValueError: NMF needs V >= 0, and a return should be netted out upstream, not here.
    """
    customers = np.asarray(customer_ids)
    items = np.asarray(item_ids)
    if customers.ndim != 1 or items.ndim != 1 or len(customers) != len(items):
        raise ValueError(
            f"customer_ids and item_ids must be 1-D of equal length; got shapes "
            f"{customers.shape} and {items.shape}"
        )
    if len(customers) == 0:
        raise ValueError("no interactions: the purchase matrix would be empty")
    for name, ids in (("customer_ids", customers), ("item_ids", items)):
        n_null = int(pd.isna(ids).sum())
        if n_null:
            raise ValueError(f"{name} has {n_null} null ids")
    if values is None:
        data = np.ones(len(customers))
    else:
        data = pd.to_numeric(pd.Series(np.asarray(values)), errors="coerce").to_numpy(float)
        if len(data) != len(customers):
            raise ValueError(
                f"values has length {len(data)} but there are {len(customers)} interactions"
            )
        n_bad = int((~np.isfinite(data)).sum())
        if n_bad:
            raise ValueError(f"values has {n_bad} missing, non-numeric or infinite entries")
        n_negative = int((data < 0).sum())
        if n_negative:
            raise ValueError(
                f"values has {n_negative} negative entries; purchase counts must be >= 0 "
                "(NMF needs a non-negative matrix)"
            )
    row_codes, row_ids = pd.factorize(customers, sort=True)
    col_codes, col_ids = pd.factorize(items, sort=True)
    V = sp.csr_matrix(
        (data, (row_codes, col_codes)), shape=(len(row_ids), len(col_ids))
    )  # duplicates are summed
    V.sum_duplicates()
    if binary:
        V.data = (V.data > 0).astype(float)
    V.eliminate_zeros()
    keep_rows = np.diff(V.indptr) > 0
    keep_cols = np.bincount(V.indices, minlength=V.shape[1]) > 0
    if not keep_rows.any():
        raise ValueError("every value is zero: the purchase matrix has no non-zero entry")
    # dropping empty columns cannot empty a row, so one pass suffices
    V = V[keep_rows][:, keep_cols].tocsr()
    return PurchaseMatrix(
        V=V,
        customer_ids=np.asarray(row_ids)[keep_rows],
        item_ids=np.asarray(col_ids)[keep_cols],
        n_dropped_customers=int((~keep_rows).sum()),
        n_dropped_items=int((~keep_cols).sum()),
        binary=binary,
    )


def _as_sparse(V) -> tuple[sp.csr_matrix, np.ndarray | None, np.ndarray | None]:
    """Accept a PurchaseMatrix, a scipy sparse matrix or a small array; check V >= 0."""
    if isinstance(V, PurchaseMatrix):
        X, customer_ids, item_ids = V.V, V.customer_ids, V.item_ids
    else:
        X, customer_ids, item_ids = V, None, None
    X = sp.csr_matrix(X, dtype=float)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"V must be a non-empty 2-D matrix; got shape {X.shape}")
    if not np.isfinite(X.data).all():
        raise ValueError(f"V has {int((~np.isfinite(X.data)).sum())} NaN or infinite entries")
    n_negative = int((X.data < 0).sum())
    if n_negative:
        raise ValueError(f"V has {n_negative} negative entries; NMF needs V >= 0")
    if X.nnz == 0:
        raise ValueError("V has no non-zero entry")
    return X, customer_ids, item_ids


def _check_options(n_components: int, loss: str, init: str, shape: tuple[int, int]) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}; got {init!r}")
    if int(n_components) != n_components or n_components < 1:
        raise ValueError(f"n_components must be a positive integer; got {n_components!r}")
    if n_components > min(shape):
        raise ValueError(
            f"n_components={n_components} exceeds min(customers, products) = {min(shape)} "
            f"for V of shape {shape}: a rank-{n_components} factorisation is not identifiable"
        )


def _sparse_rss(X: sp.csr_matrix, W: np.ndarray, H: np.ndarray) -> float:
    """||X - W H||_F^2 without forming W H: ||X||^2 - 2 <X, WH> + tr(W'W H H')."""
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    # <X, WH> only needs WH at the non-zeros of X; chunked to bound the nnz x k temporary
    cross = 0.0
    step = 1 << 20
    for s in range(0, X.nnz, step):
        r, c = rows[s : s + step], X.indices[s : s + step]
        cross += float(X.data[s : s + step] @ np.einsum("ij,ji->i", W[r], H[:, c]))
    rss = float(X.data @ X.data) - 2.0 * cross + float(np.sum((W.T @ W) * (H @ H.T)))
    return max(rss, 0.0)


def _normalise_rows(a: np.ndarray) -> np.ndarray:
    sums = a.sum(axis=1, keepdims=True)
    return np.divide(a, sums, out=np.zeros_like(a, dtype=float), where=sums > 0)


def _argmax_or_unassigned(scores: np.ndarray) -> np.ndarray:
    """Row argmax, -1 where the row is all zero (no basis explains that entity)."""
    labels = scores.argmax(axis=1).astype(np.int64)
    labels[~(scores > 0).any(axis=1)] = -1
    return labels


def _fit_nmf(X, k, loss, init, random_state, max_iter, tol):
    """One scikit-learn NMF fit; returns (W, H, model, converged)."""
    beta_loss, solver = LOSSES[loss]
    model = NMF(
        n_components=k,
        init=init,
        solver=solver,
        beta_loss=beta_loss,
        random_state=random_state,
        max_iter=max_iter,
        tol=tol,
    )
    W = model.fit_transform(X)
    # scikit-learn warns exactly when the iteration cap is hit; reading n_iter_ instead of
    # catching the warning stays correct when fits run in threads (catch_warnings is not
    # thread-safe)
    converged = model.n_iter_ < max_iter
    return W, model.components_, model, converged


def _rescale(W: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Move each basis' scale from H into W so that every row of H sums to 1.

    NMF only identifies W D and D^-1 H for any positive diagonal D. With unit-sum rows,
    H[k, j] is product j's share of basis k, comparable across bases, and W[i, k] is
    the part of customer i's fitted purchases explained by basis k; W H is unchanged.
    """
    scale = H.sum(axis=1)
    scale = np.where(scale > 0, scale, 1.0)
    return W * scale, H / scale[:, None], scale


# --------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------


class CoSegmentation:
    """Customer and product segments from one NMF of the purchase matrix.

    Parameters
    ----------
    n_components : k, the number of bases (= customer segments = product segments)
    loss : 'frobenius' (coordinate descent) or 'kullback-leibler' (multiplicative
        updates, solver='mu'; better suited to counts). With 'kullback-leibler' prefer
        init='nndsvda' or 'random': the zeros of plain 'nndsvd' never move under 'mu'.
    init : 'nndsvd', 'nndsvda', 'nndsvdar' or 'random' (scikit-learn's initialisations)
    random_state : seed for 'random' / 'nndsvdar' initialisations
    max_iter, tol : passed to scikit-learn ``NMF``

    Fitted attributes
    -----------------
    W_ : (m, k) customer weights, H_ : (k, n) product weights, rescaled so that each row
        of H_ sums to 1 (W_ H_ equals the raw fit's W H; see ``_rescale``)
    reconstruction_err_ : scikit-learn's value for the chosen loss (Frobenius norm
        ||V - WH||_F, or the generalised KL divergence)
    rss_, explained_variance_ : ||V - WH||_F^2 and 1 - rss_ / ||V||_F^2 (as R NMF's evar)
    customer_scores_ : (m, k) rows of W_ scaled to sum 1 = the share of each customer's
        fitted purchases explained by each basis (all zero if the row of W_ is zero)
    product_scores_ : (n, k) columns of H_ scaled to sum 1 = how a product's (unit-sum)
        weights split over the bases
    customer_segments_ : (m,) argmax of each row of W_, -1 for an all-zero row
    product_segments_ : (n,) argmax of each column of H_ (after the row normalisation),
        -1 for an all-zero column. Rows of the raw H have arbitrary, unequal scales (a
        basis of popular products has large entries everywhere), so a raw argmax would
        send most products to the largest basis; after normalisation the argmax asks in
        which basis the product holds the largest share.
    n_iter_, converged_ : iterations run, and False if max_iter was hit first
    customer_ids_, item_ids_ : ids of the rows and columns (0..m-1 / 0..n-1 when fitted
        on a bare matrix)
    basis_scale_ : (k,) row sums of the raw H moved into W by the rescaling
    loss_, init_ : the recorded choices; nmf_ : the fitted scikit-learn model
    """

    def __init__(
        self,
        n_components: int = 5,
        loss: str = "frobenius",
        init: str = "nndsvd",
        random_state: int | None = 0,
        max_iter: int = 200,
        tol: float = 1e-4,
    ):
        self.n_components = n_components
        self.loss = loss
        self.init = init
        self.random_state = random_state
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, V) -> CoSegmentation:
        """Fit on a :class:`PurchaseMatrix` or a sparse customers x products matrix."""
        X, customer_ids, item_ids = _as_sparse(V)
        _check_options(self.n_components, self.loss, self.init, X.shape)
        W, H, model, converged = _fit_nmf(
            X,
            self.n_components,
            self.loss,
            self.init,
            self.random_state,
            self.max_iter,
            self.tol,
        )
        self.nmf_ = model
        self.W_, self.H_, self.basis_scale_ = _rescale(W, H)
        self.reconstruction_err_ = float(model.reconstruction_err_)
        self.rss_ = _sparse_rss(X, W, H)
        self.explained_variance_ = 1.0 - self.rss_ / float(X.data @ X.data)
        self.n_iter_ = int(model.n_iter_)
        self.converged_ = converged
        self.loss_, self.init_ = self.loss, self.init
        self.customer_ids_ = np.arange(X.shape[0]) if customer_ids is None else customer_ids
        self.item_ids_ = np.arange(X.shape[1]) if item_ids is None else item_ids
        self.customer_scores_ = _normalise_rows(self.W_)
        self.product_scores_ = _normalise_rows(self.H_.T)
        self.customer_segments_ = _argmax_or_unassigned(self.W_)
        self.product_segments_ = _argmax_or_unassigned(self.H_.T)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "W_"):
            raise ValueError("CoSegmentation is not fitted; call fit(V) first")

    def transform(self, V) -> np.ndarray:
        """W for NEW customers with H held fixed (same product columns as the fit)."""
        self._check_fitted()
        X, _, item_ids = _as_sparse(V)
        if X.shape[1] != self.H_.shape[1]:
            raise ValueError(
                f"V has {X.shape[1]} product columns but the model was fitted on "
                f"{self.H_.shape[1]}; build it on the fitted item_ids_"
            )
        if item_ids is not None and not np.array_equal(item_ids, self.item_ids_):
            raise ValueError("V's item_ids differ from the fitted item_ids_")
        return self.nmf_.transform(X) * self.basis_scale_

    def predict(self, V) -> np.ndarray:
        """Hard segments (argmax of W, -1 for none) of new customers."""
        return _argmax_or_unassigned(self.transform(V))

    def bundles(self, top_n: int = 10, exclusive: bool = False) -> pd.DataFrame:
        """The top products of each basis, by their share H_[basis, product].

        With ``exclusive=True`` only products whose hard segment is that basis are
        listed (products with the largest weight overall can head several bases).
        Returns a table with columns basis, rank (1 = heaviest), item_id, weight.
        """
        self._check_fitted()
        if top_n < 1:
            raise ValueError(f"top_n must be >= 1; got {top_n}")
        H = self.H_
        if exclusive:
            own = self.product_segments_[None, :] == np.arange(H.shape[0])[:, None]
            H = np.where(own, H, 0.0)
        top_n = min(top_n, H.shape[1])
        order = np.argsort(-H, axis=1, kind="stable")[:, :top_n]
        weights = np.take_along_axis(H, order, axis=1)
        table = pd.DataFrame(
            {
                "basis": np.repeat(np.arange(H.shape[0]), top_n),
                "rank": np.tile(np.arange(1, top_n + 1), H.shape[0]),
                "item_id": self.item_ids_[order.ravel()],
                "weight": weights.ravel(),
            }
        )
        return table[table["weight"] > 0].reset_index(drop=True)

    def customer_order(self) -> np.ndarray:
        """Row order that shows the blocks in a customers x basis heatmap."""
        self._check_fitted()
        return block_order(self.customer_scores_, self.customer_segments_)

    def product_order(self) -> np.ndarray:
        """Column order that shows the blocks in a basis x products heatmap."""
        self._check_fitted()
        return block_order(self.product_scores_, self.product_segments_)


class NMFSegmenter(HardSegmenter):
    """NMF customer segments behind the common segmenter interface, so NMF joins every
    comparison (recovery, held-out edges, the cold-start protocol) as method 'nmf'.

    Every observed edge counts as an interaction (a rating, a click or a purchase),
    whatever its label: NMF segments customers by WHICH items they touch, not by how
    they judged them. Segments are then numbered by like-rate like every other method.
    """

    name = "nmf"

    def __init__(self, n_segments: int = 3, loss: str = "frobenius", init: str = "nndsvd",
                 random_state: int = 0):
        self.n_segments = n_segments
        self.loss = loss
        self.init = init
        self.random_state = random_state

    def fit(self, graph: PreferenceGraph) -> NMFSegmenter:
        interactions = graph.matrix.copy()
        interactions.data = np.ones_like(interactions.data, dtype=float)
        self.cosegmentation_ = CoSegmentation(
            self.n_segments, self.loss, self.init, self.random_state
        ).fit(interactions.tocsr())
        self._finish(graph, self.cosegmentation_.customer_segments_)
        return self


def block_order(scores: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Order entities by hard segment, then by decreasing score on their own segment.

    ``scores`` is (N, k), ``segments`` (N,) with -1 for unassigned (placed last).
    Returns a permutation of 0..N-1 that makes the blocks visible in a heatmap.
    """
    scores = np.asarray(scores, dtype=float)
    segments = np.asarray(segments)
    if scores.ndim != 2 or len(scores) != len(segments):
        raise ValueError(
            f"scores must be (N, k) and segments (N,); got {scores.shape} and {segments.shape}"
        )
    own = np.where(segments >= 0, scores[np.arange(len(scores)), np.clip(segments, 0, None)], 0.0)
    seg_key = np.where(segments >= 0, segments, np.iinfo(np.int64).max)
    return np.lexsort((-own, seg_key))


# --------------------------------------------------------------------------------------
# Choosing the rank
# --------------------------------------------------------------------------------------


@dataclass
class RankSweep:
    """Result of :func:`rank_sweep`.

    table : one row per k with columns k, reconstruction_err (sklearn's loss value of the
        reference fit), rss, explained_variance, best_restart_err (lowest loss over the
        random restarts), n_poor_restarts (left out of the consensus), cophenetic,
        dispersion, silhouette, n_not_converged (of the 1 + n_restarts fits), seconds
    consensus : k -> (s, s) float32 consensus matrix on the sampled customers
    consensus_order : k -> leaf order of its average-linkage dendrogram (for plotting)
    sample : the row indices of V in the consensus sample (all rows when m <= size)
    run_labels : k -> (n_restarts, s) hard segments of the sample in each restart
    run_errors : k -> (n_restarts,) each restart's reconstruction error
    """

    table: pd.DataFrame
    consensus: dict[int, np.ndarray] = field(repr=False)
    consensus_order: dict[int, np.ndarray] = field(repr=False)
    sample: np.ndarray = field(repr=False)
    run_labels: dict[int, np.ndarray] = field(repr=False)
    run_errors: dict[int, np.ndarray] = field(repr=False)

    def choose(
        self,
        rule: str = "plateau_end",
        measure: str = "dispersion",
        tol: float = 0.01,
        k: int | None = None,
    ) -> int:
        """:func:`choose_rank` on this sweep's table."""
        return choose_rank(self.table, rule=rule, measure=measure, tol=tol, k=k)


def consensus_matrix(labels: np.ndarray) -> np.ndarray:
    """Fraction of runs in which two entities share a segment.

    ``labels`` is (n_runs, s) of hard assignments; returns (s, s) float32 (Brunet et al.
    2004's consensus matrix: the mean of the runs' connectivity matrices).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] < 1:
        raise ValueError("labels must be (n_runs, n_entities) with at least one run")
    s = labels.shape[1]
    C = np.zeros((s, s), dtype=np.float64)
    for run in labels:  # a loop over runs (tens), each run vectorised
        codes = np.unique(run, return_inverse=True)[1]
        onehot = np.zeros((s, codes.max() + 1))
        onehot[np.arange(s), codes] = 1.0
        C += onehot @ onehot.T
    return (C / labels.shape[0]).astype(np.float32)


def cophenetic_correlation(consensus: np.ndarray) -> tuple[float, np.ndarray]:
    """Cophenetic correlation of a consensus matrix, and the dendrogram's leaf order.

    As R NMF's ``cophcor``: distances 1 - C, average-linkage hierarchical clustering, and
    the Pearson correlation between those distances and the cophenetic distances of
    the dendrogram. 1 means a perfectly stable (0/1) consensus. NaN when all distances
    are equal (e.g. every restart put everyone in one segment): undefined there.
    """
    C = np.asarray(consensus, dtype=float)
    d = squareform(1.0 - C, checks=False)
    d = np.clip(d, 0.0, None)
    if len(d) == 0:
        return float("nan"), np.arange(len(C))
    Z = linkage(d, method="average")
    order = leaves_list(Z)
    if np.ptp(d) == 0:
        return float("nan"), order
    return float(cophenet(Z, d)[0]), order


def dispersion(consensus: np.ndarray) -> float:
    """Kim & Park (2007) dispersion: mean of 4 (C_ij - 1/2)^2; 1 for a 0/1 consensus."""
    C = np.asarray(consensus, dtype=float)
    return float(np.mean(4.0 * (C - 0.5) ** 2))


def _hard_labels(W: np.ndarray, H: np.ndarray) -> np.ndarray:
    return _argmax_or_unassigned(_rescale(W, H)[0])


def _good_restarts(errors: np.ndarray, rel_tol: float | None) -> np.ndarray:
    """Mask of restarts within rel_tol of the best error, and at least the better half."""
    if rel_tol is None:
        return np.ones(len(errors), dtype=bool)
    if rel_tol < 0:
        raise ValueError(f"poor_restart_tol must be >= 0 or None; got {rel_tol}")
    rank = np.argsort(np.argsort(errors, kind="stable"), kind="stable")
    return (errors <= errors.min() * (1.0 + rel_tol)) | (rank < (len(errors) + 1) // 2)


def rank_sweep(
    V,
    ks: Iterable[int] = range(2, 11),
    n_restarts: int = 10,
    loss: str = "frobenius",
    init: str = "nndsvd",
    random_state: int = 0,
    max_iter: int = 200,
    tol: float = 1e-4,
    consensus_size: int = CONSENSUS_SAMPLE_SIZE,
    poor_restart_tol: float | None = 0.01,
) -> RankSweep:
    """Survey the rank k, in the spirit of R NMF's ``nmfEstimateRank``.

    For every k:
    - one reference fit with ``init`` (the fit :class:`CoSegmentation` would produce):
      its reconstruction error, RSS and explained variance, and the silhouette of the
      sampled customers' ``customer_scores_`` under their hard segments;
    - ``n_restarts`` fits from random initialisations (seeds drawn from
      ``random_state``): the consensus matrix of the sampled customers' hard segments,
      its cophenetic correlation (Brunet et al. 2004) and dispersion (Kim & Park 2007).
      Restarts always use init='random' because the NNDSVD family is deterministic
      ('nndsvdar' only randomises the zeros), so restarts from it would agree trivially.

    Poor local optima are left out of the consensus: a restart whose reconstruction
    error exceeds the best restart's by more than ``poor_restart_tol`` (relative;
    default 1 %) is a failed optimisation, not evidence that the segments are ambiguous,
    yet it would drag the stability of even the true rank down. At least the better half
    of the restarts is always kept, so one lucky restart cannot fake stability;
    ``n_poor_restarts`` in the table counts those left out, and
    ``poor_restart_tol=None`` keeps them all (R NMF's consensus). This is the spirit of
    the outlier filtering of consensus NMF (cNMF, Kotliar et al. 2019, eLife), done on
    the loss rather than on the components. Why it matters: on a 300 x 120 matrix with 4
    planted blocks, sklearn's random-init solver ended about 2 % above the best error (a
    wrong partition: ARI 0.62 against the planted one, 0.99 at the best) in 1 of 5
    restarts at k = 4 for 3 of 4 seeds. In the development check described in
    :func:`choose_rank` the default rule found the planted k in 34/36 clean sweeps
    without the filter and 36/36 with it (22/36 either way on noisier blocks). On
    MovieLens-100K all restarts ended within 0.2 % of the best, so the filter removes
    nothing there.

    The consensus matrix is s x s; for m > ``consensus_size`` customers it is computed
    on a seeded random sample of ``consensus_size`` customers (default 1000: a 4 MB
    matrix and an average linkage in well under a second). The NMF fits themselves
    always use all of V.

    BLAS is held to one thread: many small fits in a loop oversubscribe shared cores
    otherwise (running restarts in joblib threads was slower here, not faster).
    """
    X, _, _ = _as_sparse(V)
    ks = sorted({int(k) for k in ks})
    if not ks:
        raise ValueError("ks is empty: give at least one rank to try")
    if ks[0] < 2:
        raise ValueError(f"ranks must be >= 2 for a consensus to mean anything; got {ks[0]}")
    for k in ks:
        _check_options(k, loss, init, X.shape)
    if n_restarts < 2:
        raise ValueError(f"n_restarts must be >= 2 to measure stability; got {n_restarts}")
    m = X.shape[0]
    # separate streams, so that the restarts do not change with the consensus sample
    sample_seq, restart_seq = np.random.SeedSequence(random_state).spawn(2)
    sample = (
        np.sort(np.random.default_rng(sample_seq).choice(m, consensus_size, replace=False))
        if m > consensus_size
        else np.arange(m)
    )
    seeds = np.random.default_rng(restart_seq).integers(0, 2**31 - 1, (len(ks), n_restarts))
    total_sq = float(X.data @ X.data)

    def restart(k: int, seed: int):
        W, H, model, converged = _fit_nmf(X, k, loss, "random", int(seed), max_iter, tol)
        return _hard_labels(W[sample], H), float(model.reconstruction_err_), converged

    rows, consensus, orders, run_labels, run_errors = [], {}, {}, {}, {}
    # non-convergence is counted in the table (n_not_converged) rather than warned per fit
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for k, k_seeds in zip(ks, seeds, strict=True):
            start = time.perf_counter()
            W, H, model, ref_converged = _fit_nmf(X, k, loss, init, random_state, max_iter, tol)
            runs = [restart(k, s) for s in k_seeds]
            labels = np.stack([r[0] for r in runs])
            errors = np.array([r[1] for r in runs])
            kept = _good_restarts(errors, poor_restart_tol)
            C = consensus_matrix(labels[kept])
            coph, order = cophenetic_correlation(C)
            W_s, H_s, _ = _rescale(W[sample], H)
            ref_labels = _argmax_or_unassigned(W_s)
            n_labels = len(np.unique(ref_labels))
            sil = (
                float(silhouette_score(_normalise_rows(W_s), ref_labels))
                if 2 <= n_labels <= len(sample) - 1
                else float("nan")
            )
            rss = _sparse_rss(X, W, H)
            rows.append(
                {
                    "k": k,
                    "reconstruction_err": float(model.reconstruction_err_),
                    "rss": rss,
                    "explained_variance": 1.0 - rss / total_sq,
                    "best_restart_err": float(errors.min()),
                    "n_poor_restarts": int(n_restarts - kept.sum()),
                    "cophenetic": coph,
                    "dispersion": dispersion(C),
                    "silhouette": sil,
                    "n_not_converged": int(not ref_converged) + sum(not r[2] for r in runs),
                    "seconds": time.perf_counter() - start,
                }
            )
            consensus[k], orders[k] = C, order
            run_labels[k], run_errors[k] = labels, errors
    return RankSweep(pd.DataFrame(rows), consensus, orders, sample, run_labels, run_errors)


def choose_rank(
    sweep_table: pd.DataFrame,
    rule: str = "plateau_end",
    measure: str = "dispersion",
    tol: float = 0.01,
    k: int | None = None,
) -> int:
    """Pick k from a :func:`rank_sweep` table.

    ``measure`` is the stability curve s(k) used: 'dispersion' (default) or
    'cophenetic'; ranks where it is NaN are skipped. Rules, over the ks in increasing
    order:

    - 'plateau_end' (default): the largest k with s(k) >= max s - ``tol``. Brunet et al.
      (2004, PNAS 101:4164) pick the rank where the cophenetic correlation "begins to
      fall"; the R NMF vignette puts it as "the first value of r for which the
      cophenetic coefficient starts decreasing". On a curve that is flat near its top
      and then falls, that is the end of the plateau; reading it with a tolerance keeps
      small wiggles on the plateau (a dip of 0.001 at one k) from stopping it early,
      and prefers more segments only while they are as reproducible as the best rank.
    - 'first_decrease': that rule literally: the first k with s(k) - s(k') > ``tol``
      for the next rank k'.
    - 'largest_drop': the k just before the largest fall s(k) - s(k') between
      consecutive ranks (as, e.g., the `aged` R package's cophenetic_generator marks).
    - 'max': the k with the highest s (smallest such k on ties).

    The drop rules fall back to 'max' when s never falls by more than ``tol``.

    Why dispersion by default: consensus matrices are built from hard segments, and
    when k exceeds the true number of blocks NMF splits one block and its customers
    fall at random on either half. That consensus (about 1/2 inside the block, 0
    outside) is still a perfect hierarchy, so the cophenetic correlation stays at
    about 1 and cannot see the over-split, whereas Kim & Park's dispersion
    (mean 4 (C - 1/2)^2) falls. Development check (rank_sweep defaults, ks 2..7, on
    18 planted 300 x 120 block matrices with 3, 4 or 5 blocks, each swept with a 1000-
    and a 200-customer consensus sample = 36 sweeps): with purchase rates 0.3 inside /
    0.02 outside blocks and 5 restarts, 'plateau_end' found the planted k in 36/36 on
    dispersion and 0/36 on cophenetic, 'largest_drop' in 26/36 and 0/36. With noisier
    blocks (0.15 / 0.03, 10 restarts) every rule degrades: 'plateau_end' 22/36 on
    dispersion and 24/36 on cophenetic, 'largest_drop' 20/36 and 10/36.

    ``k`` overrides the rule (the analyst's choice, e.g. fewer, more digestible
    segments); it must be a rank of the table. Stability is only one input: also weigh
    the error curve and how usable the segments are.
    """
    if measure not in ("dispersion", "cophenetic"):
        raise ValueError(f"measure must be 'dispersion' or 'cophenetic'; got {measure!r}")
    for col in ("k", measure):
        if col not in sweep_table.columns:
            raise ValueError(
                f"sweep_table has no column {col!r} (pass the table of rank_sweep); "
                f"columns are {list(sweep_table.columns)}"
            )
    table = sweep_table.sort_values("k")
    ks = table["k"].to_numpy(dtype=int)
    if k is not None:
        if k not in set(ks.tolist()):
            raise ValueError(f"override k={k} is not a rank of the sweep {ks.tolist()}")
        return int(k)
    if rule not in RANK_RULES:
        raise ValueError(f"rule must be one of {list(RANK_RULES)}; got {rule!r}")
    score = table[measure].to_numpy(dtype=float)
    ok = np.isfinite(score)
    if not ok.any():
        raise ValueError(f"every {measure} value is NaN: no rank can be chosen")
    ks, score = ks[ok], score[ok]
    best = int(ks[np.argmax(score)])
    if rule == "plateau_end":
        return int(ks[score >= score.max() - tol].max())
    if rule == "max" or len(ks) < 2:
        return best
    drops = score[:-1] - score[1:]
    if rule == "largest_drop":
        return int(ks[np.argmax(drops)]) if drops.max() > tol else best
    falling = np.flatnonzero(drops > tol)
    return int(ks[falling[0]]) if len(falling) else best


# --------------------------------------------------------------------------------------
# Figures (matplotlib, Agg; each function returns a Figure and touches no global state)
# --------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # a bare Figure on an Agg canvas: no pyplot, so nothing global is registered or leaked
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _subsample(n: int, max_n: int, random_state: int) -> np.ndarray:
    if n <= max_n:
        return np.arange(n)
    return np.sort(np.random.default_rng(random_state).choice(n, max_n, replace=False))


def _score_heatmap(
    scores: np.ndarray,
    segments: np.ndarray,
    max_n: int,
    random_state: int,
    what: str,
    colorbar_label: str,
    bases_on_rows: bool,
) -> Figure:
    """Heatmap of (``what`` x basis) ``scores`` in block order, a seeded random sample of
    ``max_n`` of them when there are more; the bases run down the rows if
    ``bases_on_rows``, else across the columns."""
    idx = _subsample(len(scores), max_n, random_state)
    idx = idx[block_order(scores[idx], segments[idx])]
    k = scores.shape[1]
    fig = _figure(8, 2 + 0.3 * k) if bases_on_rows else _figure(4 + 0.3 * k, 6)
    ax = fig.add_subplot()
    im = ax.imshow(
        scores[idx].T if bases_on_rows else scores[idx],
        aspect="auto",
        interpolation="nearest",
        cmap="viridis",
        vmin=0,
        vmax=1,
    )
    basis_axis, other_axis = (ax.yaxis, ax.xaxis) if bases_on_rows else (ax.xaxis, ax.yaxis)
    basis_axis.set_label_text("basis")
    other_axis.set_label_text(f"{what}s ({len(idx)} of {len(scores)})")
    basis_axis.set_ticks(range(k))
    other_axis.set_ticks([])
    ax.set_title(f"{what.capitalize()} scores")
    fig.colorbar(im, ax=ax, label=colorbar_label)
    return fig


def plot_customer_heatmap(
    model: CoSegmentation, max_rows: int = 1000, random_state: int = 0
) -> Figure:
    """Customers x basis heatmap of ``customer_scores_``, rows in block order.

    Above ``max_rows`` customers a seeded random sample is drawn.
    """
    model._check_fitted()
    return _score_heatmap(
        model.customer_scores_, model.customer_segments_, max_rows, random_state,
        "customer", "share of fitted purchases", bases_on_rows=False,
    )


def plot_product_heatmap(
    model: CoSegmentation, max_cols: int = 1000, random_state: int = 0
) -> Figure:
    """Basis x products heatmap of ``product_scores_``, columns in block order."""
    model._check_fitted()
    return _score_heatmap(
        model.product_scores_, model.product_segments_, max_cols, random_state,
        "product", "share over bases", bases_on_rows=True,
    )


def plot_rank_selection(sweep_table: pd.DataFrame, chosen_k: int | None = None) -> Figure:
    """Error, explained variance and stability (cophenetic, dispersion, silhouette) vs k."""
    table = sweep_table.sort_values("k")
    fig = _figure(10, 3.5)
    ax_err, ax_ev, ax_stab = fig.subplots(1, 3)
    ax_err.plot(table["k"], table["reconstruction_err"], "o-", label="reference fit")
    if "best_restart_err" in table:
        ax_err.plot(table["k"], table["best_restart_err"], "s--", label="best restart")
    ax_err.set_title("reconstruction error")
    ax_err.legend()
    ax_ev.plot(table["k"], table["explained_variance"], "o-")
    ax_ev.set_title("explained variance")
    for col in ("cophenetic", "dispersion", "silhouette"):
        if col in table:
            ax_stab.plot(table["k"], table[col], "o-", label=col)
    ax_stab.set_title("stability")
    ax_stab.legend()
    for ax in (ax_err, ax_ev, ax_stab):
        ax.set_xlabel("rank k")
        if chosen_k is not None:
            ax.axvline(chosen_k, color="grey", linestyle=":")
    return fig


def plot_consensus(consensus: np.ndarray, order: np.ndarray | None = None) -> Figure:
    """The consensus map: customers x customers, in dendrogram order if given."""
    C = np.asarray(consensus)
    if order is not None:
        C = C[np.ix_(order, order)]
    fig = _figure(6, 5)
    ax = fig.add_subplot()
    im = ax.imshow(C, interpolation="nearest", cmap="magma_r", vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"consensus ({len(C)} customers)")
    fig.colorbar(im, ax=ax, label="share of restarts together")
    return fig
