"""The session-scoped local Spark of the engine and pipeline tests (one core, one shuffle
partition, no UI). Skipped, saying why, only where pyspark or Java is missing; CI installs both
(``make test`` installs the ``spark`` extra, ``make system-deps`` a headless Java)."""

from __future__ import annotations

import importlib.util
import shutil

import pytest


def spark_missing() -> str | None:
    """Why Spark cannot run here (None: it can)."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: pip install '.[spark]'"
    if shutil.which("java") is None:
        return "no Java runtime: apt-get install openjdk-17-jre-headless"
    return None


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    """One local SparkSession for every engine test; SparkEngine reuses it (and leaves it
    running) rather than starting its own."""
    reason = spark_missing()
    if reason:
        pytest.skip(reason)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("segmentation-tests")
               .config("spark.sql.shuffle.partitions", "1")
               .config("spark.default.parallelism", "1")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark_sql")))
               .getOrCreate())
    yield session
    session.stop()
