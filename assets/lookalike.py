"""The UNICON lookalike audience (lookalike training), a thin shell over
core/sequence/lookalike_protocol.py: the business rule and the cutoff become SQL models
(lookalike_labels, lookalike_sequences), the core runs the protocol, the shell writes
the audience, the scores, Figure 4 and an MLflow run.

The business rule is configuration: an SQL predicate over an interaction joined with its
item (``LookalikeSettings.rule_filter``) and a minimum count. It is executed as SQL in the
project's DuckDB file, so it must come from the operator, never from end users.
"""

import dagster as dg
import duckdb as duckdb_module
import mlflow
import pandas as pd

from segmentation_dagster.core.sequence import lookalike as lk
from segmentation_dagster.core.sequence.data import build_vocabulary, encode_sequences
from segmentation_dagster.core.sequence.lookalike_protocol import LookalikeResult, run_lookalike
from segmentation_dagster.core.sequence.synthetic import (
    DEFAULT_RULE_FILTER,
    DEFAULT_RULE_MIN_COUNT,
)
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.rules import parse_rule
from segmentation_dagster.scores import score_frame
from segmentation_dagster.settings import LookalikeSettings, RandomSeed, UniconModelSettings

from .common import markdown_table, source_info
from .unicon import GROUP, core_rows, finite, log_model, save_figure, timestamp_order

LOOKALIKE_EXPERIMENT = "unicon_lookalike"
# Rules used when LookalikeSettings.rule_filter is empty, by source_info.dataset
DEFAULT_RULES = {
    "synthetic": (DEFAULT_RULE_FILTER, DEFAULT_RULE_MIN_COUNT),
    # MovieLens: "liked at least 3 horror movies" (4 or 5 stars)
    "ml-100k": ("value >= 4 AND genre_horror = 1", 3),
    "ml-1m": ("value >= 4 AND genre_horror = 1", 3),
}


def business_rule(settings: LookalikeSettings, dataset: str) -> lk.RuleSpec | None:
    """The configured rule, else the dataset's default, else None (no rule for files)."""
    if settings.rule_filter.strip():
        return lk.RuleSpec(settings.rule_filter,
                           settings.rule_min_count or DEFAULT_RULE_MIN_COUNT)
    if dataset in DEFAULT_RULES:
        rule_filter, count = DEFAULT_RULES[dataset]
        return lk.RuleSpec(rule_filter, settings.rule_min_count or count)
    return None


def create_rule_view(duckdb: DuckDBStore, rule: lk.RuleSpec) -> int:
    """The table lookalike_rule_events: every interaction joined with its item and the
    rule's predicate as ``matches``; returns how many interactions match.

    The rule is parsed into one boolean expression over the interaction and item columns
    (segmentation_dagster.rules) and refused, before anything runs, if it is anything
    else; its values are passed as query parameters. A predicate DuckDB still cannot
    evaluate (a type mismatch) fails here, naming the rule and the columns it may use."""
    columns = duckdb.query(
        "SELECT DISTINCT column_name FROM information_schema.columns "
        "WHERE table_name IN ('raw_interactions', 'raw_items')"
    )["column_name"].tolist()
    predicate = parse_rule(rule.filter, columns, "the business rule (rule_filter)")
    sql = f"""
        CREATE OR REPLACE TABLE lookalike_rule_events AS
        WITH items AS (
            -- item ids are unique (raw_items' blocking check); one row per id regardless
            SELECT * EXCLUDE (item_rank)
            FROM (SELECT *, row_number() OVER (PARTITION BY item_id ORDER BY item_id)
                      AS item_rank FROM raw_items)
            WHERE item_rank = 1
        ),
        joined AS (
            SELECT r.*, i.* EXCLUDE (item_id)
            FROM raw_interactions AS r
            LEFT JOIN items AS i USING (item_id)
        )
        SELECT customer_id, item_id, event, value, "timestamp", file_order,
               coalesce(CAST(({predicate.sql}) AS BOOLEAN), false) AS matches
        FROM joined
        WHERE customer_id IS NOT NULL AND item_id IS NOT NULL
    """
    try:
        with duckdb.connect() as con:
            # a state folder from before rules were checked holds it as a view
            if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = "
                           "'lookalike_rule_events' AND table_type = 'VIEW'").fetchone()[0]:
                con.execute("DROP VIEW lookalike_rule_events")
            con.execute(sql, predicate.parameters)
            return int(con.execute(
                "SELECT count(*) FROM lookalike_rule_events WHERE matches").fetchone()[0])
    except duckdb_module.Error as error:
        raise ValueError(
            f"the business rule ({rule.text}) cannot be evaluated over the interactions "
            f"and their items (columns {sorted(columns)}): {error}"
        ) from error


def cutoff_time(duckdb: DuckDBStore, settings: LookalikeSettings) -> pd.Timestamp:
    if settings.cutoff:
        try:
            return pd.Timestamp(settings.cutoff)
        except ValueError as error:
            raise ValueError(
                f"LookalikeSettings.cutoff {settings.cutoff!r} is not a date or time"
            ) from error
    value = duckdb.query(
        'SELECT quantile_disc("timestamp", $q) AS cutoff FROM raw_interactions',
        {"q": settings.cutoff_quantile},
    ).iloc[0, 0]
    return pd.Timestamp(value)


def _check_settings(duckdb: DuckDBStore, settings: LookalikeSettings) -> None:
    if timestamp_order(duckdb).startswith("file order"):
        raise ValueError(
            "a lookalike audience needs a time to cut history at, and "
            "raw_interactions.timestamp is empty: add a timestamp column to the interactions"
        )
    if settings.positive_history not in ("before_rule", "full"):
        raise ValueError(
            f"LookalikeSettings.positive_history must be 'before_rule' or 'full', got "
            f"{settings.positive_history!r}"
        )


