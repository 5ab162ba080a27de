"""The Dagster instance of a state folder: run history, the run queue, run monitoring.

- ``dagster.yaml`` (written once, see :func:`write_dagster_yaml`) keeps telemetry off,
  queues runs launched from the UI, a schedule or a sensor with at most
  ``max_concurrent_runs`` at a time (one by default: a state folder takes one run at a
  time, see DuckDBStore's run lock), and turns on run monitoring, so the daemon of
  ``make ui`` marks a run whose process died as failed.
- :func:`open_instance` creates the instance under a file lock, so two runs starting
  together on an empty state folder do not both create Dagster's storage tables, and
  marks runs left STARTED by a killed ``make run`` as failed: while nobody holds the
  state folder's run lock, no run can be in progress there.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster._core.storage.dagster_run import DagsterRunStatus, RunsFilter
from filelock import FileLock, Timeout

from .resources import DuckDBStore

DAGSTER_YAML = """\
# Written by segmentation_dagster.instance; edit freely, it is not overwritten.
telemetry:
  enabled: false
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: {max_concurrent_runs}
run_monitoring:
  enabled: true
  start_timeout_seconds: 180
  max_resume_run_attempts: 0
"""
UNFINISHED = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING]
# runs that `make run` executes in its own process carry this tag; the daemon's run
# monitoring looks after the runs the UI, schedules and sensors launch
IN_PROCESS_TAG = {"segmentation/launched_by": "make run"}


def write_dagster_yaml(dagster_home: Path, max_concurrent_runs: int = 1) -> Path:
    """``dagster.yaml`` in ``dagster_home`` unless one is there already."""
    path = Path(dagster_home) / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(DAGSTER_YAML.format(max_concurrent_runs=max_concurrent_runs))
    return path


def open_instance(dagster_home: Path, store: DuckDBStore) -> dg.DagsterInstance:
    """The state folder's instance, created safely, with abandoned runs marked failed."""
    dagster_home = Path(dagster_home)
    write_dagster_yaml(dagster_home)
    with FileLock(str(dagster_home / ".instance.lock"), timeout=300):
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        instance.get_runs(limit=1)  # creates (or migrates) the storage under the lock
    fail_abandoned_runs(instance, store)
    return instance


def fail_abandoned_runs(instance: dg.DagsterInstance, store: DuckDBStore) -> int:
    """Mark this instance's unfinished ``make run`` runs failed when no run holds the state
    folder's run lock (their process is gone: ``kill -9``, a reboot). Returns how many."""
    lock = FileLock(str(store.run_lock_path()))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return 0  # a run is in progress: nothing here is abandoned
    try:
        stale = instance.get_runs(filters=RunsFilter(statuses=UNFINISHED, tags=IN_PROCESS_TAG))
        for run in stale:
            instance.report_run_failed(
                run, "the run's process ended without finishing (killed or crashed); "
                     "marked failed by the next run on this state folder")
        return len(stale)
    finally:
        lock.release()
