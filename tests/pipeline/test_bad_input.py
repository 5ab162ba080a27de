"""Bad files stop the run at the source or at a blocking input check, say what is wrong,
and leave the previous segmentation untouched. Plus the sensor that watches the files.

Each case starts from a copy of the session's good run (conftest.good_run), then runs the
whole job on the `files` source with one defect.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from pipeline_helpers import (
    INPUT_CHECKS,
    RAW_ASSETS,
    check_evaluations,
    failure_messages,
    isolate_environment,
    materialized_keys,
    read_published,
    run_segmentation_job,
)

from segmentation_dagster.automation import new_files_sensor
from segmentation_dagster.checks import InputRules
from segmentation_dagster.config import build_resources
from segmentation_dagster.core.sequence.synthetic import make_behaviour_dataset
from segmentation_dagster.resources import DataSource

INTERACTIONS_CHECK = ("raw_interactions", "raw_interactions_expectations")


@dataclass(frozen=True)
class Files:
    interactions: Path
    items: Path
    customers: Path


@pytest.fixture(scope="module")
def good_tables() -> dict[str, pd.DataFrame]:
    """Small, valid tables in the shape users supply: thumbs (0/1) with events and times."""
    data = make_behaviour_dataset(80, 40, 3, mean_events=12, seed=3)
    return {"interactions": data.interactions, "items": data.items,
            "customers": data.customers[["customer_id", "age", "gender"]]}


def write_files(folder: Path, tables: dict[str, pd.DataFrame]) -> Files:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in tables.items():
        paths[name] = folder / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return Files(**paths)


@pytest.fixture
def state(good_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the good run's state folder, set as SEGMENTATION_HOME."""
    home = tmp_path / "state"
    shutil.copytree(good_run.home, home, symlinks=True)
    isolate_environment(monkeypatch, home)
    return home


def run_on_files(home: Path, files: Files, **overrides) -> dg.ExecuteInProcessResult:
    source = DataSource(kind="files", interactions_path=str(files.interactions),
                        items_path=str(files.items), customers_path=str(files.customers))
    return run_segmentation_job(build_resources(str(home), source=source, **overrides))


def current_segments(home: Path) -> pd.DataFrame:
    """The segments users read: the published release's."""
    return read_published(home, "SELECT * FROM customer_segments ORDER BY customer_id")


def assert_stopped_before_the_graph(result, home: Path, good_run) -> None:
    assert not result.success
    built = materialized_keys(result)
    assert built <= set(RAW_ASSETS), f"built past the raw tables: {built - set(RAW_ASSETS)}"
    assert "preference_edges" not in built and "customer_segments" not in built
    pd.testing.assert_frame_equal(current_segments(home), current_segments(good_run.home))
    history = read_published(home, "SELECT DISTINCT run_id FROM segment_history")
    assert history["run_id"].tolist() == [good_run.result.run_id]


def test_the_good_files_pass_the_source_and_every_input_check(
    state: Path, good_tables, tmp_path: Path
) -> None:
    """The control: the defects below are the only reason those runs fail."""
    files = write_files(tmp_path / "files", good_tables)
    source = DataSource(kind="files", interactions_path=str(files.interactions),
                        items_path=str(files.items), customers_path=str(files.customers))
    resources = build_resources(str(state), source=source)
    result = run_segmentation_job(resources,
                                  asset_selection=[dg.AssetKey(k) for k in RAW_ASSETS])
    assert result.success, failure_messages(result)
    evaluations = check_evaluations(result)
    assert set(evaluations) == INPUT_CHECKS
    assert all(data.passed for data in evaluations.values())


# ---- defects the source itself rejects: the raw_tables step fails, naming the file ----

Breaker = Callable[[Files, dict[str, pd.DataFrame]], None]


def _missing_file(files: Files, tables) -> None:
    files.items.unlink()


def _missing_column(files: Files, tables) -> None:
    tables["interactions"].drop(columns="value").to_csv(files.interactions, index=False)


def _non_numeric_value(files: Files, tables) -> None:
    frame = tables["interactions"].astype({"value": object})
    frame.loc[[3, 8], "value"] = ["five", "n/a stars"]
    frame.to_csv(files.interactions, index=False)


def _empty_interactions(files: Files, tables) -> None:
    files.interactions.write_bytes(b"")


def _empty_customers(files: Files, tables) -> None:
    files.customers.write_bytes(b"")


def _header_only_interactions(files: Files, tables) -> None:
    tables["interactions"].head(0).to_csv(files.interactions, index=False)


def _header_only_items(files: Files, tables) -> None:
    tables["items"].head(0).to_csv(files.items, index=False)


