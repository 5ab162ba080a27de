"""Raw inputs: the source's interactions, items and customers, as DuckDB tables."""

import dagster as dg
import pandas as pd

from segmentation_dagster.resources import DataSource, DuckDBStore

from .common import markdown_table

RAW_TABLE_DESCRIPTIONS = {
    "raw_interactions": "Every observation: customer_id, item_id, value, event, timestamp.",
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
def raw_tables(source: DataSource, duckdb: DuckDBStore):
    """Load the configured source once and write its four tables.

    A missing file, a missing column, a non-numeric value or an empty file fails here,
    naming the file and column, before any table is replaced.
    """
    tables = source.load()
    frames = {
        "raw_interactions": tables.interactions,
        "raw_items": tables.items,
        "raw_customers": tables.customers,
        "ground_truth_segments": tables.truth,
    }
    for name, frame in frames.items():
        duckdb.write_table(name, frame)
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
