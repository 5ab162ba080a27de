"""Segments from the embeddings, their per-segment models and profiles, kept with their
history."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from segmentation_dagster.core import profiles as profiling
from segmentation_dagster.core.choice import SegmentedPurchaseModel
from segmentation_dagster.core.clustering import as_2d
from segmentation_dagster.core.plots import embedding_density
from segmentation_dagster.core.segment_models import SegmentItemModel
from segmentation_dagster.core.selection import SegmentedModelEmbedding
from segmentation_dagster.core.stability import SegmentMatching
from segmentation_dagster.core.value_segments import DistinctValueSegmenter
from segmentation_dagster.core.vector_scale import SQL_RANK, ClusterSegmentMap
from segmentation_dagster.engine import SQLEngine
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.settings import RandomSeed

from .common import (
    chosen_method,
    chosen_spec,
    figure_metadata,
    inline_density,
    load_split_graphs,
    table_metadata,
)
from .embedding import DENSITY_SAMPLE, POOLED_PRIOR_STRENGTH
from .methods import demographic_attributes
from .refresh import (
    PreviousRun,
    match_to_previous,
    matching_table,
    previous_segments_table,
    read_previous_run,
)

SEGMENTS_EXPERIMENT = "segments"


@dg.asset(
    deps=["k_selection", "customer_embeddings"],
    group_name="segments",
    kinds={"python", "sql", "mlflow"},
)
def customer_segments(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    engine: SQLEngine,
    mlflow_tracker: MLflowTracker,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """The current segment of every customer: k-means on the embeddings with the chosen
    spec (step 3; segments under the minimum share folded into the nearest), and each
    segment's model of the chosen class (step 4). Segment ids are STABLE: the first run
    numbers the segments by increasing like-rate; a refresh matches its segments to the
    last published run's (shared customers, then profile: assets/refresh.py), so a
    matched segment keeps its id, a new one gets an id never used before, and a vanished
    id is not reused (ids may have gaps). The tables:
    ``segment_models`` (one row per segment) and, for item-level models,
    ``segment_item_rates`` (the observed segment x item pairs; any other pair is the
    pooled item rate shifted by the segment's offset); ``segment_centres`` (the stored
    cluster centres that place new customers); ``segment_matching`` and
    ``previous_customer_segments`` (how the ids were matched, for segment_stability).

    These are the run's working tables; ``published_segments`` publishes them (with the
    history of past runs) once every check has passed.

    When the engine segments every customer (edge_sample), exact 1-D k-means runs on the
    embedding's distinct values (core.value_segments), the engine assigns each customer
    by a range join (dbt_like_sql/customer_segments.sql) and fits the item-level
    segment models (segment_item_rates.sql), with the strength chosen on the sample.
    Under the vector embedding, k-means (scikit-learn on DuckDB, Spark MLlib on Spark)
    sends back K centres and the engine assigns every customer to the nearest
    (vector_segments_in_engine).
    """
    spec = chosen_spec(duckdb)
    if spec["in_engine"]:
        return segments_in_engine(context, duckdb, engine, mlflow_tracker, state_folder, spec,
                                  random_seed.value)
    split = load_split_graphs(duckdb)
    method = chosen_method(duckdb, split.train, random_seed.value).fit(split.train)
    embedding = duckdb.read_table("customer_embeddings").set_index("customer_id")[
        "embedding"].reindex(split.train.customer_ids).to_numpy()
    centres = np.bincount(method.labels_, embedding) / method.segment_sizes_
    # stable ids: matched to the last published run's segments (assets/refresh.py)
    previous = read_previous_run(Path(state_folder.path))
    matching = match_to_previous(previous, split.train.customer_ids, method.labels_,
                                 method.segment_alpha_, centres)
    ids = np.array([matching.mapping[k] for k in range(method.n_segments_)], dtype=np.int64)
    context.log.info(identity_message(matching, previous))
    segments = pd.DataFrame({
        "customer_id": split.train.customer_ids, "segment": ids[method.labels_],
        "embedding": embedding, "run_id": context.run.run_id,
        "created_at": datetime.now(UTC).replace(tzinfo=None),
        "fitted_edges": fitted_edges(duckdb, split.train.customer_ids),
    })
    models = pd.DataFrame({
        "segment": ids, "alpha": method.segment_alpha_,
        "customers": method.segment_sizes_,
        "centre": centres,
        "segment_model": type(method.segment_model_).__name__,
        "strength": float(method.segment_model_.strength_),
    })
    duckdb.write_tables({
        "customer_segments": segments, "segment_models": models,
        "segment_item_rates": segment_item_rates(method, split.train, ids),
        "segment_centres": segment_centres(method, ids),
        "segment_matching": matching_table(matching, context.run.run_id, previous),
        "previous_customer_segments": previous_segments_table(previous),
    })
    engine.run_model("segment_sizes")
    engine.copy_to_store(duckdb, "segment_sizes")
    return segments_result(context, mlflow_tracker, state_folder, spec, embedding,
                           ids[method.labels_], ids, method.segment_alpha_, models,
                           segments.drop(columns=["run_id"]).head(10))


def segments_in_engine(context: dg.AssetExecutionContext, duckdb: DuckDBStore,
                       engine: SQLEngine, mlflow_tracker: MLflowTracker,
                       state_folder: StateFolder, spec: dict,
                       seed: int = 0) -> dg.MaterializeResult:
    """customer_segments for every customer by the engine: the distinct embedding values
    come back (not the customers), the cluster ranges go out, the engine joins. The
    vector embedding: vector_segments_in_engine."""
    if spec["category_rank"] is not None:
        return vector_segments_in_engine(context, duckdb, engine, mlflow_tracker,
                                         state_folder, spec, seed)
    distinct = engine.read_table("embedding_values")
    segmenter = DistinctValueSegmenter(spec["k"], min_share=spec["min_share"]).fit(
        distinct["embedding"], distinct["customers"], distinct["likes"], distinct["edges"])
    # stable ids match customers with the last published run: one label per customer
    # (a column, never customers x items), placed by the same ranges as the join
    embedded = duckdb.query("SELECT customer_id, embedding FROM customer_embeddings")
    labels = segmenter.predict(embedded["embedding"].to_numpy())
    previous = read_previous_run(Path(state_folder.path))
    matching = match_to_previous(previous, embedded["customer_id"].to_numpy(), labels,
                                 segmenter.segment_alpha_, segmenter.segment_centres_)
    ids = np.array([matching.mapping[k] for k in range(segmenter.n_segments_)],
                   dtype=np.int64)
    context.log.info(identity_message(matching, previous))
    engine.write_table("segment_bounds", segmenter.bounds_table(ids))
    rows = engine.run_model("customer_segments", {
        "run_id": context.run.run_id,
        "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")})
    result = engine_segment_models(
        context, duckdb, engine, mlflow_tracker, state_folder, spec, segmenter, ids, labels,
        embedded["embedding"].to_numpy(), segment_centres=segmenter.segment_centres_,
        cluster_centres=[[float(c)] for c in segmenter.cluster_centers_],
        matching=matching, previous=previous)
    result.metadata["dagster/row_count"] = rows
    return result


def vector_segments_in_engine(context: dg.AssetExecutionContext, duckdb: DuckDBStore,
                              engine: SQLEngine, mlflow_tracker: MLflowTracker,
                              state_folder: StateFolder, spec: dict,
                              seed: int) -> dg.MaterializeResult:
    """customer_segments for every customer under the vector embedding: k-means on the
    engine's coordinates (scikit-learn on DuckDB, Spark MLlib on Spark) sends back K
    centres; the engine assigns every customer to the nearest (vector_clusters.sql);
    per-cluster sums come back, small clusters fold and segments are numbered by
    like-rate (core.vector_scale.ClusterSegmentMap), and the cluster -> segment map goes
    out for the engine's join (vector_segments.sql, in customer_segments' columns)."""
    rank, k = int(spec["category_rank"]), int(spec["k"])
    columns = [f"e{a}" for a in range(rank)]
    if k > 1:
        centres = engine.kmeans_centres("vector_coordinates", columns, k, seed,
                                        order_by="customer_id")
    else:  # one segment: every customer in cluster 0, its centre the origin as in memory
        centres = np.zeros((1, rank))
    padded = np.zeros((len(centres), SQL_RANK))
    padded[:, :rank] = centres
    engine.write_table("vector_centres", pd.DataFrame({
        "cluster": np.arange(len(centres), dtype=np.int64),
        **{f"c{a}": padded[:, a] for a in range(SQL_RANK)}}))
    engine.run_model("vector_clusters")
    sums = ", ".join(f"CAST(sum({c}) AS DOUBLE) AS sum_{c}" for c in columns)
    clusters = engine.query(
        "SELECT cluster, CAST(count(*) AS BIGINT) AS customers, "
        "CAST(sum(likes) AS BIGINT) AS likes, CAST(sum(degree) AS BIGINT) AS edges, "
        f"{sums} FROM vector_clusters GROUP BY cluster").set_index("cluster").reindex(
            np.arange(len(centres)), fill_value=0)
    segmenter = ClusterSegmentMap(min_share=spec["min_share"]).fit(
        clusters["customers"], clusters[[f"sum_{c}" for c in columns]], clusters["likes"],
        clusters["edges"], centres=centres)
    # stable ids match customers with the last published run: one label per customer
    assigned = engine.query("SELECT customer_id, cluster, e0 FROM vector_clusters "
                            "ORDER BY customer_id")
    labels = segmenter.cluster_map_[assigned["cluster"].to_numpy(dtype=np.int64)]
    previous = read_previous_run(Path(state_folder.path))
    # the profile's centre is the segment's mean first coordinate, as in memory
    first = segmenter.segment_centres_[:, 0]
    matching = match_to_previous(previous, assigned["customer_id"].to_numpy(), labels,
                                 segmenter.segment_alpha_, first)
    ids = np.array([matching.mapping[s] for s in range(segmenter.n_segments_)],
                   dtype=np.int64)
    context.log.info(identity_message(matching, previous))
    engine.write_table("cluster_segments", segmenter.map_table(ids))
    # the downstream models read customer_segments: vector_segments builds it, in its
    # columns, in place of the range join
    rows = engine.run_model("vector_segments", {
        "run_id": context.run.run_id,
        "created_at": datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")},
        into="customer_segments")
    result = engine_segment_models(
        context, duckdb, engine, mlflow_tracker, state_folder, spec, segmenter, ids, labels,
        assigned["e0"].to_numpy(dtype=float), segment_centres=first,
        cluster_centres=[row.astype(float).tolist() for row in segmenter.cluster_centers_],
        matching=matching, previous=previous)
    result.metadata.update({"dagster/row_count": rows, "clustered_by": (
        "Spark MLlib KMeans" if engine.name == "spark" else "scikit-learn KMeans")})
    return result


def engine_segment_models(context: dg.AssetExecutionContext, duckdb: DuckDBStore,
                          engine: SQLEngine, mlflow_tracker: MLflowTracker,
                          state_folder: StateFolder, spec: dict, segmenter, ids: np.ndarray,
                          labels: np.ndarray, embedding: np.ndarray,
                          segment_centres: np.ndarray, cluster_centres: list,
                          matching: SegmentMatching,
                          previous: PreviousRun | None) -> dg.MaterializeResult:
    """After the engine built customer_segments (by ranges or by nearest centre): the
    per-segment models and every customer's validation score on the engine, the small
    tables in the store, and the asset's result. ``labels``/``embedding``: one per
    customer, for the density figure's sample."""
    engine.copy_to_store(duckdb, "customer_segments")
    item_level = spec["segment_model"] == "item" or spec["pooled"] in ("item", "category:item")
    engine.run_model("item_unit_rates", {"pooled_strength": POOLED_PRIOR_STRENGTH})
    engine.run_model("segment_summaries")
    if item_level:
        engine.run_model("segment_item_rates", {"strength": float(spec["strength"])})
    else:
        engine.write_table("segment_item_rates", empty_item_rates())
    engine.copy_to_store(duckdb, "segment_item_rates")
    validation = validation_score(engine, item_level, float(spec["strength"]))
    models = pd.DataFrame({
        "segment": ids, "alpha": segmenter.segment_alpha_,
        "customers": segmenter.segment_sizes_, "centre": segment_centres,
        "segment_model": "SegmentItemModel" if item_level else "SegmentGlobalModel",
        "strength": float(spec["strength"]),
    })
    centres = pd.DataFrame({
        "cluster": np.arange(len(cluster_centres)),
        "segment": ids[segmenter.cluster_map_],
        "centre": pd.Series(cluster_centres, dtype=object),
    })
    duckdb.write_tables({
        "segment_models": models, "segment_centres": centres,
        "segment_matching": matching_table(matching, context.run.run_id, previous),
        "previous_customer_segments": previous_segments_table(previous),
    })
    engine.run_model("segment_sizes")
    engine.copy_to_store(duckdb, "segment_sizes")
    shown = np.random.default_rng(0).permutation(len(embedding))[:DENSITY_SAMPLE]
    preview = duckdb.query("SELECT * EXCLUDE (run_id) FROM customer_segments "
                           "ORDER BY customer_id LIMIT 10")
    result = segments_result(context, mlflow_tracker, state_folder, spec, embedding[shown],
                             ids[labels[shown]], ids, segmenter.segment_alpha_, models,
                             preview)
    result.metadata.update({"computed_by": engine.name, **validation})
    return result


