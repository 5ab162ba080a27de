"""The code location loads and holds every asset, check, job, schedule and sensor."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from pipeline_helpers import EXPECTED_ASSETS, INPUT_CHECKS, OUTPUT_CHECKS, REQUIRED_METHODS

from segmentation_dagster.definitions import defs

CORE = Path(__file__).resolve().parents[2] / "segmentation_dagster" / "core"


def test_definitions_are_loadable() -> None:
    dg.Definitions.validate_loadable(defs)


def test_every_resource_is_bound() -> None:
    assert set(defs.resources) == {
        "duckdb", "mlflow_tracker", "state_folder", "source", "method_settings",
        "input_rules", "cold_start_settings", "nmf_settings", "unicon_settings",
    }


def test_every_asset_is_defined() -> None:
    keys_of_methods = {f"method_{name}" for name in REQUIRED_METHODS}
    assert keys_of_methods <= EXPECTED_ASSETS
    keys = {key.to_user_string() for key in defs.resolve_all_asset_keys()}
    assert keys == EXPECTED_ASSETS


@pytest.mark.parametrize("spec", list(defs.resolve_all_asset_specs()),
                         ids=lambda spec: spec.key.to_user_string())
def test_every_asset_has_group_kinds_and_description(spec: dg.AssetSpec) -> None:
    assert spec.group_name and spec.group_name != "default"
    assert spec.kinds
    assert spec.description and len(spec.description.strip()) > 20


def test_every_check_is_defined_and_inputs_block() -> None:
    graph = defs.resolve_asset_graph()
    keys = {(key.asset_key.to_user_string(), key.name) for key in graph.asset_check_keys}
    assert keys == INPUT_CHECKS | OUTPUT_CHECKS
    blocking = {
        (key.asset_key.to_user_string(), key.name)
        for checks_def in defs.asset_checks
        for spec in checks_def.check_specs
        if spec.blocking
        for key in [spec.key]
    }
    # an input check that did not block would let bad data flow into every model
    assert INPUT_CHECKS <= blocking


def test_job_schedule_and_sensor() -> None:
    job = defs.resolve_job_def("segmentation_job")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} \
        == EXPECTED_ASSETS

    schedules = {schedule.name: schedule for schedule in defs.schedules}
    assert set(schedules) == {"daily_refresh"}
    daily = schedules["daily_refresh"]
    assert daily.cron_schedule == "0 3 * * *"
    assert daily.execution_timezone == "UTC"
    assert daily.job_name == "segmentation_job"

    sensors = {sensor.name: sensor for sensor in defs.sensors}
    assert set(sensors) == {"new_files_sensor"}
    assert sensors["new_files_sensor"].job_name == "segmentation_job"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_sources_import_no_dagster() -> None:
    """The science core must stay usable without the orchestrator."""
    sources = sorted(CORE.glob("*.py"))
    assert len(sources) >= 5, f"no core modules found in {CORE}"
    offenders = {
        path.name: sorted(name for name in _imported_modules(path)
                          if name.split(".")[0].startswith("dagster"))
        for path in sources
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_importing_the_core_loads_no_dagster() -> None:
    """Also indirectly: a core module importing a sibling of core/ that imports Dagster."""
    modules = [f"segmentation_dagster.core.{path.stem}" for path in sorted(CORE.glob("*.py"))
               if path.stem != "__init__"]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0].startswith('dagster')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
