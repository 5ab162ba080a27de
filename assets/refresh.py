"""Refreshes that keep segment identity, and new customers placed without a refit.

- ``customer_segments`` matches its fresh segments to the last PUBLISHED run's
  (core.stability.match_segments: shared customers first, then profiles) with
  :func:`read_previous_run` and :func:`match_to_previous` below, and stores stable ids.
- ``segment_stability`` measures how far the refresh moved (tables segment_stability and
  segment_transitions) and warns, without stopping the run, when it drifted.
- ``new_customer_segments`` places customers the last fit never saw, or whose data grew
  since, under that fit's stored models (segmentation_dagster/score.py), without a refit.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb as duckdb_lib
import numpy as np
import pandas as pd

from segmentation_dagster.core.stability import (
    SegmentMatching,
    drift_warnings,
    match_segments,
    stability_summary,
    transitions,
)
from segmentation_dagster.engine import SQLEngine
from segmentation_dagster.publishing import publish_assignments, published_database
from segmentation_dagster.resources import DuckDBStore, StateFolder
from segmentation_dagster.score import StoredSegmentation, segment_names
from segmentation_dagster.settings import RefreshSettings

from .common import markdown_table

STABILITY_CHECK = "segmentation_is_stable"


@dataclass(frozen=True)
class PreviousRun:
    """What a refresh is matched against: the last published run's stable segment per
    customer, its per-segment profile (like-rate and centre, by stable id; None when the
    release has none) and every id any run ever used (never given to a new segment)."""

    run_id: str
    segments: pd.Series
    profiles: pd.DataFrame | None
    used_ids: list[int]


def read_previous_run(home: Path) -> PreviousRun | None:
    """The last published run of the state folder ``home`` (read-only), or None before
    the first publish."""
    path = published_database(home)
    if not path.exists():
        return None
    with duckdb_lib.connect(str(path.resolve()), read_only=True) as con:
        present = set(con.execute("SELECT table_name FROM duckdb_tables()").df()["table_name"])
        if "customer_segments" not in present:
            return None
        segments = con.execute("SELECT customer_id, segment, run_id FROM customer_segments").df()
        used = (con.execute("SELECT DISTINCT segment FROM segment_history").df()["segment"]
                if "segment_history" in present else pd.Series(dtype="int64"))
        profiles = (con.execute("SELECT segment, alpha AS like_rate, centre FROM segment_models")
                    .df().set_index("segment") if "segment_models" in present else None)
    if segments.empty:
        return None
    stable = segments.set_index(segments["customer_id"].astype(str))["segment"].astype("int64")
    if profiles is not None and not set(stable.unique()) <= set(profiles.index):
        profiles = None  # a release whose models do not cover its segments: customers only
    return PreviousRun(str(segments["run_id"].iloc[0]), stable, profiles,
                       sorted(int(s) for s in used.dropna()))


def match_to_previous(previous: PreviousRun | None, customer_ids: np.ndarray,
                      labels: np.ndarray, like_rates: np.ndarray,
                      centres: np.ndarray) -> SegmentMatching:
    """Stable ids for this fit's segments (labels 0..K-1 by like-rate): matched to the
    previous run on shared customers, else on the profile (like-rate, centre), else new.
    On the first run the ids are the labels themselves."""
    current = pd.Series(np.asarray(labels, dtype=np.int64),
                        index=pd.Index(np.asarray(customer_ids).astype(str)))
    if previous is None:
        return match_segments(None, current)
    profiles = None
    if previous.profiles is not None:
        profiles = pd.DataFrame({"like_rate": like_rates, "centre": centres},
                                index=np.arange(len(like_rates)))
    return match_segments(
        previous.segments, current, previous.profiles, profiles,
        retired_ids=previous.used_ids,
    )


def matching_table(matching: SegmentMatching, run_id: str,
                   previous: PreviousRun | None) -> pd.DataFrame:
    """One row per segment of this fit: its fresh label, stable id, how it was matched
    (customers / profile / new) and the match score; the previous run it was matched to."""
    table = matching.table().rename(columns={"stable_id": "segment"})
    return table.assign(
        run_id=run_id,
        previous_run_id=pd.Series([None if previous is None else previous.run_id] * len(table),
                                  dtype="string"),
        first_run=matching.first_run,
        vanished_segments=", ".join(map(str, matching.vanished)),
    )


def previous_segments_table(previous: PreviousRun | None) -> pd.DataFrame:
    """The previous run's segments, kept in the working store for segment_stability."""
    if previous is None:
        return pd.DataFrame({"customer_id": pd.Series(dtype="string"),
                             "segment": pd.Series(dtype="int64"),
                             "run_id": pd.Series(dtype="string")})
    return pd.DataFrame({"customer_id": previous.segments.index.astype(str),
                         "segment": previous.segments.to_numpy(), "run_id": previous.run_id})


