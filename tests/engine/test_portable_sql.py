"""Every SQL model is one SELECT in the portable subset (engine.portability_problems), and
the rule refuses what breaks on Spark."""

from __future__ import annotations

import importlib.resources

import pytest

from segmentation_dagster.engine import check_portable, parse_model, portability_problems

SQL_FILES = sorted(p.name for p in importlib.resources.files("dbt_like_sql").iterdir()
                   if p.name.endswith(".sql"))


def test_the_models_are_found() -> None:
    assert {"preference_edges.sql", "edge_split.sql", "model_comparison.sql"} <= set(SQL_FILES)


@pytest.mark.parametrize("name", SQL_FILES)
def test_every_model_is_portable(name: str) -> None:
    sql = (importlib.resources.files("dbt_like_sql") / name).read_text()
    assert portability_problems(sql) == [], name
    parse_model(sql)  # exactly one SELECT


@pytest.mark.parametrize(("sql", "complaint"), [
    ("SELECT hash(a) % 100 AS h FROM t", "hash()"),
    ("SELECT HASH (a, b) AS h FROM t", "hash()"),
    ("SELECT rowid AS file_order, * FROM t", "rowid"),
    ("CREATE OR REPLACE TABLE x AS SELECT a FROM t", "CREATE"),
    ("SELECT a FROM t; SELECT b FROM t", "one SELECT"),
    ("SELECT * FROM t QUALIFY row_number() OVER (ORDER BY a) = 1", "QUALIFY"),
    ("SELECT avg(CASE WHEN a THEN 1.0 ELSE 0.0 END) AS r FROM t", "fractional literal"),
    ("SELECT a * 1e-6 AS r FROM t", "fractional literal"),
    ("SELECT * FROM query_table(['a', 'b'])", "query_table"),
    ("SELECT * FROM a UNION ALL BY NAME SELECT * FROM b", "BY NAME"),
    ("SELECT my_udf(a) AS d FROM t", "unknown to SQLGlot"),
])
def test_the_rule_refuses_what_breaks_on_spark(sql: str, complaint: str) -> None:
    problems = portability_problems(sql)
    assert any(complaint in p for p in problems), problems
    with pytest.raises(ValueError, match="not portable"):
        check_portable(sql, "the test model")


def test_comments_and_the_macros_pass() -> None:
    sql = """-- hash( and rowid in a comment are fine; CREATE too
    SELECT split_hash(a, $seed) % 100 AS h, CAST(0.5 AS DOUBLE) AS half
    FROM union_tables($tables, a) AS u"""
    assert portability_problems(sql) == []
