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
