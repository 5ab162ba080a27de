"""Segment profiles: what sets each segment apart from the pooled model.

For every segment: its size, share, like-rate and activity (edges per customer); the
categories and items it likes much more or less than the pooled model predicts; and its
demographic mix when customers have attributes.

The comparison is a lift, observed / expected, on one scale for both kinds of log:

- rated logs (+1/-1): observed = the segment's likes on the item (or category),
  expected = the pooled model's like-probabilities summed over the same edges. Support
  = the segment's number of edges there.
- purchase-only logs (every label +1, :func:`~.choice.is_purchase_only`): observed = the
  segment's purchases of the item, expected = N_k pi_j, its purchases times the pooled
  choice probability (categories: N_k P(b)). Support = max(observed, expected), so an
  item the segment never bought still counts as "bought less" when the pooled model
  expected enough purchases of it.

The reported ``lift`` is shrunk toward 1, (observed + s) / (expected + s) with
``shrinkage`` s pseudo-events, and only cells with support >= ``min_support`` are
ranked: an item bought once by one customer of the segment cannot top the list.
Aggregation is by bincount and sparse keys; loops run over segments only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .choice import is_purchase_only
from .graph import LIKE, PreferenceGraph
from .pooled import ItemBernoulli


@dataclass(frozen=True)
class SegmentProfiles:
    """Tidy profile tables (one row per segment x thing).

    summary : segment, n_customers, share, n_edges, activity, like_rate
        (like_rate is NaN for purchase-only logs)
    categories : every (segment, category) cell, or None without item categories:
        segment, category, n_edges, share, pooled_share, observed, expected, raw_lift,
        lift, support, supported; sorted by segment, then lift descending
    items : per segment the ``top_n`` items with the highest supported lift > 1
        (direction 'more') and the ``top_n`` with the lowest < 1 ('less'): segment,
        direction, rank (1 = strongest), item_id, category, support, observed, expected,
        raw_lift, lift
    demographics : segment, attribute, value, n_customers, share, pooled_share, lift,
        or None without attributes; shares sum to 1 per (segment, attribute)
    purchase_only : whether the lifts compare purchase shares (True) or like-rates
    """

    summary: pd.DataFrame
    categories: pd.DataFrame | None
    items: pd.DataFrame
    demographics: pd.DataFrame | None
    purchase_only: bool

    def tables(self) -> dict[str, pd.DataFrame]:
        """The tables that exist, by name (for logging as artefacts)."""
        names = ("summary", "categories", "items", "demographics")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


def segment_profiles(
    graph: PreferenceGraph,
    labels: np.ndarray,
    pooled_item_proba: np.ndarray | None = None,
    customer_attributes: pd.DataFrame | None = None,
    min_support: float = 5.0,
    shrinkage: float = 5.0,
    top_n: int = 5,
    max_levels: int = 10,
) -> SegmentProfiles:
    """Profile every segment of ``labels`` (one per customer row of ``graph``).

    ``pooled_item_proba`` (length n_items): the pooled model's prediction per item, a
    like-probability for rated logs or the choice probability pi_j for purchase-only
    logs. Default: each item's like-rate shrunk toward the global one
    (:class:`~.pooled.ItemBernoulli`), or each item's share of purchases.
    ``customer_attributes``: a DataFrame indexed by customer id (graph.customer_ids);
    customers missing from it count as 'missing'. Numeric columns with more than
    ``max_levels`` distinct values are cut into quartiles.
    """
    labels = np.asarray(labels)
    if labels.shape != (graph.n_customers,):
        raise ValueError(
            f"labels must hold one segment per customer ({graph.n_customers}); got shape "
            f"{labels.shape}"
        )
    if pd.isna(labels).any():
        raise ValueError("labels contain missing values")
    if min_support < 0 or shrinkage < 0:
        raise ValueError(
            f"min_support and shrinkage must be >= 0; got {min_support} and {shrinkage}"
        )
    if int(top_n) != top_n or top_n < 1:
        raise ValueError(f"top_n must be a positive integer, got {top_n!r}")
    segments, codes = np.unique(labels, return_inverse=True)
    codes = codes.reshape(-1)
    n_seg, n_items = len(segments), graph.n_items
    rows, cols, edge_labels = graph.edges()
    purchase_only = is_purchase_only(edge_labels)
    proba = _pooled_proba(graph, pooled_item_proba, purchase_only)

    edge_seg = codes[rows]
    liked = (edge_labels == LIKE).astype(float)
    degrees = graph.customer_degrees()
    n_customers = np.bincount(codes, minlength=n_seg)
    n_edges = np.bincount(edge_seg, minlength=n_seg).astype(float)
    likes = np.bincount(edge_seg, weights=liked, minlength=n_seg)
    with np.errstate(invalid="ignore", divide="ignore"):
        summary = pd.DataFrame(
            {
                "segment": segments,
                "n_customers": n_customers,
                "share": n_customers / graph.n_customers,
                "n_edges": n_edges.astype(np.int64),
                "activity": n_edges / n_customers,
                "like_rate": np.nan if purchase_only else likes / n_edges,
                "edges_per_customer_median": pd.Series(degrees)
                .groupby(codes)
                .median()
                .reindex(range(n_seg))
                .to_numpy(),
            }
        )

    # per (segment, item) cell: edges, likes, expected likes under the pooled model
    key = edge_seg.astype(np.int64) * n_items + cols
    cell, inverse = np.unique(key, return_inverse=True)
    cell_edges = np.bincount(inverse).astype(float)
    cell_likes = np.bincount(inverse, weights=liked)
    cell_seg, cell_item = cell // n_items, cell % n_items
    if purchase_only:
        observed = cell_edges
        expected = n_edges[cell_seg] * proba[cell_item]
    else:
        observed = cell_likes
        expected = cell_edges * proba[cell_item]
    cells = pd.DataFrame(
        {
            "seg": cell_seg,
            "item": cell_item,
            "n_edges": cell_edges,
            "observed": observed,
            "expected": expected,
        }
    )
    if purchase_only:
        cells = pd.concat([cells, _unbought_cells(cell, n_edges, proba, min_support)])
    items = _ranked_items(cells, graph, segments, purchase_only, min_support, shrinkage, top_n)

    categories = None
    if graph.item_categories is not None:
        categories = _category_table(
            graph, cells, segments, n_edges, proba, purchase_only, min_support, shrinkage
        )
    demographics = None
    if customer_attributes is not None:
        demographics = _demographics(graph, customer_attributes, codes, segments, max_levels)
    return SegmentProfiles(summary, categories, items, demographics, purchase_only)


def _pooled_proba(graph: PreferenceGraph, given, purchase_only: bool) -> np.ndarray:
    if given is not None:
        proba = np.asarray(given, dtype=float)
        if proba.shape != (graph.n_items,):
            raise ValueError(
                f"pooled_item_proba must have one value per item ({graph.n_items}); got "
                f"shape {proba.shape}"
            )
        if not np.isfinite(proba).all() or (proba < 0).any():
            raise ValueError("pooled_item_proba must be finite and >= 0")
        return proba
    if purchase_only:
        counts = graph.item_degrees().astype(float)
        return counts / counts.sum()
    return ItemBernoulli().fit(graph).item_proba_


def _shrunk_lift(observed, expected, shrinkage: float):
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = np.where(expected > 0, observed / expected, np.nan)
        shrunk = (observed + shrinkage) / (expected + shrinkage)
    return raw, np.where(expected + shrinkage > 0, shrunk, np.nan)


def _unbought_cells(
    bought_cells: np.ndarray, n_edges: np.ndarray, proba: np.ndarray, min_support: float
) -> pd.DataFrame:
    """Purchase-only: (segment, item) cells never bought but expected >= min_support
    times, so "bought less than expected" can include "never bought". At most
    N_k / min_support items per segment qualify (pi sums to 1)."""
    n_items = len(proba)
    frames = []
    floor = max(min_support, 1e-12)
    for k, total in enumerate(n_edges):
        candidates = np.flatnonzero(total * proba >= floor)
        keys = k * n_items + candidates
        at = np.minimum(np.searchsorted(bought_cells, keys), max(len(bought_cells) - 1, 0))
        new = candidates[bought_cells[at] != keys] if len(bought_cells) else candidates
        frames.append(
            pd.DataFrame(
                {
                    "seg": k,
                    "item": new,
                    "n_edges": 0.0,
                    "observed": 0.0,
                    "expected": total * proba[new],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _ranked_items(cells, graph, segments, purchase_only, min_support, shrinkage, top_n):
    raw, lift = _shrunk_lift(cells["observed"].to_numpy(), cells["expected"].to_numpy(), shrinkage)
    support = (
        np.maximum(cells["observed"], cells["expected"]) if purchase_only else cells["n_edges"]
    )
    table = cells.assign(raw_lift=raw, lift=lift, support=support.to_numpy())
    table = table[table["support"] >= min_support]
    parts = []
    for direction, mask, ascending in (
        ("more", table["lift"] > 1, False),
        ("less", table["lift"] < 1, True),
    ):
        chosen = (
            table[mask]
            # ties broken by support, then item order, so the output is reproducible
            .assign(neg_support=lambda t: -t["support"])
            .sort_values(
                ["seg", "lift", "neg_support", "item"], ascending=[True, ascending] + [True] * 2
            )
            .groupby("seg", sort=True)
            .head(top_n)
        )
        chosen = chosen.assign(
            direction=direction, rank=chosen.groupby("seg").cumcount().to_numpy() + 1
        )
        parts.append(chosen)
    out = pd.concat(parts, ignore_index=True).sort_values(
        ["seg", "direction", "rank"], ascending=[True, False, True]
    )
    item = out["item"].to_numpy(dtype=np.int64)
    result = pd.DataFrame(
        {
            "segment": segments[out["seg"].to_numpy(dtype=np.int64)],
            "direction": out["direction"].to_numpy(),
            "rank": out["rank"].to_numpy(),
            "item_id": graph.item_ids[item],
            "category": (
                graph.item_categories[item] if graph.item_categories is not None else None
            ),
            "support": out["support"].to_numpy(),
            "observed": out["observed"].to_numpy(),
            "expected": out["expected"].to_numpy(),
            "raw_lift": out["raw_lift"].to_numpy(),
            "lift": out["lift"].to_numpy(),
        }
    )
    return result.reset_index(drop=True)


def _category_table(graph, cells, segments, n_edges, proba, purchase_only, min_support, s):
    categories, item_code = np.unique(graph.item_categories, return_inverse=True)
    b, n_seg = len(categories), len(segments)
    flat = cells["seg"].to_numpy(dtype=np.int64) * b + item_code[cells["item"].to_numpy()]
    size = n_seg * b
    edges = np.bincount(flat, weights=cells["n_edges"], minlength=size)
    observed = np.bincount(flat, weights=cells["observed"], minlength=size)
    if purchase_only:
        category_proba = np.bincount(item_code, weights=proba, minlength=b)
        category_proba = category_proba / max(category_proba.sum(), 1e-300)
        expected = (n_edges[:, None] * category_proba[None, :]).reshape(-1)
        support = np.maximum(observed, expected)
    else:
        expected = np.bincount(flat, weights=cells["expected"], minlength=size)
        support = edges
    raw, lift = _shrunk_lift(observed, expected, s)
    pooled_share = np.bincount(item_code[graph.matrix.indices], minlength=b) / graph.n_edges
    with np.errstate(invalid="ignore", divide="ignore"):
        share = (edges.reshape(n_seg, b) / n_edges[:, None]).reshape(-1)
    table = pd.DataFrame(
        {
            "segment": np.repeat(segments, b),
            "category": np.tile(categories, n_seg),
            "n_edges": edges.astype(np.int64),
            "share": share,
            "pooled_share": np.tile(pooled_share, n_seg),
            "observed": observed,
            "expected": expected,
            "raw_lift": raw,
            "lift": lift,
            "support": support,
            "supported": support >= min_support,
        }
    )
    order = np.lexsort((-np.nan_to_num(lift, nan=-np.inf), np.repeat(np.arange(n_seg), b)))
    return table.iloc[order].reset_index(drop=True)


def _demographics(graph, attributes, codes, segments, max_levels):
    if not isinstance(attributes, pd.DataFrame) or attributes.shape[1] == 0:
        raise ValueError("customer_attributes must be a DataFrame with at least one column")
    if attributes.index.has_duplicates:
        raise ValueError("customer_attributes has duplicate customer ids in its index")
    aligned = attributes.reindex(pd.Index(graph.customer_ids))
    if aligned.isna().all(axis=None) and len(attributes):
        raise ValueError(
            "no customer id of the graph is in the index of customer_attributes; index "
            "it by customer id"
        )
    frames = []
    n_seg = len(segments)
    for column in aligned.columns:
        values = aligned[column]
        if pd.api.types.is_numeric_dtype(values) and values.nunique() > max_levels:
            values = pd.qcut(values, 4, duplicates="drop").astype(str).where(values.notna())
        values = values.astype(object).where(values.notna(), "missing").astype(str)
        level_codes, levels = pd.factorize(values, sort=True)
        n_levels = len(levels)
        counts = np.bincount(codes * n_levels + level_codes, minlength=n_seg * n_levels)
        counts = counts.reshape(n_seg, n_levels)
        share = counts / counts.sum(axis=1, keepdims=True)
        pooled = counts.sum(axis=0) / counts.sum()
        frames.append(
            pd.DataFrame(
                {
                    "segment": np.repeat(segments, n_levels),
                    "attribute": column,
                    "value": np.tile(np.asarray(levels), n_seg),
                    "n_customers": counts.reshape(-1),
                    "share": share.reshape(-1),
                    "pooled_share": np.tile(pooled, n_seg),
                    "lift": (share / pooled[None, :]).reshape(-1),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def profile_headline(profiles: SegmentProfiles, n: int = 2, min_lift: float = 1.2) -> str:
    """One line per segment, e.g.
    ``segment 2 (31%): likes Horror x1.8, Sci-Fi x1.5; dislikes Romance x0.6``.

    Uses the supported category lifts (items when there are no categories): up to ``n``
    with lift >= ``min_lift`` and up to ``n`` with lift <= 1 / ``min_lift``. Purchase-only
    logs say "buys more" / "buys less" instead of "likes" / "dislikes".
    """
    more_word, less_word = (
        ("buys more", "buys less")
        if profiles.purchase_only
        else (
            "likes",
            "dislikes",
        )
    )
    if profiles.categories is not None:
        table = profiles.categories[profiles.categories["supported"]]
        name, cells = "category", table
    else:
        name, cells = "item_id", profiles.items
    lines = []
    for row in profiles.summary.itertuples(index=False):
        mine = cells[cells["segment"] == row.segment]
        more = mine[mine["lift"] >= min_lift].sort_values("lift", ascending=False).head(n)
        less = mine[mine["lift"] <= 1 / min_lift].sort_values("lift").head(n)
        parts = []
        for word, chosen in ((more_word, more), (less_word, less)):
            if len(chosen):
                listed = ", ".join(
                    f"{value} x{lift:.1f}"
                    for value, lift in zip(chosen[name], chosen["lift"], strict=True)
                )
                parts.append(f"{word} {listed}")
        text = "; ".join(parts) if parts else "close to the pooled model"
        lines.append(f"segment {row.segment} ({row.share:.0%}): {text}")
    return "\n".join(lines)


def profiles_markdown(profiles: SegmentProfiles, max_rows: int = 50) -> str:
    """The headline and the summary, category and item tables as markdown (for the
    asset metadata); no tabulate dependency."""
    sections = ["### Segments", "", profile_headline(profiles).replace("\n", "  \n"), ""]
    for name, table in profiles.tables().items():
        sections += [f"#### {name}", "", _markdown_table(table.head(max_rows)), ""]
    return "\n".join(sections)


def _markdown_table(table: pd.DataFrame) -> str:
    def cell(value) -> str:
        if isinstance(value, float | np.floating):
            return f"{value:.3g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join([header, rule, *body])
