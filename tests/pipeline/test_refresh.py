"""Refreshes keep segment identity; new customers are placed without a refit.

Every test starts from a copy of the session's good run (conftest.good_run), whose
published release is the "previous run", and materializes real assets on it:

- an unchanged refresh (the segmentation and publishing assets, run again): every id
  kept, ARI 1, nothing moved, the stability tables published;
- a refresh after a planted change (some customers' likes and dislikes swapped): the
  moved customers are reported, in segment_stability and segment_transitions;
- a run that only ingests and assigns, after new customers were appended and a few
  customers got more edges: they are assigned in new_customer_segments under the stored
  models, exactly as the fitted model's ``assign`` places them, and the published fitted
  segments do not change.
"""

from __future__ import annotations

import dataclasses
import shutil

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import (
    SMALL_SYNTHETIC,
    check_evaluations,
    failure_messages,
    isolate_environment,
    materialized_keys,
    read_published,
    read_table,
)

from assets.common import chosen_method, load_split_graphs
from segmentation_dagster.config import PAPER_SETTINGS, build_resources
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.definitions import defs
from segmentation_dagster.resources import DataSource, DuckDBStore
from segmentation_dagster.settings import MethodSettings
from segmentation_dagster.sources import SourceTables

# the slow side studies play no part in a refresh of the segments
SLOW_GROUPS = ("unicon", "nmf", "cold_start")
RAW = ("raw_interactions", "raw_items", "raw_customers", "ground_truth_segments")
REFIT = (*RAW, "preference_edges", "edge_split", "edge_sample", "k_selection", "pooled_model",
         "customer_embeddings", "customer_segments", "segment_stability")
ASSIGN_ONLY = (*RAW, "preference_edges", "new_customer_segments")
STABILITY_CHECK = ("segment_stability", "segmentation_is_stable")


class PlantedSource(DataSource):
    """The synthetic source with planted changes: ``swap_customers`` get every like
    turned into a dislike and back; ``copy_customers`` reappear as new customers
    ``new-<id>`` with the same interactions; ``grow_customers`` get ``grow_by`` more
    interactions with items they had not touched."""

    swap_customers: list[str] = []
    copy_customers: list[str] = []
    grow_customers: list[str] = []
    grow_by: int = 4

    def load(self) -> SourceTables:
        tables = super().load()
        interactions = tables.interactions.copy()
        swap = interactions["customer_id"].isin(self.swap_customers)
        interactions.loc[swap, "value"] = 1.0 - interactions.loc[swap, "value"]
        copies = interactions[interactions["customer_id"].isin(self.copy_customers)].assign(
            customer_id=lambda d: "new-" + d["customer_id"])
        grown = []
        items = tables.items["item_id"].to_numpy()
        later = interactions["timestamp"].max() + pd.Timedelta(days=1)
        for customer in self.grow_customers:  # a handful of customers, in a test
            seen = set(interactions.loc[interactions["customer_id"] == customer, "item_id"])
            fresh = [item for item in items if item not in seen][: self.grow_by]
            grown.append(pd.DataFrame({"customer_id": customer, "item_id": fresh, "value": 1.0,
                                       "event": "view", "timestamp": later}))
        interactions = pd.concat([interactions, copies, *grown], ignore_index=True)
        customers = tables.customers[tables.customers["customer_id"].isin(self.copy_customers)]
        customers = pd.concat([tables.customers,
                               customers.assign(customer_id="new-" + customers["customer_id"])],
                              ignore_index=True)
        return dataclasses.replace(tables, interactions=interactions, customers=customers)


def run_assets(resources: dict, names: tuple[str, ...] | None = None) -> dg.ExecuteInProcessResult:
    """Materialize the named assets (default: all but the slow side studies) with their
    checks, on the code location's own definitions bound to ``resources``."""
    definitions = dg.Definitions(assets=defs.assets, asset_checks=defs.asset_checks,
                                 resources=resources, executor=dg.in_process_executor)
    selection = (dg.AssetSelection.all() - dg.AssetSelection.groups(*SLOW_GROUPS)
                 if names is None else dg.AssetSelection.assets(*names))
    keys = list(selection.resolve(definitions.resolve_asset_graph()))
    job = definitions.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(asset_selection=keys, raise_on_error=False)


