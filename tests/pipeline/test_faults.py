"""Nothing lost, nothing mixed: the real job in subprocesses, killed with SIGKILL at
several steps, run twice at once on one state folder, run beside a reader holding the
published file open, and run with name resolution blocked.

Each run is ``tests/pipeline/run_job.py`` (the code location's assets on a small
synthetic source, without the slow side studies), so these tests pay a few short runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from pipeline_helpers import read_published

from segmentation_dagster.instance import IN_PROCESS_TAG

RUNNER = Path(__file__).with_name("run_job.py")
REPO = Path(__file__).resolve().parents[2]
PUBLISHED = ("customer_segments", "segment_history", "model_comparison", "publish_log",
             "segment_models")


def environment(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGMENTATION_")}
    env.update({"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO),
                                                            env.get("PYTHONPATH")]))})
    return env | (extra or {})


def start(home: Path, n_customers: int, seed: int, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(RUNNER), str(home), str(n_customers), str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
        env=env or environment(), start_new_session=True,
    )


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-3000:]
    return output


def kill_at(process: subprocess.Popen, step: str, timeout: float = 600) -> None:
    """SIGKILL the run as soon as it starts ``step`` (reading its event log lines)."""
    marker = f'Started execution of step "{step}"'
    for line in process.stdout:
        if marker in line:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
            return
    process.wait(timeout=timeout)
    raise AssertionError(f"the run ended (code {process.returncode}) before step {step}")


def published(home: Path) -> dict[str, pd.DataFrame]:
    return {t: read_published(home, f"SELECT * FROM {t} ORDER BY ALL") for t in PUBLISHED}


def assert_same(before: dict[str, pd.DataFrame], after: dict[str, pd.DataFrame]) -> None:
    for table, frame in before.items():
        pd.testing.assert_frame_equal(after[table], frame, obj=table)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("faults") / "state"
    finish(start(home, 200, 1))
    return home


@pytest.mark.parametrize("step", ["raw_tables", "customer_segments", "published_segments"])
def test_a_killed_run_leaves_the_published_state_as_the_last_good_run_left_it(
    first_run: Path, tmp_path: Path, step: str
) -> None:
    home = tmp_path / "state"
    import shutil

    shutil.copytree(first_run, home, symlinks=True)
    before = published(home)
    kill_at(start(home, 320, 2), step)  # other data: a mix-up would show
    now = published(home)
    if step == "published_segments" and len(now["customer_segments"]) == 320:
        # killed after the switch: the run did publish, and published all of it
        assert len(now["segment_history"]) == 200 + 320
        assert now["publish_log"]["run_id"].item() == now["customer_segments"]["run_id"][0]
    else:
        assert_same(before, now)

    # the next run succeeds, publishes its own whole result, and marks the killed run
    # failed in Dagster instead of leaving it STARTED forever
    finish(start(home, 320, 2))
    after = published(home)
    assert len(after["customer_segments"]) == 320
    assert after["customer_segments"]["run_id"].nunique() == 1
    assert len(after["segment_history"]) == 200 + 320
    with dg.DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags=IN_PROCESS_TAG))
        statuses = sorted(run.status.value for run in runs)
    assert statuses == ["FAILURE", "SUCCESS", "SUCCESS"]


def test_two_runs_at_once_queue_and_each_publishes_its_own_whole_result(tmp_path: Path) -> None:
    """Two runs with different inputs start together on an EMPTY state folder: the
    instance is created once, the second run waits for the first, and the history holds
    each run's own customers."""
    home = tmp_path / "state"
    runs = {200: start(home, 200, 3), 300: start(home, 300, 4)}
    outputs = {n: finish(process) for n, process in runs.items()}
    run_ids = {n: next(line.split()[1] for line in out.splitlines() if line.startswith("RUN"))
               for n, out in outputs.items()}
    history = read_published(home, "SELECT run_id, count(*) AS n FROM segment_history "
                                   "GROUP BY run_id")
    assert dict(zip(history["run_id"], history["n"], strict=True)) == {
        run_ids[200]: 200, run_ids[300]: 300}
    current = read_published(home, "SELECT run_id, count(*) AS n FROM customer_segments "
                                   "GROUP BY run_id")
    assert len(current) == 1  # one run's whole result, not a mix
    assert current["n"].item() == {v: k for k, v in run_ids.items()}[current["run_id"].item()]


def test_a_reader_holding_the_published_file_never_breaks_a_run(first_run: Path,
                                                                 tmp_path: Path) -> None:
    """A notebook keeps the published file open, read-only, across a run: the run
    succeeds, the reader keeps its snapshot, and a new connection sees the new state.
    The run also proves there is no network at run time: name resolution is blocked and
    any attempt to reach a host other than this machine is recorded."""
    import shutil

    home = tmp_path / "state"
    shutil.copytree(first_run, home, symlinks=True)
    attempts = tmp_path / "network_attempts.txt"
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import socket
        LOCAL = ("localhost", "127.0.0.1", "::1", "", None)
        _getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect

        def _record(what):
            with open({str(attempts)!r}, "a") as f:
                f.write(repr(what) + "\\n")

        def getaddrinfo(host, *args, **kwargs):
            if host not in LOCAL and not str(host).startswith("127."):
                _record(("resolve", host))
                raise socket.gaierror(socket.EAI_NONAME, "name resolution is blocked")
            return _getaddrinfo(host, *args, **kwargs)

        def connect(self, address):
            host = address[0] if isinstance(address, tuple) else address
            if self.family in (socket.AF_INET, socket.AF_INET6) and host not in LOCAL \\
                    and not str(host).startswith("127."):
                _record(("connect", address))
                raise OSError("network is blocked")
            return _connect(self, address)

        socket.getaddrinfo = getaddrinfo
        socket.socket.connect = connect
    """))
    env = environment()
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), env["PYTHONPATH"]])
    reader = duckdb.connect(str(home / "published" / "segmentation.duckdb"), read_only=True)
    try:
        old = reader.execute("SELECT count(*) FROM customer_segments").fetchone()[0]
        finish(start(home, 260, 5, env))
        assert reader.execute("SELECT count(*) FROM customer_segments").fetchone()[0] == old
    finally:
        reader.close()
    assert read_published(home, "SELECT count(*) AS n FROM customer_segments")["n"][0] == 260
    assert not attempts.exists(), attempts.read_text()
