"""The pooled model, the customer embeddings and the choice of K."""

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
from sklearn.metrics import silhouette_score

from segmentation_dagster.core.clustering import (
    candidate_ks,
    kde_modes,
    select_k_one_standard_error,
)
from segmentation_dagster.core.embedding import embed
from segmentation_dagster.core.plots import embedding_density
from segmentation_dagster.core.pooled import (
    StoredPooledModel,
    edge_log_likelihood,
    make_pooled_model,
)
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder

from .common import (
    MethodSettings,
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


def silhouette(embedding: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of a 1-D clustering; NaN where it is undefined (K >= distinct points)."""
    if not 2 <= len(np.unique(labels)) < len(np.unique(embedding)):
        return float("nan")
    return float(silhouette_score(embedding[:, None], labels))


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
) -> dg.MaterializeResult:
    """Choose K: candidates from the KDE modes of the embedding (Figure 1), then the
    smallest K within one standard error of the best validation log-likelihood.
    One MLflow run per K; the chosen K is tagged."""
    split = load_split_graphs(duckdb)
    values = duckdb.read_table("customer_embeddings").set_index("customer_id")
    embedding = values["embedding"].reindex(split.train.customer_ids).to_numpy()
    n_distinct = len(np.unique(embedding))
    ks = [
        k
        for k in range(method_settings.k_min, method_settings.k_max + 1)
        if k in candidate_ks(embedding, around=1) and k <= n_distinct
    ] or [k for k in (method_settings.k_min,) if k <= n_distinct]
    rows, cols, labels = split.validation
    results, per_customer = {}, {}
    scored = np.bincount(rows, minlength=split.train.n_customers) > 0
    sample = np.random.default_rng(0).permutation(len(embedding))[:5000]
    for k in ks:
        segmenter = ModelEmbeddingSegmenter(k, random_state=method_settings.seed)
        segmenter.fit_embedding(split.train, embedding)
        p = segmenter.predict_proba(rows, cols)
        log_likelihood = edge_log_likelihood(p, labels)
        # customers, not edges, are the independent units: score each customer's sum
        per_customer[k] = np.bincount(rows, log_likelihood, split.train.n_customers)[scored]
        results[k] = {
            "validation_log_likelihood": float(log_likelihood.mean()),
            "validation_accuracy": float(((p >= 0.5) == (labels == 1)).mean()),
            "silhouette": silhouette(embedding[sample], segmenter.labels_[sample]),
            "sizes": segmenter.segment_sizes_.tolist(),
        }
    chosen, summary = select_k_one_standard_error(per_customer)
    for k in ks:
        results[k]["standard_error"] = summary[k]["se"]
    links = {}
    for k, result in results.items():
        tags = {"chosen": str(k == chosen)}
        with mlflow_tracker.run(K_SELECTION_EXPERIMENT, f"K={k}", context, tags) as run:
            mlflow.log_params({"k": k, "segment_sizes": result["sizes"]})
            mlflow.log_metrics({m: v for m, v in result.items() if m != "sizes"})
            links[k] = mlflow_tracker.run_link(run)
    table = pd.DataFrame(
        [{"k": k, **{m: v for m, v in r.items() if m != "sizes"},
          "segment_sizes": str(r["sizes"]), "chosen": k == chosen} for k, r in results.items()]
    )
    duckdb.write_table("k_selection", table)
    return dg.MaterializeResult(
        metadata={
            "chosen_k": chosen,
            "candidates": str(ks),
            "scores": markdown_table(table),
            "mlflow_run": dg.MetadataValue.url(links[chosen]),
            "mlflow_experiment": dg.MetadataValue.url(
                mlflow_tracker.experiment_link(K_SELECTION_EXPERIMENT)
            ),
        }
    )