def copy_state(good_run, tmp_path_factory, name: str):
    home = tmp_path_factory.mktemp(name) / "state"
    shutil.copytree(good_run.home, home, symlinks=True)
    return home


def refreshed(good_run, tmp_path_factory, name: str, source: DataSource,
              names: tuple[str, ...] | None = None, **overrides):
    home = copy_state(good_run, tmp_path_factory, name)
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, home)
        result = run_assets(build_resources(str(home), source=source, **overrides), names)
    assert result.success, failure_messages(result)
    return home, result


def segments_of(frame: pd.DataFrame) -> pd.Series:
    return frame.set_index("customer_id")["segment"].sort_index()


def fitted_model(good_run):
    """The good run's segmentation refitted from its own working tables (the same data,
    spec and seed, so the same fit), and its label -> stable id map."""
    store = DuckDBStore(path=str(good_run.home / "segmentation.duckdb"))
    split = load_split_graphs(store)
    method = chosen_method(store, split.train, good_run.resources["random_seed"].value)
    method.fit(split.train)
    ids = read_table(good_run.home, "SELECT label, segment FROM segment_matching")
    stable = ids.set_index("label")["segment"].sort_index().to_numpy()
    # the refit is the run's fit: it reproduces every stored segment
    stored = segments_of(read_table(good_run.home, "SELECT * FROM customer_segments"))
    assert (stable[method.labels_] == stored.reindex(split.train.customer_ids).to_numpy()).all()
    return method, stable


# --------------------------------------------------------------------------- first run


def test_the_first_run_says_so_and_numbers_by_like_rate(good_run) -> None:
    stability = read_published(good_run.home, "SELECT * FROM segment_stability")
    assert len(stability) == 1
    row = stability.iloc[0]
    assert row["run_id"] == good_run.result.run_id
    assert bool(row["first_run"]) and pd.isna(row["previous_run_id"]) and pd.isna(row["ari"])
    assert row["n_new"] == row["n_customers"] == SMALL_SYNTHETIC["synthetic_customers"]
    matching = read_table(good_run.home, "SELECT * FROM segment_matching ORDER BY label")
    assert (matching["method"] == "new").all()
    assert matching["label"].tolist() == matching["segment"].tolist()  # today's numbering
    moves = read_published(good_run.home, "SELECT * FROM segment_transitions")
    assert moves["from_segment"].isna().all()
    assert moves["customers"].sum() == SMALL_SYNTHETIC["synthetic_customers"]
    evaluation = check_evaluations(good_run.result)[STABILITY_CHECK]
    assert evaluation.passed and "first run" in evaluation.description
    # nothing to assign after a full fit; the stored models are published
    assert read_published(good_run.home, "SELECT count(*) AS n FROM new_customer_segments"
                          )["n"].item() == 0
    centres = read_published(good_run.home, "SELECT * FROM segment_centres")
    assert set(centres["segment"]) == set(
        read_published(good_run.home, "SELECT segment FROM segment_models")["segment"])


# --------------------------------------------------------------------------- unchanged


@pytest.fixture(scope="module")
def unchanged(good_run, tmp_path_factory):
    """The refresh a schedule runs, on the same data: segmentation and publishing again."""
    return refreshed(good_run, tmp_path_factory, "unchanged", DataSource(**SMALL_SYNTHETIC))


def test_an_unchanged_refresh_keeps_every_id_with_ari_1(good_run, unchanged) -> None:
    home, result = unchanged
    before = segments_of(read_published(good_run.home, "SELECT * FROM customer_segments"))
    after = segments_of(read_published(home, "SELECT * FROM customer_segments"))
    assert after.equals(before)
    assert read_published(home, "SELECT DISTINCT run_id FROM customer_segments"
                          )["run_id"].tolist() == [result.run_id]

    row = read_published(home, "SELECT * FROM segment_stability").iloc[0]
    assert row["run_id"] == result.run_id and row["previous_run_id"] == good_run.result.run_id
    assert not row["first_run"]
    assert row["ari"] == pytest.approx(1.0)
    assert row["n_moved"] == row["n_new"] == row["n_left"] == 0
    assert row["moved_share"] == 0 and row["max_share_change"] == pytest.approx(0.0)
    assert row["warnings"] == ""
    matching = read_table(home, "SELECT * FROM segment_matching")
    assert (matching["method"] == "customers").all() and (matching["score"] == 1).all()

    moves = read_published(home, "SELECT * FROM segment_transitions")
    assert (moves["from_segment"] == moves["to_segment"]).all()
    assert moves.set_index("to_segment")["customers"].sort_index().equals(
        before.value_counts().sort_index().rename("customers").rename_axis("to_segment"))
    assert check_evaluations(result)[STABILITY_CHECK].passed
    # models, item rates and exports carry the same stable ids
    models = read_published(home, "SELECT segment, customers FROM segment_models ORDER BY 1")
    assert models["segment"].tolist() == sorted(before.unique())
    exported = pd.read_parquet(home / "published" / "exports" / "customer_segments.parquet")
    assert segments_of(exported).to_dict() == before.to_dict()
    assert (exported["segment_name"] == "segment " + exported["segment"].astype(str)).all()


