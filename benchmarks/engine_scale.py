"""The edge-scale work on the engines: a generated log through the pipeline, 50M edges
out of core on DuckDB, and DuckDB against Spark on the same edges.

    python -m benchmarks.engine_scale [--edges 5000000] [--big-edges 50000000]
        [--memory-limit 3GB] [--spark-master local[2]] [--skip PART ...]

Parts (each in its own process, so each peak resident memory is its own):

- ``pipeline``: a generated Parquet log (1M customers, 4M items by default) through the
  ``files`` source and the real Dagster assets up to ``customer_segments`` (the
  segmentation job's upstream of it, with its checks), DuckDB engine, default settings:
  wall time and peak memory of the process.
- ``vector``: the same log with an items file of ``--categories`` categories (item j in
  category j mod 20), through the same assets with ``method_settings.embedding``
  pinned to ``vector``: the per-category embedding at scale (long per-category scores,
  factors from the sample, every customer's coordinates and nearest centre in SQL).
- ``big``: ``--big-edges`` edges on DuckDB under ``--memory-limit``: every engine table
  (preference edges, split, pooled item terms, embeddings, distinct values, segments,
  sizes, segment item rates, validation log-likelihoods), the edges read from Parquet and
  spilled to disk as DuckDB needs.
- ``spark``: the same engine tables on DuckDB and on Spark (``--spark-master``) from the
  same ``--edges`` file, timed in one run, with their agreement.

The generator plants three segments with like-rates 0.2 / 0.5 / 0.8 and item popularity
falling as a power law; values are 0/1 (label rule ``positive``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from segmentation_dagster.core.value_segments import DistinctValueSegmenter

PARTS = ("pipeline", "vector", "big", "spark")
K = 3


def generate(path: Path, edges: int, customers: int, items: int) -> None:
    """A Parquet log of ``edges`` distinct (customer, item) pairs, written by DuckDB."""
    if path.exists():
        return
    with duckdb.connect() as con:
        con.execute(f"""
            COPY (
                WITH draws AS (
                    SELECT
                        i,
                        i % {customers} AS c,
                        -- power-law popularity: item = floor(items * u^3)
                        CAST(floor({items} * pow((hash(i, 1) % 1000003) / 1000003.0, 3))
                            AS BIGINT) AS j,
                        (hash(i, 2) % 1000) / 1000.0 AS u
                    FROM range({edges}) AS t(i)
                )
                SELECT
                    'c' || CAST(c AS VARCHAR) AS customer_id,
                    'i' || CAST(j AS VARCHAR) AS item_id,
                    CASE WHEN u < [0.2, 0.5, 0.8][CAST(hash(c, 3) % 3 AS INTEGER) + 1]
                        THEN 1 ELSE 0 END AS value
                FROM draws
                QUALIFY row_number() OVER (PARTITION BY c, j ORDER BY i) = 1
            ) TO '{path}' (FORMAT parquet)
        """)


def generate_items(path: Path, items: int, categories: int) -> None:
    """An items file: every item of the generated logs, item j in category j mod
    ``categories`` (the categories carry no signal; they give the per-category
    embedding its shape and cost)."""
    if path.exists():
        return
    with duckdb.connect() as con:
        con.execute(f"""
            COPY (
                SELECT 'i' || CAST(j AS VARCHAR) AS item_id,
                    'g' || CAST(j % {categories} AS VARCHAR) AS category
                FROM range({items}) AS t(j)
            ) TO '{path}' (FORMAT parquet)
        """)


def peak_memory_gb() -> float:
    """This process's peak resident memory (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# ---------------------------------------------------------------- the pipeline part
