"""UNICON (Dibak et al., 2023): transformer consumer embeddings, data-driven behaviour
segments and lookalike audiences, as thin asset shells over core/sequence.

customer_sequences -> unicon_model -> consumer_embeddings -> behaviour_segments
                                   -> unicon_evaluation (recovery, coherence, Approach 2)
customer_sequences -> lookalike_audience (its own model, trained on history to the cutoff)
everything -> method_unicon (method_scores_unicon, for model_comparison)

The business rule of the lookalike audience is configuration: an SQL predicate over an
interaction joined with its item (``UniconSettings.rule_filter``) and a minimum count.
It is executed as SQL in the project's DuckDB file, so it must come from the operator,
never from end users.
"""


import dataclasses
import time
from pathlib import Path

import dagster as dg
import duckdb as duckdb_module
import mlflow
import numpy as np
import pandas as pd
import torch
from sklearn.metrics import average_precision_score

from segmentation_dagster.core.metrics import adjusted_rand, hungarian_accuracy
from segmentation_dagster.core.sequence import figures
from segmentation_dagster.core.sequence import lookalike as lk
from segmentation_dagster.core.sequence import segments as sg
from segmentation_dagster.core.sequence.data import (
    Vocabulary,
    build_vocabulary,
    encode_sequences,
    leave_last_out,
)
from segmentation_dagster.core.sequence.metrics import (
    PopularityRanker,
    category_diversity,
    hit_rate,
    ndcg,
    rank_targets,
)
from segmentation_dagster.core.sequence.synthetic import (
    DEFAULT_RULE_FILTER,
    DEFAULT_RULE_MIN_COUNT,
)
from segmentation_dagster.core.sequence.train import (
    LookalikeClassifier,
    NextItemModel,
    UniconConfig,
)
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder

from .common import figure_metadata, markdown_table, source_info
from .methods import COMPARISON_EXPERIMENT, SCORE_COLUMNS

UNICON_EXPERIMENT = "unicon"
SEGMENTS_EXPERIMENT = "unicon_segments"
LOOKALIKE_EXPERIMENT = "unicon_lookalike"
GROUP = "unicon"
# Rules used when UniconSettings.rule_filter is empty, by source_info.dataset
DEFAULT_RULES = {
    "synthetic": (DEFAULT_RULE_FILTER, DEFAULT_RULE_MIN_COUNT),
    # MovieLens: "liked at least 3 horror movies" (4 or 5 stars)
    "ml-100k": ("value >= 4 AND genre_horror = 1", 3),
    "ml-1m": ("value >= 4 AND genre_horror = 1", 3),
}


class UniconSettings(dg.ConfigurableResource):
    """Choices of the UNICON assets (resource key ``unicon_settings``).

    The default model is small (d=32, 2 layers, 2 heads, at most 15 epochs) so that
    ``make run`` stays within its budget; larger data deserve d_model=64, max_events=200.
    """

    max_events: int = 50
    d_model: int = 32
    n_heads: int = 2
    n_layers: int = 2
    dropout: float = 0.1
    learning_rate: float = 3e-3
    batch_size: int = 128
    max_epochs: int = 15
    patience: int = 3
    threads: int = 2
    seed: int = 0
    # "auto": a CUDA GPU when the installed torch build sees one, else the CPU
    device: str = "auto"
    # data-driven segments
    k_min: int = 2
    k_max: int = 8
    similarity_pairs: int = 20000
    representative_items: int = 20
    representative_radius_quantile: float = 0.5
    max_category_share: float = 0.3
    backfill_share: float = 0.2
    # lookalike audience
    rule_filter: str = ""
    rule_min_count: int = 0
    cutoff: str = ""
    cutoff_quantile: float = 0.75
    new_customer_days: int = 7
    negatives_per_positive: float = 3.0
    validation_share: float = 0.25
    positive_history: str = "before_rule"  # or "full" (the paper: core histories as is)
    pretrain_epochs: int = 10
    # a few hundred labelled customers: small batches give the optimiser enough steps
    # (with 128, 30 epochs were ~90 steps and training stalled for some seeds)
    classifier_epochs: int = 60
    classifier_batch_size: int = 32
    classifier_patience: int = 5
    classifier_learning_rate: float = 3e-3

    def unicon_config(self, **overrides) -> UniconConfig:
        """The training configuration: every UniconConfig field these settings share by
        name (model size, optimiser, seed, threads, device), then ``overrides``."""
        shared = {f.name for f in dataclasses.fields(UniconConfig)} & set(type(self).model_fields)
        return UniconConfig(**({name: getattr(self, name) for name in shared} | overrides))


# unicon_model and behaviour_segments save these for the assets downstream of them
def _model_path(state_folder: StateFolder) -> Path:
    return state_folder.folder("models") / "unicon_next_item.pt"


def _segmenter_path(state_folder: StateFolder) -> Path:
    return state_folder.folder("models") / "unicon_behaviour_segments.npz"


