"""The segmentation computed by the engine's SQL models through the real Dagster assets:
the same segments as in memory, every customer segmented when only a sample fits in
memory (scalar and per-category vector embeddings), and a plain refusal of what the
engine does not compute."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
from pipeline_helpers import (
    SMALL_SYNTHETIC,
    check_evaluations,
    failure_messages,
    isolate_environment,
    read_table,
)
from sklearn.metrics import adjusted_rand_score

from segmentation_dagster.config import PAPER_SETTINGS, build_resources
from segmentation_dagster.definitions import defs
from segmentation_dagster.resources import DataSource
from segmentation_dagster.settings import MethodSettings


def run_up_to_segments(home: Path, patch: pytest.MonkeyPatch, engine=None,
                       **settings) -> dg.ExecuteInProcessResult:
    """Materialize customer_segments and everything upstream of it (with their checks),
    on ``engine`` (None: the default DuckDB one)."""
    isolate_environment(patch, home)
    overrides = {} if engine is None else {"engine": engine}
    resources = build_resources(str(home), source=DataSource(**SMALL_SYNTHETIC),
                                method_settings=MethodSettings(**{**PAPER_SETTINGS, **settings}),
                                **overrides)
    job = dg.define_asset_job(
        "up_to_segments", selection=dg.AssetSelection.assets("customer_segments").upstream()
        .required_multi_asset_neighbors())
    definitions = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks,
                                 jobs=[job], resources=resources,
                                 executor=dg.in_process_executor)
    return definitions.resolve_job_def("up_to_segments").execute_in_process(
        raise_on_error=False)


@pytest.fixture(scope="module")
def in_memory_and_engine(tmp_path_factory):
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, settings in (("memory", {}), ("engine", {"segments_in_engine": True})):
            home = tmp_path_factory.mktemp(name)
            result = run_up_to_segments(home, patch, **settings)
            assert result.success, failure_messages(result)
            runs[name] = (home, result)
    return runs


def test_engine_segments_equal_the_in_memory_ones(in_memory_and_engine):
    (memory, _), (engine, result) = in_memory_and_engine["memory"], in_memory_and_engine[
        "engine"]
    assert read_table(engine, "SELECT in_engine FROM chosen_segmentation").iloc[0, 0]
    assert not read_table(memory, "SELECT in_engine FROM chosen_segmentation").iloc[0, 0]
    query = "SELECT customer_id, segment, embedding, fitted_edges FROM customer_segments " \
            "ORDER BY customer_id"
    a, b = read_table(memory, query), read_table(engine, query)
    assert len(a) == len(b) == 400
    assert (a["customer_id"] == b["customer_id"]).all()
    assert (a["segment"] == b["segment"]).all()
    assert a["segment"].nunique() >= 2
    np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=1e-9)
    assert (a["fitted_edges"] == b["fitted_edges"]).all()
    models = "SELECT segment, alpha, customers, centre FROM segment_models ORDER BY segment"
    ma, mb = read_table(memory, models), read_table(engine, models)
    np.testing.assert_allclose(ma.to_numpy(dtype=float), mb.to_numpy(dtype=float), rtol=1e-9)
    sizes = "SELECT * FROM segment_sizes ORDER BY segment"
    np.testing.assert_allclose(read_table(memory, sizes).to_numpy(dtype=float),
                               read_table(engine, sizes).to_numpy(dtype=float), rtol=1e-9)
    items = "SELECT item_id, p_like FROM pooled_model_items ORDER BY item_id"
    pa, pb = read_table(memory, items), read_table(engine, items)
    assert (pa["item_id"] == pb["item_id"]).all()
    np.testing.assert_allclose(pa["p_like"], pb["p_like"], rtol=1e-9)
    checks = check_evaluations(result)
    assert checks[("customer_segments", "every_customer_has_a_segment")].passed
    assert checks[("customer_segments", "no_segment_is_empty")].passed
    metadata = result.asset_materializations_for_node("customer_segments")[0].metadata
    assert metadata["computed_by"].value == "duckdb"
    # every customer is in memory here, so the engine's validation score of the chosen
    # segmentation is the very number k_selection chose it by
    chosen = read_table(engine, "SELECT score FROM k_selection WHERE chosen").iloc[0, 0]
    assert metadata["validation_log_likelihood_all_customers"].value == pytest.approx(
        chosen, rel=1e-9)


def test_only_a_sample_in_memory_but_every_customer_segmented(tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        result = run_up_to_segments(tmp_path, patch, in_memory_customers=150)
    assert result.success, failure_messages(result)
    info = read_table(tmp_path, "SELECT * FROM edge_sample_info").iloc[0]
    assert (info["customers"], info["sampled_customers"], bool(info["in_engine"])) == (
        400, 150, True)
    assert read_table(tmp_path, "SELECT count(DISTINCT customer_id) FROM edge_sample"
                      ).iloc[0, 0] == 150
    segments = read_table(tmp_path, "SELECT customer_id, segment FROM customer_segments")
    assert len(segments) == segments["customer_id"].nunique() == 400
    assert check_evaluations(result)[("customer_segments",
                                      "every_customer_has_a_segment")].passed


def test_vector_embedding_beyond_memory_segments_every_customer(tmp_path):
    """Only 150 of 400 customers in memory: the category factors come from the sample,
    every customer's coordinates and segment from the engine."""
    with pytest.MonkeyPatch.context() as patch:
        result = run_up_to_segments(tmp_path, patch, in_memory_customers=150,
                                    embedding="vector")
    assert result.success, failure_messages(result)
    spec = read_table(tmp_path, "SELECT category_rank, in_engine FROM chosen_segmentation"
                      ).iloc[0]
    assert (int(spec["category_rank"]), bool(spec["in_engine"])) == (2, True)
    embeddings = read_table(tmp_path, "SELECT * FROM customer_embeddings")
    assert len(embeddings) == embeddings["customer_id"].nunique() == 400
    assert embeddings["embedding_vector"].map(len).eq(2).all()
    segments = read_table(tmp_path, "SELECT customer_id, segment FROM customer_segments")
    assert len(segments) == segments["customer_id"].nunique() == 400
    checks = check_evaluations(result)
    assert checks[("customer_segments", "every_customer_has_a_segment")].passed
    assert checks[("customer_segments", "no_segment_is_empty")].passed
    metadata = result.asset_materializations_for_node("customer_embeddings")[0].metadata
    assert metadata["sample_customers"].value == 150
    assert metadata["embedding"].value == "vector (rank 2)"


