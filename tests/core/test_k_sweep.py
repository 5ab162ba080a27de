import ast

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.embedding import embed
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.k_sweep import (
    K_SELECTION_METRICS,
    select_embedding_k,
    silhouette,
    sweep_k,
)
from segmentation_dagster.core.pooled import make_pooled_model
from segmentation_dagster.core.synthetic import make_segmented_graph


def test_best_rule_takes_the_highest_mean_and_ties_go_to_the_smaller_k():
    scores = {2: [0.5, 0.7], 3: [0.8, 0.8], 4: [0.7, 0.9]}
    fitted = []

    def fit(k):
        fitted.append(k)
        return k

    sweep = sweep_k([2, 3, 4], fit, lambda k: scores[k])
    assert fitted == [2, 3, 4]
    assert sweep.chosen == 3  # 3 and 4 tie at 0.8: the smaller K
    assert sweep.mean(2) == pytest.approx(0.6)
    assert sweep.models == {2: 2, 3: 3, 4: 4}
    np.testing.assert_array_equal(sweep.scores[4], [0.7, 0.9])


def test_a_single_candidate_is_chosen_even_without_k():
    sweep = sweep_k([None], lambda k: "model", lambda model: [1.0, 0.0])
    assert sweep.chosen is None
    assert sweep.mean(None) == 0.5


def test_one_standard_error_rule_prefers_the_smaller_k_within_the_noise():
    rng = np.random.default_rng(0)
    base = rng.normal(size=200)
    # K=3 gains a little over K=2, much less than the noise of the paired difference
    scores = {2: base, 3: base + 0.01 + rng.normal(scale=1.0, size=200)}
    sweep = sweep_k([2, 3], lambda k: k, scores.__getitem__, rule="one_standard_error")
    best = sweep_k([2, 3], lambda k: k, scores.__getitem__)
    assert sweep.chosen == 2
    assert set(sweep.selection[2]) == {"mean", "gap_to_best", "se"}
    assert best.chosen == max(scores, key=lambda k: scores[k].mean())


def test_sweep_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rule must be one of"):
        sweep_k([2], lambda k: k, lambda m: [1.0], rule="median")
    with pytest.raises(ValueError, match="no candidate K"):
        sweep_k([], lambda k: k, lambda m: [1.0])


@pytest.fixture(scope="module")
def planted():
    synthetic = make_segmented_graph(600, 60, 3, edge_probability=0.4, seed=3)
    edges = synthetic.edges.sample(frac=1, random_state=0)
    n_val = len(edges) // 10
    train = PreferenceGraph.from_edges(edges.iloc[n_val:])
    held = edges.iloc[:n_val]
    rows = pd.Index(train.customer_ids).get_indexer(held["customer_id"])
    cols = pd.Index(train.item_ids).get_indexer(held["item_id"])
    keep = (rows >= 0) & (cols >= 0)
    validation = rows[keep], cols[keep], held["label"].to_numpy()[keep]
    embedding = embed(train, make_pooled_model("global").fit(train), "entropy")
    return train, embedding, validation


def test_embedding_k_selection_table(planted):
    train, embedding, validation = planted
    selection = select_embedding_k(train, embedding, validation, 2, 6, random_state=0)
    table = selection.table
    assert list(table.columns) == [
        "k", "validation_log_likelihood", "validation_accuracy", "silhouette",
        "standard_error", "segment_sizes", "chosen",
    ]
    assert set(K_SELECTION_METRICS) <= set(table.columns)
    assert table["k"].tolist() == selection.candidates
    assert table["chosen"].sum() == 1
    assert int(table.loc[table["chosen"], "k"].item()) == selection.chosen
    assert set(selection.candidates) <= set(range(2, 7))
    sizes = [sum(ast.literal_eval(s)) for s in table["segment_sizes"]]
    assert sizes == [train.n_customers] * len(table)
    # the same seed, the same numbers
    again = select_embedding_k(train, embedding, validation, 2, 6, random_state=0)
    pd.testing.assert_frame_equal(table, again.table)
    with pytest.raises(ValueError, match="one value per customer"):
        select_embedding_k(train, embedding[:-1], validation, 2, 6)


def test_silhouette_is_nan_where_undefined():
    x = np.array([0.0, 0.0, 1.0, 1.0])
    assert np.isnan(silhouette(x, np.zeros(4, dtype=int)))
    assert silhouette(np.array([0.0, 0.1, 1.0, 1.1]), np.array([0, 0, 1, 1])) > 0.8
