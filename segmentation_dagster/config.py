"""The resources of the code location, built from the settings (settings.py reads the
environment; nothing here does)."""

from __future__ import annotations

from pathlib import Path

from . import settings
from .checks import InputRules
from .engine import make_engine
from .resources import DataSource, DuckDBStore, MLflowTracker, StateFolder
from .settings import (
    BehaviourSegmentSettings,
    ColdStartSettings,
    LookalikeSettings,
    MethodSettings,
    NMFSettings,
    RandomSeed,
    RefreshSettings,
    UniconModelSettings,
)

# The paper's setting (global alpha-embedding, entropy normalisation, one like-rate per
# segment, K among the density's modes): the synthetic source reproduces its studies
PAPER_SETTINGS = {"pooled": "global", "normalisation": "entropy", "embedding": "scalar",
                  "segment_model": "pooled", "segment_strength": 1.0, "k_candidates": "kde",
                  "min_segment_share": 0.0}


def build_resources(home: str | None = None, **overrides) -> dict:
    """The resources, from SEGMENTATION_* variables; ``home`` overrides the state folder
    (tests use a temporary one) and ``overrides`` replace single resources.

    Every path is derived here, once, from the state folder and passed to the resources
    explicitly; the process environment is only read, never written, so resources built
    for different folders can live side by side. A ``source`` override keeps its own
    ``cache_dir`` (empty: downloads/ in SEGMENTATION_HOME). On the synthetic source the
    method settings default to the paper's (PAPER_SETTINGS) unless given.
    """
    state = Path(home).resolve() if home is not None else settings.state_home()
    engine_name, engine_fields = settings.engine_from_environment()
    resources = {
        "duckdb": DuckDBStore(path=settings.duckdb_path(state)),
        "engine": make_engine(engine_name, state, **engine_fields),
        "mlflow_tracker": MLflowTracker(
            tracking_uri=settings.mlflow_tracking_uri(state),
            artifact_root=settings.mlflow_artifact_root(state),
        ),
        "state_folder": StateFolder(path=str(state)),
        "source": DataSource(
            **settings.source_from_environment(), cache_dir=settings.downloads_dir(state)
        ),
        "random_seed": RandomSeed(value=settings.seed_from_environment()),
        "method_settings": MethodSettings(),
        "input_rules": InputRules(),
        "cold_start_settings": ColdStartSettings(),
        "nmf_settings": NMFSettings(),
        "unicon_model_settings": UniconModelSettings(),
        "behaviour_segment_settings": BehaviourSegmentSettings(),
        "lookalike_settings": LookalikeSettings(),
        "refresh_settings": RefreshSettings(),
    }
    resources.update(overrides)
    if resources["source"].kind == "synthetic" and "method_settings" not in overrides:
        resources["method_settings"] = MethodSettings(**PAPER_SETTINGS)
    return resources
