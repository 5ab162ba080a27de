"""Every SQL model gives the same table on DuckDB and on Spark from the same inputs:
floats to relative 1e-9, everything else (the splits included) identical.

MODEL_INPUTS maps EVERY model of dbt_like_sql/ to a function building its input tables
and one or more parameter sets; a model without an entry fails, so none is skipped.
To add a model: write ``def _my_model() -> Case`` and list it in MODEL_INPUTS."""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.engine import DuckDBEngine

RTOL = 1e-9
MODELS = sorted(p.name.removesuffix(".sql")
                for p in importlib.resources.files("dbt_like_sql").iterdir()
                if p.name.endswith(".sql"))


class Case(NamedTuple):
    tables: dict[str, pd.DataFrame]
    parameter_sets: list[dict]


# --- inputs ------------------------------------------------------------------------------


def raw_tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """40 customers' interactions (duplicates of a pair at other times, equal timestamps,
    a few without a timestamp, ratings 1..5) and their items, text ids as sources give."""
    rng = np.random.default_rng(seed)
    n = 600
    start = pd.Timestamp("2024-01-01")
    stamps = start + pd.to_timedelta(rng.integers(0, 60 * 24, n), unit="h")
    interactions = pd.DataFrame({
        "customer_id": [f"c{i:03d}" for i in rng.integers(0, 40, n)],
        "item_id": [f"i{j:03d}" for j in rng.integers(0, 30, n)],
        "value": rng.integers(0, 6, n).astype(float),
        "event": rng.choice(["view", "purchase"], n),
        "timestamp": pd.Series(stamps).where(rng.random(n) > 0.05),
    })
    interactions.loc[10:14, "timestamp"] = start  # equal times: file_order decides
    interactions["file_order"] = np.arange(n, dtype=np.int64)
    items = pd.DataFrame({"item_id": [f"i{j:03d}" for j in range(30)],
                          "category": rng.choice(["a", "b", None], 30),
                          "price": rng.random(30) * 10,
                          "brand": rng.choice(["x", "y"], 30)})
    return {"raw_interactions": interactions, "raw_items": items}


def sampled() -> pd.DataFrame:
    """edge_sample's customers for the in-memory models: 30 of raw_tables' 40."""
    return pd.DataFrame({"customer_id": [f"c{i:03d}" for i in range(30)]})


def rule_events() -> pd.DataFrame:
    raw = raw_tables()["raw_interactions"].dropna(subset=["timestamp"])
    return raw.assign(matches=raw["value"] >= 4)[
        ["customer_id", "item_id", "event", "value", "timestamp", "file_order", "matches"]]


def score_table(method: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "dataset": "synthetic", "task": ["held_out_edges", "recovery", "recovery"],
        "slice": "all", "method": method, "metric": ["auc", "ari", "accuracy"],
        "value": rng.random(3), "n_segments": pd.array([3, None, 2], dtype="Int64"),
        "seconds": rng.random(3)})


def duckdb_model(tables: dict[str, pd.DataFrame], model: str, parameters: dict,
                 folder) -> pd.DataFrame:
    """Run an upstream model on DuckDB to build a downstream model's input."""
    engine = DuckDBEngine(path=str(folder / "upstream.duckdb"))
    for name, frame in tables.items():
        engine.write_table(name, frame)
    engine.run_model(model, parameters)
    return engine.read_table(model)


def preference_edge_frame() -> pd.DataFrame:
    raw = raw_tables()["raw_interactions"]
    edges = raw.drop_duplicates(["customer_id", "item_id"])
    return edges.assign(label=np.where(edges["value"] >= 3, 1, -1).astype(np.int8))[
        ["customer_id", "item_id", "value", "event", "timestamp", "label"]]


def _engine_tables() -> dict[str, pd.DataFrame]:
    from test_engine_models import engine_tables  # the lead's inputs of the method models

    return engine_tables()


def _with_terms(folder) -> dict[str, pd.DataFrame]:
    tables = _engine_tables()
    tables["pooled_item_terms"] = duckdb_model(
        tables, "pooled_item_terms", {"pooled": "item", "prior_strength": 2.0}, folder)
    return tables


def _with_embeddings(folder) -> dict[str, pd.DataFrame]:
    tables = _with_terms(folder)
    tables["customer_embeddings"] = duckdb_model(
        tables, "customer_embeddings", {"normalisation": "entropy"}, folder)
    return tables


def _with_segments(folder) -> dict[str, pd.DataFrame]:
    from segmentation_dagster.core.value_segments import DistinctValueSegmenter

    tables = _with_embeddings(folder)
    values = duckdb_model(tables, "embedding_values", {}, folder)
    segmenter = DistinctValueSegmenter(3).fit(values["embedding"], values["customers"],
                                              values["likes"], values["edges"])
    tables["segment_bounds"] = segmenter.bounds_table()
    tables["customer_segments"] = duckdb_model(
        tables, "customer_segments", {"run_id": "r1", "created_at": "2026-01-01 08:00:00"},
        folder)
    return tables