def test_vector_rank_beyond_the_engine_is_refused_in_plain_words(tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        result = run_up_to_segments(tmp_path, patch, in_memory_customers=150,
                                    embedding="vector", category_rank=4)
    assert not result.success
    message = failure_messages(result)["k_selection"]
    assert "embedding='vector'" in message and "category_rank" in message
    assert "in_memory_customers" in message
    assert "customer_segments" not in {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


@pytest.fixture(scope="module")
def vector_in_memory_and_engine(tmp_path_factory):
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, settings in (("memory", {}), ("engine", {"segments_in_engine": True})):
            home = tmp_path_factory.mktemp(f"vector_{name}")
            result = run_up_to_segments(home, patch, embedding="vector", **settings)
            assert result.success, failure_messages(result)
            runs[name] = (home, result)
    return runs


def test_engine_vector_segments_equal_the_in_memory_ones(vector_in_memory_and_engine):
    """Every customer in the sample: the engine's low-rank completion is the in-memory
    ALS, and every customer's coordinates are the ridge solution on the factors the ALS's
    own coordinates solve (core.vector_scale.SampledLowRankEmbedding), so the engine's
    vector embedding equals the in-memory one to rounding (measured: 3e-15) and
    scikit-learn's k-means, on the same rows in the same order with the same seed, gives
    the same segments. (Ridge on the FINAL ALS factors instead moved the first coordinate
    by 0.02, 17 % of its spread, and one customer changed segment: ARI 0.964.)"""
    (memory, _), (engine, result) = (vector_in_memory_and_engine["memory"],
                                     vector_in_memory_and_engine["engine"])
    spec = "SELECT pooled, normalisation, category_rank, k, in_engine FROM chosen_segmentation"
    a_spec, b_spec = read_table(memory, spec).iloc[0], read_table(engine, spec).iloc[0]
    assert bool(b_spec["in_engine"]) and not bool(a_spec["in_engine"])
    assert int(b_spec["category_rank"]) == 2
    assert a_spec.drop("in_engine").tolist() == b_spec.drop("in_engine").tolist()
    vectors = "SELECT customer_id, embedding_vector FROM customer_embeddings ORDER BY customer_id"
    va, vb = read_table(memory, vectors), read_table(engine, vectors)
    assert (va["customer_id"] == vb["customer_id"]).all() and len(va) == 400
    np.testing.assert_allclose(np.vstack(va["embedding_vector"]),
                               np.vstack(vb["embedding_vector"]), rtol=1e-9, atol=1e-12)
    query = "SELECT customer_id, segment, embedding FROM customer_segments ORDER BY customer_id"
    a, b = read_table(memory, query), read_table(engine, query)
    assert len(a) == len(b) == 400
    assert (a["customer_id"] == b["customer_id"]).all()
    assert b["segment"].nunique() >= 2
    np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=1e-9, atol=1e-12)
    assert adjusted_rand_score(a["segment"], b["segment"]) == 1.0
    assert (a["segment"] == b["segment"]).all()  # and the same ids (by like-rate)
    models = "SELECT segment, alpha, customers, centre FROM segment_models ORDER BY segment"
    np.testing.assert_allclose(read_table(memory, models).to_numpy(dtype=float),
                               read_table(engine, models).to_numpy(dtype=float), rtol=1e-9,
                               atol=1e-12)
    sizes = "SELECT * FROM segment_sizes ORDER BY segment"
    np.testing.assert_allclose(read_table(memory, sizes).to_numpy(dtype=float),
                               read_table(engine, sizes).to_numpy(dtype=float), rtol=1e-9)
    checks = check_evaluations(result)
    assert checks[("customer_segments", "every_customer_has_a_segment")].passed
    assert checks[("customer_segments", "no_segment_is_empty")].passed
    metadata = result.asset_materializations_for_node("customer_segments")[0].metadata
    assert metadata["computed_by"].value == "duckdb"
    assert metadata["clustered_by"].value == "scikit-learn KMeans"
    chosen = read_table(engine, "SELECT score FROM k_selection WHERE chosen").iloc[0, 0]
    assert metadata["validation_log_likelihood_all_customers"].value == pytest.approx(
        chosen, rel=1e-9)


def test_vector_segments_on_spark_equal_the_duckdb_engines(spark, vector_in_memory_and_engine,
                                                           tmp_path):
    """The Spark engine: the same SQL, Spark MLlib's k-means instead of scikit-learn's.
    The coordinates equal DuckDB's to rounding; k-means|| and k-means++ are different
    algorithms that may stop in different local optima, so the partitions are compared
    by ARI: 1 for identical, about 0 for unrelated. 0.9 admits a handful of boundary
    customers (one moving costs about 0.01 on 400), not a different clustering."""
    from segmentation_dagster.engine import SparkEngine

    engine = SparkEngine(master="local[1]", warehouse=str(tmp_path / "spark_warehouse"))
    with pytest.MonkeyPatch.context() as patch:
        result = run_up_to_segments(tmp_path, patch, engine=engine, embedding="vector")
    engine.stop()
    assert result.success, failure_messages(result)
    duck, _ = vector_in_memory_and_engine["engine"]
    query = "SELECT customer_id, segment, embedding FROM customer_segments ORDER BY customer_id"
    a, b = read_table(duck, query), read_table(tmp_path, query)
    assert len(b) == 400 and (a["customer_id"] == b["customer_id"]).all()
    np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=1e-9, atol=1e-12)
    assert adjusted_rand_score(a["segment"], b["segment"]) >= 0.9
    for table in ("category_embeddings", "vector_coordinates", "vector_clusters",
                  "customer_segments"):
        assert (tmp_path / "spark_warehouse" / table).is_dir(), table
    checks = check_evaluations(result)
    assert checks[("customer_segments", "every_customer_has_a_segment")].passed
    assert checks[("customer_segments", "no_segment_is_empty")].passed
    metadata = result.asset_materializations_for_node("customer_segments")[0].metadata
    assert metadata["clustered_by"].value == "Spark MLlib KMeans"
