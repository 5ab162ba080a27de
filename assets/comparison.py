"""The comparison of every method on every task, as one table, and its MLflow runs."""

import dagster as dg
import mlflow

from segmentation_dagster.core.plots import bar_chart
from segmentation_dagster.core.registry import METHODS
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.scores import (
    COMPARISON_EXPERIMENT,
    log_comparison,
    metric_key,
    score_tables,
)

from .common import figure_metadata, markdown_table


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
    ``{task}.{slice}.{metric}``) and a summary run with the headline metrics."""
    tables = score_tables(duckdb)
    if not tables:
        raise ValueError("no method has been scored yet: materialize a method_* asset first")
    rows = duckdb.run_model("model_comparison", {"score_tables": tables})
    table = duckdb.read_table("model_comparison")
    links = log_comparison(mlflow_tracker, table, context)
    overall = table[table["slice"] == "all"]
    pivot = overall.pivot_table(index="method", columns=["task", "metric"], values="value")
    pivot.columns = [f"{task}.{metric}" for task, metric in pivot.columns]
    metadata = {"dagster/row_count": rows, "comparison": markdown_table(pivot.reset_index(), 50),
                "score_tables": ", ".join(tables)}
    headline = overall[(overall["task"] == "held_out_edges") & (overall["metric"] == "auc")]
    with mlflow_tracker.run(COMPARISON_EXPERIMENT, "summary", context) as run:
        mlflow.log_table(table, "model_comparison.json")
        mlflow.log_metrics({f"{r.method}.{metric_key(r.task, r.slice, r.metric)}": r.value
                            for r in headline.itertuples()})
        if len(headline):
            figure = bar_chart(list(headline["method"]), list(headline["value"]),
                               "Test-edge AUC by method", "AUC")
            metadata["auc_by_method"], path = figure_metadata(figure, "model_comparison",
                                                              state_folder.folder("figures"))
            mlflow.log_artifact(str(path))
        metadata["mlflow_run"] = dg.MetadataValue.url(mlflow_tracker.run_link(run))
    metadata["mlflow_experiment"] = dg.MetadataValue.url(
        mlflow_tracker.experiment_link(COMPARISON_EXPERIMENT))
    metadata["methods_logged"] = len(links)
    return dg.MaterializeResult(metadata=metadata)
