"""Baseline segmentation methods, behind the same interface as the embedding method."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import SpectralClustering
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from .clustering import check_n_segments
from .graph import PreferenceGraph, category_counts
from .segmenters import NOT_FITTED, HardSegmenter


class PopulationModel(HardSegmenter):
    """Everyone in one segment; predicts alpha_pool for every edge."""

    name = "population"

    def fit(self, graph: PreferenceGraph) -> PopulationModel:
        self._finish(graph, np.zeros(graph.n_customers, dtype=int))
        return self


@dataclass(frozen=True)
class _LatentClassFit:
    """The best restart of :func:`_latent_class_em`, classes by increasing like-rate."""

    alpha: np.ndarray  # (K, B)
    weights: np.ndarray  # (K,)
    responsibilities: np.ndarray  # (u, K), one row per count row
    log_posterior: float
    restart_log_posteriors: np.ndarray  # (restarts,)
    n_iter: int
    converged: bool


def _latent_class_em(
    likes: np.ndarray,
    dislikes: np.ndarray,
    row_weights: np.ndarray,
    n_segments: int,
    n_restarts: int,
    max_iter: int,
    tol: float,
    alpha_prior: tuple[float, float],
    weight_prior: float,
    random_state: int,
) -> _LatentClassFit:
    """MAP-EM for sum_k q_k prod_b alpha_kb^likes_b (1 - alpha_kb)^dislikes_b.

    ``likes`` and ``dislikes`` are (u, B) count tables (B item categories; B = 1 for the
    plain latent class model) and ``row_weights`` (u,) says how many customers share each
    row. Beta(a, b) prior on every alpha_kb, Dirichlet(c) on q. All restarts run at once
    as one (restarts, rows, K) array; the restart with the highest log posterior is kept,
    its classes ordered by their overall like-rate (alpha weighted by each category's
    edge count), as the hard segmenters number theirs.
    """
    likes = np.asarray(likes, dtype=float)
    dislikes = np.asarray(dislikes, dtype=float)
    weight = np.asarray(row_weights, dtype=float)
    edges = likes + dislikes
    k, r = n_segments, n_restarts
    a, b = alpha_prior
    c = weight_prior
    rng = np.random.default_rng(random_state)
    alpha = rng.uniform(0.05, 0.95, size=(r, k, likes.shape[1]))
    weights = rng.dirichlet(np.ones(k), size=r)  # (r, k)
    previous = np.full(r, -np.inf)
    iteration = 0
    converged = False
    while iteration < max_iter:
        iteration += 1
        log_joint = (
            np.log(weights)[:, None, :]
            + np.einsum("ib,rkb->rik", likes, np.log(alpha))
            + np.einsum("ib,rkb->rik", dislikes, np.log1p(-alpha))
        )
        log_norm = logsumexp(log_joint, axis=2, keepdims=True)
        gamma = np.exp(log_joint - log_norm)
        log_post = (
            (weight[None, :, None] * log_norm).sum(axis=(1, 2))
            + ((a - 1) * np.log(alpha) + (b - 1) * np.log1p(-alpha)).sum(axis=(1, 2))
            + ((c - 1) * np.log(weights)).sum(axis=1)
        )
        if np.all(np.abs(log_post - previous) <= tol * np.abs(log_post)):
            converged = True
            break
        previous = log_post
        wgamma = weight[None, :, None] * gamma
        alpha = (np.einsum("rik,ib->rkb", wgamma, likes) + a - 1) / (
            np.einsum("rik,ib->rkb", wgamma, edges) + a + b - 2
        )
        alpha = np.clip(alpha, 1e-9, 1 - 1e-9)
        weights = (wgamma.sum(axis=1) + c - 1) / (weight.sum() + k * (c - 1))
    best = int(np.argmax(log_post))
    category_edges = (weight[:, None] * edges).sum(axis=0)
    order = np.argsort((alpha[best] * category_edges).sum(axis=1) / category_edges.sum())
    return _LatentClassFit(
        alpha=alpha[best][order],
        weights=weights[best][order],
        responsibilities=gamma[best][:, order],
        log_posterior=float(log_post[best]),
        restart_log_posteriors=log_post,
        n_iter=iteration,
        converged=converged,
    )


class _LatentClassModel(ClusterMixin, BaseEstimator):
    """Parameters and fitting shared by :class:`LatentClassEM` (one like-rate per class)
    and :class:`CategoryLatentClassEM` (one per class and item category)."""

    name = "latent_class"

    def __init__(
        self,
        n_segments: int = 3,
        n_restarts: int = 10,
        max_iter: int = 1000,
        tol: float = 1e-7,
        alpha_prior: tuple[float, float] = (2.0, 2.0),
        weight_prior: float = 1.5,
        random_state: int = 0,
    ):
        self.n_segments = n_segments
        self.n_restarts = n_restarts
        self.max_iter = max_iter
        self.tol = tol
        self.alpha_prior = alpha_prior
        self.weight_prior = weight_prior
        self.random_state = random_state

    def _fit_counts(self, likes: np.ndarray, dislikes: np.ndarray) -> None:
        """EM on (m, B) like and dislike counts per customer; sets the fitted attributes."""
        k = self.n_segments
        check_n_segments(k, np.arange(len(likes)), "customers")
        if self.n_restarts < 1:
            raise ValueError(f"n_restarts must be >= 1, got {self.n_restarts}")
        # Customers with the same counts have the same posterior, so EM runs on the
        # distinct count rows weighted by how many customers share them: the same MAP-EM,
        # only cheaper (with B = 1 at most ~n^2/2 pairs, far fewer than customers).
        rows, inverse, count = np.unique(
            np.hstack([likes, dislikes]), axis=0, return_inverse=True, return_counts=True
        )
        b = likes.shape[1]
        fit = _latent_class_em(
            rows[:, :b], rows[:, b:], count, k, self.n_restarts, self.max_iter, self.tol,
            self.alpha_prior, self.weight_prior, self.random_state,
        )
        self.n_iter_ = fit.n_iter
        self.converged_ = fit.converged
        self.log_posterior_ = fit.log_posterior
        self.restart_log_posteriors_ = fit.restart_log_posteriors
        self.alpha_ = fit.alpha
        self.weights_ = fit.weights
        self.responsibilities_ = fit.responsibilities[inverse.reshape(-1)]
        self.labels_ = self.responsibilities_.argmax(axis=1)
        self.n_segments_ = k
        self.segment_sizes_ = np.bincount(self.labels_, minlength=k)


class LatentClassEM(_LatentClassModel, HardSegmenter):
    """Latent class mixture sum_k q_k prod_j alpha_k^[x=+1] (1-alpha_k)^[x=-1] (Appendix C.1).

    MAP-EM with a Beta(2,2) prior on every alpha_k and a Dirichlet(1.5) prior on q, with
    ``n_restarts`` random starts; the start with the highest log posterior is kept.
    Customers go to their maximum-posterior class; predictions use sum_k gamma_ik alpha_k.

    Written by hand, not with StepMix: StepMix needs a dense customers x items table
    (see docs/libraries.md), while under this model each customer's likelihood depends
    only on their like and dislike counts, so EM runs on two counts per customer. All
    restarts run at once as one (restarts, distinct count pairs, K) array.
    """

    def fit(self, graph: PreferenceGraph) -> LatentClassEM:
        likes = graph.customer_likes().astype(np.int64)
        dislikes = graph.customer_degrees() - likes
        self._fit_counts(likes[:, None], dislikes[:, None])
        self.alpha_ = self.alpha_[:, 0]
        self.segment_alpha_ = self.alpha_
        return self

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        check_is_fitted(self, "alpha_", msg=NOT_FITTED)
        return self.responsibilities_[np.asarray(rows)] @ self.alpha_


class CategoryLatentClassEM(_LatentClassModel):
    """Latent class model with one like-probability per (class, item category):
    sum_k q_k prod_b alpha_kb^likes_ib (1 - alpha_kb)^dislikes_ib. The LC benchmark of
    Appendix D.3; with one category it is :class:`LatentClassEM` (same priors, restarts,
    initial draws and EM).

    Written by hand for the reason LatentClassEM gives: EM needs only each customer's
    like/dislike counts per category, an (m, B) table.
    """

    def fit(self, graph: PreferenceGraph) -> CategoryLatentClassEM:
        likes, degrees, self.categories_ = category_counts(graph)
        self._fit_counts(likes, degrees - likes)
        return self

    def predict_proba(self, rows: np.ndarray, categories: np.ndarray) -> np.ndarray:
        """sum_k gamma_ik alpha_kb for edges (customer row, category index)."""
        check_is_fitted(self, "alpha_", msg=NOT_FITTED)
        rows, categories = np.asarray(rows), np.asarray(categories)
        return np.einsum("ek,ke->e", self.responsibilities_[rows], self.alpha_[:, categories])


class EmpiricalBayes(HardSegmenter):
    """Beta-binomial empirical Bayes (Appendix D.1): a Beta(a, b) prior on each customer's
    like-probability, fitted by the method of moments; predictions are posterior means
    (a + likes_i) / (a + b + d_i). Personalised, not segmented: ``labels_`` is all zeros.

    The moments are those of the beta-binomial, weighting customers by degree, which is
    the textbook estimator for unequal d_i; no maintained Python package does this (R's
    ebbr is the reference), so it is a few lines here.
    """

    name = "empirical_bayes"

    def fit(self, graph: PreferenceGraph) -> EmpiricalBayes:
        likes = graph.customer_likes()
        degrees = graph.customer_degrees().astype(float)
        seen = degrees > 0
        rate = likes[seen] / degrees[seen]
        mean = np.average(rate, weights=degrees[seen])
        variance = np.average((rate - mean) ** 2, weights=degrees[seen])
        # Var(rate_i) = mu(1-mu)/d_i + (1 - 1/d_i) tau^2 with tau^2 = mu(1-mu)/(a+b+1)
        binomial = mean * (1 - mean) * np.average(1 / degrees[seen], weights=degrees[seen])
        between = max(variance - binomial, 1e-6) / max(
            1 - np.average(1 / degrees[seen], weights=degrees[seen]), 1e-6
        )
        strength = max(mean * (1 - mean) / between - 1, 1e-3)
        self.prior_a_, self.prior_b_ = mean * strength, (1 - mean) * strength
        self.posterior_mean_ = (self.prior_a_ + likes) / (strength + degrees)
        self._finish(graph, np.zeros(graph.n_customers, dtype=int))
        return self

    def predict_proba(self, rows: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
        check_is_fitted(self, "posterior_mean_", msg=NOT_FITTED)
        return self.posterior_mean_[np.asarray(rows)]


class DemographicSegmenter(HardSegmenter):
    """Segments are the groups of given customer attributes (e.g. age band x gender).

    ``attributes`` is a DataFrame indexed by customer id; customers missing from it, or
    with a missing value, form their own 'unknown' group.
    """

    name = "demographic"

    def __init__(self, attributes: pd.DataFrame, columns: list[str] | None = None):
        self.attributes = attributes
        self.columns = columns

    def fit(self, graph: PreferenceGraph) -> DemographicSegmenter:
        columns = self.columns or list(self.attributes.columns)
        missing = [c for c in columns if c not in self.attributes.columns]
        if missing:
            raise ValueError(f"customer attributes have no column {missing}")
        table = self.attributes[columns].reindex(graph.customer_ids).astype("string")
        key = table.fillna("unknown").agg("|".join, axis=1)
        codes, self.groups_ = pd.factorize(key, sort=True)
        self._finish(graph, codes)
        self.segment_names_ = _names_in_order(self.groups_, codes, self.labels_)
        return self


def _names_in_order(groups: pd.Index, codes: np.ndarray, labels: np.ndarray) -> list[str]:
    names = [""] * (labels.max() + 1)
    for code, label in zip(codes, labels, strict=True):
        names[label] = str(groups[code])
    return names


def cosine_similarity_matrix(graph: PreferenceGraph, max_customers: int = 20000) -> np.ndarray:
    """Cosine similarity of the customers' +1/-1 vectors (0 where unrated), Appendix C.2.

    It is m x m and dense by nature, so it is refused beyond ``max_customers``.
    """
    if graph.n_customers > max_customers:
        raise ValueError(
            f"cosine similarity of {graph.n_customers} customers needs an m x m matrix; "
            f"the limit is {max_customers}"
        )
    x = normalize(graph.matrix.astype(float), norm="l2", axis=1)
    return np.asarray((x @ x.T).toarray() if sp.issparse(x) else x @ x.T)


class KMedoidsCosine(HardSegmenter):
    """k-medoids on the cosine distance of the +1/-1 vectors (Appendix C.2).

    Alternating (Voronoi) k-medoids with k-medoids++ seeding and ``n_init`` restarts,
    keeping the lowest total distance. Written by hand: k-medoids is not in
    scikit-learn, scikit-learn-extra has no wheels for Python >= 3.10, and the
    maintained ``kmedoids`` package is GPL-3.0.
    """

    name = "kmedoids"

    def __init__(self, n_segments: int = 3, n_init: int = 5, max_iter: int = 100,
                 random_state: int = 0):
        self.n_segments = n_segments
        self.n_init = n_init
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, graph: PreferenceGraph) -> KMedoidsCosine:
        check_n_segments(self.n_segments, np.arange(graph.n_customers), "customers")
        distance = 1.0 - cosine_similarity_matrix(graph)
        rng = np.random.default_rng(self.random_state)
        best_cost, best_labels = np.inf, None
        for _ in range(self.n_init):
            medoids = _kmedoids_plus_plus(distance, self.n_segments, rng)
            for _ in range(self.max_iter):
                labels = distance[:, medoids].argmin(axis=1)
                new = medoids.copy()
                for k in range(self.n_segments):
                    members = np.flatnonzero(labels == k)
                    if len(members):
                        within = distance[np.ix_(members, members)].sum(axis=1)
                        new[k] = members[within.argmin()]
                if np.array_equal(new, medoids):
                    break
                medoids = new
            labels = distance[:, medoids].argmin(axis=1)
            cost = distance[np.arange(len(labels)), medoids[labels]].sum()
            if cost < best_cost:
                best_cost, best_labels = cost, labels
        self.inertia_ = float(best_cost)
        self._finish(graph, best_labels)
        return self


def _kmedoids_plus_plus(distance: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    medoids = [int(rng.integers(len(distance)))]
    for _ in range(1, k):
        nearest = distance[:, medoids].min(axis=1) ** 2
        total = nearest.sum()
        p = nearest / total if total > 0 else None
        medoids.append(int(rng.choice(len(distance), p=p)))
    return np.array(medoids)


class SpectralCosine(HardSegmenter):
    """Spectral clustering on the cosine similarity of the +1/-1 vectors (Appendix C.2).

    Negative similarities are clipped to 0, since affinities must be non-negative.
    """

    name = "spectral"

    def __init__(self, n_segments: int = 3, random_state: int = 0):
        self.n_segments = n_segments
        self.random_state = random_state

    def fit(self, graph: PreferenceGraph) -> SpectralCosine:
        check_n_segments(self.n_segments, np.arange(graph.n_customers), "customers")
        affinity = np.clip(cosine_similarity_matrix(graph), 0.0, None)
        model = SpectralClustering(
            self.n_segments, affinity="precomputed", random_state=self.random_state
        )
        self._finish(graph, model.fit_predict(affinity))
        return self
