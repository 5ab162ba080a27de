"""The code location: every asset, check, job, schedule, sensor and resource."""

import dagster as dg

from assets import (
    behaviour,
    classifiers,
    cold_start,
    comparison,
    embedding,
    graph,
    ingest,
    lookalike,
    methods,
    nmf,
    publish,
    refresh,
    segments,
    unicon,
)

from .automation import JOBS, daily_refresh, new_files_sensor
from .checks import input_checks, output_checks
from .config import build_resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(
        [ingest, graph, embedding, segments, methods, classifiers, comparison, cold_start, nmf,
         unicon, behaviour, lookalike, publish, refresh]
    ),
    asset_checks=[*input_checks, *output_checks],
    jobs=list(JOBS.values()),
    schedules=[daily_refresh],
    sensors=[new_files_sensor],
    resources=build_resources(),
    # one process: DuckDB has one writer per file, and small steps run faster in-process
    executor=dg.in_process_executor,
)
