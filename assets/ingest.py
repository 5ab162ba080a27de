"""Raw inputs: the source's interactions, items and customers, as DuckDB tables."""

import dagster as dg
import numpy as np
import pandas as pd

from segmentation_dagster.engine import SQLEngine
from segmentation_dagster.resources import DataSource, DuckDBStore

from .common import markdown_table

RAW_TABLE_DESCRIPTIONS = {
    "raw_interactions": "Every observation: customer_id, item_id, value, event, timestamp, "
                        "and file_order (the row's place in the source).",
    "raw_items": "Items with an optional category and numeric features.",
    "raw_customers": "Customers with their demographic attributes, where the source has them.",
    "ground_truth_segments": "Planted segments of the synthetic source (empty for real data).",
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(name, description=text, group_name="ingest", kinds={"python", "duckdb"})
        for name, text in RAW_TABLE_DESCRIPTIONS.items()
    ],
    can_subset=False,
)
def raw_tables(source: DataSource, duckdb: DuckDBStore, engine: SQLEngine):
    """Load the configured source once and write its four tables.

    A missing file, a missing column, a non-numeric value or an empty file fails here,
    naming the file and column, before any table is replaced. raw_interactions gets a
    ``file_order`` column (the row's place in the source, 0..n-1), the order SQL keeps
    between equal timestamps (no engine but DuckDB has a rowid). On an engine other than
    DuckDB the interactions and items are also written there, for the SQL models.
    """
    tables = source.load()
    frames = {
        "raw_interactions": with_file_order(tables.interactions),
        "raw_items": tables.items,
        "raw_customers": tables.customers,
        "ground_truth_segments": tables.truth,
    }
    for name, frame in frames.items():
        duckdb.write_table(name, frame)
    if engine.name != "duckdb":  # the SQL models read them where they run
        for name in ENGINE_TABLES:
            engine.write_table(name, frames[name])
    duckdb.write_table(
        "source_info",
        pd.DataFrame({"dataset": [tables.dataset], "label_rule": [tables.label_rule]}),
    )
    for name, frame in frames.items():
        yield dg.MaterializeResult(
            asset_key=name,
            metadata={
                "dagster/row_count": len(frame),
                "dataset": tables.dataset,
                "label_rule": tables.label_rule,
                "columns": ", ".join(map(str, frame.columns)),
                "preview": markdown_table(frame, 10),
            },
        )


# the raw tables the SQL models read, copied to an engine other than DuckDB
ENGINE_TABLES = ("raw_interactions", "raw_items")


def with_file_order(interactions: pd.DataFrame) -> pd.DataFrame:
    """The interactions with ``file_order`` (BIGINT 0..n-1, their order in the source)."""
    return interactions.assign(file_order=np.arange(len(interactions), dtype=np.int64))
