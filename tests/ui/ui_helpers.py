"""Helpers of the browser tests: servers in their own process groups on free local ports,
and a Chromium page that records what a person would see go wrong (console errors,
uncaught exceptions, broken images)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Debian's chromium package; Playwright's own browser download cannot work here (the
# network reaches only the package registries).
CHROMIUM = shutil.which("chromium")
SERVER_START_SECONDS = 180.0  # dagster dev loads the code location (~20 s), MLflow ~35 s


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; a race with another process that
    binds it before the server does is possible but harmless: the start then times out)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(state: Path, dagster_home: Path) -> dict[str, str]:
    """The test process's environment, pointed at the test's state folder, with every
    telemetry switch that Dagster and MLflow honour turned off (no network at run time)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SEGMENTATION_")}
    env.update(
        SEGMENTATION_HOME=str(state),
        DAGSTER_HOME=str(dagster_home),
        MLFLOW_DISABLE_TELEMETRY="true",
        DO_NOT_TRACK="1",
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Server:
    """A server started in its own session (so its own process group): `dagster dev`
    ignores SIGTERM/SIGINT sent to it alone and spawns a webserver, a daemon and a code
    server; only the whole group can be stopped reliably."""

    name: str
    url: str
    process: subprocess.Popen
    log: Path

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL to whatever is left of it."""
        try:
            group = os.getpgid(self.process.pid)
        except ProcessLookupError:
            return
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(group):
                time.sleep(0.2)
            if not _group_alive(group):
                break
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_server(name: str, command: list[str], port: int, env: dict[str, str], cwd: Path,
                 log: Path) -> Server:
    handle = log.open("wb")
    try:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    finally:
        handle.close()  # the child holds its own copy
    return Server(name, f"http://127.0.0.1:{port}", process, log)


def wait_until(server: Server, ready: Callable[[], bool],
               seconds: float = SERVER_START_SECONDS) -> None:
    """Poll ``ready`` until it holds; fail with the server's log if it exits or the bounded
    wait runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n"
                               f"{server.log_tail()}")
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"{server.name} did not answer within {seconds:.0f} s:\n"
                       f"{server.log_tail()}")


def answers_http(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def dagster_location_loaded(url: str) -> bool:
    """The webserver answers before the code location has loaded; the asset pages are
    only meaningful once it has, and has no load error."""
    query = ("{ workspaceOrError { __typename ... on Workspace { locationEntries { name "
             "loadStatus locationOrLoadError { __typename } } } } }")
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
    if not entries or any(entry["loadStatus"] != "LOADED" for entry in entries):
        return False
    errors = [e["name"] for e in entries
              if e["locationOrLoadError"]["__typename"] != "RepositoryLocation"]
    if errors:
        raise RuntimeError(f"code location(s) failed to load in dagster dev: {errors}")
    return True


def mlflow_experiments(url: str) -> dict[str, str]:
    """Experiment name -> id, through the REST API the UI itself calls."""
    request = urllib.request.Request(
        f"{url}/ajax-api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1000}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        experiments = json.load(response).get("experiments", [])
    return {e["name"]: e["experiment_id"] for e in experiments}


@dataclass
class PageProblems:
    """What went wrong on a page while it was open: console errors and uncaught exceptions
    (those a known-harmless filter lets through are kept apart, for the report)."""

    errors: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def watch_page(page, harmless: Callable[[str], bool]) -> PageProblems:
    """Record the page's console errors and uncaught exceptions from now on."""
    problems = PageProblems()

    def on_console(message) -> None:
        if message.type != "error":
            return
        location = message.location or {}
        text = f"console: {message.text} ({location.get('url', '')})"
        (problems.ignored if harmless(text) else problems.errors).append(text)

    def on_page_error(error) -> None:
        text = f"pageerror: {error}"
        (problems.ignored if harmless(text) else problems.errors).append(text)

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return problems


BROKEN_IMAGES_JS = """
() => Array.from(document.images)
    .filter(i => i.complete && i.naturalWidth === 0)
    .map(i => i.getAttribute('src') || '(no src)')
"""


def broken_images(page) -> list[str]:
    """The sources of images the browser finished loading but could not draw, in the
    page and in any open dialog (Dagster shows metadata markdown in a modal)."""
    return page.evaluate(BROKEN_IMAGES_JS)


def screenshot(page, name: str) -> Path:
    """A full-page screenshot under $UI_SCREENSHOTS (default: the system temp folder), for
    a person to look at when a test fails or a UI changes."""
    folder = Path(os.environ.get("UI_SCREENSHOTS", "/tmp")) / "segmentation-ui"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def shows_number(text: str, value: float, min_decimals: int = 2) -> bool:
    """Whether ``text`` shows ``value`` as a UI would: rounded or cut to the decimals it
    displays. A number shown with fewer than ``min_decimals`` decimals must equal the
    value exactly (MLflow shows 0.5 as "0.5"), so that a stray "0" or "1" never passes
    for a rounded score."""
    # Dagster shows four significant digits and drops trailing zeros (-1.120146 as
    # "-1.12"): that exact rounding counts too, for a non-integer display only
    significant = f"{value:.4g}"
    for token in NUMBER.findall(text):
        mantissa = re.split("[eE]", token)[0]
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        tolerance = 10.0 ** -decimals if decimals >= min_decimals else 0.0
        if abs(float(token) - value) <= tolerance + 1e-12:
            return True
        if "." in significant and "." in mantissa and float(token) == float(significant):
            return True
    return False


MLFLOW_GRID_ROWS_JS = """
() => {
  // ag-grid splits each row between a pinned-left and a centre container; rows are
  // tied together by their row-index attribute.
  const rows = {};
  for (const el of document.querySelectorAll('[role=row][row-index]')) {
    const i = el.getAttribute('row-index');
    rows[i] = (rows[i] || '') + ' \\t ' + el.innerText.replace(/\\s+/g, ' ');
  }
  return Object.values(rows);
}
"""


def mlflow_grid_rows(page) -> list[str]:
    """The text of every row of MLflow's runs table, pinned and scrolled parts joined."""
    return page.evaluate(MLFLOW_GRID_ROWS_JS)


def mlflow_columns_state(metrics: list[str]) -> str:
    """What MLflow's "Columns" picker stores (per experiment, in localStorage) once a
    person ticks these metrics: used to open the runs table with them shown."""
    return json.dumps({"selectedColumns": [f"metrics.`{name}`" for name in metrics]})
