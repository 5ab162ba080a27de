"""UNICON: training time and next-item quality on MovieLens-100K, embedding and segmenting
at scale, and the segment and lookalike figures.

    python -m benchmarks.unicon [--data-dir DIR] [--json PATH] [--skip-movielens]
                                [--skip-scale] [--output DIR]

1. MovieLens-100K through the UNICON assets (the real Dagster assets, DuckDB SQL and
   MLflow, in a scratch state folder): a 2-layer, 2-head, d=64 transformer (dropout 0.2,
   learning rate 2e-3, batches of 128; lookalike: 10 epochs of pretraining) on each
   user's last 200 ratings (event = the star value, genres and year as item attributes,
   age band, gender and occupation as CLS features), 2 threads, early stopping on a
   leave-last-out validation item (patience 5). Goal: under 3 minutes to early stopping.
   Next item: HR@10 and NDCG@10 of the last rating from all the others, full ranking over
   every movie, movies already rated excluded, against popularity (rating counts over the
   same inputs). Goal: HR@10 >= 0.15 and >= 3x popularity.
   Then the behaviour segments (Figure 2), and the lookalike audience of "at least 3 horror
   movies rated 4+" at the 75th percentile of time (Figure 4).
2. The synthetic default (1,500 customers, 300 items, planted behavioural segments) through
   the same assets with the default settings: every score and the figures.
3. Scale: 100,000 synthetic customers of ~100 events (Poisson mean 100, cut to the last
   100). A small model (d=32, 2 layers) is trained for 2 epochs on 5,000 of them (timed
   separately), then every customer is embedded and segmented (k-means on cosine, K = 2..8,
   silhouette on a 4,000-customer sample). Goal: embedding + segmenting under 90 s.

Each part runs in its own process, so its peak memory (``ru_maxrss``) is its own. The
machine may be shared with other jobs; timings are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-100k"
THREADS = 2


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def data_dir(arg: str | None) -> Path:
    return Path(arg or os.environ.get("SEGMENTATION_MOVIELENS_DIR") or DEFAULT_DIR)


# ------------------------------------------------------------------ parts 1 and 2


def _materialize(home: Path, source, settings: dict) -> dict:
    """Run ingest, graph, alpha embedding, segments and the UNICON assets with the
    settings resources ``settings`` (by resource key); return the metadata of every
    materialization, by asset."""
    import dagster as dg

    from assets import behaviour, embedding, graph, ingest, lookalike, segments, unicon
    from segmentation_dagster.config import build_resources

    resources = build_resources(str(home), source=source, **settings)
    assets = dg.load_assets_from_modules(
        [ingest, graph, embedding, segments, unicon, behaviour, lookalike])
    result = dg.materialize(assets, resources=resources, raise_on_error=False)
    if not result.success:
        for event in result.all_events:
            if event.event_type_value == "STEP_FAILURE":
                print(f"FAILED {event.step_key}: {event.event_specific_data.error.message}")
        raise SystemExit("the UNICON assets failed")
    out = {}
    for event in result.get_asset_materialization_events():
        metadata = event.event_specific_data.materialization.metadata
        out[event.asset_key.to_user_string()] = {
            k: v.value for k, v in metadata.items()
            if isinstance(v.value, int | float | str) and not str(v.value).startswith("![")
        }
    return out


def _scores(home: Path) -> pd.DataFrame:
    import duckdb

    with duckdb.connect(str(home / "segmentation.duckdb"), read_only=True) as con:
        return con.execute(
            "SELECT task, slice, method, metric, value, n_segments FROM method_scores_unicon "
            "ORDER BY task, slice, metric, method").df()


def _copy_figures(home: Path, output: Path, prefix: str) -> list[str]:
    output.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted((home / "figures").glob("unicon_*.png")):
        target = output / f"{prefix}_{path.name}"
        shutil.copy(path, target)
        copied.append(str(target))
    return copied


def _print_scores(table: pd.DataFrame) -> None:
    shown = table.assign(value=table["value"].round(4))
    print(shown.to_string(index=False))


def part_movielens(folder: str, output: str) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from segmentation_dagster.resources import DataSource
    from segmentation_dagster.settings import (
        BehaviourSegmentSettings,
        LookalikeSettings,
        UniconModelSettings,
    )

    settings = {
        "unicon_model_settings": UniconModelSettings(
            max_events=200, d_model=64, n_heads=2, n_layers=2, dropout=0.2,
            learning_rate=2e-3, batch_size=128, max_epochs=100, patience=5, threads=THREADS),
        "behaviour_segment_settings": BehaviourSegmentSettings(k_min=2, k_max=10),
        "lookalike_settings": LookalikeSettings(pretrain_epochs=10),
    }
    home = Path(tempfile.mkdtemp(prefix="unicon_ml100k_"))
    started = time.perf_counter()
    metadata = _materialize(home, DataSource(kind="movielens-100k", movielens_dir=folder),
                            settings)
    table = _scores(home)
    figures = _copy_figures(home, Path(output), "ml100k")
    return {"metadata": metadata, "scores": table.to_dict("records"), "figures": figures,
            "seconds": time.perf_counter() - started, "peak_memory_mb": peak_mb(),
            "home": str(home)}


def part_synthetic(output: str) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from segmentation_dagster.resources import DataSource

    home = Path(tempfile.mkdtemp(prefix="unicon_synthetic_"))
    started = time.perf_counter()
    # the default settings resources of config.build_resources
    metadata = _materialize(home, DataSource(), {})
    table = _scores(home)
    figures = _copy_figures(home, Path(output), "synthetic")
    return {"metadata": metadata, "scores": table.to_dict("records"), "figures": figures,
            "seconds": time.perf_counter() - started, "peak_memory_mb": peak_mb(),
            "home": str(home)}


# ------------------------------------------------------------------ part 3


def part_scale(n_customers: int = 100_000, n_items: int = 2_000, events: int = 100) -> dict:
    import torch

    torch.set_num_threads(THREADS)
    from sklearn.metrics import adjusted_rand_score

    from segmentation_dagster.core.sequence import segments as sg
    from segmentation_dagster.core.sequence.data import (
        SequenceData,
        build_vocabulary,
        leave_last_out,
    )
    from segmentation_dagster.core.sequence.synthetic import make_behaviour_dataset
    from segmentation_dagster.core.sequence.train import NextItemModel, UniconConfig

    out: dict = {}
    started = time.perf_counter()
    world = make_behaviour_dataset(n_customers, n_items, 3, mean_events=events, seed=0)
    out["generate_seconds"] = time.perf_counter() - started
    interactions = world.interactions
    out["interactions"] = len(interactions)

    started = time.perf_counter()
    # the generator's rows are sorted by customer and time: codes by lookup tables rather
    # than 10M string ids (encode_sequences' path for arbitrary input)
    one_each = pd.DataFrame({"customer_id": "0", "item_id": np.arange(n_items).astype(str),
                             "event": ["view", "cart", "purchase"] * (n_items // 3)
                             + ["view"] * (n_items % 3)})
    items = world.items.assign(item_id=world.items["item_id"].astype(str))
    customers = world.customers.assign(customer_id=world.customers["customer_id"].astype(str))
    vocabulary = build_vocabulary(one_each, items, customers)
    item_code = vocabulary.item_codes(np.arange(n_items).astype(str))
    event_code = {e: i + 1 for i, e in enumerate(vocabulary.events)}
    rows = interactions["customer_id"].to_numpy()
    counts = np.bincount(rows, minlength=n_customers)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(rows)) - starts[rows]
    drop = np.maximum(counts - events, 0)
    keep = rank >= drop[rows]
    position = (rank - drop[rows])[keep]
    lengths = np.minimum(counts, events)
    item_matrix = np.zeros((n_customers, events), np.int32)
    event_matrix = np.zeros_like(item_matrix)
    item_matrix[rows[keep], position] = item_code[interactions["item_id"].to_numpy()[keep]]
    event_matrix[rows[keep], position] = (
        interactions["event"].map(event_code).to_numpy()[keep])
    ids = np.arange(n_customers).astype(str).astype(object)
    data = SequenceData(ids, item_matrix, event_matrix, lengths.astype(np.int64),
                        vocabulary.encode_customers(customers, ids))
    planted = world.truth["behaviour_segment"].to_numpy()
    del interactions, world  # ~10M rows no longer needed
    out["encode_seconds"] = time.perf_counter() - started

    config = UniconConfig(d_model=32, n_heads=2, n_layers=2, dropout=0.1, learning_rate=3e-3,
                          batch_size=256, max_epochs=2, patience=2, threads=THREADS,
                          inference_batch_size=1024)
    sample = np.random.default_rng(0).permutation(n_customers)[:5_000]
    train = leave_last_out(data.subset(sample)).train
    started = time.perf_counter()
    model = NextItemModel(config).fit(train, vocabulary, max_len=events)
    out["train_seconds_5k_2_epochs"] = time.perf_counter() - started

    started = time.perf_counter()
    embedding = model.embed(data)
    out["embed_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    segmenter = sg.BehaviourSegmenter(tuple(range(2, 9)), seed=0, n_init=2).fit(embedding)
    out["segment_seconds"] = time.perf_counter() - started
    out["embed_and_segment_seconds"] = out["embed_seconds"] + out["segment_seconds"]
    out["chosen_k"] = segmenter.k_
    out["silhouette"] = {k: r.silhouette for k, r in segmenter.results_.items()}
    out["ari_planted"] = float(adjusted_rand_score(planted, segmenter.labels_))
    out["peak_memory_mb"] = peak_mb()
    return out


# ------------------------------------------------------------------ driver


def _run(function, *args) -> dict:
    """One part in a fresh process (spawn), so that its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(function, *args).result()


