"""Every segmentation method of the registry (core/registry.py), fitted and scored the
same way.

One asset per registered method, built by one factory: fit on the training edges, predict
the test edges, and (on synthetic data) compare with the planted segments. Each writes
``method_scores_<method>`` and ``segments_<method>``; model_comparison logs the scores
to MLflow, one run per method.

On a purchase-only log (label rule ``purchase``) every held-out label is +1, so AUC means
nothing: the methods that can rank items instead score the ranking of the held-out (test)
purchases, task ``purchase_ranking``, metrics ``recall@10`` and ``ndcg@10``, items each
customer already bought excluded (core.choice.ranking_metrics). They are
``model_embedding`` (the chosen purchase segmentation's per-segment choice models),
``item_popularity`` (global popularity) and ``nmf`` (W H scores); every other method is
skipped there and records no rows.
"""

import dagster as dg
import numpy as np
import pandas as pd

from segmentation_dagster.core.choice import GlobalPopularityRecommender, ranking_metrics
from segmentation_dagster.core.cold_start import age_group
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.recommend import FactorScorer, top_k_items
from segmentation_dagster.core.registry import METHODS, MethodContext, MethodSpec, make_method
from segmentation_dagster.resources import DuckDBStore
from segmentation_dagster.scores import held_out_rows, record_scores, recovery_rows, score_row
from segmentation_dagster.settings import MethodSettings, RandomSeed

from .common import (
    SplitGraphs,
    Stopwatch,
    chosen_k,
    chosen_method,
    chosen_spec,
    embedding_options,
    is_purchase_log,
    load_split_graphs,
    markdown_table,
    usable_item_features,
)

# The methods that can rank items for a purchase-only log, and the list length scored
RANKING_METHODS = ("model_embedding", "item_popularity", "nmf")
RANKING_K = 10


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


def method_context(duckdb: DuckDBStore, settings: MethodSettings, item_ids: np.ndarray,
                   n_customers: int) -> MethodContext:
    """What the registry's factories need from this pipeline's tables and settings; the
    model embedding is pinned to k_selection's choice."""
    return MethodContext(
        item_features=usable_item_features(duckdb, item_ids),
        customer_attributes=demographic_attributes(duckdb),
        n_customers=n_customers,
        max_customers_for_pairwise=settings.max_customers_for_pairwise,
        embedding=embedding_options(chosen_spec(duckdb)),
    )


def planted_rows(duckdb: DuckDBStore, dataset: str, method: str, customer_ids: np.ndarray,
                 labels: np.ndarray, n_segments: int, seconds: float) -> list[dict]:
    """Recovery of the synthetic source's planted segments: the like-rate segments, and
    the behaviour segments (WHAT customers buy, UNICON's), on which item-based methods
    such as NMF are judged. Empty for sources without ground truth."""
    truth = duckdb.read_table("ground_truth_segments")
    if not len(truth):
        return []
    planted = truth.set_index("customer_id").reindex(customer_ids)
    rows = recovery_rows(dataset, method, planted["segment"].to_numpy(), labels, n_segments,
                         seconds)
    if "behaviour_segment" in planted:
        rows += recovery_rows(dataset, method, planted["behaviour_segment"].to_numpy(), labels,
                              n_segments, seconds, "behaviour_segments")
    return rows


