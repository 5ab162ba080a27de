"""The SQL engine: where the work that grows with edges runs (resource key ``engine``).

One interface, two engines:

- ``DuckDBEngine`` (the default) runs on the state folder's DuckDB file, the very file the
  ``duckdb`` store holds, so its tables are the store's tables;
- ``SparkEngine`` runs on a SparkSession (local, a ``spark://`` cluster or ``sc://`` Spark
  Connect), with its tables as Parquet folders in a warehouse directory.

Every SQL model in ``dbt_like_sql/`` is one SELECT in DuckDB's dialect, in a portable
subset (tests/engine/test_portable_sql.py); the engine wraps it into a table and, on
Spark, transpiles it with SQLGlot (``render_model``).

What grows with the edges (the preference edges, the split, the pooled model's item
terms, the embeddings, the segments join, per-segment item rates, validation
log-likelihoods) is computed by the engine. The Dagster process pulls back only small
results, and ``copy_to_store`` brings a per-customer or per-item table into the DuckDB
store for publishing (a no-op on DuckDB, where the engine's tables ARE the store's).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import NamedTuple

import dagster as dg
import numpy as np
import pandas as pd
import sqlglot
from pydantic import PrivateAttr
from sqlglot import exp

from . import settings
from .resources import DuckDBStore, sql_model

ENGINES = ("duckdb", "spark")
# sqlglot's names of the two dialects the SQL models are rendered into
DIALECTS = {"duckdb": "duckdb", "spark": "spark"}
# the macros the SQL files may call, expanded per engine by render_model
MACROS = ("split_hash", "union_tables")
# hex digits of the md5 that split_hash keeps: 15 (60 bits) always fit a signed BIGINT,
# so the number is non-negative on both engines
SPLIT_HASH_DIGITS = 15


# --- the SQL models: one dialect, rendered per engine ---------------------------------


class RenderedModel(NamedTuple):
    """A SELECT ready for one engine, and the parameters to bind to it (DuckDB keeps
    prepared parameters; on Spark they are literals in the text, so none remain)."""

    sql: str
    parameters: dict


def render_model(sql: str, dialect: str, parameters: dict | None = None) -> RenderedModel:
    """Render one SQL model (a SELECT in DuckDB's dialect) for ``dialect`` (duckdb, spark).

    The macros are expanded for the engine:

    - ``split_hash(a, b, ...)``: a non-negative BIGINT, equal on both engines: the first
      15 hex digits of the md5 of the values as text joined by ``|``;
    - ``union_tables(tables, col, ...)`` in FROM: ``SELECT col, ... FROM t`` stacked with
      UNION ALL over ``tables`` (a ``$parameter`` holding a list of table names, or a
      list literal ``['a', 'b']``), selecting the columns by name from each table.

    ``$name`` parameters stay prepared parameters on DuckDB (only those the text still
    uses are returned); on Spark they become literals. A parameter the SQL uses but
    ``parameters`` lacks is an error naming it.
    """
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {sorted(DIALECTS)}, got {dialect!r}")
    parameters = dict(parameters or {})
    tree = parse_model(sql)
    tree = tree.transform(lambda node: _expand_macro(node, dialect, parameters))
    used = sorted({node.name for node in tree.find_all(exp.Placeholder)})
    missing = [name for name in used if name not in parameters]
    if missing:
        raise ValueError(f"the SQL uses the parameters {missing} but no value was given "
                         f"(given: {sorted(parameters)})")
    if dialect == "duckdb":
        return RenderedModel(tree.sql(dialect="duckdb", comments=False),
                             {name: parameters[name] for name in used})
    tree = tree.transform(
        lambda node: sql_literal(parameters[node.name], node.name)
        if isinstance(node, exp.Placeholder) else node)
    return RenderedModel(tree.sql(dialect=DIALECTS[dialect], comments=False), {})


def parse_model(sql: str) -> exp.Expression:
    """The one SELECT (or set operation of SELECTs) of a SQL model, parsed as DuckDB SQL;
    anything else (several statements, a CREATE, an INSERT) is refused."""
    statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        kinds = [type(s).__name__ for s in statements]
        raise ValueError("a SQL model must be exactly one SELECT (the engine creates its "
                         f"table), got {kinds or 'nothing'}")
    return statements[0]


def sql_literal(value, name: str = "value") -> exp.Expression:
    """``value`` as a typed SQL literal (how Spark receives a ``$parameter``)."""
    if value is None or value is pd.NaT:
        return exp.Null()
    if isinstance(value, bool | np.bool_):
        return exp.Boolean(this=bool(value))
    if isinstance(value, int | np.integer):
        return exp.Literal.number(int(value))
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            raise ValueError(f"parameter {name} must be finite, got {value!r}")
        # a DOUBLE, as DuckDB binds a Python float (a bare 0.5 is a DECIMAL on Spark)
        return exp.cast(exp.Literal.number(repr(float(value))), exp.DataType.Type.DOUBLE)
    if isinstance(value, pd.Timestamp | dt.datetime):
        text = pd.Timestamp(value).isoformat(sep=" ")
        return exp.cast(exp.Literal.string(text), exp.DataType.Type.TIMESTAMP)
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), exp.DataType.Type.DATE)
    if isinstance(value, str):
        return exp.Literal.string(value)
    if isinstance(value, list | tuple | np.ndarray):
        return exp.Array(expressions=[sql_literal(v, name) for v in value])
    raise TypeError(f"parameter {name} has a type SQL models do not take: "
                    f"{type(value).__name__} ({value!r})")


def _expand_macro(node: exp.Expression, dialect: str, parameters: dict) -> exp.Expression:
    if isinstance(node, exp.Anonymous) and node.name.lower() == "split_hash":
        return _split_hash(node.expressions, dialect)
    if (isinstance(node, exp.Table) and isinstance(node.this, exp.Anonymous)
            and node.this.name.lower() == "union_tables"):
        return _union_tables(node, parameters)
    return node


def _split_hash(arguments: list[exp.Expression], dialect: str) -> exp.Expression:
    """md5 of the arguments as text, its first hex digits as a BIGINT: DuckDB's hash() is
    unsigned 64-bit and Spark's signed 32-bit, so neither gives the same split on both."""
    if not arguments:
        raise ValueError("split_hash needs at least one argument")
    # concat_ws by name: both engines skip NULLs in it (SQLGlot's ConcatWs would add a
    # NULL test per argument)
    text = exp.Anonymous(this="concat_ws", expressions=[exp.Literal.string("|")] + [
        exp.cast(argument.copy(), exp.DataType.Type.VARCHAR) for argument in arguments])
    digits = exp.Substring(this=exp.MD5(this=text), start=exp.Literal.number(1),
                           length=exp.Literal.number(SPLIT_HASH_DIGITS))
    if dialect == "spark":
        number = exp.Anonymous(this="conv", expressions=[
            digits, exp.Literal.number(16), exp.Literal.number(10)])
    else:  # DuckDB casts '0x<hex>' text to an integer
        number = exp.DPipe(this=exp.Literal.string("0x"), expression=digits, safe=True)
    return exp.cast(number, exp.DataType.Type.BIGINT)


def _union_tables(node: exp.Table, parameters: dict) -> exp.Expression:
    """``union_tables(tables, col, ...)`` as a subquery: UNION ALL over the tables, each
    giving the named columns (DuckDB's query_table / UNION BY NAME, which Spark lacks)."""
    first, *columns = node.this.expressions
    if isinstance(first, exp.Placeholder):
        if first.name not in parameters:
            raise ValueError(f"union_tables: no value for the parameter ${first.name}")
        tables = parameters[first.name]
    elif isinstance(first, exp.Array):
        tables = [item.name for item in first.expressions]
    else:
        raise ValueError("union_tables: the first argument must be a $parameter or a list "
                         f"of table names, got {first.sql('duckdb')}")
    if isinstance(tables, str) or not len(tables):
        raise ValueError(f"union_tables: the tables must be a non-empty list of names, "
                         f"got {tables!r}")
    if not columns or not all(isinstance(c, exp.Column) for c in columns):
        raise ValueError("union_tables: name the columns to select after the tables")
    names = [column.name for column in columns]
    selects = [exp.select(*[exp.column(n, quoted=True) for n in names])
               .from_(exp.Table(this=exp.to_identifier(str(table), quoted=True)))
               for table in tables]
    union = selects[0]
    for select in selects[1:]:
        union = exp.union(union, select, distinct=False)
    alias = node.alias or "union_tables"
    return exp.Subquery(this=union, alias=exp.TableAlias(this=exp.to_identifier(alias)))


def referenced_tables(tree: exp.Expression) -> list[str]:
    """The tables a query reads (its CTEs excluded), in order of first use."""
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    names: list[str] = []
    for table in tree.find_all(exp.Table):
        if isinstance(table.this, exp.Identifier) and table.name not in ctes:
            if table.name not in names:
                names.append(table.name)
    return names


# the portable subset (tests/engine/test_portable_sql.py runs it over every file)
_FORBIDDEN_WORDS = {
    r"(?<![\w$])hash\s*\(": "hash() differs by engine (DuckDB unsigned 64-bit, Spark signed "
                            "32-bit): use split_hash(...)",
    r"\browid\b": "rowid does not exist on Spark: use the raw tables' file_order column",
    r"\bcreate\b": "a model is one SELECT: the engine creates its table",
    r"\bquery_table\s*\(": "query_table is DuckDB's: use union_tables($tables, col, ...)",
    r"\bby\s+name\b": "UNION BY NAME is DuckDB's: use union_tables([...], col, ...)",
}


def portability_problems(sql: str) -> list[str]:
    """Why ``sql`` is not a portable SQL model (empty: it is).

    A model is one SELECT in DuckDB's dialect that renders to the same result on Spark:
    no hash() (split_hash instead), no rowid (file_order), no CREATE, no query_table or
    UNION BY NAME (union_tables), no QUALIFY (SQLGlot's rewrite for Spark leaks its row
    number column into ``SELECT *``), every fractional literal in an explicit CAST
    (Spark reads ``1.0`` as a DECIMAL, DuckDB's avg of which is a DOUBLE), and only
    functions SQLGlot knows (an unknown one passes through verbatim to an engine that
    may lack it) or the macros.
    """
    code = re.sub(r"--[^\n]*", "", sql)  # comments may name anything
    problems = [f"{reason} (found {match.group(0).strip()!r})"
                for pattern, reason in _FORBIDDEN_WORDS.items()
                for match in [re.search(pattern, code, flags=re.IGNORECASE)] if match]
    try:
        tree = parse_model(code)
    except (ValueError, sqlglot.errors.ParseError) as error:
        return problems + [str(error)]
    if tree.find(exp.Qualify):
        problems.append("QUALIFY: filter a row_number() column in a subquery instead")
    for literal in tree.find_all(exp.Literal):
        if (not literal.is_string and re.search(r"[.eE]", literal.this)
                and not isinstance(literal.parent, exp.Cast)):
            problems.append(f"the fractional literal {literal.this} needs an explicit CAST "
                            "(Spark reads it as a DECIMAL)")
    for function in tree.find_all(exp.Anonymous):
        if function.name.lower() not in MACROS:
            problems.append(f"{function.name}() is unknown to SQLGlot, so it would reach "
                            "Spark untranslated")
    return problems


def check_portable(sql: str, name: str = "the SQL model") -> None:
    """Raise a ValueError listing why ``sql`` is not portable (portability_problems)."""
    problems = portability_problems(sql)
    if problems:
        raise ValueError(f"{name} is not portable SQL: " + "; ".join(problems))


# --- the engines ------------------------------------------------------------------------


class SQLEngine(dg.ConfigurableResource):
    """The interface every engine implements (``name`` says which one it is)."""

    @property
    def name(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def run_model(self, model: str, parameters: dict | None = None,
                  into: str | None = None) -> int:
        """Run ``dbt_like_sql/<model>.sql`` into the table ``into`` (default ``<model>``;
        another name when two models build one table, e.g. customer_segments by range or
        by nearest centre); its row count."""
        raise NotImplementedError

    def query(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        """A (small) result of one SELECT written in DuckDB's dialect."""
        raise NotImplementedError

    def read_table(self, name: str) -> pd.DataFrame:
        return self.query(f'SELECT * FROM "{name}"')

    def write_table(self, name: str, frame: pd.DataFrame) -> int:
        """Create or replace ``name`` from a (small) DataFrame."""
        raise NotImplementedError

    def table_exists(self, name: str) -> bool:
        raise NotImplementedError

    def drop_table(self, name: str) -> None:
        """Drop ``name`` if it exists."""
        raise NotImplementedError

    def copy_to_store(self, store: DuckDBStore, name: str) -> int:
        """Make the engine table ``name`` a table of the DuckDB store; its row count."""
        raise NotImplementedError

    def kmeans_centres(self, table: str, columns: list[str], k: int, seed: int,
                       order_by: str | None = None) -> np.ndarray:
        """The ``k`` k-means centres (k x len(columns)) of the rows of ``table`` in
        ``columns``, seeded: only the centres leave the engine (the vector embedding's
        step 3; the engine assigns every row to its nearest centre in SQL)."""
        raise NotImplementedError


class DuckDBEngine(SQLEngine):
    """The state folder's DuckDB file (the run lock is the ``duckdb`` store's)."""

    path: str = ""  # empty: segmentation.duckdb in SEGMENTATION_HOME
    memory_limit: str = ""  # e.g. "3GB": DuckDB spills beyond it (empty: its default)
    temp_directory: str = ""  # where it spills (empty: beside the file)

    @property
    def name(self) -> str:
        return "duckdb"

    def _store(self) -> DuckDBStore:
        # a store on the same file, built outside the run so it takes no second run lock
        return DuckDBStore(path=self.path, memory_limit=self.memory_limit,
                           temp_directory=self.temp_directory)

    def run_model(self, model: str, parameters: dict | None = None,
                  into: str | None = None) -> int:
        return self._store().run_model(model, parameters, into)

    def query(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        return self._store().query(sql, parameters)

    def write_table(self, name: str, frame: pd.DataFrame) -> int:
        return self._store().write_table(name, frame)

    def table_exists(self, name: str) -> bool:
        return self._store().table_exists(name)

    def drop_table(self, name: str) -> None:
        self._store().execute(f'DROP TABLE IF EXISTS "{name}"')

    def copy_to_store(self, store: DuckDBStore, name: str) -> int:
        if store.database_path() != self._store().database_path():
            return store.write_table(name, self.read_table(name))
        return int(store.query(f'SELECT count(*) AS n FROM "{name}"').iloc[0, 0])

    def kmeans_centres(self, table: str, columns: list[str], k: int, seed: int,
                       order_by: str | None = None) -> np.ndarray:
        """scikit-learn's KMeans on the coordinates pulled back (a few floats per row),
        with the in-memory path's settings (core.clustering.SegmentClusterer: 10 seeded
        restarts, one thread), rows in ``order_by`` order as the in-memory rows are."""
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        _check_kmeans(table, columns, k)
        order = f' ORDER BY "{order_by}"' if order_by else ""
        x = self.query(f'SELECT {_quoted(columns)} FROM "{table}"{order}').to_numpy(
            dtype=float)
        if len(x) < k:
            raise ValueError(f"k={k} centres need at least {k} rows; {table} has {len(x)}")
        with threadpool_limits(1):
            return KMeans(k, n_init=10, random_state=seed).fit(x).cluster_centers_


# Spark settings for parity with DuckDB: UTC timestamps (DuckDB's TIMESTAMP has no zone),
# ANSI mode (Spark 4's default: errors on overflow and bad casts, as DuckDB) and Arrow
# for the transfers to and from pandas. The resource's ``conf`` overrides any of them.
SPARK_DEFAULTS = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.ansi.enabled": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SparkEngine(SQLEngine):
    """A SparkSession: local (``local[N]``), a ``spark://`` cluster or a ``sc://`` Spark
    Connect server (``master``), with any ``spark.*`` setting in ``conf``.

    Tables are Parquet folders ``<warehouse>/<name>`` (empty warehouse:
    ``spark_warehouse/`` in the state folder), registered as temporary views whenever a
    query reads them, so they outlive the session and the run. A table is written to a
    temporary folder and then renamed into place, so a failed write leaves the previous
    table whole; the warehouse must therefore be a folder this process can rename in
    (local, or a mount the cluster shares).

    The session is created on first use (an active session in this process, such as a
    test's, is reused and left running) and stopped at the end of the run. pyspark is an
    optional extra, imported only here: ``pip install '.[spark]'``.
    """

    master: str = "local[2]"
    conf: dict[str, str] = {}
    warehouse: str = ""  # empty: spark_warehouse/ in SEGMENTATION_HOME
    _spark: object | None = PrivateAttr(default=None)
    _owns_session: bool = PrivateAttr(default=False)

    @property
    def name(self) -> str:
        return "spark"

    # -- the session --

    def session(self):
        """The SparkSession, created on first use."""
        if self._spark is not None:
            return self._spark
        try:
            from pyspark.sql import SparkSession
        except ImportError:
            raise RuntimeError(
                "the spark engine needs pyspark, an optional extra: pip install '.[spark]' "
                "(and a Java runtime, e.g. apt-get install openjdk-17-jre-headless), or "
                "set SEGMENTATION_ENGINE=duckdb"
            ) from None
        remote = self.master.startswith("sc://")
        active = None if remote else SparkSession.getActiveSession()
        builder = SparkSession.builder.appName("segmentation_dagster")
        builder = builder.remote(self.master) if remote else builder.master(self.master)
        options = dict(SPARK_DEFAULTS)
        if not remote:  # a static setting: a Connect server has its own
            options["spark.sql.warehouse.dir"] = str(self.warehouse_path())
        for key, value in {**options, **self.conf}.items():
            builder = builder.config(key, str(value))
        self._spark = builder.getOrCreate()
        if active is not None and active is self._spark:
            # a session someone else started (a test's): ours are runtime settings only
            for key, value in {**SPARK_DEFAULTS, **self.conf}.items():
                if not self._spark.conf.isModifiable(key):
                    continue
                self._spark.conf.set(key, str(value))
        self._owns_session = active is None or active is not self._spark
        return self._spark

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the session if this engine created it."""
        if self._spark is not None and self._owns_session:
            self._spark.stop()
        self._spark = None
        self._owns_session = False

    # -- the warehouse --

    def warehouse_path(self) -> Path:
        return Path(self.warehouse or settings.spark_warehouse(settings.state_home()))

    def table_path(self, name: str) -> Path:
        if not _TABLE_NAME.match(name):
            raise ValueError(f"table name must be letters, digits and _, got {name!r}")
        return self.warehouse_path() / name

    def table_exists(self, name: str) -> bool:
        return self.table_path(name).is_dir()

    def drop_table(self, name: str) -> None:
        path = self.table_path(name)
        if path.is_dir():
            shutil.rmtree(path)

    def _register(self, names: list[str]) -> None:
        """Each table as a temporary view of its Parquet folder (again on every query:
        a view holds the files of its time, and a table may have been replaced since)."""
        spark = self.session()
        for name in names:
            path = self.table_path(name)
            if not path.is_dir():
                raise ValueError(f"table {name!r} is not in the Spark warehouse "
                                 f"{self.warehouse_path()}: materialize the asset that "
                                 "builds it first")
            spark.read.parquet(str(path)).createOrReplaceTempView(name)

    def _replace(self, name: str, frame) -> int:
        """Write a Spark DataFrame as table ``name`` (temporary folder, then renamed)."""
        target = self.table_path(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:12]
        temporary = target.with_name(f".{name}.{token}.writing")
        frame.write.mode("errorifexists").parquet(str(temporary))
        previous = target.with_name(f".{name}.{token}.old")
        if target.exists():
            os.replace(target, previous)
        os.replace(temporary, target)
        if previous.exists():
            shutil.rmtree(previous)
        return int(self.session().read.parquet(str(target)).count())

    # -- the interface --

    def _dataframe(self, sql: str, parameters: dict | None):
        rendered = render_model(sql, "spark", parameters)
        # the tables of the rendered text: the macros may name some (union_tables)
        self._register(referenced_tables(sqlglot.parse_one(rendered.sql, read="spark")))
        return self.session().sql(rendered.sql)

    def run_model(self, model: str, parameters: dict | None = None,
                  into: str | None = None) -> int:
        return self._replace(into or model, self._dataframe(sql_model(model), parameters))

    def query(self, sql: str, parameters: dict | None = None) -> pd.DataFrame:
        return self._dataframe(sql, parameters).toPandas()

    def read_table(self, name: str) -> pd.DataFrame:
        self._register([name])
        return self.session().table(name).toPandas()

    def write_table(self, name: str, frame: pd.DataFrame) -> int:
        import pyarrow as pa

        table = pa.Table.from_pandas(frame, preserve_index=False)
        # a column of nothing but NULLs has Arrow's null type, which Parquet cannot hold
        for index, field in enumerate(table.schema):
            if pa.types.is_null(field.type):
                table = table.set_column(index, pa.field(field.name, pa.string()),
                                         table.column(index).cast(pa.string()))
        return self._replace(name, self.session().createDataFrame(table))

    def copy_to_store(self, store: DuckDBStore, name: str) -> int:
        return store.write_table(name, self.read_table(name))

    def kmeans_centres(self, table: str, columns: list[str], k: int, seed: int,
                       order_by: str | None = None) -> np.ndarray:
        """Spark MLlib's KMeans (k-means|| initialisation, seeded) on the table where it
        lies; ``order_by`` is ignored (MLlib's result does not depend on a row order
        Spark does not keep)."""
        from pyspark.ml.clustering import KMeans
        from pyspark.ml.feature import VectorAssembler

        _check_kmeans(table, columns, k)
        self._register([table])
        frame = VectorAssembler(inputCols=list(columns), outputCol="features").transform(
            self.session().table(table).select(*columns))
        model = KMeans(k=k, seed=seed, featuresCol="features", maxIter=100).fit(frame)
        return np.array([np.asarray(c, dtype=float) for c in model.clusterCenters()])


def _check_kmeans(table: str, columns: list[str], k: int) -> None:
    if not _TABLE_NAME.match(table):
        raise ValueError(f"table name must be letters, digits and _, got {table!r}")
    if not columns or not all(_TABLE_NAME.match(c) for c in columns):
        raise ValueError(f"columns must be one or more plain column names, got {columns!r}")
    if int(k) != k or k < 2:
        raise ValueError(f"k must be an integer >= 2 (one centre is the mean), got {k!r}")


def _quoted(columns: list[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def make_engine(name: str, state: Path, **fields) -> SQLEngine:
    """The engine ``name`` (duckdb or spark) on the state folder ``state``; ``fields`` are
    the engine's own (SparkEngine: master, conf, warehouse)."""
    if name == "duckdb":
        return DuckDBEngine(**{"path": settings.duckdb_path(state), **fields})
    if name == "spark":
        return SparkEngine(**{"warehouse": settings.spark_warehouse(state), **fields})
    raise ValueError(f"unknown engine {name!r} (SEGMENTATION_ENGINE): choose one of "
                     f"{', '.join(ENGINES)}")
