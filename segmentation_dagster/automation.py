"""The job, its daily schedule, and the sensor that picks up new files."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

segmentation_job = dg.define_asset_job(
    "segmentation_job",
    selection=dg.AssetSelection.all(),
    description="Materialize everything: raw inputs to segments, baselines and comparison.",
)

daily_refresh = dg.ScheduleDefinition(
    name="daily_refresh",
    job=segmentation_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    description="Refresh the whole segmentation every day at 03:00 UTC.",
)


def _files_fingerprint() -> str | None:
    """Size and modification time of the `files` source's inputs, or None if not in use."""
    if os.environ.get("SEGMENTATION_SOURCE", "synthetic") != "files":
        return None
    parts = []
    for name in ("SEGMENTATION_INTERACTIONS", "SEGMENTATION_ITEMS", "SEGMENTATION_CUSTOMERS"):
        path = os.environ.get(name)
        if path and Path(path).exists():
            stat = Path(path).stat()
            parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts) or None


@dg.sensor(job=segmentation_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.STOPPED)
def new_files_sensor(context: dg.SensorEvaluationContext):
    """Start a run when the `files` source's input files change (size or mtime)."""
    fingerprint = _files_fingerprint()
    if fingerprint is None:
        return dg.SkipReason("the files source is not in use or its files are missing")
    if fingerprint == context.cursor:
        return dg.SkipReason("no new data")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint)
