"""UNICON's data-driven behaviour segments and their evaluation, as thin asset shells
over core/sequence/behaviour.py and core/sequence/evaluation.py.

consumer_embeddings -> behaviour_segments -> unicon_evaluation (coherence, recovery,
Approach 2) -> method_unicon
"""

from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from segmentation_dagster.core.sequence import figures
from segmentation_dagster.core.sequence.behaviour import segment_behaviour
from segmentation_dagster.core.sequence.evaluation import (
    backfill_recommendation,
    segment_coherence,
    segment_recovery,
)
from segmentation_dagster.core.sequence.segments import BehaviourSegmenter
from segmentation_dagster.core.sequence.train import NextItemModel
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.scores import score_frame
from segmentation_dagster.settings import BehaviourSegmentSettings, RandomSeed

from .common import markdown_table, source_info
from .unicon import (
    GROUP,
    core_rows,
    encode_all,
    finite,
    load_embeddings,
    model_path,
    save_figure,
)

SEGMENTS_EXPERIMENT = "unicon_segments"


# behaviour_segments saves the fitted centres here for unicon_evaluation
def segmenter_path(state_folder: StateFolder) -> Path:
    return state_folder.folder("models") / "unicon_behaviour_segments.npz"


def _segment_labels(duckdb: DuckDBStore, table: str, customer_ids: np.ndarray) -> np.ndarray:
    """Each customer's segment in ``table`` (-1: none)."""
    frame = duckdb.read_table(table).set_index("customer_id")
    return frame["segment"].reindex(pd.Index(customer_ids)).fillna(-1).astype(int).to_numpy()


def _planted_behaviour(duckdb: DuckDBStore, customer_ids: np.ndarray) -> np.ndarray | None:
    """The planted behavioural segment of each customer (NaN: unknown); None when the
    source plants none."""
    truth = duckdb.read_table("ground_truth_segments")
    if "behaviour_segment" not in truth or not truth["behaviour_segment"].notna().any():
        return None
    planted = truth.assign(customer_id=truth["customer_id"].astype(str))
    planted = planted.set_index("customer_id")["behaviour_segment"]
    return planted.reindex(pd.Index(customer_ids)).to_numpy(dtype=float, na_value=np.nan)


def _stored_segmenter(state_folder: StateFolder) -> tuple[BehaviourSegmenter, dict]:
    stored = dict(np.load(segmenter_path(state_folder)))
    segmenter = BehaviourSegmenter()
    segmenter.mean_, segmenter.centres_ = stored["mean"], stored["centres"]
    return segmenter, stored


def _log_segments(mlflow_tracker, context, found, figure_paths) -> dict[int, str]:
    """One MLflow run per K; the chosen K's run holds the figures and the items."""
    links = {}
    for k, result in found.segmenter.results_.items():
        chosen = k == found.k
        with mlflow_tracker.run(SEGMENTS_EXPERIMENT, f"K={k}", context,
                                tags={"chosen": str(chosen)}) as run:
            mlflow.log_params({"k": k, "segment_sizes": result.sizes.tolist()})
            mlflow.log_metrics(finite({"silhouette_cosine": result.silhouette,
                                       "mean_distance_to_centre": result.mean_distance,
                                       "similarity_length_scale": found.length_scale}))
            if chosen:
                for path in figure_paths:
                    mlflow.log_artifact(str(path))
                mlflow.log_table(found.representatives, "representative_items.json")
            links[k] = mlflow_tracker.run_link(run)
    return links


