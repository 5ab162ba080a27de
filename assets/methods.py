"""Every segmentation method, ours and the baselines, fitted and scored the same way.

One asset per method, built by one factory: fit on the training edges, predict the test
edges, and (on synthetic data) compare with the planted segments. Each writes
``method_scores_<method>`` and ``segments_<method>`` and logs one MLflow run.
"""

from collections.abc import Callable

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from segmentation_dagster.core.baselines import (
    DemographicSegmenter,
    EmpiricalBayes,
    KMedoidsCosine,
    LatentClassEM,
    PopulationModel,
    SpectralCosine,
)
from segmentation_dagster.core.cold_start import age_group
from segmentation_dagster.core.nmf import NMFSegmenter
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.resources import DuckDBStore, MLflowTracker

from .common import (
    MethodSettings,
    SplitGraphs,
    Stopwatch,
    chosen_k,
    item_features,
    load_split_graphs,
    markdown_table,
    recovery_rows,
    score_rows,
)

COMPARISON_EXPERIMENT = "model_comparison"
SCORE_COLUMNS = ["dataset", "task", "slice", "method", "metric", "value", "n_segments", "seconds"]


def demographic_attributes(duckdb: DuckDBStore) -> pd.DataFrame | None:
    """Age band x gender when the source has them, else the categorical columns."""
    customers = duckdb.read_table("raw_customers").drop_duplicates("customer_id")
    customers = customers.set_index("customer_id")
    columns = {}
    if "age" in customers:
        columns["age_group"] = age_group(customers["age"])
    if "gender" in customers:
        columns["gender"] = customers["gender"]
    if not columns:
        for name in customers.columns:
            if customers[name].dtype == object and customers[name].nunique() <= 20:
                columns[name] = customers[name]
    return pd.DataFrame(columns) if columns else None


MethodFactory = Callable[[DuckDBStore, MethodSettings, int, SplitGraphs], object | None]

METHODS: dict[str, tuple[str, MethodFactory]] = {
    "model_embedding": (
        "The model-based embedding: pooled model, embedding and k-means with the chosen K, "
        "refitted end to end so its time is comparable.",
        lambda db, s, k, split: ModelEmbeddingSegmenter(
            k, pooled=s.pooled, normalisation=s.normalisation, random_state=s.seed,
            pooled_kwargs={"item_features": item_features(db, split.train.item_ids)}
            if "features" in s.pooled else None,
        ),
    ),
    "population": ("One model for everyone.", lambda db, s, k, split: PopulationModel()),
    "latent_class": (
        "Latent class mixture by MAP-EM, 10 restarts, with the chosen K.",
        lambda db, s, k, split: LatentClassEM(k, random_state=s.seed),
    ),
    "empirical_bayes": (
        "Beta-binomial empirical Bayes: each customer's posterior like-probability.",
        lambda db, s, k, split: EmpiricalBayes(),
    ),
    "demographic": (
        "Segments by demographic attributes (age band x gender where available).",
        lambda db, s, k, split: None
        if (attributes := demographic_attributes(db)) is None
        else DemographicSegmenter(attributes),
    ),
    "kmedoids": (
        "k-medoids on the cosine distance of the +1/-1 vectors, with the chosen K.",
        lambda db, s, k, split: None
        if split.train.n_customers > s.max_customers_for_pairwise
        else KMedoidsCosine(k, random_state=s.seed),
    ),
    "nmf": (
        "NMF customer segments (which items a customer touches), with the chosen K.",
        lambda db, s, k, split: NMFSegmenter(k, random_state=s.seed),
    ),
    "spectral": (
        "Spectral clustering on the cosine similarity of the +1/-1 vectors, chosen K.",
        lambda db, s, k, split: None
        if split.train.n_customers > s.max_customers_for_pairwise
        else SpectralCosine(k, random_state=s.seed),
    ),
}


def build_method_asset(method: str, description: str, factory: MethodFactory):
    group = "segments" if method == "model_embedding" else "baselines"

    @dg.asset(
        name=f"method_{method}",
        deps=["k_selection", "edge_split", "raw_customers", "ground_truth_segments"],
        group_name=group,
        kinds={"python", "duckdb", "mlflow"},
        description=f"{description} Scored on the test edges; recovery on synthetic data.",
    )
    def method_asset(
        context: dg.AssetExecutionContext,
        duckdb: DuckDBStore,
        mlflow_tracker: MLflowTracker,
        method_settings: MethodSettings,
    ) -> dg.MaterializeResult:
        split = load_split_graphs(duckdb)
        k = chosen_k(duckdb)
        segmenter = factory(duckdb, method_settings, k, split)
        if segmenter is None:
            duckdb.write_table(f"method_scores_{method}", pd.DataFrame(columns=SCORE_COLUMNS))
            # a previous run's segments must not be mistaken for this run's
            duckdb.execute(f'DROP TABLE IF EXISTS "segments_{method}"')
            return dg.MaterializeResult(
                metadata={"skipped": "the data do not support this method", "chosen_k": k}
            )
        with Stopwatch() as watch:
            segmenter.fit(split.train)
        rows, cols, labels = split.test
        p = segmenter.predict_proba(rows, cols)
        n_segments = int(segmenter.n_segments_)
        scores = score_rows(split.dataset, method, p, labels, n_segments, watch.seconds)
        truth = duckdb.read_table("ground_truth_segments")
        if len(truth) and method != "empirical_bayes":
            planted = truth.set_index("customer_id").reindex(split.train.customer_ids)
            scores += recovery_rows(split.dataset, method, planted["segment"].to_numpy(),
                                    segmenter.labels_, n_segments, watch.seconds)
            if "behaviour_segment" in planted:
                # the synthetic source also plants WHAT customers buy (UNICON's segments):
                # item-based methods such as NMF are judged on those
                scores += recovery_rows(split.dataset, method,
                                        planted["behaviour_segment"].to_numpy(),
                                        segmenter.labels_, n_segments, watch.seconds,
                                        "behaviour_segments")
        table = pd.DataFrame(scores, columns=SCORE_COLUMNS)
        duckdb.write_table(f"method_scores_{method}", table)
        duckdb.write_table(
            f"segments_{method}",
            pd.DataFrame({"customer_id": split.train.customer_ids,
                          "segment": segmenter.labels_}),
        )
        with mlflow_tracker.run(COMPARISON_EXPERIMENT, method, context,
                                tags={"method": method, "dataset": split.dataset}) as run:
            mlflow.log_params({"method": method, "n_segments": n_segments})
            mlflow.log_metrics(
                {f"{r.task}.{r.metric}": r.value for r in table.itertuples()
                 if np.isfinite(r.value)} | {"seconds": watch.seconds}
            )
            link = mlflow_tracker.run_link(run)
        sizes = np.bincount(segmenter.labels_).tolist()
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(table),
                "n_segments": n_segments,
                "segment_sizes": dg.MetadataValue.json(sizes),
                "fit_seconds": watch.seconds,
                "scores": markdown_table(table[["task", "metric", "value"]]),
                "mlflow_run": dg.MetadataValue.url(link),
            }
        )

    return method_asset


method_assets = [build_method_asset(name, *spec) for name, spec in METHODS.items()]
