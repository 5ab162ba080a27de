"""``python -m segmentation_dagster.score``: a file of interactions assigned to the published
segments from the stored models, without Dagster and without a refit, end to end on a
copy of the session's good run (conftest.good_run); and the stored models against the
estimators' own ``assign`` (folded clusters, purchase logs), without a pipeline run."""

from __future__ import annotations

import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pandas as pd
import pytest
from pipeline_helpers import read_published, read_table

from assets.common import chosen_method, load_split_graphs
from assets.segments import segment_centres
from segmentation_dagster import score
from segmentation_dagster.core.choice import SegmentedPurchaseModel
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.selection import SegmentedModelEmbedding
from segmentation_dagster.core.synthetic import make_segmented_graph
from segmentation_dagster.resources import DuckDBStore


@pytest.fixture(scope="module")
def state(good_run, tmp_path_factory):
    home = tmp_path_factory.mktemp("score") / "state"
    shutil.copytree(good_run.home, home, symlinks=True)
    return home


@pytest.fixture(scope="module")
def interactions(good_run, tmp_path_factory):
    """30 customers of the good run under new ids (their raw interactions), and one
    customer whose only items the fit never saw, as a CSV file."""
    raw = read_table(good_run.home, "SELECT * FROM raw_interactions ORDER BY customer_id")
    chosen = sorted(raw["customer_id"].unique())[:30]
    frame = raw[raw["customer_id"].isin(chosen)].assign(
        customer_id=lambda d: "file-" + d["customer_id"])
    stranger = pd.DataFrame({"customer_id": "stranger", "item_id": ["never-1", "never-2"],
                             "value": [1.0, 0.0], "event": "view",
                             "timestamp": pd.Timestamp("2025-07-01")})
    frame = pd.concat([frame, stranger], ignore_index=True)
    # Unix seconds, as many logs write them: the command reads them as the pipeline does
    frame["timestamp"] = frame["timestamp"].astype("int64") // 10**9
    path = tmp_path_factory.mktemp("score_input") / "interactions.csv"
    frame.to_csv(path, index=False)
    return path, frame


def expected_segments(good_run, frame: pd.DataFrame) -> pd.Series:
    """Where the fitted estimator's own ``assign`` puts the file's customers (labels by
    the run's rule, here ``positive``), as stable ids."""
    store = DuckDBStore(path=str(good_run.home / "segmentation.duckdb"))
    split = load_split_graphs(store)
    method = chosen_method(store, split.train, good_run.resources["random_seed"].value)
    method.fit(split.train)
    stable = read_table(good_run.home, "SELECT label, segment FROM segment_matching ORDER BY "
                                       "label")["segment"].to_numpy()
    known = frame[frame["item_id"].isin(method.segmenter_.item_ids_)]
    # a repeated (customer, item): the latest wins, ties the larger value (from_edges
    # keeps the last row)
    edges = known.sort_values(["timestamp", "value"], kind="stable").assign(
        label=lambda d: (d["value"] > 0).astype(int) * 2 - 1)
    graph = PreferenceGraph.from_edges(edges, item_ids=method.segmenter_.item_ids_)
    return pd.Series(stable[method.assign(graph)], index=graph.customer_ids)


