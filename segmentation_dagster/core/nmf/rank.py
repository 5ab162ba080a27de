"""Choosing the rank k: a sweep of reference fits and random restarts per k (error,
explained variance, consensus stability), and the rules that read a k off its table.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.cluster.hierarchy import cophenet, leaves_list, linkage
from scipy.spatial.distance import squareform
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from .estimator import (
    _argmax_or_unassigned,
    _check_options,
    _fit_nmf,
    _normalise_rows,
    _rescale,
    _sparse_rss,
)
from .matrix import _as_sparse

RANK_RULES = ("plateau_end", "first_decrease", "largest_drop", "max")

# Consensus matrices are sample x sample; above this many customers a seeded random
# sample of this size is used (1000 x 1000 float32 = 4 MB per rank).
CONSENSUS_SAMPLE_SIZE = 1000


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
