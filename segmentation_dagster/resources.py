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
    # DuckDB's own limits (empty: its defaults, 80 % of the memory; the folder of the
    # file for spilling): beyond memory_limit it spills to temp_directory, out of core
    memory_limit: str = ""
    temp_directory: str = ""
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
                    connection = duckdb.connect(str(path), config=self._config())
                    break
                except duckdb.IOException:
                    if attempt == self.retries:
                        raise
                    time.sleep(0.5 * 2**attempt)
            try:
                yield connection
            finally:
                connection.close()

    def _config(self) -> dict[str, str]:
        limits = {"memory_limit": self.memory_limit, "temp_directory": self.temp_directory}
        return {name: value for name, value in limits.items() if value}

    def write_table(self, name: str, frame: pd.DataFrame) -> int:
        """Create or replace ``name`` from a DataFrame, atomically."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.register("frame_to_write", frame)
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM frame_to_write')
            con.unregister("frame_to_write")
            con.execute("COMMIT")
        return len(frame)

    def write_tables(self, frames: dict[str, pd.DataFrame]) -> None:
        """Create or replace several tables from DataFrames in ONE transaction: readers
        of this file see all of them replaced, or none."""
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            for name, frame in frames.items():
                con.register("frame_to_write", frame)
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM frame_to_write')
                con.unregister("frame_to_write")
            con.execute("COMMIT")

    def read_table(self, name: str) -> pd.DataFrame:
        with self.connect() as con:
            return con.execute(f'SELECT * FROM "{name}"').df()

    def read_table_text_as_categories(self, name: str) -> pd.DataFrame:
        """``name`` with every text column as a pandas categorical (same values, NULL as
        missing), for Great Expectations' pandas batches.

        GX hashes every row of a batch and counts distinct values with pandas' factorize;
        on Python string objects that took 26 s for 5M interactions, on categorical codes
        3 s. DuckDB numbers the distinct values with parallel hash joins, faster than
        pyarrow's single-threaded dictionary_encode (5 s against 9 s at 5M rows)."""
        with self.connect() as con:
            schema = con.execute(f'DESCRIBE "{name}"').df()
            columns = schema["column_name"].tolist()
            text = schema.loc[schema["column_type"] == "VARCHAR", "column_name"].tolist()
            categories, select, joins = {}, [], []
            for i, column in enumerate(columns):
                if column not in text:
                    select.append(f'r."{column}"')
                    continue
                con.execute(
                    f'CREATE TEMP TABLE codes_{i} AS SELECT v, CAST(row_number() OVER () - 1 '
                    f'AS INTEGER) AS code FROM (SELECT DISTINCT "{column}" AS v FROM "{name}" '
                    f'WHERE "{column}" IS NOT NULL)')
                categories[column] = con.execute(
                    f"SELECT v FROM codes_{i} ORDER BY code").df()["v"].to_numpy()
                select.append(f'coalesce(codes_{i}.code, -1) AS "{column}"')
                joins.append(f'LEFT JOIN codes_{i} ON r."{column}" = codes_{i}.v')
            frame = con.execute(
                f'SELECT {", ".join(select)} FROM "{name}" r {" ".join(joins)} '
                "ORDER BY r.rowid").df()  # the table's order, so examples in errors are too
        for column, values in categories.items():
            frame[column] = pd.Categorical.from_codes(
                frame[column].to_numpy(), categories=pd.Index(values, dtype=object))
        return frame

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

    def run_model(self, model: str, parameters: dict | None = None,
                  into: str | None = None) -> int:
        """Run ``dbt_like_sql/<model>.sql`` (one SELECT) into the table ``into`` (default
        <model>), in one transaction, and return the row count of the table it builds."""
        sql, bound = model_statement(model, parameters, into)
        with self.connect() as con:
            con.execute("BEGIN TRANSACTION")
            con.execute(sql, bound)
            con.execute("COMMIT")
            return con.execute(f'SELECT count(*) FROM "{into or model}"').fetchone()[0]


def model_statement(model: str, parameters: dict | None = None,
                    into: str | None = None) -> tuple[str, dict]:
    """``CREATE OR REPLACE TABLE "<into or model>" AS`` the model's SELECT rendered for
    DuckDB, and the parameters it binds (only those the rendered text uses)."""
    # imported here: engine.py builds on this module's store
    from .engine import render_model

    rendered = render_model(sql_model(model), "duckdb", parameters)
    return f'CREATE OR REPLACE TABLE "{into or model}" AS\n{rendered.sql}', rendered.parameters


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


