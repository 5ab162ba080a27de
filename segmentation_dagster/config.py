"""Resources configured from the environment (see settings.py for the variables)."""

from __future__ import annotations

import os

from assets.cold_start import ColdStartSettings
from assets.common import MethodSettings
from assets.nmf import NMFSettings
from assets.unicon import UniconSettings

from . import settings
from .checks import InputRules
from .resources import DataSource, DuckDBStore, MLflowTracker


def build_resources(home: str | None = None, **overrides) -> dict:
    """The resources, reading SEGMENTATION_* variables; ``home`` overrides the state
    folder (tests use a temporary one) and ``overrides`` replace single resources."""
    if home is not None:
        os.environ["SEGMENTATION_HOME"] = home
    env = os.environ.get
    resources = {
        "duckdb": DuckDBStore(path=settings.duckdb_path()),
        "mlflow_tracker": MLflowTracker(
            tracking_uri=settings.mlflow_tracking_uri(),
            artifact_root=settings.mlflow_artifact_root(),
        ),
        "source": DataSource(
            kind=env("SEGMENTATION_SOURCE", "synthetic"),
            movielens_dir=env("SEGMENTATION_MOVIELENS_DIR", ""),
            interactions_path=env("SEGMENTATION_INTERACTIONS", ""),
            items_path=env("SEGMENTATION_ITEMS", ""),
            customers_path=env("SEGMENTATION_CUSTOMERS", ""),
        ),
        "method_settings": MethodSettings(),
        "input_rules": InputRules(),
        "cold_start_settings": ColdStartSettings(),
        "nmf_settings": NMFSettings(),
        "unicon_settings": UniconSettings(),
    }
    resources.update(overrides)
    return resources
