"""Segments from the embeddings, kept with their history."""

from datetime import UTC, datetime

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from segmentation_dagster.core.plots import embedding_density
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.settings import MethodSettings, RandomSeed

from .common import chosen_k, figure_metadata, load_split_graphs, markdown_table

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
    method_settings: MethodSettings,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """The current segment of every customer: k-means on the embeddings with the chosen K
    (step 3), numbered by increasing like-rate, and each segment's model alpha_k (step 4).

    The table is replaced and the run appended to ``segment_history`` in one transaction,
    so a failed run never leaves half a segmentation and past runs stay queryable.
    """
    split = load_split_graphs(duckdb)
    chosen = chosen_k(duckdb)
    values = duckdb.read_table("customer_embeddings").set_index("customer_id")
    embedding = values["embedding"].reindex(split.train.customer_ids).to_numpy()
    segmenter = ModelEmbeddingSegmenter(chosen, random_state=random_seed.value)
    segmenter.fit_embedding(split.train, embedding)

    created = datetime.now(UTC).replace(tzinfo=None)
    segments = pd.DataFrame(
        {
            "customer_id": split.train.customer_ids,
            "segment": segmenter.labels_,
            "embedding": embedding,
            "run_id": context.run.run_id,
            "created_at": created,
        }
    )
    models = pd.DataFrame(
        {
            "segment": np.arange(segmenter.n_segments_),
            "alpha": segmenter.segment_alpha_,
            "customers": segmenter.segment_sizes_,
            "centre": segmenter.cluster_centers_[:, 0],
        }
    )
    with duckdb.connect() as con:
        con.execute("BEGIN TRANSACTION")
        con.register("new_segments", segments)
        con.execute("CREATE OR REPLACE TABLE customer_segments AS SELECT * FROM new_segments")
        con.execute(
            "CREATE TABLE IF NOT EXISTS segment_history AS "
            "SELECT * FROM new_segments WHERE false"
        )
        con.execute("INSERT INTO segment_history SELECT * FROM new_segments")
        con.register("new_models", models)
        con.execute("CREATE OR REPLACE TABLE segment_models AS SELECT * FROM new_models")
        con.execute("COMMIT")
    duckdb.run_model("segment_sizes")

    figure = embedding_density(embedding, segmenter.labels_, f"Segments (K={chosen})")
    plot, path = figure_metadata(figure, "segments", state_folder.folder("figures"))
    with mlflow_tracker.run(SEGMENTS_EXPERIMENT, f"K={chosen}", context) as run:
        mlflow.log_params({"k": chosen, "pooled": method_settings.pooled,
                           "normalisation": method_settings.normalisation})
        mlflow.log_metrics({f"alpha_{k}": a for k, a in enumerate(segmenter.segment_alpha_)})
        mlflow.log_artifact(str(path))
        link = mlflow_tracker.run_link(run)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(segments),
            "chosen_k": chosen,
            "segment_sizes": dg.MetadataValue.json(segmenter.segment_sizes_.tolist()),
            "segment_models": markdown_table(models),
            "preview": markdown_table(segments.drop(columns=["run_id"]), 10),
            "density_with_boundaries": plot,
            "mlflow_run": dg.MetadataValue.url(link),
        }
    )