def _scores(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    frame["value"] = frame["value"].astype(float)
    frame["seconds"] = frame["seconds"].astype(float)
    frame["n_segments"] = frame["n_segments"].astype("Int64")
    return frame


def _row(dataset, task, method, metric, value, n_segments=1, seconds=float("nan"),
         slice_name="all") -> dict:
    return dict(dataset=dataset, task=task, slice=slice_name, method=method, metric=metric,
                value=float(value), n_segments=n_segments, seconds=float(seconds))


def _finite(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


def _figure(figure, name: str, state_folder: StateFolder):
    """figure_metadata, then close the figure (matplotlib keeps every open one alive)."""
    try:
        return figure_metadata(figure, name, state_folder.folder("figures"))
    finally:
        figures.plt.close(figure)


def _log_model(network: torch.nn.Module, name: str) -> None:
    import mlflow.pytorch

    # explicit requirements: MLflow's inference of them costs seconds per model; pickle,
    # because the default 'pt2' export needs an input example to trace
    mlflow.pytorch.log_model(network, name=name, serialization_format="pickle",
                             pip_requirements=[f"torch=={torch.__version__}"])


def timestamp_order(duckdb: DuckDBStore) -> str:
    """How sequences are ordered: by timestamp, or (no timestamps at all) by file order.
    Some dated and some undated events is an error naming the column."""
    counts = duckdb.query(
        'SELECT count(*) AS n, count("timestamp") AS dated FROM raw_interactions'
    ).iloc[0]
    n, dated = int(counts["n"]), int(counts["dated"])
    if dated == 0:
        return "file order (raw_interactions has no timestamps)"
    if dated < n:
        raise ValueError(
            f"raw_interactions.timestamp is missing for {n - dated} of {n} interactions: "
            "sequences need every event dated, or none (then the file order is used)"
        )
    return "timestamp, ties in file order"


def _load_inputs(duckdb: DuckDBStore) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    sequences = duckdb.query(
        "SELECT customer_id, position, item_id, event, value FROM customer_sequences "
        "ORDER BY customer_id, position"
    )
    return sequences, duckdb.read_table("raw_items"), duckdb.read_table("raw_customers")


def _encode_all(duckdb: DuckDBStore, vocabulary: Vocabulary):
    sequences, _, customers = _load_inputs(duckdb)
    everyone = pd.Index(customers["customer_id"].dropna().astype(str)).union(
        pd.Index(sequences["customer_id"].astype(str).unique())
    )
    return encode_sequences(sequences, vocabulary, customers, customer_ids=everyone.to_numpy())


def category_labels(vocabulary: Vocabulary) -> np.ndarray:
    """Label of each item code's category (the attribute used for caps and diversity)."""
    codes = vocabulary.category_codes()
    if "category" in vocabulary.categorical:
        levels = vocabulary.categorical_levels["category"]
    elif vocabulary.categorical:
        levels = next(iter(vocabulary.categorical_levels.values()))
    elif vocabulary.flags:
        levels = next(iter(vocabulary.flag_names.values()))
    else:
        levels = ()
    names = np.array([None, *levels], dtype=object)
    return names[np.minimum(codes, len(names) - 1)]


# ------------------------------------------------------------------------------- assets


@dg.asset(deps=["raw_interactions", "raw_items", "raw_customers"], group_name=GROUP,
          kinds={"sql", "duckdb"})
def customer_sequences(
    duckdb: DuckDBStore, unicon_settings: UniconSettings
) -> dg.MaterializeResult:
    """Per customer, interactions in time order with the event type and the item's
    attributes, cut to the last ``max_events`` (dbt_like_sql/customer_sequences.sql)."""
    order = timestamp_order(duckdb)
    rows = duckdb.run_model("customer_sequences", {"max_events": unicon_settings.max_events})
    stats = duckdb.query(
        "SELECT count(*) AS customers, min(n_events) AS shortest, "
        "median(n_events) AS median, max(n_events) AS longest, "
        "count(*) FILTER (WHERE n_events = 1) AS one_event "
        "FROM (SELECT customer_id, any_value(n_events) AS n_events "
        "      FROM customer_sequences GROUP BY customer_id)"
    ).iloc[0]
    without = int(duckdb.query(
        "SELECT count(DISTINCT c.customer_id) AS n FROM raw_customers c "
        "WHERE NOT EXISTS (SELECT 1 FROM raw_interactions i "
        "WHERE i.customer_id = c.customer_id)"
    ).iloc[0, 0])
    preview = duckdb.query("SELECT * FROM customer_sequences LIMIT 10")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "order": order,
            "customers": int(stats["customers"]),
            "customers_without_events": without,
            "customers_with_one_event": int(stats["one_event"]),
            "events_per_customer": f"{int(stats['shortest'])} / {float(stats['median']):g} / "
                                   f"{int(stats['longest'])} (min / median / max)",
            "max_events": unicon_settings.max_events,
            "preview": markdown_table(preview, 10),
        }
    )


@dg.asset(deps=[customer_sequences, "raw_customers"], group_name=GROUP,
          kinds={"pytorch", "mlflow"})
