"""The NMF co-segmentation assets on the synthetic default, and the cold-start case study
assets on the real MovieLens-100K files (skipped when they are absent)."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import failure_messages, isolate_environment, read_table

from assets.cold_start import MULTI_GENRE_TASK, cold_start_evaluation, score_table
from assets.comparison import model_comparison
from assets.ingest import raw_tables
from segmentation_dagster.config import build_resources
from segmentation_dagster.resources import DataSource
from segmentation_dagster.scores import SCORE_COLUMNS
from segmentation_dagster.settings import ColdStartSettings

MOVIELENS = Path(
    os.environ.get(
        "SEGMENTATION_MOVIELENS_DIR",
        Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k",
    )
)



def asset_runs(client: mlflow.MlflowClient, experiment) -> list:
    """The experiment's runs logged by assets, without the Dagster runs' parent runs."""
    return [run for run in client.search_runs([experiment.experiment_id])
            if run.data.tags.get("dagster.parent") != "true"]

def test_nmf_tables_cover_every_customer_and_product(good_run) -> None:
    counts = read_table(
        good_run.home,
        "SELECT (SELECT count(DISTINCT customer_id) FROM purchase_counts) AS buyers, "
        "(SELECT count(DISTINCT item_id) FROM purchase_counts) AS products, "
        "(SELECT count(*) FROM customer_nmf_scores) AS customer_rows, "
        "(SELECT count(*) FROM product_nmf_scores) AS product_rows, "
        "(SELECT count(*) FROM product_segments) AS segment_rows",
    ).iloc[0]
    assert counts["customer_rows"] == counts["buyers"]
    assert counts["product_rows"] == counts["products"] == counts["segment_rows"]


def test_nmf_rank_is_chosen_once_and_used(good_run) -> None:
    sweep = read_table(good_run.home, "SELECT k, chosen FROM nmf_rank_selection ORDER BY k")
    assert sweep["chosen"].sum() == 1
    chosen = int(sweep.loc[sweep["chosen"], "k"].item())
    scores = read_table(good_run.home, "SELECT * FROM customer_nmf_scores")
    assert [c for c in scores.columns if c.startswith("basis_")] == [
        f"basis_{b}" for b in range(chosen)
    ]
    assert (scores[[f"basis_{b}" for b in range(chosen)]].to_numpy() >= 0).all()
    bundles = read_table(good_run.home, "SELECT basis, rank FROM segment_bundles")
    assert set(bundles["basis"]) <= set(range(chosen))
    assert bundles.groupby("basis")["rank"].max().le(10).all()

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{good_run.home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("nmf_rank")
    runs = asset_runs(client, experiment)
    assert sorted(int(r.data.params["k"]) for r in runs) == sweep["k"].tolist()
    assert [int(r.data.params["k"]) for r in runs if r.data.tags["chosen"] == "True"] == [chosen]


def test_recommendations_are_scored_against_popularity(good_run) -> None:
    rows = read_table(
        good_run.home,
        "SELECT method, metric, value FROM model_comparison WHERE task = 'recommendation'",
    )
    assert set(rows["method"]) == {"nmf", "popularity", "segment_popularity_model_embedding"}
    assert set(rows["metric"]) == {"recall@10", "ndcg@10"}
    assert rows["value"].between(0, 1).all()
    recommended = read_table(
        good_run.home,
        "SELECT r.customer_id, r.item_id FROM segment_recommendations r "
        "JOIN purchase_counts p USING (customer_id, item_id)",
    )
    assert recommended.empty, "a customer was recommended a product they already have"


def test_nmf_joins_the_recovery_comparison(good_run) -> None:
    rows = read_table(
        good_run.home,
        "SELECT metric, value FROM model_comparison WHERE method = 'nmf' AND task = 'recovery'",
    )
    assert set(rows["metric"]) == {"accuracy", "ari"}
    assert np.isfinite(rows["value"]).all()


def test_nmf_recovers_what_customers_buy(good_run) -> None:
    """The synthetic source plants behaviour segments (which categories customers buy)
    independently of the like-rate segments: NMF sees items and should find the former,
    the alpha-embedding sees only like-rates and should not."""
    rows = read_table(
        good_run.home,
        "SELECT method, value FROM model_comparison WHERE task = 'recovery' "
        "AND slice = 'behaviour_segments' AND metric = 'ari'",
    ).set_index("method")["value"]
    print(rows.to_dict())
    assert rows["nmf"] > 0.5
    assert rows["nmf"] > rows["model_embedding"] + 0.3


def test_cold_start_summary_becomes_score_rows() -> None:
    """The core's tidy summary, mapped to the comparison schema by the shell."""
    summary = pd.DataFrame({
        "genre": ["X", "X", "Y", "Y"], "method": ["population", "model_embedding"] * 2,
        "n_segments": [1, 2, 1, 3], "accuracy": [0.4, 0.7, 0.5, 0.8],
        "validation_accuracy": [0.4, 0.6, 0.5, 0.7], "seconds": [0.1, 0.2, 0.3, 0.4],
    })
    rows = score_table(summary.iloc[:2], "synthetic", add_mean=True)
    assert list(rows.columns) == SCORE_COLUMNS == [
        "dataset", "task", "slice", "method", "metric", "value", "n_segments", "seconds"]
    assert set(rows["slice"]) == {"X", "all"}
    assert (rows["task"] == "cold_start").all()
    mean = rows.set_index(["slice", "method"]).loc[("all", "population"), "value"]
    assert mean == pytest.approx(0.4)
    # the mean over two genres, with summed seconds and no K
    rows = score_table(summary, "synthetic", add_mean=True).set_index(["slice", "method"])
    assert rows.loc[("all", "model_embedding"), "value"] == pytest.approx(0.75)
    assert rows.loc[("all", "model_embedding"), "seconds"] == pytest.approx(0.6)
    assert pd.isna(rows.loc[("all", "model_embedding"), "n_segments"])
    assert rows.loc[("Y", "model_embedding"), "n_segments"] == 3
    # a summary with its own 'all' slice (the multi-genre run) gets no extra mean
    multi = summary.assign(genre=["all", "all", "X", "X"])
    rows = score_table(multi, "synthetic", task=MULTI_GENRE_TASK, add_mean=True)
    assert (rows["slice"] == "all").sum() == 2  # one per method, not an extra mean
    assert (rows["task"] == MULTI_GENRE_TASK).all()
    assert len(score_table(summary.iloc[:0], "synthetic")) == 0


