"""The comparison of every method on every task, as one table, and its MLflow runs."""

import dagster as dg
import pandas as pd

from segmentation_dagster.core.plots import bar_chart
from segmentation_dagster.core.registry import METHODS
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.scores import (
    COMPARISON_EXPERIMENT,
    log_comparison,
    log_summary,
    metric_key,
    score_tables,
)

from .common import chosen_k, figure_metadata, inline_chart, table_metadata


@dg.asset(
    deps=[f"method_{name}" for name, spec in METHODS.items() if spec.in_pipeline]
    + ["segment_classifiers", "cold_start_evaluation", "segment_recommendations",
       "method_unicon"],
    group_name="comparison",
    kinds={"sql", "duckdb", "mlflow"},
)
def model_comparison(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """All methods' scores, one row per (dataset, task, slice, method, metric)
    (dbt_like_sql/model_comparison.sql). It stacks every score table recorded so far, so a
    job that skips UNICON or the case study still compares what it has; the upstream
    assets here only order the `all` job. MLflow gets one run per method (every
    ``{task}.{slice}.{metric}``) and a summary run with every headline metric (held-out
    AUC, recovery ARI per slice, recall@10) and the table as JSON."""
    tables = score_tables(duckdb)
    if not tables:
        raise ValueError("no method has been scored yet: materialize a method_* asset first")
    rows = duckdb.run_model("model_comparison", {"score_tables": tables})
    table = duckdb.read_table("model_comparison")
    links = log_comparison(mlflow_tracker, table, context)
    ranking = method_ranking(table)
    metadata = {"dagster/row_count": rows, **headline_numbers(duckdb, ranking),
                "ranking": table_metadata(ranking, 50), "score_tables": ", ".join(tables)}
    path = None
    if "held_out_auc" in ranking and ranking["held_out_auc"].notna().any():
        scored = ranking.dropna(subset=["held_out_auc"])
        figure = bar_chart(list(scored["method"]), list(scored["held_out_auc"]),
                           "Test-edge AUC by method", "AUC")
        _, path = figure_metadata(figure, "model_comparison", state_folder.folder("figures"))
        metadata["auc_by_method"] = auc_chart(scored)
        metadata["auc_by_method_file"] = dg.MetadataValue.path(str(path))
    metadata["mlflow_run"] = dg.MetadataValue.url(log_summary(mlflow_tracker, table, context,
                                                              path))
    metadata["mlflow_experiment"] = dg.MetadataValue.url(mlflow_tracker.experiment_link(
        COMPARISON_EXPERIMENT, [metric_key(*key) for key in VIEW_METRICS
                                if key[0] in set(table["task"])], context))
    metadata["methods_logged"] = len(links)
    return dg.MaterializeResult(metadata=metadata)


# the comparison's runs table opens on these columns ({task}.{slice}.{metric})
VIEW_METRICS = [("held_out_edges", "all", "auc"), ("recovery", "all", "ari"),
                ("purchase_ranking", "all", "recall@10")]


def method_ranking(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method: held-out AUC, recovery ARI per slice and recall@10 where
    scored, best held-out AUC (else recall@10) first."""
    columns = {("held_out_edges", "all", "auc"): "held_out_auc",
               ("purchase_ranking", "all", "recall@10"): "recall_at_10"}
    for slice_name in sorted(table.loc[table["task"] == "recovery", "slice"].unique()):
        name = "recovery_ari" if slice_name == "all" else f"recovery_ari_{slice_name}"
        columns[("recovery", slice_name, "ari")] = name
    ranking = pd.DataFrame({"method": sorted(table["method"].unique())}).set_index("method")
    keyed = table.set_index(["task", "slice", "metric"])
    for key, name in columns.items():
        if key in keyed.index:
            part = keyed.loc[[key]].groupby("method")["value"].first()
            ranking[name] = part
    ranking = ranking.dropna(how="all") if len(ranking.columns) else ranking
    order = [c for c in ("held_out_auc", "recall_at_10") if c in ranking]
    if order:
        ranking = ranking.sort_values(order, ascending=False, na_position="last")
    return ranking.reset_index()


def headline_numbers(duckdb: DuckDBStore, ranking: pd.DataFrame) -> dict:
    """Numeric metadata Dagster plots over time: the chosen K, the held-out AUC of the
    model embedding and of the best baseline."""
    numbers: dict = {}
    if duckdb.table_exists("k_selection"):
        numbers["chosen_k"] = chosen_k(duckdb)
    if "held_out_auc" in ranking:
        auc = ranking.set_index("method")["held_out_auc"].dropna()
        if "model_embedding" in auc:
            numbers["model_embedding_auc"] = float(auc["model_embedding"])
        baselines = auc.drop(index="model_embedding", errors="ignore")
        if len(baselines):
            numbers["best_baseline_auc"] = float(baselines.max())
            numbers["best_baseline"] = str(baselines.idxmax())
    return numbers


def auc_chart(scored: pd.DataFrame) -> dg.MetadataValue:
    """The best methods' held-out AUC as an inline bar chart (model_embedding in red),
    as many as fit inline."""
    for n in range(len(scored), 0, -1):
        top = scored.head(n)
        methods = list(top["method"])
        chart = inline_chart(f"held-out AUC, best {n} of {len(scored)} (red: model_embedding)",
                             [m[:8] for m in methods], list(top["held_out_auc"]), bars=True,
                             marked=methods.index("model_embedding")
                             if "model_embedding" in methods else None)
        if "data:image" in chart.value:
            return chart
    return chart