# MLflow 3 opens an experiment on its GenAI dashboard (traces, tokens) unless this tag
# says it is classic model development; then it opens on the runs table.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CLASSIC_EXPERIMENT_KIND = "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"  # what the UI shows as the experiment's description
PARENT_RUN_TAG = "mlflow.parentRunId"  # the UI nests a run under the run this names
# a saved view of the runs table, as MLflow's UI itself stores one ("Views" menu)
SHARED_VIEW_TAG = "mlflow.sharedViewState."
# on the one parent run per (Dagster run, experiment): how children find it again
DAGSTER_PARENT_TAG = "dagster.parent"
EXPERIMENT_DESCRIPTIONS = {
    "k_selection": "One run per candidate segmentation (pooled model, normalisation, "
                   "embedding, K), scored by the validation log-likelihood on the scale the "
                   "one-SE rule uses; the chosen one is tagged chosen=True and holds the "
                   "figure of the score against every candidate.",
    "segments": "The chosen segmentation: segment sizes, per-segment model parameters, "
                "the density with the chosen boundaries, and segment profiles.",
    "model_comparison": "Every method on every task, one run per method with metrics "
                        "{task}.{slice}.{metric} (the same numbers as DuckDB's "
                        "model_comparison), and a summary run with the headline metrics.",
    "segment_classifiers": "The per-segment logistic classifiers, each logged as a model "
                           "with its own test AUC.",
    "cold_start": "The cold-start protocol: a run per (genre, method) with its K sweep.",
    "nmf_rank": "The NMF rank sweep on purchase counts, one run per rank; the chosen "
                "rank holds the rank-selection curves and consensus matrix.",
    "unicon": "The UNICON sequence model: training curve, next-item scores, the model.",
    "unicon_segments": "Behaviour segments on the UNICON consumer embeddings, a run per K.",
    "unicon_lookalike": "The look-alike classifier on the UNICON embeddings.",
}


