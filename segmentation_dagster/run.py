"""`make run`: materialize every asset once, then print the comparison and where things are.

Runs go through the Dagster instance in DAGSTER_HOME, so `make ui` shows them afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg

from . import settings


def main() -> int:
    # settings reads the environment; build_resources (in definitions.py) derives the same
    # state folder from it
    dagster_home = settings.dagster_home(settings.state_home())
    os.makedirs(dagster_home, exist_ok=True)
    from .definitions import defs

    started = time.perf_counter()
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        result = defs.resolve_job_def("segmentation_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
    seconds = time.perf_counter() - started
    if not result.success:
        for event in result.all_events:
            if event.is_failure or (
                event.event_type_value == "ASSET_CHECK_EVALUATION"
                and not event.event_specific_data.passed
            ):
                print(f"FAILED {event.step_key}: {event.message}", file=sys.stderr)
        print(f"The run failed after {seconds:.1f} s; see `make ui` for details.",
              file=sys.stderr)
        return 1
    store = defs.resources["duckdb"]
    table = store.query(
        "SELECT task, slice, metric, method, round(value, 3) AS value, n_segments, "
        "round(seconds, 3) AS seconds FROM model_comparison WHERE slice = 'all' "
        "ORDER BY task, metric, value DESC"
    )
    chosen = store.query("SELECT k FROM k_selection WHERE chosen").iloc[0, 0]
    print(table.to_string(index=False))
    print(f"\nchosen K: {chosen}; materialized in {seconds:.1f} s")
    print(f"DuckDB file:    {store.database_path()}")
    # where the resources actually wrote, not what the environment says now
    tracker, state = defs.resources["mlflow_tracker"], defs.resources["state_folder"]
    print(f"MLflow store:   {tracker.tracking_uri}  (browse with `make mlflow`)")
    print(f"Figures:        {Path(state.path) / 'figures'}")
    print(f"Dagster runs:   {dagster_home}  (browse with `make ui`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