def build_method_asset(spec: MethodSpec) -> dg.AssetsDefinition:
    method = spec.name
    deps = ["edge_sample", "raw_customers", "ground_truth_segments"]
    if spec.uses_k:
        deps.append("k_selection")

    @dg.asset(
        name=f"method_{method}",
        deps=deps,
        group_name="methods",
        kinds={"python", "duckdb"},
        description=f"{spec.description} Scored on the test edges; recovery on synthetic data.",
    )
    def method_asset(
        duckdb: DuckDBStore,
        method_settings: MethodSettings,
        random_seed: RandomSeed,
    ) -> dg.MaterializeResult:
        split = load_split_graphs(duckdb)
        k = chosen_k(duckdb) if spec.uses_k else None
        if is_purchase_log(duckdb):
            if method not in RANKING_METHODS:
                return skip(duckdb, method, "a purchase-only log: every held-out label is +1, "
                            "so AUC means nothing, and this method cannot rank items")
            return rank_purchases(duckdb, method, split, k, random_seed.value)
        extra = method_context(duckdb, method_settings, split.train.item_ids,
                               split.train.n_customers)
        segmenter = make_method(method, k, random_seed.value, extra)
        if segmenter is None:
            return skip(duckdb, method, "the data do not support this method")
        with Stopwatch() as watch:
            segmenter.fit(split.train)
        rows, cols, labels = split.test
        n_segments = int(segmenter.n_segments_)
        scores = held_out_rows(split.dataset, method, segmenter.predict_proba(rows, cols), labels,
                               n_segments, watch.seconds)
        if method != "empirical_bayes":  # personalised: its one "segment" recovers nothing
            scores += planted_rows(duckdb, split.dataset, method, split.train.customer_ids,
                                   segmenter.labels_, n_segments, watch.seconds)
        table = record_scores(duckdb, f"method_scores_{method}", scores)
        duckdb.write_table(f"segments_{method}", pd.DataFrame(
            {"customer_id": split.train.customer_ids, "segment": segmenter.labels_}))
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": len(table),
                "n_segments": n_segments,
                "segment_sizes": dg.MetadataValue.json(np.bincount(segmenter.labels_).tolist()),
                "fit_seconds": watch.seconds,
                "scores": markdown_table(table[["task", "slice", "metric", "value"]]),
            }
        )

    return method_asset


def skip(duckdb: DuckDBStore, method: str, reason: str) -> dg.MaterializeResult:
    """Record no scores for ``method`` and say why."""
    record_scores(duckdb, f"method_scores_{method}", [])
    # a previous run's segments must not be mistaken for this run's
    duckdb.execute(f'DROP TABLE IF EXISTS "segments_{method}"')
    return dg.MaterializeResult(metadata={"skipped": reason})


def recommendations(
    duckdb: DuckDBStore, method: str, train: PreferenceGraph, customers: np.ndarray,
    k: int | None, seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(top-RANKING_K unbought items of ``customers``, every customer's segment) of a
    ranking method fitted on the training purchases."""
    if method == "model_embedding":  # the chosen purchase segmentation, refitted
        model = chosen_method(duckdb, train, seed).fit(train)
        return model.recommend(customers, RANKING_K, exclude=train), model.labels_
    if method == "item_popularity":
        model = GlobalPopularityRecommender().fit(train)
        top = model.recommend(customers, RANKING_K, exclude=train)
        return top, np.zeros(train.n_customers, dtype=np.int64)
    model = make_method("nmf", k, seed).fit(train)
    scorer = FactorScorer(model.cosegmentation_.W_, model.cosegmentation_.H_)
    return top_k_items(scorer, train.matrix, customers, RANKING_K), model.labels_


def rank_purchases(duckdb: DuckDBStore, method: str, split: SplitGraphs, k: int | None,
                   seed: int) -> dg.MaterializeResult:
    """recall@10 and nDCG@10 of ``method``'s recommendations against the held-out (test)
    purchases, items already bought in training excluded."""
    rows, cols, _ = split.test
    customers = np.unique(rows)
    with Stopwatch() as watch:
        top, labels = recommendations(duckdb, method, split.train, customers, k, seed)
    metrics = ranking_metrics(top, (rows, cols), RANKING_K, exclude=split.train,
                              rows=customers)
    n_segments = int(labels.max()) + 1
    scores = [score_row(split.dataset, "purchase_ranking", method, f"{name}@{RANKING_K}",
                        metrics[name], n_segments, watch.seconds)
              for name in ("recall", "ndcg")]
    scores += planted_rows(duckdb, split.dataset, method, split.train.customer_ids, labels,
                           n_segments, watch.seconds)
    table = record_scores(duckdb, f"method_scores_{method}", scores)
    duckdb.write_table(f"segments_{method}", pd.DataFrame(
        {"customer_id": split.train.customer_ids, "segment": labels}))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(table),
        "n_segments": n_segments,
        "segment_sizes": dg.MetadataValue.json(np.bincount(labels).tolist()),
        "fit_and_rank_seconds": watch.seconds,
        "evaluated_customers": metrics["n_customers"],
        "scores": markdown_table(table[["task", "slice", "metric", "value"]]),
    })


method_assets = [build_method_asset(spec) for spec in METHODS.values() if spec.in_pipeline]