class MLflowTracker(dg.ConfigurableResource):
    """A small MLflow client of our own (dagster-mlflow is a legacy op-style resource).

    Runs go to a local sqlite tracking store in the state folder; every run is tagged with
    the Dagster run id and asset key so a number in MLflow leads back to its materialization.

    - Every experiment is tagged as classic model development and described, so the
      MLflow UI opens it on its runs table (MLflow 3 otherwise opens a GenAI dashboard).
    - Each Dagster run gets one parent MLflow run per experiment, named
      ``<job> <start time> <run id[:8]>``; the runs of its assets nest under it, so the
      runs of two refreshes never mix.
    - Nothing is written outside the state folder: the tracking store is created with
      the state folder's artifact root, so MLflow's obligatory ``Default`` experiment
      points there (never at ``./mlruns``), and is hidden (deleted) while it is empty.
    """

    tracking_uri: str = ""  # empty: mlflow.db in SEGMENTATION_HOME
    artifact_root: str = ""  # empty: mlflow-artifacts/ in SEGMENTATION_HOME
    ui_url: str = "http://127.0.0.1:5000"
    _ready_experiments: dict = PrivateAttr(default_factory=dict)
    _parents: dict = PrivateAttr(default_factory=dict)
    _store_ready: bool = PrivateAttr(default=False)

    def _uri(self) -> str:
        return self.tracking_uri or settings.mlflow_tracking_uri(settings.state_home())

    def _root(self) -> Path:
        return Path(self.artifact_root or settings.mlflow_artifact_root(settings.state_home()))

    def _client(self):
        import mlflow

        uri = self._uri()
        if not self._store_ready:
            self._prepare_store(uri)
            self._store_ready = True
        mlflow.set_tracking_uri(uri)
        return mlflow

    def _prepare_store(self, uri: str) -> None:
        """Create a database store with the state folder's artifact root (MLflow's own
        clients would create it with ``./mlruns`` of the working directory, and put the
        ``Default`` experiment there), and delete ``Default`` while it has no runs."""
        import mlflow
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        if uri.split(":", 1)[0] not in {"sqlite", "postgresql", "mysql", "mssql"}:
            return
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        root = self._root()
        root.mkdir(parents=True, exist_ok=True)
        store = SqlAlchemyStore(uri, root.as_uri())
        default = store.get_experiment(SqlAlchemyStore.DEFAULT_EXPERIMENT_ID)
        if default.lifecycle_stage == "active":
            client = mlflow.MlflowClient(tracking_uri=uri)
            if not client.search_runs([default.experiment_id], max_results=1):
                client.delete_experiment(default.experiment_id)
        store.engine.dispose()

    def experiment_id(self, name: str) -> str:
        """The experiment ``name``'s id, created in the state folder if missing; tagged
        as classic model development and described, whether new or found."""
        if name in self._ready_experiments:
            return self._ready_experiments[name]
        mlflow = self._client()
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            root = self._root()
            root.mkdir(parents=True, exist_ok=True)
            experiment_id = mlflow.create_experiment(
                name, artifact_location=(root / name).as_uri(), tags=self._experiment_tags(name))
        else:
            experiment_id = experiment.experiment_id
            client = mlflow.MlflowClient(tracking_uri=self._uri())
            for key, value in self._experiment_tags(name).items():
                if experiment.tags.get(key) != value:
                    client.set_experiment_tag(experiment_id, key, value)
        self._ready_experiments[name] = experiment_id
        return experiment_id

    @staticmethod
    def _experiment_tags(name: str) -> dict[str, str]:
        description = EXPERIMENT_DESCRIPTIONS.get(
            name, f"Runs of the segmentation pipeline's {name} step, tagged with the Dagster "
                  "run id and asset key that logged them.")
        return {EXPERIMENT_KIND_TAG: CLASSIC_EXPERIMENT_KIND, DESCRIPTION_TAG: description}

    def parent_run_id(self, experiment: str, context: dg.AssetExecutionContext) -> str:
        """The one parent MLflow run of this Dagster run in ``experiment`` (found by its
        tags, so assets in other processes or resource instances share it; else
        created, named ``<job> <start time> <run id[:8]>``)."""
        import mlflow

        experiment_id = self.experiment_id(experiment)
        dagster_run_id = context.run.run_id
        key = (experiment_id, dagster_run_id)
        if key in self._parents:
            return self._parents[key]
        client = mlflow.MlflowClient(tracking_uri=self._uri())
        found = client.search_runs(
            [experiment_id], max_results=1,
            filter_string=f"tags.`dagster.run_id` = '{dagster_run_id}' "
                          f"AND tags.`{DAGSTER_PARENT_TAG}` = 'true'",
        )
        if found:
            run_id = found[0].info.run_id
        else:
            job = context.run.job_name
            run = client.create_run(experiment_id, run_name=f"{job} {self._started(context)} "
                                                            f"{dagster_run_id[:8]}",
                                    tags={"dagster.run_id": dagster_run_id, "dagster.job": job,
                                          DAGSTER_PARENT_TAG: "true"})
            run_id = run.info.run_id
            # finished at once (children update its end time): Dagster, not MLflow, knows
            # when the run ends, and a parent left RUNNING would look stuck in the UI
            client.set_terminated(run_id, "FINISHED")
        self._parents[key] = run_id
        return run_id

    @staticmethod
    def _started(context: dg.AssetExecutionContext) -> str:
        """When the Dagster run was created (now, for a run the instance does not know)."""
        from datetime import datetime

        record = None
        with contextlib.suppress(Exception):  # an ephemeral instance may not store runs
            record = context.instance.get_run_record_by_id(context.run.run_id)
        stamp = record.create_timestamp if record is not None else datetime.now()
        return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")

    @contextlib.contextmanager
    def run(
        self,
        experiment: str,
        run_name: str,
        context: dg.AssetExecutionContext | None = None,
        tags: dict | None = None,
    ):
        """Start an MLflow run tagged with the Dagster run id and asset key, nested under
        the Dagster run's parent run in ``experiment``."""
        mlflow = self._client()
        experiment_id = self.experiment_id(experiment)
        all_tags = dict(tags or {})
        if context is not None:
            all_tags["dagster.run_id"] = context.run.run_id
            all_tags["dagster.asset_key"] = context.asset_key.to_user_string()
            all_tags[PARENT_RUN_TAG] = self.parent_run_id(experiment, context)
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                              tags=all_tags) as active:
            yield active
        if context is not None:  # the parent spans its children
            mlflow.MlflowClient(tracking_uri=self._uri()).set_terminated(
                all_tags[PARENT_RUN_TAG], "FINISHED")

    def run_link(self, run) -> str:
        return (f"{self.ui_url}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
                "?workflowType=machine_learning")

    def experiment_link(
        self,
        experiment: str,
        metrics: list[str] | None = None,
        context: dg.AssetExecutionContext | None = None,
        ascending: bool = False,
    ) -> str:
        """The experiment's runs table. With ``metrics``: a view of it showing them as
        columns, sorted by the first (best first unless ``ascending``), and with
        ``context`` only the runs this asset logged in this Dagster run."""
        experiment_id = self.experiment_id(experiment)
        # MLflow 3.17's sidebar switch (GenAI / Model training) overrides the experiment's
        # kind tag; the URL sets it to model training for this page
        runs = f"{self.ui_url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        if not metrics:
            return runs
        view = self.shared_view(experiment, metrics, context, ascending)
        return f"{runs}&viewStateShareKey={view}"

    def shared_view(
        self,
        experiment: str,
        metrics: list[str],
        context: dg.AssetExecutionContext | None = None,
        ascending: bool = False,
    ) -> str:
        """Store a view of the runs table as MLflow's UI stores a shared one (an
        experiment tag holding the search and the columns) and return its key.

        Sorting by a metric also lists child runs flat, without their parent's nesting,
        so every scored run shows at once."""
        import hashlib
        import json

        import mlflow

        columns = [f"metrics.`{name}`" for name in metrics]
        state = {"orderByKey": columns[0], "orderByAsc": ascending,
                 "selectedColumns": columns}
        if context is not None:
            state["searchFilter"] = (
                f"tags.`dagster.run_id` = '{context.run.run_id}' AND "
                f"tags.`dagster.asset_key` = '{context.asset_key.to_user_string()}'")
        text = json.dumps(state, sort_keys=True)
        key = hashlib.sha1(text.encode()).hexdigest()[:16]
        mlflow.MlflowClient(tracking_uri=self._uri()).set_experiment_tag(
            self.experiment_id(experiment), SHARED_VIEW_TAG + key, text)
        return key
