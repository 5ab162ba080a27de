"""Dagster resources: the DuckDB store, the MLflow tracker, the data source and the state
folder's files.

Every path is a field, set by ``config.build_resources`` from one state folder; an empty
path falls back to SEGMENTATION_HOME (settings.state_home) for resources built by hand.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
from filelock import FileLock, Timeout
from pydantic import PrivateAttr

from . import settings
from .sources import SourceTables, load_source

SQL_PACKAGE = "dbt_like_sql"


def sql_model(model: str) -> str:
    """The text of ``dbt_like_sql/<model>.sql``, read from the installed package."""
    resource = importlib.resources.files(SQL_PACKAGE) / f"{model}.sql"
    if not resource.is_file():
        raise FileNotFoundError(f"no SQL model {model!r} in the {SQL_PACKAGE} package")
    return resource.read_text()


class DuckDBStore(dg.ConfigurableResource):
    """One DuckDB file in the state folder, opened only when an asset asks for it.

    One run at a time per state folder: a run takes the folder's run lock when its
    resources are set up and holds it to the end, whoever started it (``make run``, the
    UI, a schedule or a sensor; the executor is in-process, so a run sets its resources
    up once). A second run waits up to ``run_lock_timeout_seconds`` for the first to
    finish (0: it fails at once, saying which folder is busy). The operating system
    releases the lock of a killed run.

    Within a run, a file lock per connection keeps foreign writers (a script) out, and a
    DuckDB lock error from a foreign process is retried with backoff.
    """

    path: str = ""  # empty: segmentation.duckdb in SEGMENTATION_HOME
    lock_timeout_seconds: float = 600.0
    retries: int = 5
    run_lock_timeout_seconds: float = 3600.0
    _run_lock: FileLock | None = PrivateAttr(default=None)

    def database_path(self) -> Path:
        return Path(self.path or settings.duckdb_path(settings.state_home()))

    def run_lock_path(self) -> Path:
        path = self.database_path()
        return path.with_name(path.name + ".run.lock")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.dagster_run is None:  # built outside a run: nothing to hold
            return
        path = self.run_lock_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if context.log is not None and self.run_lock_timeout_seconds > 0:
                context.log.warning(f"another run holds {path}; this run waits for it "
                                    f"(at most {self.run_lock_timeout_seconds:g} s)")
            self._wait_for(lock, path)
        self._run_lock = lock

    def _wait_for(self, lock: FileLock, path: Path) -> None:
        try:
            lock.acquire(timeout=self.run_lock_timeout_seconds)
        except Timeout:
            raise RuntimeError(
                f"another run is using the state folder {path.parent} (it holds {path}); "
                f"waited {self.run_lock_timeout_seconds:g} s. Let it finish, or raise "
                "resources.duckdb.config.run_lock_timeout_seconds to wait longer."
            ) from None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    @contextlib.contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        path = self.database_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock", timeout=self.lock_timeout_seconds):
            for attempt in range(self.retries + 1):
                try:
                    connection = duckdb.connect(str(path))
                    break
                except duckdb.IOException:
                    if attempt == self.retries:
                        raise
                    time.sleep(0.5 * 2**attempt)
            try:
                yield connection
            finally:
                connection.close()

    def write_table(self, name: str, frame: pd.DataFrame) -> int:
        """Create or replace ``name`` from a DataFrame, atomically."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.register("frame_to_write", frame)
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM frame_to_write')
            con.unregister("frame_to_write")
            con.execute("COMMIT")
        return len(frame)

    def read_table(self, name: str) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(f'SELECT * FROM "{name}"').df()

    def query(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(sql, parameters or {}).df()

    def table_exists(self, name: str) -> bool:
        return bool(self.query(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = $name",
            {"name": name},
        ).iloc[0, 0])

    def execute(self, sql: str) -> None:
        """Run a statement that returns no rows (DROP, DELETE, ...)."""
        with self.connect() as con:
            con.execute(sql)

    def run_model(self, model: str, parameters: dict | None = None) -> int:
        """Run ``dbt_like_sql/<model>.sql`` (a CREATE OR REPLACE of table <model>) and
        return the row count of the table it builds."""
        sql = sql_model(model)
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute(sql, parameters or {})
            con.execute("COMMIT")
            return con.execute(f'SELECT count(*) FROM "{model}"').fetchone()[0]


class DataSource(dg.ConfigurableResource):
    """Where the raw interactions, items and customers come from.

    ``kind``: synthetic (default, offline, with ground truth), movielens-100k,
    movielens-1m (read from ``movielens_dir`` or downloaded into ``cache_dir``, the state
    folder's ``downloads/``), or files (the user's CSV or Parquet files).
    """

    kind: str = "synthetic"
    movielens_dir: str = ""
    interactions_path: str = ""
    items_path: str = ""
    customers_path: str = ""
    synthetic_customers: int = 1500
    synthetic_items: int = 300
    synthetic_segments: int = 3
    label_rule: str = ""
    seed: int = 0  # the synthetic data's seed (the pipeline's own is RandomSeed)
    # items / customers files must share at least this share of the interactions' ids
    # (never none, whatever this says)
    min_id_overlap: float = 0.0
    cache_dir: str = ""  # empty: downloads/ in SEGMENTATION_HOME

    def load(self) -> SourceTables:
        return load_source(
            kind=self.kind,
            movielens_dir=self.movielens_dir or None,
            cache_dir=Path(self.cache_dir or settings.downloads_dir(settings.state_home())),
            interactions_path=self.interactions_path or None,
            items_path=self.items_path or None,
            customers_path=self.customers_path or None,
            synthetic_size=(self.synthetic_customers, self.synthetic_items,
                            self.synthetic_segments),
            label_rule=self.label_rule or None,
            seed=self.seed,
            min_id_overlap=self.min_id_overlap,
        )


class StateFolder(dg.ConfigurableResource):
    """The files the assets write, in subfolders of the state folder ``path``:

    - ``figures/``: every PNG shown in an asset's metadata (also logged to MLflow);
    - ``report/``: the case study's markdown report, which links its figures;
    - ``models/``: the UNICON model and behaviour segmenter, read back by later assets;
    - ``downloads/``: MovieLens zips (``DataSource.cache_dir`` points here).

    Assets take this resource rather than reading SEGMENTATION_HOME, so two sets of
    resources with different folders can materialize in one process.
    """

    path: str

    def folder(self, name: str) -> Path:
        """``<path>/<name>``, created if missing."""
        folder = Path(self.path) / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder


class MLflowTracker(dg.ConfigurableResource):
    """A small MLflow client of our own (dagster-mlflow is a legacy op-style resource).

    Runs go to a local sqlite tracking store in the state folder; every run is tagged with
    the Dagster run id and asset key so a number in MLflow leads back to its materialization.
    """

    tracking_uri: str = ""  # empty: mlflow.db in SEGMENTATION_HOME
    artifact_root: str = ""  # empty: mlflow-artifacts/ in SEGMENTATION_HOME
    ui_url: str = "http://127.0.0.1:5000"

    def _client(self):
        import mlflow

        uri = self.tracking_uri or settings.mlflow_tracking_uri(settings.state_home())
        mlflow.set_tracking_uri(uri)
        return mlflow

    def experiment_id(self, name: str) -> str:
        mlflow = self._client()
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        root = Path(self.artifact_root or settings.mlflow_artifact_root(settings.state_home()))
        root.mkdir(parents=True, exist_ok=True)
        return mlflow.create_experiment(name, artifact_location=(root / name).as_uri())

    @contextlib.contextmanager
    def run(
        self,
        experiment: str,
        run_name: str,
        context: dg.AssetExecutionContext | None = None,
        tags: dict | None = None,
    ):
        """Start an MLflow run tagged with the Dagster run id and asset key."""
        mlflow = self._client()
        all_tags = dict(tags or {})
        if context is not None:
            all_tags["dagster.run_id"] = context.run.run_id
            all_tags["dagster.asset_key"] = context.asset_key.to_user_string()
        with mlflow.start_run(
            experiment_id=self.experiment_id(experiment), run_name=run_name, tags=all_tags
        ) as active:
            yield active

    def run_link(self, run) -> str:
        return f"{self.ui_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    def experiment_link(self, experiment: str) -> str:
        return f"{self.ui_url}/#/experiments/{self.experiment_id(experiment)}"