# --------------------------------------------------------------------------- planted change


@pytest.fixture(scope="module")
def planted(good_run, tmp_path_factory):
    """A refit after the likes and dislikes of 40 customers of the lowest segment were
    swapped (they now like what they disliked)."""
    segments = read_published(good_run.home, "SELECT customer_id, segment FROM "
                                             "customer_segments ORDER BY customer_id")
    swapped = segments.loc[segments["segment"] == 0, "customer_id"].head(40).tolist()
    source = PlantedSource(**SMALL_SYNTHETIC, swap_customers=swapped)
    # at the good run's K: a refit that chose another K would move whole segments, and
    # this scenario is about 40 customers changing their behaviour
    k = int(read_table(good_run.home, "SELECT k FROM chosen_segmentation").iloc[0, 0])
    settings = MethodSettings(**{**PAPER_SETTINGS, "k": k})
    home, result = refreshed(good_run, tmp_path_factory, "planted", source, REFIT,
                             method_settings=settings)
    return home, result, swapped


def test_a_planted_change_reports_the_moved_customers(good_run, planted) -> None:
    home, result, swapped = planted
    before = segments_of(read_published(good_run.home, "SELECT * FROM customer_segments"))
    after = segments_of(read_table(home, "SELECT * FROM customer_segments"))
    moved = before.index[before != after.reindex(before.index)]
    # the swapped customers moved; few others did
    assert len(set(swapped) & set(moved)) >= 0.8 * len(swapped)
    assert len(set(moved) - set(swapped)) <= 0.1 * len(before)

    row = read_table(home, "SELECT * FROM segment_stability").iloc[0]
    assert row["run_id"] == result.run_id and row["previous_run_id"] == good_run.result.run_id
    assert row["n_moved"] == len(moved) and row["n_shared"] == len(before)
    assert row["moved_share"] == pytest.approx(len(moved) / len(before))
    assert row["ari"] < 1.0
    moves = read_table(home, "SELECT * FROM segment_transitions")
    off_diagonal = moves[moves["from_segment"] != moves["to_segment"]]
    assert off_diagonal["customers"].sum() == len(moved)
    # the transitions name where they went: every moved customer is counted there
    pairs = pd.DataFrame({"from_segment": before[moved].to_numpy(),
                          "to_segment": after[moved].to_numpy()}).value_counts()
    counted = off_diagonal.set_index(["from_segment", "to_segment"])["customers"]
    assert pairs.sort_index().to_numpy().tolist() == counted.sort_index().to_numpy().tolist()
    # the check's verdict follows the settings (defaults 0.8 and 0.1) and never blocks
    evaluation = check_evaluations(result)[STABILITY_CHECK]
    drifted = row["ari"] < 0.8 or row["max_share_change"] > 0.1
    assert evaluation.passed == (not drifted)
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert {"customer_segments", "segment_stability"} <= materialized_keys(result)


def test_a_strict_setting_makes_the_check_warn_without_stopping(good_run,
                                                                 tmp_path_factory) -> None:
    """Any movement at all fails a check that demands ARI 1: a WARN, and the run goes on."""
    segments = read_published(good_run.home, "SELECT customer_id, segment FROM "
                                             "customer_segments ORDER BY customer_id")
    swapped = segments.loc[segments["segment"] == 0, "customer_id"].head(40).tolist()
    home = copy_state(good_run, tmp_path_factory, "strict")
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, home)
        from segmentation_dagster.settings import RefreshSettings

        resources = build_resources(
            str(home), source=PlantedSource(**SMALL_SYNTHETIC, swap_customers=swapped),
            refresh_settings=RefreshSettings(min_ari=1.0, max_share_change=0.0))
        result = run_assets(resources, REFIT)
    assert result.success, failure_messages(result)
    evaluation = check_evaluations(result)[STABILITY_CHECK]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "adjusted Rand index" in evaluation.description
    warnings = read_table(home, "SELECT warnings FROM segment_stability")["warnings"].item()
    assert warnings == evaluation.description


