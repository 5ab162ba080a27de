"""The UNICON assets, materialized for real (DuckDB, MLflow, tiny torch models) on the
synthetic source with planted behavioural segments, then on broken inputs.

The assets are materialized with the upstream ingest / graph / alpha-embedding assets
(and without the rest of the job), so these tests also run before assets.unicon is part
of the code location. The UNICON settings are three resources (model, behaviour
segments, lookalike); ``unicon_settings`` deals one flat dict of fields out to them.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from assets import behaviour, embedding, graph, ingest, lookalike, segments, unicon
from segmentation_dagster.config import build_resources
from segmentation_dagster.core.sequence.data import order_events
from segmentation_dagster.core.sequence.synthetic import make_behaviour_dataset
from segmentation_dagster.resources import DataSource, DuckDBStore
from segmentation_dagster.settings import (
    BehaviourSegmentSettings,
    LookalikeSettings,
    UniconModelSettings,
)
from segmentation_dagster.sources import SourceTables

VARIABLES = ("SEGMENTATION_HOME", "SEGMENTATION_SOURCE", "SEGMENTATION_MOVIELENS_DIR",
             "SEGMENTATION_INTERACTIONS", "SEGMENTATION_ITEMS", "SEGMENTATION_CUSTOMERS")
UNICON_ASSETS = ["customer_sequences", "unicon_model", "consumer_embeddings",
                 "behaviour_segments", "unicon_evaluation", "lookalike_audience",
                 "method_unicon"]
# tiny models and few epochs: these tests check the plumbing, core/ tests the science
TINY = dict(d_model=16, n_heads=2, n_layers=1, max_epochs=3, pretrain_epochs=2,
            classifier_epochs=4, k_max=5, similarity_pairs=3000, max_events=30, threads=1)


class BehaviourSource(DataSource):
    """The synthetic source with planted behaviour (core.sequence.synthetic), as the
    synthetic source will load it once wired in."""

    def load(self) -> SourceTables:
        data = make_behaviour_dataset(self.synthetic_customers, self.synthetic_items,
                                      self.synthetic_segments, seed=self.seed)

        def ids(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
            return frame.assign(**{c: frame[c].astype(str) for c in columns})

        return SourceTables(ids(data.interactions, "customer_id", "item_id"),
                            ids(data.items, "item_id"), ids(data.customers, "customer_id"),
                            ids(data.truth, "customer_id"), "synthetic", "positive")



def asset_runs(client: mlflow.MlflowClient, experiment) -> list:
    """The experiment's runs logged by assets, without the Dagster runs' parent runs."""
    return [run for run in client.search_runs([experiment.experiment_id])
            if run.data.tags.get("dagster.parent") != "true"]

def all_assets() -> list:
    return list(dg.load_assets_from_modules(
        [ingest, graph, embedding, segments, unicon, behaviour, lookalike]))


SETTINGS = {"unicon_model_settings": UniconModelSettings,
            "behaviour_segment_settings": BehaviourSegmentSettings,
            "lookalike_settings": LookalikeSettings}


def unicon_settings(**fields) -> dict:
    """The three UNICON settings resources, each with the ``fields`` it has."""
    unknown = set(fields) - {f for cls in SETTINGS.values() for f in cls.model_fields}
    assert not unknown, f"no UNICON setting {sorted(unknown)}"
    return {key: cls(**{k: v for k, v in fields.items() if k in cls.model_fields})
            for key, cls in SETTINGS.items()}


def failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    messages = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            parts, error = [], event.event_specific_data.error
            while error is not None:
                parts.append(error.message)
                error = error.cause
            messages[event.step_key] = "\n".join(parts)
    return messages


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == key:
            return {k: v.value for k, v in event.event_specific_data.materialization
                    .metadata.items()}
    raise KeyError(key)


def read(home: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(home / "segmentation.duckdb"), read_only=True) as con:
        return con.execute(sql).df()


@dataclass(frozen=True)
class Run:
    home: Path
    result: dg.ExecuteInProcessResult


def materialize(home: Path, patch: pytest.MonkeyPatch, selection=None,
                **settings) -> dg.ExecuteInProcessResult:
    for name in VARIABLES:
        patch.delenv(name, raising=False)
    patch.setenv("SEGMENTATION_HOME", str(home))
    resources = build_resources(
        str(home), source=BehaviourSource(synthetic_customers=400, synthetic_items=120),
        **unicon_settings(**{**TINY, **settings}),
    )
    return dg.materialize(all_assets(), resources=resources, selection=selection,
                          raise_on_error=False)


@pytest.fixture(scope="module")
def unicon_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    home = tmp_path_factory.mktemp("unicon_state")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        result = materialize(home, patch)
    torch.set_num_threads(previous)
    assert result.success, failures(result)
    return Run(home, result)


def copy_state(run: Run, tmp_path: Path) -> Path:
    home = tmp_path / "state"
    shutil.copytree(run.home, home)
    return home


def test_every_unicon_asset_materializes(unicon_run) -> None:
    keys = {e.asset_key.to_user_string()
            for e in unicon_run.result.get_asset_materialization_events()}
    assert set(UNICON_ASSETS) <= keys


def test_sequences_follow_time_and_match_the_python_ordering(unicon_run) -> None:
    sql = read(unicon_run.home, "SELECT * FROM customer_sequences ORDER BY customer_id, position")
    raw = read(unicon_run.home, "SELECT * FROM raw_interactions ORDER BY rowid")
    python = order_events(raw, max_events=TINY["max_events"])
    merged = sql.merge(python, on=["customer_id", "position"], suffixes=("", "_py"))
    assert len(merged) == len(sql) == len(python)
    assert (merged["item_id"] == merged["item_id_py"]).all()
    assert sql.groupby("customer_id")["timestamp"].is_monotonic_increasing.all()
    assert sql["n_events"].max() == TINY["max_events"]
    assert {"category", "brand", "price"} <= set(sql.columns)  # the items' attributes


def test_segments_embeddings_and_representatives(unicon_run) -> None:
    home = unicon_run.home
    customers = read(home, "SELECT DISTINCT customer_id FROM customer_sequences")
    segments_table = read(home, "SELECT * FROM behaviour_segments")
    assert list(segments_table.columns) == ["customer_id", "segment", "distance_to_centre"]
    assert set(segments_table["customer_id"]) == set(customers["customer_id"])
    assert segments_table["distance_to_centre"].between(0, 2).all()
    embeddings = read(home, "SELECT * FROM consumer_embeddings")
    matrix = np.stack(embeddings["embedding"].to_numpy())
    assert matrix.shape == (len(customers), TINY["d_model"]) and np.isfinite(matrix).all()
    selection = read(home, "SELECT * FROM behaviour_k_selection ORDER BY k")
    assert selection["k"].tolist() == list(range(2, TINY["k_max"] + 1))
    chosen = int(selection.loc[selection["chosen"], "k"].item())
    assert segments_table["segment"].nunique() == chosen
    items = read(home, "SELECT * FROM segment_representative_items")
    assert set(items["segment"]) <= set(range(chosen))
    per_category = items.groupby(["segment", "category"]).size()
    assert per_category.max() <= int(np.ceil(20 * 0.3))  # the default cap per category
    assert items.groupby("segment")["customers"].apply(
        lambda c: c.is_monotonic_decreasing).all()


def test_scores_cover_every_task_against_baselines(unicon_run) -> None:
    table = read(unicon_run.home, "SELECT * FROM method_scores_unicon")
    tasks = table.groupby("task")["method"].apply(set).to_dict()
    assert tasks["next_item"] == {"unicon", "popularity"}
    # model_embedding and nmf score themselves on this truth in their own assets
    assert tasks["recovery"] == {"unicon", "bag_of_categories"}
    assert (table.loc[table["task"] == "recovery", "slice"] == "behaviour_segments").all()
    assert {"unicon", "bag_of_categories", "model_embedding"} <= tasks["behaviour_segments"]
    assert tasks["segment_recommendation"] == {"unicon", "unicon_segment_backfill"}
    assert tasks["lookalike"] == {"unicon", "random", "heuristic_rule_progress",
                                  "logistic_bag_of_items"}
    overall = table[table["slice"] == "all"]
    assert overall["value"].notna().all()
    bounded = table[table["metric"] != "ari"]["value"].dropna()  # ARI can be negative
    assert bounded.between(0, 1).all()
    slices = set(table.loc[table["task"] == "segment_recommendation", "slice"])
    assert slices == {"all", "few_events"}


def test_lookalike_audience_is_non_core_customers_above_tau(unicon_run) -> None:
    home = unicon_run.home
    details = metadata(unicon_run.result, "lookalike_audience")
    audience = read(home, "SELECT * FROM lookalike_audience ORDER BY rank")
    assert list(audience.columns) == ["customer_id", "score", "rank"]
    labels = read(home, "SELECT customer_id, core FROM lookalike_labels")
    core = set(labels.loc[labels["core"], "customer_id"])
    assert core and not (set(audience["customer_id"]) & core)
    assert (audience["score"] > details["tau"]).all()
    assert audience["score"].is_monotonic_decreasing
    assert audience["rank"].tolist() == list(range(1, len(audience) + 1))
    assert "price >= 50" in details["rule"]
    assert (home / "figures" / "unicon_lookalike.png").exists()


def test_models_and_runs_are_in_mlflow(unicon_run) -> None:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{unicon_run.home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("unicon")
    runs = asset_runs(client, experiment)
    assert [r.info.run_name for r in runs] == ["next_item"]
    history = client.get_metric_history(runs[0].info.run_id, "train_loss")
    assert len(history) >= 1 and [m.step for m in history] == sorted(m.step for m in history)
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert {m.name for m in models} == {"next_item_model"}
    mlflow.set_tracking_uri(f"sqlite:///{unicon_run.home / 'mlflow.db'}")
    network = mlflow.pytorch.load_model(models[0].model_uri)
    assert sum(p.numel() for p in network.parameters()) > 0
    segments_experiment = client.get_experiment_by_name("unicon_segments")
    k_runs = asset_runs(client, segments_experiment)
    assert sorted(int(r.data.params["k"]) for r in k_runs) == list(range(2, TINY["k_max"] + 1))
    assert sum(r.data.tags["chosen"] == "True" for r in k_runs) == 1
    lookalike = client.get_experiment_by_name("unicon_lookalike")
    assert {m.name for m in client.search_logged_models(
        experiment_ids=[lookalike.experiment_id])} == {"lookalike_classifier"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(rule_filter="price < 0", rule_min_count=1), r"price < 0\) matches no customer"),
        (dict(rule_filter="true", rule_min_count=1), r"where true\) matches every customer"),
        (dict(rule_filter="no_such_column = 1"), r"names unknown columns \[.no_such_column.\]"),
    ],
)
def test_a_degenerate_business_rule_fails_the_lookalike_asset_by_name(
    unicon_run, tmp_path, monkeypatch, settings, message
) -> None:
    home = copy_state(unicon_run, tmp_path)
    result = materialize(home, monkeypatch, selection=["lookalike_audience"], **settings)
    assert not result.success
    assert re.search(message, failures(result)["lookalike_audience"]), failures(result)


def _edit(home: Path, sql: str) -> None:
    store = DuckDBStore(path=str(home / "segmentation.duckdb"))
    with store.connect() as con:
        con.execute(sql)


def test_some_missing_timestamps_fail_the_sequences_naming_the_column(
    unicon_run, tmp_path, monkeypatch
) -> None:
    home = copy_state(unicon_run, tmp_path)
    _edit(home, "UPDATE raw_interactions SET \"timestamp\" = NULL WHERE rowid % 7 = 0")
    result = materialize(home, monkeypatch, selection=["customer_sequences"])
    assert "raw_interactions.timestamp is missing" in failures(result)["customer_sequences"]


def test_without_timestamps_sequences_follow_file_order_and_lookalike_refuses(
    unicon_run, tmp_path, monkeypatch
) -> None:
    home = copy_state(unicon_run, tmp_path)
    _edit(home, "UPDATE raw_interactions SET \"timestamp\" = NULL")
    result = materialize(home, monkeypatch,
                         selection=["customer_sequences", "lookalike_audience"])
    assert metadata(result, "customer_sequences")["order"].startswith("file order")
    raw = read(home, "SELECT * FROM raw_interactions ORDER BY rowid")
    sql = read(home, "SELECT customer_id, position, item_id FROM customer_sequences")
    python = order_events(raw, max_events=TINY["max_events"])
    merged = sql.merge(python, on=["customer_id", "position"], suffixes=("", "_py"))
    assert len(merged) == len(sql) and (merged["item_id"] == merged["item_id_py"]).all()
    assert "raw_interactions.timestamp is empty" in failures(result)["lookalike_audience"]


def test_customers_with_one_event_are_embedded_and_without_events_reported(
    unicon_run, tmp_path, monkeypatch
) -> None:
    home = copy_state(unicon_run, tmp_path)
    first = read(home, "SELECT min(customer_id) AS c FROM raw_interactions")["c"][0]
    _edit(home, f"DELETE FROM raw_interactions WHERE customer_id = '{first}' AND rowid NOT IN "
                f"(SELECT min(rowid) FROM raw_interactions WHERE customer_id = '{first}')")
    _edit(home, "INSERT INTO raw_customers (customer_id, age, gender, region) "
                "VALUES ('ghost', 30, 'F', 'north')")
    result = materialize(home, monkeypatch, selection=[
        "customer_sequences", "unicon_model", "consumer_embeddings"])
    assert result.success, failures(result)
    assert metadata(result, "customer_sequences")["customers_with_one_event"] >= 1
    assert metadata(result, "customer_sequences")["customers_without_events"] == 1
    assert metadata(result, "consumer_embeddings")["customers_without_events"] == 1
    assert metadata(result, "consumer_embeddings")["nan_embeddings"] == 0
    embedded = read(home, "SELECT customer_id, n_events FROM consumer_embeddings")
    assert "ghost" not in set(embedded["customer_id"])
    assert embedded.set_index("customer_id").loc[first, "n_events"] == 1
