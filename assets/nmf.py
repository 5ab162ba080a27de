"""NMF co-segmentation: customer and product segments from the purchase matrix."""

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from segmentation_dagster.core.nmf import (
    CoSegmentation,
    choose_rank,
    plot_consensus,
    plot_customer_heatmap,
    plot_product_heatmap,
    plot_rank_selection,
    purchase_matrix,
    rank_sweep,
)
from segmentation_dagster.core.recommend import (
    FactorScorer,
    NMFScorer,
    PopularityScorer,
    SegmentPopularityScorer,
    evaluate_recommendations,
    held_out_matrices,
    leave_out_split,
    top_k_items,
)
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.scores import record_scores, score_row
from segmentation_dagster.settings import NMFSettings, RandomSeed

from .common import chosen_k, figure_metadata, markdown_table, source_info

NMF_EXPERIMENT = "nmf_rank"


def load_purchase_matrix(duckdb: DuckDBStore, binary: bool):
    counts = duckdb.read_table("purchase_counts")
    return purchase_matrix(counts["customer_id"], counts["item_id"], counts["interactions"],
                           binary=binary)


@dg.asset(deps=["raw_interactions", "raw_items", "raw_customers", "edge_sample"],
          group_name="nmf", kinds={"sql", "duckdb"})
def purchase_counts(duckdb: DuckDBStore, nmf_settings: NMFSettings) -> dg.MaterializeResult:
    """Interactions per (customer, item): the purchase matrix V in long form
    (dbt_like_sql/purchase_counts.sql). On MovieLens a rating counts as an interaction.
    The customers of edge_sample: every one unless there are more than in_memory_customers."""
    rule = source_info(duckdb, "label_rule")
    rows = duckdb.run_model("purchase_counts", {"label_rule": rule})
    matrix = load_purchase_matrix(duckdb, nmf_settings.binary)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows,
        "customers": matrix.shape[0],
        "products": matrix.shape[1],
        "dropped_all_zero_customers": matrix.n_dropped_customers,
        "dropped_all_zero_products": matrix.n_dropped_items,
        "binary": nmf_settings.binary,
    })


