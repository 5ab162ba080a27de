"""Resources configured from the environment (see settings.py for the variables)."""

from __future__ import annotations

import os
from pathlib import Path

from assets.cold_start import ColdStartSettings
from assets.common import MethodSettings
from assets.nmf import NMFSettings
from assets.unicon import UniconSettings

from . import settings
from .checks import InputRules
from .resources import DataSource, DuckDBStore, MLflowTracker, StateFolder


def build_resources(home: str | None = None, **overrides) -> dict:
    """The resources, reading SEGMENTATION_* variables; ``home`` overrides the state
    folder (tests use a temporary one) and ``overrides`` replace single resources.

    Every path is derived here, once, from the state folder and passed to the resources
    explicitly; the process environment is only read, never written, so resources built
    for different folders can live side by side. A ``source`` override keeps its own
    ``cache_dir`` (empty: downloads/ in SEGMENTATION_HOME).
    """
    state = Path(home).resolve() if home is not None else settings.state_home()
    env = os.environ.get
    resources = {
        "duckdb": DuckDBStore(path=settings.duckdb_path(state)),
        "mlflow_tracker": MLflowTracker(
            tracking_uri=settings.mlflow_tracking_uri(state),
            artifact_root=settings.mlflow_artifact_root(state),
        ),
        "state_folder": StateFolder(path=str(state)),
        "source": DataSource(
            kind=env("SEGMENTATION_SOURCE", "synthetic"),
            movielens_dir=env("SEGMENTATION_MOVIELENS_DIR", ""),
            interactions_path=env("SEGMENTATION_INTERACTIONS", ""),
            items_path=env("SEGMENTATION_ITEMS", ""),
            customers_path=env("SEGMENTATION_CUSTOMERS", ""),
            cache_dir=settings.downloads_dir(state),
        ),
        "method_settings": MethodSettings(),
        "input_rules": InputRules(),
        "cold_start_settings": ColdStartSettings(),
        "nmf_settings": NMFSettings(),
        "unicon_settings": UniconSettings(),
    }
    resources.update(overrides)
    return resources
