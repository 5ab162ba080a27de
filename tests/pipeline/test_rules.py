"""Business rules are parsed expressions: anything but one boolean expression over the
known columns is refused before it reaches the database."""

from __future__ import annotations

import duckdb
import pytest

from segmentation_dagster.rules import parse_rule

COLUMNS = ["customer_id", "item_id", "value", "event", "timestamp", "category",
           "genre_horror", "price"]
INJECTION = ("true) AS BOOLEAN), false) AS matches FROM joined; DROP TABLE "
             "customer_segments; --")


@pytest.mark.parametrize(
    ("rule", "refused_for"),
    [
        (INJECTION, "not a single expression"),
        ("read_csv('/etc/passwd') IS NOT NULL", "uses"),
        ("value > (SELECT max(value) FROM raw_interactions)", "uses"),
        ("value > 1; DROP TABLE customer_segments", "not a single expression"),
        ("secret_column = 1", "unknown columns ['secret_column']"),
        ("getenv('HOME') = 'x'", "uses"),
    ],
    ids=["injection", "file_access", "subquery", "two_statements", "unknown_column",
         "function"],
)
def test_anything_but_an_expression_over_known_columns_is_refused(rule, refused_for) -> None:
    with pytest.raises(ValueError, match="rule") as error:
        parse_rule(rule, COLUMNS)
    assert refused_for in str(error.value)
    assert "value" in str(error.value)  # it says which columns may be used


def test_a_rule_runs_with_its_values_as_parameters() -> None:
    rule = parse_rule("value >= 4 AND genre_horror = 1 AND lower(category) IN ('a', 'b''c')",
                      COLUMNS)
    assert rule.parameters == {"rule_0": 4, "rule_1": 1, "rule_2": "a", "rule_3": "b'c"}
    assert "'" not in rule.sql  # no literal is pasted into the SQL
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (5, 1, 'A'), (5, 0, 'a'), "
                "(3, 1, 'b''c'), (4, 1, 'B''C')) AS t(value, genre_horror, category)")
    matched = con.execute(f"SELECT count(*) FROM t WHERE {rule.sql}", rule.parameters)
    assert matched.fetchone()[0] == 2


def test_the_injection_never_reaches_the_store(good_run, tmp_path) -> None:
    """The lookalike asset's rule table, on a copy of a real run's DuckDB file: the
    injection is refused and customer_segments is still there."""
    import shutil

    from assets.lookalike import create_rule_view
    from segmentation_dagster.core.sequence.lookalike import RuleSpec
    from segmentation_dagster.resources import DuckDBStore

    path = tmp_path / "segmentation.duckdb"
    shutil.copy(good_run.home / "segmentation.duckdb", path)
    store = DuckDBStore(path=str(path))
    before = store.query("SELECT count(*) AS n FROM customer_segments")["n"][0]
    for rule in (INJECTION, "read_csv('/etc/passwd') IS NOT NULL"):
        with pytest.raises(ValueError, match="rule_filter"):
            create_rule_view(store, RuleSpec(rule, 1))
    assert store.query("SELECT count(*) AS n FROM customer_segments")["n"][0] == before
    assert create_rule_view(store, RuleSpec("value >= 1", 1)) > 0
