"""The one way to record a score: a row of the ``model_comparison`` schema in DuckDB, and
the same number as an MLflow metric keyed ``{task}.{slice}.{metric}``.

- Every asset that scores a method builds its rows with :func:`score_row` (or the two
  helpers for held-out edges and planted segments) and writes them with
  :func:`record_scores` into its own score table, listed in the index ``score_tables``.
- ``model_comparison.sql`` stacks every indexed table, and the ``model_comparison`` asset
  logs the result with :func:`log_comparison`: one MLflow run per method, holding every
  (task, slice, metric) of that method, so MLflow shows exactly what DuckDB holds and a
  method scored by several assets (NMF, popularity) is still one row of the runs table.

The schema lives here, in the shell: the core returns plain numbers and frames.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from .core.graph import LIKE
from .core.metrics import accuracy, adjusted_rand, auc, hungarian_accuracy
from .resources import DuckDBStore, MLflowTracker

SCORE_COLUMNS = ["dataset", "task", "slice", "method", "metric", "value", "n_segments", "seconds"]
COMPARISON_EXPERIMENT = "model_comparison"


def score_row(
    dataset: str, task: str, method: str, metric: str, value: float,
    n_segments: int | None = 1, seconds: float = float("nan"), slice_name: str = "all",
) -> dict:
    """One row of the comparison schema (``n_segments`` None where it has no meaning)."""
    return dict(dataset=dataset, task=task, slice=slice_name, method=method, metric=metric,
                value=float(value), n_segments=None if n_segments is None else int(n_segments),
                seconds=float(seconds))


SCORE_TYPES = {"dataset": "string", "task": "string", "slice": "string", "method": "string",
               "metric": "string", "value": "float64", "n_segments": "Int64",
               "seconds": "float64"}
# The index of score tables: model_comparison.sql stacks every table listed here
SCORE_INDEX = "score_tables"


def score_frame(rows: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """Rows as a frame with exactly the comparison columns, in order and typed (an empty
    frame keeps the types, so tables of skipped methods stack with the others)."""
    frame = pd.DataFrame(list(rows) if not isinstance(rows, pd.DataFrame) else rows)
    missing = [c for c in SCORE_COLUMNS if c not in frame.columns]
    if len(frame) and missing:
        raise ValueError(f"score rows lack the columns {missing}")
    return frame.reindex(columns=SCORE_COLUMNS).astype(SCORE_TYPES)


def held_out_rows(
    dataset: str, method: str, probabilities: np.ndarray, labels: np.ndarray,
    n_segments: int, seconds: float, task: str = "held_out_edges", slice_name: str = "all",
) -> list[dict]:
    """Accuracy (like iff P >= 0.5) and AUC of predictions on held-out edges."""
    truth = labels == LIKE
    return [
        score_row(dataset, task, method, "accuracy", accuracy(truth, probabilities >= 0.5),
                  n_segments, seconds, slice_name),
        score_row(dataset, task, method, "auc", auc(truth, probabilities),
                  n_segments, seconds, slice_name),
    ]


def recovery_rows(
    dataset: str, method: str, truth: np.ndarray, labels: np.ndarray, n_segments: int,
    seconds: float, slice_name: str = "all",
) -> list[dict]:
    """Recovery of planted segments (synthetic data): Hungarian-matched accuracy and ARI.

    Matching, not the paper's sorting rule, because the chosen K may differ from the truth.
    """
    return [
        score_row(dataset, "recovery", method, "accuracy", hungarian_accuracy(truth, labels),
                  n_segments, seconds, slice_name),
        score_row(dataset, "recovery", method, "ari", adjusted_rand(truth, labels),
                  n_segments, seconds, slice_name),
    ]


def metric_key(task: str, slice_name: str, metric: str) -> str:
    """``{task}.{slice}.{metric}``, with characters MLflow refuses replaced by ``_``."""
    key = f"{task}.{slice_name}.{metric}".replace("@", "_at_")
    return re.sub(r"[^\w\-. /]", "_", key)


def mlflow_metrics(table: pd.DataFrame) -> dict[str, float]:
    """The finite values of a score table as MLflow metrics of one method's run."""
    return {metric_key(r.task, r.slice, r.metric): float(r.value)
            for r in table.itertuples() if np.isfinite(r.value)}


