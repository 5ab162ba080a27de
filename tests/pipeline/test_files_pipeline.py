"""The whole job on the user's files, where the optional tables are left out: in a fresh
state folder, and in a copy of the session's good (synthetic) run, as a user switching
SEGMENTATION_SOURCE to their own files would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pipeline_helpers import (
    failure_messages,
    isolate_environment,
    materialized_keys,
    read_table,
    run_segmentation_job,
)

from segmentation_dagster.config import build_resources
from segmentation_dagster.core.sequence.synthetic import make_behaviour_dataset
from segmentation_dagster.resources import DataSource


def files_run(folder: Path, with_items: bool, previous_state: Path | None = None):
    home = folder / "state"
    if previous_state is not None:
        shutil.copytree(previous_state, home)
    data = make_behaviour_dataset(200, 50, 3, seed=5)
    interactions = folder / "interactions.csv"
    data.interactions.to_csv(interactions, index=False)
    items = ""
    if with_items:
        items = str(folder / "items.csv")
        data.items.to_csv(items, index=False)
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, home)
        source = DataSource(kind="files", interactions_path=str(interactions), items_path=items)
        result = run_segmentation_job(build_resources(str(home), source=source))
    return home, result


def test_files_without_customers_segment_every_customer(tmp_path: Path) -> None:
    """Interactions and items, no customers file: no demographics to segment by."""
    home, result = files_run(tmp_path, with_items=True)
    assert result.success, failure_messages(result)
    assert {"customer_segments", "model_comparison"} <= materialized_keys(result)
    segments = read_table(home, "SELECT customer_id, run_id FROM customer_segments")
    edges = read_table(home, "SELECT DISTINCT customer_id FROM preference_edges")
    assert set(segments["customer_id"]) == set(edges["customer_id"])
    assert segments["customer_id"].is_unique and (segments["run_id"] == result.run_id).all()
    assert read_table(home, "SELECT dataset, label_rule FROM source_info").iloc[0].tolist() \
        == ["files", "positive"]
    # no planted truth in the user's files: no recovery rows, whatever the previous source
    comparison = read_table(home, "SELECT * FROM model_comparison")
    assert "recovery" not in set(comparison["task"])
    assert set(comparison["dataset"]) == {"files"}


def test_a_skipped_method_leaves_no_stale_scores(good_run, tmp_path: Path) -> None:
    home, result = files_run(tmp_path, with_items=True, previous_state=good_run.home)
    assert result.success, failure_messages(result)
    comparison = read_table(home, "SELECT task, method FROM model_comparison")
    demographic = comparison[comparison["method"] == "demographic"]
    assert demographic.empty, demographic.groupby("task").size().to_dict()


def test_files_with_interactions_only_run_end_to_end(tmp_path: Path) -> None:
    home, result = files_run(tmp_path, with_items=False)
    assert result.success, failure_messages(result)
    items = read_table(home, "SELECT * FROM raw_items")
    assert items["category"].isna().all()
    comparison = read_table(home, "SELECT DISTINCT task FROM model_comparison")
    assert "segment_classifier" in set(comparison["task"])
    # without item categories there is no bag of categories to cluster: skipped, and said
    unicon = read_table(home, "SELECT DISTINCT method FROM method_scores_unicon")
    assert "bag_of_categories" not in set(unicon["method"])
    evaluation = result.asset_materializations_for_node("unicon_evaluation")[0]
    assert "no category" in evaluation.metadata["bag_of_categories"].value
    # nor attributes for eq. (2): its scores are skipped, never written as NaN
    assert "no attributes" in evaluation.metadata["attribute_similarity"].value
    scores = read_table(home, "SELECT * FROM method_scores_unicon")
    assert "behaviour_segments" not in set(scores["task"])
    assert scores["value"].notna().all()