def test_the_command_scores_a_file_end_to_end(good_run, state, interactions, tmp_path) -> None:
    path, frame = interactions
    out = tmp_path / "assigned.parquet"
    completed = subprocess.run(
        [sys.executable, "-m", "segmentation_dagster.score", str(path), "--out", str(out),
         "--home", str(state)],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"fitted run {good_run.result.run_id}" in completed.stdout
    assert "scored 31 customers" in completed.stdout
    assert "without any item the fit knew: 1" in completed.stdout
    assert str(out) in completed.stdout

    assigned = pd.read_parquet(out)
    assert list(assigned.columns) == [*score.ASSIGNMENT_COLUMNS, "fitted_run_id", "assigned_at"]
    assert len(assigned) == 31 and assigned["customer_id"].is_unique
    assert (assigned["fitted_run_id"] == good_run.result.run_id).all()
    by_id = assigned.set_index("customer_id")
    assert pd.isna(by_id.loc["stranger", "segment"])
    assert by_id.loc["stranger", "known_edges"] == 0 and by_id.loc["stranger", "edges"] == 2

    expected = expected_segments(good_run, frame)
    assert by_id["segment"].reindex(expected.index).astype(int).tolist() == expected.tolist()
    assert (by_id.loc[expected.index, "segment_name"]
            == "segment " + expected.astype(str)).all()
    # the published state is read, never written
    assert read_published(state, "SELECT run_id FROM publish_log")["run_id"].tolist() == [
        good_run.result.run_id]


def test_the_command_writes_csv_and_matches_the_parquet(state, interactions, tmp_path,
                                                        capsys) -> None:
    path, _ = interactions
    csv, parquet = tmp_path / "assigned.csv", tmp_path / "assigned.parquet"
    assert score.main([str(path), "--out", str(csv), "--home", str(state)]) == 0
    assert score.main([str(path), "--out", str(parquet), "--home", str(state)]) == 0
    from_csv = pd.read_csv(csv, dtype={"customer_id": str})
    from_parquet = pd.read_parquet(parquet)
    assert from_csv["customer_id"].tolist() == from_parquet["customer_id"].tolist()
    assert (from_csv["segment"].astype("Int64").fillna(-1).tolist()
            == from_parquet["segment"].fillna(-1).tolist())
    assert not list(tmp_path.glob(".*.partial"))
    assert "segment sizes:" in capsys.readouterr().out


def test_known_customers_get_their_published_segment_back(good_run, state, tmp_path) -> None:
    """Customers scored with exactly the edges they were fitted on (their training edges)
    land in the segment the fit gave them: the stored models are the fit's."""
    train = read_table(good_run.home, "SELECT e.customer_id, e.item_id, p.value, p.event, "
                                      "p.timestamp FROM edge_split e JOIN preference_edges p "
                                      "USING (customer_id, item_id) WHERE e.split = 'train'")
    path = tmp_path / "train.parquet"
    train.to_parquet(path, index=False)
    assigned, _, published = score.score_file(str(path), state)
    merged = assigned.merge(published, on="customer_id", suffixes=("", "_published"))
    assert len(merged) == len(published)
    assert (merged["segment"] == merged["segment_published"]).all()


def test_errors_name_the_problem(state, interactions, tmp_path, capsys) -> None:
    path, _ = interactions
    assert score.main([str(path), "--home", str(tmp_path / "empty")]) == 1
    assert "no published segmentation" in capsys.readouterr().err
    assert score.main([str(tmp_path / "missing.csv"), "--home", str(state)]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert score.main([str(path), "--out", str(tmp_path / "x.txt"), "--home", str(state)]) == 1
    assert ".csv or .parquet" in capsys.readouterr().err


def test_a_release_without_stored_models_says_what_to_do(tmp_path) -> None:
    with duckdb.connect(str(tmp_path / "old.duckdb")) as con:
        con.execute("CREATE TABLE customer_segments AS SELECT '1' AS customer_id, 0 AS segment")
        with pytest.raises(ValueError, match="segment_centres"):
            score.StoredSegmentation.read(con)


# ---- the stored models against the estimators, without a pipeline run ------------------


def stored_from(method, ids: np.ndarray, item_ids: np.ndarray, item_proba: np.ndarray,
                label_rule: str, spec: dict) -> score.StoredSegmentation:
    """The tables customer_segments and pooled_model write, for a fitted estimator, read
    back through an in-memory DuckDB as the command reads a release."""
    with duckdb.connect() as con:
        frames = {
            "segment_centres": segment_centres(method, ids),
            "pooled_model_items": pd.DataFrame({"item_id": item_ids.astype(str),
                                                "p_like": item_proba}),
            "pooled_model_summary": pd.DataFrame({"pooled": [spec["pooled"]],
                                                  "alpha_pool": [0.5]}),
            "source_info": pd.DataFrame({"dataset": ["test"], "label_rule": [label_rule]}),
            "chosen_segmentation": pd.DataFrame([spec]).astype({"category_rank": "Int64"}),
            "customer_segments": pd.DataFrame({"customer_id": ["x"], "segment": [0],
                                               "run_id": ["fit"]}),
        }
        for name, frame in frames.items():
            con.register("frame", frame)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
            con.unregister("frame")
        return score.StoredSegmentation.read(con)


def held_back(graph: PreferenceGraph, share: float = 0.2) -> tuple[PreferenceGraph, ...]:
    held = np.random.default_rng(1).random(graph.n_customers) < share
    return graph.restrict_customers(~held), graph.restrict_customers(held)


def as_edges(graph: PreferenceGraph) -> pd.DataFrame:
    rows, cols, labels = graph.edges()
    return pd.DataFrame({"customer_id": graph.customer_ids[rows].astype(str),
                         "item_id": graph.item_ids[cols].astype(str), "label": labels})


@pytest.mark.parametrize("pooled, min_share", [("global", 0.0), ("item", 0.15)])
def test_stored_models_assign_held_back_customers_as_the_estimator(pooled, min_share) -> None:
    """Held-back customers go where SegmentedModelEmbedding.assign puts them, on the
    same centres, small clusters folded (min_share 0.15 with K=5) or not; stable ids
    (here shifted by 10) follow the clusters."""
    synthetic = make_segmented_graph(600, 60, 3, edge_probability=0.3, seed=3)
    graph = PreferenceGraph.from_edges(synthetic.edges.astype({"customer_id": str,
                                                               "item_id": str}))
    train, new = held_back(graph)
    method = SegmentedModelEmbedding(5, pooled=pooled, min_share=min_share).fit(train)
    ids = np.arange(method.n_segments_) + 10
    proba = method.segmenter_.pooled_model_.predict_proba(np.arange(train.n_items))
    stored = stored_from(method, ids, train.item_ids, proba, "positive",
                         {"pooled": pooled, "normalisation": "entropy", "category_rank": None})
    assigned = stored.assign(as_edges(new)).set_index("customer_id")["segment"]
    expected = ids[method.assign(new)]
    assert assigned[new.customer_ids.astype(str)].tolist() == expected.tolist()
    assert len(set(expected)) > 1
    if min_share:  # folding happened: more clusters than segments
        assert len(method.cluster_map_) > method.n_segments_


def test_stored_models_assign_purchase_customers_as_the_estimator() -> None:
    rng = np.random.default_rng(0)
    n_customers, n_items = 400, 40
    segments = rng.choice(3, n_customers)
    weight = np.where(np.arange(n_items)[None, :] % 3 == segments[:, None], 8.0, 1.0)
    keys = np.log(weight) + rng.gumbel(size=weight.shape)
    cols = np.argsort(-keys, axis=1)[:, :8].ravel()
    edges = pd.DataFrame({"customer_id": np.repeat(np.arange(n_customers), 8).astype(str),
                          "item_id": cols.astype(str), "label": 1})
    train, new = held_back(PreferenceGraph.from_edges(edges))
    method = SegmentedPurchaseModel(3).fit(train)
    ids = np.array([4, 7, 9])[: method.n_segments_]
    stored = stored_from(method, ids, train.item_ids, method.pooled_.item_proba_, "purchase",
                         {"pooled": "mnl", "normalisation": "entropy", "category_rank": None})
    assigned = stored.assign(as_edges(new)).set_index("customer_id")["segment"]
    assert assigned[new.customer_ids.astype(str)].tolist() == ids[method.assign(new)].tolist()


def test_the_vector_embedding_is_not_supported_yet() -> None:
    synthetic = make_segmented_graph(200, 30, 2, edge_probability=0.4, seed=0)
    graph = PreferenceGraph.from_edges(synthetic.edges.astype({"customer_id": str,
                                                               "item_id": str}))
    method = SegmentedModelEmbedding(2).fit(graph)
    stored = stored_from(method, np.arange(2), graph.item_ids, np.full(graph.n_items, 0.5),
                         "positive", {"pooled": "global", "normalisation": "entropy",
                                      "category_rank": 2})
    with pytest.raises(ValueError, match="not supported yet for the per-category vector"):
        stored.assign(as_edges(graph))
