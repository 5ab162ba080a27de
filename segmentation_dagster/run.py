"""`make run`: run one job (SEGMENTATION_JOB, default ``all``) and print what a person
needs: on success a short summary, on failure one short block saying what failed, where,
and what to do.

The run is launched through the code location, as the UI launches it (the location of
``workspace.yaml``, the job's snapshot and origin), then executed in this process. So it
appears on the UI's overview timeline and re-executes from the UI without a "may be a
different version" warning; an ``execute_in_process`` run has neither origin nor the
code location's snapshot. (Caveat: Dagster 1.13 orders several single ``@asset_check``
blocking checks of one asset by ``hash(None)``, which changes between processes, so
their job snapshot id does too; one ``multi_asset_check`` per asset keeps it stable.)

Everything Dagster and the libraries write while the run executes (step events, the
"dependencies not executed" lines, tracebacks, MLflow's and torch's chatter, the training
progress) goes to ``<state>/logs/run-<run id>.log``; the terminal shows only the summary.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from . import settings
from .instance import IN_PROCESS_TAG, open_instance

# the code location's name in workspace.yaml: the UI matches runs to jobs by it
LOCATION_NAME = "segmentation_dagster"
DEFINITIONS_MODULE = "segmentation_dagster.definitions"
# the raw table an input check reads, and the DataSource field naming its file
SOURCE_FILES = {"raw_interactions": "interactions_path", "raw_items": "items_path",
                "raw_customers": "customers_path"}
TOP_METHODS = 5
MAX_SEGMENT_LINES = 10


# --------------------------------------------------------------- the terminal and the log


@contextlib.contextmanager
def output_to_log(path: Path) -> Iterator[None]:
    """Send everything written to stdout and stderr (file descriptors 1 and 2, so child
    processes and C libraries too) to ``path`` for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    ours = logging.getLogger("segmentation_dagster")  # the core's training progress
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        ours.addHandler(handler)
        previous_level = ours.level
        ours.setLevel(logging.INFO)
        try:
            yield
        finally:
            ours.removeHandler(handler)
            ours.setLevel(previous_level)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


# --------------------------------------------------------------- launching


def launch(instance, job_name: str, run_id: str):
    """Create run ``run_id`` of ``job_name`` through the code location (its snapshot and
    origin, as `dagster job launch` creates one) and execute it here, as a run worker
    would. Returns the finished run."""
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(executable_path=sys.executable, module_name=DEFINITIONS_MODULE,
                             working_directory=os.getcwd()),
        location_name=LOCATION_NAME,
    )
    with origin.create_location(instance) as location:
        [(repository_name, repository)] = location.get_repositories().items()
        remote_job = repository.get_full_job(job_name)
        plan = location.get_execution_plan(remote_job, {}, step_keys_to_execute=None,
                                           known_state=None, instance=instance)
        run = instance.create_run(
            job_name=job_name, run_id=run_id, run_config={}, resolved_op_selection=None,
            step_keys_to_execute=None, op_selection=None, status=None, root_run_id=None,
            parent_run_id=None, tags={**remote_job.tags, **IN_PROCESS_TAG},
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=remote_job.get_python_origin(),
            asset_selection=None, asset_check_selection=None,
            asset_graph=repository.asset_graph,
        )
        recon_job = location.get_reconstructable_job(repository_name, job_name)
        execute_run(recon_job, run, instance)
    return instance.get_run_by_id(run_id)


# --------------------------------------------------------------- reading the run


def _event_type(entry) -> str | None:
    return entry.dagster_event.event_type_value if entry.dagster_event else None


def materialized(entries) -> set[str]:
    return {entry.dagster_event.asset_key.to_user_string() for entry in entries
            if _event_type(entry) == "ASSET_MATERIALIZATION"}


def warnings_of(entries, limit: int = 5) -> list[str]:
    """The run's own warnings (context.log.warning in the assets), once each."""
    messages = [entry.user_message for entry in entries
                if entry.dagster_event is None and entry.level >= logging.WARNING]
    return list(dict.fromkeys(messages))[:limit]