def test_cold_start_is_skipped_without_genres(good_run) -> None:
    assert read_table(good_run.home, "SELECT count(*) AS n FROM cold_start_scores")["n"][0] == 0


@pytest.mark.skipif(not (MOVIELENS / "u.data").exists(), reason="MovieLens-100K is absent")
def test_cold_start_on_movielens(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as patch:
        isolate_environment(patch, tmp_path)
        source = DataSource(kind="movielens-100k", movielens_dir=str(MOVIELENS))
        resources = build_resources(
            str(tmp_path), source=source,
            cold_start_settings=ColdStartSettings(genres=["Action", "Comedy"], ks=[2, 3]),
        )
        result = dg.materialize([raw_tables, cold_start_evaluation, model_comparison],
                                resources=resources, raise_on_error=False)
    assert result.success, failure_messages(result)
    scores = read_table(tmp_path, "SELECT * FROM cold_start_scores")
    cold = scores[scores["task"] == "cold_start"]
    assert set(cold["slice"]) == {"Action", "Comedy", "all"}
    assert {"population", "model_embedding", "latent_class", "empirical_bayes",
            "demographic", "kmedoids", "spectral", "nmf"} <= set(cold["method"])
    by = cold.set_index(["slice", "method"])["value"]
    for genre in ("Action", "Comedy"):
        # the paper's central claim on new movies, with a wide margin on ml-100k
        assert by[(genre, "model_embedding")] > 1.4 * by[(genre, "population")]
    assert cold["n_segments"].notna().all()
    segments = read_table(tmp_path, "SELECT * FROM cold_start_segments")
    assert set(segments["genre"]) == {"Action", "Comedy"}

    # MLflow shows what DuckDB holds: one comparison run per method, keyed by task and slice
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("model_comparison")
    runs = {run.data.tags["method"]: run for run in asset_runs(client, experiment)
            if run.info.run_name != "summary"}
    assert set(runs) == set(scores["method"])
    for row in scores.itertuples():
        metrics = runs[row.method].data.metrics
        assert metrics[f"{row.task}.{row.slice}.{row.metric}"] == pytest.approx(row.value)
    # and every (genre, method) with a K has its sweep in the cold_start experiment
    sweep = read_table(tmp_path, "SELECT DISTINCT genre, method FROM cold_start_k_sweep")
    experiment = client.get_experiment_by_name("cold_start")
    names = {run.info.run_name for run in asset_runs(client, experiment)}
    assert names == {f"{g}/{m}" for g, m in zip(sweep["genre"], sweep["method"], strict=True)}
