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
        "duckdb", "engine", "mlflow_tracker", "state_folder", "source", "random_seed",
        "method_settings", "input_rules", "cold_start_settings", "nmf_settings",
        "unicon_model_settings",
        "behaviour_segment_settings", "lookalike_settings", "refresh_settings",
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
    """The `all` job selects every asset; the schedule and the sensor run the configured
    job, `all` by default (tests/pipeline/test_jobs.py: the other jobs, SEGMENTATION_JOB)."""
    job = defs.resolve_job_def("all")
    assert {key.to_user_string() for key in job.asset_layer.selected_asset_keys} \
        == EXPECTED_ASSETS
    assert {job.name for job in defs.jobs} == {"segmentation", "nmf", "unicon",
                                               "case_study", "all"}

    schedules = {schedule.name: schedule for schedule in defs.schedules}
    assert set(schedules) == {"daily_refresh"}
    daily = schedules["daily_refresh"]
    assert daily.cron_schedule == "0 3 * * *"
    assert daily.execution_timezone == "UTC"
    assert daily.job_name == "all"

    sensors = {sensor.name: sensor for sensor in defs.sensors}
    assert set(sensors) == {"new_files_sensor"}
    assert sensors["new_files_sensor"].job_name == "all"


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


# the core is a plain library: no orchestrator, store or tracker beneath it
SHELL_PACKAGES = ("dagster", "duckdb", "mlflow")


def _core_sources() -> list[Path]:
    """Every module under core/, subpackages included (core/sequence/, ...)."""
    return sorted(CORE.rglob("*.py"))


def test_core_sources_import_no_dagster() -> None:
    """The science core must stay usable without the orchestrator, the store or MLflow."""
    sources = _core_sources()
    assert len(sources) >= 5, f"no core modules found in {CORE}"
    assert any(path.parent != CORE for path in sources), "subpackages of core/ not searched"
    offenders = {
        str(path.relative_to(CORE)): sorted(
            name for name in _imported_modules(path)
            if name.split(".")[0].startswith(SHELL_PACKAGES)
        )
        for path in sources
    }
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def test_importing_the_core_loads_no_dagster() -> None:
    """Also indirectly: a core module importing a sibling of core/ that imports Dagster."""
    modules = [
        "segmentation_dagster.core." + ".".join(path.relative_to(CORE).with_suffix("").parts)
        for path in _core_sources() if path.stem != "__init__"
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0].startswith({SHELL_PACKAGES!r})))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_settings_do_not_import_the_assets() -> None:
    """The code location's settings and resources sit below the asset shells: importing
    them loads no ``assets`` module (only definitions.py gathers the assets)."""
    code = (
        "import sys\n"
        "import segmentation_dagster.config, segmentation_dagster.settings\n"
        "import segmentation_dagster.resources, segmentation_dagster.scores\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'assets'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_nothing_outside_definitions_imports_the_assets() -> None:
    package = CORE.parent
    offenders = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py")
        if path.name != "definitions.py"
        and any(name.split(".")[0] == "assets" for name in _imported_modules(path))
    )
    assert offenders == []
