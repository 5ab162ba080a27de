"""Item-level baselines for held-out edge prediction (issue 12, part 3).

Same interface as :class:`~segmentation_dagster.core.segmenters.HardSegmenter`:
``fit(graph)``, then ``labels_``, ``n_segments_``, ``segment_sizes_`` and
``predict_proba(rows, cols)`` for edges of the fitted customers.

- :class:`ItemPopularity`: the pooled item model, no segments (the population model at
  the item level);
- :class:`LatentClassItems`: the standard latent class model for binary item data
  (as poLCA / StepMix fit it), by MAP-EM over the edges with per-class item rates;
- :class:`CustomerItemLogit`: a personalised customer + item effects logit, a ceiling
  for what a segmentation can reach, not a segmentation.

All sparse: sums over a customer's edges are CSR products; no customers x items array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logsumexp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .clustering import check_n_segments
from .graph import LIKE, PreferenceGraph
from .pooled import EPS, ItemBernoulli, edge_log_likelihood
from .segment_models import split_validation_edges


def _check_edges(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> tuple:
    rows, cols = np.asarray(rows), np.asarray(cols)
    if rows.shape != cols.shape:
        raise ValueError(f"rows and cols differ in shape: {rows.shape} and {cols.shape}")
    for name, values, size in (("rows", rows, n_rows), ("cols", cols, n_cols)):
        if values.dtype.kind not in "iu":
            raise ValueError(f"{name} must be integer positions, got dtype {values.dtype}")
        if len(values) and (values.min() < 0 or values.max() >= size):
            raise ValueError(f"{name} must lie in [0, {size}); got [{values.min()}, "
                             f"{values.max()}]")
    return rows, cols


def _finish_unsegmented(model: BaseEstimator, graph: PreferenceGraph) -> None:
    """One segment holding every customer (personalised or pooled models)."""
    model.labels_ = np.zeros(graph.n_customers, dtype=int)
    model.n_segments_ = 1
    model.segment_sizes_ = np.array([graph.n_customers])
    model.segment_alpha_ = np.array([float((graph.matrix.data == LIKE).mean())])


class ItemPopularity(BaseEstimator):
    """The pooled item model, no segments: P(like | i, j) = alpha_j for everyone, with
    alpha_j = (likes_j + s alpha_pool) / (d_j + s) (s = ``prior_strength``, as
    :class:`~segmentation_dagster.core.pooled.ItemBernoulli`). ``labels_`` is all zeros."""

    name = "item_popularity"

    def __init__(self, prior_strength: float = 2.0):
        self.prior_strength = prior_strength

    def fit(self, graph: PreferenceGraph) -> ItemPopularity:
        self.pooled_ = ItemBernoulli(self.prior_strength).fit(graph)
        self.item_proba_ = self.pooled_.item_proba_
        self.n_customers_ = graph.n_customers
        _finish_unsegmented(self, graph)
        return self

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "item_proba_")
        _, cols = _check_edges(rows, cols, self.n_customers_, len(self.item_proba_))
        return self.item_proba_[cols]


class LatentClassItems(BaseEstimator):
    """Item-level latent class model: sum_k q_k prod_{j in N(i)} alpha_kj^[x=+1]
    (1 - alpha_kj)^[x=-1], fitted by MAP-EM over the edges.

    Priors: alpha_kj ~ Beta(s alpha_j + 1, s (1 - alpha_j) + 1) centred on the pooled
    item rate alpha_j (s = ``prior_strength``), so an item a class barely saw keeps about
    the pooled rate; the M-step is alpha_kj = (likes_kj + s alpha_j) / (edges_kj + s).
    q ~ Dirichlet(``weight_prior``). ``n_restarts`` random starts (random soft
    responsibilities), the one with the highest log posterior kept.

    Each E-step is two CSR products (likes and dislikes, m x n) with the K x n log
    rates, and each M-step two products with the m x K responsibilities: O(edges x K)
    per iteration. ``labels_`` is the MAP class, numbered by increasing overall
    like-rate; ``predict_proba(rows, cols)`` = sum_k gamma_ik alpha_kj.
    """

    name = "latent_class_items"

    def __init__(
        self,
        n_segments: int = 3,
        n_restarts: int = 10,
        max_iter: int = 300,
        tol: float = 1e-7,
        prior_strength: float = 2.0,
        weight_prior: float = 1.5,
        random_state: int = 0,
    ):
        self.n_segments = n_segments
        self.n_restarts = n_restarts
        self.max_iter = max_iter
        self.tol = tol
        self.prior_strength = prior_strength
        self.weight_prior = weight_prior
        self.random_state = random_state

    def fit(self, graph: PreferenceGraph) -> LatentClassItems:
        k = self.n_segments
        check_n_segments(k, np.arange(graph.n_customers), "customers")
        if self.n_restarts < 1:
            raise ValueError(f"n_restarts must be >= 1, got {self.n_restarts}")
        if self.prior_strength <= 0:
            raise ValueError(f"prior_strength must be > 0, got {self.prior_strength}")
        if self.weight_prior < 1:
            raise ValueError(f"weight_prior must be >= 1, got {self.weight_prior}")
        m = graph.n_customers
        csr = graph.matrix
        # copies: eliminate_zeros works in place and must not touch the graph's arrays
        likes, dislikes = csr.astype(float), csr.astype(float)
        likes.data = (csr.data == LIKE).astype(float)
        dislikes.data = (csr.data != LIKE).astype(float)
        likes.eliminate_zeros()
        dislikes.eliminate_zeros()
        edges_t = (likes + dislikes).T.tocsr()
        likes_t = likes.T.tocsr()
        pooled = ItemBernoulli(2.0).fit(graph).item_proba_
        s, c = self.prior_strength, self.weight_prior
        prior_like, prior_all = s * pooled, s
        rng = np.random.default_rng(self.random_state)
        best = None
        restart_scores = []
        for _ in range(self.n_restarts):
            gamma = rng.dirichlet(np.ones(k), size=m)
            previous, converged, iteration = -np.inf, False, 0
            while iteration < self.max_iter:
                iteration += 1
                # M-step: per-class item counts weighted by the responsibilities
                alpha = ((likes_t @ gamma).T + prior_like) / ((edges_t @ gamma).T + prior_all)
                alpha = np.clip(alpha, EPS, 1 - EPS)
                weights = (gamma.sum(axis=0) + c - 1) / (m + k * (c - 1))
                # E-step
                log_joint = (np.log(weights)[None, :] + likes @ np.log(alpha).T
                             + dislikes @ np.log1p(-alpha).T)
                log_norm = logsumexp(log_joint, axis=1, keepdims=True)
                gamma = np.exp(log_joint - log_norm)
                log_post = float(
                    log_norm.sum()
                    + (prior_like * np.log(alpha) + (s - prior_like) * np.log1p(-alpha)).sum()
                    + (c - 1) * np.log(weights).sum()
                )
                if abs(log_post - previous) <= self.tol * abs(log_post):
                    converged = True
                    break
                previous = log_post
            restart_scores.append(log_post)
            if best is None or log_post > best[0]:
                best = (log_post, alpha, weights, gamma, iteration, converged)
        log_post, alpha, weights, gamma, iteration, converged = best
        # number the classes by increasing overall like-rate, as the hard segmenters do
        degrees = graph.customer_degrees().astype(float)
        class_rate = ((gamma.T @ graph.customer_likes())
                      / np.maximum(gamma.T @ degrees, EPS))
        order = np.argsort(class_rate, kind="stable")
        self.alpha_ = alpha[order]
        self.weights_ = weights[order]
        self.responsibilities_ = gamma[:, order]
        self.segment_alpha_ = class_rate[order]
        self.log_posterior_ = log_post
        self.restart_log_posteriors_ = np.array(restart_scores)
        self.n_iter_ = iteration
        self.converged_ = converged
        self.labels_ = self.responsibilities_.argmax(axis=1)
        self.n_segments_ = k
        self.segment_sizes_ = np.bincount(self.labels_, minlength=k)
        return self

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """sum_k gamma_ik alpha_kj for edges (customer row, item column)."""
        check_is_fitted(self, "alpha_")
        rows, cols = _check_edges(rows, cols, len(self.labels_), self.alpha_.shape[1])
        return np.einsum("ek,ke->e", self.responsibilities_[rows], self.alpha_[:, cols])


class CustomerItemLogit(BaseEstimator):
    """Personalised reference: logit P(like | i, j) = b + u_i + v_j with the L2 penalty
    ``l2`` / 2 (|u|^2 + |v|^2) (b unpenalised), fitted by L-BFGS over the edges (the
    gradient is two ``np.bincount`` over edges). A ceiling, not a segmentation:
    ``labels_`` is all zeros.

    ``l2='auto'`` picks the penalty from ``l2_grid`` by the log-likelihood of a
    ``validation_fraction`` of each customer's training edges, then refits on all of them.
    """

    name = "customer_item_logit"

    def __init__(
        self,
        l2: float | str = "auto",
        l2_grid: Sequence[float] = (0.3, 1.0, 3.0, 10.0),
        max_iter: int = 500,
        validation_fraction: float = 0.1,
        random_state: int = 0,
    ):
        self.l2 = l2
        self.l2_grid = l2_grid
        self.max_iter = max_iter
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, graph: PreferenceGraph) -> CustomerItemLogit:
        if graph.n_edges == 0:
            raise ValueError("the graph has no edges")
        if self.l2 == "auto":
            if not self.l2_grid or min(self.l2_grid) <= 0:
                raise ValueError(f"l2_grid must hold positive values, got {self.l2_grid}")
            train, (rows, cols, y) = split_validation_edges(
                graph, self.validation_fraction, self.random_state
            )
            scores = {}
            for l2 in self.l2_grid:
                theta = self._solve(train, float(l2))
                p = expit(self._eta(theta, graph.n_customers, rows, cols))
                scores[float(l2)] = float(edge_log_likelihood(p, y).mean()) if len(y) else 0.0
            # ties go to the stronger penalty
            self.l2_ = max(scores, key=lambda v: (scores[v], v))
            self.validation_scores_ = scores
        else:
            if not float(self.l2) > 0:
                raise ValueError(f"l2 must be > 0 or 'auto', got {self.l2!r}")
            self.l2_ = float(self.l2)
        theta = self._solve(graph, self.l2_)
        m = graph.n_customers
        self.intercept_ = float(theta[0])
        self.customer_effects_ = theta[1:1 + m]
        self.item_effects_ = theta[1 + m:]
        _finish_unsegmented(self, graph)
        return self

    @staticmethod
    def _eta(theta: np.ndarray, m: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return theta[0] + theta[1 + rows] + theta[1 + m + cols]

    def _solve(self, graph: PreferenceGraph, l2: float) -> np.ndarray:
        rows, cols, labels = graph.edges()
        sign = np.where(labels == LIKE, 1.0, -1.0)
        m, n = graph.n_customers, graph.n_items
        rate = float(np.clip((labels == LIKE).mean(), EPS, 1 - EPS))
        theta0 = np.zeros(1 + m + n)
        theta0[0] = np.log(rate / (1 - rate))

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            margin = sign * self._eta(theta, m, rows, cols)
            effects = theta[1:]
            loss = np.logaddexp(0.0, -margin).sum() + 0.5 * l2 * (effects**2).sum()
            residual = -sign * expit(-margin)
            grad = np.empty_like(theta)
            grad[0] = residual.sum()
            grad[1:1 + m] = np.bincount(rows, weights=residual, minlength=m)
            grad[1 + m:] = np.bincount(cols, weights=residual, minlength=n)
            grad[1:] += l2 * effects
            return float(loss), grad

        result = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter})
        return result.x

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "item_effects_")
        rows, cols = _check_edges(rows, cols, len(self.customer_effects_),
                                  len(self.item_effects_))
        eta = self.intercept_ + self.customer_effects_[rows] + self.item_effects_[cols]
        return np.clip(expit(eta), EPS, 1 - EPS)


__all__ = ["CustomerItemLogit", "ItemPopularity", "LatentClassItems"]
