"""The paper's MovieLens case study as assets: cold-start accuracy on new movies per
genre (Tables 2, 3, 7) and across genres (Table 8), and a report with its figures.

Any source whose items carry ``genre_*`` columns runs it (MovieLens does); other sources
record that it does not apply. The protocol is ``core.cold_start``'s; this module maps its
tidy summaries to score rows (``segmentation_dagster.scores``) and records them.
"""

import dagster as dg
import mlflow
import pandas as pd

from segmentation_dagster.core.cold_start import (
    ColdStartResult,
    demographic_attributes,
    like_edges,
    run_cold_start,
    run_multi_genre,
    single_genre_movies,
)
from segmentation_dagster.core.movielens import genre_column, genre_items
from segmentation_dagster.core.plots import bar_chart, embedding_density
from segmentation_dagster.core.registry import METHODS, MethodContext
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.scores import record_scores, score_frame, score_row
from segmentation_dagster.settings import ColdStartSettings, RandomSeed

from .common import embed_local_images, figure_metadata, markdown_table, source_info

COLD_START_EXPERIMENT = "cold_start"
TASK = "cold_start"
MULTI_GENRE_TASK = "cold_start_multi_genre"


def score_table(
    summary: pd.DataFrame, dataset: str, task: str = TASK, add_mean: bool = False
) -> pd.DataFrame:
    """Score rows (metric accuracy, slice = genre) from a cold-start summary with columns
    genre, method, n_segments, accuracy, seconds.

    ``add_mean`` adds slice 'all' per method: the mean accuracy over the genres (summed
    seconds, no K), unless the summary already has an 'all' slice.
    """
    table = score_frame(
        score_row(dataset, task, r.method, "accuracy", r.accuracy, r.n_segments, r.seconds,
                  str(r.genre))
        for r in summary.itertuples()
    )
    if add_mean and len(table) and not (table["slice"] == "all").any():
        mean = table.groupby("method", sort=False).agg(
            value=("value", "mean"), seconds=("seconds", "sum")).reset_index()
        mean = mean.assign(dataset=dataset, task=task, slice="all", metric="accuracy",
                           n_segments=pd.array([pd.NA] * len(mean), dtype="Int64"))
        table = score_frame(pd.concat(
            [table.astype({"n_segments": "Int64"}), score_frame(mean)], ignore_index=True))
    return table


def _skipped(duckdb: DuckDBStore, dataset: str) -> dg.MaterializeResult:
    """Empty tables (a previous source's rows must not survive) and why."""
    record_scores(duckdb, "cold_start_scores", [])
    no_genre = pd.DataFrame({"genre": pd.Series(dtype=str)})
    for table in ("cold_start_segments", "cold_start_k_sweep"):
        duckdb.write_table(table, no_genre)
    duckdb.write_table("cold_start_embeddings", no_genre.assign(
        embedding=pd.Series(dtype=float), segment=pd.Series(dtype=int)))
    return dg.MaterializeResult(
        metadata={"skipped": f"the {dataset} items have no genre columns", "rows": 0}
    )


def _embeddings(result: ColdStartResult) -> pd.DataFrame:
    """Each genre's model-embedding coordinate and segment per training user (Figure 1)."""
    return pd.concat(
        [pd.DataFrame({"genre": g.genre,
                       "embedding": g.models["model_embedding"].embedding_,
                       "segment": g.models["model_embedding"].labels_})
         for g in result.genres],
        ignore_index=True,
    )


def _log_k_sweeps(mlflow_tracker: MLflowTracker, context: dg.AssetExecutionContext,
                  result: ColdStartResult) -> None:
    """One MLflow run per (genre, method) with its validation and test accuracy by K."""
    for genre_result in result.genres:
        chosen_k = genre_result.summary.set_index("method")["n_segments"]
        for method, sweep in genre_result.k_sweep.groupby("method"):
            tags = {"genre": genre_result.genre, "method": method,
                    "chosen_k": str(chosen_k[method])}
            with mlflow_tracker.run(COLD_START_EXPERIMENT, f"{genre_result.genre}/{method}",
                                    context, tags=tags):
                for row in sweep.itertuples():
                    mlflow.log_metrics(
                        {"validation_accuracy": row.validation_accuracy,
                         "test_accuracy": row.accuracy, "seconds": row.seconds},
                        step=int(row.n_segments),
                    )