def validation_score(engine: SQLEngine, item_level: bool, strength: float) -> dict:
    """The chosen segmentation's validation log-likelihood on EVERY customer (the
    engine's dbt_like_sql/validation_log_likelihood.sql), on the scale k_selection chose
    by on the sample: the mean over customers with validation edges, and its SE."""
    engine.run_model("validation_log_likelihood", {
        "segment_model": "item" if item_level else "global", "strength": strength})
    summary = engine.query(
        "SELECT avg(log_likelihood) AS mean, stddev_samp(log_likelihood) AS sd, "
        "count(*) AS customers FROM validation_log_likelihood").iloc[0]
    customers = int(summary["customers"])
    se = float(summary["sd"]) / np.sqrt(customers) if customers > 1 else float("nan")
    return {"validation_log_likelihood_all_customers": float(summary["mean"]),
            "validation_log_likelihood_se": float(se), "validation_customers": customers}


def segments_result(context: dg.AssetExecutionContext, mlflow_tracker: MLflowTracker,
                    state_folder: StateFolder, spec: dict, embedding: np.ndarray,
                    segment_of: np.ndarray, ids: np.ndarray, alpha: np.ndarray,
                    models: pd.DataFrame, preview: pd.DataFrame) -> dg.MaterializeResult:
    """customer_segments' metadata and MLflow run (``embedding`` and ``segment_of``: the
    customers drawn in the figures, every one or a sample)."""
    k = len(ids)
    path, link = log_segments(mlflow_tracker, context, state_folder, spec, embedding,
                              segment_of, ids, alpha)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": int(models["customers"].sum()),
        "chosen_k": k,
        "segment_sizes": dg.MetadataValue.json(models["customers"].astype(int).tolist()),
        "segment_models": table_metadata(models),
        "preview": table_metadata(preview, 10),
        # inline: short SVG markdown shows without a click (the PNG is in MLflow)
        "density_with_boundaries": inline_density(
            embedding, segment_of, f"Embedding density, K={k} (red: boundaries)"),
        "density_figure_file": dg.MetadataValue.path(str(path)),
        "mlflow_run": dg.MetadataValue.url(link),
    })