def unicon_model(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    unicon_settings: UniconSettings,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """The transformer trained on next-item prediction (data-driven training), early-stopped
    on a leave-last-out validation item, scored on the last item against popularity
    (full ranking; seen items excluded when no customer repeats an item). Logged to MLflow
    as a model with its training curve; saved in the state folder for the next assets."""
    sequences, items, customers = _load_inputs(duckdb)
    dataset = source_info(duckdb, "dataset")
    vocabulary = build_vocabulary(sequences, items, customers)
    encoded = encode_sequences(sequences, vocabulary, customers)
    data = encoded.data
    split = leave_last_out(data)
    exclude_seen = not data.has_repeats()
    model = NextItemModel(unicon_settings.unicon_config())
    started = time.perf_counter()
    model.fit(split.train, vocabulary, validation=(split.train, split.validation_targets),
              exclude_seen=exclude_seen, max_len=unicon_settings.max_events,
              on_epoch=lambda r: context.log.info(
                  f"epoch {r.epoch}: loss {r.train_loss:.3f}, validation NDCG@10 "
                  f"{r.validation_ndcg:.4f} ({r.seconds:.1f} s)"))
    seconds = time.perf_counter() - started
    ranks = model.rank(split.test_inputs, split.test_targets)
    tested = np.flatnonzero(split.test_targets > 0)
    popularity = PopularityRanker().fit(split.test_inputs, vocabulary.n_items)
    seen = split.test_inputs.items[tested] if exclude_seen else None
    popularity_ranks = rank_targets(popularity.scores(len(tested)),
                                    split.test_targets[tested], seen)
    protocol = (f"leave-last-out, full ranking over {vocabulary.n_items} items, "
                f"seen items {'excluded' if exclude_seen else 'kept (customers repeat items)'}"
                f", {len(tested)} customers")
    rows = []
    for method, r, s in (("unicon", ranks, seconds), ("popularity", popularity_ranks, 0.0)):
        rows.append(_row(dataset, "next_item", method, "hr@10", hit_rate(r), seconds=s))
        rows.append(_row(dataset, "next_item", method, "ndcg@10", ndcg(r), seconds=s))
    table = _scores(rows)
    duckdb.write_table("unicon_next_item_scores", table)
    model.save(_model_path(state_folder))

    history = pd.DataFrame([vars(r) for r in model.history_])
    curve, curve_path = _figure(figures.training_curve(model.history_), "unicon_training",
                                state_folder)
    with mlflow_tracker.run(UNICON_EXPERIMENT, "next_item", context,
                            tags={"dataset": dataset}) as run:
        mlflow.log_params({**vars(model.config), "max_events": unicon_settings.max_events,
                           "protocol": protocol, "n_items": vocabulary.n_items,
                           "customers": len(data)})
        for record in model.history_:
            mlflow.log_metrics(_finite({"train_loss": record.train_loss,
                                        "validation_hr_at_10": record.validation_hr,
                                        "validation_ndcg_at_10": record.validation_ndcg}),
                               step=record.epoch)
        mlflow.log_metrics(_finite({f"test_{r.method}_{r.metric.replace('@', '_at_')}":
                                    r.value for r in table.itertuples()}
                                   | {"train_seconds": seconds,
                                      "best_epoch": model.best_epoch_}))
        mlflow.log_artifact(str(curve_path))
        _log_model(model.network_, "next_item_model")
        link = mlflow_tracker.run_link(run)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "protocol": protocol,
            "scores": markdown_table(table[["method", "metric", "value"]]),
            "best_epoch": model.best_epoch_,
            "epochs": len(model.history_),
            "train_seconds": seconds,
            "device": str(model.device_),
            "parameters": sum(p.numel() for p in model.network_.parameters()),
            "customers": len(data),
            "customers_without_target": int((split.test_targets == 0).sum()),
            "unknown_item_events": encoded.unknown_item_events,
            "training_curve": curve,
            "history": markdown_table(history.round(4), 60),
            "mlflow_run": dg.MetadataValue.url(link),
        }
    )


@dg.asset(deps=[unicon_model], group_name=GROUP, kinds={"pytorch", "duckdb"})
def consumer_embeddings(duckdb: DuckDBStore, state_folder: StateFolder
                        ) -> dg.MaterializeResult:
    """Every customer's consumer embedding: the mean of the encoder's outputs over their
    events. Customers without any event are reported and skipped (never NaN)."""
    model = NextItemModel.load(_model_path(state_folder))
    encoded = _encode_all(duckdb, model.vocabulary_)
    data = encoded.data
    embedding = model.embed(data)
    frame = pd.DataFrame({
        "customer_id": data.customer_ids,
        "n_events": data.lengths,
        "embedding": list(embedding),
    })
    duckdb.write_table("consumer_embeddings", frame)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "dimension": int(embedding.shape[1]),
            "customers_without_events": len(encoded.empty_customers),
            "skipped_customers": dg.MetadataValue.json(
                [str(c) for c in encoded.empty_customers[:20]]),
            "nan_embeddings": int((~np.isfinite(embedding)).any(axis=1).sum()),
        }
    )


def _embeddings(duckdb: DuckDBStore, customer_ids: np.ndarray) -> np.ndarray:
    table = duckdb.read_table("consumer_embeddings").set_index("customer_id")
    table = table.reindex(pd.Index(customer_ids, dtype=object))
    return np.stack(table["embedding"].to_numpy()).astype(np.float64)