def _with_segment_terms(folder) -> dict[str, pd.DataFrame]:
    tables = _with_segments(folder)
    tables["item_unit_rates"] = duckdb_model(
        tables, "item_unit_rates", {"pooled_strength": 2.0}, folder)
    tables["segment_summaries"] = duckdb_model(tables, "segment_summaries", {}, folder)
    return tables


def _with_rates(folder) -> dict[str, pd.DataFrame]:
    tables = _with_segment_terms(folder)
    tables["segment_item_rates"] = duckdb_model(
        tables, "segment_item_rates", {"strength": 20.0}, folder)
    return tables


def _with_category_terms(folder) -> dict[str, pd.DataFrame]:
    tables = _engine_tables()
    tables["pooled_item_terms"] = duckdb_model(
        tables, "pooled_item_terms", {"pooled": "category:item", "prior_strength": 2.0},
        folder)
    return tables


def _with_coordinates_inputs(folder) -> dict[str, pd.DataFrame]:
    """category_embeddings and the factors fitted on it (rank 2, padded to 3); one
    category is left out of the factors, as one the sample never saw."""
    from segmentation_dagster.core.vector_scale import SampledLowRankEmbedding, pivot_scores

    tables = _with_category_terms(folder)
    long = duckdb_model(tables, "category_embeddings", {"normalisation": "entropy"}, folder)
    tables["category_embeddings"] = long
    scores, _, categories = pivot_scores(long["customer_id"], long["category"],
                                         long["value"])
    model = SampledLowRankEmbedding(2).fit(scores)
    tables["category_factors"] = model.factors_table(categories).iloc[1:]
    tables["vector_axes"] = model.axes_table()
    return tables


def _with_coordinates(folder) -> dict[str, pd.DataFrame]:
    tables = _with_coordinates_inputs(folder)
    coordinates = duckdb_model(tables, "vector_coordinates", {"regularisation": 0.1}, folder)
    tables["vector_coordinates"] = coordinates
    tables["vector_centres"] = pd.DataFrame({
        "cluster": np.arange(3, dtype=np.int64),
        "c0": coordinates["e0"].quantile([0.1, 0.5, 0.9]).to_numpy(),
        "c1": coordinates["e1"].quantile([0.2, 0.5, 0.8]).to_numpy(), "c2": 0.0})
    return tables


def _with_clusters(folder) -> dict[str, pd.DataFrame]:
    tables = _with_coordinates(folder)
    tables["vector_clusters"] = duckdb_model(tables, "vector_clusters", {}, folder)
    tables["cluster_segments"] = pd.DataFrame({"cluster": np.arange(3, dtype=np.int64),
                                               "segment": np.array([4, 2, 4])})
    return tables


# --- one case per model -----------------------------------------------------------------

