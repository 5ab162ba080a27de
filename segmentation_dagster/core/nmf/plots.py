"""Figures of an NMF co-segmentation: score heatmaps in block order, the rank-selection
curves and the consensus map.

Each function returns a bare :class:`matplotlib.figure.Figure`: no pyplot and no
``matplotlib.use``, so nothing global (backend, list of open figures) is touched and the
caller's figure is freed with its last reference. matplotlib is imported on the first
figure, so importing the NMF package stays cheap for code that never plots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from .estimator import _NOT_FITTED, CoSegmentation

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    # a bare Figure: no pyplot, so nothing global is registered or leaked; savefig
    # renders it with the backend for the file format, whatever the session's backend
    return Figure(figsize=(width, height), layout="constrained")


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
    check_is_fitted(model, msg=_NOT_FITTED)
    return _score_heatmap(
        model.customer_scores_, model.customer_segments_, max_rows, random_state,
        "customer", "share of fitted purchases", bases_on_rows=False,
    )


def plot_product_heatmap(
    model: CoSegmentation, max_cols: int = 1000, random_state: int = 0
) -> Figure:
    """Basis x products heatmap of ``product_scores_``, columns in block order."""
    check_is_fitted(model, msg=_NOT_FITTED)
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
