"""UNICON (Dibak et al., 2023): sequences, the transformer, consumer embeddings and
UNICON's comparison rows, as thin asset shells over core/sequence; the behaviour
segments are in assets/behaviour.py, the lookalike audience in assets/lookalike.py, and
both use the helpers here.

customer_sequences -> unicon_model -> consumer_embeddings -> behaviour_segments
                                   -> unicon_evaluation (recovery, coherence, Approach 2)
customer_sequences -> lookalike_audience (its own model, trained on history to the cutoff)
everything -> method_unicon (method_scores_unicon, for model_comparison)
"""

from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import torch

from segmentation_dagster.core.sequence import figures
from segmentation_dagster.core.sequence.data import (
    Vocabulary,
    build_vocabulary,
    encode_sequences,
)
from segmentation_dagster.core.sequence.next_item import evaluate_next_item
from segmentation_dagster.core.sequence.train import NextItemModel
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.scores import (
    score_frame,
    score_row,
    write_score_table,
)
from segmentation_dagster.settings import RandomSeed, UniconModelSettings

from .common import figure_metadata, markdown_table, source_info

UNICON_EXPERIMENT = "unicon"
GROUP = "unicon"


# ------------------------------------------------------------ shared with assets/lookalike


def core_rows(dataset: str, task: str, scores: pd.DataFrame, **defaults) -> list[dict]:
    """The core's plain score frame (method, metric, value and any of n_segments, seconds,
    slice) as comparison rows of ``task``; ``defaults`` fill the columns it lacks."""
    rows = []
    for record in scores.to_dict("records"):
        values = defaults | record
        rows.append(score_row(dataset, task, values["method"], values["metric"],
                              values["value"], values.get("n_segments", 1),
                              values.get("seconds", float("nan")),
                              values.get("slice", "all")))
    return rows


def finite(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}


def save_figure(figure, name: str, state_folder: StateFolder):
    """figure_metadata into the state folder's figures/."""
    return figure_metadata(figure, name, state_folder.folder("figures"))


def log_model(network: torch.nn.Module, name: str) -> None:
    import mlflow.pytorch

    # explicit requirements: MLflow's inference of them costs seconds per model; pickle,
    # because the default 'pt2' export needs an input example to trace
    mlflow.pytorch.log_model(network, name=name, serialization_format="pickle",
                             pip_requirements=[f"torch=={torch.__version__}"])


# the slice of the next-item rows measured on sequences in file order (no timestamps):
# they measure how the file is sorted as much as what customers do
FILE_ORDER_SLICE = "all (file order)"
FILE_ORDER_WARNING = (
    "raw_interactions has no timestamps: UNICON's sequences follow the order of the "
    "interactions file, so its next-item scores (slice 'all (file order)' in "
    "model_comparison) measure that order; on a file sorted by item or customer they are "
    "meaningless. Add a timestamp column to the interactions for real sequences."
)


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


# ------------------------------------------------------------ loading


# unicon_model and behaviour_segments save these for the assets downstream of them
def model_path(state_folder: StateFolder) -> Path:
    return state_folder.folder("models") / "unicon_next_item.pt"


def load_inputs(duckdb: DuckDBStore) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    sequences = duckdb.query(
        "SELECT customer_id, position, item_id, event, value FROM customer_sequences "
        "ORDER BY customer_id, position"
    )
    return sequences, duckdb.read_table("raw_items"), duckdb.read_table("raw_customers")


def encode_all(duckdb: DuckDBStore, vocabulary: Vocabulary):
    sequences, _, customers = load_inputs(duckdb)
    everyone = pd.Index(customers["customer_id"].dropna().astype(str)).union(
        pd.Index(sequences["customer_id"].astype(str).unique())
    )
    return encode_sequences(sequences, vocabulary, customers, customer_ids=everyone.to_numpy())


def load_embeddings(duckdb: DuckDBStore, customer_ids: np.ndarray) -> np.ndarray:
    table = duckdb.read_table("consumer_embeddings").set_index("customer_id")
    table = table.reindex(pd.Index(customer_ids, dtype=object))
    return np.stack(table["embedding"].to_numpy()).astype(np.float64)


# ------------------------------------------------------------------------------- assets


@dg.asset(deps=["raw_interactions", "raw_items", "raw_customers", "edge_sample"],
          group_name=GROUP, kinds={"sql", "duckdb"})
def customer_sequences(
    context: dg.AssetExecutionContext, duckdb: DuckDBStore,
    unicon_model_settings: UniconModelSettings,
) -> dg.MaterializeResult:
    """Per customer, interactions in time order with the event type and the item's
    attributes, cut to the last ``max_events`` (dbt_like_sql/customer_sequences.sql).
    Without any timestamp, the file order, with a warning in the run's log. The customers
    of edge_sample: every one unless there are more than in_memory_customers."""
    order = timestamp_order(duckdb)
    if order.startswith("file order"):
        context.log.warning(FILE_ORDER_WARNING)
    max_events = unicon_model_settings.max_events
    rows = duckdb.run_model("customer_sequences", {"max_events": max_events})
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
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows,
        "order": order,
        "customers": int(stats["customers"]),
        "customers_without_events": without,
        "customers_with_one_event": int(stats["one_event"]),
        "events_per_customer": f"{int(stats['shortest'])} / {float(stats['median']):g} / "
                               f"{int(stats['longest'])} (min / median / max)",
        "max_events": max_events,
        "preview": markdown_table(duckdb.query("SELECT * FROM customer_sequences LIMIT 10"),
                                  10),
    })


