"""The jobs, one per capability, the daily schedule, and the sensor that picks up new files.

Jobs (``make run JOB=<name>``, or SEGMENTATION_JOB; the schedule and the sensor run the
same configured job, ``all`` by default):

- ``segmentation``: ingest, graph, K selection / pooled model / embedding, segments,
  profiles, every method of the registry (core/registry.py), the segment classifiers,
  the comparison of whatever has been scored, and the published release. The first run
  on your own data: no UNICON, NMF or case study.
- ``nmf``: the NMF group and what it reads (the segments, for its recommendations).
- ``unicon``: UNICON's sequences, transformer, behaviour segments, lookalike audience
  and comparison rows, and what they read.
- ``case_study``: the cold-start case study and what it reads.
- ``all``: every asset.

Selections are by group (and by the registry's method names), so a new asset in one of
these groups joins its job without an edit here.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,
)

from . import settings
from .core.registry import METHODS
from .resources import DataSource

METHOD_ASSETS = [f"method_{name}" for name, spec in METHODS.items() if spec.in_pipeline]
SEGMENTATION_GROUPS = ("ingest", "graph", "embedding", "segments", "comparison", "publish")


def with_inputs(*groups: str) -> dg.AssetSelection:
    """The groups' assets and everything upstream of them (a multi-asset whole)."""
    return dg.AssetSelection.groups(*groups).upstream().required_multi_asset_neighbors()


segmentation = dg.define_asset_job(
    "segmentation",
    selection=dg.AssetSelection.groups(*SEGMENTATION_GROUPS)
    | dg.AssetSelection.assets(*METHOD_ASSETS),
    description="Segments and their evaluation: ingest, graph, K selection, embedding, "
                "segments, profiles, every method and baseline, the comparison of what has "
                "been scored, and the published release. No UNICON, NMF or case study.",
)
nmf = dg.define_asset_job(
    "nmf",
    selection=with_inputs("nmf"),
    description="NMF product segments, bundles and recommendations, and what they read.",
)
unicon = dg.define_asset_job(
    "unicon",
    selection=with_inputs("unicon"),
    description="UNICON: sequences, the transformer, behaviour segments, the lookalike "
                "audience and their comparison rows, and what they read.",
)
case_study = dg.define_asset_job(
    "case_study",
    selection=with_inputs("cold_start"),
    description="The cold-start case study and its report, and what they read.",
)
all_assets = dg.define_asset_job(
    "all",
    selection=dg.AssetSelection.all(),
    description="Materialize everything: raw inputs to segments, every method, NMF, "
                "UNICON, the case study, the comparison and the published release.",
)
JOBS = {job.name: job for job in (segmentation, nmf, unicon, case_study, all_assets)}


def configured_job(name: str | None = None) -> UnresolvedAssetJobDefinition:
    """The job named ``name`` (default: SEGMENTATION_JOB, else ``all``)."""
    name = name or settings.job_from_environment()
    if name not in JOBS:
        raise ValueError(
            f"SEGMENTATION_JOB={name!r} is not a job; choose one of {', '.join(JOBS)} "
            "(e.g. `make run JOB=segmentation`)"
        )
    return JOBS[name]


def build_schedule(job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="daily_refresh",
        job=job,
        cron_schedule="0 3 * * *",
        execution_timezone="UTC",
        description=f"Refresh every day at 03:00 UTC: runs the `{job.name}` job "
                    "(SEGMENTATION_JOB when the code location loaded).",
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


def build_new_files_sensor(job: UnresolvedAssetJobDefinition) -> dg.SensorDefinition:
    @dg.sensor(name="new_files_sensor", job=job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.STOPPED,
               description=f"Runs the `{job.name}` job (SEGMENTATION_JOB) when the `files` "
                           "source's input files change (size or modification time).")
    def new_files_sensor(context: dg.SensorEvaluationContext, source: DataSource):
        fingerprint = files_fingerprint(source)
        if fingerprint is None:
            return dg.SkipReason("the files source is not in use or its files are missing")
        if fingerprint == context.cursor:
            return dg.SkipReason("no new data")
        context.update_cursor(fingerprint)
        return dg.RunRequest(run_key=fingerprint)

    return new_files_sensor


daily_refresh = build_schedule(configured_job())
new_files_sensor = build_new_files_sensor(configured_job())