@dg.asset(deps=[consumer_embeddings], group_name=GROUP, kinds={"scikitlearn", "mlflow"})
def behaviour_segments(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    unicon_settings: UniconSettings,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """Data-driven segments: k-means on the centred, L2-normalised embeddings for every K
    in [k_min, k_max] (one MLflow run each); K by silhouette among the Ks whose segments
    are tighter than the attribute-similarity length scale (Figure 2); each segment's
    representative items. Tables behaviour_segments(customer_id, segment,
    distance_to_centre), segment_representative_items and behaviour_k_selection."""
    s = unicon_settings
    model = NextItemModel.load(_model_path(state_folder))
    vocabulary = model.vocabulary_
    data = _encode_all(duckdb, vocabulary).data
    embedding = _embeddings(duckdb, data.customer_ids)
    started = time.perf_counter()
    distributions = sg.attribute_distributions(data, vocabulary)
    first, second = sg.sample_pairs(len(data), s.similarity_pairs, s.seed)
    similarity = sg.attribute_similarity(distributions, first, second)
    cosine = sg.cosine_of_pairs(embedding, first, second)
    length_scale = sg.similarity_length_scale(1.0 - cosine, similarity)
    segmenter = sg.BehaviourSegmenter(tuple(range(s.k_min, s.k_max + 1)), seed=s.seed)
    segmenter.fit(embedding, length_scale)
    chosen = segmenter.results_[segmenter.k_]
    representatives = sg.representative_items(
        data.item_counts(vocabulary.n_items), segmenter.labels_, segmenter.distances_,
        vocabulary.category_codes(), s.representative_items,
        s.representative_radius_quantile, s.max_category_share,
    )
    seconds = time.perf_counter() - started
    np.savez(_segmenter_path(state_folder), mean=segmenter.mean_, centres=segmenter.centres_,
             k=segmenter.k_, length_scale=length_scale, seconds=seconds)
    labels = category_labels(vocabulary)
    representatives = representatives.assign(
        item_id=vocabulary.item_ids[representatives["item"].to_numpy() - 1],
        category=labels[representatives["item"].to_numpy()],
    )[["segment", "rank", "item_id", "category", "customers", "share"]]
    assignments = pd.DataFrame({"customer_id": data.customer_ids,
                                "segment": segmenter.labels_,
                                "distance_to_centre": segmenter.distances_})
    selection = pd.DataFrame([
        {"k": k, "silhouette": r.silhouette, "mean_distance_to_centre": r.mean_distance,
         "segment_sizes": str(r.sizes.tolist()), "chosen": k == segmenter.k_}
        for k, r in segmenter.results_.items()
    ]).assign(length_scale=length_scale, seconds=seconds)
    duckdb.write_table("behaviour_segments", assignments)
    duckdb.write_table("segment_representative_items", representatives)
    duckdb.write_table("behaviour_k_selection", selection)

    distance_plot, distance_path = _figure(
        figures.centre_distances(chosen, length_scale), "unicon_centre_distances",
        state_folder)
    k_plot, k_path = _figure(
        figures.k_selection(segmenter.results_, segmenter.k_, length_scale),
        "unicon_k_selection", state_folder)
    links = {}
    for k, result in segmenter.results_.items():
        with mlflow_tracker.run(SEGMENTS_EXPERIMENT, f"K={k}", context,
                                tags={"chosen": str(k == segmenter.k_)}) as run:
            mlflow.log_params({"k": k, "segment_sizes": result.sizes.tolist()})
            mlflow.log_metrics(_finite({"silhouette_cosine": result.silhouette,
                                        "mean_distance_to_centre": result.mean_distance,
                                        "similarity_length_scale": length_scale}))
            if k == segmenter.k_:
                mlflow.log_artifact(str(distance_path))
                mlflow.log_artifact(str(k_path))
                mlflow.log_table(representatives, "representative_items.json")
            links[k] = mlflow_tracker.run_link(run)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(assignments),
            "chosen_k": segmenter.k_,
            "similarity_length_scale": float(length_scale),
            "pearson_similarity_vs_cosine": float(
                pd.Series(similarity).corr(pd.Series(cosine))),
            "k_selection": markdown_table(selection.drop(columns=["seconds"]).round(4)),
            "segment_sizes": dg.MetadataValue.json(chosen.sizes.tolist()),
            "representative_items": markdown_table(representatives, 30),
            "centre_distances": distance_plot,
            "silhouette_by_k": k_plot,
            "mlflow_run": dg.MetadataValue.url(links[segmenter.k_]),
            "mlflow_experiment": dg.MetadataValue.url(
                mlflow_tracker.experiment_link(SEGMENTS_EXPERIMENT)),
        }
    )


def _segment_rows(dataset: str, method: str, labels: np.ndarray, similarity: np.ndarray,
                  first: np.ndarray, second: np.ndarray, seconds: float) -> list[dict]:
    valid = (labels[first] >= 0) & (labels[second] >= 0)
    auc = sg.same_segment_auc(similarity[valid], labels, first[valid], second[valid])
    k = int(len(np.unique(labels[labels >= 0])))
    return [_row(dataset, "behaviour_segments", method, "same_segment_auc", auc, k, seconds)]


