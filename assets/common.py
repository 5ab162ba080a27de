"""What the asset modules share: graphs from DuckDB, figures and tables as metadata."""

import base64
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from segmentation_dagster.core.choice import SegmentedPurchaseModel
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.selection import SegmentedModelEmbedding
from segmentation_dagster.resources import DuckDBStore


@dataclass(frozen=True)
class SplitGraphs:
    """The train graph, and validation / test edges indexed like it."""

    train: PreferenceGraph
    validation: tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, cols, labels
    test: tuple[np.ndarray, np.ndarray, np.ndarray]
    dataset: str


def source_info(store: DuckDBStore, column: str) -> str:
    """The source's ``dataset`` name or ``label_rule``, written by the ingest asset."""
    return str(store.query(f"SELECT {column} FROM source_info").iloc[0, 0])


def chosen_k(store: DuckDBStore, table: str = "k_selection") -> int:
    """The K (or NMF rank) marked chosen in a selection table."""
    return int(store.query(f"SELECT k FROM {table} WHERE chosen").iloc[0, 0])


def load_split_graphs(store: DuckDBStore, fit_splits: tuple[str, ...] = ("train",)) -> SplitGraphs:
    """The graph of the ``fit_splits`` edges (every customer has a train edge, so all are
    rows), with validation and test edges indexed like it: the in-memory customers of
    ``edge_sample`` (every customer unless there are more than in_memory_customers)."""
    edges = store.query("SELECT customer_id, item_id, label, split FROM edge_sample")
    categories = store.query(
        "SELECT DISTINCT e.item_id, coalesce(CAST(i.category AS VARCHAR), 'unknown') AS category "
        "FROM edge_sample e LEFT JOIN raw_items i USING (item_id)"
    ).set_index("item_id")["category"]
    dataset = source_info(store, "dataset")
    customers = np.sort(edges["customer_id"].unique())
    items = np.sort(edges["item_id"].unique())
    train = PreferenceGraph.from_edges(
        edges[edges["split"].isin(fit_splits)],
        item_categories=categories,
        customer_ids=customers,
        item_ids=items,
    )
    customer_index, item_index = pd.Index(customers), pd.Index(items)

    def held_out(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        part = edges[edges["split"] == name]
        return (
            customer_index.get_indexer(part["customer_id"]),
            item_index.get_indexer(part["item_id"]),
            part["label"].to_numpy(),
        )

    return SplitGraphs(train, held_out("validation"), held_out("test"), dataset)


def segments_in_engine(store: DuckDBStore) -> bool:
    """Whether this run computes the pooled model, embeddings and segments of every
    customer in the engine (edge_sample decided it: more customers than fit in memory,
    the Spark engine, or method_settings.segments_in_engine)."""
    return bool(store.query("SELECT in_engine FROM edge_sample_info").iloc[0, 0])


def chosen_spec(store: DuckDBStore) -> dict:
    """The segmentation k_selection chose: pooled, normalisation, category_rank (None for
    the scalar embedding), k, segment_model, strength, min_share."""
    spec = store.read_table("chosen_segmentation").iloc[0].to_dict()
    spec["category_rank"] = None if pd.isna(spec["category_rank"]) else int(spec["category_rank"])
    spec["k"] = int(spec["k"])
    spec["in_engine"] = bool(spec.get("in_engine", False))
    return spec


def embedding_options(spec: dict) -> dict:
    """The chosen spec as SegmentedModelEmbedding keyword arguments (all but K)."""
    return {name: spec[name] for name in ("pooled", "normalisation", "category_rank",
                                          "segment_model", "strength", "min_share")}


def is_purchase_log(store: DuckDBStore) -> bool:
    """Whether the source is a purchase-only log (label rule ``purchase``: every value the
    same positive number). Its pooled model is the MNL choice model (core.choice), its
    methods are scored by ranking held-out purchases."""
    return source_info(store, "label_rule") == "purchase"


def chosen_method(
    store: DuckDBStore, train: PreferenceGraph, random_state: int
) -> SegmentedModelEmbedding | SegmentedPurchaseModel:
    """The segmentation k_selection chose, as an unfitted end-to-end estimator: the
    purchase-only model for a purchase log, else the model embedding with its item-level
    segment models."""
    spec = chosen_spec(store)
    if is_purchase_log(store):
        options = {name: spec[name] for name in ("pooled", "normalisation", "category_rank",
                                                 "strength", "min_share")}
        return SegmentedPurchaseModel(spec["k"], **options, random_state=random_state)
    return SegmentedModelEmbedding(
        spec["k"], **embedding_options(spec), random_state=random_state,
        item_features=usable_item_features(store, train.item_ids),
    )


def usable_item_features(store: DuckDBStore, item_ids: np.ndarray) -> np.ndarray | None:
    """The source's item features, or None when its items carry none (then no
    feature-based pooled model is tried)."""
    # the column types and one count first: a log of millions of items without an items
    # file has nothing to read here
    columns = store.query("SELECT * FROM raw_items LIMIT 0")
    numeric = columns.drop(columns=["item_id", "category"], errors="ignore").select_dtypes(
        "number")
    has_category = "category" in columns and bool(
        store.query("SELECT count(category) FROM raw_items").iloc[0, 0])
    if numeric.shape[1] == 0 and not has_category:
        return None
    features = item_features(store, item_ids)
    return features if features.shape[1] else None


def item_features(store: DuckDBStore, item_ids: np.ndarray) -> np.ndarray:
    """Numeric item columns (standardised, missing as the mean) and a one-hot category,
    in the order of ``item_ids``."""
    items = store.read_table("raw_items").drop_duplicates("item_id").set_index("item_id")
    items = items.reindex(item_ids)
    numeric = items.drop(columns=["category"], errors="ignore").select_dtypes("number")
    numeric = numeric.astype(float)
    numeric = (numeric - numeric.mean()) / numeric.std(ddof=0).replace(0, 1)
    parts = [numeric.fillna(0.0)]
    if "category" in items and items["category"].notna().any():
        parts.append(pd.get_dummies(items["category"].astype("string"), dtype=float))
    # (n_items, 0) when the source has no item file: callers add learned columns
    return pd.concat(parts, axis=1).to_numpy(dtype=float).reshape(len(items), -1)


def figure_metadata(figure: Figure, name: str, folder: Path) -> tuple[dg.MetadataValue, Path]:
    """Save a figure as ``<folder>/<name>.png``; return it as inline markdown and its path.

    ``folder`` exists already: the assets pass ``state_folder.folder("figures")``.
    """
    path = folder / f"{name}.png"
    buffer = io.BytesIO()
    # the core's figures are bare matplotlib Figures, never registered with pyplot, so
    # there is nothing to close: the figure is freed with its last reference
    figure.savefig(buffer, format="png", dpi=90)
    path.write_bytes(buffer.getvalue())
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{name}](data:image/png;base64,{encoded})"), path


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def markdown_table(frame: pd.DataFrame, max_rows: int = 20) -> dg.MetadataValue:
    return dg.MetadataValue.md(frame.head(max_rows).to_markdown(index=False))