def innermost(error) -> str:
    """The user's own exception under Dagster's wrappers."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _file_of(asset: str, source) -> str:
    if source.kind == "files" and getattr(source, SOURCE_FILES.get(asset, ""), ""):
        return getattr(source, SOURCE_FILES[asset])
    return f"the {source.kind} source"


def failed_checks(entries, severity: str) -> list:
    """The evaluations of the checks that failed with ``severity`` (ERROR or WARN)."""
    return [entry.dagster_event.event_specific_data for entry in entries
            if _event_type(entry) == "ASSET_CHECK_EVALUATION"
            and not entry.dagster_event.event_specific_data.passed
            and entry.dagster_event.event_specific_data.severity.value == severity]


def failure_block(entries, run_id: str, job_name: str, source, seconds: float,
                  log_path: Path, publishes: bool, home: Path) -> list[str]:
    """At most ~12 lines: what failed, where, in plain words, and what to do."""
    from .publishing import published_database

    lines = []
    failed = failed_checks(entries, "ERROR")
    step_failures = [entry for entry in entries if _event_type(entry) == "STEP_FAILURE"]
    if failed:
        for check in failed[:2]:
            asset = check.asset_key.to_user_string()
            lines.append(f"The check `{check.check_name}` on {asset} failed "
                         f"(file: {_file_of(asset, source)}):")
            plain = (check.description or "").split("\n\nGreat Expectations:")[0]
            lines += [f"  {part}" for part in _sentences(plain)[:4]]
        lines.append("What to do: correct the data as said above and run `make run` again.")
    elif step_failures:
        entry = step_failures[0]
        message = innermost(entry.dagster_event.event_specific_data.error)
        lines.append(f"The step `{entry.step_key}` failed:")
        lines += [f"  {line[:300]}" for line in message.splitlines()[:5]]
        lines.append("What to do: fix what the message names and run `make run` again.")
    else:
        failure = next((entry.user_message or entry.dagster_event.message for entry in entries
                        if _event_type(entry) == "PIPELINE_FAILURE"), None)
        lines.append(f"The run failed before any step: {failure or 'see the log'}")
    if "published_segments" in materialized(entries):
        lines.append("The segments of this run were published before the failure.")
    elif publishes:
        lines.append("Nothing was published: users still read the last good release."
                     if published_database(home).exists() else
                     "Nothing was published (there is no good run yet).")
    lines.append(f"Job `{job_name}` failed after {duration(seconds)}; details: {log_path} "
                 f"and `make ui` (run {run_id[:8]}).")
    return [f"FAILED: {lines[0]}", *lines[1:]]


def _sentences(text: str) -> list[str]:
    """Plain text cut into lines at its sentences' ends, each at most ~150 characters."""
    parts, current = [], ""
    for word in text.split():
        if current and len(current) + len(word) > 150:
            parts.append(current)
            current = ""
        current = f"{current} {word}".strip()
        if word.endswith((".", ":")) and len(current) > 60:
            parts.append(current)
            current = ""
    return parts + ([current] if current else [])


# --------------------------------------------------------------- the summary of a success


def _exists(store, table: str) -> bool:
    return store.table_exists(table)


def rows_read(store) -> str:
    counts = store.query(
        "SELECT count(*) AS n, count(DISTINCT customer_id) AS customers, "
        "count(DISTINCT item_id) AS items FROM raw_interactions").iloc[0]
    dataset = store.query("SELECT dataset FROM source_info").iloc[0, 0]
    return (f"Read {int(counts['n']):,} interactions: {int(counts['customers']):,} customers, "
            f"{int(counts['items']):,} items ({dataset}).")


def chosen_line(store) -> str:
    chosen = store.read_table("chosen_segmentation").iloc[0]
    embedding = ("scalar" if pd.isna(chosen.get("category_rank"))
                 else f"vector (rank {int(chosen['category_rank'])})")
    sizes = store.query("SELECT count(DISTINCT segment) AS k FROM customer_segments")
    return (f"Chosen on validation edges: {chosen['pooled']} pooled model, "
            f"{chosen['normalisation']} normalisation, {embedding} embedding, "
            f"K = {int(sizes.iloc[0, 0])}.")


def segment_lines(store) -> list[str]:
    """One line per segment: its share and what sets it apart (core.profiles)."""
    from .core.profiles import SegmentProfiles, profile_headline

    def table(name: str) -> pd.DataFrame | None:
        return store.read_table(name) if _exists(store, name) else None

    rule = store.query("SELECT label_rule FROM source_info").iloc[0, 0]
    summary = store.read_table("segment_profiles").sort_values("segment")
    categories = table("segment_profile_categories")
    if categories is not None:
        categories = categories.astype({"supported": bool})
    profiles = SegmentProfiles(summary, categories, table("segment_profile_items"),
                               table("segment_profile_demographics"), rule == "purchase")
    lines = profile_headline(profiles).splitlines()
    if len(lines) > MAX_SEGMENT_LINES:
        lines = lines[:MAX_SEGMENT_LINES] + [f"... and {len(lines) - MAX_SEGMENT_LINES} more"]
    return [f"  {line}" for line in lines]


