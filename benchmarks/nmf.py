"""NMF co-segmentation: rank-sweep speed on MovieLens-100K, a large synthetic fit, and
held-out recommendation quality.

    python -m benchmarks.nmf [--data-dir DIR] [--json PATH] [--skip-large]

1. Rank sweep k = 2..10 (10 random restarts per k + one reference fit) on the
   MovieLens-100K purchase matrix (a rating, of any value, counts as an interaction).
   Goal: under 30 s.
2. One CoSegmentation fit (k = 10) on a synthetic 200k customers x 20k products matrix
   with 2M non-zeros and 10 planted co-clusters, with the process's peak memory.
   Goal: under 60 s.
3. recall@10 / nDCG@10 on held-out MovieLens interactions (20 % of each user's movies,
   full ranking over all unseen movies): NMF at the rank chosen by a sweep on the
   TRAINING interactions only, popularity, and segment popularity with NMF's and the
   model-based embedding's segments. NMF at every k is shown as a curve, not a choice.

Peak memory is ``ru_maxrss`` of this process (monotone: each figure is the peak so far).
The machine may be shared; timings are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score

from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.labels import ratings_to_likes
from segmentation_dagster.core.nmf import CoSegmentation, choose_rank, purchase_matrix, rank_sweep
from segmentation_dagster.core.recommend import (
    FactorScorer,
    PopularityScorer,
    SegmentPopularityScorer,
    evaluate_recommendations,
    held_out_matrices,
    leave_out_split,
)
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.settings import source_from_environment

KS = range(2, 11)
N_RESTARTS = 10
SEED = 0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def data_dir(arg: str | None) -> Path:
    """--data-dir, else SEGMENTATION_MOVIELENS_DIR (read by the settings module)."""
    return Path(arg or source_from_environment()["movielens_dir"] or "ml-100k")


def read_ratings(folder: Path) -> pd.DataFrame:
    path = folder / "u.data"
    if not path.exists():
        raise SystemExit(f"{path} not found: pass --data-dir or set SEGMENTATION_MOVIELENS_DIR")
    return pd.read_csv(
        path, sep="\t", names=["customer_id", "item_id", "value", "timestamp"], header=None
    )


def show_sweep(table: pd.DataFrame) -> None:
    cols = [
        "k", "reconstruction_err", "explained_variance", "cophenetic", "dispersion",
        "silhouette", "n_poor_restarts", "n_not_converged", "seconds",
    ]  # fmt: skip
    print(table[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))


def sweep_movielens(ratings: pd.DataFrame, out: dict) -> None:
    pm = purchase_matrix(ratings["customer_id"], ratings["item_id"])
    print(
        f"\n== Rank sweep on MovieLens-100K: {pm.shape[0]} users x {pm.shape[1]} movies, "
        f"{pm.V.nnz} interactions; k = {KS.start}..{KS.stop - 1}, {N_RESTARTS} restarts =="
    )
    start = time.perf_counter()
    sweep = rank_sweep(pm, ks=KS, n_restarts=N_RESTARTS, random_state=SEED)
    seconds = time.perf_counter() - start
    show_sweep(sweep.table)
    chosen = sweep.choose()
    chosen_coph = choose_rank(sweep.table, rule="largest_drop", measure="cophenetic")
    print(f"sweep time {seconds:.1f} s (goal < 30 s); peak memory so far {peak_mb():.0f} MB")
    print(
        f"chosen k (plateau_end on dispersion) = {chosen}; "
        f"largest cophenetic drop would give k = {chosen_coph}"
    )
    out["movielens_sweep"] = {
        "seconds": seconds,
        "chosen_k": chosen,
        "chosen_k_largest_cophenetic_drop": chosen_coph,
        "table": sweep.table.to_dict(orient="records"),
    }


def synthetic_matrix(
    m: int, n: int, nnz: int, k: int, own_share: float, seed: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Purchases: each draws a customer, then (with prob. own_share) a product of the
    customer's own segment, else any segment's; duplicates collapse to 1."""
    rng = np.random.default_rng(seed)
    cust_seg = rng.integers(0, k, m)
    prod_seg = rng.integers(0, k, n)
    by_segment = np.argsort(prod_seg, kind="stable")
    sizes = np.bincount(prod_seg, minlength=k)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rows = rng.integers(0, m, nnz)
    seg = np.where(rng.random(nnz) < own_share, cust_seg[rows], rng.integers(0, k, nnz))
    cols = by_segment[starts[seg] + (rng.random(nnz) * sizes[seg]).astype(np.int64)]
    V = sp.csr_matrix((np.ones(nnz), (rows, cols)), shape=(m, n))
    V.data[:] = 1.0
    return V, cust_seg


