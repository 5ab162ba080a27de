"""Purchase-only logs (every value the same positive number) through the real pipeline:
detected by the files source, accepted by the input checks, segmented with the MNL
choice model and scored by ranking held-out purchases."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import (
    RAW_ASSETS,
    check_evaluations,
    failure_messages,
    isolate_environment,
    materialized_keys,
    read_table,
    run_segmentation_job,
)
from sklearn.metrics import adjusted_rand_score

from segmentation_dagster.config import build_resources
from segmentation_dagster.resources import DataSource
from segmentation_dagster.sources import load_source

# the segmentation, the ranking methods, one method that cannot rank, the comparison
SELECTED = (*RAW_ASSETS, "preference_edges", "edge_split", "edge_sample", "k_selection",
            "pooled_model", "customer_embeddings", "customer_segments", "segment_profiles",
            "method_model_embedding", "method_item_popularity", "method_nmf",
            "method_population", "method_latent_class_items", "model_comparison")


def planted_purchases(n_customers: int = 300, block_size: int = 30, purchases: int = 15,
                      in_block: float = 0.9, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    """(interactions, items, truth) of a shop whose 3 segments put ``in_block`` of their
    choice mass on their own item block (also the item's category); every value is 1."""
    rng = np.random.default_rng(seed)
    n_items = 3 * block_size
    segments = rng.choice(3, size=n_customers, p=(0.45, 0.35, 0.2))
    blocks = np.repeat(np.arange(3), block_size)
    # Zipf-like popularity within each block, so that global popularity is a fair baseline
    popularity = rng.permutation(1.0 / (1.0 + np.arange(n_items)) ** 0.3)
    popularity = popularity / np.bincount(blocks, popularity)[blocks]
    weight = popularity * np.where(blocks[None, :] == segments[:, None], in_block,
                                   (1 - in_block) / 2)
    keys = np.log(weight) + rng.gumbel(size=weight.shape)  # distinct draws (small data)
    cols = np.argsort(-keys, axis=1)[:, :purchases].ravel()
    rows = np.repeat(np.arange(n_customers), purchases)
    interactions = pd.DataFrame({
        "customer_id": [f"c{i:04d}" for i in rows],
        "item_id": [f"i{j:03d}" for j in cols],
        "value": 1,
        "event": "purchase",
        "timestamp": 1_700_000_000 + np.arange(len(rows)) * 60,
    })
    items = pd.DataFrame({"item_id": [f"i{j:03d}" for j in range(n_items)],
                          "category": [f"block{b}" for b in blocks]})
    truth = pd.DataFrame({"customer_id": [f"c{i:04d}" for i in range(n_customers)],
                          "segment": segments})
    return interactions, items, truth


def write(frame: pd.DataFrame, path: Path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


# ---- the source and the input check ------------------------------------------------


@pytest.mark.parametrize(("value", "rule"), [(1, "purchase"), (5.0, "purchase"),
                                             (0.0, "positive")])
def test_a_constant_positive_value_is_a_purchase_log(tmp_path: Path, value, rule) -> None:
    interactions = planted_purchases(20, 5, 3)[0].assign(value=value)
    path = write(interactions, tmp_path / "i.csv")
    assert load_source("files", interactions_path=path).label_rule == rule


def test_the_purchase_rule_can_be_forced(tmp_path: Path) -> None:
    interactions = planted_purchases(20, 5, 3)[0]
    interactions["value"] = np.arange(len(interactions)) % 3 + 1  # e.g. quantities
    path = write(interactions, tmp_path / "i.csv")
    assert load_source("files", interactions_path=path).label_rule == "own_mean"
    assert load_source("files", interactions_path=path, label_rule="purchase").label_rule \
        == "purchase"


def test_a_forced_purchase_log_with_non_positive_values_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "state"
    isolate_environment(monkeypatch, home)
    interactions = planted_purchases(30, 5, 4)[0]
    interactions.loc[[2, 7], "value"] = 0
    source = DataSource(kind="files", label_rule="purchase",
                        interactions_path=write(interactions, tmp_path / "i.csv"))
    result = run_segmentation_job(build_resources(str(home), source=source),
                                  asset_selection=[dg.AssetKey(k) for k in RAW_ASSETS])
    check = check_evaluations(result)[("raw_interactions", "raw_interactions_expectations")]
    assert not check.passed
    assert "expect_column_values_to_be_between(value)" in check.description
    assert "'unexpected_count': 2" in check.description


# ---- the whole segmentation ------------------------------------------------------------


@pytest.fixture(scope="module")
def purchase_run(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("purchase_only")
    interactions, items, truth = planted_purchases()
    home = folder / "state"
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, home)
        source = DataSource(kind="files",
                            interactions_path=write(interactions, folder / "interactions.csv"),
                            items_path=write(items, folder / "items.csv"))
        result = run_segmentation_job(build_resources(str(home), source=source),
                                      asset_selection=[dg.AssetKey(k) for k in SELECTED])
    return home, result, truth


def test_a_purchase_only_log_runs_end_to_end(purchase_run) -> None:
    home, result, _ = purchase_run
    assert result.success, failure_messages(result)
    assert materialized_keys(result) == set(SELECTED)
    assert all(data.passed for data in check_evaluations(result).values())
    assert read_table(home, "SELECT label_rule FROM source_info").iloc[0, 0] == "purchase"
    labels = read_table(home, "SELECT DISTINCT label FROM preference_edges")
    assert labels["label"].tolist() == [1]


def test_the_choice_model_is_chosen_and_finds_the_planted_segments(purchase_run) -> None:
    home, _, truth = purchase_run
    table = read_table(home, "SELECT * FROM k_selection")
    assert set(table["pooled"]) <= {"mnl", "mnl:category"}
    assert table["chosen"].sum() == 1
    assert table["scale"].str.contains("held-out purchases").all()
    chosen = read_table(home, "SELECT * FROM chosen_segmentation").iloc[0]
    assert chosen["segment_model"] == "choice" and chosen["pooled"] in ("mnl", "mnl:category")
    pooled = read_table(home, "SELECT * FROM pooled_model_items")
    assert pooled["p_like"].sum() == pytest.approx(1.0)  # choice probabilities pi_j
    segments = read_table(home, "SELECT customer_id, segment FROM customer_segments")
    merged = segments.merge(truth, on="customer_id", suffixes=("", "_planted"))
    assert adjusted_rand_score(merged["segment_planted"], merged["segment"]) > 0.8
    assert read_table(home, "SELECT count(*) FROM customer_embeddings").iloc[0, 0] == len(truth)


def test_methods_are_scored_by_ranking_held_out_purchases(purchase_run) -> None:
    home, result, _ = purchase_run
    comparison = read_table(home, "SELECT * FROM model_comparison")
    assert set(comparison["task"]) == {"purchase_ranking"}  # no AUC on all-+1 labels
    ranking = comparison.set_index(["method", "metric"])["value"]
    assert {"model_embedding", "item_popularity", "nmf"} <= set(comparison["method"])
    assert set(comparison["metric"]) == {"recall@10", "ndcg@10"}
    assert ranking["model_embedding", "recall@10"] > ranking["item_popularity", "recall@10"]
    assert ranking["model_embedding", "ndcg@10"] > ranking["item_popularity", "ndcg@10"]
    # methods that cannot rank are skipped, with the reason, and record nothing
    for method in ("population", "latent_class_items"):
        assert method not in set(comparison["method"])
        metadata = result.asset_materializations_for_node(f"method_{method}")[0].metadata
        assert "purchase-only" in metadata["skipped"].value


def test_segment_profiles_compare_purchase_shares(purchase_run) -> None:
    home, _, _ = purchase_run
    profiles = read_table(home, "SELECT * FROM segment_profiles")
    segments = read_table(home, "SELECT DISTINCT segment FROM customer_segments")
    assert len(profiles) == len(segments)
    assert profiles["like_rate"].isna().all()  # no like-rate in a purchase log
    assert len(read_table(home, "SELECT * FROM segment_profile_items"))
