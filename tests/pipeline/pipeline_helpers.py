"""Helpers shared by the pipeline tests: run the real job, read its DuckDB file, and pick
apart its events."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from segmentation_dagster.core.registry import METHODS as REGISTRY
from segmentation_dagster.definitions import defs

# Every variable settings.py and config.py read: cleared so the developer's own
# environment cannot leak into a test.
SEGMENTATION_VARIABLES = (
    "SEGMENTATION_HOME",
    "SEGMENTATION_SOURCE",
    "SEGMENTATION_MOVIELENS_DIR",
    "SEGMENTATION_INTERACTIONS",
    "SEGMENTATION_ITEMS",
    "SEGMENTATION_CUSTOMERS",
    "SEGMENTATION_SEED",
    "SEGMENTATION_JOB",
    "SEGMENTATION_ENGINE",
    "SEGMENTATION_SPARK_MASTER",
    "SEGMENTATION_SPARK_CONF",
)
SMALL_SYNTHETIC = {"kind": "synthetic", "synthetic_customers": 400, "synthetic_items": 120}
# The methods the comparison must always hold; more may be added to core/registry.py.
REQUIRED_METHODS = ("model_embedding", "population", "latent_class", "empirical_bayes",
                    "demographic", "kmedoids", "spectral")
METHODS = tuple(name for name, spec in REGISTRY.items() if spec.in_pipeline)
EXPECTED_ASSETS = {
    "raw_interactions", "raw_items", "raw_customers", "ground_truth_segments",
    "preference_edges", "edge_split", "edge_sample",
    "pooled_model", "customer_embeddings", "k_selection",
    "customer_segments", "segment_profiles", "published_segments",
    "segment_stability", "new_customer_segments",
    *(f"method_{name}" for name in METHODS),
    "segment_classifiers",
    "model_comparison",
    "cold_start_evaluation", "case_study_report",
    "purchase_counts", "nmf_rank_selection", "customer_nmf_scores", "product_nmf_scores",
    "product_segments", "segment_bundles", "segment_recommendations",
    "customer_sequences", "unicon_model", "consumer_embeddings", "behaviour_segments",
    "unicon_evaluation", "lookalike_audience", "method_unicon",
}
RAW_ASSETS = ("raw_interactions", "raw_items", "raw_customers", "ground_truth_segments")
INPUT_CHECKS = {
    ("raw_interactions", "raw_interactions_expectations"),
    ("raw_items", "raw_items_expectations"),
    ("raw_customers", "raw_customers_expectations"),
}
OUTPUT_CHECKS = {
    ("customer_embeddings", "embeddings_are_finite"),
    ("customer_segments", "every_customer_has_a_segment"),
    ("customer_segments", "no_segment_is_empty"),
    ("segment_stability", "segmentation_is_stable"),
}


def isolate_environment(patch: pytest.MonkeyPatch, home: Path) -> None:
    for name in SEGMENTATION_VARIABLES:
        patch.delenv(name, raising=False)
    # build_resources(home) no longer needs it; a safety net so that a resource built
    # without a home never writes into the developer's .segmentation
    patch.setenv("SEGMENTATION_HOME", str(home))


def run_segmentation_job(resources: dict, **kwargs) -> dg.ExecuteInProcessResult:
    """The code location's own assets, checks and job, bound to the given resources
    (the module-level ``defs`` bound its resources to the environment at import time)."""
    definitions = dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        resources=resources,
        executor=dg.in_process_executor,
    )
    job = definitions.resolve_job_def("all")
    return job.execute_in_process(raise_on_error=False, **kwargs)


def read_table(home: Path, sql: str) -> pd.DataFrame:
    """Query the state folder's DuckDB file directly, read-only, as a user would."""
    with duckdb.connect(str(home / "segmentation.duckdb"), read_only=True) as con:
        return con.execute(sql).df()


def read_published(home: Path, sql: str) -> pd.DataFrame:
    """Query what users read: the published release's DuckDB file, read-only."""
    with duckdb.connect(str(home / "published" / "segmentation.duckdb"), read_only=True) as con:
        return con.execute(sql).df()


def materialized_keys(result: dg.ExecuteInProcessResult) -> set[str]:
    return {event.asset_key.to_user_string()
            for event in result.get_asset_materialization_events()}


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], object]:
    """(asset, check name) -> the AssetCheckEvaluation of every check that ran."""
    evaluations = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            evaluations[(data.asset_key.to_user_string(), data.check_name)] = data
    return evaluations


def failure_messages(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """step key -> the text of its failure, the user's exception included (Dagster wraps
    it in an 'Error occurred while executing op' error whose cause is the original)."""
    messages = {}
    for event in result.all_events:
        if event.event_type_value != "STEP_FAILURE":
            continue
        parts, error = [], event.event_specific_data.error
        while error is not None:
            parts.append(error.message)
            error = error.cause
        messages[event.step_key] = "\n".join(parts)
    return messages
