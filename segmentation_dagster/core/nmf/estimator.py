"""The NMF estimators: :class:`CoSegmentation` (customer and product segments from one
NMF of the purchase matrix) and :class:`NMFSegmenter` (its customer segments behind the
common segmenter interface), with the fitting helpers the rank sweep shares.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.decomposition import NMF
from sklearn.utils.validation import check_is_fitted

from ..graph import PreferenceGraph
from ..segmenters import HardSegmenter
from .matrix import _as_sparse

# loss name -> (scikit-learn beta_loss, solver). The coordinate-descent solver only
# handles the Frobenius loss; the KL divergence needs multiplicative updates.
LOSSES = {"frobenius": ("frobenius", "cd"), "kullback-leibler": ("kullback-leibler", "mu")}
INITS = ("nndsvd", "nndsvda", "nndsvdar", "random")

# check_is_fitted's message, worded as before (it raises NotFittedError, a ValueError)
_NOT_FITTED = "%(name)s is not fitted; call fit(V) first"


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


class CoSegmentation(BaseEstimator):
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

    def fit(self, V, y=None) -> CoSegmentation:
        """Fit on a :class:`PurchaseMatrix` or a sparse customers x products matrix.

        ``y`` is ignored (scikit-learn's signature for unsupervised estimators).
        """
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

    def transform(self, V) -> np.ndarray:
        """W for NEW customers with H held fixed (same product columns as the fit)."""
        check_is_fitted(self, msg=_NOT_FITTED)
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
        check_is_fitted(self, msg=_NOT_FITTED)
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
            n_components=self.n_segments,
            loss=self.loss,
            init=self.init,
            random_state=self.random_state,
        ).fit(interactions.tocsr())
        self._finish(graph, self.cosegmentation_.customer_segments_)
        return self