@dg.asset(
    deps=[behaviour_segments, "ground_truth_segments", "customer_segments"],
    group_name=GROUP,
    kinds={"pytorch", "duckdb"},
)
def unicon_evaluation(duckdb: DuckDBStore, unicon_settings: UniconSettings,
                      state_folder: StateFolder) -> dg.MaterializeResult:
    """How good the behaviour segments are (table unicon_segment_scores):

    - behaviour_segments: Pearson correlation of the attribute similarity of eq. (2)
      with the embeddings' cosine on random pairs, and the ROC-AUC of that similarity for
      same-segment pairs (UNICON, the alpha-embedding segments, k-means on a bag of
      categories; the latter is built from the same attributes as the similarity, so it
      is a reference, not a fair competitor);
    - recovery (synthetic data): ARI and matched accuracy against the planted behavioural
      segments (slice ``behaviour_segments``), beside the two baselines;
    - segment_recommendation (Approach 2; not 'recommendation', which holds the NMF
      assets' rows under another protocol): from all but each customer's last event, backfill
      ``backfill_share`` of the history with the segment's representative items, predict
      the next item; NDCG@10, HR@10 and category diversity against no backfill, for all
      customers and those with few events (the shortest quarter of histories).
    """
    s = unicon_settings
    dataset = source_info(duckdb, "dataset")
    model = NextItemModel.load(_model_path(state_folder))
    vocabulary = model.vocabulary_
    data = _encode_all(duckdb, vocabulary).data
    embedding = _embeddings(duckdb, data.customer_ids)
    stored = np.load(_segmenter_path(state_folder))
    segments = duckdb.read_table("behaviour_segments").set_index("customer_id")
    labels = segments["segment"].reindex(pd.Index(data.customer_ids)).to_numpy()
    k = int(stored["k"])
    rows: list[dict] = []
    metadata: dict = {}

    # coherence with the attribute similarity of eq. (2)
    distributions = sg.attribute_distributions(data, vocabulary)
    first, second = sg.sample_pairs(len(data), s.similarity_pairs, s.seed + 1)
    similarity = sg.attribute_similarity(distributions, first, second)
    cosine = sg.cosine_of_pairs(embedding, first, second)
    ok = np.isfinite(similarity)
    # eq. (2) compares the attributes of customers' items: none (a files source without
    # an item file) leaves nothing to correlate or rank, so those scores are skipped
    comparable = int(ok.sum()) >= 2
    segment_seconds = float(stored["seconds"])
    if comparable:
        pearson = float(np.corrcoef(similarity[ok], cosine[ok])[0, 1])
        rows.append(_row(dataset, "behaviour_segments", "unicon",
                         "pearson_similarity_cosine", pearson, k, segment_seconds))
        rows += _segment_rows(dataset, "unicon", labels, similarity, first, second,
                              segment_seconds)
    else:
        metadata["attribute_similarity"] = "skipped: the items have no attributes (eq. 2)"
    candidates = [("unicon", labels, segment_seconds)]
    if vocabulary.category_codes().max() > 0:
        started = time.perf_counter()
        bag = sg.bag_of_categories(data, vocabulary)
        bag_cosine = sg.cosine_of_pairs(bag, first, second)
        bag_segmenter = sg.BehaviourSegmenter(tuple(range(s.k_min, s.k_max + 1)),
                                              seed=s.seed)
        bag_segmenter.fit(bag, sg.similarity_length_scale(1.0 - bag_cosine, similarity))
        bag_seconds = time.perf_counter() - started
        rows += _segment_rows(dataset, "bag_of_categories", bag_segmenter.labels_,
                              similarity, first, second, bag_seconds)
        candidates.append(("bag_of_categories", bag_segmenter.labels_, bag_seconds))
    else:
        # every customer's bag would be the same empty vector: nothing to cluster
        metadata["bag_of_categories"] = "skipped: the items have no category attribute"
    if comparable and duckdb.table_exists("customer_segments"):
        alpha_table = duckdb.read_table("customer_segments").set_index("customer_id")
        alpha = alpha_table["segment"].reindex(pd.Index(data.customer_ids))
        alpha = alpha.fillna(-1).astype(int).to_numpy()
        rows += _segment_rows(dataset, "model_embedding", alpha, similarity, first, second,
                              float("nan"))

    # recovery of planted behavioural segments
    truth = duckdb.read_table("ground_truth_segments")
    if "behaviour_segment" in truth and truth["behaviour_segment"].notna().any():
        planted = truth.assign(customer_id=truth["customer_id"].astype(str))
        planted = planted.set_index("customer_id")["behaviour_segment"]
        planted = planted.reindex(pd.Index(data.customer_ids))
        known = planted.notna().to_numpy()
        planted = planted.to_numpy()
        # the segmentation methods (model_embedding, nmf, ...) score themselves on the
        # behavioural truth in their own assets (assets/methods.py)
        for method, predicted, seconds in candidates:
            rows_known = known & (predicted >= 0)
            truth_values = planted[rows_known].astype(int)
            n_segments = int(len(np.unique(predicted[rows_known])))
            for metric, value in (("ari", adjusted_rand(truth_values, predicted[rows_known])),
                                  ("accuracy", hungarian_accuracy(truth_values,
                                                                  predicted[rows_known]))):
                rows.append(_row(dataset, "recovery", method, metric, value, n_segments,
                                 seconds, slice_name="behaviour_segments"))

    # segment-aware recommendations (Approach 2)
    tested = np.flatnonzero(data.lengths >= 2)
    if len(tested):
        inputs = data.subset(tested).drop_last(1)
        targets = data.subset(tested).last_items(1)
        segmenter = sg.BehaviourSegmenter()
        segmenter.mean_, segmenter.centres_ = stored["mean"], stored["centres"]
        test_segments, test_distances = segmenter.predict(model.embed(inputs))
        representatives = sg.representative_items(
            inputs.item_counts(vocabulary.n_items), test_segments, test_distances,
            vocabulary.category_codes(), s.representative_items,
            s.representative_radius_quantile, s.max_category_share,
        )
        common_event = int(np.bincount(inputs.events[inputs.events > 0]).argmax())
        filled = sg.backfill(inputs, test_segments, representatives, s.backfill_share,
                             common_event, max_len=model.network_.max_len)
        category = vocabulary.category_codes()
        few = inputs.lengths <= np.quantile(inputs.lengths, 0.25)
        metadata["few_events_threshold"] = int(np.quantile(inputs.lengths, 0.25))
        for method, sequences in (("unicon", inputs), ("unicon_segment_backfill", filled)):
            seen = inputs.items if model.exclude_seen_ else None
            # only the customer's own items are excluded, not the backfilled ones
            ranks = model.rank(sequences, targets, seen=seen)
            top = model.recommend(sequences, 10, seen=seen)
            diversity = category_diversity(top, category)
            for slice_name, mask in (("all", np.ones(len(tested), bool)), ("few_events", few)):
                for metric, value in (("ndcg@10", ndcg(ranks[mask])),
                                      ("hr@10", hit_rate(ranks[mask])),
                                      ("category_diversity@10", diversity[mask].mean())):
                    rows.append(_row(dataset, "segment_recommendation", method, metric, value, k,
                                     slice_name=slice_name))
    table = _scores(rows)
    duckdb.write_table("unicon_segment_scores", table)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(table),
            "scores": markdown_table(table[["task", "slice", "method", "metric", "value"]], 60),
            **metadata,
        }
    )