@dg.asset(deps=["consumer_embeddings"], group_name=GROUP, kinds={"scikitlearn", "mlflow"})
def behaviour_segments(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    behaviour_segment_settings: BehaviourSegmentSettings,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """Data-driven segments: k-means on the centred, L2-normalised embeddings for every K
    in [k_min, k_max] (one MLflow run each); K by silhouette among the Ks whose segments
    are tighter than the attribute-similarity length scale (Figure 2); each segment's
    representative items. Tables behaviour_segments(customer_id, segment,
    distance_to_centre), segment_representative_items and behaviour_k_selection."""
    s = behaviour_segment_settings
    vocabulary = NextItemModel.load(model_path(state_folder)).vocabulary_
    data = encode_all(duckdb, vocabulary).data
    found = segment_behaviour(
        data, vocabulary, load_embeddings(duckdb, data.customer_ids), s.k_values(),
        s.similarity_pairs, s.representative_items, s.representative_radius_quantile,
        s.max_category_share, seed=random_seed.value)
    segmenter = found.segmenter
    np.savez(segmenter_path(state_folder), mean=segmenter.mean_, centres=segmenter.centres_,
             k=found.k, length_scale=found.length_scale, seconds=found.seconds)
    assignments, selection = found.assignments(), found.selection()
    duckdb.write_table("behaviour_segments", assignments)
    duckdb.write_table("segment_representative_items", found.representatives)
    duckdb.write_table("behaviour_k_selection", selection)
    distance_plot, distance_path = save_figure(
        figures.centre_distances(found.chosen, found.length_scale), "unicon_centre_distances",
        state_folder)
    k_plot, k_path = save_figure(
        figures.k_selection(segmenter.results_, found.k, found.length_scale),
        "unicon_k_selection", state_folder)
    links = _log_segments(mlflow_tracker, context, found, (distance_path, k_path))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(assignments),
        "chosen_k": found.k,
        "similarity_length_scale": found.length_scale,
        "pearson_similarity_vs_cosine": found.pearson_similarity_cosine,
        "k_selection": markdown_table(selection.drop(columns=["seconds"]).round(4)),
        "segment_sizes": dg.MetadataValue.json(found.chosen.sizes.tolist()),
        "representative_items": markdown_table(found.representatives, 30),
        "centre_distances": distance_plot,
        "silhouette_by_k": k_plot,
        "mlflow_run": dg.MetadataValue.url(links[found.k]),
        "mlflow_experiment": dg.MetadataValue.url(
            mlflow_tracker.experiment_link(SEGMENTS_EXPERIMENT)),
    })


@dg.asset(
    deps=[behaviour_segments, "ground_truth_segments", "customer_segments"],
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
)
def unicon_evaluation(duckdb: DuckDBStore, behaviour_segment_settings: BehaviourSegmentSettings,
                      random_seed: RandomSeed, state_folder: StateFolder
                      ) -> dg.MaterializeResult:
    """How good the behaviour segments are (table unicon_segment_scores; the protocol is
    core/sequence/evaluation.py): coherence with eq. (2) (task behaviour_segments: UNICON,
    the alpha-embedding segments, k-means on a bag of categories), recovery of planted
    behavioural segments on synthetic data (slice ``behaviour_segments``), and Approach 2
    (task segment_recommendation; not 'recommendation', which holds the NMF assets' rows
    under another protocol), for all customers and those with few events."""
    s = behaviour_segment_settings
    dataset = source_info(duckdb, "dataset")
    model = NextItemModel.load(model_path(state_folder))
    data = encode_all(duckdb, model.vocabulary_).data
    segmenter, stored = _stored_segmenter(state_folder)
    k, ids = int(stored["k"]), data.customer_ids
    others = ({"model_embedding": _segment_labels(duckdb, "customer_segments", ids)}
              if duckdb.table_exists("customer_segments") else {})
    coherence = segment_coherence(
        data, model.vocabulary_, load_embeddings(duckdb, ids),
        _segment_labels(duckdb, "behaviour_segments", ids), float(stored["seconds"]),
        s.k_values(), s.similarity_pairs, others, n_segments=k,
        # other pairs than behaviour_segments drew to fit the length scale
        seed=random_seed.value + 1)
    rows = core_rows(dataset, "behaviour_segments", coherence.scores)
    planted = _planted_behaviour(duckdb, ids)
    if planted is not None:
        # the segmentation methods (model_embedding, nmf, ...) score themselves on the
        # behavioural truth in their own assets (assets/methods.py)
        rows += core_rows(dataset, "recovery", segment_recovery(
            planted, coherence.labels, coherence.seconds), slice="behaviour_segments")
    backfill = backfill_recommendation(
        model, data, segmenter, s.representative_items, s.representative_radius_quantile,
        s.max_category_share, s.backfill_share)
    rows += core_rows(dataset, "segment_recommendation", backfill.scores)
    table = score_frame(rows)
    duckdb.write_table("unicon_segment_scores", table)
    notes = dict(coherence.notes)
    if backfill.few_events_threshold is not None:
        notes["few_events_threshold"] = backfill.few_events_threshold
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(table),
        "scores": markdown_table(table[["task", "slice", "method", "metric", "value"]], 60),
        **notes,
    })
