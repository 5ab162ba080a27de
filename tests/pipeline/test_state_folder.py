"""The state folder is configuration, not a process-wide variable: build_resources never
writes the environment, and two sets of resources with different folders, in one process,
each write their files into their own folder."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import dagster as dg
import pytest
from pipeline_helpers import SMALL_SYNTHETIC, failure_messages, isolate_environment

from segmentation_dagster.config import build_resources
from segmentation_dagster.definitions import defs
from segmentation_dagster.resources import DataSource, StateFolder

# The ingest, graph and embedding assets: the cheapest part of the job that draws a figure.
EMBEDDINGS = (dg.AssetSelection.assets("customer_embeddings").upstream()
              .required_multi_asset_neighbors())


def path_fields(resources: dict) -> dict[str, Path]:
    """Every path a resource set writes to, by name."""
    tracker = resources["mlflow_tracker"]
    return {
        "duckdb": resources["duckdb"].database_path(),
        "mlflow_tracking": Path(tracker.tracking_uri.removeprefix("sqlite:///")),
        "mlflow_artifacts": Path(tracker.artifact_root),
        "state_folder": Path(resources["state_folder"].path),
        "downloads": Path(resources["source"].cache_dir),
    }


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """SEGMENTATION_HOME set to a folder no resource built with a ``home`` may touch."""
    decoy = tmp_path / "environment_home"
    isolate_environment(monkeypatch, decoy)
    return decoy


def test_build_resources_leaves_the_environment_alone(elsewhere: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    before = dict(os.environ)
    resources = build_resources(str(home))
    assert dict(os.environ) == before
    for name, path in path_fields(resources).items():
        assert path.is_relative_to(home.resolve()), f"{name}: {path} is not under {home}"
    # building is free of side effects: folders appear when an asset writes to them
    assert not home.exists() and not elsewhere.exists()


def test_without_a_home_the_environment_names_the_state_folder(elsewhere: Path) -> None:
    for name, path in path_fields(build_resources()).items():
        assert path.is_relative_to(elsewhere.resolve()), f"{name}: {path}"


def test_state_folder_creates_the_subfolders_it_hands_out(tmp_path: Path) -> None:
    state = StateFolder(path=str(tmp_path / "state"))
    folder = state.folder("figures")
    assert folder == tmp_path / "state" / "figures" and folder.is_dir()
    assert state.folder("figures") == folder  # a second call finds it


def embedded_figure(result: dg.ExecuteInProcessResult) -> bytes:
    """The PNG customer_embeddings showed in its metadata (base64; the inline ``density``
    beside it is a small SVG)."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == "customer_embeddings":
            text = event.event_specific_data.materialization.metadata["density_figure"].value
            return base64.b64decode(re.search(r"base64,([^)]+)\)", text).group(1))
    raise KeyError("customer_embeddings was not materialized")


def test_two_state_folders_in_one_process_keep_their_own_files(
    elsewhere: Path, tmp_path: Path
) -> None:
    homes = [tmp_path / "first", tmp_path / "second"]
    # both sets exist before either runs: a home passed through the environment would
    # send the first run's files into the second folder
    resource_sets = [
        build_resources(str(home), source=DataSource(**SMALL_SYNTHETIC, seed=seed))
        for seed, home in enumerate(homes)
    ]
    figures = []
    for resources in resource_sets:
        result = dg.materialize(defs.assets, selection=EMBEDDINGS, resources=resources,
                                raise_on_error=False)
        assert result.success, failure_messages(result)
        figures.append(embedded_figure(result))
    assert figures[0] != figures[1]  # different seeds, so a mix-up would show
    for home, figure in zip(homes, figures, strict=True):
        assert (home / "figures" / "embeddings.png").read_bytes() == figure
        assert (home / "segmentation.duckdb").is_file()
    assert not elsewhere.exists()
