"""Held-out edge AUC on MovieLens-100K: item-level segment models against the baselines.

    python -m benchmarks.real_data --data-dir /path/to/ml-100k [--seeds 5] [--cap 20]

Reads MovieLens-100K through the pipeline's ``files`` source: ``u.data`` (with its integer
Unix timestamps) and the items' first genre are written as CSV files and read by
``segmentation_dagster.sources.load_source`` (ids kept as text). Own-mean labels;
customers with at least 5 ratings; 10 % of each customer's edges held out as TEST edges.
Every choice (pooled model, normalisation, embedding, K, shrinkage, penalties, the
latent class K) is made on a further validation split of the training edges only.
Items get their first listed genre as category. Two regimes: all ratings (one split),
and each customer's log capped at ``--cap`` random ratings (``--seeds`` splits).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from segmentation_dagster.core.baselines import EmpiricalBayes, LatentClassEM
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.item_baselines import (
    CustomerItemLogit,
    ItemPopularity,
    LatentClassItems,
)
from segmentation_dagster.core.labels import ratings_to_likes
from segmentation_dagster.core.metrics import adjusted_rand, auc
from segmentation_dagster.core.pooled import edge_log_likelihood
from segmentation_dagster.core.segment_models import split_validation_edges
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.core.selection import SegmentationSelector
from segmentation_dagster.core.synthetic_shop import make_category_shop
from segmentation_dagster.sources import load_source

GENRES = ["unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]


def load(data_dir: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Ratings and each movie's first genre, read through the ``files`` source."""
    ratings = pd.read_csv(data_dir / "u.data", sep="\t",
                          names=["customer_id", "item_id", "value", "timestamp"])
    items = pd.read_csv(data_dir / "u.item", sep="|", encoding="latin-1", header=None)
    flags = items.iloc[:, 5:24].to_numpy()
    categories = pd.DataFrame({"item_id": items[0], "category":
                               np.array(GENRES)[flags.argmax(axis=1)]})
    with tempfile.TemporaryDirectory() as folder:
        ratings.to_csv(Path(folder) / "interactions.csv", index=False)
        categories.to_csv(Path(folder) / "items.csv", index=False)
        tables = load_source("files", interactions_path=f"{folder}/interactions.csv",
                             items_path=f"{folder}/items.csv")
    genres = tables.items.set_index("item_id")["category"]
    return tables.interactions[["customer_id", "item_id", "value", "timestamp"]], genres


def build_graph(ratings: pd.DataFrame, genres: pd.Series, cap: int | None,
                seed: int) -> PreferenceGraph:
    if cap is not None:
        shuffled = ratings.sample(frac=1.0, random_state=seed)
        ratings = shuffled.groupby("customer_id").head(cap)
    ratings = ratings[ratings.groupby("customer_id")["item_id"].transform("size") >= 5]
    edges = ratings.assign(label=ratings_to_likes(ratings).to_numpy())
    used = genres[genres.index.isin(edges["item_id"])]
    return PreferenceGraph.from_edges(edges, item_categories=used)


def latent_class_items_on_validation(train: PreferenceGraph, seed: int,
                                     ks=(2, 3, 4, 5)) -> LatentClassItems:
    """K of the item-level latent class model by validation log-likelihood, then refit."""
    inner, (rows, cols, y) = split_validation_edges(train, 0.1, random_state=seed + 1)
    scores = {}
    for k in ks:
        model = LatentClassItems(k, n_restarts=5, random_state=seed).fit(inner)
        scores[k] = edge_log_likelihood(model.predict_proba(rows, cols), y).mean()
    best = max(scores, key=scores.get)
    return LatentClassItems(best, n_restarts=5, random_state=seed).fit(train)


def run_once(graph: PreferenceGraph, seed: int) -> tuple[dict, dict, str]:
    train, (rows, cols, y) = split_validation_edges(graph, 0.1, random_state=seed)
    liked = y == 1
    results, times = {}, {}

    def record(name, fit):
        start = time.perf_counter()
        model = fit()
        times[name] = time.perf_counter() - start
        results[name] = auc(liked, model.predict_proba(rows, cols))
        return model

    selected = record("model_embedding (chosen on validation)",
                      lambda: SegmentationSelector(random_state=seed).fit(train))
    record("item-level segments, global alpha-embedding (K on validation)",
           lambda: SegmentationSelector(pooled=["global"], normalisations=["entropy"],
                                        category_ranks=[None], ks=(2, 3, 4, 5, 6),
                                        random_state=seed).fit(train))
    record("latent_class_items (K on validation)",
           lambda: latent_class_items_on_validation(train, seed))
    record("item_popularity", lambda: ItemPopularity().fit(train))
    record("empirical_bayes", lambda: EmpiricalBayes().fit(train))
    record("latent_class (K=3)", lambda: LatentClassEM(3, random_state=seed).fit(train))
    record("customer_item_logit (ceiling)", lambda: CustomerItemLogit(random_state=seed)
           .fit(train))
    spec = selected.spec_
    chosen = (f"{spec.pooled} / {spec.normalisation} / {spec.embedding} / "
              f"K={selected.n_segments_} (strength {selected.strength_:g})")
    return results, times, chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cap", type=int, default=20)
    args = parser.parse_args()
    ratings, genres = load(args.data_dir)

    graph = build_graph(ratings, genres, None, 0)
    print(f"MovieLens-100K, all ratings: {graph.n_customers} customers, {graph.n_items} items, "
          f"{graph.n_edges} edges")
    results, times, chosen = run_once(graph, 0)
    print(f"  chosen: {chosen}")
    for name, value in results.items():
        print(f"  {name:<66} AUC {value:.3f}   fit {times[name]:6.1f} s")

    print(f"\nAt most {args.cap} ratings per customer, {args.seeds} seeds (mean, sd):")
    rows = []
    for seed in range(args.seeds):
        graph = build_graph(ratings, genres, args.cap, seed)
        results, times, chosen = run_once(graph, seed)
        print(f"  seed {seed}: {graph.n_edges} edges, chosen {chosen}")
        rows.append(results)
    table = pd.DataFrame(rows)
    for name in table.columns:
        print(f"  {name:<66} AUC {table[name].mean():.3f} +- {table[name].std(ddof=1):.3f}")

    graph = build_graph(ratings, genres, None, 0)
    default = time.perf_counter()
    ModelEmbeddingSegmenter(3, random_state=0).fit(graph)  # today's default, K given
    default = time.perf_counter() - default
    start = time.perf_counter()
    SegmentationSelector(random_state=0).fit(graph)
    choosing = time.perf_counter() - start
    print(f"\nCost on all ratings: choosing pooled model, embedding and K {choosing:.2f} s; "
          f"one fit of the global alpha-embedding (K=3) {default:.3f} s "
          f"({choosing / default:.0f}x)")

    print("\nSynthetic shop whose segments differ only within categories (no setting "
          "pinned), 5 seeds:")
    aris = []
    for seed in range(5):
        shop = make_category_shop(seed=seed)
        selector = SegmentationSelector(random_state=seed).fit(shop.graph)
        aris.append(adjusted_rand(shop.segments, selector.labels_))
        print(f"  seed {seed}: chose {selector.spec_.pooled} / {selector.spec_.embedding} / "
              f"K={selector.n_segments_}, ARI {aris[-1]:.3f}")
    print(f"  planted segments recovered: ARI {np.mean(aris):.3f} on average, "
          f"min {np.min(aris):.3f}")


if __name__ == "__main__":
    main()
