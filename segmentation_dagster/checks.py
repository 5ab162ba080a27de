"""Asset checks: Great Expectations 1.x on the raw inputs (blocking), SQL on the outputs.

A failing blocking check stops every downstream asset in the run, and its metadata in the
UI says which expectation failed on which column with which values.
"""

import logging

import dagster as dg
import pandas as pd

from .resources import DuckDBStore


class InputRules(dg.ConfigurableResource):
    """What the raw inputs must satisfy before anything is built on them.

    Values may be on any scale, negative included (a -10..10 joke scale, stars, play
    counts): set ``min_value`` / ``max_value`` to refuse values outside a known range.
    """

    min_customers: int = 10
    min_items: int = 2
    min_value: float | None = None
    max_value: float | None = None
    allowed_events: list[str] = ["rating", "view", "click", "cart", "purchase", "interaction"]


def _validate(frame: pd.DataFrame, name: str, expectations: list) -> dg.AssetCheckResult:
    """Run a Great Expectations suite on a DataFrame and turn it into a check result."""
    import great_expectations as gx

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(
        globally=False
    )
    source = context.data_sources.add_pandas(f"{name}_source")
    batch = (
        source.add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(f"{name}_suite")
    for expectation in expectations:
        suite.add_expectation(expectation)
    result = batch.validate(suite)
    failures = []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        detail = {k: item.result.get(k) for k in
                  ("observed_value", "unexpected_count", "partial_unexpected_list")
                  if item.result.get(k) is not None}
        column = config.kwargs.get("column") or config.kwargs.get("column_list", "")
        failures.append(f"{config.type}({column}): {detail}")
    return dg.AssetCheckResult(
        passed=bool(result.success),
        metadata={
            "rows": len(frame),
            "expectations": len(result.results),
            "failed": len(failures),
            "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "none"),
        },
        description="; ".join(failures)[:1000] or None,
    )


@dg.asset_check(asset="raw_interactions", blocking=True)
def raw_interactions_expectations(
    duckdb: DuckDBStore, input_rules: InputRules
) -> dg.AssetCheckResult:
    """Great Expectations: required columns, non-null ids, values in the configured range
    (if any), known events,
    no repeated (customer, item, timestamp), at least two distinct values, and enough
    customers and items.

    Under the ``purchase`` label rule (a purchase-only log, ``source_info.label_rule``)
    one distinct value is the point: instead of two distinct values, every value must be
    positive (a column of zeros is not a log of purchases)."""
    import great_expectations.expectations as gxe

    frame = duckdb.read_table("raw_interactions")
    purchase_log = _label_rule(duckdb) == "purchase"
    expectations = [gxe.ExpectColumnToExist(column=c)
                    for c in ("customer_id", "item_id", "value", "event", "timestamp")]
    expectations += [
        gxe.ExpectColumnValuesToNotBeNull(column="customer_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="value"),
        gxe.ExpectColumnValuesToBeInSet(column="event", value_set=input_rules.allowed_events),
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column="customer_id", min_value=input_rules.min_customers
        ),
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column="item_id", min_value=input_rules.min_items
        ),
    ]
    if purchase_log:
        # every edge is a purchase: the values only need to say so
        expectations.append(gxe.ExpectColumnValuesToBeBetween(
            column="value", min_value=0, strict_min=True
        ))
    else:
        # all values identical: every label would be the same and nothing can be segmented
        expectations.append(gxe.ExpectColumnUniqueValueCountToBeBetween(column="value",
                                                                         min_value=2))
    if input_rules.min_value is not None or input_rules.max_value is not None:
        expectations.append(gxe.ExpectColumnValuesToBeBetween(
            column="value", min_value=input_rules.min_value, max_value=input_rules.max_value
        ))
    if frame["timestamp"].notna().any():
        expectations.append(gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["customer_id", "item_id", "timestamp"]
        ))
    return _validate(frame, "raw_interactions", expectations)


def _label_rule(duckdb: DuckDBStore) -> str | None:
    """The label rule the ingest asset wrote to ``source_info`` (None before any)."""
    if not duckdb.table_exists("source_info"):
        return None
    return str(duckdb.query("SELECT label_rule FROM source_info").iloc[0, 0])


def _id_expectations(column: str) -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectColumnToExist(column=column),
        gxe.ExpectColumnValuesToNotBeNull(column=column),
        gxe.ExpectColumnValuesToBeUnique(column=column),
    ]


@dg.asset_check(asset="raw_items", blocking=True)
def raw_items_expectations(duckdb: DuckDBStore) -> dg.AssetCheckResult:
    """Great Expectations: item ids present, non-null and unique."""
    return _validate(duckdb.read_table("raw_items"), "raw_items", _id_expectations("item_id"))


@dg.asset_check(asset="raw_customers", blocking=True)
def raw_customers_expectations(duckdb: DuckDBStore) -> dg.AssetCheckResult:
    """Great Expectations: customer ids present, non-null and unique."""
    return _validate(
        duckdb.read_table("raw_customers"), "raw_customers", _id_expectations("customer_id")
    )


def _sql_check(duckdb: DuckDBStore, sql: str, what: str) -> dg.AssetCheckResult:
    bad = int(duckdb.query(sql).iloc[0, 0])
    return dg.AssetCheckResult(passed=bad == 0, metadata={what: bad},
                               description=None if bad == 0 else f"{bad} {what}")


@dg.asset_check(asset="customer_embeddings", blocking=True)
def embeddings_are_finite(duckdb: DuckDBStore) -> dg.AssetCheckResult:
    """No embedding is NaN or infinite."""
    return _sql_check(
        duckdb,
        "SELECT count(*) FROM customer_embeddings WHERE NOT isfinite(embedding) "
        "OR embedding IS NULL",
        "non-finite embeddings",
    )


@dg.asset_check(asset="customer_segments", blocking=True)
def every_customer_has_a_segment(duckdb: DuckDBStore) -> dg.AssetCheckResult:
    """Every customer of the preference graph has exactly one segment."""
    return _sql_check(
        duckdb,
        "SELECT (SELECT count(DISTINCT customer_id) FROM preference_edges "
        " WHERE customer_id NOT IN (SELECT customer_id FROM customer_segments)) "
        "+ (SELECT count(*) - count(DISTINCT customer_id) FROM customer_segments)",
        "customers without exactly one segment",
    )


@dg.asset_check(asset="customer_segments", blocking=True)
def no_segment_is_empty(duckdb: DuckDBStore) -> dg.AssetCheckResult:
    """Segments are numbered 0..K-1 with no gap: no segment is empty."""
    return _sql_check(
        duckdb,
        "SELECT max(segment) + 1 - count(DISTINCT segment) FROM customer_segments",
        "empty segments",
    )


input_checks = [raw_interactions_expectations, raw_items_expectations, raw_customers_expectations]
output_checks = [embeddings_are_finite, every_customer_has_a_segment, no_segment_is_empty]