# Dagster's asset page shows markdown metadata inline only below this length; longer
# markdown hides behind a "[Show Markdown]" link (dagster-ui MetadataEntry.tsx, 1.13)
INLINE_MARKDOWN_CHARS = 1000
TABLE_TYPES = {"b": "bool", "i": "int", "u": "int", "f": "float"}


def _cell(value):
    """A JSON-ready cell: floats to 4 significant digits (the UI shows them as written)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not np.isfinite(value) else float(f"{float(value):.4g}")
    return None if value is None or (np.ndim(value) == 0 and pd.isna(value)) else str(value)


def table_metadata(frame: pd.DataFrame, max_rows: int = 50) -> dg.MetadataValue:
    """A narrow frame as Dagster table metadata (shown inline as a table, with a schema)."""
    frame = frame.head(max_rows)
    schema = dg.TableSchema(columns=[
        dg.TableColumn(str(name), TABLE_TYPES.get(frame[name].dtype.kind, "string"))
        for name in frame.columns])
    records = [dg.TableRecord(json.loads(json.dumps({str(k): _cell(v) for k, v in row.items()})))
               for row in frame.to_dict("records")]
    return dg.MetadataValue.table(records, schema=schema)


def svg_metadata(svg: str, title: str) -> dg.MetadataValue:
    """A small SVG as inline markdown (a data URI), short enough that the asset page
    shows it without a click; the caller keeps it under INLINE_MARKDOWN_CHARS."""
    uri = "data:image/svg+xml," + quote(svg, safe=" ,.=:/;'()-")
    return dg.MetadataValue.md(f"![{title}](<{uri}>)")


def _svg(width: int, height: int, body: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
            f"font-family='sans-serif' font-size='10'>{body}</svg>")


def inline_chart(
    title: str, labels: list[str], values: list[float], errors: list[float] | None = None,
    marked: int | None = None, bars: bool = False,
) -> dg.MetadataValue:
    """A compact chart of ``values`` (points with error bars, or bars), the ``marked``
    one in red, as inline markdown; labels and the title are dropped, in that order, if
    the markdown would otherwise be too long to show inline."""
    values = np.asarray(values, dtype=float)
    errors = np.zeros_like(values) if errors is None else np.nan_to_num(
        np.asarray(errors, dtype=float))
    finite = np.isfinite(values)
    low = float(np.min((values - errors)[finite])) if finite.any() else 0.0
    high = float(np.max((values + errors)[finite])) if finite.any() else 1.0
    if bars:
        low = min(low, 0.0)
    span = high - low or 1.0
    n = max(len(values), 1)
    width, height, left, top, plot = 360, 150, 44, 16, 100
    step = (width - left - 8) / n

    def y(v: float) -> int:
        return round(top + plot * (high - v) / span)

    def x(i: int) -> int:
        return round(left + step * (i + 0.5))

    for with_labels, with_title in ((True, True), (False, True), (False, False)):
        parts = [f"<text x='2' y='{top + 4}'>{high:.3g}</text>",
                 f"<text x='2' y='{top + plot}'>{low:.3g}</text>",
                 f"<path d='M{left} {top}V{top + plot}H{width - 4}' stroke='gray' fill='none'/>"]
        if with_title:
            parts.append(f"<text x='{left}' y='11'>{title}</text>")
        for i, v in enumerate(values):
            if not np.isfinite(v):
                continue
            colour = "red" if i == marked else "steelblue"
            if bars:
                parts.append(f"<rect x='{x(i) - step * 0.35:.0f}' y='{y(v)}' "
                             f"width='{step * 0.7:.0f}' height='{y(low) - y(v)}' "
                             f"fill='{colour}'/>")
            else:
                if errors[i] > 0:
                    parts.append(f"<path d='M{x(i)} {y(v - errors[i])}V{y(v + errors[i])}' "
                                 f"stroke='{colour}'/>")
                parts.append(f"<circle cx='{x(i)}' cy='{y(v)}' r='3' fill='{colour}'/>")
            if with_labels:
                parts.append(f"<text x='{x(i)}' y='{top + plot + 12}' text-anchor='middle'>"
                             f"{labels[i]}</text>")
        value = svg_metadata(_svg(width, height, "".join(parts)), title)
        if len(value.value) < INLINE_MARKDOWN_CHARS:
            return value
    return dg.MetadataValue.md(f"({len(values)} values: too many to draw inline; "
                               "see the full figure)")


def inline_density(values: np.ndarray, labels: np.ndarray | None, title: str,
                   bins: int = 40) -> dg.MetadataValue:
    """The histogram of a 1-D embedding as an inline polyline, with the boundaries between
    consecutive segments (of ``labels``, ordered by embedding) as red lines."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    counts, edges = np.histogram(values[finite], bins=bins)
    width, height, left, top, plot = 360, 130, 8, 16, 100
    lo, hi = float(edges[0]), float(edges[-1])
    span = hi - lo or 1.0

    def x(v: float) -> int:
        return round(left + (width - 2 * left) * (v - lo) / span)

    peak = counts.max() or 1
    centres = (edges[:-1] + edges[1:]) / 2
    points = " ".join(f"{x(c)},{round(top + plot * (1 - n / peak))}"
                      for c, n in zip(centres, counts, strict=True))
    parts = [f"<text x='{left}' y='11'>{title}</text>",
             f"<polyline points='{points}' fill='none' stroke='steelblue'/>",
             f"<path d='M{left} {top + plot}H{width - left}' stroke='gray'/>"]
    if labels is not None:
        labels = np.asarray(labels)[finite]
        kept = values[finite]
        order = sorted(np.unique(labels), key=lambda s: np.median(kept[labels == s]))
        for a, b in zip(order, order[1:], strict=False):
            cut = (kept[labels == a].max() + kept[labels == b].min()) / 2
            parts.append(f"<path d='M{x(cut)} {top}V{top + plot}' stroke='red'/>")
    return svg_metadata(_svg(width, height, "".join(parts)), title)


def embed_local_images(markdown: str) -> str:
    """``markdown`` with every image linked by a local PNG path embedded as a data URI: a
    browser asks the web server for a local path, which it cannot serve."""
    import re

    def embed(match: re.Match) -> str:
        path = Path(match.group(2))
        if path.suffix.lower() != ".png" or not path.is_file():
            return match.group(0)
        encoded = base64.b64encode(path.read_bytes()).decode()
        return f"![{match.group(1)}](data:image/png;base64,{encoded})"

    return re.sub(r"!\[([^\]]*)\]\((/[^)\s]+)\)", embed, markdown)