def business_rule(duckdb: DuckDBStore, unicon_settings: UniconSettings,
                  dataset: str) -> lk.RuleSpec | None:
    """The configured rule, else the dataset's default, else None (no rule for files)."""
    if unicon_settings.rule_filter.strip():
        count = unicon_settings.rule_min_count or DEFAULT_RULE_MIN_COUNT
        return lk.RuleSpec(unicon_settings.rule_filter, count)
    if dataset in DEFAULT_RULES:
        rule_filter, count = DEFAULT_RULES[dataset]
        return lk.RuleSpec(rule_filter, unicon_settings.rule_min_count or count)
    return None


def create_rule_view(duckdb: DuckDBStore, rule: lk.RuleSpec) -> int:
    """The view lookalike_rule_events: every interaction joined with its item and the
    rule's predicate as ``matches``; returns how many interactions match. A predicate
    DuckDB cannot run fails here, naming the rule and the columns it may use."""
    sql = f"""
        CREATE OR REPLACE VIEW lookalike_rule_events AS
        WITH items AS (
            SELECT * EXCLUDE (item_order)
            FROM (SELECT rowid AS item_order, * FROM raw_items)
            QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY item_order) = 1
        ),
        joined AS (
            SELECT r.*, i.* EXCLUDE (item_id)
            FROM (SELECT rowid AS file_order, * FROM raw_interactions) AS r
            LEFT JOIN items AS i USING (item_id)
        )
        SELECT customer_id, item_id, event, value, "timestamp", file_order,
               coalesce(CAST(({rule.filter}) AS BOOLEAN), false) AS matches
        FROM joined
        WHERE customer_id IS NOT NULL AND item_id IS NOT NULL
    """
    try:
        with duckdb.connect() as con:
            con.execute(sql)
            return int(con.execute(
                "SELECT count(*) FROM lookalike_rule_events WHERE matches").fetchone()[0])
    except duckdb_module.Error as error:
        columns = duckdb.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name IN ('raw_interactions', 'raw_items')"
        )["column_name"].unique().tolist()
        raise ValueError(
            f"the business rule ({rule.text}) is not a valid SQL predicate over the "
            f"interactions and their items (columns {columns}): {error}"
        ) from error


def cutoff_time(duckdb: DuckDBStore, unicon_settings: UniconSettings) -> pd.Timestamp:
    if unicon_settings.cutoff:
        try:
            return pd.Timestamp(unicon_settings.cutoff)
        except ValueError as error:
            raise ValueError(
                f"UniconSettings.cutoff {unicon_settings.cutoff!r} is not a date or time"
            ) from error
    value = duckdb.query(
        'SELECT quantile_disc("timestamp", $q) AS cutoff FROM raw_interactions',
        {"q": unicon_settings.cutoff_quantile},
    ).iloc[0, 0]
    return pd.Timestamp(value)


@dg.asset(deps=[customer_sequences, "raw_customers"], group_name=GROUP,
          kinds={"pytorch", "sql", "mlflow"})
