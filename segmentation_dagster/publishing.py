"""Publishing: what users read changes in one atomic step, at the end of a good run.

A run works in the state folder's working DuckDB file (``segmentation.duckdb``): raw
inputs, graph, embeddings, scores, every intermediate table. Users, notebooks, BI and
activation tools read the PUBLISHED state instead:

    <state>/published/segmentation.duckdb        current segments, segment models and
                                                 item rates, sizes, profiles, the
                                                 comparison, the K selection, history
    <state>/published/exports/customer_segments.parquet and .csv  (stable schema)
    <state>/published/exports/segment_profiles.parquet            (when profiles exist)

``published`` is a symbolic link to ``releases/<run_id>/``. The last step of a run builds
the new release in a folder of its own, then replaces the link with ``os.replace``, an
atomic rename: a reader sees the old release or the new one, never half of either; a run
that fails or is killed at any earlier point leaves the link, and so everything users
read, exactly as the last good run left it. A reader holding the old file open keeps
reading it (the old release stays on disk until two more runs have published), and never
blocks a run, which writes only to its own working file and its own release folder.

The history of segments is the previous release's history plus this run's segments,
written into the new release in the same step.

A run that only assigns new customers under the stored models (new_customer_segments,
without rebuilding customer_segments) publishes with :func:`publish_assignments`: a copy
of the current release with its new_customer_segments replaced, switched in the same way.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from .resources import DuckDBStore

PUBLISHED_TABLES = (
    "customer_segments", "segment_models", "segment_item_rates", "segment_sizes",
    "segment_profiles", "segment_profile_categories", "segment_profile_items",
    "segment_profile_demographics", "model_comparison", "k_selection",
    "chosen_segmentation",
    # identity across refreshes (assets/refresh.py)
    "segment_stability", "segment_transitions", "new_customer_segments",
    # the stored models that place new customers without a refit (segmentation_dagster/score.py)
    "source_info", "pooled_model_items", "pooled_model_summary", "segment_centres",
)
# Tables that describe one run: only this run's rows are published, so a table a run did
# not rebuild (an asset left out of its job) is never published as if it were current.
RUN_TABLES = ("segment_stability", "segment_transitions", "new_customer_segments")
EXPORT_COLUMNS = ["customer_id", "segment", "segment_name", "run_id", "fitted_at"]
KEEP_RELEASES = 3  # the current one and two before it, for readers still holding them


def published_folder(home: Path) -> Path:
    """The folder users read: a link to the current release."""
    return Path(home) / "published"


def published_database(home: Path) -> Path:
    return published_folder(home) / "segmentation.duckdb"


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def publish_run(store: DuckDBStore, home: Path, run_id: str) -> Path:
    """Build release ``run_id`` from the working store and switch ``published`` to it;
    return the release folder. Raises before the switch if anything is missing."""
    home = Path(home)
    releases = home / "releases"
    partial = releases / f".{run_id}.partial"
    release = releases / run_id
    shutil.rmtree(partial, ignore_errors=True)  # a killed attempt of this same run
    (partial / "exports").mkdir(parents=True)
    previous = published_database(home)
    fitted_at = datetime.now(UTC).replace(tzinfo=None)
    with store.connect() as con:
        present = set(con.execute("SELECT table_name FROM information_schema.tables "
                                  "WHERE table_schema = 'main'").df()["table_name"])
        con.execute(f"ATTACH {_sql_path(partial / 'segmentation.duckdb')} AS release")
        try:
            for table in PUBLISHED_TABLES:
                if table in present:
                    where = "WHERE run_id = $run_id" if table in RUN_TABLES else ""
                    con.execute(f"CREATE TABLE release.{table} AS SELECT * FROM main.{table} "
                                f"{where}", {"run_id": run_id} if where else {})
            history = "SELECT * FROM main.customer_segments"
            if previous.exists():
                con.execute(f"ATTACH {_sql_path(previous.resolve())} AS previous (READ_ONLY)")
                history = ("SELECT * FROM previous.segment_history UNION ALL BY NAME "
                           + history)
            con.execute(f"CREATE TABLE release.segment_history AS {history}")
            con.execute("CREATE TABLE release.publish_log AS SELECT $run_id AS run_id, "
                        "CAST($at AS TIMESTAMP) AS published_at", {"run_id": run_id,
                                                                     "at": fitted_at})
            segments = con.execute("SELECT customer_id, segment, run_id FROM "
                                   "main.customer_segments ORDER BY customer_id").df()
            profiles = (con.execute("SELECT * FROM main.segment_profiles").df()
                        if "segment_profiles" in present else None)
        finally:
            con.execute("DETACH release")
            if previous.exists():
                con.execute("DETACH DATABASE IF EXISTS previous")
    write_exports(partial / "exports", segments, profiles, fitted_at)
    shutil.rmtree(release, ignore_errors=True)
    os.rename(partial, release)
    _switch_link(home, release)
    _prune(releases, keep=release)
    return release


def publish_assignments(home: Path, run_id: str, assignments: pd.DataFrame) -> Path:
    """Publish a run that assigned new customers WITHOUT a refit (new_customer_segments
    in a run that did not rebuild customer_segments): release ``run_id`` is a copy of
    the current release, the fitted segments, models, history and exports untouched,
    with this run's ``new_customer_segments`` and ``publish_log``; then the same atomic
    switch of ``published``. Returns the release folder."""
    home = Path(home)
    current = published_folder(home)
    if not published_database(home).exists():
        raise FileNotFoundError(f"nothing is published in {home} yet: run the segmentation "
                                "job first, then assign new customers")
    releases = home / "releases"
    partial = releases / f".{run_id}.partial"
    release = releases / run_id
    shutil.rmtree(partial, ignore_errors=True)
    # a release is never written after its switch, so a file copy is a consistent one
    shutil.copytree(current.resolve(), partial)
    with duckdb.connect(str(partial / "segmentation.duckdb")) as con:
        con.register("assignments", assignments)
        con.execute("CREATE OR REPLACE TABLE new_customer_segments AS "
                    "SELECT * FROM assignments")
        con.execute("CREATE OR REPLACE TABLE publish_log AS SELECT $run_id AS run_id, "
                    "CAST($at AS TIMESTAMP) AS published_at",
                    {"run_id": run_id, "at": datetime.now(UTC).replace(tzinfo=None)})
    shutil.rmtree(release, ignore_errors=True)
    os.rename(partial, release)
    _switch_link(home, release)
    _prune(releases, keep=release)
    return release


def write_exports(folder: Path, segments: pd.DataFrame, profiles: pd.DataFrame | None,
                  fitted_at: datetime) -> None:
    """customer_segments.parquet/.csv (EXPORT_COLUMNS, one row per customer) and
    segment_profiles.parquet, for activation tools that read files.

    ``segment`` is the STABLE id (customer_segments keeps a segment's id across refreshes,
    assets/refresh.py), so ``segment_name`` 'segment 3' names the same segment from one
    refresh to the next; ids of vanished segments are never reused, so they may have gaps.
    """
    export = segments.assign(segment_name=lambda d: "segment " + d["segment"].astype(str),
                             fitted_at=fitted_at)[EXPORT_COLUMNS]
    export = export.astype({"customer_id": "string", "segment": "int64",
                            "segment_name": "string", "run_id": "string"})
    export.to_parquet(folder / "customer_segments.parquet", index=False)
    export.to_csv(folder / "customer_segments.csv", index=False)
    if profiles is not None:
        profiles.to_parquet(folder / "segment_profiles.parquet", index=False)


def _switch_link(home: Path, release: Path) -> None:
    """Point ``published`` at ``release`` in one atomic rename."""
    link = home / f".published-{release.name}"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(release.relative_to(home), link)
    current = published_folder(home)
    if current.is_dir() and not current.is_symlink():
        # a copied state folder turns the link into a real folder: keep it as a release
        # (the one moment here where ``published`` is briefly missing)
        os.rename(current, release.parent / f"copied-{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
    os.replace(link, current)
    directory = os.open(home, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename survives a crash of the machine too
    finally:
        os.close(directory)


def _prune(releases: Path, keep: Path) -> None:
    """Keep the last KEEP_RELEASES releases; drop the partial folders of killed runs
    (only one run at a time builds a release: the state folder's run lock)."""
    for partial in releases.glob(".*.partial"):
        shutil.rmtree(partial, ignore_errors=True)
    finished = sorted((p for p in releases.iterdir() if p.is_dir() and not p.name.startswith(".")),
                      key=lambda p: p.stat().st_mtime)
    for old in finished[:-KEEP_RELEASES]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
