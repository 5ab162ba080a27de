"""Data-driven behaviour segments from consumer embeddings, end to end: the attribute
similarity of eq. (2) on random pairs, its length scale in embedding distance, k-means
over a range of K with K chosen against that scale, and each segment's representative
items (the steps themselves are in :mod:`.segments`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import segments as sg
from .data import SequenceData, Vocabulary


def category_labels(vocabulary: Vocabulary) -> np.ndarray:
    """Label of each item code's category (the attribute used for caps and diversity):
    the ``category`` attribute, else the first categorical one, else the first flag group;
    None for the padding code and when items have no attribute."""
    codes = vocabulary.category_codes()
    if "category" in vocabulary.categorical:
        levels = vocabulary.categorical_levels["category"]
    elif vocabulary.categorical:
        levels = next(iter(vocabulary.categorical_levels.values()))
    elif vocabulary.flags:
        levels = next(iter(vocabulary.flag_names.values()))
    else:
        levels = ()
    names = np.array([None, *levels], dtype=object)
    return names[np.minimum(codes, len(names) - 1)]


@dataclass(frozen=True)
class BehaviourSegmentation:
    """The fitted segmenter, the pairs it was judged on and the representative items.

    ``representatives``: segment, rank, item_id, category, customers, share.
    """

    segmenter: sg.BehaviourSegmenter
    customer_ids: np.ndarray
    length_scale: float
    similarity: np.ndarray  # eq. (2) on the random pairs
    cosine: np.ndarray  # the embeddings' cosine on the same pairs
    representatives: pd.DataFrame
    seconds: float

    @property
    def k(self) -> int:
        return int(self.segmenter.k_)

    @property
    def chosen(self) -> sg.KResult:
        return self.segmenter.results_[self.segmenter.k_]

    @property
    def pearson_similarity_cosine(self) -> float:
        """Pearson correlation of eq. (2) with the cosine over the pairs (NaN pairs left
        out, as pandas does)."""
        return float(pd.Series(self.similarity).corr(pd.Series(self.cosine)))

    def assignments(self) -> pd.DataFrame:
        """customer_id, segment, distance_to_centre."""
        return pd.DataFrame({"customer_id": self.customer_ids,
                             "segment": self.segmenter.labels_,
                             "distance_to_centre": self.segmenter.distances_})

    def selection(self) -> pd.DataFrame:
        """One row per K: silhouette, mean distance to the centres, sizes, chosen."""
        return pd.DataFrame([
            {"k": k, "silhouette": r.silhouette, "mean_distance_to_centre": r.mean_distance,
             "segment_sizes": str(r.sizes.tolist()), "chosen": k == self.segmenter.k_}
            for k, r in self.segmenter.results_.items()
        ]).assign(length_scale=self.length_scale, seconds=self.seconds)


def segment_behaviour(
    data: SequenceData,
    vocabulary: Vocabulary,
    embedding: np.ndarray,
    k_values: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8),
    similarity_pairs: int = 20000,
    representative_items: int = 20,
    radius_quantile: float = 0.5,
    max_category_share: float = 0.3,
    seed: int = 0,
) -> BehaviourSegmentation:
    """Segment the customers of ``data`` by their ``embedding`` rows (same order).

    ``seed`` draws the pairs and seeds k-means; ``representative_items`` (at most
    ``max_category_share`` of them per category) are taken among the customers within
    the ``radius_quantile`` of their segment's distances to its centre.
    """
    embedding = np.asarray(embedding, dtype=np.float64)
    if embedding.ndim != 2 or len(embedding) != len(data):
        raise ValueError(f"embedding must have one row per customer ({len(data)}), got "
                         f"shape {embedding.shape}")
    started = time.perf_counter()
    distributions = sg.attribute_distributions(data, vocabulary)
    first, second = sg.sample_pairs(len(data), similarity_pairs, seed)
    similarity = sg.attribute_similarity(distributions, first, second)
    cosine = sg.cosine_of_pairs(embedding, first, second)
    length_scale = sg.similarity_length_scale(1.0 - cosine, similarity)
    segmenter = sg.BehaviourSegmenter(tuple(k_values), seed=seed)
    segmenter.fit(embedding, length_scale)
    representatives = sg.representative_items(
        data.item_counts(vocabulary.n_items), segmenter.labels_, segmenter.distances_,
        vocabulary.category_codes(), representative_items, radius_quantile,
        max_category_share,
    )
    seconds = time.perf_counter() - started
    items = representatives["item"].to_numpy()
    representatives = representatives.assign(
        item_id=vocabulary.item_ids[items - 1], category=category_labels(vocabulary)[items],
    )[["segment", "rank", "item_id", "category", "customers", "share"]]
    return BehaviourSegmentation(segmenter, np.asarray(data.customer_ids), float(length_scale),
                                 similarity, cosine, representatives, seconds)