def _bad_timestamp(files: Files, tables) -> None:
    frame = tables["interactions"].astype({"timestamp": object})
    frame.loc[5, "timestamp"] = "yesterday-ish"
    frame.to_csv(files.interactions, index=False)


SOURCE_DEFECTS: dict[str, tuple[Breaker, str, list[str]]] = {
    # name: (how to break the good files, the file named, other text the error must hold)
    "missing_file": (_missing_file, "items.csv", ["does not exist"]),
    "missing_column": (_missing_column, "interactions.csv", ["no column", "'value'"]),
    "non_numeric_value": (_non_numeric_value, "interactions.csv",
                          ["'value' must be numeric", "2 values", "five"]),
    "empty_interactions": (_empty_interactions, "interactions.csv", ["is empty"]),
    "empty_customers": (_empty_customers, "customers.csv", ["is empty"]),
    "header_only_interactions": (_header_only_interactions, "interactions.csv",
                                 ["header but no rows"]),
    "header_only_items": (_header_only_items, "items.csv", ["header but no rows"]),
    "bad_timestamp": (_bad_timestamp, "interactions.csv",
                      ["'timestamp'", "1 values", "yesterday-ish"]),
}


@pytest.mark.parametrize("defect", list(SOURCE_DEFECTS))
def test_the_source_rejects_bad_files(
    defect: str, state: Path, good_tables, tmp_path: Path, good_run
) -> None:
    breaker, named_file, texts = SOURCE_DEFECTS[defect]
    tables = {name: frame.copy() for name, frame in good_tables.items()}
    files = write_files(tmp_path / "files", tables)
    breaker(files, tables)

    result = run_on_files(state, files)

    failures = failure_messages(result)
    assert set(failures) == {"raw_tables"}, failures
    message = failures["raw_tables"]
    assert str(tmp_path / "files" / named_file) in message
    for text in texts:
        assert text in message, f"{text!r} not in {message!r}"
    assert materialized_keys(result) == set()
    assert check_evaluations(result) == {}
    assert_stopped_before_the_graph(result, state, good_run)


# ---- defects the blocking Great Expectations checks catch ----


def _negative_values(files: Files, tables) -> None:
    frame = tables["interactions"]
    frame.loc[[0, 4], "value"] = -1.0
    frame.to_csv(files.interactions, index=False)


def _unknown_event(files: Files, tables) -> None:
    frame = tables["interactions"]
    frame.loc[[1, 2, 6], "event"] = "refund"
    frame.to_csv(files.interactions, index=False)


def _missing_customer_ids(files: Files, tables) -> None:
    frame = tables["interactions"].astype({"customer_id": object})
    frame.loc[[2, 7, 9], "customer_id"] = None
    frame.to_csv(files.interactions, index=False)


def _missing_item_ids(files: Files, tables) -> None:
    frame = tables["items"].astype({"item_id": object})
    frame.loc[[1, 3], "item_id"] = None
    frame.to_csv(files.items, index=False)


def _duplicate_customers(files: Files, tables) -> None:
    frame = tables["customers"]
    pd.concat([frame, frame.head(2)]).to_csv(files.customers, index=False)


def _single_customer(files: Files, tables) -> None:
    frame = tables["interactions"]
    first = frame["customer_id"].iloc[0]
    frame[frame["customer_id"] == first].to_csv(files.interactions, index=False)


def _all_labels_identical(files: Files, tables) -> None:
    # all 0: every label identical and no purchase either (a constant POSITIVE value is a
    # purchase-only log, accepted: tests/pipeline/test_purchase_only.py)
    tables["interactions"].assign(value=0.0).to_csv(files.interactions, index=False)


CHECK_DEFECTS: dict[str, tuple[Breaker, tuple[str, str], list[str]]] = {
    # name: (how to break the good files, the check that fails, text its description holds)
    "negative_values": (_negative_values, INTERACTIONS_CHECK,
                        ["expect_column_values_to_be_between(value)", "'unexpected_count': 2",
                         "-1.0"]),
    "unknown_event": (_unknown_event, INTERACTIONS_CHECK,
                      ["expect_column_values_to_be_in_set(event)", "'unexpected_count': 3",
                       "refund"]),
    "missing_customer_ids": (_missing_customer_ids, INTERACTIONS_CHECK,
                             ["expect_column_values_to_not_be_null(customer_id)",
                              "'unexpected_count': 3"]),
    "missing_item_ids": (_missing_item_ids, ("raw_items", "raw_items_expectations"),
                         ["expect_column_values_to_not_be_null(item_id)",
                          "'unexpected_count': 2"]),
    "duplicate_customers": (_duplicate_customers,
                            ("raw_customers", "raw_customers_expectations"),
                            ["expect_column_values_to_be_unique(customer_id)",
                             "'unexpected_count': 4"]),
    "single_customer": (_single_customer, INTERACTIONS_CHECK,
                        ["expect_column_unique_value_count_to_be_between(customer_id)",
                         "'observed_value': 1"]),
    "all_labels_identical": (_all_labels_identical, INTERACTIONS_CHECK,
                             ["expect_column_unique_value_count_to_be_between(value)",
                              "'observed_value': 1"]),
}


