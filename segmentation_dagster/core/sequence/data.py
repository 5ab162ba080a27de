"""Interaction sequences as padded integer arrays, with the vocabularies that encode them.

Layout: one row per customer, events left-aligned in time order, padding (code 0) after
the last event. Item ``i`` of the vocabulary has code ``i + 1``. The model adds a CLS
token in front (customer features), so event ``t`` sits at model position ``t + 1``.

Item attributes are read once from the items table and stored per item code:
- ``categorical``: string columns with few levels (category, brand, ...), 0 = missing;
- ``flags``: groups of 0/1 columns sharing a prefix (``genre_action``, ``genre_drama`` ->
  the multi-valued attribute ``genre``);
- ``numeric``: other numeric columns (price, year, ...) as ranks in [0, 1]. The paper
  scales numeric features to the unit interval; ranks do that without letting a skewed
  price distribution squash most items near 0.
Customer features (the CLS token) are categorical columns, and numeric columns cut at
their quintiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

PAD = 0
# A string column with more distinct values than this, or than half the rows, is an
# identifier (a title, a zip code) rather than an attribute.
MAX_LEVELS = 1000
# When a source has a single event type (MovieLens: 'rating'), the value becomes the event
# (rating:1 ... rating:5) if it has at most this many levels.
MAX_VALUE_LEVELS = 10
CUSTOMER_BINS = 5


def _is_identifier(values: pd.Series, max_levels: int) -> bool:
    """A column with a different value in (nearly) every row names rows; it carries
    nothing an item's or customer's own embedding does not."""
    present = int(values.notna().sum())
    distinct = values.nunique(dropna=True)
    if distinct > max_levels or (present >= 3 and distinct == present):
        return True
    return present > 20 and distinct > 0.5 * present


def _is_flag(values: pd.Series) -> bool:
    if values.dtype == bool:
        return True
    if not pd.api.types.is_numeric_dtype(values):
        return False
    present = values.dropna()
    return len(present) > 0 and bool(present.isin([0, 1]).all())


def _as_text(values: pd.Series) -> pd.Series:
    """Values as text, numbers written the same whether the column is int or float (a
    reindex that introduces missing values turns 20 into 20.0)."""
    if pd.api.types.is_numeric_dtype(values) and values.dtype != bool:
        return values.map(lambda v: None if pd.isna(v) else f"{v:g}").astype("string")
    return values.astype("string")


def _rank01(values: pd.Series) -> np.ndarray:
    """Ranks scaled to [0, 1]; missing values sit in the middle (0.5)."""
    ranks = values.rank(method="average", pct=True)
    low, high = ranks.min(), ranks.max()
    scaled = (ranks - low) / (high - low) if high > low else ranks * 0 + 0.5
    return scaled.fillna(0.5).to_numpy(dtype=np.float32)


@dataclass(frozen=True)
class Vocabulary:
    """Codes of items, events and customer features, and the item attribute tables
    (row ``code``; row 0 is padding and is all zeros)."""

    item_ids: np.ndarray
    events: tuple[str, ...]
    event_from_value: bool
    categorical: dict[str, np.ndarray] = field(default_factory=dict)
    categorical_levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    flag_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    numeric: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.float32))
    numeric_names: tuple[str, ...] = ()
    customer_levels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    customer_bins: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_events(self) -> int:
        return len(self.events)

    @property
    def customer_features(self) -> tuple[str, ...]:
        return tuple(self.customer_levels)

    def customer_cardinalities(self) -> list[int]:
        return [len(levels) + 1 for levels in self.customer_levels.values()]

    def item_codes(self, item_ids) -> np.ndarray:
        """Codes of item ids; 0 for items outside the vocabulary."""
        index = pd.Index(self.item_ids)
        return (index.get_indexer(pd.Index(np.asarray(item_ids, dtype=object))) + 1).astype(
            np.int64
        )

    def event_keys(self, frame: pd.DataFrame) -> pd.Series:
        event = frame["event"].astype("string").fillna("interaction")
        if self.event_from_value:
            return event + ":" + frame["value"].map("{:g}".format).astype("string")
        return event

    def event_codes(self, frame: pd.DataFrame) -> np.ndarray:
        index = pd.Index(self.events)
        return (index.get_indexer(self.event_keys(frame).astype(object)) + 1).astype(np.int64)

    def encode_customers(self, customers: pd.DataFrame | None, customer_ids) -> np.ndarray:
        """[n, F] codes of the CLS features, 0 where a customer or value is unknown."""
        customer_ids = np.asarray(customer_ids, dtype=object)
        codes = np.zeros((len(customer_ids), len(self.customer_levels)), dtype=np.int32)
        if customers is None or not len(self.customer_levels):
            return codes
        table = customers.drop_duplicates("customer_id").set_index("customer_id")
        table = table.reindex(pd.Index(customer_ids, dtype=object))
        for f, (name, levels) in enumerate(self.customer_levels.items()):
            if name not in table:
                continue
            column = table[name]
            if name in self.customer_bins:
                values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
                binned = np.searchsorted(self.customer_bins[name], values, side="right") + 1
                codes[:, f] = np.where(np.isnan(values), 0, binned)
            else:
                index = pd.Index(levels)
                codes[:, f] = index.get_indexer(_as_text(column).astype(object)) + 1
        return codes

    def category_codes(self) -> np.ndarray:
        """The item attribute used for diversity and caps: ``category`` if present, else
        the first categorical attribute, else the strongest flag; codes per item code."""
        if "category" in self.categorical:
            return self.categorical["category"]
        if self.categorical:
            return next(iter(self.categorical.values()))
        if self.flags:
            table = next(iter(self.flags.values()))
            return np.where(table.any(axis=1), table.argmax(axis=1) + 1, 0).astype(np.int64)
        return np.zeros(self.n_items + 1, dtype=np.int64)

    def to_state(self) -> dict:
        """Plain lists and numbers (loadable with ``torch.load(weights_only=True)``)."""
        return {
            "item_ids": [str(i) for i in self.item_ids],
            "events": list(self.events),
            "event_from_value": self.event_from_value,
            "categorical": {k: v.tolist() for k, v in self.categorical.items()},
            "categorical_levels": {k: list(v) for k, v in self.categorical_levels.items()},
            "flags": {k: v.tolist() for k, v in self.flags.items()},
            "flag_names": {k: list(v) for k, v in self.flag_names.items()},
            "numeric": self.numeric.tolist(),
            "numeric_names": list(self.numeric_names),
            "customer_levels": {k: list(v) for k, v in self.customer_levels.items()},
            "customer_bins": {k: v.tolist() for k, v in self.customer_bins.items()},
        }

    @classmethod
    def from_state(cls, state: dict) -> Vocabulary:
        n = len(state["item_ids"]) + 1
        numeric = np.asarray(state["numeric"], dtype=np.float32).reshape(n, -1)
        return cls(
            item_ids=np.asarray(state["item_ids"], dtype=object),
            events=tuple(state["events"]),
            event_from_value=bool(state["event_from_value"]),
            categorical={k: np.asarray(v, np.int64) for k, v in state["categorical"].items()},
            categorical_levels={k: tuple(v) for k, v in state["categorical_levels"].items()},
            flags={k: np.asarray(v, np.float32) for k, v in state["flags"].items()},
            flag_names={k: tuple(v) for k, v in state["flag_names"].items()},
            numeric=numeric,
            numeric_names=tuple(state["numeric_names"]),
            customer_levels={k: tuple(v) for k, v in state["customer_levels"].items()},
            customer_bins={k: np.asarray(v, float) for k, v in state["customer_bins"].items()},
        )


def build_vocabulary(
    events: pd.DataFrame,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    max_levels: int = MAX_LEVELS,
) -> Vocabulary:
    """Vocabularies from the interactions (customer_id, item_id, event[, value]), the items
    table (item_id + attribute columns) and the customers table (customer_id + features)."""
    for column in ("customer_id", "item_id", "event"):
        if column not in events:
            raise ValueError(f"the interactions have no column {column!r}")
    item_ids = np.asarray(pd.unique(events["item_id"].dropna().astype(str)), dtype=object)
    item_ids = np.sort(item_ids)
    if not len(item_ids):
        raise ValueError("the interactions name no item (column 'item_id' is empty)")
    distinct_events = events["event"].astype("string").fillna("interaction").unique()
    event_from_value = bool(
        len(distinct_events) == 1
        and "value" in events
        and 1 < events["value"].nunique(dropna=True) <= MAX_VALUE_LEVELS
    )
    vocab = Vocabulary(item_ids=item_ids, events=(), event_from_value=event_from_value)
    event_levels = tuple(sorted(vocab.event_keys(events).dropna().unique()))
    vocab = replace(vocab, events=event_levels)

    n = len(item_ids) + 1
    categorical, categorical_levels, flags, flag_names = {}, {}, {}, {}
    numeric_columns, numeric_names = [], []
    if items is not None and len(items):
        if "item_id" not in items:
            raise ValueError("the items table has no column 'item_id'")
        table = items.assign(item_id=items["item_id"].astype(str))
        table = table.drop_duplicates("item_id").set_index("item_id")
        table = table.reindex(pd.Index(item_ids, dtype=object))
        groups: dict[str, list[str]] = {}
        for name in table.columns:
            column = table[name]
            if column.isna().all():
                continue
            if _is_flag(column) and name != "category":
                groups.setdefault(str(name).split("_")[0], []).append(name)
            elif pd.api.types.is_numeric_dtype(column):
                numeric_columns.append(_rank01(column.astype(float)))
                numeric_names.append(str(name))
            elif not _is_identifier(column, max_levels):
                values = column.astype("string")
                levels = tuple(sorted(values.dropna().unique()))
                codes = pd.Index(levels).get_indexer(values.astype(object)) + 1
                categorical[str(name)] = np.concatenate([[PAD], codes]).astype(np.int64)
                categorical_levels[str(name)] = levels
        for prefix, names in groups.items():
            values = table[names].fillna(0).to_numpy(dtype=np.float32)
            flags[prefix] = np.vstack([np.zeros((1, len(names)), np.float32), values])
            flag_names[prefix] = tuple(names)
    numeric = (
        np.vstack([np.zeros((1, len(numeric_columns)), np.float32),
                   np.column_stack(numeric_columns).astype(np.float32)])
        if numeric_columns else np.zeros((n, 0), np.float32)
    )

    customer_levels, customer_bins = {}, {}
    if customers is not None and len(customers):
        table = customers.drop_duplicates("customer_id")
        for name in table.columns:
            if name == "customer_id" or table[name].isna().all():
                continue
            column = table[name]
            if pd.api.types.is_numeric_dtype(column) and column.nunique() > CUSTOMER_BINS:
                edges = np.unique(np.nanquantile(column.astype(float),
                                                 np.linspace(0, 1, CUSTOMER_BINS + 1)[1:-1]))
                customer_bins[str(name)] = edges
                customer_levels[str(name)] = tuple(f"bin_{b}" for b in range(len(edges) + 1))
            elif not _is_identifier(_as_text(column), max_levels):
                customer_levels[str(name)] = tuple(sorted(_as_text(column).dropna().unique()))
    return replace(
        vocab,
        categorical=categorical,
        categorical_levels=categorical_levels,
        flags=flags,
        flag_names=flag_names,
        numeric=numeric,
        numeric_names=tuple(numeric_names),
        customer_levels=customer_levels,
        customer_bins=customer_bins,
    )


@dataclass(frozen=True)
class SequenceData:
    """Customers' event sequences: ``items`` and ``events`` are [n, L] int32 codes,
    left-aligned, 0 after ``lengths[i]``; ``features`` are [n, F] CLS feature codes."""

    customer_ids: np.ndarray
    items: np.ndarray
    events: np.ndarray
    lengths: np.ndarray
    features: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.customer_ids)
        if self.items.shape != self.events.shape or self.items.shape[0] != n:
            raise ValueError(
                f"items {self.items.shape}, events {self.events.shape} and {n} customers "
                "do not match"
            )
        if len(self.lengths) != n or len(self.features) != n:
            raise ValueError("lengths and features need one row per customer")

    def __len__(self) -> int:
        return len(self.customer_ids)

    @property
    def max_len(self) -> int:
        return self.items.shape[1]

    def subset(self, rows) -> SequenceData:
        rows = np.asarray(rows)
        return SequenceData(self.customer_ids[rows], self.items[rows], self.events[rows],
                            self.lengths[rows], self.features[rows])

    def with_lengths(self, lengths: np.ndarray) -> SequenceData:
        """The first ``lengths[i]`` events of each customer (``lengths`` <= current)."""
        lengths = np.minimum(np.maximum(np.asarray(lengths, dtype=np.int64), 0), self.lengths)
        keep = np.arange(self.max_len)[None, :] < lengths[:, None]
        return SequenceData(self.customer_ids, np.where(keep, self.items, PAD).astype(np.int32),
                            np.where(keep, self.events, PAD).astype(np.int32), lengths,
                            self.features)

    def drop_last(self, k: int) -> SequenceData:
        return self.with_lengths(self.lengths - k)

    def last_items(self, offset: int = 1) -> np.ndarray:
        """The item ``offset`` places from the end (0 where a sequence is too short)."""
        position = self.lengths - offset
        valid = position >= 0
        out = np.zeros(len(self), dtype=np.int64)
        out[valid] = self.items[np.flatnonzero(valid), position[valid]]
        return out

    def has_repeats(self) -> bool:
        """Whether any customer interacts with the same item twice."""
        ordered = np.sort(self.items, axis=1)
        return bool(((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)).any())

    def item_counts(self, n_items: int) -> sp.csr_matrix:
        """Customers x item codes (column 0 = padding, left empty): event counts."""
        rows, cols = np.nonzero(self.items)
        return sp.csr_matrix(
            (np.ones(len(rows), np.float32), (rows, self.items[rows, cols])),
            shape=(len(self), n_items + 1),
        )


def order_events(
    interactions: pd.DataFrame, max_events: int | None = None, time_column: str = "timestamp"
) -> pd.DataFrame:
    """Each customer's interactions in time order (ties and, when every timestamp is
    missing, the whole order follow the rows' order), cut to the last ``max_events``, with
    ``position`` 1..n. The Python twin of ``dbt_like_sql/customer_sequences.sql``.

    Some but not all timestamps missing is an error naming the column: no order between
    a dated and an undated event can be assumed.
    """
    for column in ("customer_id", "item_id"):
        if column not in interactions:
            raise ValueError(f"the interactions have no column {column!r}")
    frame = interactions.dropna(subset=["customer_id", "item_id"]).copy()
    frame["_row"] = np.arange(len(frame))
    keys = ["customer_id", "_row"]
    if time_column in frame:
        missing = frame[time_column].isna()
        if missing.any() and not missing.all():
            raise ValueError(
                f"column {time_column!r} has {int(missing.sum())} missing values out of "
                f"{len(frame)}: sequences need every event dated, or none (then the file "
                "order is used)"
            )
        if not missing.all():
            keys = ["customer_id", time_column, "_row"]
    frame = frame.sort_values(keys, kind="stable")
    frame["position"] = frame.groupby("customer_id", sort=False).cumcount() + 1
    counts = frame.groupby("customer_id", sort=False)["position"].transform("max")
    if max_events is not None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        frame = frame[frame["position"] > counts - max_events]
        frame["position"] -= np.maximum(counts[frame.index] - max_events, 0)
    return frame.drop(columns="_row").reset_index(drop=True)


@dataclass(frozen=True)
class EncodedSequences:
    """Sequences plus what could not be encoded: customers without any (known) event
    are reported, not given a NaN embedding."""

    data: SequenceData
    empty_customers: np.ndarray
    unknown_item_events: int


def encode_sequences(
    events: pd.DataFrame,
    vocabulary: Vocabulary,
    customers: pd.DataFrame | None = None,
    customer_ids=None,
    max_events: int | None = None,
) -> EncodedSequences:
    """Arrays from ordered events (customer_id, item_id, event[, value], position).

    Rows follow ``customer_ids`` (default: the sorted customers of ``events``); customers
    with no known event are left out and listed in ``empty_customers``.
    """
    frame = events.assign(
        customer_id=events["customer_id"].astype(str), item_id=events["item_id"].astype(str)
    )
    if "position" in frame:
        frame = frame.sort_values(["customer_id", "position"], kind="stable")
    else:
        frame = frame.sort_values("customer_id", kind="stable")
    item = vocabulary.item_codes(frame["item_id"].to_numpy())
    event = vocabulary.event_codes(frame)
    known = item > 0
    unknown = int((~known).sum())
    frame, item, event = frame[known], item[known], np.maximum(event[known], 0)
    if customer_ids is None:
        customer_ids = np.sort(frame["customer_id"].unique())
    customer_ids = np.asarray([str(c) for c in customer_ids], dtype=object)
    row_of = pd.Index(customer_ids).get_indexer(frame["customer_id"].to_numpy())
    inside = row_of >= 0
    row_of, item, event = row_of[inside], item[inside], event[inside]
    counts = np.bincount(row_of, minlength=len(customer_ids))
    present = counts > 0
    # rows are grouped by customer (sorted), so the rank within a group is a running index
    order = np.argsort(row_of, kind="stable")
    row_of, item, event = row_of[order], item[order], event[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(row_of)) - starts[row_of]
    lengths = counts.copy()
    if max_events is not None:
        drop = np.maximum(counts - max_events, 0)
        keep = rank >= drop[row_of]
        rank = (rank - drop[row_of])[keep]
        row_of, item, event = row_of[keep], item[keep], event[keep]
        lengths = np.minimum(counts, max_events)
    new_row = np.cumsum(present) - 1
    width = max(int(lengths.max(initial=0)), 1)
    items = np.zeros((int(present.sum()), width), dtype=np.int32)
    event_codes = np.zeros_like(items)
    items[new_row[row_of], rank] = item
    event_codes[new_row[row_of], rank] = event
    kept_ids = customer_ids[present]
    data = SequenceData(
        customer_ids=kept_ids,
        items=items,
        events=event_codes,
        lengths=lengths[present].astype(np.int64),
        features=vocabulary.encode_customers(customers, kept_ids),
    )
    return EncodedSequences(data, customer_ids[~present], unknown)


@dataclass(frozen=True)
class LeaveLastOut:
    """Leave-last-out split of every customer's sequence.

    - ``train``: all but the last two events (a customer with one or two events keeps
      only the first, which gives no training target);
    - validation: from ``train``, predict the second-to-last event (``validation_targets``,
      0 for customers with fewer than 3 events);
    - test: from all but the last event (``test_inputs``), predict the last
      (``test_targets``, 0 for customers with one event).
    """

    train: SequenceData
    validation_targets: np.ndarray
    test_inputs: SequenceData
    test_targets: np.ndarray


def leave_last_out(data: SequenceData) -> LeaveLastOut:
    n = data.lengths
    train = data.with_lengths(np.where(n >= 3, n - 2, np.minimum(n, 1)))
    validation = np.where(n >= 3, data.last_items(2), 0)
    test_inputs = data.with_lengths(np.where(n >= 2, n - 1, n))
    test = np.where(n >= 2, data.last_items(1), 0)
    return LeaveLastOut(train, validation, test_inputs, test)