def comparison_lines(store) -> list[str]:
    """The main comparison, best first: held-out AUC (a purchase log: recall@10)."""
    table = store.query(
        "SELECT task, metric, method, value, n_segments, seconds FROM model_comparison "
        "WHERE slice = 'all' AND value IS NOT NULL AND NOT isnan(value)")
    headlines = {("held_out_edges", "auc"): "Held-out AUC",
                 ("purchase_ranking", "recall@10"): "Held-out purchases, recall@10"}
    found = [(title, table[(table["task"] == task) & (table["metric"] == metric)])
             for (task, metric), title in headlines.items()]
    found = [(title, rows) for title, rows in found if len(rows)]
    if not found:
        return []
    title, rows = found[0]
    rows = rows.sort_values("value", ascending=False).reset_index(drop=True)
    shown = rows.head(TOP_METHODS)
    if "model_embedding" in set(rows["method"]) and "model_embedding" not in set(shown["method"]):
        shown = pd.concat([shown, rows[rows["method"] == "model_embedding"]])
    lines = [f"{title} by method, best first ({len(rows)} methods; the full table is "
             "model_comparison):"]
    for rank, row in shown.iterrows():
        k = "" if pd.isna(row["n_segments"]) else f"K={int(row['n_segments'])}"
        seconds = "" if pd.isna(row["seconds"]) else f"{row['seconds']:.1f} s"
        lines.append(f"  {rank + 1:>2}. {row['method']:<22} {row['value']:.3f}  {k:<5} "
                     f"{seconds}".rstrip())
    return lines


def stability_line(store) -> str | None:
    row = store.read_table("segment_stability").iloc[-1]
    if bool(row.get("first_run")):
        return "Stability: the first run on this state folder, nothing to compare with."
    moved = row.get("moved_share")
    moved_text = "" if pd.isna(moved) else f", {moved:.1%} of shared customers moved"
    return (f"Stability against run {str(row['previous_run_id'])[:8]}: "
            f"ARI {row['ari']:.3f}{moved_text}.")


def published_lines(home: Path) -> list[str]:
    from .publishing import published_database, published_folder

    exports = published_folder(home) / "exports"
    files = sorted(p.name for p in exports.glob("*")) if exports.is_dir() else []
    lines = [f"Published: {published_database(home)}"]
    if files:
        lines.append(f"Exports:   {exports}/ ({', '.join(files)})")
    return lines


def success_summary(store, entries, job_name: str, home: Path, run_id: str,
                    seconds: float, log_path: Path) -> list[str]:
    built = materialized(entries)
    lines = [f"Job `{job_name}` succeeded in {duration(seconds)} "
             f"({len(built)} assets, run {run_id[:8]})."]
    sections = [
        ("raw_interactions", lambda: [rows_read(store)]),
        ("k_selection", lambda: [chosen_line(store)]),
        ("segment_profiles", lambda: ["Segments:", *segment_lines(store)]),
        ("model_comparison", lambda: comparison_lines(store)),
        ("segment_stability", lambda: [stability_line(store)]),
    ]
    for asset, section in sections:
        if asset not in built:
            continue
        try:
            lines += [line for line in section() if line]
        except Exception as error:  # a summary never fails a run that succeeded
            lines.append(f"({asset}: no summary, {type(error).__name__}: {error})")
    warnings = warnings_of(entries) + [
        f"check `{check.check_name}` on {check.asset_key.to_user_string()}: "
        f"{check.description or 'failed'}" for check in failed_checks(entries, "WARN")]
    if warnings:
        lines.append("Warnings:")
        lines += [f"  {w[:300]}" for w in warnings]
    if "published_segments" in built:
        lines += published_lines(home)
    lines.append(f"Log: {log_path}; browse with `make ui` and `make mlflow`.")
    return lines


# --------------------------------------------------------------- main


def main() -> int:
    # settings reads the environment; build_resources (in definitions.py) derives the same
    # state folder from it
    home = settings.state_home()
    dagster_home = settings.dagster_home(home)
    os.makedirs(dagster_home, exist_ok=True)
    job_name = settings.job_from_environment()
    from dagster._core.utils import make_new_run_id

    run_id = make_new_run_id()
    log_path = home / "logs" / f"run-{run_id}.log"
    started = time.perf_counter()
    print(f"Running job `{job_name}` (run {run_id[:8]}) at {datetime.now(UTC):%H:%M} UTC; "
          f"progress: tail -f {log_path}", flush=True)
    error = None
    with output_to_log(log_path):
        try:
            from .automation import configured_job
            from .definitions import defs

            configured_job(job_name)  # an unknown name: a plain error naming the jobs
            store = defs.resources["duckdb"]
            with open_instance(Path(dagster_home), store) as instance:
                record = launch(instance, job_name, run_id)
                entries = instance.all_logs(run_id)
        except Exception as caught:
            traceback.print_exc()  # into the log
            error = caught
    seconds = time.perf_counter() - started
    if error is not None:
        print(f"FAILED: the run could not start or finish: {error}\nDetails: {log_path}",
              file=sys.stderr)
        return 1
    state = Path(defs.resources["state_folder"].path)
    if record is None or not record.is_success:
        job_assets = defs.resolve_job_def(job_name).asset_layer.selected_asset_keys
        publishes = any(key.to_user_string() == "published_segments" for key in job_assets)
        print("\n".join(failure_block(entries, run_id, job_name, defs.resources["source"],
                                      seconds, log_path, publishes, state)),
              file=sys.stderr)
        return 1
    print("\n".join(success_summary(store, entries, job_name, state, run_id, seconds,
                                    log_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
