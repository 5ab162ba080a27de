"""The preference graph and its train / validation / test split, built in SQL by the
engine (DuckDB, or Spark: the ``engine`` resource)."""

import dagster as dg

from segmentation_dagster.engine import SQLEngine
from segmentation_dagster.resources import DuckDBStore
from segmentation_dagster.settings import MethodSettings, RandomSeed

from .common import markdown_table, source_info


@dg.asset(
    # every raw table: a failing blocking check on any of them must stop the graph
    deps=["raw_interactions", "raw_items", "raw_customers"],
    group_name="graph",
    kinds={"sql"},
)
def preference_edges(duckdb: DuckDBStore, engine: SQLEngine) -> dg.MaterializeResult:
    """The customer x item preference graph as labelled edges (dbt_like_sql/preference_edges.sql).

    One edge per (customer, item), the latest observation winning; like (+1) / dislike (-1)
    by the source's label rule.
    """
    rule = source_info(duckdb, "label_rule")
    rows = engine.run_model("preference_edges", {"label_rule": rule})
    stats = engine.query(
        "SELECT count(DISTINCT customer_id) AS customers, count(DISTINCT item_id) AS items, "
        "avg(CASE WHEN label = 1 THEN CAST(1 AS DOUBLE) ELSE CAST(0 AS DOUBLE) END) "
        "AS like_rate FROM preference_edges"
    ).iloc[0]
    density = rows / (stats["customers"] * stats["items"])
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "customers": int(stats["customers"]),
            "items": int(stats["items"]),
            "like_rate": float(stats["like_rate"]),
            "density": float(density),
            "label_rule": rule,
            "engine": engine.name,
        }
    )


@dg.asset(
    deps=[preference_edges],
    group_name="graph",
    kinds={"sql"},
)
def edge_split(
    engine: SQLEngine, method_settings: MethodSettings, random_seed: RandomSeed
) -> dg.MaterializeResult:
    """Seeded train / validation / test split of the edges (dbt_like_sql/edge_split.sql).

    Every customer keeps at least one training edge.
    """
    rows = engine.run_model(
        "edge_split",
        {
            "seed": random_seed.value,
            "test_percent": method_settings.test_percent,
            "validation_percent": method_settings.validation_percent,
        },
    )
    counts = engine.query(
        "SELECT split, count(*) AS edges, count(DISTINCT customer_id) AS customers "
        "FROM edge_split GROUP BY split ORDER BY split"
    )
    by_split = dict(zip(counts["split"], counts["edges"], strict=True))
    missing = [name for name in ("validation", "test") if not by_split.get(name)]
    if missing:
        raise ValueError(
            f"no {' or '.join(missing)} edges: no customer has enough interactions to hold "
            "any out (each customer's first edge always stays in training, so a customer "
            f"needs at least 2). The data have {by_split.get('train', 0)} training edges; "
            "supply more interactions per customer, or raise test_percent / "
            "validation_percent in method_settings."
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            **{f"{name}_edges": int(n) for name, n in by_split.items()},
            "splits": markdown_table(counts),
        }
    )