@dg.asset(deps=[purchase_counts], group_name="nmf", kinds={"scikitlearn", "mlflow"})
def nmf_rank_selection(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    nmf_settings: NMFSettings,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """Reconstruction error and stability over restarts (consensus dispersion and
    cophenetic correlation) for every k; the end of the stability plateau is chosen
    unless ``NMFSettings.k`` overrides it. One MLflow run per k, the chosen one tagged."""
    matrix = load_purchase_matrix(duckdb, nmf_settings.binary)
    k_max = min(nmf_settings.k_max, *matrix.shape)
    sweep = rank_sweep(matrix, range(nmf_settings.k_min, k_max + 1), nmf_settings.n_restarts,
                       nmf_settings.loss, nmf_settings.init, random_seed.value)
    chosen = choose_rank(sweep.table, k=nmf_settings.k)
    table = sweep.table.assign(chosen=sweep.table["k"] == chosen)
    duckdb.write_table("nmf_rank_selection", table)
    figures = state_folder.folder("figures")
    curves, curves_path = figure_metadata(plot_rank_selection(sweep.table, chosen), "nmf_rank",
                                          figures)
    consensus, consensus_path = figure_metadata(
        plot_consensus(sweep.consensus[chosen], sweep.consensus_order[chosen]), "nmf_consensus",
        figures,
    )
    for row in table.itertuples():
        with mlflow_tracker.run(NMF_EXPERIMENT, f"k={row.k}", context,
                                tags={"chosen": str(bool(row.chosen))}) as run:
            mlflow.log_params({"k": row.k, "loss": nmf_settings.loss, "init": nmf_settings.init,
                               "restarts": nmf_settings.n_restarts})
            mlflow.log_metrics({name: float(getattr(row, name)) for name in
                                ("reconstruction_err", "explained_variance", "cophenetic",
                                 "dispersion") if np.isfinite(getattr(row, name))})
            if row.chosen:
                mlflow.log_artifact(str(curves_path))
                mlflow.log_artifact(str(consensus_path))
                link = mlflow_tracker.run_link(run)
    return dg.MaterializeResult(metadata={
        "chosen_k": int(chosen),
        "override": str(nmf_settings.k),
        "sweep": markdown_table(table[["k", "reconstruction_err", "explained_variance",
                                       "cophenetic", "dispersion", "chosen"]]),
        "rank_selection_curves": curves,
        "consensus_map": consensus,
        "mlflow_run": dg.MetadataValue.url(link),
    })


def _scores_frame(ids: np.ndarray, id_name: str, scores: np.ndarray,
                  segments: np.ndarray) -> pd.DataFrame:
    frame = pd.DataFrame(scores, columns=[f"basis_{b}" for b in range(scores.shape[1])])
    frame.insert(0, "segment", segments)
    frame.insert(0, id_name, ids)
    return frame


@dg.multi_asset(
    specs=[
        dg.AssetSpec("customer_nmf_scores", deps=[nmf_rank_selection], group_name="nmf",
                     kinds={"scikitlearn", "duckdb"},
                     description="Each customer's weight on every basis (W) and hard segment."),
        dg.AssetSpec("product_nmf_scores", deps=[nmf_rank_selection], group_name="nmf",
                     kinds={"scikitlearn", "duckdb"},
                     description="Each product's share in every basis (H) and hard segment."),
        dg.AssetSpec("product_segments", deps=[nmf_rank_selection], group_name="nmf",
                     kinds={"duckdb"}, description="The hard segment of every product."),
        dg.AssetSpec("segment_bundles", deps=[nmf_rank_selection], group_name="nmf",
                     kinds={"duckdb"}, description="The top products of every basis."),
    ],
    can_subset=False,
)
def nmf_factorisation(duckdb: DuckDBStore, nmf_settings: NMFSettings, random_seed: RandomSeed,
                      state_folder: StateFolder):
    """Fit NMF at the chosen rank on the sparse purchase matrix, then write the customer
    and product scores, hard segments and bundles, with block-ordered heatmaps."""
    chosen = chosen_k(duckdb, "nmf_rank_selection")
    matrix = load_purchase_matrix(duckdb, nmf_settings.binary)
    model = CoSegmentation(chosen, nmf_settings.loss, nmf_settings.init,
                           random_seed.value).fit(matrix)
    customers = _scores_frame(model.customer_ids_, "customer_id", model.W_,
                              model.customer_segments_)
    products = _scores_frame(model.item_ids_, "item_id", model.H_.T, model.product_segments_)
    bundles = model.bundles(top_n=10)
    tables = {
        "customer_nmf_scores": customers,
        "product_nmf_scores": products,
        "product_segments": products[["item_id", "segment"]],
        "segment_bundles": bundles,
    }
    for name, frame in tables.items():
        duckdb.write_table(name, frame)
    figures = state_folder.folder("figures")
    customer_map, _ = figure_metadata(plot_customer_heatmap(model), "nmf_customers", figures)
    product_map, _ = figure_metadata(plot_product_heatmap(model), "nmf_products", figures)
    common = {"k": chosen, "loss": model.loss_, "init": model.init_,
              "explained_variance": float(model.explained_variance_),
              "converged": bool(model.converged_)}
    yield dg.MaterializeResult(asset_key="customer_nmf_scores", metadata={
        **common, "dagster/row_count": len(customers),
        "segment_sizes": dg.MetadataValue.json(
            np.bincount(model.customer_segments_[model.customer_segments_ >= 0]).tolist()),
        "heatmap": customer_map})
    yield dg.MaterializeResult(asset_key="product_nmf_scores", metadata={
        **common, "dagster/row_count": len(products), "heatmap": product_map})
    yield dg.MaterializeResult(asset_key="product_segments", metadata={
        **common, "dagster/row_count": len(products),
        "segment_sizes": dg.MetadataValue.json(
            np.bincount(model.product_segments_[model.product_segments_ >= 0]).tolist())})
    yield dg.MaterializeResult(asset_key="segment_bundles", metadata={
        **common, "dagster/row_count": len(bundles), "preview": markdown_table(bundles, 20)})


@dg.asset(
    deps=["customer_nmf_scores", "product_nmf_scores", "customer_segments"],
    group_name="nmf",
    kinds={"python", "duckdb"},
)
def segment_recommendations(
    duckdb: DuckDBStore,
    nmf_settings: NMFSettings,
    random_seed: RandomSeed,
) -> dg.MaterializeResult:
    """Top-10 unseen products per customer from W.H, and their evaluation on held-out
    interactions (20 % per customer): recall@10 and nDCG@10 of NMF against popularity
    and against segment popularity within the model-embedding segments."""
    counts = duckdb.read_table("purchase_counts")
    counts = counts[counts["interactions"] > 0]
    dataset = source_info(duckdb, "dataset")
    chosen = chosen_k(duckdb, "nmf_rank_selection")
    _, test_mask = leave_out_split(counts["customer_id"], counts["item_id"], 0.2,
                                   random_seed.value)
    held = held_out_matrices(counts["customer_id"], counts["item_id"], test_mask)
    embedding_segments = duckdb.read_table("customer_segments").set_index("customer_id")
    segments = embedding_segments["segment"].reindex(held.customer_ids).fillna(-1)
    scorers = {
        "nmf": NMFScorer(n_components=chosen, loss=nmf_settings.loss, init=nmf_settings.init,
                         random_state=random_seed.value),
        "popularity": PopularityScorer(),
        "segment_popularity_model_embedding": SegmentPopularityScorer(
            segments.to_numpy().astype(int)),
    }
    rows = []
    for name, scorer in scorers.items():
        metrics = evaluate_recommendations(scorer.fit(held.train), held.train, held.test, k=10)
        for metric, value in (("recall@10", metrics.recall), ("ndcg@10", metrics.ndcg)):
            rows.append(score_row(dataset, "recommendation", name, metric, value,
                                  chosen if name == "nmf" else None))
    scores = record_scores(duckdb, "method_scores_nmf_recommendation", rows)

    # recommendations to act on use every interaction, not only the training part
    customers = duckdb.read_table("customer_nmf_scores").set_index("customer_id")
    products = duckdb.read_table("product_nmf_scores")
    basis = [c for c in customers.columns if c.startswith("basis_")]
    full = held_out_matrices(counts["customer_id"], counts["item_id"],
                             np.zeros(len(counts), dtype=bool)).train
    w = customers.reindex(held.customer_ids)[basis].fillna(0.0).to_numpy()
    h = products.set_index("item_id").reindex(held.item_ids)[basis].fillna(0.0).to_numpy().T
    top = top_k_items(FactorScorer(w, h), full, k=10)
    ranks = np.tile(np.arange(1, top.shape[1] + 1), len(top))
    recommendations = pd.DataFrame({
        "customer_id": np.repeat(held.customer_ids, top.shape[1]),
        "rank": ranks, "item_id": np.where(top.ravel() >= 0, held.item_ids[top.ravel()], None),
    }).dropna(subset=["item_id"])
    duckdb.write_table("segment_recommendations", recommendations)
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(recommendations),
        "evaluation": markdown_table(scores[["method", "metric", "value"]]),
    })
