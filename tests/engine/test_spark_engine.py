"""The Spark engine on a real local session: its tables, run_model, copy_to_store; the
rendering of the macros and parameters; split_hash equal on DuckDB and Spark."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.config import build_resources
from segmentation_dagster.engine import (
    DuckDBEngine,
    SparkEngine,
    make_engine,
    render_model,
)
from segmentation_dagster.resources import DuckDBStore
from segmentation_dagster.settings import engine_from_environment, parse_spark_conf


def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": ["a", "b", "c"], "value": [1.5, np.nan, 3.0],
        "n": pd.array([1, None, 3], dtype="Int64"), "flag": [True, False, True],
        "when": pd.to_datetime(["2024-01-01 10:00", None, "2024-03-01 00:00"]),
        "nothing": [None, None, None]})


def test_write_read_exists_drop(spark_engine: SparkEngine) -> None:
    assert not spark_engine.table_exists("t")
    assert spark_engine.write_table("t", frame()) == 3
    assert spark_engine.table_exists("t")
    back = spark_engine.read_table("t").sort_values("customer_id", ignore_index=True)
    assert list(back.columns) == list(frame().columns)
    assert back["customer_id"].tolist() == ["a", "b", "c"]
    assert back["when"].iloc[0] == pd.Timestamp("2024-01-01 10:00")  # UTC, no shift
    assert back["nothing"].isna().all()
    spark_engine.write_table("t", frame().iloc[:1])  # replaced, not appended
    assert len(spark_engine.read_table("t")) == 1
    spark_engine.drop_table("t")
    assert not spark_engine.table_exists("t")
    with pytest.raises(ValueError, match="not in the Spark warehouse"):
        spark_engine.read_table("t")
    with pytest.raises(ValueError, match="table name"):
        spark_engine.table_exists("bad name; DROP")


def test_run_model_query_and_copy_to_store(spark_engine: SparkEngine, tmp_path) -> None:
    interactions = pd.DataFrame({"customer_id": ["a", "a", "b"], "item_id": ["x", "y", "x"],
                                 "value": [1.0, 0.0, 2.0]})
    spark_engine.write_table("raw_interactions", interactions)
    spark_engine.write_table("edge_sample", pd.DataFrame({"customer_id": ["a", "b"]}))
    assert spark_engine.run_model("purchase_counts", {"label_rule": "positive"}) == 2
    counts = spark_engine.query(
        "SELECT customer_id, sum(interactions) AS n FROM purchase_counts "
        "WHERE customer_id = $who GROUP BY customer_id", {"who": "a"})
    assert counts.to_dict("records") == [{"customer_id": "a", "n": 1}]
    store = DuckDBStore(path=str(tmp_path / "store.duckdb"))
    assert spark_engine.copy_to_store(store, "purchase_counts") == 2
    assert store.query("SELECT sum(interactions) AS n FROM purchase_counts").iloc[0, 0] == 2
    # a failed model leaves the previous table whole
    with pytest.raises(Exception, match="(?i)cannot be resolved|UNRESOLVED"):
        spark_engine._replace("purchase_counts",
                              spark_engine.session().sql("SELECT missing_column FROM range(1)"))
    assert len(spark_engine.read_table("purchase_counts")) == 2


def test_session_reused_and_left_running_when_not_ours(spark, spark_engine) -> None:
    assert spark_engine.session() is spark
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    spark_engine.stop()
    assert spark.range(1).count() == 1  # the shared session still runs


def test_split_hash_is_equal_on_both_engines(spark_engine: SparkEngine) -> None:
    keys = pd.DataFrame({"customer_id": [f"c{i}" for i in range(10_000)],
                         "item_id": [str(i * 7919 % 1013) for i in range(10_000)]})
    sql = ("SELECT customer_id, item_id, split_hash(customer_id, item_id, $seed) AS h "
           "FROM keys")
    spark_engine.write_table("keys", keys)
    on_spark = spark_engine.query(sql, {"seed": 3}).sort_values("customer_id", ignore_index=True)
    rendered = render_model(sql, "duckdb", {"seed": 3})
    with duckdb.connect() as con:
        con.register("keys", keys)
        on_duckdb = con.execute(rendered.sql, rendered.parameters).df()
    on_duckdb = on_duckdb.sort_values("customer_id", ignore_index=True)
    np.testing.assert_array_equal(on_spark["h"].to_numpy(), on_duckdb["h"].to_numpy())
    assert (on_spark["h"] >= 0).all() and on_spark["h"].nunique() > 9_990
    # the split shares it gives are close to uniform
    shares = (on_spark["h"] % 100 < 20).mean()
    assert 0.18 < shares < 0.22


def test_render_model_macros_and_parameters() -> None:
    sql = ("SELECT a, split_hash(a, $seed) AS h FROM union_tables($tables, a) "
           "WHERE b = $name AND t <= $cutoff AND x < $ratio AND f = $flag")
    parameters = {"seed": 1, "tables": ["s1", "s2"], "name": "o'k", "flag": True,
                  "cutoff": pd.Timestamp("2024-01-02 03:04:05"), "ratio": 0.5, "unused": 9}
    duck = render_model(sql, "duckdb", parameters)
    assert duck.parameters == {"seed": 1, "name": "o'k", "cutoff": parameters["cutoff"],
                               "ratio": 0.5, "flag": True}
    assert 'FROM "s1" UNION ALL SELECT "a" FROM "s2"' in duck.sql
    assert "'0x' ||" in duck.sql and "MD5(" in duck.sql.upper()
    spark = render_model(sql, "spark", parameters).sql
    assert "$" not in spark and "CONV(" in spark.upper()
    assert "'o''k'" in spark or "'o\\'k'" in spark
    assert "CAST('2024-01-02 03:04:05' AS TIMESTAMP)" in spark
    assert "CAST(0.5 AS DOUBLE)" in spark and "TRUE" in spark
    with pytest.raises(ValueError, match="seed"):
        render_model(sql, "spark", {"tables": ["s1"]})
    with pytest.raises(ValueError, match="one SELECT"):
        render_model("CREATE TABLE x AS SELECT 1", "duckdb")
    with pytest.raises(ValueError, match="dialect"):
        render_model("SELECT 1", "postgres")


def test_make_engine_and_the_environment(monkeypatch, tmp_path) -> None:
    assert isinstance(make_engine("duckdb", tmp_path), DuckDBEngine)
    spark = make_engine("spark", tmp_path, master="sc://host:15002", conf={"spark.x": "1"})
    assert isinstance(spark, SparkEngine) and spark.master == "sc://host:15002"
    assert spark.warehouse == str(tmp_path / "spark_warehouse")
    with pytest.raises(ValueError, match="unknown engine 'flink'"):
        make_engine("flink", tmp_path)
    monkeypatch.setenv("SEGMENTATION_ENGINE", "spark")
    monkeypatch.setenv("SEGMENTATION_SPARK_MASTER", "spark://h:7077")
    monkeypatch.setenv("SEGMENTATION_SPARK_CONF", "spark.executor.memory=4g, a.b=c")
    assert engine_from_environment() == (
        "spark", {"master": "spark://h:7077", "conf": {"spark.executor.memory": "4g",
                                                       "a.b": "c"}})
    engine = build_resources(str(tmp_path))["engine"]
    assert engine.name == "spark" and engine.conf["spark.executor.memory"] == "4g"
    monkeypatch.setenv("SEGMENTATION_ENGINE", "hive")
    with pytest.raises(ValueError, match="SEGMENTATION_ENGINE must be duckdb or spark"):
        engine_from_environment()
    monkeypatch.delenv("SEGMENTATION_ENGINE")
    assert engine_from_environment() == ("duckdb", {})
    with pytest.raises(ValueError, match="not key=value"):
        parse_spark_conf("spark.a")


def test_missing_pyspark_says_what_to_install(monkeypatch, tmp_path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyspark(name, *args, **kwargs):
        if name.startswith("pyspark"):
            raise ImportError("No module named 'pyspark'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    with pytest.raises(RuntimeError, match=r"pip install '\.\[spark\]'"):
        SparkEngine(warehouse=str(tmp_path)).session()