def stability_tables(summary: dict, warnings: list[str], matching: pd.DataFrame,
                     before: pd.Series | None, now: pd.Series, run_id: str,
                     previous_run_id: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The one-row segment_stability table and the segment_transitions table."""
    methods = matching["method"].value_counts()
    row = {
        "run_id": run_id, "previous_run_id": previous_run_id, "first_run": before is None,
        **{name: summary[name] for name in (
            "ari", "moved_share", "n_customers", "n_previous_customers", "n_shared", "n_new",
            "n_left", "n_moved", "max_share_change", "max_share_change_segment")},
        "new_segments": ", ".join(map(str, summary["new_segments"])),
        "vanished_segments": ", ".join(map(str, summary["vanished_segments"])),
        "matched_by_customers": int(methods.get("customers", 0)),
        "matched_by_profile": int(methods.get("profile", 0)),
        "warnings": "; ".join(warnings),
        "measured_at": datetime.now(UTC).replace(tzinfo=None),
    }
    stability = pd.DataFrame([row]).astype({
        "previous_run_id": "string", "ari": "Float64", "moved_share": "Float64",
        "max_share_change": "Float64", "max_share_change_segment": "Int64"})
    moves = transitions(before, now).assign(run_id=run_id, previous_run_id=previous_run_id)
    moves = moves.astype({"previous_run_id": "string"})[
        ["run_id", "previous_run_id", "from_segment", "to_segment", "customers"]]
    return stability, moves


@dg.asset(
    deps=["customer_segments"],
    group_name="segments",
    kinds={"python", "duckdb"},
    check_specs=[dg.AssetCheckSpec(
        STABILITY_CHECK, asset="segment_stability",
        description="Warns (never blocks) when the agreement with the previous published "
                    "run (adjusted Rand index) is below refresh_settings.min_ari, or a "
                    "segment's share of customers moved by more than "
                    "refresh_settings.max_share_change.")],
)
def segment_stability(duckdb: DuckDBStore,
                      refresh_settings: RefreshSettings) -> dg.MaterializeResult:
    """How far this refresh moved from the previous published run: ``segment_stability``
    (one row: ARI and share of moved customers on the customers of both runs, customers
    new and gone, the largest change of a segment's share, new and vanished segment ids)
    and ``segment_transitions`` (customers by previous and current stable id; a missing
    side is NULL: a customer new in this run, or gone). The first run has no previous
    run and says so (``first_run``)."""
    current = duckdb.read_table("customer_segments")
    matching = duckdb.read_table("segment_matching")
    previous = duckdb.read_table("previous_customer_segments")
    run_id = str(current["run_id"].iloc[0])
    first_run = bool(matching["first_run"].iloc[0])
    previous_run_id = None if first_run else str(matching["previous_run_id"].iloc[0])
    now = pd.Series(current["segment"].to_numpy(), index=current["customer_id"].astype(str))
    before = (None if first_run else
              pd.Series(previous["segment"].to_numpy(), index=previous["customer_id"].astype(str)))
    summary = stability_summary(before, now)
    warnings = drift_warnings(summary, refresh_settings.min_ari,
                              refresh_settings.max_share_change)
    stability, moves = stability_tables(summary, warnings, matching, before, now, run_id,
                                        previous_run_id)
    duckdb.write_tables({"segment_stability": stability, "segment_transitions": moves})

    if first_run:
        verdict = "first run: no previous published run to compare with"
    else:
        verdict = (f"ARI {summary['ari']:.3f} on {summary['n_shared']} customers of both runs; "
                   f"{summary['n_moved']} changed segment")
    check = dg.AssetCheckResult(
        check_name=STABILITY_CHECK, passed=not warnings, severity=dg.AssetCheckSeverity.WARN,
        description="; ".join(warnings) or verdict,
        metadata={"first_run": first_run, "min_ari": refresh_settings.min_ari,
                  "max_share_change": refresh_settings.max_share_change,
                  "ari": float(summary["ari"]) if not first_run else None},
    )
    return dg.MaterializeResult(
        metadata={
            "first_run": first_run,
            "previous_run_id": previous_run_id or "none",
            "stability": verdict,
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in warnings) or "none"),
            "transitions": markdown_table(moves.drop(columns=["run_id", "previous_run_id"]),
                                          40),
        },
        check_results=[check],
    )


@dg.asset(
    deps=["preference_edges", "customer_segments"],
    group_name="segments",
    kinds={"python", "duckdb"},
)
def new_customer_segments(context: dg.AssetExecutionContext, duckdb: DuckDBStore,
                          engine: SQLEngine, state_folder: StateFolder
                          ) -> dg.MaterializeResult:
    """Customers of preference_edges that the last fitted segmentation does not hold, or
    whose edges grew since it, placed under that fit's stored models without a refit
    (segmentation_dagster/score.py): embedded under the stored pooled model, nearest
    stored cluster centre, that cluster's stable segment id.

    The last fitted segmentation is this run's customer_segments when this run rebuilt
    it (then every customer was fitted and the table is empty), else the published one;
    a run that only ingests and assigns (customer_segments left out) publishes its own
    release, a copy of the current one with this table replaced, so the fitted segments
    users read do not change. Columns: customer_id, segment, segment_name, reason ('new'
    or 'grown'), previous_segment (the fitted segment of a grown customer), edges,
    known_edges (edges to items the fit knew), fitted_edges, run_id, fitted_run_id,
    assigned_at."""
    run_id = context.run.run_id
    home = Path(state_folder.path)
    refit_here = duckdb.table_exists("customer_segments") and bool(duckdb.query(
        "SELECT count(*) FROM customer_segments WHERE run_id = $run_id",
        {"run_id": run_id}).iloc[0, 0])
    if refit_here:
        with duckdb.connect() as con:
            stored, fitted = _stored_and_fitted(con)
    else:
        path = published_database(home)
        if not path.exists():
            raise ValueError(f"no fitted segmentation to assign new customers to: nothing is "
                             f"published in {home} yet. Run the segmentation job first.")
        with duckdb_lib.connect(str(path.resolve()), read_only=True) as con:
            stored, fitted = _stored_and_fitted(con)
    edges = engine.query("SELECT customer_id, item_id, label FROM preference_edges")
    frame = assign_unfitted(stored, fitted, edges).assign(
        run_id=run_id, fitted_run_id=stored.fitted_run_id,
        assigned_at=datetime.now(UTC).replace(tzinfo=None))
    duckdb.write_table("new_customer_segments", frame)
    metadata = {
        "dagster/row_count": len(frame),
        "fitted_run_id": stored.fitted_run_id,
        "new_customers": int((frame["reason"] == "new").sum()),
        "grown_customers": int((frame["reason"] == "grown").sum()),
        "unassigned": int(frame["segment"].isna().sum()),
        "preview": markdown_table(frame.drop(columns=["run_id", "fitted_run_id"]), 10),
    }
    if not refit_here:
        release = publish_assignments(home, run_id, frame)
        context.log.info(f"published {len(frame)} assignments in {release}")
        metadata["release"] = dg.MetadataValue.path(str(release))
    return dg.MaterializeResult(metadata=metadata)


def _stored_and_fitted(con) -> tuple[StoredSegmentation, pd.DataFrame]:
    stored = StoredSegmentation.read(con)
    columns = set(con.execute("SELECT * FROM customer_segments LIMIT 0").df().columns)
    # a release from before fitted_edges was stored: only new customers can be told apart
    grown = "fitted_edges" if "fitted_edges" in columns else "CAST(NULL AS BIGINT) AS fitted_edges"
    fitted = con.execute(f"SELECT customer_id, segment, {grown} FROM customer_segments").df()
    return stored, fitted


def assign_unfitted(stored: StoredSegmentation, fitted: pd.DataFrame,
                    edges: pd.DataFrame) -> pd.DataFrame:
    """Assign the customers of ``edges`` missing from ``fitted`` (customer_id, segment,
    fitted_edges) or with more edges than when fitted."""
    fitted = fitted.set_index(fitted["customer_id"].astype(str))
    counts = edges.groupby(edges["customer_id"].astype(str)).size()
    before = fitted["fitted_edges"].reindex(counts.index)
    known = counts.index.isin(fitted.index)
    reason = pd.Series(np.where(~known, "new", "grown"), index=counts.index)
    wanted = ~known | (before.notna() & (counts > before)).to_numpy()
    chosen = counts.index[wanted]
    assigned = (stored.assign(edges[edges["customer_id"].astype(str).isin(chosen)])
                if len(chosen) else _empty_assignments())
    ids = assigned["customer_id"]
    return assigned.assign(
        reason=reason.reindex(ids).to_numpy(),
        previous_segment=fitted["segment"].reindex(ids).astype("Int64").to_numpy(),
        fitted_edges=before.reindex(ids).astype("Int64").to_numpy(),
        segment_name=segment_names(assigned["segment"]),
    )[["customer_id", "segment", "segment_name", "reason", "previous_segment", "edges",
       "known_edges", "fitted_edges"]]


def _empty_assignments() -> pd.DataFrame:
    return pd.DataFrame({
        "customer_id": pd.Series(dtype="string"), "segment": pd.Series(dtype="Int64"),
        "segment_name": pd.Series(dtype="string"), "edges": pd.Series(dtype="int64"),
        "known_edges": pd.Series(dtype="int64"),
    })
