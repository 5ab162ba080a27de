"""The segmentation job on the Spark engine (the session's local Spark): the edge-scale
tables live in Spark's warehouse, and the segments equal the DuckDB run's, customer by
customer."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pytest
from pipeline_helpers import (
    SMALL_SYNTHETIC,
    check_evaluations,
    failure_messages,
    isolate_environment,
    materialized_keys,
    read_published,
    read_table,
)

from segmentation_dagster.config import build_resources
from segmentation_dagster.definitions import defs
from segmentation_dagster.engine import SparkEngine
from segmentation_dagster.resources import DataSource


@pytest.fixture(scope="module")
def spark_run(spark, tmp_path_factory):
    home = tmp_path_factory.mktemp("spark_state")
    engine = SparkEngine(master="local[1]", warehouse=str(home / "spark_warehouse"))
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, home)
        resources = build_resources(str(home), source=DataSource(**SMALL_SYNTHETIC),
                                    engine=engine)
        definitions = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks,
                                     jobs=defs.jobs, resources=resources,
                                     executor=dg.in_process_executor)
        result = definitions.resolve_job_def("segmentation").execute_in_process(
            raise_on_error=False)
    assert result.success, failure_messages(result)
    return home, result


def test_segmentation_job_runs_on_spark(spark_run):
    home, result = spark_run
    assert {"customer_segments", "model_comparison", "published_segments"} <= \
        materialized_keys(result)
    assert all(evaluation.passed for evaluation in check_evaluations(result).values())
    warehouse = home / "spark_warehouse"
    for table in ("preference_edges", "edge_split", "pooled_item_terms",
                  "customer_embeddings", "customer_segments", "segment_sizes",
                  "validation_log_likelihood"):
        assert (warehouse / table).is_dir(), f"{table} is not in Spark's warehouse"
    info = read_table(home, "SELECT engine, in_engine FROM edge_sample_info").iloc[0]
    assert (info["engine"], bool(info["in_engine"])) == ("spark", True)
    metadata = result.asset_materializations_for_node("customer_segments")[0].metadata
    assert metadata["computed_by"].value == "spark"


def test_spark_segments_equal_the_duckdb_run(spark_run, good_run):
    """The same source and seed on DuckDB (the session's good run) and on Spark: the same
    split hash, pooled model, embeddings and segments."""
    home, _ = spark_run
    query = ("SELECT customer_id, segment, embedding, fitted_edges FROM customer_segments "
             "ORDER BY customer_id")
    on_spark, on_duckdb = read_published(home, query), read_published(good_run.home, query)
    assert len(on_spark) == len(on_duckdb) == SMALL_SYNTHETIC["synthetic_customers"]
    assert (on_spark["customer_id"] == on_duckdb["customer_id"]).all()
    assert (on_spark["segment"] == on_duckdb["segment"]).all()
    np.testing.assert_allclose(on_spark["embedding"], on_duckdb["embedding"], rtol=1e-9)
    assert (on_spark["fitted_edges"] == on_duckdb["fitted_edges"]).all()
    split = "SELECT split, count(*) AS edges FROM edge_sample GROUP BY split ORDER BY split"
    assert read_table(home, split).equals(read_table(good_run.home, split))