def log_segments(mlflow_tracker: MLflowTracker, context: dg.AssetExecutionContext,
                 state_folder: StateFolder, spec: dict, embedding: np.ndarray,
                 segment_of: np.ndarray, ids: np.ndarray, alpha: np.ndarray
                 ) -> tuple[Path, str]:
    """The density figure with the segment boundaries, and an MLflow run with the spec and
    each segment's like-rate under its stable id."""
    figure = embedding_density(embedding, segment_of, f"Segments (K={len(ids)})")
    _, path = figure_metadata(figure, "segments", state_folder.folder("figures"))
    with mlflow_tracker.run(SEGMENTS_EXPERIMENT, f"K={len(ids)}", context) as run:
        mlflow.log_params({name: str(value) for name, value in spec.items()})
        mlflow.log_metrics({f"alpha_{k}": a for k, a in zip(ids, alpha, strict=True)})
        mlflow.log_artifact(str(path))
        return path, mlflow_tracker.run_link(run)


def segment_item_rates(method: SegmentedModelEmbedding, graph,
                       ids: np.ndarray | None = None) -> pd.DataFrame:
    """The item-level segment model's observed (segment, item) cells, with their rates;
    empty for segment models that are not per item. ``ids`` maps the fit's labels to
    stable segment ids (default: the labels)."""
    model = method.segment_model_
    if not isinstance(model, SegmentItemModel):
        return empty_item_rates()
    segment, item = np.divmod(model.pair_keys_, model.n_units_)
    stable = segment if ids is None else np.asarray(ids)[segment]
    return pd.DataFrame({
        "segment": stable, "item_id": graph.item_ids[item], "edges": model.pair_edges_,
        "likes": model.pair_likes_, "rate": model.predict_segment_proba(segment, item),
    })