def run_pipeline(file: Path, items_file: Path | None = None,
                 embedding: str = "auto") -> dict:
    """The real assets from the file to customer_segments, DuckDB engine."""
    import dagster as dg

    from segmentation_dagster.config import build_resources
    from segmentation_dagster.definitions import defs
    from segmentation_dagster.resources import DataSource
    from segmentation_dagster.settings import MethodSettings

    with tempfile.TemporaryDirectory() as home:
        resources = build_resources(home, source=DataSource(
            kind="files", interactions_path=str(file),
            items_path=str(items_file) if items_file else ""),
            method_settings=MethodSettings(embedding=embedding))
        job = dg.define_asset_job(
            "to_customer_segments",
            selection=dg.AssetSelection.assets("customer_segments").upstream()
            .required_multi_asset_neighbors())
        definitions = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks,
                                     jobs=[job], resources=resources,
                                     executor=dg.in_process_executor)
        started = time.perf_counter()
        result = definitions.resolve_job_def("to_customer_segments").execute_in_process(
            raise_on_error=False)
        seconds = time.perf_counter() - started
        steps = {}
        for event in result.all_events:
            if event.event_type_value == "STEP_SUCCESS":
                steps[event.step_key] = round(event.event_specific_data.duration_ms / 1000, 1)
        with duckdb.connect(str(Path(home) / "segmentation.duckdb"), read_only=True) as con:
            customers = con.execute("SELECT count(*) FROM customer_segments").fetchone()[0]
            sample = con.execute("SELECT * FROM edge_sample_info").df().iloc[0].to_dict()
            chosen = con.execute("SELECT * FROM chosen_segmentation").df().iloc[0].to_dict()
    return {"success": result.success, "seconds": seconds, "peak_gb": peak_memory_gb(),
            "segmented_customers": int(customers),
            "in_memory_customers": int(sample["sampled_customers"]),
            "chosen": f"{chosen['pooled']}/{chosen['normalisation']}/"
                      + (f"rank {chosen['category_rank']}/"
                         if pd.notna(chosen["category_rank"]) else "")
                      + f"K={chosen['k']}",
            "steps": steps}


# ---------------------------------------------------------------- the engine tables
def engine_tables(engine, seed: int = 0) -> dict:
    """Every engine table in order, timed; the segments by exact 1-D k-means with K=3
    on the distinct values (the pipeline chooses K on a sample; here it is fixed)."""
    times = {}

    def run(model: str, parameters: dict | None = None) -> None:
        started = time.perf_counter()
        engine.run_model(model, parameters)
        times[model] = time.perf_counter() - started

    run("preference_edges", {"label_rule": "positive"})
    run("edge_split", {"seed": seed, "test_percent": 20, "validation_percent": 10})
    run("pooled_item_terms", {"pooled": "item", "prior_strength": 2.0})
    run("customer_embeddings", {"normalisation": "entropy"})
    run("embedding_values")
    started = time.perf_counter()
    values = engine.read_table("embedding_values")
    segmenter = DistinctValueSegmenter(K).fit(values["embedding"], values["customers"],
                                              values["likes"], values["edges"])
    engine.write_table("segment_bounds", segmenter.bounds_table())
    times["k-means on distinct values"] = time.perf_counter() - started
    run("customer_segments", {"run_id": "benchmark",
                              "created_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")})
    run("segment_sizes")
    run("item_unit_rates", {"pooled_strength": 2.0})
    run("segment_summaries")
    run("segment_item_rates", {"strength": 20.0})
    run("validation_log_likelihood", {"segment_model": "item", "strength": 20.0})
    return {"times": times, "distinct_values": len(values),
            "sizes": segmenter.segment_sizes_.tolist()}


def duckdb_engine(folder: Path, file: Path, memory_limit: str = ""):
    """A DuckDB engine whose raw_interactions is a view of the Parquet file."""
    from segmentation_dagster.engine import DuckDBEngine

    engine = DuckDBEngine(path=str(folder / "engine.duckdb"), memory_limit=memory_limit,
                          temp_directory=str(folder / "spill"))
    with duckdb.connect(str(folder / "engine.duckdb")) as con:
        con.execute(f"CREATE OR REPLACE VIEW raw_interactions AS SELECT customer_id, "
                    f"item_id, CAST(value AS DOUBLE) AS value, CAST(NULL AS VARCHAR) AS event, "
                    f"CAST(NULL AS TIMESTAMP) AS \"timestamp\" FROM read_parquet('{file}')")
        con.execute("CREATE OR REPLACE TABLE raw_items (item_id VARCHAR, category VARCHAR)")
    return engine


