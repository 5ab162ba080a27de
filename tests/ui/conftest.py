"""Fixtures of the browser tests: a small run materialized into a temporary state folder,
`dagster dev` and `mlflow ui` serving that folder on free local ports, and headless
Chromium (Debian's, driven by Playwright) to look at them as a person would.

Each module that uses them pays once: ~20-60 s for the run, ~20 s for `dagster dev` to
load the code location, ~35 s for MLflow's workers; both servers start side by side.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ui_helpers import (
    CHROMIUM,
    REPO_ROOT,
    Server,
    answers_http,
    dagster_location_loaded,
    free_port,
    server_environment,
    start_server,
    wait_until,
)

# The pipeline tests' helpers (the code location's own job, bound to test resources):
# reused rather than copied, so the UI tests follow the job as it changes.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "pipeline"))

DAGSTER_YAML = "telemetry:\n  enabled: false\n"
SMALL_SYNTHETIC = {"kind": "synthetic", "synthetic_customers": 400, "synthetic_items": 120}


@dataclass(frozen=True)
class UIState:
    home: Path  # SEGMENTATION_HOME of the run and of both servers
    dagster_home: Path
    seconds: float  # the materialization's wall time

    def query(self, sql: str):
        """DuckDB's answer, read-only, as a user would read the state folder."""
        from pipeline_helpers import read_table

        return read_table(self.home, sql)


def _require_browser() -> None:
    if CHROMIUM is None:
        pytest.skip("no system Chromium on PATH (`make test` installs Debian's `chromium`)")
    pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency")


@pytest.fixture(scope="module")
def ui_state(tmp_path_factory: pytest.TempPathFactory) -> UIState:
    """The segmentation job on 400 synthetic customers x 120 items, run with a
    DagsterInstance rooted at the DAGSTER_HOME that `dagster dev` will serve, so the UI
    shows this run's materializations and metadata."""
    _require_browser()
    import dagster as dg
    from pipeline_helpers import failure_messages, isolate_environment, run_segmentation_job

    from segmentation_dagster.config import build_resources
    from segmentation_dagster.resources import DataSource

    home = tmp_path_factory.mktemp("ui_state")
    dagster_home = home / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    # Dagster's first-visit "Join the community" dialog covers every page; a person
    # dismisses it once, and Dagster remembers that here (dagster._core.nux).
    (dagster_home / ".nux").mkdir()
    (dagster_home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, home)
        patch.setenv("DAGSTER_HOME", str(dagster_home))
        resources = build_resources(str(home), source=DataSource(**SMALL_SYNTHETIC))
        started = time.perf_counter()
        with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
            result = run_segmentation_job(resources, instance=instance)
        seconds = time.perf_counter() - started
    if not result.success:
        pytest.fail(f"the run behind the UI tests failed: {failure_messages(result)}")
    return UIState(home, dagster_home, seconds)


@pytest.fixture(scope="module")
def servers(ui_state: UIState, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, Server]]:
    """`dagster dev` and `mlflow ui` on the run's state folder, both started before either
    is waited for (they load in parallel), each stopped by its process group at teardown,
    whatever happened."""
    env = server_environment(ui_state.home, ui_state.dagster_home)
    logs = tmp_path_factory.mktemp("ui_logs")
    bin_dir = Path(sys.executable).parent
    started: dict[str, Server] = {}
    try:
        port = free_port()
        started["dagster"] = start_server(
            "dagster dev",
            [str(bin_dir / "dagster"), "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            port, env, cwd=REPO_ROOT, log=logs / "dagster.log",
        )
        port = free_port()
        started["mlflow"] = start_server(
            "mlflow ui",
            [str(bin_dir / "mlflow"), "ui",
             "--backend-store-uri", f"sqlite:///{ui_state.home / 'mlflow.db'}",
             "--default-artifact-root", str(ui_state.home / "mlflow-artifacts"),
             "--host", "127.0.0.1", "--port", str(port),
             # one worker: the UI is the same, and 2 cores start it sooner than several
             "--workers", "1"],
            # run from the state folder so that nothing MLflow writes by default
            # (./mlartifacts, ./mlruns) lands in the repository
            port, env, cwd=ui_state.home, log=logs / "mlflow.log",
        )
        dagster, mlflow = started["dagster"], started["mlflow"]
        wait_until(dagster, lambda: answers_http(f"{dagster.url}/server_info"))
        wait_until(dagster, lambda: dagster_location_loaded(dagster.url))
        wait_until(mlflow, lambda: answers_http(f"{mlflow.url}/health"))
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def dagster_url(servers: dict[str, Server]) -> str:
    return servers["dagster"].url


@pytest.fixture(scope="module")
def mlflow_url(servers: dict[str, Server]) -> str:
    return servers["mlflow"].url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian Chromium (never a Playwright browser download)."""
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            # CI runs as root, where Chromium refuses its sandbox
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh page per test, wide enough that tables are not squeezed."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        yield page
    finally:
        context.close()