def empty_item_rates() -> pd.DataFrame:
    """segment_item_rates for segment models that are not per item: no rows."""
    return pd.DataFrame({"segment": pd.Series(dtype="int64"),
                         "item_id": pd.Series(dtype="string"),
                         "edges": pd.Series(dtype="int64"),
                         "likes": pd.Series(dtype="float64"),
                         "rate": pd.Series(dtype="float64")})


def segment_centres(method: SegmentedModelEmbedding | SegmentedPurchaseModel,
                    ids: np.ndarray) -> pd.DataFrame:
    """One row per cluster of the fit (before small clusters were folded into large
    ones): its centre in the embedding and the stable id of the segment it maps to. With
    the pooled model, exactly what ``assign`` uses to place a new customer
    (segmentation_dagster/score.py); K=1 stores one cluster (centre [0.0])."""
    if isinstance(method, SegmentedPurchaseModel):
        fitted = None if method.clusterer_ is None else method.clusterer_.cluster_centers_
    else:
        fitted = None if method.segmenter_ is None else method.segmenter_.cluster_centers_
    centres = np.zeros((1, 1)) if fitted is None else as_2d(fitted)
    return pd.DataFrame({
        "cluster": np.arange(len(centres)),
        "segment": np.asarray(ids)[method.cluster_map_[:len(centres)]],
        "centre": pd.Series([row.astype(float).tolist() for row in centres], dtype=object),
    })


