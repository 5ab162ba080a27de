"""The engine tests' SparkEngine, on the session's local Spark (tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def spark_engine(spark, tmp_path):
    """A SparkEngine on the shared session, its warehouse in a fresh folder."""
    from segmentation_dagster.engine import SparkEngine

    engine = SparkEngine(master="local[1]", warehouse=str(tmp_path / "warehouse"))
    yield engine
    engine.stop()  # leaves the shared session running: the engine did not create it
