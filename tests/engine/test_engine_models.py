"""The engine's SQL models of the method against the numpy core: the pooled model's item
terms, the embeddings, the segments (through the distinct values and a range join) and
the item-level segment models agree to relative 1e-9, and the segments are identical."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.cluster import KMeans

from segmentation_dagster.core.embedding import embed, embed_by_category
from segmentation_dagster.core.graph import PreferenceGraph, category_counts
from segmentation_dagster.core.pooled import edge_log_likelihood, make_pooled_model
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.core.selection import SegmentedModelEmbedding
from segmentation_dagster.core.value_segments import DistinctValueSegmenter
from segmentation_dagster.core.vector_scale import (
    SampledLowRankEmbedding,
    pivot_scores,
    ridge_coordinates,
)
from segmentation_dagster.engine import DuckDBEngine

RTOL = 1e-9


def engine_tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """edge_split, raw_items and preference_edges of 300 customers on 80 items in 4
    categories, whose like-rates differ by segment and category; text ids as sources
    give them. One category is liked by nobody in training (a degenerate category)."""
    rng = np.random.default_rng(seed)
    items = pd.DataFrame({"item_id": [f"i{j:03d}" for j in range(80)],
                          "category": np.repeat(["a", "b", "c", "d"], 20)})
    items.loc[items.index[-3:], "category"] = None  # items without a category: 'unknown'
    n = 300
    segment = rng.integers(3, size=n)
    rates = np.array([[0.1, 0.2, 0.8, 0.0], [0.7, 0.6, 0.2, 0.0], [0.4, 0.5, 0.5, 0.0]])
    degree = rng.integers(2, 25, size=n)
    rows = np.repeat(np.arange(n), degree)
    cols = np.concatenate([rng.choice(80, size=d, replace=False) for d in degree])
    category = cols // 20
    liked = rng.random(len(rows)) < rates[segment[rows], category]
    split = np.where(rng.random(len(rows)) < 0.7, "train", np.where(
        rng.random(len(rows)) < 0.5, "validation", "test"))
    first = np.r_[True, rows[1:] != rows[:-1]]
    split[first] = "train"  # every customer keeps a training edge, as edge_split.sql
    edges = pd.DataFrame({"customer_id": [f"c{i:04d}" for i in rows],
                          "item_id": items["item_id"].to_numpy()[cols],
                          "label": np.where(liked, 1, -1).astype(np.int8), "split": split})
    return {"edge_split": edges, "raw_items": items,
            "preference_edges": edges[["customer_id", "item_id", "label"]]}


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> DuckDBEngine:
    engine = DuckDBEngine(path=str(tmp_path_factory.mktemp("engine") / "engine.duckdb"))
    for name, frame in engine_tables().items():
        engine.write_table(name, frame)
    return engine


@pytest.fixture(scope="module")
def train_graph() -> PreferenceGraph:
    tables = engine_tables()
    edges = tables["edge_split"]
    categories = tables["raw_items"].set_index("item_id")["category"].fillna("unknown")
    return PreferenceGraph.from_edges(
        edges[edges["split"] == "train"], item_categories=categories,
        customer_ids=np.sort(edges["customer_id"].unique()),
        item_ids=np.sort(edges["item_id"].unique()))


@pytest.mark.parametrize("pooled", ["global", "item", "category:global", "category:item"])
@pytest.mark.parametrize("normalisation", ["entropy", "degree"])
def test_pooled_terms_and_embeddings_equal_the_core(engine, train_graph, pooled,
                                                    normalisation):
    engine.run_model("pooled_item_terms", {"pooled": pooled, "prior_strength": 2.0})
    terms = engine.read_table("pooled_item_terms").set_index("item_id")
    model = make_pooled_model(pooled).fit(train_graph)
    expected = model.predict_proba(np.arange(train_graph.n_items))
    got = terms["p_like"].reindex(train_graph.item_ids).to_numpy()
    np.testing.assert_allclose(got, np.clip(expected, 1e-6, 1 - 1e-6), rtol=RTOL)
    assert terms["alpha_pool"].iloc[0] == pytest.approx(model.alpha_pool_, rel=RTOL)

    engine.run_model("customer_embeddings", {"normalisation": normalisation})
    table = engine.read_table("customer_embeddings").set_index("customer_id")
    table = table.reindex(train_graph.customer_ids)
    np.testing.assert_allclose(table["embedding"], embed(train_graph, model, normalisation),
                               rtol=RTOL)
    np.testing.assert_array_equal(table["degree"], train_graph.customer_degrees())
    np.testing.assert_array_equal(table["likes"], train_graph.customer_likes())


@pytest.mark.parametrize(("pooled", "k", "min_share"),
                         [("global", 3, 0.0), ("item", 4, 0.0), ("item", 5, 0.1),
                          ("category:item", 1, 0.0)])
def test_segments_and_item_rates_equal_the_core(engine, train_graph, pooled, k, min_share):
    engine.run_model("pooled_item_terms", {"pooled": pooled, "prior_strength": 2.0})
    engine.run_model("customer_embeddings", {"normalisation": "entropy"})
    engine.run_model("embedding_values")
    values = engine.read_table("embedding_values")
    segmenter = DistinctValueSegmenter(k, min_share=min_share).fit(
        values["embedding"], values["customers"], values["likes"], values["edges"])
    engine.write_table("segment_bounds", segmenter.bounds_table())
    engine.run_model("customer_segments", {"run_id": "r1", "created_at": "2026-11-30 08:00:00"})
    segments = engine.read_table("customer_segments").set_index("customer_id")
    segments = segments.reindex(train_graph.customer_ids)

    method = SegmentedModelEmbedding(k, pooled=pooled, segment_model="item", strength=20.0,
                                     min_share=min_share).fit(train_graph)
    np.testing.assert_array_equal(segments["segment"], method.labels_)
    assert segments["segment"].notna().all()
    np.testing.assert_array_equal(segmenter.segment_sizes_, method.segment_sizes_)
    np.testing.assert_allclose(segmenter.segment_alpha_, method.segment_alpha_, rtol=RTOL)
    # a new value is placed like its stored customers (the range join's rule)
    np.testing.assert_array_equal(segmenter.predict(segments["embedding"]), method.labels_)
    assert (segments["run_id"] == "r1").all()

    engine.run_model("item_unit_rates", {"pooled_strength": 2.0})
    engine.run_model("segment_summaries")
    summaries = engine.read_table("segment_summaries").sort_values("segment")
    np.testing.assert_allclose(summaries["alpha"], method.segment_alpha_, rtol=RTOL)
    engine.run_model("segment_item_rates", {"strength": 20.0})
    rates = engine.read_table("segment_item_rates")
    model = method.segment_model_
    item_index = pd.Index(train_graph.item_ids).get_indexer(rates["item_id"])
    expected = model.predict_segment_proba(rates["segment"].to_numpy(), item_index)
    np.testing.assert_allclose(rates["rate"], expected, rtol=RTOL)
    assert len(rates) == len(model.pair_keys_)


def test_sample_is_seeded_and_whole_customers(engine):
    engine.run_model("edge_sample", {"seed": 3, "sample_customers": 50})
    sample = engine.read_table("edge_sample")
    assert sample["customer_id"].nunique() == 50
    every = engine.read_table("edge_split")
    kept = every[every["customer_id"].isin(sample["customer_id"])]
    assert len(kept) == len(sample)  # every edge of a sampled customer, every split
    engine.run_model("edge_sample", {"seed": 3, "sample_customers": 50})
    assert set(engine.read_table("edge_sample")["customer_id"]) == set(sample["customer_id"])
    engine.run_model("edge_sample", {"seed": 4, "sample_customers": 50})
    assert set(engine.read_table("edge_sample")["customer_id"]) != set(sample["customer_id"])
    engine.run_model("edge_sample", {"seed": 3, "sample_customers": 10_000})
    assert len(engine.read_table("edge_sample")) == len(every)


@pytest.mark.parametrize(("segment_model", "pooled"), [("item", "item"), ("global", "global")])
def test_validation_log_likelihood_equals_the_core(engine, train_graph, segment_model, pooled):
    """Every customer's validation score under the chosen segment model, as the choice
    scores its candidates in memory (core.selection: sum of log P over the customer's
    validation edges)."""
    strength = 5.0
    engine.run_model("pooled_item_terms", {"pooled": pooled, "prior_strength": 2.0})
    engine.run_model("customer_embeddings", {"normalisation": "entropy"})
    engine.run_model("embedding_values")
    values = engine.read_table("embedding_values")
    segmenter = DistinctValueSegmenter(3).fit(values["embedding"], values["customers"],
                                              values["likes"], values["edges"])
    engine.write_table("segment_bounds", segmenter.bounds_table())
    engine.run_model("customer_segments", {"run_id": "r1", "created_at": "2026-11-30 08:00:00"})
    engine.run_model("item_unit_rates", {"pooled_strength": 2.0})
    engine.run_model("segment_summaries")
    engine.run_model("segment_item_rates", {"strength": strength})
    engine.run_model("validation_log_likelihood", {
        "segment_model": segment_model, "strength": strength})
    scores = engine.read_table("validation_log_likelihood").set_index("customer_id")

    method = SegmentedModelEmbedding(3, pooled=pooled, segment_model=segment_model
                                     if segment_model == "item" else "pooled",
                                     strength=strength).fit(train_graph)
    edges = engine_tables()["edge_split"]
    held = edges[edges["split"] == "validation"]
    rows = pd.Index(train_graph.customer_ids).get_indexer(held["customer_id"])
    cols = pd.Index(train_graph.item_ids).get_indexer(held["item_id"])

    ll = edge_log_likelihood(method.predict_proba(rows, cols), held["label"].to_numpy())
    expected = pd.Series(ll).groupby(held["customer_id"].to_numpy()).sum()
    assert len(scores) == len(expected) > 100
    np.testing.assert_allclose(scores["log_likelihood"].reindex(expected.index), expected,
                               rtol=RTOL)
    counts = held.groupby("customer_id").size()
    np.testing.assert_array_equal(scores["validation_edges"].reindex(counts.index), counts)


# --- the per-category vector embedding (core.vector_scale) ------------------------------


def vector_tables(engine, train_graph, rank: int, normalisation: str = "entropy",
                  pooled: str = "category:item"):
    """Run category_embeddings, fit the factors on every customer (the sample here),
    write them and run vector_coordinates; return the fitted model and the long table."""
    engine.run_model("pooled_item_terms", {"pooled": pooled, "prior_strength": 2.0})
    engine.run_model("category_embeddings", {"normalisation": normalisation})
    long = engine.read_table("category_embeddings")
    scores, customers, categories = pivot_scores(long["customer_id"], long["category"],
                                                 long["value"])
    model = SampledLowRankEmbedding(rank, random_state=0).fit(scores)
    engine.write_table("category_factors", model.factors_table(categories))
    engine.write_table("vector_axes", model.axes_table())
    engine.run_model("vector_coordinates", {"regularisation": model.regularisation})
    return model, long, scores, customers


@pytest.mark.parametrize("pooled", ["global", "item", "category:global", "category:item"])
@pytest.mark.parametrize("normalisation", ["entropy", "degree"])
def test_category_embeddings_are_the_cores_entries(engine, train_graph, pooled,
                                                   normalisation):
    engine.run_model("pooled_item_terms", {"pooled": pooled, "prior_strength": 2.0})
    engine.run_model("category_embeddings", {"normalisation": normalisation})
    long = engine.read_table("category_embeddings")
    expected, categories = embed_by_category(train_graph, make_pooled_model(pooled).fit(
        train_graph), normalisation)
    rows, cols = np.nonzero(np.isfinite(expected))
    assert len(long) == len(rows)  # one row per non-NaN entry, none more
    got, customers, got_categories = pivot_scores(
        long["customer_id"], long["category"], long["value"],
        customer_order=train_graph.customer_ids, category_order=categories)
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
    np.testing.assert_allclose(got[rows, cols], expected[rows, cols], rtol=RTOL)
    _, degrees, _ = category_counts(train_graph)
    edges = long.set_index(["customer_id", "category"])["edges"]
    np.testing.assert_array_equal(
        edges.reindex(list(zip(customers[rows], got_categories[cols], strict=True))),
        degrees[rows, cols])


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_vector_coordinates_are_the_numpy_ridge_on_the_same_factors(engine, train_graph,
                                                                    rank):
    model, _, scores, customers = vector_tables(engine, train_graph, rank)
    table = engine.read_table("vector_coordinates").set_index("customer_id").reindex(
        customers)
    expected = ridge_coordinates(scores, model.factors_, model.axes_)
    got = table[[f"e{a}" for a in range(rank)]].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=1e-12 * np.abs(expected).max())
    # the padding beyond the rank solves to exactly 0
    assert (table[[f"e{a}" for a in range(rank, 3)]] == 0).all().all()
    # every customer is here (the sample is all of them): their in-memory embedding
    segmenter = ModelEmbeddingSegmenter(pooled="category:item", category_rank=rank)
    np.testing.assert_allclose(got, segmenter.embed(train_graph), rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(table["degree"], train_graph.customer_degrees())
    np.testing.assert_array_equal(table["likes"], train_graph.customer_likes())


def test_vector_segments_assign_the_nearest_centre(engine, train_graph):
    vector_tables(engine, train_graph, 2)
    centres = engine.kmeans_centres("vector_coordinates", ["e0", "e1"], 3, seed=0,
                                    order_by="customer_id")
    coordinates = engine.query("SELECT customer_id, e0, e1 FROM vector_coordinates "
                               "ORDER BY customer_id")
    x = coordinates[["e0", "e1"]].to_numpy()
    kmeans = KMeans(3, n_init=10, random_state=0).fit(x)
    np.testing.assert_allclose(centres, kmeans.cluster_centers_, rtol=RTOL)
    engine.write_table("vector_centres", pd.DataFrame({
        "cluster": np.arange(3), "c0": centres[:, 0], "c1": centres[:, 1], "c2": 0.0}))
    engine.run_model("vector_clusters")
    clusters = engine.read_table("vector_clusters").set_index("customer_id").reindex(
        coordinates["customer_id"])
    np.testing.assert_array_equal(clusters["cluster"], kmeans.predict(x))
    engine.write_table("cluster_segments", pd.DataFrame({"cluster": [0, 1, 2],
                                                         "segment": [7, 5, 7]}))
    engine.run_model("vector_segments", {"run_id": "r1", "created_at": "2026-11-30 08:00:00"})
    segments = engine.read_table("vector_segments").set_index("customer_id").reindex(
        coordinates["customer_id"])
    np.testing.assert_array_equal(segments["segment"], np.array([7, 5, 7])[kmeans.labels_])
    np.testing.assert_allclose(segments["embedding"], x[:, 0], rtol=RTOL)
    # customer_segments' columns, which the downstream models read
    assert list(segments.reset_index().columns) == [
        "customer_id", "segment", "embedding", "run_id", "created_at", "fitted_edges"]


def test_spark_mllib_kmeans_finds_the_centres(spark_engine):
    """MLlib's k-means|| is not scikit-learn's k-means++: on well-separated clusters both
    find the same centres (each the mean of its cluster's points)."""
    rng = np.random.default_rng(0)
    truth = np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]])
    points = truth[rng.integers(3, size=300)] + rng.normal(scale=0.3, size=(300, 2))
    spark_engine.write_table("points", pd.DataFrame({"e0": points[:, 0], "e1": points[:, 1]}))
    centres = spark_engine.kmeans_centres("points", ["e0", "e1"], 3, seed=1)
    expected = KMeans(3, n_init=10, random_state=0).fit(points).cluster_centers_
    order = lambda c: c[np.lexsort(c.T[::-1])]  # noqa: E731 - rows in one order
    np.testing.assert_allclose(order(centres), order(expected), rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="k must be"):
        spark_engine.kmeans_centres("points", ["e0", "e1"], 1, seed=1)