def lookalike_audience(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    unicon_settings: UniconSettings,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """Lookalike audience of the business rule's core segment (lookalike training).

    Core: customers meeting the rule on their history up to the cutoff. A transformer
    pretrained on next-item prediction over histories up to the cutoff is fine-tuned on
    core vs random non-core customers (not new at the cutoff); tau maximises F2 on a
    validation split, its customers weighted to the population's core / non-core balance
    (slice ``validation_core`` is scored the same way); the audience is every non-core
    customer scoring above tau (table lookalike_audience(customer_id, score, rank)).

    Honest evaluation (table unicon_lookalike_scores, slice ``future``): on non-core
    customers never used for training, does the audience meet the rule after the cutoff?
    Against a random audience, the heuristic "closest to meeting the rule" and logistic
    regression on bag-of-items counts, all with an audience of the same size (so precision
    and recall compare like with like) and by average precision.
    """
    s = unicon_settings
    dataset = source_info(duckdb, "dataset")
    rule = business_rule(duckdb, s, dataset)
    empty_audience = pd.DataFrame({"customer_id": pd.Series(dtype=str),
                                   "score": pd.Series(dtype=float),
                                   "rank": pd.Series(dtype="int64")})
    if rule is None:
        duckdb.write_table("lookalike_audience", empty_audience)
        duckdb.write_table("unicon_lookalike_scores", _scores([]))
        return dg.MaterializeResult(metadata={
            "skipped": f"no business rule for the {dataset!r} source: set "
                       "UniconSettings.rule_filter (an SQL predicate) and rule_min_count"})
    if timestamp_order(duckdb).startswith("file order"):
        raise ValueError(
            "a lookalike audience needs a time to cut history at, and "
            "raw_interactions.timestamp is empty: add a timestamp column to the interactions"
        )
    if s.positive_history not in ("before_rule", "full"):
        raise ValueError(
            f"UniconSettings.positive_history must be 'before_rule' or 'full', got "
            f"{s.positive_history!r}"
        )
    cutoff = cutoff_time(duckdb, s)
    matching = create_rule_view(duckdb, rule)
    duckdb.run_model("lookalike_labels", {"cutoff": cutoff, "min_count": rule.min_count,
                                          "new_customer_days": s.new_customer_days})
    labels = duckdb.read_table("lookalike_labels")
    labels["customer_id"] = labels["customer_id"].astype(str)
    lk.check_core(labels["core"].to_numpy(), rule, cutoff)
    duckdb.run_model("lookalike_sequences", {
        "cutoff": cutoff, "min_count": rule.min_count, "max_events": s.max_events,
        "before_rule": s.positive_history == "before_rule"})
    sequences = duckdb.query("SELECT * FROM lookalike_sequences ORDER BY customer_id, position")
    items, customers = duckdb.read_table("raw_items"), duckdb.read_table("raw_customers")
    vocabulary = build_vocabulary(sequences, items, customers)
    # customers whose whole history was the rule (core from their first events) have none
    encoded = encode_sequences(sequences, vocabulary, customers,
                               customer_ids=labels["customer_id"].to_numpy())
    data = encoded.data
    labels = labels.set_index("customer_id").reindex(pd.Index(data.customer_ids))
    core = labels["core"].to_numpy(dtype=bool)
    lk.check_core(core, rule, cutoff)
    future = labels["joins_core_after"].to_numpy(dtype=bool)
    split = lk.split_customers(core, ~labels["new_at_cutoff"].to_numpy(dtype=bool),
                               s.negatives_per_positive, s.validation_share, seed=s.seed)

    started = time.perf_counter()
    pretrained = None
    if s.pretrain_epochs > 0:
        history = leave_last_out(data)
        pretrained = NextItemModel(s.unicon_config(max_epochs=s.pretrain_epochs)).fit(
            history.train, vocabulary, validation=(history.train, history.validation_targets),
            max_len=s.max_events)
    classifier = LookalikeClassifier(
        s.unicon_config(max_epochs=s.classifier_epochs, batch_size=s.classifier_batch_size,
                        patience=s.classifier_patience,
                        learning_rate=s.classifier_learning_rate), pretrained,
    ).fit(data.subset(split.train), core[split.train], vocabulary,
          validation=(data.subset(split.validation), core[split.validation]))
    unicon_seconds = time.perf_counter() - started
    validation_scores = classifier.predict_proba(data.subset(split.validation))
    # F2 as it would be on the population, not on the sampled validation split
    weights = lk.population_weights(core[split.validation], int(core.sum()),
                                    int((~core).sum()))
    tau, validation_f2 = lk.choose_threshold(core[split.validation], validation_scores,
                                             weights=weights)
    noncore = np.flatnonzero(~core)
    scores = np.full(len(data), np.nan)
    scores[noncore] = classifier.predict_proba(data.subset(noncore))
    audience = pd.DataFrame({"customer_id": data.customer_ids[noncore],
                             "score": scores[noncore]})
    audience = audience[audience["score"] > tau].sort_values(
        ["score", "customer_id"], ascending=[False, True])
    audience["rank"] = np.arange(1, len(audience) + 1)
    duckdb.write_table("lookalike_audience", audience.reset_index(drop=True))

    # the honest evaluation, on candidates (non-core, never trained or validated on)
    candidates = split.candidates
    y_future = future[candidates]
    size = int((scores[candidates] > tau).sum())
    started = time.perf_counter()
    counts = data.item_counts(vocabulary.n_items)
    logistic = lk.BagOfItemsLogistic(seed=s.seed).fit(
        counts[split.train], core[split.train], counts[split.validation],
        core[split.validation])
    logistic_seconds = time.perf_counter() - started
    logistic_validation = logistic.predict_proba(counts[split.validation])
    heuristic = lk.rule_progress(labels["matches_before"].to_numpy(),
                                 labels["rule_item_events_before"].to_numpy())
    random_scores = np.random.default_rng(s.seed).random(len(data))
    methods = {
        "unicon": (scores, unicon_seconds),
        "logistic_bag_of_items": (logistic.predict_proba(counts), logistic_seconds),
        "heuristic_rule_progress": (heuristic, 0.0),
        "random": (random_scores, 0.0),
    }
    rows = []
    for method, (method_scores, seconds) in methods.items():
        result = lk.audience_scores(y_future, method_scores[candidates], size, seed=s.seed)
        for metric in ("precision", "recall", "f2", "average_precision"):
            rows.append(_row(dataset, "lookalike", method, metric, result[metric],
                             seconds=seconds, slice_name="future"))
    for method, method_scores in (("unicon", validation_scores),
                                  ("logistic_bag_of_items", logistic_validation)):
        y_validation = core[split.validation]
        method_tau, _ = lk.choose_threshold(y_validation, method_scores, weights=weights)
        precision, recall, f2 = lk.f_beta_at(y_validation, method_scores > method_tau,
                                             weights=weights)
        ap = average_precision_score(y_validation, method_scores, sample_weight=weights)
        for metric, value in (("precision", precision), ("recall", recall), ("f2", f2),
                              ("average_precision", ap)):
            rows.append(_row(dataset, "lookalike", method, metric, value,
                             slice_name="validation_core"))
    table = _scores(rows)
    duckdb.write_table("unicon_lookalike_scores", table)

    noncore_validation = split.validation[~core[split.validation]]
    figure = figures.lookalike(
        core_scores=validation_scores[core[split.validation]],
        noncore_scores=classifier.predict_proba(data.subset(noncore_validation)),
        noncore_with_matches=labels["matches_before"].to_numpy()[noncore_validation] > 0,
        pool_scores=scores[noncore],
        tau=tau,
        validation_labels=core[split.validation],
        validation_scores=validation_scores,
        validation_weights=weights,
        title=f"Lookalikes of: {rule.text}",
    )
    plot, path = _figure(figure, "unicon_lookalike", state_folder)
    summary = {
        "rule": rule.text, "cutoff": str(cutoff), "positive_history": s.positive_history,
        "matching_interactions": matching, "customers_before_cutoff": len(data),
        "core": int(core.sum()), "noncore": int((~core).sum()),
        "train": len(split.train), "validation": len(split.validation),
        "candidates": len(candidates), "candidates_joining_core_after": int(y_future.sum()),
        "tau": tau, "validation_f2": validation_f2, "lookalikes": len(audience),
        "candidate_audience_size": size,
    }
    with mlflow_tracker.run(LOOKALIKE_EXPERIMENT, "lookalike", context,
                            tags={"dataset": dataset, "rule": rule.text}) as run:
        mlflow.log_params({**vars(classifier.config), **{
            k: v for k, v in summary.items() if isinstance(v, str)}})
        mlflow.log_metrics(_finite({k: v for k, v in summary.items()
                                    if not isinstance(v, str)}))
        for record in classifier.history_:
            mlflow.log_metrics(_finite({k: v for k, v in record.items() if k != "epoch"}),
                               step=record["epoch"])
        mlflow.log_metrics(_finite({f"{r.slice}_{r.method}_{r.metric}": r.value
                                    for r in table.itertuples()}))
        mlflow.log_artifact(str(path))
        _log_model(classifier.network_, "lookalike_classifier")
        link = mlflow_tracker.run_link(run)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(audience),
            **{k: (v if isinstance(v, str | int) else float(v)) for k, v in summary.items()},
            "scores": markdown_table(table[["slice", "method", "metric", "value"]], 40),
            "classifier_history": markdown_table(
                pd.DataFrame(classifier.history_).round(4), 60),
            "figure_4": plot,
            "preview": markdown_table(audience, 10),
            "mlflow_run": dg.MetadataValue.url(link),
        }
    )