def run_big(file: Path, memory_limit: str) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        engine = duckdb_engine(Path(folder), file, memory_limit)
        started = time.perf_counter()
        tables = engine_tables(engine)
        seconds = time.perf_counter() - started
        rows = {name: int(engine.query(f"SELECT count(*) FROM {name}").iloc[0, 0])
                for name in ("preference_edges", "customer_embeddings", "customer_segments",
                             "segment_item_rates")}
    return {"seconds": seconds, "peak_gb": peak_memory_gb(), "memory_limit": memory_limit,
            "rows": rows, **tables}


def run_spark(file: Path, master: str) -> dict:
    """DuckDB, then Spark, on the same file; their tables compared."""
    from segmentation_dagster.engine import SparkEngine

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        local = duckdb_engine(folder, file)
        started = time.perf_counter()
        duck = engine_tables(local)
        duck_seconds = time.perf_counter() - started

        spark = SparkEngine(master=master, warehouse=str(folder / "warehouse"),
                            conf={"spark.sql.shuffle.partitions": "8",
                                  "spark.driver.memory": "6g"})
        # the file as the engine's raw_interactions, written by Spark itself (the
        # pipeline's ingest goes through pandas; here the engine tables are timed)
        spark._replace("raw_interactions", spark.session().read.parquet(str(file)).selectExpr(
            "customer_id", "item_id", "CAST(value AS DOUBLE) AS value",
            "CAST(NULL AS STRING) AS event", "CAST(NULL AS TIMESTAMP) AS `timestamp`"))
        spark.write_table("raw_items", pd.DataFrame({"item_id": pd.Series(dtype="string"),
                                                     "category": pd.Series(dtype="string")}))
        started = time.perf_counter()
        sparked = engine_tables(spark)
        spark_seconds = time.perf_counter() - started

        agreement = compare(local, spark)
        spark.stop()
    return {"duckdb_seconds": duck_seconds, "spark_seconds": spark_seconds,
            "ratio": spark_seconds / duck_seconds, "master": master,
            "duckdb_times": duck["times"], "spark_times": sparked["times"], **agreement}


def compare(local, spark) -> dict:
    """Splits, embeddings and segments of the two engines: the split counts of every
    edge, the split of each edge of the customers whose id sorts below 'c2' (about a
    ninth of them), and every customer's embedding and segment."""
    counts = {name: e.query("SELECT split, count(*) AS edges FROM edge_split GROUP BY split")
              .sort_values("split").reset_index(drop=True)
              for name, e in (("duckdb", local), ("spark", spark))}
    subset = "SELECT customer_id, item_id, split FROM edge_split WHERE customer_id < 'c2'"
    edges = local.query(subset).merge(spark.query(subset), on=["customer_id", "item_id"],
                                      how="outer", suffixes=("_duckdb", "_spark"))
    a = local.query("SELECT customer_id, embedding, segment FROM customer_segments")
    b = spark.query("SELECT customer_id, embedding, segment FROM customer_segments")
    merged = a.merge(b, on="customer_id", suffixes=("_duckdb", "_spark"))
    relative = np.abs(merged["embedding_duckdb"] - merged["embedding_spark"]) / np.maximum(
        np.abs(merged["embedding_duckdb"]), 1e-300)
    return {"split_counts_equal": bool(counts["duckdb"].equals(counts["spark"])),
            "edges_compared": len(edges),
            "edges_in_other_split": int((edges["split_duckdb"] != edges["split_spark"]).sum()),
            "customers_compared": len(merged), "customers_duckdb": len(a),
            "customers_spark": len(b),
            "max_relative_embedding_difference": float(relative.max()),
            "identical_segments": bool((merged["segment_duckdb"]
                                        == merged["segment_spark"]).all())}