def _log_next_item(mlflow_tracker, context, dataset, evaluation, table, curve_path,
                   max_events: int, customers: int) -> str:
    model = evaluation.model
    with mlflow_tracker.run(UNICON_EXPERIMENT, "next_item", context,
                            tags={"dataset": dataset}) as run:
        mlflow.log_params({**vars(model.config), "max_events": max_events,
                           "protocol": evaluation.protocol,
                           "n_items": model.vocabulary_.n_items, "customers": customers})
        for record in model.history_:
            mlflow.log_metrics(finite({"train_loss": record.train_loss,
                                       "validation_hr_at_10": record.validation_hr,
                                       "validation_ndcg_at_10": record.validation_ndcg}),
                               step=record.epoch)
        mlflow.log_metrics(finite({f"test_{r.method}_{r.metric.replace('@', '_at_')}":
                                   r.value for r in table.itertuples()}
                                  | {"train_seconds": evaluation.seconds,
                                     "best_epoch": model.best_epoch_}))
        mlflow.log_artifact(str(curve_path))
        log_model(model.network_, "next_item_model")
        return mlflow_tracker.run_link(run)


@dg.asset(deps=[customer_sequences, "raw_customers"], group_name=GROUP,
          kinds={"pytorch", "mlflow"})
def unicon_model(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    unicon_model_settings: UniconModelSettings,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """The transformer trained on next-item prediction (data-driven training), early-stopped
    on a leave-last-out validation item, scored on the last item against popularity
    (full ranking; seen items excluded when no customer repeats an item). Logged to MLflow
    as a model with its training curve; saved in the state folder for the next assets."""
    s = unicon_model_settings
    sequences, items, customers = load_inputs(duckdb)
    dataset = source_info(duckdb, "dataset")
    vocabulary = build_vocabulary(sequences, items, customers)
    encoded = encode_sequences(sequences, vocabulary, customers)
    file_order = timestamp_order(duckdb).startswith("file order")
    if file_order:
        context.log.warning(FILE_ORDER_WARNING)
    evaluation = evaluate_next_item(
        encoded.data, vocabulary, s.unicon_config(random_seed.value), max_len=s.max_events,
        on_epoch=lambda r: context.log.info(
            f"epoch {r.epoch}/{s.max_epochs}: loss {r.train_loss:.3f}, validation NDCG@10 "
            f"{r.validation_ndcg:.4f} ({r.seconds:.1f} s; {r.elapsed:.0f} of at most "
            f"{s.max_seconds:g} s, about {r.seconds_left:.0f} s left)"))
    model = evaluation.model
    if model.stopped_by_ == "budget":
        context.log.warning(
            f"UNICON's training reached its budget of {s.max_seconds:g} s after "
            f"{len(model.history_)} epochs and kept the best so far (epoch "
            f"{model.best_epoch_}); raise unicon_model_settings.max_seconds for more")
    table = score_frame(core_rows(dataset, "next_item", evaluation.scores,
                                  slice=FILE_ORDER_SLICE if file_order else "all"))
    duckdb.write_table("unicon_next_item_scores", table)
    model.save(model_path(state_folder))
    curve, curve_path = save_figure(figures.training_curve(model.history_),
                                    "unicon_training", state_folder)
    link = _log_next_item(mlflow_tracker, context, dataset, evaluation, table, curve_path,
                          s.max_events, len(encoded.data))
    history = pd.DataFrame([vars(r) for r in model.history_])
    return dg.MaterializeResult(metadata={
        "dagster/row_count": len(table),
        "protocol": evaluation.protocol,
        "scores": markdown_table(table[["method", "metric", "value"]]),
        "best_epoch": model.best_epoch_,
        "epochs": len(model.history_),
        "stopped_by": model.stopped_by_,
        "budget_seconds": s.max_seconds,
        "threads": model.threads_,
        "sequence_order": "file order" if file_order else "timestamp",
        "train_seconds": evaluation.seconds,
        "device": str(model.device_),
        "parameters": sum(p.numel() for p in model.network_.parameters()),
        "customers": len(encoded.data),
        "customers_without_target": evaluation.customers_without_target,
        "unknown_item_events": encoded.unknown_item_events,
        "training_curve": curve,
        "history": markdown_table(history.round(4), 60),
        "mlflow_run": dg.MetadataValue.url(link),
    })


@dg.asset(deps=[unicon_model], group_name=GROUP, kinds={"pytorch", "duckdb"})
def consumer_embeddings(duckdb: DuckDBStore, state_folder: StateFolder
                        ) -> dg.MaterializeResult:
    """Every customer's consumer embedding: the mean of the encoder's outputs over their
    events. Customers without any event are reported and skipped (never NaN)."""
    model = NextItemModel.load(model_path(state_folder))
    encoded = encode_all(duckdb, model.vocabulary_)
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


@dg.asset(
    deps=[unicon_model, "unicon_evaluation", "lookalike_audience"],
    group_name=GROUP,
    kinds={"sql", "duckdb"},
)
def method_unicon(duckdb: DuckDBStore) -> dg.MaterializeResult:
    """UNICON's rows for the comparison (dbt_like_sql/method_scores_unicon.sql): next-item,
    recovery, behaviour_segments, recommendation and lookalike, with their baselines;
    model_comparison logs them to MLflow with every other method's."""
    rows = duckdb.run_model("method_scores_unicon")
    write_score_table(duckdb, "method_scores_unicon", None)
    table = duckdb.read_table("method_scores_unicon")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "scores": markdown_table(table[["task", "slice", "method", "metric", "value"]], 80),
        }
    )
