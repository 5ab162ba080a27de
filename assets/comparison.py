"""The comparison of every method on every task, as one table."""

import dagster as dg
import mlflow

from segmentation_dagster.core.plots import bar_chart
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder

from .common import figure_metadata, markdown_table
from .methods import COMPARISON_EXPERIMENT, METHODS


@dg.asset(
    deps=[f"method_{name}" for name in METHODS]
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
    (dbt_like_sql/model_comparison.sql), with a summary run in MLflow."""
    rows = duckdb.run_model("model_comparison")
    table = duckdb.read_table("model_comparison")
    overall = table[table["slice"] == "all"]
    pivot = overall.pivot_table(index="method", columns=["task", "metric"], values="value")
    pivot.columns = [f"{task}.{metric}" for task, metric in pivot.columns]
    pivot = pivot.reset_index()
    metadata = {"dagster/row_count": rows, "comparison": markdown_table(pivot, 50)}
    accuracy = overall[(overall["task"] == "held_out_edges") & (overall["metric"] == "auc")]
    if len(accuracy):
        figure = bar_chart(list(accuracy["method"]), list(accuracy["value"]),
                           "Test-edge AUC by method", "AUC")
        metadata["auc_by_method"], path = figure_metadata(figure, "model_comparison",
                                                          state_folder.folder("figures"))
        with mlflow_tracker.run(COMPARISON_EXPERIMENT, "summary", context) as run:
            mlflow.log_table(table, "model_comparison.json")
            mlflow.log_artifact(str(path))
            metadata["mlflow_run"] = dg.MetadataValue.url(mlflow_tracker.run_link(run))
    return dg.MaterializeResult(metadata=metadata)
