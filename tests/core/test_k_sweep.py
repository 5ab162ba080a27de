
import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core.clustering import kde_modes
from segmentation_dagster.core.embedding import embed
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.k_sweep import (
    embedding_candidate_ks,
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


def test_candidate_ks_sit_next_to_the_modes_of_the_embedding(planted):
    """The paper's rule (Figure 1): the Ks next to the number of the density's modes,
    within the range and never more than the distinct values allow."""
    _, embedding, _ = planted
    modes = len(kde_modes(embedding)[0])
    ks = embedding_candidate_ks(embedding, 2, 6)
    assert ks and set(ks) <= set(range(2, 7))
    assert all(abs(k - modes) <= 1 for k in ks)
    assert embedding_candidate_ks(np.array([0.0, 0.0, 1.0]), 3, 6) == []  # 2 distinct values
