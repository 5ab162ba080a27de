"""Figures as matplotlib objects.

Each function returns a bare :class:`matplotlib.figure.Figure`: no pyplot and no
``matplotlib.use``, so importing this module leaves the session's backend alone (a
notebook keeps its own), nothing needs a screen, and a figure is freed with its last
reference instead of staying in pyplot's list of open figures.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .clustering import kde_modes


def embedding_density(
    embedding: np.ndarray, labels: np.ndarray | None = None, title: str = "Customer embeddings"
) -> Figure:
    """The KDE of a 1-D embedding, its modes, and the boundaries between segments
    (the paper's Figure 1)."""
    x = np.asarray(embedding, dtype=float).ravel()
    modes, grid, density = kde_modes(x)
    figure = Figure(figsize=(7, 3.2))
    axis = figure.subplots()
    axis.plot(grid, density, color="black", lw=1.5, label="density")
    axis.plot(modes, np.interp(modes, grid, density), "v", color="tab:red", label="modes")
    if labels is not None:
        segments = np.unique(labels)
        # segment numbers follow like-rates, which may run against the embedding axis
        by_position = sorted(segments, key=lambda k: x[labels == k].mean())
        for left, right in zip(by_position[:-1], by_position[1:], strict=True):
            boundary = (x[labels == left].max() + x[labels == right].min()) / 2
            axis.axvline(boundary, color="tab:blue", ls="--", lw=1)
        for k in segments:
            centre = x[labels == k].mean()
            axis.annotate(f"seg {k}", (centre, 0), xytext=(0, 4), textcoords="offset points",
                          ha="center", fontsize=8, color="tab:blue")
    axis.set_xlabel("embedding (normalised negative log-likelihood)")
    axis.set_ylabel("density")
    axis.set_title(title)
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    return figure


def bar_chart(labels: list[str], values: list[float], title: str, ylabel: str) -> Figure:
    figure = Figure(figsize=(7, 3.2))
    axis = figure.subplots()
    axis.bar(labels, values, color="tab:blue")
    axis.set_title(title)
    axis.set_ylabel(ylabel)
    axis.tick_params(axis="x", rotation=30)
    figure.tight_layout()
    return figure


def selection_chart(table, title: str = "Choice of the segmentation") -> Figure:
    """Every candidate's validation score with one standard error (of its paired
    difference with the best) as an error bar, the chosen one marked: the picture behind
    the one-standard-error rule. ``table`` is a selection table with columns candidate,
    score, se, chosen, eligible (e.g. ``SegmentationSelector.table_``)."""
    scored = table[np.isfinite(table["score"].to_numpy(dtype=float))].reset_index(drop=True)
    figure = Figure(figsize=(8, 0.9 + 0.28 * max(len(scored), 3)))
    axis = figure.subplots()
    y = np.arange(len(scored))[::-1]
    colours = ["tab:red" if chosen else ("tab:blue" if eligible else "tab:gray")
               for chosen, eligible in zip(scored["chosen"], scored["eligible"], strict=True)]
    axis.errorbar(scored["score"], y, xerr=scored["se"].fillna(0), fmt="none",
                  ecolor="lightgray", capsize=3)
    axis.scatter(scored["score"], y, c=colours, zorder=3)
    best = scored["score"].max()
    axis.axvline(best, color="black", lw=0.8, ls=":")
    axis.set_yticks(y, scored["candidate"], fontsize=7)
    axis.set_xlabel("validation log-likelihood per customer (higher is better); "
                    "red: chosen, gray: not eligible")
    axis.set_title(title)
    figure.tight_layout()
    return figure
