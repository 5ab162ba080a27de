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
    edge_features,
    segment_auc_table,
)
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder

from .common import (
    MethodSettings,
    SplitGraphs,
    chosen_k,
    figure_metadata,
    item_features,
    load_split_graphs,
    markdown_table,
)
from .methods import SCORE_COLUMNS

CLASSIFIER_EXPERIMENT = "segment_classifiers"


def classifier_features(duckdb: DuckDBStore, split: SplitGraphs) -> np.ndarray:
    """Item features plus two learned from training edges only: log popularity and the
    item's like-rate smoothed towards the overall rate (a 5-pseudo-edge prior)."""
    train = split.train
    degrees = train.item_degrees()
    alpha = float((train.matrix.data == 1).mean())
    like_rate = (train.item_likes() + 5 * alpha) / (degrees + 5)
    learned = np.column_stack([np.log1p(degrees), like_rate])
    learned = (learned - learned.mean(axis=0)) / learned.std(axis=0).clip(min=1e-9)
    return np.column_stack([item_features(duckdb, train.item_ids), learned])


@dg.asset(
    deps=["k_selection", "method_demographic"],
    group_name="segments",
    kinds={"scikitlearn", "duckdb", "mlflow"},
)
def segment_classifiers(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    method_settings: MethodSettings,
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
    rows, cols, labels = split.train.edges()
    test_rows, test_cols, test_labels = split.test
    x_train, x_test = edge_features(features, cols), edge_features(features, test_cols)
    k = chosen_k(duckdb)
    embedding_segments = ModelEmbeddingSegmenter(
        k, pooled="features", pooled_kwargs={"item_features": features},
        random_state=method_settings.seed,
    ).fit(split.train).labels_
    duckdb.write_table("classifier_segments", pd.DataFrame(
        {"customer_id": split.train.customer_ids, "segment": embedding_segments}))
    segmentations = {"model_embedding": embedding_segments}
    demographic = (duckdb.read_table("segments_demographic")
                   if duckdb.table_exists("segments_demographic") else None)
    if demographic is not None and len(demographic):
        segmentations["demographic"] = (
            demographic.set_index("customer_id")["segment"]
            .reindex(split.train.customer_ids).to_numpy()
        )

    score_tables, summaries = [], {}
    for method, segments in segmentations.items():
        model = SegmentClassifiers().fit(x_train, labels, segments[rows])
        p_segment = model.predict_proba(x_test, segments[test_rows])
        p_population = model.population_proba(x_test)
        aucs = segment_auc_table(test_labels, p_segment, p_population, segments[test_rows])
        summaries[method] = aucs
        n_segments = int(len(np.unique(segments)))
        for column, name in (("auc_segment", method), ("auc_population", "population")):
            if name == "population" and method != "model_embedding":
                continue
            score_tables.append(pd.DataFrame({
                "dataset": split.dataset, "task": "segment_classifier",
                "slice": aucs["slice"], "method": name, "metric": "auc",
                "value": aucs[column], "n_segments": n_segments if name == method else 1,
                "seconds": np.nan,
            }))
        if method == "model_embedding":
            with mlflow_tracker.run(CLASSIFIER_EXPERIMENT, "per-segment logistic", context) as run:
                # explicit requirements: MLflow's inference of them costs seconds per model
                requirements = [f"scikit-learn=={sklearn.__version__}"]
                for segment, classifier in model.models_.items():
                    mlflow.sklearn.log_model(classifier, name=f"segment_{segment}",
                                             pip_requirements=requirements)
                mlflow.sklearn.log_model(model.population_, name="population",
                                         pip_requirements=requirements)
                mlflow.log_metrics({
                    f"auc_{r.slice.replace(':', '_')}": r.auc_segment
                    for r in aucs.itertuples() if np.isfinite(r.auc_segment)
                })
                link = mlflow_tracker.run_link(run)
    scores = pd.concat(score_tables, ignore_index=True)[SCORE_COLUMNS]
    duckdb.write_table("segment_classifier_scores", scores)
    ours = summaries["model_embedding"]
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