def fitted_edges(duckdb: DuckDBStore, customer_ids: np.ndarray) -> np.ndarray:
    """Each customer's number of preference edges when segmented: a later run assigns
    the customers whose edges grew since (new_customer_segments)."""
    counts = duckdb.query("SELECT customer_id, count(*) AS n FROM preference_edges "
                          "GROUP BY customer_id").set_index("customer_id")["n"]
    return counts.reindex(customer_ids).fillna(0).to_numpy(dtype=np.int64)


def identity_message(matching: SegmentMatching, previous: PreviousRun | None) -> str:
    """One log line on how the segments got their ids."""
    if matching.first_run:
        return ("first run: no published segmentation to match, segments numbered by "
                "like-rate")
    table = matching.table()
    kept = table[table["method"] != "new"]
    return (f"segment ids matched to published run {previous.run_id}: "
            f"{len(kept)} kept ({int((table['method'] == 'profile').sum())} by profile), "
            f"new {matching.new_segments or 'none'}, vanished {matching.vanished or 'none'}")


@dg.asset(deps=[customer_segments, "pooled_model"], group_name="segments",
          kinds={"python", "duckdb", "mlflow"})
def segment_profiles(
    context: dg.AssetExecutionContext, duckdb: DuckDBStore, mlflow_tracker: MLflowTracker
) -> dg.MaterializeResult:
    """What sets each segment apart: its size, like-rate and activity; the categories
    and items it likes much more or less than the pooled model predicts (lift shrunk
    toward 1, with a minimum support, so one-off items do not top the list); its
    demographic mix when customers have attributes. Tables ``segment_profiles`` and
    ``segment_profile_<categories|items|demographics>``."""
    split = load_split_graphs(duckdb)
    labels = duckdb.read_table("customer_segments").set_index("customer_id")[
        "segment"].reindex(split.train.customer_ids).to_numpy()
    pooled = duckdb.read_table("pooled_model_items").set_index("item_id")["p_like"]
    profiles = profiling.segment_profiles(
        split.train, labels, pooled.reindex(split.train.item_ids).to_numpy(),
        customer_attributes=demographic_attributes(duckdb),
    )
    tables = profiles.tables()
    for name, frame in tables.items():
        table = "segment_profiles" if name == "summary" else f"segment_profile_{name}"
        duckdb.write_table(table, frame.astype({c: "string" for c in frame.columns
                                                if frame[c].dtype == object}))
    text = profiling.profiles_markdown(profiles)
    with mlflow_tracker.run(SEGMENTS_EXPERIMENT, "profiles", context) as run:
        mlflow.log_text(text, "segment_profiles.md")
        for name, frame in tables.items():
            mlflow.log_table(frame, f"profiles_{name}.json")
        link = mlflow_tracker.run_link(run)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(profiles.summary),
        "profiles": dg.MetadataValue.md(text),
        "mlflow_run": dg.MetadataValue.url(link),
    })
