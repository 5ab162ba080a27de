"""Asset checks: Great Expectations 1.x on the raw inputs (blocking), SQL on the outputs.

A failing blocking check stops every downstream asset in the run, and its metadata in the
UI says which expectation failed on which column with which values.
"""

import logging

import dagster as dg
import pandas as pd

from .engine import SQLEngine
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
    failures, problems = [], []
    for item in result.results:
        if item.success:
            continue
        config = item.expectation_config
        detail = {k: item.result.get(k) for k in
                  ("observed_value", "unexpected_count", "partial_unexpected_list")
                  if item.result.get(k) is not None}
        column = config.kwargs.get("column") or config.kwargs.get("column_list", "")
        failures.append(f"{config.type}({column}): {detail}")
        problems.append(plain_failure(name, config.type, dict(config.kwargs), detail, frame))
    # the description leads with plain words; the raw Great Expectations text follows
    plain = " ".join(problems)
    raw = "; ".join(failures)
    return dg.AssetCheckResult(
        passed=bool(result.success),
        metadata={
            "rows": len(frame),
            "expectations": len(result.results),
            "failed": len(failures),
            "problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems) or "none"),
            "failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "none"),
        },
        description=(f"{plain}\n\nGreat Expectations: {raw}"[:2000] if failures else None),
    )


# what each table is, in the words of the files a user supplies
TABLE_FILES = {"raw_interactions": "interactions", "raw_items": "items",
               "raw_customers": "customers"}


def _examples(values, n: int = 3) -> str:
    shown = list(dict.fromkeys(repr(v) for v in (values or [])))[:n]
    return f" (e.g. {', '.join(shown)})" if shown else ""