def write_score_table(duckdb: DuckDBStore, table_name: str, table: pd.DataFrame | None) -> None:
    """Replace ``table_name`` with ``table`` (None: it was built by SQL already) and list
    it in the score index, in one transaction."""
    with duckdb.connect() as con:
        con.execute("BEGIN TRANSACTION")
        if table is not None:
            con.register("scores_to_write", table)
            con.execute(
                f'CREATE OR REPLACE TABLE "{table_name}" AS SELECT * FROM scores_to_write'
            )
            con.unregister("scores_to_write")
        con.execute(f"CREATE TABLE IF NOT EXISTS {SCORE_INDEX} "
                    "(table_name VARCHAR PRIMARY KEY, written_at TIMESTAMP)")
        con.execute(f"INSERT OR REPLACE INTO {SCORE_INDEX} VALUES (?, current_timestamp)",
                    [table_name])
        con.execute("COMMIT")


def score_tables(duckdb: DuckDBStore) -> list[str]:
    """The score tables recorded so far (whichever methods have been materialized)."""
    if not duckdb.table_exists(SCORE_INDEX):
        return []
    listed = duckdb.query(f"SELECT table_name FROM {SCORE_INDEX} ORDER BY table_name")
    return [name for name in listed["table_name"] if duckdb.table_exists(name)]


def record_scores(
    duckdb: DuckDBStore, table_name: str, rows: Iterable[dict] | pd.DataFrame
) -> pd.DataFrame:
    """Write ``rows`` as score table ``table_name`` (indexed for the comparison)."""
    table = score_frame(rows)
    write_score_table(duckdb, table_name, table)
    return table


def log_comparison(
    mlflow_tracker: MLflowTracker,
    table: pd.DataFrame,
    context: dg.AssetExecutionContext | None,
    experiment: str = COMPARISON_EXPERIMENT,
) -> dict[str, str]:
    """One MLflow run per method of the comparison ``table``, its metrics keyed
    ``{task}.{slice}.{metric}`` (keys are unique within a method: the comparison has one
    row per dataset, task, slice, method and metric); return each method's run link."""
    links = {}
    for method, part in table.groupby("method", sort=True):
        dataset = ", ".join(sorted(part["dataset"].astype(str).unique()))
        with mlflow_tracker.run(experiment, str(method), context,
                                tags={"method": str(method), "dataset": dataset}) as run:
            metrics = mlflow_metrics(part)
            if metrics:
                mlflow.log_metrics(metrics)
            links[str(method)] = mlflow_tracker.run_link(run)
    return links


# The headline numbers of a comparison, each (task, metric, slice or None for every slice)
HEADLINES = [("held_out_edges", "auc", "all"), ("recovery", "ari", None),
             ("purchase_ranking", "recall@10", None)]


def headline_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The comparison's headline rows: held-out AUC (all customers), recovery ARI of
    every slice (planted and behaviour segments), recall@10 of purchase ranking."""
    keep = np.zeros(len(table), dtype=bool)
    for task, metric, slice_name in HEADLINES:
        keep |= ((table["task"] == task) & (table["metric"] == metric)
                 & ((table["slice"] == slice_name) if slice_name else True)).to_numpy()
    return table[keep & np.isfinite(table["value"].to_numpy(dtype=float))]


def summary_metrics(table: pd.DataFrame) -> dict[str, float]:
    """Every headline number as ``{method}.{task}.{slice}.{metric}``."""
    return {f"{r.method}.{metric_key(r.task, r.slice, r.metric)}": float(r.value)
            for r in headline_rows(table).itertuples()}


def log_summary(
    mlflow_tracker: MLflowTracker,
    table: pd.DataFrame,
    context: dg.AssetExecutionContext | None,
    figure_path: str | None = None,
    experiment: str = COMPARISON_EXPERIMENT,
) -> str:
    """The summary run of a comparison: every headline metric, the whole table as JSON,
    and the figure if any; return its link."""
    with mlflow_tracker.run(experiment, "summary", context, tags={"summary": "True"}) as run:
        mlflow.log_table(table, "model_comparison.json")
        mlflow.log_metrics(summary_metrics(table))
        if figure_path is not None:
            mlflow.log_artifact(str(figure_path))
        return mlflow_tracker.run_link(run)
