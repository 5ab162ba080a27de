"""UNICON figures: training curve, K selection, the paper's Figure 2 (distances to the
centres) and Figure 4 (lookalike score densities; F2 and audience size against tau).

Each function returns a bare :class:`matplotlib.figure.Figure`: no pyplot and no
``matplotlib.use``, so importing this module leaves the session's backend alone and a
figure is freed with its last reference.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .lookalike import f_beta_at
from .segments import KResult


def training_curve(history: list, title: str = "Next-item training") -> Figure:
    """Training loss and validation HR/NDCG per epoch (records with those attributes)."""
    epochs = [r.epoch for r in history]
    figure = Figure(figsize=(7, 3.2))
    left = figure.subplots()
    left.plot(epochs, [r.train_loss for r in history], "o-", color="black", label="train loss")
    left.set_xlabel("epoch")
    left.set_ylabel("cross-entropy")
    right = left.twinx()
    right.plot(epochs, [r.validation_hr for r in history], "s--", color="tab:blue",
               label="validation HR@10")
    right.plot(epochs, [r.validation_ndcg for r in history], "^--", color="tab:orange",
               label="validation NDCG@10")
    right.set_ylabel("validation metric")
    lines = left.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="center right")
    left.set_title(title)
    figure.tight_layout()
    return figure


def k_selection(results: dict[int, KResult], chosen: int, length_scale: float | None,
                title: str = "Choice of K") -> Figure:
    ks = sorted(results)
    figure = Figure(figsize=(7, 3.2))
    left = figure.subplots()
    left.plot(ks, [results[k].silhouette for k in ks], "o-", color="black",
              label="silhouette (cosine)")
    left.axvline(chosen, color="tab:green", ls=":", label=f"chosen K={chosen}")
    left.set_xlabel("K")
    left.set_ylabel("silhouette")
    right = left.twinx()
    right.plot(ks, [results[k].mean_distance for k in ks], "s--", color="tab:blue",
               label="mean distance to centre")
    if length_scale is not None and 0 < length_scale <= 2:  # cosine distances are <= 2
        right.axhline(length_scale, color="tab:red", label="similarity length scale")
    right.set_ylabel("cosine distance")
    lines = left.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="best")
    left.set_title(title)
    figure.tight_layout()
    return figure


def centre_distances(result: KResult, length_scale: float | None,
                     title: str = "Distances to the segment centres") -> Figure:
    """The paper's Figure 2: mean and standard deviation of the distance to the centre
    per segment (sorted), with the similarity length scale as a red line."""
    order = np.argsort(result.segment_mean_distance)
    figure = Figure(figsize=(7, 3.2))
    axis = figure.subplots()
    axis.errorbar(np.arange(result.k), result.segment_mean_distance[order],
                  yerr=result.segment_std_distance[order], fmt="o", color="black",
                  ecolor="gray", capsize=2, label="mean +- sd")
    if length_scale is not None and 0 < length_scale <= 2:
        axis.axhline(length_scale, color="tab:red", label="similarity length scale")
    axis.set_xlabel("segment (sorted by mean distance)")
    axis.set_ylabel("cosine distance to centre")
    axis.set_title(f"{title} (K={result.k})")
    axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def lookalike(
    core_scores: np.ndarray,
    noncore_scores: np.ndarray,
    noncore_with_matches: np.ndarray,
    pool_scores: np.ndarray,
    tau: float,
    validation_labels: np.ndarray,
    validation_scores: np.ndarray,
    validation_weights: np.ndarray | None = None,
    title: str = "Lookalike audience",
) -> Figure:
    """The paper's Figure 4. Left: score densities of core and non-core validation
    customers (non-core split by whether they have any rule-matching interaction) and of
    the lookalikes (non-core customers above tau). Right: F2 on the validation split
    (weighted to the population's class balance) and the number of lookalikes among all
    non-core customers (``pool_scores``), against tau."""
    figure = Figure(figsize=(11, 3.6))
    left, right = figure.subplots(1, 2)
    bins = np.linspace(0, 1, 41)
    noncore_scores = np.asarray(noncore_scores)
    pool_scores = np.asarray(pool_scores)
    with_matches = np.asarray(noncore_with_matches, bool)
    for values, label, color in (
        (core_scores, "core (validation)", "tab:red"),
        (noncore_scores[~with_matches], "non-core, no matching event", "tab:gray"),
        (noncore_scores[with_matches], "non-core, >= 1 matching event", "tab:blue"),
        (pool_scores[pool_scores > tau], "lookalikes (non-core > tau)", "tab:green"),
    ):
        if len(values):
            left.hist(values, bins=bins, density=True, histtype="step", lw=1.5,
                      label=f"{label} (n={len(values)})", color=color)
    left.axvline(tau, color="black", ls="--", label=f"tau = {tau:.3f}")
    left.set_xlabel("P(core)")
    left.set_ylabel("density")
    left.legend(fontsize=7)
    grid = np.linspace(0, 1, 101)
    f2 = [f_beta_at(validation_labels, validation_scores > t, 2.0, validation_weights)[2]
          for t in grid]
    count = [(pool_scores > t).sum() for t in grid]
    right.plot(grid, f2, color="black", label="F2 (validation, population-weighted)")
    right.axvline(tau, color="black", ls="--")
    right.set_xlabel("tau")
    right.set_ylabel("F2")
    twin = right.twinx()
    twin.plot(grid, count, color="tab:green", label="lookalikes")
    twin.set_ylabel("number of lookalikes")
    lines = right.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper center")
    figure.suptitle(title)
    figure.tight_layout()
    return figure