# --------------------------------------------------------------------------- new customers


@pytest.fixture(scope="module")
def assigned(good_run, tmp_path_factory):
    """New customers appended (copies of 25 customers under new ids) and 5 customers with
    more edges; then a run of ingest, graph and new_customer_segments only."""
    ids = read_published(good_run.home, "SELECT customer_id FROM customer_segments "
                                        "ORDER BY customer_id")["customer_id"].tolist()
    source = PlantedSource(**SMALL_SYNTHETIC, copy_customers=ids[:25], grow_customers=ids[-5:])
    home, result = refreshed(good_run, tmp_path_factory, "assigned", source, ASSIGN_ONLY)
    return home, result, ids[:25], ids[-5:]


def test_new_customers_are_assigned_without_changing_the_fitted_segments(good_run,
                                                                          assigned) -> None:
    home, result, copied, grown = assigned
    assert materialized_keys(result) == set(ASSIGN_ONLY)
    # the fitted segments users read are the good run's, untouched
    for table in ("customer_segments", "segment_models", "segment_history"):
        pd.testing.assert_frame_equal(
            read_published(home, f"SELECT * FROM {table} ORDER BY ALL"),
            read_published(good_run.home, f"SELECT * FROM {table} ORDER BY ALL"))
    assert read_published(home, "SELECT run_id FROM publish_log")["run_id"].tolist() == [
        result.run_id]
    assert (home / "published").resolve().name == result.run_id

    table = read_published(home, "SELECT * FROM new_customer_segments ORDER BY customer_id")
    expected = sorted([f"new-{c}" for c in copied] + grown)
    assert table["customer_id"].tolist() == expected
    reasons = table.set_index("customer_id")["reason"]
    assert (reasons[[f"new-{c}" for c in copied]] == "new").all()
    assert (reasons[grown] == "grown").all()
    assert (table["run_id"] == result.run_id).all()
    assert (table["fitted_run_id"] == good_run.result.run_id).all()
    assert table["segment"].notna().all() and (table["known_edges"] == table["edges"]).all()
    fitted = segments_of(read_published(good_run.home, "SELECT * FROM customer_segments"))
    growth = table.set_index("customer_id").loc[grown]
    assert (growth["previous_segment"] == fitted[grown]).all()
    assert (growth["edges"] - growth["fitted_edges"] == 4).all()
    assert (table["segment_name"] == "segment " + table["segment"].astype(str)).all()


def test_assignments_equal_the_fitted_models_assign(good_run, assigned) -> None:
    """The stored models place a customer exactly where the fitted estimator's
    ``assign`` does, on the same centres, for the held-back (new) customers."""
    home, _, copied, grown = assigned
    method, stable = fitted_model(good_run)
    table = read_published(home, "SELECT customer_id, segment FROM new_customer_segments")
    edges = read_table(home, "SELECT customer_id, item_id, label FROM preference_edges")
    edges = edges[edges["customer_id"].isin(table["customer_id"])]
    graph = PreferenceGraph.from_edges(edges, item_ids=method.segmenter_.item_ids_)
    expected = pd.Series(stable[method.assign(graph)], index=graph.customer_ids)
    got = table.set_index("customer_id")["segment"]
    assert got.reindex(expected.index).to_numpy().tolist() == expected.to_numpy().tolist()
    # not a trivial agreement: the new customers spread over several segments
    assert expected.nunique() > 1


def test_customers_seen_by_the_fit_are_not_reassigned(good_run, assigned) -> None:
    home, _, copied, grown = assigned
    table = read_published(home, "SELECT customer_id FROM new_customer_segments")
    fitted = read_published(good_run.home, "SELECT customer_id FROM customer_segments")
    unchanged = set(fitted["customer_id"]) - set(grown)
    assert not unchanged & set(table["customer_id"])
    assert np.isin(table["customer_id"], [f"new-{c}" for c in copied] + grown).all()