@pytest.mark.parametrize("defect", list(CHECK_DEFECTS))
def test_blocking_input_checks_stop_bad_data(
    defect: str, state: Path, good_tables, tmp_path: Path, good_run
) -> None:
    breaker, failing_check, texts = CHECK_DEFECTS[defect]
    tables = {name: frame.copy() for name, frame in good_tables.items()}
    files = write_files(tmp_path / "files", tables)
    breaker(files, tables)

    # the operator's range for these 0/1 values: values are otherwise on any scale
    result = run_on_files(state, files, input_rules=InputRules(min_value=0.0, max_value=1.0))

    evaluations = check_evaluations(result)
    assert set(evaluations) == INPUT_CHECKS
    failed = {key for key, data in evaluations.items() if not data.passed}
    assert failed == {failing_check}
    check = evaluations[failing_check]
    for text in texts:
        assert text in check.description, f"{text!r} not in {check.description!r}"
        assert text in check.metadata["failures"].value
    assert check.metadata["failed"].value >= 1
    step = f"{failing_check[0]}_{failing_check[1]}"
    assert set(failure_messages(result)) == {step}
    # the raw tables were replaced (that is what the check read), nothing after them
    assert materialized_keys(result) == set(RAW_ASSETS)
    assert_stopped_before_the_graph(result, state, good_run)


# ---- the sensor ----


def test_new_files_sensor_requests_a_run_only_when_the_files_change(
    good_tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_files(tmp_path / "files", good_tables)
    isolate_environment(monkeypatch, tmp_path / "state")

    def sensor_context(cursor: str | None) -> dg.SensorEvaluationContext:
        # the sensor reads the data source resource, built from the environment as the
        # code location builds it
        source = build_resources(str(tmp_path / "state"))["source"]
        return dg.build_sensor_context(cursor=cursor, resources={"source": source})

    # not the files source: nothing to watch
    skipped = new_files_sensor(sensor_context(None))
    assert isinstance(skipped, dg.SkipReason)

    monkeypatch.setenv("SEGMENTATION_SOURCE", "files")
    monkeypatch.setenv("SEGMENTATION_INTERACTIONS", str(files.interactions))
    monkeypatch.setenv("SEGMENTATION_ITEMS", str(files.items))
    monkeypatch.setenv("SEGMENTATION_CUSTOMERS", str(files.customers))

    context = sensor_context(None)
    first = new_files_sensor(context)
    assert isinstance(first, dg.RunRequest)
    cursor = context.cursor
    assert cursor and first.run_key == cursor

    unchanged = new_files_sensor(sensor_context(cursor))
    assert isinstance(unchanged, dg.SkipReason)
    assert "no new data" in unchanged.skip_message

    # new rows appended: a new run, keyed by the new fingerprint
    with files.interactions.open("a") as handle:
        handle.write(good_tables["interactions"].tail(1).to_csv(header=False, index=False))
    context = sensor_context(cursor)
    appended = new_files_sensor(context)
    assert isinstance(appended, dg.RunRequest)
    assert appended.run_key != first.run_key and context.cursor == appended.run_key

    # same size, newer modification time (a file rewritten in place) also counts
    cursor = context.cursor
    stat = files.customers.stat()
    os.utime(files.customers, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    touched = new_files_sensor(sensor_context(cursor))
    assert isinstance(touched, dg.RunRequest) and touched.run_key != cursor


def test_customers_with_a_single_interaction_get_a_plain_error(
    state: Path, good_tables, tmp_path: Path, good_run
) -> None:
    """Every customer has one interaction: nothing can be held out, and the run says so
    in words instead of crashing in K selection; the published segments are kept."""
    tables = {name: frame.copy() for name, frame in good_tables.items()}
    first = tables["interactions"].drop_duplicates("customer_id")
    tables["interactions"] = first.assign(value=[i % 2 for i in range(len(first))])
    files = write_files(tmp_path / "files", tables)
    result = run_on_files(state, files)
    assert not result.success
    failures = failure_messages(result)
    # UNICON, on its own branch, refuses too: no customer has a sequence to learn from
    assert "edge_split" in failures and set(failures) <= {"edge_split", "unicon_model"}, failures
    assert "no customer has enough interactions to hold any out" in failures["edge_split"]
    assert "at least 2" in failures["edge_split"]
    pd.testing.assert_frame_equal(current_segments(state), current_segments(good_run.home))