def _value_text(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plain_failure(table: str, expectation: str, kwargs: dict, detail: dict,
                  frame: pd.DataFrame) -> str:
    """One failed Great Expectations result in plain words: what is wrong, in which table
    and column, with example values, and what to do about it."""
    what = TABLE_FILES.get(table, table)
    column = kwargs.get("column")
    count = detail.get("unexpected_count")
    examples = _examples(detail.get("partial_unexpected_list"))
    observed = detail.get("observed_value")
    if expectation == "expect_column_to_exist":
        return (f"The {what} table has no column `{column}`: add it to the {what} file "
                "(see the README's input format).")
    if expectation == "expect_column_values_to_not_be_null":
        return (f"{count} rows of {what} have no {column}: fill it in or drop those rows.")
    if expectation == "expect_column_values_to_be_in_set":
        allowed = ", ".join(map(str, kwargs.get("value_set") or []))
        return (f"{count} rows of {what} have an unknown {column}{examples}; known: "
                f"{allowed}. Map them to a known {column}, or add theirs to the "
                f"`allowed_events` setting (resources.input_rules).")
    if expectation == "expect_column_values_to_be_unique":
        return (f"{count} rows of {what} repeat a {column}{examples}: keep one row per "
                f"{column}.")
    if expectation == "expect_compound_columns_to_be_unique":
        columns = ", ".join(kwargs.get("column_list") or [])
        return (f"{count} rows of {what} repeat the same ({columns}){examples}: drop the "
                "duplicates.")
    if expectation == "expect_column_values_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        if low == 0 and high is None and kwargs.get("strict_min"):
            return (f"{count} values in column `{column}` of {what} are not positive"
                    f"{examples}: a purchase-only log needs every value to be the same "
                    "positive number (1 for each purchase).")
        bounds = f"from {_value_text(low)} to {_value_text(high)}"
        if low is None:
            bounds = f"at most {_value_text(high)}"
        elif high is None:
            bounds = f"at least {_value_text(low)}"
        return (f"{count} values in column `{column}` of {what} are outside the allowed "
                f"range ({bounds}){examples}: fix those rows, or change the range in the "
                "`min_value` / `max_value` settings (resources.input_rules).")
    if expectation == "expect_column_unique_value_count_to_be_between":
        if column == "value" and observed == 1:
            values = frame[column].dropna().unique() if column in frame else []
            value = _value_text(values[0]) if len(values) else "the same"
            return (f"Every value in column `value` of {what} is {value}: every label "
                    "would be the same, so nothing can be segmented. A purchase-only log "
                    "needs the values to be the same positive number (1 for each "
                    "purchase); ratings or likes need at least two different values.")
        low = kwargs.get("min_value")
        setting = {"customer_id": "min_customers", "item_id": "min_items"}.get(column)
        action = (f"supply more, or lower the `{setting}` setting (resources.input_rules)"
                  if setting else "supply more varied data")
        return (f"{what.capitalize()} has only {observed} distinct {column}, at least "
                f"{low} are needed: {action}.")
    return f"{what.capitalize()} fails {expectation} on {column}: {detail}."


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

    frame = duckdb.read_table_text_as_categories("raw_interactions")
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
    return _validate(duckdb.read_table_text_as_categories("raw_items"), "raw_items",
                     _id_expectations("item_id"))


@dg.asset_check(asset="raw_customers", blocking=True)
def raw_customers_expectations(duckdb: DuckDBStore) -> dg.AssetCheckResult:
    """Great Expectations: customer ids present, non-null and unique."""
    return _validate(
        duckdb.read_table_text_as_categories("raw_customers"), "raw_customers",
        _id_expectations("customer_id")
    )


def _sql_check(store: DuckDBStore | SQLEngine, sql: str, what: str) -> dg.AssetCheckResult:
    bad = int(store.query(sql).iloc[0, 0])
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


EVERY_CUSTOMER_HAS_A_SEGMENT = (
    "SELECT (SELECT count(DISTINCT customer_id) FROM preference_edges "
    " WHERE customer_id NOT IN (SELECT customer_id FROM customer_segments)) "
    "+ (SELECT count(*) - count(DISTINCT customer_id) FROM customer_segments)"
)
NO_SEGMENT_IS_EMPTY = (
    "SELECT (SELECT count(*) FROM segment_models m WHERE NOT EXISTS "
    "  (SELECT 1 FROM customer_segments c WHERE c.segment = m.segment)) "
    "+ (SELECT count(*) - count(DISTINCT segment) FROM segment_models) "
    "+ (SELECT count(*) FROM customer_segments WHERE segment IS NULL "
    "   OR segment NOT IN (SELECT segment FROM segment_models))"
)


# One multi-asset check for both: two single blocking checks on one asset made the job's
# snapshot id differ between processes (Dagster orders them unstably), so a re-executed
# run warned that it "may be a different version"
@dg.multi_asset_check(specs=[
    dg.AssetCheckSpec("every_customer_has_a_segment", asset="customer_segments",
                      blocking=True,
                      description="Every customer of the preference graph has exactly one "
                                  "segment."),
    dg.AssetCheckSpec("no_segment_is_empty", asset="customer_segments", blocking=True,
                      description="Every segment of segment_models has at least one "
                                  "customer, and every customer's segment is one of them "
                                  "(stable ids may have gaps: a vanished segment's id is "
                                  "never reused)."),
])
def customer_segment_checks(duckdb: DuckDBStore, engine: SQLEngine):
    # the preference edges live in the engine (on DuckDB: the store's own file)
    for name, store, sql, what in (
        ("every_customer_has_a_segment", engine, EVERY_CUSTOMER_HAS_A_SEGMENT,
         "customers without exactly one segment"),
        ("no_segment_is_empty", duckdb, NO_SEGMENT_IS_EMPTY, "empty or unlisted segments"),
    ):
        result = _sql_check(store, sql, what)
        yield dg.AssetCheckResult(check_name=name, asset_key="customer_segments",
                                  passed=result.passed, metadata=result.metadata,
                                  description=result.description)


input_checks = [raw_interactions_expectations, raw_items_expectations, raw_customers_expectations]
output_checks = [embeddings_are_finite, customer_segment_checks]
