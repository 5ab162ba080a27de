"""How good behaviour segments are, on three questions:

- coherence: Pearson correlation of the attribute similarity of eq. (2) with the
  embeddings' cosine on random pairs, and the ROC-AUC of that similarity for same-segment
  pairs, for the UNICON segments and for the baselines (k-means on a bag of categories,
  and any other labelling such as the alpha-embedding segments). The bag of categories is
  built from the same attributes as the similarity, so it is a reference, not a fair
  competitor;
- recovery (synthetic data): ARI and matched accuracy against planted segments;
- Approach 2: from all but each customer's last event, backfill a share of the history
  with the segment's representative items and predict the next item; NDCG@10, HR@10 and
  category diversity against no backfill, for all customers and for those with few events
  (the shortest quarter of histories).

Each returns a plain frame with columns method, metric, value, n_segments and seconds
(and slice for Approach 2); the pipeline decides which comparison task each one is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..metrics import adjusted_rand, hungarian_accuracy
from . import segments as sg
from .data import SequenceData
from .metrics import category_diversity, hit_rate, ndcg
from .train import NextItemModel

COLUMNS = ["method", "metric", "value", "n_segments", "seconds"]


def _frame(rows: list[dict], columns: list[str] = COLUMNS) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


@dataclass(frozen=True)
class Coherence:
    """Coherence scores and the labels each method found (for recovery)."""

    scores: pd.DataFrame
    labels: dict[str, np.ndarray]  # method -> segment per customer (-1: none)
    seconds: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)


def _same_segment_row(method: str, labels: np.ndarray, similarity: np.ndarray,
                      first: np.ndarray, second: np.ndarray, seconds: float) -> dict:
    # customers a method left unassigned (-1) take no part in its pairs
    valid = (labels[first] >= 0) & (labels[second] >= 0)
    auc = sg.same_segment_auc(similarity[valid], labels, first[valid], second[valid])
    k = int(len(np.unique(labels[labels >= 0])))
    return {"method": method, "metric": "same_segment_auc", "value": auc, "n_segments": k,
            "seconds": seconds}


def segment_coherence(
    data: SequenceData,
    vocabulary,
    embedding: np.ndarray,
    labels: np.ndarray,
    seconds: float = float("nan"),
    k_values: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8),
    similarity_pairs: int = 20000,
    other_labels: dict[str, np.ndarray] | None = None,
    n_segments: int | None = None,
    seed: int = 0,
) -> Coherence:
    """Coherence of the UNICON segments ``labels`` (method ``unicon``, fitted in
    ``seconds``) with eq. (2), beside k-means on the bag of categories (K chosen the same
    way from ``k_values``) and ``other_labels`` (method -> labels, -1 for none).

    ``n_segments`` is the UNICON K (default: the labels' distinct segments); ``seed``
    draws the pairs and seeds the baseline's k-means. Without item attributes
    eq. (2) has nothing to compare: the similarity scores are skipped (``notes`` says so);
    without a category attribute the bag of categories is.
    """
    labels = np.asarray(labels)
    if len(labels) != len(data) or len(embedding) != len(data):
        raise ValueError(f"labels ({len(labels)}) and embedding ({len(embedding)}) need one "
                         f"row per customer ({len(data)})")
    distributions = sg.attribute_distributions(data, vocabulary)
    first, second = sg.sample_pairs(len(data), similarity_pairs, seed)
    similarity = sg.attribute_similarity(distributions, first, second)
    cosine = sg.cosine_of_pairs(embedding, first, second)
    ok = np.isfinite(similarity)
    # eq. (2) compares the attributes of customers' items: none (a files source without
    # an item file) leaves nothing to correlate or rank
    comparable = int(ok.sum()) >= 2
    k = int(len(np.unique(labels[labels >= 0]))) if n_segments is None else int(n_segments)
    rows, notes = [], {}
    if comparable:
        pearson = float(np.corrcoef(similarity[ok], cosine[ok])[0, 1])
        rows.append({"method": "unicon", "metric": "pearson_similarity_cosine",
                     "value": pearson, "n_segments": k, "seconds": seconds})
        rows.append(_same_segment_row("unicon", labels, similarity, first, second, seconds))
    else:
        notes["attribute_similarity"] = "skipped: the items have no attributes (eq. 2)"
    found, timings = {"unicon": labels}, {"unicon": seconds}
    if vocabulary.category_codes().max() > 0:
        started = time.perf_counter()
        bag = sg.bag_of_categories(data, vocabulary)
        bag_cosine = sg.cosine_of_pairs(bag, first, second)
        bag_segmenter = sg.BehaviourSegmenter(tuple(k_values), seed=seed)
        bag_segmenter.fit(bag, sg.similarity_length_scale(1.0 - bag_cosine, similarity))
        timings["bag_of_categories"] = time.perf_counter() - started
        found["bag_of_categories"] = bag_segmenter.labels_
        rows.append(_same_segment_row("bag_of_categories", bag_segmenter.labels_, similarity,
                                      first, second, timings["bag_of_categories"]))
    else:
        # every customer's bag would be the same empty vector: nothing to cluster
        notes["bag_of_categories"] = "skipped: the items have no category attribute"
    if comparable:
        for method, other in (other_labels or {}).items():
            rows.append(_same_segment_row(method, np.asarray(other), similarity, first,
                                          second, float("nan")))
    return Coherence(_frame(rows), found, timings, notes)


def segment_recovery(planted: np.ndarray, labels: dict[str, np.ndarray],
                     seconds: dict[str, float] | None = None) -> pd.DataFrame:
    """ARI and Hungarian-matched accuracy of each method's labels against ``planted``
    (NaN: unknown), on the customers with a planted and a found segment."""
    planted = np.asarray(planted, dtype=float)
    known = np.isfinite(planted)
    rows = []
    for method, predicted in labels.items():
        predicted = np.asarray(predicted)
        scored = known & (predicted >= 0)
        truth, found = planted[scored].astype(int), predicted[scored]
        n_segments = int(len(np.unique(found)))
        spent = (seconds or {}).get(method, float("nan"))
        for metric, value in (("ari", adjusted_rand(truth, found)),
                              ("accuracy", hungarian_accuracy(truth, found))):
            rows.append({"method": method, "metric": metric, "value": value,
                         "n_segments": n_segments, "seconds": spent})
    return _frame(rows)


@dataclass(frozen=True)
class BackfillEvaluation:
    scores: pd.DataFrame  # slice, method, metric, value, n_segments, seconds
    few_events_threshold: int | None


def backfill_recommendation(
    model: NextItemModel,
    data: SequenceData,
    segmenter: sg.BehaviourSegmenter,
    representative_items: int = 20,
    radius_quantile: float = 0.5,
    max_category_share: float = 0.3,
    backfill_share: float = 0.2,
) -> BackfillEvaluation:
    """Approach 2 for every customer of ``data`` with at least two events: segments by
    ``segmenter`` (fitted: ``mean_`` and ``centres_``) from the embedding of all but the
    last event, representative items from those histories, then ``unicon`` (the history
    as is) against ``unicon_segment_backfill`` on the last item. The backfilled events
    take the most common event type."""
    columns = ["slice", *COLUMNS]
    tested = np.flatnonzero(data.lengths >= 2)
    if not len(tested):
        return BackfillEvaluation(_frame([], columns), None)
    vocabulary = model.vocabulary_
    inputs = data.subset(tested).drop_last(1)
    targets = data.subset(tested).last_items(1)
    test_segments, test_distances = segmenter.predict(model.embed(inputs))
    representatives = sg.representative_items(
        inputs.item_counts(vocabulary.n_items), test_segments, test_distances,
        vocabulary.category_codes(), representative_items, radius_quantile,
        max_category_share,
    )
    common_event = int(np.bincount(inputs.events[inputs.events > 0]).argmax())
    filled = sg.backfill(inputs, test_segments, representatives, backfill_share,
                         common_event, max_len=model.network_.max_len)
    category = vocabulary.category_codes()
    threshold = np.quantile(inputs.lengths, 0.25)
    few = inputs.lengths <= threshold
    k = int(len(segmenter.centres_))
    rows = []
    for method, sequences in (("unicon", inputs), ("unicon_segment_backfill", filled)):
        seen = inputs.items if model.exclude_seen_ else None
        # only the customer's own items are excluded, not the backfilled ones
        ranks = model.rank(sequences, targets, seen=seen)
        diversity = category_diversity(model.recommend(sequences, 10, seen=seen), category)
        for slice_name, mask in (("all", np.ones(len(tested), bool)), ("few_events", few)):
            for metric, value in (("ndcg@10", ndcg(ranks[mask])),
                                  ("hr@10", hit_rate(ranks[mask])),
                                  ("category_diversity@10", diversity[mask].mean())):
                rows.append({"slice": slice_name, "method": method, "metric": metric,
                             "value": value, "n_segments": k, "seconds": float("nan")})
    return BackfillEvaluation(_frame(rows, columns), int(threshold))
