"""Per-segment classifiers (the paper's eBay study): does a model per segment beat one
model for everyone on the same customers?"""

import dagster as dg
import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import sklearn

from segmentation_dagster.core.plots import bar_chart
from segmentation_dagster.core.segment_classifier import (
    SegmentClassifiers,
    compare_segmentations,
    learned_item_features,
)
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.scores import record_scores, score_row
from segmentation_dagster.settings import RandomSeed

from .common import (
    SplitGraphs,
    chosen_k,
    figure_metadata,
    item_features,
    load_split_graphs,
    markdown_table,
)

CLASSIFIER_EXPERIMENT = "segment_classifiers"


def classifier_features(duckdb: DuckDBStore, split: SplitGraphs) -> np.ndarray:
    """The source's item features and two learned from the training edges."""
    return np.column_stack([item_features(duckdb, split.train.item_ids),
                            learned_item_features(split.train)])


def classifier_score_rows(dataset: str, aucs: dict[str, pd.DataFrame],
                          segmentations: dict[str, np.ndarray]) -> list[dict]:
    """Comparison rows: each segmentation's per-segment AUC by slice, and the population
    model's once (it is the same model whichever segmentation is scored)."""
    rows = []
    for method, table in aucs.items():
        n_segments = len(np.unique(segmentations[method]))
        columns = [("auc_segment", method, n_segments)]
        if method == "model_embedding":
            columns.append(("auc_population", "population", 1))
        rows += [score_row(dataset, "segment_classifier", name, "auc", value, n,
                           slice_name=slice_name)
                 for column, name, n in columns
                 for slice_name, value in zip(table["slice"], table[column], strict=True)]
    return rows


def log_classifiers(mlflow_tracker: MLflowTracker, context: dg.AssetExecutionContext,
                    model: SegmentClassifiers, aucs: pd.DataFrame) -> str:
    """Each fitted classifier as an MLflow model, in one run, beside its own test AUC
    (a segment's model on its segment's edges; the population model on all of them)."""
    by_slice = aucs.set_index("slice")
    with mlflow_tracker.run(CLASSIFIER_EXPERIMENT, "per-segment logistic", context) as run:
        # explicit requirements: MLflow's inference of them costs seconds per model
        requirements = [f"scikit-learn=={sklearn.__version__}"]
        for segment, classifier in model.models_.items():
            mlflow.sklearn.log_model(classifier, name=f"segment_{segment}",
                                     pip_requirements=requirements)
        mlflow.sklearn.log_model(model.population_, name="population",
                                 pip_requirements=requirements)
        metrics = {f"segment_{segment}.auc": by_slice.loc[f"segment:{segment}", "auc_segment"]
                   for segment in model.models_ if f"segment:{segment}" in by_slice.index}
        metrics["population.auc"] = by_slice.loc["all", "auc_population"]
        metrics["all_segments.auc"] = by_slice.loc["all", "auc_segment"]
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
        return mlflow_tracker.run_link(run)


@dg.asset(
    deps=["k_selection", "method_demographic"],
    group_name="segments",
    kinds={"scikitlearn", "duckdb", "mlflow"},
)
def segment_classifiers(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """The paper's eBay study: a population logistic regression on item features is the
    pooled model; customers are embedded under it (Algorithm 3) and clustered into the
    chosen K segments; then one logistic regression per segment. Test AUC (20 % of the
    edges; the other 80 % fit everything), overall and per segment, against the
    population model on the same edges, and the same for the demographic segments.
    The classifiers are logged to MLflow as models."""
    split = load_split_graphs(duckdb, fit_splits=("train", "validation"))
    features = classifier_features(duckdb, split)
    k = chosen_k(duckdb)
    embedding_segments = ModelEmbeddingSegmenter(
        k, pooled="features", pooled_kwargs={"item_features": features},
        random_state=random_seed.value,
    ).fit(split.train).labels_
    duckdb.write_table("classifier_segments", pd.DataFrame(
        {"customer_id": split.train.customer_ids, "segment": embedding_segments}))
    segmentations = {"model_embedding": embedding_segments}
    if duckdb.table_exists("segments_demographic"):
        demographic = duckdb.read_table("segments_demographic").set_index("customer_id")
        if len(demographic):
            segmentations["demographic"] = (
                demographic["segment"].reindex(split.train.customer_ids).to_numpy())
    comparison = compare_segmentations(features, split.train.edges(), split.test,
                                       segmentations)
    scores = record_scores(duckdb, "segment_classifier_scores",
                           classifier_score_rows(split.dataset, comparison.aucs, segmentations))
    link = log_classifiers(mlflow_tracker, context, comparison.models["model_embedding"],
                           comparison.aucs["model_embedding"])
    ours = comparison.aucs["model_embedding"]
    figure = bar_chart(list(ours["slice"]), list(ours["improvement_pct"]),
                       "AUC gain of per-segment classifiers", "% over population")
    plot, _ = figure_metadata(figure, "segment_classifier_auc", state_folder.folder("figures"))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(scores),
            "chosen_k": k,
            "segment_sizes": dg.MetadataValue.json(np.bincount(embedding_segments).tolist()),
            "auc_by_segment": markdown_table(ours),
            "auc_gain_plot": plot,
            "mlflow_run": dg.MetadataValue.url(link),
        }
    )
