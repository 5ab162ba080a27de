"""Where state lives, read from environment variables (each optional).

- SEGMENTATION_HOME: the state folder (default ``.segmentation``): DuckDB file, MLflow
  store and DAGSTER_HOME.
- SEGMENTATION_SOURCE: ``synthetic`` (default), ``movielens-100k``, ``movielens-1m``, ``files``.
- SEGMENTATION_MOVIELENS_DIR: a local folder of the original MovieLens files.
- SEGMENTATION_INTERACTIONS, SEGMENTATION_ITEMS, SEGMENTATION_CUSTOMERS: the ``files`` paths.
"""

from __future__ import annotations

import os
from pathlib import Path

SOURCES = ("synthetic", "movielens-100k", "movielens-1m", "files")


def state_home() -> Path:
    return Path(os.environ.get("SEGMENTATION_HOME", ".segmentation")).resolve()


def duckdb_path() -> str:
    return str(state_home() / "segmentation.duckdb")


def mlflow_tracking_uri() -> str:
    return f"sqlite:///{state_home() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    return str(state_home() / "mlflow-artifacts")
