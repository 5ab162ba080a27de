"""Where state lives, read from environment variables (each optional).

- SEGMENTATION_HOME: the state folder (default ``.segmentation``): DuckDB file, MLflow
  store, figures, report, models, downloads and DAGSTER_HOME.
- SEGMENTATION_SOURCE: ``synthetic`` (default), ``movielens-100k``, ``movielens-1m``, ``files``.
- SEGMENTATION_MOVIELENS_DIR: a local folder of the original MovieLens files.
- SEGMENTATION_INTERACTIONS, SEGMENTATION_ITEMS, SEGMENTATION_CUSTOMERS: the ``files`` paths.

``state_home`` is the only reader of SEGMENTATION_HOME; the other helpers take the state
folder as an argument, so resources built for one folder never depend on the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

SOURCES = ("synthetic", "movielens-100k", "movielens-1m", "files")


def state_home() -> Path:
    """The state folder named by SEGMENTATION_HOME (default ``.segmentation``), absolute."""
    return Path(os.environ.get("SEGMENTATION_HOME", ".segmentation")).resolve()


def duckdb_path(home: Path) -> str:
    return str(home / "segmentation.duckdb")


def mlflow_tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def mlflow_artifact_root(home: Path) -> str:
    return str(home / "mlflow-artifacts")


def downloads_dir(home: Path) -> str:
    """Where MovieLens zips are downloaded when no local folder is given."""
    return str(home / "downloads")
