"""Run the real segmentation job in this process, as `make run` does, for the fault tests:

    python run_job.py STATE_FOLDER N_CUSTOMERS SEED

A small synthetic source, the code location's own assets and checks, every group but the
slow side studies (UNICON, NMF, the case study), the state folder's Dagster instance.
Exits 0 on success, 1 on a failed run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import dagster as dg

from segmentation_dagster.config import build_resources
from segmentation_dagster.definitions import defs
from segmentation_dagster.instance import IN_PROCESS_TAG, open_instance
from segmentation_dagster.resources import DataSource

SLOW_GROUPS = ("unicon", "nmf", "cold_start")


def main(home: str, n_customers: int, seed: int) -> int:
    resources = build_resources(home, source=DataSource(
        kind="synthetic", synthetic_customers=n_customers, synthetic_items=80, seed=seed))
    definitions = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks,
                                 jobs=defs.jobs, resources=resources,
                                 executor=dg.in_process_executor)
    selection = dg.AssetSelection.all() - dg.AssetSelection.groups(*SLOW_GROUPS)
    keys = list(selection.resolve(definitions.resolve_asset_graph()))
    job = definitions.resolve_implicit_global_asset_job_def()
    with open_instance(Path(home) / "dagster_home", resources["duckdb"]) as instance:
        result = job.execute_in_process(instance=instance, asset_selection=keys,
                                        tags=IN_PROCESS_TAG, raise_on_error=False)
    print("RUN", result.run_id, "SUCCESS" if result.success else "FAILURE", flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