@dg.asset(
    deps=[unicon_model, unicon_evaluation, lookalike_audience],
    group_name=GROUP,
    kinds={"sql", "duckdb", "mlflow"},
)
def method_unicon(
    context: dg.AssetExecutionContext, duckdb: DuckDBStore, mlflow_tracker: MLflowTracker
) -> dg.MaterializeResult:
    """UNICON's rows for the comparison (dbt_like_sql/method_scores_unicon.sql): next-item,
    recovery, behaviour_segments, recommendation and lookalike, with their baselines."""
    rows = duckdb.run_model("method_scores_unicon")
    table = duckdb.read_table("method_scores_unicon")
    dataset = table["dataset"].iloc[0] if len(table) else source_info(duckdb, "dataset")
    with mlflow_tracker.run(COMPARISON_EXPERIMENT, "unicon", context,
                            tags={"method": "unicon", "dataset": dataset}) as run:
        mlflow.log_params({"method": "unicon"})
        ours = table[table["method"].str.startswith("unicon")]
        mlflow.log_metrics(_finite({
            f"{r.task}.{r.slice}.{r.method}.{r.metric}".replace("@", "_at_"): r.value
            for r in ours.itertuples()}))
        link = mlflow_tracker.run_link(run)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "scores": markdown_table(table[["task", "slice", "method", "metric", "value"]], 80),
            "mlflow_run": dg.MetadataValue.url(link),
        }
    )