@dg.asset(
    deps=["raw_interactions", "raw_items", "raw_customers"],
    group_name="cold_start",
    kinds={"python", "duckdb", "mlflow"},
)
def cold_start_evaluation(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    cold_start_settings: ColdStartSettings,
    random_seed: RandomSeed,
) -> dg.MaterializeResult:
    """New-movie like prediction per genre: train on movies with >= 30 ratings, choose K
    on those with <= 50, test on the rest, for every method of the pipeline's registry
    (Tables 2, 3, 7), then the multi-genre partially specified model (Table 8). Rows go to
    ``cold_start_scores`` and, one run per method, to MLflow."""
    items = duckdb.read_table("raw_items")
    genres = [g for g in cold_start_settings.genres if genre_column(g) in items.columns]
    dataset = source_info(duckdb, "dataset")
    if not genres:
        return _skipped(duckdb, dataset)
    edges = like_edges(duckdb.query(
        "SELECT customer_id, item_id, value FROM raw_interactions ORDER BY timestamp"))
    users = duckdb.read_table("raw_customers")
    attributes = (demographic_attributes(users)
                  if {"age", "gender"} <= set(users.columns) else None)
    methods = [name for name, spec in METHODS.items() if spec.in_pipeline]
    seed, ks = random_seed.value, cold_start_settings.ks
    result = run_cold_start(
        edges, {g: genre_items(items, g) for g in genres}, methods, ks,
        context=MethodContext(customer_attributes=attributes), random_state=seed,
    )
    scores = [score_table(result.summary, dataset)]
    if cold_start_settings.multi_genre and len(genres) > 1:
        multi = run_multi_genre(edges, single_genre_movies(items, genres), ks=ks,
                                random_state=seed)
        rows = score_table(multi.summary, dataset, MULTI_GENRE_TASK)
        # the multi-genre run's overall accuracy is the cold_start task's 'all' slice
        overall = rows["slice"] == "all"
        scores += [rows[overall].assign(task=TASK), rows[~overall]]
    table = record_scores(duckdb, "cold_start_scores", pd.concat(scores, ignore_index=True))
    duckdb.write_table("cold_start_segments", result.segments)
    duckdb.write_table("cold_start_k_sweep", result.k_sweep)
    duckdb.write_table("cold_start_embeddings", _embeddings(result))
    _log_k_sweeps(mlflow_tracker, context, result)
    summary = table[table["task"] == TASK].pivot_table(
        index="method", columns="slice", values="value").reset_index()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "genres": ", ".join(genres),
            "accuracy": markdown_table(summary),
            "segments": markdown_table(result.segments, 30),
            "mlflow_experiment": dg.MetadataValue.url(
                mlflow_tracker.experiment_link(COLD_START_EXPERIMENT)
            ),
        }
    )


@dg.asset(
    deps=[cold_start_evaluation, "segment_classifiers"],
    group_name="cold_start",
    kinds={"python", "matplotlib"},
)
def case_study_report(duckdb: DuckDBStore, state_folder: StateFolder) -> dg.MaterializeResult:
    """A markdown report with PNG figures: the embedding density per genre with segment
    boundaries (Figure 1), accuracy by method and genre, and AUC by segment."""
    folder = state_folder.folder("report")
    figures = state_folder.folder("figures")
    scores = duckdb.read_table("cold_start_scores")
    embeddings = duckdb.read_table("cold_start_embeddings")
    auc = duckdb.query(
        "SELECT slice, method, value FROM segment_classifier_scores WHERE method != 'demographic'"
    )
    sections, metadata = ["# Segmentation case study", ""], {}
    for genre, part in embeddings.groupby("genre"):
        figure = embedding_density(part["embedding"].to_numpy(), part["segment"].to_numpy(),
                                   f"{genre}: embedding density and segments")
        metadata[f"density_{genre}"], path = figure_metadata(
            figure, f"report_density_{genre}", figures)
        sections += [f"## {genre}", f"![{genre}]({path})", ""]
    cold = scores[scores["task"] == TASK]
    if len(cold):
        pivot = cold.pivot_table(index="method", columns="slice", values="value")
        sections += ["## Cold-start accuracy", pivot.round(3).to_markdown(), ""]
        labels = [f"{m}/{s}" for m, s in zip(cold["method"], cold["slice"], strict=True)]
        figure = bar_chart(labels, list(cold["value"]), "Cold-start accuracy", "accuracy")
        metadata["accuracy_by_method"], path = figure_metadata(figure, "report_accuracy", figures)
        sections += [f"![accuracy]({path})", ""]
    if len(auc):
        pivot = auc.pivot_table(index="slice", columns="method", values="value")
        sections += ["## Per-segment classifier AUC", pivot.round(3).to_markdown(), ""]
        ours = auc[auc["method"] == "model_embedding"]
        figure = bar_chart(list(ours["slice"]), list(ours["value"]), "AUC by segment", "AUC")
        metadata["auc_by_segment"], path = figure_metadata(figure, "report_auc", figures)
        sections += [f"![auc]({path})", ""]
    report = folder / "report.md"
    report.write_text("\n".join(sections))
    return dg.MaterializeResult(
        metadata={**metadata, "report": dg.MetadataValue.path(str(report)),
                  "preview": dg.MetadataValue.md(embed_local_images("\n".join(sections[:40]))),
                  "figures": len(metadata), "genres": int(embeddings["genre"].nunique())}
    )