MODEL_INPUTS: dict[str, Callable[..., Case]] = {
    "preference_edges": lambda folder: Case(
        {"raw_interactions": raw_tables()["raw_interactions"]},
        [{"label_rule": rule} for rule in ("own_mean", "positive", "purchase")]),
    "edge_split": lambda folder: Case(
        {"preference_edges": preference_edge_frame()},
        [{"seed": seed, "test_percent": 20, "validation_percent": 10} for seed in (0, 7)]),
    "purchase_counts": lambda folder: Case(
        {"raw_interactions": raw_tables()["raw_interactions"], "edge_sample": sampled()},
        [{"label_rule": "own_mean"}, {"label_rule": "positive"}]),
    "customer_sequences": lambda folder: Case({**raw_tables(), "edge_sample": sampled()},
                                              [{"max_events": 4}]),
    "lookalike_labels": lambda folder: Case(
        {"lookalike_rule_events": rule_events()},
        [{"cutoff": pd.Timestamp("2024-02-10"), "min_count": 2, "new_customer_days": 7}]),
    "lookalike_sequences": lambda folder: Case(
        {"lookalike_rule_events": rule_events()},
        [{"cutoff": pd.Timestamp("2024-02-10"), "min_count": 2, "max_events": 5,
          "before_rule": before} for before in (True, False)]),
    "method_scores_unicon": lambda folder: Case(
        {name: score_table(name, i) for i, name in enumerate(
            ["unicon_next_item_scores", "unicon_segment_scores", "unicon_lookalike_scores"])},
        [{}]),
    "model_comparison": lambda folder: Case(
        {"method_scores_a": score_table("a", 1), "method_scores_b": score_table("b", 2),
         "method_scores_empty": score_table("empty", 3).iloc[:0]},
        [{"score_tables": ["method_scores_a", "method_scores_b", "method_scores_empty"]}]),
    "segment_sizes": lambda folder: Case(
        {"preference_edges": preference_edge_frame(),
         "customer_segments": pd.DataFrame({"customer_id": [f"c{i:03d}" for i in range(45)],
                                            "segment": np.arange(45) % 4})},
        [{}]),
    "pooled_item_terms": lambda folder: Case(
        _engine_tables(),
        [{"pooled": p, "prior_strength": 2.0}
         for p in ("global", "item", "category:global", "category:item")]),
    "customer_embeddings": lambda folder: Case(
        _with_terms(folder), [{"normalisation": n} for n in ("entropy", "degree")]),
    "embedding_values": lambda folder: Case(_with_embeddings(folder), [{}]),
    "customer_segments": lambda folder: Case(
        {k: v for k, v in _with_segments(folder).items() if k != "customer_segments"},
        [{"run_id": "r1", "created_at": "2026-01-01 08:00:00"}]),
    "item_unit_rates": lambda folder: Case(_with_segments(folder), [{"pooled_strength": 2.0}]),
    "segment_summaries": lambda folder: Case(_with_segments(folder), [{}]),
    "segment_item_rates": lambda folder: Case(
        _with_segment_terms(folder), [{"strength": 20.0}]),
    "validation_log_likelihood": lambda folder: Case(
        _with_rates(folder),
        [{"strength": 20.0, "segment_model": m} for m in ("item", "global")]),
    "category_embeddings": lambda folder: Case(
        _with_category_terms(folder), [{"normalisation": n} for n in ("entropy", "degree")]),
    "vector_coordinates": lambda folder: Case(
        _with_coordinates_inputs(folder), [{"regularisation": r} for r in (0.1, 2.0)]),
    "vector_clusters": lambda folder: Case(_with_coordinates(folder), [{}]),
    "vector_segments": lambda folder: Case(
        _with_clusters(folder), [{"run_id": "r1", "created_at": "2026-01-01 08:00:00"}]),
    "edge_sample": lambda folder: Case(
        _engine_tables(), [{"seed": 3, "sample_customers": 50},
                           {"seed": 3, "sample_customers": 10_000}]),
}


# --- the comparison ---------------------------------------------------------------------


def assert_same_table(duck: pd.DataFrame, spark: pd.DataFrame, what: str) -> None:
    assert list(duck.columns) == list(spark.columns), what
    assert len(duck) == len(spark), what
    assert len(duck), f"{what}: the case builds an empty table, which proves nothing"
    keys = list(duck.columns)
    duck = duck.sort_values(keys, kind="stable", ignore_index=True)
    spark = spark.sort_values(keys, kind="stable", ignore_index=True)
    for column in keys:
        left, right = duck[column], spark[column]
        message = f"{what}: column {column} ({left.dtype} on DuckDB, {right.dtype} on Spark)"
        if pd.api.types.is_bool_dtype(left) or pd.api.types.is_bool_dtype(right):
            assert left.astype("boolean").equals(right.astype("boolean")), message
        elif pd.api.types.is_numeric_dtype(left):
            assert pd.api.types.is_numeric_dtype(right), message
            np.testing.assert_allclose(left.astype(float), right.astype(float), rtol=RTOL,
                                       err_msg=message)
        elif pd.api.types.is_datetime64_any_dtype(left):
            assert pd.api.types.is_datetime64_any_dtype(right), message
            assert (pd.to_datetime(left).astype("datetime64[us]")
                    .equals(pd.to_datetime(right).astype("datetime64[us]"))), message
        else:
            assert left.astype(object).where(left.notna(), None).tolist() == \
                right.astype(object).where(right.notna(), None).tolist(), message


def test_every_model_has_inputs() -> None:
    missing = sorted(set(MODELS) - set(MODEL_INPUTS))
    assert not missing, f"add a case to MODEL_INPUTS in {__file__} for {missing}"


@pytest.mark.parametrize("model", MODELS)
def test_model_gives_the_same_table_on_duckdb_and_spark(model, spark_engine, tmp_path) -> None:
    assert model in MODEL_INPUTS, f"no case in MODEL_INPUTS for {model}: add one"
    case = MODEL_INPUTS[model](tmp_path)
    duck = DuckDBEngine(path=str(tmp_path / "parity.duckdb"))
    for name, frame in case.tables.items():
        duck.write_table(name, frame)
        spark_engine.write_table(name, frame)
    for parameters in case.parameter_sets:
        rows = duck.run_model(model, parameters)
        assert spark_engine.run_model(model, parameters) == rows, (model, parameters)
        assert_same_table(duck.read_table(model), spark_engine.read_table(model),
                          f"{model} {parameters}")
