"""NMF co-segmentation: recovery of planted co-clusters, rank selection, bad input,
scikit-learn manners and figures."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import BaseEstimator, clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score

from segmentation_dagster.core.nmf import (
    CoSegmentation,
    NMFSegmenter,
    block_order,
    choose_rank,
    consensus_matrix,
    cophenetic_correlation,
    dispersion,
    plot_consensus,
    plot_customer_heatmap,
    plot_product_heatmap,
    plot_rank_selection,
    purchase_matrix,
    rank_sweep,
)


def planted_blocks(m=300, n=120, k=4, p_in=0.3, p_out=0.02, seed=0):
    """Interactions of a block matrix: customer segment s buys product segment s at p_in."""
    rng = np.random.default_rng(seed)
    cust_seg = rng.integers(0, k, m)
    prod_seg = rng.integers(0, k, n)
    p = np.where(cust_seg[:, None] == prod_seg[None, :], p_in, p_out)
    rows, cols = np.nonzero(rng.random((m, n)) < p)
    return rows, cols, cust_seg, prod_seg


@pytest.fixture(scope="module")
def blocks():
    rows, cols, cust_seg, prod_seg = planted_blocks()
    pm = purchase_matrix([f"c{r}" for r in rows], cols)
    # ids are sorted as strings: map each row back to its planted segment
    cust_truth = cust_seg[[int(c[1:]) for c in pm.customer_ids]]
    return pm, cust_truth, prod_seg[pm.item_ids]


@pytest.fixture(scope="module")
def fitted(blocks):
    pm, _, _ = blocks
    return CoSegmentation(n_components=4, random_state=0).fit(pm)


def test_recovers_planted_customer_and_product_segments(blocks, fitted):
    _, cust_truth, prod_truth = blocks
    assert adjusted_rand_score(cust_truth, fitted.customer_segments_) > 0.9
    assert adjusted_rand_score(prod_truth, fitted.product_segments_) > 0.9
    # each basis is one customer block AND the matching product block
    for b in range(4):
        c_major = np.bincount(cust_truth[fitted.customer_segments_ == b]).argmax()
        p_major = np.bincount(prod_truth[fitted.product_segments_ == b]).argmax()
        assert c_major == p_major


def test_kullback_leibler_loss_also_recovers(blocks):
    pm, cust_truth, prod_truth = blocks
    model = CoSegmentation(4, loss="kullback-leibler", init="nndsvda", max_iter=300).fit(pm)
    assert (model.loss_, model.init_) == ("kullback-leibler", "nndsvda")
    assert adjusted_rand_score(cust_truth, model.customer_segments_) > 0.9
    assert adjusted_rand_score(prod_truth, model.product_segments_) > 0.9


def test_factors_are_rescaled_without_changing_the_fit(blocks, fitted):
    pm, _, _ = blocks
    raw = fitted.nmf_.components_
    np.testing.assert_allclose(fitted.H_.sum(axis=1), 1.0)
    np.testing.assert_allclose(fitted.H_ * raw.sum(axis=1, keepdims=True), raw)
    dense = pm.V.toarray()
    rss = float(((dense - fitted.W_ @ fitted.H_) ** 2).sum())
    assert fitted.rss_ == pytest.approx(rss, rel=1e-9)
    assert fitted.reconstruction_err_ == pytest.approx(np.sqrt(rss), rel=1e-6)
    assert fitted.explained_variance_ == pytest.approx(1 - rss / (dense**2).sum())
    for scores in (fitted.customer_scores_, fitted.product_scores_):
        np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    assert fitted.customer_scores_.shape == (pm.shape[0], 4)
    assert fitted.product_scores_.shape == (pm.shape[1], 4)


def test_bundles_list_each_basis_top_products(blocks, fitted):
    _, _, prod_truth = blocks
    table = fitted.bundles(top_n=5, exclusive=True)
    assert list(table.columns) == ["basis", "rank", "item_id", "weight"]
    assert len(table) == 20
    for b, group in table.groupby("basis"):
        assert list(group["rank"]) == [1, 2, 3, 4, 5]
        assert (np.diff(group["weight"].to_numpy()) <= 0).all()
        # a bundle is drawn from one planted product segment
        assert len(set(prod_truth[group["item_id"].to_numpy()])) == 1
        assert (fitted.product_segments_[group["item_id"].to_numpy()] == b).all()


def test_predict_new_customers_with_fixed_products(blocks, fitted):
    pm, cust_truth, _ = blocks
    labels = fitted.predict(pm.V[:50])
    assert adjusted_rand_score(cust_truth[:50], labels) > 0.9
    with pytest.raises(ValueError, match="product columns"):
        fitted.transform(pm.V[:, :10])


def test_block_order_groups_segments_then_scores():
    scores = np.array([[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.0, 0.0], [0.3, 0.7]])
    segments = np.array([1, 0, 0, -1, 1])
    assert block_order(scores, segments).tolist() == [1, 2, 0, 4, 3]


def test_purchase_matrix_counts_and_binary():
    customers = ["a", "a", "a", "b", "c"]
    items = ["x", "x", "y", "y", "z"]
    counts = purchase_matrix(customers, items, values=[2, 1, 1, 3, 1], binary=False)
    assert counts.V.toarray().tolist() == [[3, 1, 0], [0, 3, 0], [0, 0, 1]]
    assert counts.customer_ids.tolist() == ["a", "b", "c"]
    assert counts.item_ids.tolist() == ["x", "y", "z"]
    binary = purchase_matrix(customers, items)
    assert binary.V.toarray().tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert sp.issparse(binary.V)


def test_all_zero_rows_and_columns_are_dropped_and_counted():
    # customer c and product z only have zero-quantity lines
    pm = purchase_matrix(
        ["a", "a", "b", "c", "c"], ["x", "y", "y", "z", "x"], values=[1, 2, 1, 0, 0]
    )
    assert pm.customer_ids.tolist() == ["a", "b"]
    assert pm.item_ids.tolist() == ["x", "y"]
    assert (pm.n_dropped_customers, pm.n_dropped_items) == (1, 1)
    assert pm.V.toarray().tolist() == [[1, 1], [0, 1]]


def test_negative_counts_are_refused_with_their_number():
    with pytest.raises(ValueError, match="3 negative entries"):
        purchase_matrix(["a", "b", "c", "d"], [1, 2, 3, 4], values=[1, -1, -2, -5])
    with pytest.raises(ValueError, match="1 negative entries"):
        CoSegmentation(2).fit(sp.csr_matrix(np.array([[1.0, -1.0], [0.0, 2.0]])))
    with pytest.raises(ValueError, match="1 missing"):
        purchase_matrix(["a", "b"], [1, 2], values=[1, None])


def test_rank_above_matrix_size_is_refused():
    V = sp.random(10, 4, density=0.5, random_state=0, format="csr")
    with pytest.raises(ValueError, match="exceeds min"):
        CoSegmentation(n_components=5).fit(V)
    with pytest.raises(ValueError, match="exceeds min"):
        rank_sweep(V, ks=[2, 5], n_restarts=2)
    with pytest.raises(ValueError, match="loss must be"):
        CoSegmentation(2, loss="itakura-saito").fit(V)


def test_consensus_dispersion_and_cophenetic_on_known_runs():
    runs = np.array([[0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 1, 1]])
    C = consensus_matrix(runs)
    assert C[0, 1] == pytest.approx(2 / 3)
    assert C[2, 3] == pytest.approx(1.0)
    assert C[0, 3] == pytest.approx(0.0)
    np.testing.assert_allclose(np.diag(C), 1.0)
    stable = consensus_matrix(runs[:2])  # two runs, same partition up to relabelling
    assert dispersion(stable) == pytest.approx(1.0)
    assert cophenetic_correlation(stable)[0] == pytest.approx(1.0)
    assert dispersion(C) < 1.0
    assert np.isnan(cophenetic_correlation(np.ones((4, 4)))[0])


def test_choose_rank_rules_follow_their_definitions():
    table = pd.DataFrame(
        {
            "k": [2, 3, 4, 5, 6],
            "dispersion": [1.0, 0.95, 0.999, 0.80, 0.79],
            "cophenetic": [0.99, 0.98, 0.97, 0.90, np.nan],
        }
    )
    assert choose_rank(table) == 4  # plateau_end on dispersion: 0.999 >= 1.0 - 0.01
    assert choose_rank(table, rule="first_decrease") == 2
    assert choose_rank(table, rule="largest_drop") == 4
    assert choose_rank(table, rule="max") == 2
    assert choose_rank(table, rule="largest_drop", measure="cophenetic") == 4
    assert choose_rank(table, rule="plateau_end", measure="cophenetic", tol=0.015) == 3
    assert choose_rank(table, k=6) == 6
    with pytest.raises(ValueError, match="not a rank of the sweep"):
        choose_rank(table, k=9)
    with pytest.raises(ValueError, match="rule must be"):
        choose_rank(table, rule="elbow")


def test_rank_sweep_finds_the_planted_rank(blocks):
    pm, _, _ = blocks
    sweep = rank_sweep(pm, ks=range(2, 7), n_restarts=5, random_state=0, consensus_size=200)
    table = sweep.table
    assert table["k"].tolist() == [2, 3, 4, 5, 6]
    assert (np.diff(table["rss"]) < 0).all()  # more bases, smaller error
    assert len(sweep.sample) == 200 and len(np.unique(sweep.sample)) == 200
    assert sweep.consensus[4].shape == (200, 200)
    assert sorted(sweep.consensus_order[4].tolist()) == list(range(200))
    assert sweep.choose() == 4


def test_figures_render():
    rows, cols, _, _ = planted_blocks(m=80, n=40, k=3, seed=1)
    pm = purchase_matrix(rows, cols)
    model = CoSegmentation(3).fit(pm)
    sweep = rank_sweep(pm, ks=[2, 3], n_restarts=2)
    figures = [
        plot_customer_heatmap(model, max_rows=50),
        plot_product_heatmap(model),
        plot_rank_selection(sweep.table, chosen_k=3),
        plot_consensus(sweep.consensus[3], sweep.consensus_order[3]),
    ]
    for fig in figures:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        assert buffer.getvalue()[:4] == b"\x89PNG"
    # the customer heatmap shows the sampled 50 rows in block order
    image = figures[0].axes[0].images[0].get_array()
    assert image.shape == (50, 3)
    assert (np.diff(image.argmax(axis=1)) >= 0).all()


def test_poor_restarts_are_left_out_but_never_more_than_half():
    from segmentation_dagster.core.nmf.rank import _good_restarts

    errors = np.array([1.0, 1.005, 1.02, 1.3, 1.001])
    assert _good_restarts(errors, 0.01).tolist() == [True, True, False, False, True]
    # only the best is near-optimal: the better half (3 of 5) is kept anyway
    errors = np.array([1.6, 1.0, 1.5, 1.7, 1.55])
    assert _good_restarts(errors, 0.01).tolist() == [False, True, True, False, True]
    assert _good_restarts(errors, None).all()


def test_cosegmentation_clones_with_its_parameters(blocks):
    pm, _, _ = blocks
    model = CoSegmentation(
        n_components=3, loss="kullback-leibler", init="nndsvda", random_state=7, max_iter=50,
        tol=1e-3,
    )
    assert model.get_params() == {
        "n_components": 3, "loss": "kullback-leibler", "init": "nndsvda",
        "random_state": 7, "max_iter": 50, "tol": 1e-3,
    }
    copy = clone(model.fit(pm))
    assert copy is not model and copy.get_params() == model.get_params()
    assert not hasattr(copy, "W_")  # clone copies parameters, never the fit
    assert "n_components=3" in repr(copy)
    # same parameters, same fit: the clone reproduces the original
    np.testing.assert_array_equal(copy.fit(pm).customer_segments_, model.customer_segments_)
    assert clone(model).set_params(n_components=4).fit(pm).W_.shape == (pm.shape[0], 4)


def test_unfitted_cosegmentation_says_so(blocks):
    pm, _, _ = blocks
    model = CoSegmentation(2)
    for call in (lambda: model.transform(pm), lambda: model.bundles(),
                 lambda: plot_customer_heatmap(model), lambda: plot_product_heatmap(model)):
        with pytest.raises(NotFittedError, match="CoSegmentation is not fitted"):
            call()
    with pytest.raises(ValueError, match="not fitted"):  # NotFittedError is a ValueError
        model.predict(pm)


# the edges are random in which items they touch, so NMF may stop at its iteration cap;
# only the parameters matter here
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_nmf_segmenter_clones_with_its_parameters(synthetic_graph):
    segmenter = NMFSegmenter(n_segments=4, loss="kullback-leibler", init="nndsvda",
                             random_state=3)
    assert isinstance(segmenter, BaseEstimator)  # through HardSegmenter
    copy = clone(segmenter)
    assert copy is not segmenter
    assert copy.get_params() == {
        "n_segments": 4, "loss": "kullback-leibler", "init": "nndsvda", "random_state": 3,
    }
    # sparse edges: every customer touching every item would give a rank-1 matrix
    graph, _ = synthetic_graph(200, 40, 2, 0.3, 0)
    fitted = copy.set_params(loss="frobenius", init="nndsvd", n_segments=2).fit(graph)
    assert len(fitted.labels_) == graph.matrix.shape[0]
    assert fitted.cosegmentation_.get_params()["n_components"] == 2
    assert not hasattr(clone(fitted), "labels_")
