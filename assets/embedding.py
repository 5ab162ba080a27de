"""The pooled model, the customer embeddings and the choice of K."""

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from segmentation_dagster.core.clustering import kde_modes
from segmentation_dagster.core.embedding import embed
from segmentation_dagster.core.k_sweep import K_SELECTION_METRICS, select_embedding_k
from segmentation_dagster.core.plots import embedding_density
from segmentation_dagster.core.pooled import (
    StoredPooledModel,
    edge_log_likelihood,
    make_pooled_model,
)
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.settings import MethodSettings, RandomSeed

from .common import (
    figure_metadata,
    item_features,
    load_split_graphs,
    markdown_table,
)

K_SELECTION_EXPERIMENT = "k_selection"


@dg.asset(deps=["edge_split", "raw_items"], group_name="embedding", kinds={"python", "duckdb"})
def pooled_model(duckdb: DuckDBStore, method_settings: MethodSettings) -> dg.MaterializeResult:
    """ONE model fitted to every customer's training edges pooled (step 1 of the method).

    Stored as each item's like-probability in ``pooled_model_items`` and a one-row
    ``pooled_model_summary``, so embeddings and new customers use it without a refit.
    """
    split = load_split_graphs(duckdb)
    kwargs = {}
    if "features" in method_settings.pooled:
        kwargs["item_features"] = item_features(duckdb, split.train.item_ids)
    model = make_pooled_model(method_settings.pooled, **kwargs).fit(split.train)
    item_proba = model.predict_proba(np.arange(split.train.n_items))
    items = pd.DataFrame({"item_id": split.train.item_ids, "p_like": item_proba})
    duckdb.write_table("pooled_model_items", items)
    duckdb.write_table(
        "pooled_model_summary",
        pd.DataFrame({"pooled": [method_settings.pooled], "alpha_pool": [model.alpha_pool_]}),
    )
    rows, cols, labels = split.validation
    validation_ll = float(edge_log_likelihood(model.predict_proba(cols), labels).mean())
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(items),
            "pooled_model": method_settings.pooled,
            "alpha_pool": float(model.alpha_pool_),
            "validation_mean_log_likelihood": validation_ll,
            "train_edges": split.train.n_edges,
        }
    )


def load_pooled(duckdb: DuckDBStore, item_ids: np.ndarray) -> StoredPooledModel:
    items = duckdb.read_table("pooled_model_items").set_index("item_id")["p_like"]
    alpha = duckdb.read_table("pooled_model_summary")["alpha_pool"].iloc[0]
    return StoredPooledModel(items.reindex(item_ids).fillna(alpha).to_numpy(), alpha)


@dg.asset(deps=[pooled_model], group_name="embedding", kinds={"python", "duckdb"})
def customer_embeddings(
    duckdb: DuckDBStore, method_settings: MethodSettings, state_folder: StateFolder
) -> dg.MaterializeResult:
    """Each customer's normalised negative log-likelihood under the pooled model (step 2)."""
    split = load_split_graphs(duckdb)
    pooled = load_pooled(duckdb, split.train.item_ids)
    values = embed(split.train, pooled, method_settings.normalisation)
    frame = pd.DataFrame(
        {
            "customer_id": split.train.customer_ids,
            "embedding": values,
            "degree": split.train.customer_degrees(),
            "likes": split.train.customer_likes(),
        }
    )
    duckdb.write_table("customer_embeddings", frame)
    modes = kde_modes(values)[0]
    plot, _ = figure_metadata(embedding_density(values, title="Embedding density"), "embeddings",
                              state_folder.folder("figures"))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "normalisation": method_settings.normalisation,
            "kde_modes": len(modes),
            "mean": float(values.mean()),
            "nan_embeddings": int(np.isnan(values).sum()),
            "density": plot,
        }
    )


@dg.asset(deps=[customer_embeddings], group_name="embedding", kinds={"python", "mlflow"})
def k_selection(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    method_settings: MethodSettings,
    random_seed: RandomSeed,
) -> dg.MaterializeResult:
    """Choose K: candidates from the KDE modes of the embedding (Figure 1), then the
    smallest K within one standard error of the best validation log-likelihood
    (``core.k_sweep.select_embedding_k``). One MLflow run per K; the chosen K is tagged."""
    split = load_split_graphs(duckdb)
    values = duckdb.read_table("customer_embeddings").set_index("customer_id")
    embedding = values["embedding"].reindex(split.train.customer_ids).to_numpy()
    selection = select_embedding_k(split.train, embedding, split.validation,
                                   method_settings.k_min, method_settings.k_max,
                                   random_state=random_seed.value)
    table, links = selection.table, {}
    for row in table.itertuples(index=False):
        tags = {"chosen": str(row.chosen)}
        with mlflow_tracker.run(K_SELECTION_EXPERIMENT, f"K={row.k}", context, tags) as run:
            mlflow.log_params({"k": row.k, "segment_sizes": row.segment_sizes})
            mlflow.log_metrics({m: getattr(row, m) for m in K_SELECTION_METRICS})
            links[row.k] = mlflow_tracker.run_link(run)
    duckdb.write_table("k_selection", table)
    return dg.MaterializeResult(
        metadata={
            "chosen_k": selection.chosen,
            "candidates": str(selection.candidates),
            "scores": markdown_table(table),
            "mlflow_run": dg.MetadataValue.url(links[selection.chosen]),
            "mlflow_experiment": dg.MetadataValue.url(
                mlflow_tracker.experiment_link(K_SELECTION_EXPERIMENT)
            ),
        }
    )
