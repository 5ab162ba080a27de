"""Shared fixtures for the pipeline tests: real DuckDB, MLflow and Great Expectations in a
temporary state folder, and the real job executed in process.

One good run on a small synthetic source is shared by the whole session (it takes ~20 s):
the materialization tests read it, and the rerun and bad-input tests copy its state folder
(the DuckDB file and mlflow.db are plain files) instead of paying for another run each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from pipeline_helpers import (
    SMALL_SYNTHETIC,
    failure_messages,
    isolate_environment,
    run_segmentation_job,
)

from segmentation_dagster.config import build_resources
from segmentation_dagster.resources import DataSource


@dataclass(frozen=True)
class GoodRun:
    home: Path
    result: dg.ExecuteInProcessResult
    resources: dict
    seconds: float


@pytest.fixture(scope="session")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> GoodRun:
    """The whole job, once, on 400 synthetic customers x 120 items with 3 planted segments."""
    home = tmp_path_factory.mktemp("good_state")
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, home)
        resources = build_resources(str(home), source=DataSource(**SMALL_SYNTHETIC))
        started = time.perf_counter()
        result = run_segmentation_job(resources)
        seconds = time.perf_counter() - started
    if not result.success:
        pytest.fail(f"the good run failed: {failure_messages(result)}")
    return GoodRun(home, result, resources, seconds)