def _load_histories(duckdb: DuckDBStore, rule: lk.RuleSpec, cutoff: pd.Timestamp,
                    settings: LookalikeSettings, max_events: int):
    """The SQL models for the rule at the cutoff, then (sequences, vocabulary, labels):
    histories up to the cutoff and one label row per customer, in the same order."""
    duckdb.run_model("lookalike_labels", {"cutoff": cutoff, "min_count": rule.min_count,
                                          "new_customer_days": settings.new_customer_days})
    labels = duckdb.read_table("lookalike_labels")
    labels["customer_id"] = labels["customer_id"].astype(str)
    lk.check_core(labels["core"].to_numpy(), rule, cutoff)
    duckdb.run_model("lookalike_sequences", {
        "cutoff": cutoff, "min_count": rule.min_count, "max_events": max_events,
        "before_rule": settings.positive_history == "before_rule"})
    sequences = duckdb.query("SELECT * FROM lookalike_sequences ORDER BY customer_id, position")
    customers = duckdb.read_table("raw_customers")
    vocabulary = build_vocabulary(sequences, duckdb.read_table("raw_items"), customers)
    # customers whose whole history was the rule (core from their first events) have none
    data = encode_sequences(sequences, vocabulary, customers,
                            customer_ids=labels["customer_id"].to_numpy()).data
    labels = labels.set_index("customer_id").reindex(pd.Index(data.customer_ids))
    lk.check_core(labels["core"].to_numpy(dtype=bool), rule, cutoff)
    return data, vocabulary, labels


def _log_lookalike(mlflow_tracker: MLflowTracker, context, dataset: str, rule: lk.RuleSpec,
                   result: LookalikeResult, summary: dict, table: pd.DataFrame,
                   figure_path) -> str:
    with mlflow_tracker.run(LOOKALIKE_EXPERIMENT, "lookalike", context,
                            tags={"dataset": dataset, "rule": rule.text}) as run:
        mlflow.log_params({**vars(result.classifier.config), **{
            k: v for k, v in summary.items() if isinstance(v, str)}})
        mlflow.log_metrics(finite({k: v for k, v in summary.items()
                                   if not isinstance(v, str)}))
        for record in result.classifier.history_:
            mlflow.log_metrics(finite({k: v for k, v in record.items() if k != "epoch"}),
                               step=record["epoch"])
        mlflow.log_metrics(finite({f"{r.slice}_{r.method}_{r.metric}": r.value
                                   for r in table.itertuples()}))
        mlflow.log_artifact(str(figure_path))
        log_model(result.classifier.network_, "lookalike_classifier")
        return mlflow_tracker.run_link(run)


def _skip(duckdb: DuckDBStore, dataset: str) -> dg.MaterializeResult:
    duckdb.write_table("lookalike_audience", pd.DataFrame({
        "customer_id": pd.Series(dtype=str), "score": pd.Series(dtype=float),
        "rank": pd.Series(dtype="int64")}))
    duckdb.write_table("unicon_lookalike_scores", score_frame([]))
    return dg.MaterializeResult(metadata={
        "skipped": f"no business rule for the {dataset!r} source: set "
                   "LookalikeSettings.rule_filter (an SQL predicate) and rule_min_count"})


@dg.asset(deps=["customer_sequences", "raw_customers"], group_name=GROUP,
          kinds={"pytorch", "sql", "mlflow"})
def lookalike_audience(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    unicon_model_settings: UniconModelSettings,
    lookalike_settings: LookalikeSettings,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """Lookalike audience of the business rule's core segment (table
    lookalike_audience(customer_id, score, rank)), with its honest evaluation against
    baselines (table unicon_lookalike_scores, slices ``future`` and ``validation_core``);
    the protocol is core/sequence/lookalike_protocol.py."""
    s, model, seed = lookalike_settings, unicon_model_settings, random_seed.value
    dataset = source_info(duckdb, "dataset")
    rule = business_rule(s, dataset)
    if rule is None:
        return _skip(duckdb, dataset)
    _check_settings(duckdb, s)
    cutoff = cutoff_time(duckdb, s)
    matching = create_rule_view(duckdb, rule)
    data, vocabulary, labels = _load_histories(duckdb, rule, cutoff, s, model.max_events)
    result = run_lookalike(
        data, vocabulary, labels,
        classifier_config=model.unicon_config(seed, **s.classifier_overrides()),
        pretrain_config=(model.unicon_config(seed, max_epochs=s.pretrain_epochs)
                         if s.pretrain_epochs > 0 else None),
        max_len=model.max_events, negatives_per_positive=s.negatives_per_positive,
        validation_share=s.validation_share, seed=seed)
    duckdb.write_table("lookalike_audience", result.audience)
    table = score_frame(core_rows(dataset, "lookalike", result.scores))
    duckdb.write_table("unicon_lookalike_scores", table)
    plot, path = save_figure(result.figure(f"Lookalikes of: {rule.text}"), "unicon_lookalike",
                             state_folder)
    summary = {"rule": rule.text, "cutoff": str(cutoff), "positive_history": s.positive_history,
               "matching_interactions": matching, **result.summary()}
    link = _log_lookalike(mlflow_tracker, context, dataset, rule, result, summary, table, path)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(result.audience),
        **{k: (v if isinstance(v, str | int) else float(v)) for k, v in summary.items()},
        "scores": markdown_table(table[["slice", "method", "metric", "value"]], 40),
        "classifier_history": markdown_table(
            pd.DataFrame(result.classifier.history_).round(4), 60),
        "figure_4": plot,
        "preview": markdown_table(result.audience, 10),
        "mlflow_run": dg.MetadataValue.url(link),
    })
