"""The job, its daily schedule, and the sensor that picks up new files."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from .resources import DataSource

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


def files_fingerprint(source: DataSource) -> str | None:
    """Size and modification time of the `files` source's inputs, or None if not in use."""
    if source.kind != "files":
        return None
    parts = []
    for path in (source.interactions_path, source.items_path, source.customers_path):
        if path and Path(path).is_file():
            stat = Path(path).stat()
            parts.append(f"{path}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts) or None


@dg.sensor(job=segmentation_job, minimum_interval_seconds=60,
           default_status=dg.DefaultSensorStatus.STOPPED)
def new_files_sensor(context: dg.SensorEvaluationContext, source: DataSource):
    """Start a run when the `files` source's input files change (size or mtime)."""
    fingerprint = files_fingerprint(source)
    if fingerprint is None:
        return dg.SkipReason("the files source is not in use or its files are missing")
    if fingerprint == context.cursor:
        return dg.SkipReason("no new data")
    context.update_cursor(fingerprint)
    return dg.RunRequest(run_key=fingerprint)
