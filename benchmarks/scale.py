"""Timing at the size of the paper's eBay study: 1M customers, 4M items, 5M edges.

    python -m benchmarks.scale [--json PATH] [--customers M --items N --edges E]

Stages, each timed with time.perf_counter: drawing the synthetic edges (not part of
the method), building the PreferenceGraph from arrays (duplicates: last one wins;
customers without any edge are then dropped, since they have no embedding), fitting
the pooled model, the embedding, and k-means on the 1-D embedding. The peak resident
memory of the process (ru_maxrss) is read after every stage. The machine's other load
is not controlled, so run it on a quiet machine for numbers worth quoting.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from segmentation_dagster.core.clustering import SegmentClusterer
from segmentation_dagster.core.embedding import embed
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.metrics import hungarian_accuracy, sorted_label_accuracy
from segmentation_dagster.core.pooled import make_pooled_model
from segmentation_dagster.core.segmenters import segment_like_rates
from segmentation_dagster.core.synthetic import make_sparse_segmented_graph


def peak_memory_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=4_000_000)
    parser.add_argument("--edges", type=int, default=5_000_000)
    parser.add_argument("--segments", type=int, default=5)
    parser.add_argument("--pooled", default="global", help="pooled model: 'global' or 'item'")
    parser.add_argument(
        "--from-edges", action="store_true",
        help="also time PreferenceGraph.from_edges on the same edges as a pandas table",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the measurements to this file")
    args = parser.parse_args(argv)

    stages: dict[str, dict[str, float]] = {}

    def record(name: str, start: float) -> None:
        stages[name] = {"seconds": time.perf_counter() - start, "peak_rss_mb": peak_memory_mb()}
        print(
            f"{name:<14} {stages[name]['seconds']:8.3f} s   "
            f"peak RSS {stages[name]['peak_rss_mb']:8.0f} MiB",
            flush=True,
        )

    print(
        f"{args.customers} customers, {args.items} items, {args.edges} edges, "
        f"K={args.segments}, pooled={args.pooled!r}"
    )
    start = time.perf_counter()
    rows, cols, labels, segments = make_sparse_segmented_graph(
        args.customers, args.items, args.edges, args.segments, seed=args.seed
    )
    record("generate", start)

    if args.from_edges:
        import pandas as pd

        table = pd.DataFrame({"customer_id": rows, "item_id": cols, "label": labels})
        start = time.perf_counter()
        slow = PreferenceGraph.from_edges(table)
        record("from_edges", start)
        del table, slow

    start = time.perf_counter()
    graph = PreferenceGraph.from_arrays(rows, cols, labels)
    graph = graph.restrict_customers(graph.customer_degrees() > 0)
    record("build_graph", start)
    truth = segments[graph.customer_ids]
    del rows, cols, labels

    start = time.perf_counter()
    pooled = make_pooled_model(args.pooled).fit(graph)
    record("pooled_fit", start)

    start = time.perf_counter()
    embedding = embed(graph, pooled, "entropy")
    record("embedding", start)

    start = time.perf_counter()
    clusterer = SegmentClusterer(args.segments).fit(embedding)
    record("kmeans", start)

    # number segments by like rate, as ModelEmbeddingSegmenter does, to score recovery
    labels_ = clusterer.labels_
    rates = segment_like_rates(graph, labels_, clusterer.n_segments_)
    labels_ = np.argsort(np.argsort(rates))[labels_]

    core = sum(stages[s]["seconds"] for s in ("pooled_fit", "embedding", "kmeans"))
    result = {
        "customers_with_edges": graph.n_customers,
        "items": graph.n_items,
        "edges_after_dedup": graph.n_edges,
        "distinct_embedding_values": int(len(np.unique(embedding))),
        "stages": stages,
        "pooled_embedding_kmeans_seconds": core,
        "sorted_accuracy": sorted_label_accuracy(truth, labels_),
        "hungarian_accuracy": hungarian_accuracy(truth, labels_),
    }
    print(
        f"\n{graph.n_customers} customers with edges, {graph.n_edges} distinct edges, "
        f"{result['distinct_embedding_values']} distinct embedding values"
    )
    print(f"pooled + embedding + k-means: {core:.3f} s")
    print(
        f"recovery: sorted-rule accuracy {100 * result['sorted_accuracy']:.1f} %, "
        f"Hungarian {100 * result['hungarian_accuracy']:.1f} % "
        f"(about {args.edges / args.customers:.0f} edges per customer)"
    )
    print(f"peak RSS {peak_memory_mb():.0f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