# ---------------------------------------------------------------- the driver
def child(part: str, args: argparse.Namespace, file: Path,
          items_file: Path | None = None) -> dict:
    """Run one part in a fresh process and read its JSON result."""
    command = [sys.executable, "-m", "benchmarks.engine_scale", "--part", part,
               "--file", str(file), "--memory-limit", args.memory_limit,
               "--spark-master", args.spark_master]
    if items_file:
        command += ["--items-file", str(items_file)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edges", type=int, default=5_000_000)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=4_000_000)
    parser.add_argument("--big-edges", type=int, default=50_000_000)
    parser.add_argument("--memory-limit", default="3GB")
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir())
                        / "engine_scale")
    parser.add_argument("--skip", nargs="*", default=[], choices=PARTS)
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--categories", type=int, default=20)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--items-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:  # a child process: one part, one JSON line
        run = {"pipeline": lambda: run_pipeline(args.file),
               "vector": lambda: run_pipeline(args.file, args.items_file, "vector"),
               "big": lambda: run_big(args.file, args.memory_limit),
               "spark": lambda: run_spark(args.file, args.spark_master)}[args.part]
        print(json.dumps(run(), default=float))
        return
    args.data_dir.mkdir(parents=True, exist_ok=True)
    small = args.data_dir / f"edges_{args.edges}.parquet"
    big = args.data_dir / f"edges_{args.big_edges}.parquet"
    generate(small, args.edges, args.customers, args.items)
    items = args.data_dir / f"items_{args.items}_{args.categories}.parquet"
    generate_items(items, args.items, args.categories)
    for part, label in (("pipeline", "default settings"),
                        ("vector", f"embedding=vector, {args.categories} categories")):
        if part in args.skip:
            continue
        result = child(part, args, small, items if part == "vector" else None)
        print(f"{part}, {args.edges:,} edges ({args.customers:,} customers, "
              f"{args.items:,} items; {label}) -> customer_segments, DuckDB: "
              f"{result['seconds']:.1f} s, peak memory {result['peak_gb']:.2f} GB, "
              f"{result['segmented_customers']:,} customers segmented "
              f"({result['in_memory_customers']:,} in memory), chose {result['chosen']}, "
              f"success={result['success']}")
        print("  steps (s): " + ", ".join(f"{k} {v}" for k, v in result["steps"].items()))
    if "big" not in args.skip:
        scale = args.big_edges / args.edges
        generate(big, args.big_edges, int(args.customers * scale),
                 int(args.items * scale))
        result = child("big", args, big)
        print(f"engine tables, {args.big_edges:,} edges, DuckDB, memory_limit="
              f"{result['memory_limit']}: {result['seconds']:.1f} s, peak memory "
              f"{result['peak_gb']:.2f} GB; rows {result['rows']}")
        print("  tables (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["times"].items()))
    if "spark" not in args.skip:
        result = child("spark", args, small)
        print(f"engine tables, {args.edges:,} edges: DuckDB {result['duckdb_seconds']:.1f} s, "
              f"Spark {result['master']} {result['spark_seconds']:.1f} s, ratio "
              f"{result['ratio']:.1f}x; split counts equal {result['split_counts_equal']}, "
              f"{result['edges_in_other_split']} of {result['edges_compared']:,} edges "
              f"compared in another split, "
              f"max relative embedding difference "
              f"{result['max_relative_embedding_difference']:.1e}, identical segments "
              f"{result['identical_segments']} ({result['customers_compared']:,} customers; "
              f"DuckDB {result['customers_duckdb']:,}, Spark {result['customers_spark']:,})")


if __name__ == "__main__":
    main()
