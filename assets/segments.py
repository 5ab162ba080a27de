"""Segments from the embeddings, their per-segment models and profiles, kept with their
history."""

from datetime import UTC, datetime

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from segmentation_dagster.core import profiles as profiling
from segmentation_dagster.core.plots import embedding_density
from segmentation_dagster.core.segment_models import SegmentItemModel
from segmentation_dagster.core.selection import SegmentedModelEmbedding
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.settings import RandomSeed

from .common import (
    chosen_method,
    chosen_spec,
    figure_metadata,
    load_split_graphs,
    markdown_table,
)
from .methods import demographic_attributes

SEGMENTS_EXPERIMENT = "segments"


@dg.asset(
    deps=["k_selection", "customer_embeddings"],
    group_name="segments",
    kinds={"python", "duckdb", "mlflow"},
)
def customer_segments(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """The current segment of every customer: k-means on the embeddings with the chosen
    spec (step 3; segments under the minimum share folded into the nearest), numbered by
    increasing like-rate, and each segment's model of the chosen class (step 4):
    ``segment_models`` (one row per segment) and, for item-level models,
    ``segment_item_rates`` (the observed segment x item pairs; any other pair is the
    pooled item rate shifted by the segment's offset).

    These are the run's working tables; ``published_segments`` publishes them (with the
    history of past runs) once every check has passed.
    """
    split = load_split_graphs(duckdb)
    spec = chosen_spec(duckdb)
    method = chosen_method(duckdb, split.train, random_seed.value).fit(split.train)
    embedding = duckdb.read_table("customer_embeddings").set_index("customer_id")[
        "embedding"].reindex(split.train.customer_ids).to_numpy()
    segments = pd.DataFrame({
        "customer_id": split.train.customer_ids, "segment": method.labels_,
        "embedding": embedding, "run_id": context.run.run_id,
        "created_at": datetime.now(UTC).replace(tzinfo=None),
    })
    models = pd.DataFrame({
        "segment": np.arange(method.n_segments_), "alpha": method.segment_alpha_,
        "customers": method.segment_sizes_,
        "centre": np.bincount(method.labels_, embedding) / method.segment_sizes_,
        "segment_model": type(method.segment_model_).__name__,
        "strength": float(method.segment_model_.strength_),
    })
    with duckdb.connect() as con:
        con.execute("BEGIN TRANSACTION")
        for name, frame in (("customer_segments", segments), ("segment_models", models),
                            ("segment_item_rates", segment_item_rates(method, split.train))):
            con.register("frame_to_write", frame)
            con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT * FROM frame_to_write")
            con.unregister("frame_to_write")
        con.execute("COMMIT")
    duckdb.run_model("segment_sizes")

    figure = embedding_density(embedding, method.labels_, f"Segments (K={method.n_segments_})")
    plot, path = figure_metadata(figure, "segments", state_folder.folder("figures"))
    with mlflow_tracker.run(SEGMENTS_EXPERIMENT, f"K={method.n_segments_}", context) as run:
        mlflow.log_params({name: str(value) for name, value in spec.items()})
        mlflow.log_metrics({f"alpha_{k}": a for k, a in enumerate(method.segment_alpha_)})
        mlflow.log_artifact(str(path))
        link = mlflow_tracker.run_link(run)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(segments),
        "chosen_k": int(method.n_segments_),
        "segment_sizes": dg.MetadataValue.json(method.segment_sizes_.tolist()),
        "segment_models": markdown_table(models),
        "preview": markdown_table(segments.drop(columns=["run_id"]), 10),
        "density_with_boundaries": plot,
        "mlflow_run": dg.MetadataValue.url(link),
    })


def segment_item_rates(method: SegmentedModelEmbedding, graph) -> pd.DataFrame:
    """The item-level segment model's observed (segment, item) cells, with their rates;
    empty for segment models that are not per item."""
    model = method.segment_model_
    columns = {"segment": pd.Series(dtype="int64"), "item_id": pd.Series(dtype="string"),
               "edges": pd.Series(dtype="int64"), "likes": pd.Series(dtype="float64"),
               "rate": pd.Series(dtype="float64")}
    if not isinstance(model, SegmentItemModel):
        return pd.DataFrame(columns)
    segment, item = np.divmod(model.pair_keys_, model.n_units_)
    return pd.DataFrame({
        "segment": segment, "item_id": graph.item_ids[item], "edges": model.pair_edges_,
        "likes": model.pair_likes_, "rate": model.predict_segment_proba(segment, item),
    })


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
