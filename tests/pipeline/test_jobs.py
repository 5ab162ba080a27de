"""Jobs by capability: what each selects, that a job runs everything its assets read (the
segmentation job excepted only where the comparison merely orders after other jobs), and
that SEGMENTATION_JOB / `make run JOB=...` choose the job of `make run`, the schedule and
the sensor."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml
from pipeline_helpers import EXPECTED_ASSETS, METHODS

from segmentation_dagster import automation, run
from segmentation_dagster.definitions import defs

ROOT = Path(__file__).resolve().parents[2]
JOB_NAMES = ("segmentation", "nmf", "unicon", "case_study", "all")


def selected(job_name: str) -> set[str]:
    job = defs.resolve_job_def(job_name)
    return {key.to_user_string() for key in job.asset_layer.selected_asset_keys}


def groups_of(keys: set[str]) -> set[str]:
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    return {specs[key].group_name for key in keys}


def upstream_outside(job_name: str) -> dict[str, set[str]]:
    """asset -> the assets it depends on that its job does not run."""
    keys = selected(job_name)
    missing = {}
    for spec in defs.resolve_all_asset_specs():
        key = spec.key.to_user_string()
        if key in keys:
            outside = {dep.asset_key.to_user_string() for dep in spec.deps} - keys
            if outside:
                missing[key] = outside
    return missing


def test_every_job_is_defined_with_a_description() -> None:
    assert {job.name for job in defs.jobs} == set(JOB_NAMES)
    assert set(automation.JOBS) == set(JOB_NAMES)
    for name in JOB_NAMES:
        assert len(defs.resolve_job_def(name).description or "") > 30


def test_all_selects_every_asset() -> None:
    assert selected("all") == EXPECTED_ASSETS


def test_segmentation_has_segments_methods_comparison_and_publishing_only() -> None:
    keys = selected("segmentation")
    required = {"raw_interactions", "raw_items", "raw_customers", "preference_edges",
                "edge_split", "k_selection", "pooled_model", "customer_embeddings",
                "customer_segments", "segment_profiles", "segment_classifiers",
                "model_comparison", "published_segments",
                *(f"method_{name}" for name in METHODS)}
    assert required <= keys
    # no side study: those have jobs of their own
    assert not groups_of(keys) & {"unicon", "nmf", "cold_start"}
    assert "method_unicon" not in keys
    # nothing in it waits on an asset it does not run, but the comparison, which stacks
    # whatever score tables exist (its other upstreams only order the `all` job)
    assert set(upstream_outside("segmentation")) <= {"model_comparison"}


@pytest.mark.parametrize(("job_name", "group"), [("nmf", "nmf"), ("unicon", "unicon"),
                                                 ("case_study", "cold_start")])
def test_side_jobs_run_their_group_and_everything_it_reads(job_name: str, group: str) -> None:
    keys = selected(job_name)
    group_keys = {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()
                  if spec.group_name == group}
    assert group_keys and group_keys <= keys
    assert upstream_outside(job_name) == {}
    # and nothing downstream of the group: no comparison, no publishing
    assert "published_segments" not in keys and "model_comparison" not in keys


def test_the_configured_job_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("SEGMENTATION_JOB", raising=False)
    assert automation.configured_job().name == "all"
    for name in JOB_NAMES:
        monkeypatch.setenv("SEGMENTATION_JOB", name)
        job = automation.configured_job()
        assert job.name == name
        assert automation.build_schedule(job).job_name == name
        assert automation.build_new_files_sensor(job).job_name == name
    monkeypatch.setenv("SEGMENTATION_JOB", "segmentation_job")
    with pytest.raises(ValueError, match="not a job; choose one of segmentation, nmf"):
        automation.configured_job()


def test_schedule_and_sensor_say_which_job_they_run() -> None:
    for definition in (*defs.schedules, *defs.sensors):
        assert definition.description and "`all`" in definition.description


def test_the_code_location_name_of_make_run_is_the_workspace_s() -> None:
    """The UI shows a run on its timeline, and re-executes it, by this name."""
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    [entry] = workspace["load_from"]
    assert entry["python_module"]["location_name"] == run.LOCATION_NAME
    assert entry["python_module"]["module_name"] == run.DEFINITIONS_MODULE


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
@pytest.mark.parametrize(("arguments", "environment", "expected"), [
    (["JOB=segmentation"], {}, "SEGMENTATION_JOB=segmentation"),
    ([], {"SEGMENTATION_JOB": "nmf"}, "SEGMENTATION_JOB=nmf"),
    ([], {}, "SEGMENTATION_JOB=all"),
])
def test_make_run_passes_the_job_on(arguments, environment, expected, monkeypatch) -> None:
    monkeypatch.delenv("SEGMENTATION_JOB", raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    dry = subprocess.run(["make", "-n", "run", *arguments], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    [line] = [line for line in dry.stdout.splitlines() if "segmentation_dagster.run" in line]
    assert line.startswith(expected + " ")


def test_asset_selection_follows_groups() -> None:
    """A new asset in one of the segmentation groups joins the job without an edit."""

    @dg.asset(group_name="segments", deps=["customer_segments"], kinds={"python"})
    def a_new_segment_table() -> None:
        """A stand-in for a future asset of the segments group."""

    definitions = dg.Definitions(assets=[*defs.assets, a_new_segment_table],
                                 jobs=defs.jobs, resources=defs.resources)
    job = definitions.resolve_job_def("segmentation")
    assert dg.AssetKey("a_new_segment_table") in job.asset_layer.selected_asset_keys
