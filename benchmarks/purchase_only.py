"""A purchase-only log derived from MovieLens-100K: ranking held-out purchases.

    python -m benchmarks.purchase_only [--data PATH/u.data] [--k-max 8]

Purchases are the ratings >= 4 and nothing else (the rating values are then dropped).
Per customer with at least 5 purchases, the last 10 % of purchases by timestamp (at
least 1) are the test set and the 10 % before them the validation set. The embedding
(scalar or per-genre vector), K and the shrinkage of the segment choice models are
chosen on validation only (recall@10, ties to the smaller K); the chosen model is then
refitted on train + validation and scored once on test, items already bought excluded.
Global popularity gets the same train + validation purchases.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from segmentation_dagster.core.choice import (
    GlobalPopularityRecommender,
    PurchaseSegmenter,
    ranking_metrics,
)
from segmentation_dagster.core.graph import PreferenceGraph

DEFAULT_DATA = Path("/work/shared/data/ml-100k/u.data")
GENRES = (
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


def load_purchases(path: Path) -> tuple[pd.DataFrame, pd.Series | None]:
    """(purchases, first genre per movie): ratings >= 4 as (user, item, timestamp)."""
    ratings = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "timestamp"])
    purchases = ratings[ratings["rating"] >= 4].drop(columns="rating")
    genres = None
    item_file = path.with_name("u.item")
    if item_file.exists():
        items = pd.read_csv(item_file, sep="|", header=None, encoding="latin-1")
        flags = items.iloc[:, 5:24].to_numpy()
        genres = pd.Series(np.array(GENRES)[flags.argmax(axis=1)], index=items[0])
    return purchases.reset_index(drop=True), genres


def time_split(purchases: pd.DataFrame, fraction: float = 0.1, min_purchases: int = 5):
    """'train' / 'validation' / 'test' per row: each customer's last ``fraction`` of
    purchases by time is test, the ``fraction`` before it validation (customers with
    fewer than ``min_purchases`` purchases stay in train)."""
    ordered = purchases.sort_values(["user", "timestamp", "item"], kind="stable")
    position = ordered.groupby("user").cumcount().to_numpy()
    degree = ordered.groupby("user")["item"].transform("size").to_numpy()
    n_out = np.where(degree >= min_purchases, np.maximum(1, np.round(fraction * degree)), 0)
    from_end = degree - position  # 1 for the last purchase
    side = np.where(
        from_end <= n_out, "test", np.where(from_end <= 2 * n_out, "validation", "train")
    )
    return pd.Series(side, index=ordered.index).reindex(purchases.index).to_numpy()


def run(
    data: Path = DEFAULT_DATA, k_max: int = 8, seed: int = 0, criterion: str = "recall"
) -> dict:
    purchases, genres = load_purchases(data)
    side = time_split(purchases)
    users = np.sort(purchases["user"].unique())
    items = np.sort(purchases["item"].unique())
    rows = np.searchsorted(users, purchases["user"].to_numpy())
    cols = np.searchsorted(items, purchases["item"].to_numpy())
    categories = None if genres is None else genres.reindex(items).fillna("unknown").to_numpy()

    def graph(mask: np.ndarray) -> PreferenceGraph:
        return PreferenceGraph.from_arrays(
            rows[mask],
            cols[mask],
            np.ones(int(mask.sum()), dtype=np.int8),
            customer_ids=users,
            item_ids=items,
            item_categories=categories,
        )

    train = graph(side == "train")
    fit_all = graph(side != "test")
    validation = (rows[side == "validation"], cols[side == "validation"])
    test = (rows[side == "test"], cols[side == "test"])
    print(
        f"MovieLens-100K purchases (rating >= 4): {len(users)} customers, {len(items)} "
        f"items, {len(purchases)} purchases; train {int((side == 'train').sum())}, "
        f"validation {len(validation[0])}, test {len(test[0])}"
    )

    val_customers = np.unique(validation[0])
    candidates = []
    embeddings = ["scalar"] + (["category"] if categories is not None else [])
    started = time.perf_counter()
    for embedding in embeddings:
        for k in range(1, k_max + 1):
            model = PurchaseSegmenter(n_segments=k, embedding=embedding, random_state=seed).fit(
                train, validation=validation
            )
            top = model.recommend(val_customers, 10, exclude=train)
            score = ranking_metrics(top, validation, 10, exclude=train, rows=val_customers)
            candidates.append(
                {
                    "embedding": embedding,
                    "K": k,
                    "shrinkage": model.choice_model_.shrinkage_,
                    "val_recall@10": score["recall"],
                    "val_ndcg@10": score["ndcg"],
                    "sizes": model.segment_sizes_.tolist(),
                }
            )
    table = pd.DataFrame(candidates)
    print("\nvalidation (chosen by recall@10, ties to the smaller K):")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    best = table.sort_values(["val_recall@10", "K"], ascending=[False, True]).iloc[0]

    final = PurchaseSegmenter(
        n_segments=int(best["K"]),
        embedding=best["embedding"],
        shrinkage=float(best["shrinkage"]),
        random_state=seed,
    ).fit(fit_all)
    test_customers = np.unique(test[0])
    ours = final.recommend(test_customers, 10, exclude=fit_all)
    popular = GlobalPopularityRecommender().fit(fit_all)
    baseline = popular.recommend(test_customers, 10, exclude=fit_all)
    results = {
        f"purchase_segmenter ({best['embedding']}, K={int(best['K'])}, "
        f"s={best['shrinkage']:g})": ranking_metrics(
            ours, test, 10, exclude=fit_all, rows=test_customers
        ),
        "global_popularity": ranking_metrics(
            baseline, test, 10, exclude=fit_all, rows=test_customers
        ),
    }
    elapsed = time.perf_counter() - started
    print(f"\ntest (last 10 % of each customer's purchases), {len(test_customers)} customers:")
    for name, metrics in results.items():
        print(f"  {name:45s} recall@10 {metrics['recall']:.4f}   nDCG@10 {metrics['ndcg']:.4f}")
    print(f"(selection and final fit: {elapsed:.1f} s)")
    return {"selection": table, "test": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path to u.data")
    parser.add_argument("--k-max", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--criterion",
        choices=("recall", "log_likelihood"),
        default="recall",
        help="how the shrinkage is chosen on validation purchases",
    )
    args = parser.parse_args()
    run(args.data, args.k_max, args.seed, args.criterion)


if __name__ == "__main__":
    main()
