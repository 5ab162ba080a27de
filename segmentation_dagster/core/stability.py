"""Segment identity across refreshes: match, relabel, transitions, drift.

A refresh re-clusters every customer, and the clustering numbers its segments afresh
(by like-rate), so today's "segment 2" need not be yesterday's. This module gives each
fresh segment a *stable id*:

1. **Customers first.** Build the contingency table of the customers present in both runs
   (previous stable id x current label) and pick the one-to-one matching that keeps the
   most customers in their segment (``scipy.optimize.linear_sum_assignment`` on the
   shared-customer counts). Maximising shared customers is chosen over maximising Jaccard
   because it is exactly "fewest customers change id" among one-to-one relabelings, the
   quantity a user of the segments sees. A pair is admissible only when its Jaccard
   index on shared customers, ``|prev & cur| / |prev | cur|``, reaches ``min_overlap``
   (default 0.5: the two segments must share a majority of their union), so a small
   splinter of an old segment never inherits its id.
2. **Profiles second.** Current segments left unmatched (too little overlap, or no shared
   customers at all, e.g. all customers are new) are matched one-to-one to previous
   segments left unmatched by the similarity of their profile vectors, when profiles are
   given: two small DataFrames indexed by segment with the same numeric columns
   (embedding centre, like-rate, category shares...). Each column is divided by its
   spread over the rows of both tables, so no column dominates by its units, and the
   similarity is ``exp(-mean squared difference / 2)``: 1 for identical profiles, about
   0.8 at two thirds of a spread apart on average. Cosine similarity was tried and
   rejected: on raw positive vectors it is near 1 for every pair, and once centred it
   gives a segment near the middle of every column an arbitrary direction. A pair is
   admissible when its similarity reaches ``min_similarity``.
3. **Otherwise new.** Remaining current segments get fresh ids, never used before:
   ``max(previous ids, retired ids) + 1, + 2, ...`` in the order of their sorted labels.
   Previous ids left unmatched are *vanished*.

On the first run (no previous segments) every segment is new and the ids are 0..K-1 in
the order of the sorted current labels (after any ``retired_ids``).

Stable ids are non-negative integers. In :func:`transitions` a missing side is a null
(pandas ``<NA>``, SQL ``NULL``), not -1, so a SQL ``GROUP BY`` or ``IS NULL`` reads it
without a magic number.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

CUSTOMERS = "customers"
PROFILE = "profile"
NEW = "new"


@dataclass(frozen=True)
class SegmentMatching:
    """How this run's segments map to stable ids.

    ``mapping``: current label -> stable id. ``method``: current label -> "customers",
    "profile" or "new". ``score``: current label -> the Jaccard index on shared customers
    (method "customers"), the profile similarity in (0, 1] ("profile") or NaN ("new").
    ``vanished``: previous ids matched to no current segment, sorted. ``first_run``: there
    were no previous segments.
    """

    mapping: dict[Hashable, int]
    method: dict[Hashable, str]
    score: dict[Hashable, float]
    vanished: list[int]
    first_run: bool
    new_segments: list[int] = field(init=False)

    def __post_init__(self) -> None:
        new = sorted(self.mapping[label] for label, how in self.method.items() if how == NEW)
        object.__setattr__(self, "new_segments", new)

    def table(self) -> pd.DataFrame:
        """One row per current segment: label, stable_id, method, score."""
        labels = list(self.mapping)
        return pd.DataFrame(
            {
                "label": labels,
                "stable_id": [self.mapping[label] for label in labels],
                "method": [self.method[label] for label in labels],
                "score": [self.score[label] for label in labels],
            }
        )


def match_segments(
    previous: pd.Series | None,
    current: pd.Series,
    previous_profiles: pd.DataFrame | None = None,
    current_profiles: pd.DataFrame | None = None,
    min_overlap: float = 0.5,
    min_similarity: float = 0.8,
    retired_ids: Iterable[int] = (),
) -> SegmentMatching:
    """Match the current segments to the previous run's stable ids (see the module doc).

    ``previous``: the previous run's stable segment ids indexed by customer id (None or
    empty on the first run). ``current``: this run's fresh labels indexed by customer id.
    ``previous_profiles`` / ``current_profiles``: numeric profile vectors indexed by
    previous stable id / current label, with the same columns; both or neither.
    ``retired_ids``: ids used by earlier runs that must never be reused.
    """
    current = _check_labels(current, "current", stable=False)
    previous = _check_previous(previous)
    _check_fraction(min_overlap, "min_overlap")
    _check_fraction(min_similarity, "min_similarity")
    retired = _check_retired(retired_ids)

    cur_labels = _sorted_labels(current)
    prev_ids = np.sort(previous.unique()).astype(np.int64)
    profiles = _check_profiles(previous_profiles, current_profiles, prev_ids, cur_labels)

    mapping: dict[Hashable, int] = {}
    method: dict[Hashable, str] = {}
    score: dict[Hashable, float] = {}

    if len(prev_ids):
        shared = previous.index.intersection(current.index)
        jaccard, counts = _shared_overlap(
            previous.loc[shared], current.loc[shared], prev_ids, cur_labels
        )
        weights = np.where(jaccard >= min_overlap, counts, 0)
        for p, c in _assign(weights):
            mapping[cur_labels[c]] = int(prev_ids[p])
            method[cur_labels[c]] = CUSTOMERS
            score[cur_labels[c]] = float(jaccard[p, c])

    if profiles is not None:
        cur_left = [c for c, label in enumerate(cur_labels) if label not in mapping]
        taken = set(mapping.values())
        prev_left = [p for p, pid in enumerate(prev_ids) if int(pid) not in taken]
        if cur_left and prev_left:
            similarity = _profile_similarity(*profiles)[np.ix_(prev_left, cur_left)]
            weights = np.where(similarity >= min_similarity, similarity, 0.0)
            for p, c in _assign(weights):
                label = cur_labels[cur_left[c]]
                mapping[label] = int(prev_ids[prev_left[p]])
                method[label] = PROFILE
                score[label] = float(similarity[p, c])

    used = [*prev_ids.tolist(), *retired]
    next_id = max(used) + 1 if used else 0
    for label in cur_labels:
        if label not in mapping:
            mapping[label], method[label], score[label] = next_id, NEW, math.nan
            next_id += 1

    matched = set(mapping.values())
    # dicts in the order of the sorted current labels, whatever order they were filled in
    return SegmentMatching(
        mapping={label: mapping[label] for label in cur_labels},
        method={label: method[label] for label in cur_labels},
        score={label: score[label] for label in cur_labels},
        vanished=[int(p) for p in prev_ids if int(p) not in matched],
        first_run=len(prev_ids) == 0,
    )


def relabel(current: pd.Series, mapping: SegmentMatching | Mapping[Hashable, int]) -> pd.Series:
    """The current labels replaced by their stable ids (int64, same index and name)."""
    if isinstance(mapping, SegmentMatching):
        mapping = mapping.mapping
    current = _check_labels(current, "current", stable=False)
    missing = set(current.unique().tolist()) - set(mapping)
    if missing:
        raise ValueError(f"mapping has no stable id for current labels {sorted(missing)[:10]}")
    return current.map(dict(mapping)).astype(np.int64).rename(current.name or "segment")


def transitions(previous: pd.Series | None, current_stable: pd.Series) -> pd.DataFrame:
    """Customers counted by (from_segment, to_segment), stable ids on both sides.

    Shared customers give one row per (previous id, current id) pair they occupy, staying
    customers included (from == to). Customers new in this run have a null from_segment,
    customers who left have a null to_segment. Columns are nullable Int64; rows are sorted
    with nulls last.
    """
    current_stable = _check_labels(current_stable, "current_stable", stable=True)
    previous = _check_previous(previous)
    # an outer join on customer id puts NaN on the side where a customer is absent
    both = pd.concat(
        [previous.rename("from_segment"), current_stable.rename("to_segment")],
        axis=1,
        join="outer",
    )
    table = (
        both.groupby(["from_segment", "to_segment"], dropna=False)
        .size()
        .rename("customers")
        .reset_index()
    )
    table = table.astype({"from_segment": "Int64", "to_segment": "Int64", "customers": "int64"})
    return table.sort_values(
        ["from_segment", "to_segment"], na_position="last", ignore_index=True
    )


def moved_customers(previous: pd.Series | None, current_stable: pd.Series) -> pd.Index:
    """Ids of the customers present in both runs whose stable segment id changed."""
    current_stable = _check_labels(current_stable, "current_stable", stable=True)
    previous = _check_previous(previous)
    shared = previous.index.intersection(current_stable.index)
    changed = previous.loc[shared].to_numpy() != current_stable.loc[shared].to_numpy()
    return shared[changed]


def stability_summary(previous: pd.Series | None, current_stable: pd.Series) -> dict[str, Any]:
    """How much this run's stable segments differ from the previous run's.

    Scalars: ``first_run``, ``n_customers`` (this run), ``n_previous_customers``,
    ``n_shared``, ``n_new``, ``n_left``, ``n_moved`` (shared customers whose id changed),
    ``ari`` (adjusted Rand index on shared customers), ``moved_share`` (n_moved /
    n_shared), ``max_share_change`` (largest absolute change of a segment's share of all
    customers, a new or vanished segment counting from or to 0) and
    ``max_share_change_segment``. Lists: ``new_segments`` (ids absent before),
    ``vanished_segments`` (ids absent now). Dicts id -> share: ``previous_shares``,
    ``current_shares``. Measures without a previous run or without shared customers are
    NaN (segment None).
    """
    current_stable = _check_labels(current_stable, "current_stable", stable=True)
    previous = _check_previous(previous)
    shared = previous.index.intersection(current_stable.index)
    before, after = previous.loc[shared].to_numpy(), current_stable.loc[shared].to_numpy()
    n_shared = len(shared)
    n_moved = int((before != after).sum())
    first_run = len(previous) == 0

    prev_shares = previous.value_counts(normalize=True).sort_index()
    cur_shares = current_stable.value_counts(normalize=True).sort_index()
    change_segment, max_change = None, math.nan
    if not first_run and len(current_stable):
        ids = prev_shares.index.union(cur_shares.index)
        change = (
            cur_shares.reindex(ids, fill_value=0.0) - prev_shares.reindex(ids, fill_value=0.0)
        ).abs()
        change_segment, max_change = int(change.idxmax()), float(change.max())

    prev_set, cur_set = set(prev_shares.index.tolist()), set(cur_shares.index.tolist())
    return {
        "first_run": first_run,
        "n_customers": len(current_stable),
        "n_previous_customers": len(previous),
        "n_shared": n_shared,
        "n_new": len(current_stable) - n_shared,
        "n_left": len(previous) - n_shared,
        "n_moved": n_moved,
        "ari": float(adjusted_rand_score(before, after)) if n_shared else math.nan,
        "moved_share": n_moved / n_shared if n_shared else math.nan,
        "max_share_change": max_change,
        "max_share_change_segment": change_segment,
        # on the first run prev_set is empty: every segment is new
        "new_segments": sorted(int(s) for s in cur_set - prev_set),
        "vanished_segments": sorted(int(s) for s in prev_set - cur_set),
        "previous_shares": {int(k): float(v) for k, v in prev_shares.items()},
        "current_shares": {int(k): float(v) for k, v in cur_shares.items()},
    }


def drift_warnings(
    summary: Mapping[str, Any], min_ari: float, max_share_change: float
) -> list[str]:
    """Plain-words warnings for a :func:`stability_summary`; empty when nothing drifted.

    Warns when the ARI on shared customers is below ``min_ari``, when no customer is
    shared with the previous run (stability cannot be measured), and for every segment
    whose share of customers moved by more than ``max_share_change``. The first run has
    nothing to compare with and gets no warning.
    """
    if not (isinstance(min_ari, int | float) and -1.0 <= min_ari <= 1.0):
        raise ValueError(f"min_ari must be a number in [-1, 1]; got {min_ari!r}")
    if not (isinstance(max_share_change, int | float) and 0.0 <= max_share_change <= 1.0):
        raise ValueError(f"max_share_change must be a number in [0, 1]; got {max_share_change!r}")
    if summary["first_run"]:
        return []
    warnings = []
    if summary["n_shared"] == 0:
        warnings.append(
            "no customer of this run was in the previous run, so how far the segments moved "
            "cannot be measured; segment ids were kept only where profiles matched"
        )
    elif summary["ari"] < min_ari:
        warnings.append(
            f"the segmentation changed: agreement with the previous run (adjusted Rand index) "
            f"is {summary['ari']:.2f} on {summary['n_shared']} shared customers, below "
            f"{min_ari:.2f}; {summary['moved_share']:.0%} of them changed segment"
        )
    before, after = summary["previous_shares"], summary["current_shares"]
    for segment in sorted(set(before) | set(after)):
        old, new = before.get(segment, 0.0), after.get(segment, 0.0)
        if abs(new - old) <= max_share_change:
            continue
        if segment not in before:
            warnings.append(f"segment {segment} is new and holds {_percent(new)} of customers")
        elif segment not in after:
            warnings.append(f"segment {segment} vanished; it held {_percent(old)} of customers")
        else:
            verb = "grew" if new > old else "shrank"
            warnings.append(
                f"segment {segment} {verb} from {_percent(old)} to {_percent(new)} of customers"
            )
    return warnings


def _percent(share: float) -> str:
    return f"{share:.0%}" if share >= 0.01 or share == 0 else f"{share:.1%}"


def _shared_overlap(
    before: pd.Series, after: pd.Series, prev_ids: np.ndarray, cur_labels: list
) -> tuple[np.ndarray, np.ndarray]:
    """(Jaccard, counts) on shared customers, previous ids x current labels."""
    rows = np.searchsorted(prev_ids, before.to_numpy())
    cols = pd.Index(cur_labels).get_indexer(after.to_numpy())
    n_prev, n_cur = len(prev_ids), len(cur_labels)
    counts = np.bincount(rows * n_cur + cols, minlength=n_prev * n_cur).reshape(n_prev, n_cur)
    union = counts.sum(axis=1, keepdims=True) + counts.sum(axis=0, keepdims=True) - counts
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard = np.where(union > 0, counts / np.maximum(union, 1), 0.0)
    return jaccard, counts


def _assign(weights: np.ndarray) -> list[tuple[int, int]]:
    """Maximum-weight one-to-one pairs, dropping pairs of weight 0 (inadmissible)."""
    if weights.size == 0 or not (weights > 0).any():
        return []
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if weights[r, c] > 0]


def _profile_similarity(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """exp(-mean squared difference / 2), previous x current, on columns standardised
    over the rows of both tables; 0 everywhere when no column varies (nothing to tell)."""
    stacked = np.vstack([before, after])
    spread = stacked.std(axis=0)
    informative = spread > 1e-12 * np.maximum(np.abs(stacked).max(axis=0), 1.0)
    if not informative.any():
        return np.zeros((len(before), len(after)))
    z = stacked[:, informative] / spread[informative]
    gaps = z[: len(before), None, :] - z[None, len(before) :, :]
    return np.exp(-0.5 * np.mean(gaps**2, axis=2))


def _check_previous(previous: pd.Series | None) -> pd.Series:
    if previous is None:
        return pd.Series([], dtype=np.int64, name="segment")
    return _check_labels(previous, "previous", stable=True)


def _check_labels(labels: pd.Series, name: str, stable: bool) -> pd.Series:
    """Unique customer index, no missing labels; stable ids as non-negative int64."""
    if not isinstance(labels, pd.Series):
        raise TypeError(
            f"{name} must be a pandas Series of segments indexed by customer id; "
            f"got {type(labels).__name__}"
        )
    if not labels.index.is_unique:
        dup = labels.index[labels.index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"{name} has duplicate customer ids, e.g. {dup}")
    if labels.isna().any():
        raise ValueError(f"{name} has {int(labels.isna().sum())} customers without a segment")
    if not stable:
        return labels
    values = pd.to_numeric(labels, errors="coerce")
    bad = values.isna() | (values < 0) | (values != np.floor(values))
    if bad.any():
        raise ValueError(
            f"{name} must hold non-negative integer segment ids; found "
            f"{labels[bad].unique()[:5].tolist()}"
        )
    return values.astype(np.int64)


def _check_fraction(value: float, name: str) -> None:
    if not (isinstance(value, int | float) and 0.0 < value <= 1.0):
        raise ValueError(f"{name} must be a number in (0, 1]; got {value!r}")


def _check_retired(retired_ids: Iterable[int]) -> list[int]:
    retired = [] if retired_ids is None else list(retired_ids)
    bad = [r for r in retired if not isinstance(r, int | np.integer) or r < 0]
    if bad:
        raise ValueError(f"retired_ids must be non-negative integers; found {bad[:5]}")
    return [int(r) for r in retired]


def _sorted_labels(current: pd.Series) -> list:
    try:
        return pd.Index(current.unique()).sort_values().tolist()
    except TypeError as error:
        raise ValueError(f"current labels must be sortable (one type); {error}") from error


def _check_profiles(
    previous_profiles: pd.DataFrame | None,
    current_profiles: pd.DataFrame | None,
    prev_ids: np.ndarray,
    cur_labels: list,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The two profile tables as arrays in (prev_ids, cur_labels) order, or None."""
    if previous_profiles is None and current_profiles is None:
        return None
    if previous_profiles is None or current_profiles is None:
        given = "previous_profiles" if current_profiles is None else "current_profiles"
        raise ValueError(f"give both previous_profiles and current_profiles, or neither; "
                         f"only {given} was given")
    for name, table in (("previous_profiles", previous_profiles),
                        ("current_profiles", current_profiles)):
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"{name} must be a DataFrame indexed by segment; "
                            f"got {type(table).__name__}")
        if not table.index.is_unique:
            raise ValueError(f"{name} has duplicate segments in its index")
    columns = list(previous_profiles.columns)
    if set(columns) != set(current_profiles.columns) or not columns:
        raise ValueError(
            f"previous_profiles and current_profiles need the same non-empty columns; got "
            f"{columns} and {list(current_profiles.columns)}"
        )
    arrays = []
    for name, table, wanted in (
        ("previous_profiles", previous_profiles, prev_ids.tolist()),
        ("current_profiles", current_profiles, cur_labels),
    ):
        missing = [w for w in wanted if w not in table.index]
        if missing:
            raise ValueError(f"{name} has no row for segments {missing[:10]}")
        values = table.loc[wanted, columns]
        non_numeric = [c for c in columns if not pd.api.types.is_numeric_dtype(values[c])]
        if non_numeric:
            raise ValueError(f"{name} columns must be numeric; {non_numeric} are not")
        array = values.to_numpy(dtype=float)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} has missing or infinite values")
        arrays.append(array)
    return arrays[0], arrays[1]