def large_fit(out: dict) -> None:
    m, n, nnz, k = 200_000, 20_000, 2_000_000, 10
    start = time.perf_counter()
    V, cust_seg = synthetic_matrix(m, n, nnz, k, own_share=0.8, seed=SEED)
    gen = time.perf_counter() - start
    print(f"\n== Single fit on a synthetic {m} x {n} matrix, {V.nnz} non-zeros, k = {k} ==")
    print(f"generation {gen:.1f} s; peak memory before the fit {peak_mb():.0f} MB")
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model = CoSegmentation(n_components=k, random_state=SEED).fit(V)
    seconds = time.perf_counter() - start
    active = model.customer_segments_ >= 0
    ari = adjusted_rand_score(cust_seg[active], model.customer_segments_[active])
    print(
        f"fit {seconds:.1f} s (goal < 60 s), {model.n_iter_} iterations, "
        f"converged={model.converged_}, {len(caught)} warnings; peak memory {peak_mb():.0f} MB"
    )
    print(
        f"explained variance {model.explained_variance_:.4f}; ARI of customer segments vs "
        f"planted {ari:.3f} ({int(active.sum())} customers with a segment of "
        f"{int((np.diff(V.indptr) > 0).sum())} with purchases)"
    )
    out["large_fit"] = {
        "shape": [m, n], "nnz": int(V.nnz), "k": k, "seconds": seconds,
        "n_iter": model.n_iter_, "converged": model.converged_,
        "peak_memory_mb": peak_mb(), "explained_variance": model.explained_variance_,
        "customer_ari": ari,
    }  # fmt: skip


def recommend_movielens(ratings: pd.DataFrame, out: dict) -> None:
    train_mask, test_mask = leave_out_split(
        ratings["customer_id"], ratings["item_id"], fraction=0.2, seed=SEED
    )
    data = held_out_matrices(ratings["customer_id"], ratings["item_id"], test_mask)
    print(
        f"\n== Held-out recommendation on MovieLens-100K: {int(test_mask.sum())} of "
        f"{len(ratings)} interactions held out (20 % of each user's movies, seed {SEED}); "
        "top 10 of all unseen movies =="
    )
    # the rank is chosen on the training interactions only
    start = time.perf_counter()
    sweep = rank_sweep(data.train, ks=KS, n_restarts=N_RESTARTS, random_state=SEED)
    k = sweep.choose()
    print(f"rank sweep on the training matrix: {time.perf_counter() - start:.1f} s, k = {k}")

    results: dict[str, dict] = {}

    def report(name: str, scorer) -> None:
        start = time.perf_counter()
        metrics = evaluate_recommendations(scorer, data.train, data.test, k=10)
        results[name] = {**metrics.as_dict(), "seconds": time.perf_counter() - start}

    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for kk in KS:
            models[kk] = CoSegmentation(n_components=kk, random_state=SEED).fit(data.train)
    nmf = models[k]
    report(f"NMF W.H (k={k}, chosen on train)", FactorScorer(nmf.W_, nmf.H_))
    report("popularity", PopularityScorer().fit(data.train))
    report(
        f"segment popularity, NMF segments (k={k})",
        SegmentPopularityScorer(nmf.customer_segments_).fit(data.train),
    )
    # model-based embedding segments from the TRAINING ratings (like = rating >= own mean)
    train_ratings = ratings[train_mask].reset_index(drop=True)
    edges = train_ratings.assign(label=ratings_to_likes(train_ratings).to_numpy())
    graph = PreferenceGraph.from_edges(edges)
    embed = ModelEmbeddingSegmenter(n_segments=k, random_state=SEED).fit(graph)
    position = pd.Index(graph.customer_ids).get_indexer(data.customer_ids)
    segments = np.where(position >= 0, embed.labels_[np.clip(position, 0, None)], -1)
    report(
        f"segment popularity, model-embedding segments (K={k})",
        SegmentPopularityScorer(segments).fit(data.train),
    )
    table = pd.DataFrame.from_dict(results, orient="index")
    print(table.to_string(float_format=lambda x: f"{x:.4f}"))
    curve = {}
    for kk, model in models.items():
        m = evaluate_recommendations(FactorScorer(model.W_, model.H_), data.train, data.test)
        curve[kk] = m.as_dict()
    print("NMF W.H at every k (a curve on the test set, NOT a way to pick k):")
    print(
        pd.DataFrame.from_dict(curve, orient="index").to_string(float_format=lambda x: f"{x:.4f}")
    )
    out["movielens_recommendation"] = {
        "k": k, "results": results, "nmf_by_k": {str(a): b for a, b in curve.items()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", help="folder with MovieLens-100K's u.data")
    parser.add_argument("--json", help="write the measured numbers to this file")
    parser.add_argument("--skip-large", action="store_true", help="skip the 200k x 20k fit")
    args = parser.parse_args()
    ratings = read_ratings(data_dir(args.data_dir))
    out: dict = {}
    sweep_movielens(ratings, out)
    if not args.skip_large:
        large_fit(out)
    recommend_movielens(ratings, out)
    print(f"\npeak memory of the whole run {peak_mb():.0f} MB")
    out["peak_memory_mb"] = peak_mb()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
