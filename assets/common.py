"""What the asset modules share: graphs from DuckDB, figures and tables as metadata."""

import base64
import io
import time
from dataclasses import dataclass
from pathlib import Path

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
    rows), with validation and test edges indexed like it."""
    edges = store.query("SELECT customer_id, item_id, label, split FROM edge_split")
    categories = store.query(
        "SELECT DISTINCT e.item_id, coalesce(CAST(i.category AS VARCHAR), 'unknown') AS category "
        "FROM edge_split e LEFT JOIN raw_items i USING (item_id)"
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


def chosen_spec(store: DuckDBStore) -> dict:
    """The segmentation k_selection chose: pooled, normalisation, category_rank (None for
    the scalar embedding), k, segment_model, strength, min_share."""
    spec = store.read_table("chosen_segmentation").iloc[0].to_dict()
    spec["category_rank"] = None if pd.isna(spec["category_rank"]) else int(spec["category_rank"])
    spec["k"] = int(spec["k"])
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