def _metric(table: pd.DataFrame, task: str, method: str, metric: str,
            slice_name: str = "all") -> float:
    rows = table[(table["task"] == task) & (table["method"] == method)
                 & (table["metric"] == metric) & (table["slice"] == slice_name)]
    return float(rows["value"].iloc[0]) if len(rows) else float("nan")


def report_assets(name: str, part: dict) -> None:
    table = pd.DataFrame(part["scores"])
    model = part["metadata"]["unicon_model"]
    segments = part["metadata"]["behaviour_segments"]
    lookalike = part["metadata"].get("lookalike_audience", {})
    print(f"\n== {name}: UNICON assets in {part['seconds']:.1f} s, "
          f"peak memory {part['peak_memory_mb']:.0f} MB (state folder {part['home']})")
    print(f"next-item model: {model['parameters']} parameters, {model['epochs']} epochs "
          f"(best {model['best_epoch']}), {model['train_seconds']:.1f} s to early stopping")
    print(f"protocol: {model['protocol']}")
    hr, pop = (_metric(table, "next_item", "unicon", "hr@10"),
               _metric(table, "next_item", "popularity", "hr@10"))
    print(f"HR@10 {hr:.4f} vs popularity {pop:.4f} (x{hr / pop:.2f}); NDCG@10 "
          f"{_metric(table, 'next_item', 'unicon', 'ndcg@10'):.4f} vs "
          f"{_metric(table, 'next_item', 'popularity', 'ndcg@10'):.4f}")
    print(f"segments: K={segments['chosen_k']} (silhouette over K=2..; length scale "
          f"{segments['similarity_length_scale']:.3f}); Pearson(eq. 2 similarity, cosine) "
          f"on random pairs {segments['pearson_similarity_vs_cosine']:.3f}")
    if lookalike:
        print(f"lookalike: rule '{lookalike['rule']}', cutoff {lookalike['cutoff']}, "
              f"{lookalike['core']} core / {lookalike['noncore']} non-core, tau "
              f"{lookalike['tau']:.3f} (validation F2 {lookalike['validation_f2']:.3f}), "
              f"{lookalike['lookalikes']} lookalikes; honest test on "
              f"{lookalike['candidates']} held-out non-core customers of whom "
              f"{lookalike['candidates_joining_core_after']} meet the rule after the cutoff "
              f"(audience size {lookalike['candidate_audience_size']} for every method)")
    _print_scores(table)
    print("figures: " + ", ".join(part["figures"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--json")
    parser.add_argument("--output", default=".segmentation/benchmarks/unicon")
    parser.add_argument("--skip-movielens", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    results: dict = {}

    folder = data_dir(args.data_dir)
    if args.skip_movielens:
        print("MovieLens part skipped (--skip-movielens)")
    elif not (folder / "u.data").exists():
        print(f"MovieLens part skipped: no u.data in {folder} (set --data-dir or "
              "SEGMENTATION_MOVIELENS_DIR)")
    else:
        results["movielens"] = _run(part_movielens, str(folder), args.output)
        report_assets("MovieLens-100K", results["movielens"])
        model = results["movielens"]["metadata"]["unicon_model"]
        table = pd.DataFrame(results["movielens"]["scores"])
        hr = _metric(table, "next_item", "unicon", "hr@10")
        pop = _metric(table, "next_item", "popularity", "hr@10")
        print(f"goals: training {model['train_seconds']:.0f} s (< 180 s: "
              f"{'met' if model['train_seconds'] < 180 else 'NOT met'}); HR@10 {hr:.3f} "
              f"(>= 0.15: {'met' if hr >= 0.15 else 'NOT met'}; >= 3x popularity "
              f"{3 * pop:.3f}: {'met' if hr >= 3 * pop else 'NOT met'})")

    results["synthetic"] = _run(part_synthetic, args.output)
    report_assets("synthetic default (1,500 x 300, planted behaviour)", results["synthetic"])

    if args.skip_scale:
        print("scale part skipped (--skip-scale)")
    else:
        scale = _run(part_scale)
        results["scale"] = scale
        print(f"\n== scale: {scale['interactions']:,} interactions of 100,000 customers "
              f"(generated in {scale['generate_seconds']:.1f} s, encoded in "
              f"{scale['encode_seconds']:.1f} s)")
        print(f"training d=32 x 2 layers on 5,000 customers, 2 epochs: "
              f"{scale['train_seconds_5k_2_epochs']:.1f} s")
        print(f"embedding 100,000 customers: {scale['embed_seconds']:.1f} s; segmenting "
              f"(K=2..8, n_init=2, silhouette on 4,000): {scale['segment_seconds']:.1f} s; "
              f"total {scale['embed_and_segment_seconds']:.1f} s (goal < 90 s: "
              f"{'met' if scale['embed_and_segment_seconds'] < 90 else 'NOT met'})")
        print(f"chosen K {scale['chosen_k']}, ARI against the planted behavioural segments "
              f"{scale['ari_planted']:.3f}; peak memory {scale['peak_memory_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
