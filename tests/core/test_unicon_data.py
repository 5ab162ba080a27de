"""UNICON sequences: ordering, vocabularies, padded arrays, leave-last-out, generator."""

from __future__ import annotations

import pandas as pd
import pytest

from segmentation_dagster.core.sequence.data import (
    build_vocabulary,
    encode_sequences,
    leave_last_out,
    order_events,
)
from segmentation_dagster.core.sequence.synthetic import (
    PREMIUM_PRICE,
    make_behaviour_dataset,
    segment_cycles,
)


def _events(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "item_id", "event", "value", "timestamp"])


def test_order_events_sorts_by_time_breaks_ties_by_row_and_keeps_the_last_n() -> None:
    t = pd.Timestamp("2025-01-01")
    frame = _events([
        ("a", "x", "view", 1.0, t + pd.Timedelta(3, "D")),
        ("a", "y", "view", 1.0, t + pd.Timedelta(1, "D")),
        ("a", "z", "cart", 1.0, t + pd.Timedelta(1, "D")),  # same time as y, later row
        ("a", "w", "purchase", 1.0, t + pd.Timedelta(2, "D")),
        ("b", "x", "view", 1.0, t),
    ])
    ordered = order_events(frame, max_events=3)
    a = ordered[ordered["customer_id"] == "a"]
    assert a["item_id"].tolist() == ["z", "w", "x"]  # y (oldest, first of the tie) cut
    assert a["position"].tolist() == [1, 2, 3]
    assert ordered[ordered["customer_id"] == "b"]["position"].tolist() == [1]


def test_order_events_refuses_a_mix_of_dated_and_undated_events() -> None:
    frame = _events([("a", "x", "view", 1.0, pd.Timestamp("2025-01-01")),
                     ("a", "y", "view", 1.0, pd.NaT)])
    with pytest.raises(ValueError, match="'timestamp'.*1 missing"):
        order_events(frame)


def test_order_events_without_any_timestamp_uses_the_row_order() -> None:
    frame = _events([("a", "x", "view", 1.0, pd.NaT), ("a", "y", "view", 1.0, pd.NaT),
                     ("a", "w", "view", 1.0, pd.NaT)])
    assert order_events(frame)["item_id"].tolist() == ["x", "y", "w"]


def test_vocabulary_reads_attributes_flags_numbers_and_customer_features() -> None:
    events = _events([("1", "m1", "rating", 4.0, pd.NaT), ("1", "m2", "rating", 2.0, pd.NaT),
                      ("2", "m3", "rating", 5.0, pd.NaT)])
    items = pd.DataFrame({
        "item_id": ["m1", "m2", "m3", "m4"],
        "title": ["A", "B", "C", "D"],  # one value per item: an identifier, not an attribute
        "year": [1990, 1995, 1999, 2001],
        "genre_action": [1, 0, 1, 0],
        "genre_drama": [1, 1, 0, 0],
        "category": ["action", "drama", "action", "x"],
    })
    customers = pd.DataFrame({"customer_id": ["1", "2"], "age": [20, 60], "gender": ["F", "M"]})
    vocab = build_vocabulary(events, items, customers)
    assert list(vocab.item_ids) == ["m1", "m2", "m3"]  # items never interacted are not coded
    assert vocab.event_from_value and vocab.events == ("rating:2", "rating:4", "rating:5")
    assert set(vocab.categorical) == {"category"}
    assert vocab.flag_names == {"genre": ("genre_action", "genre_drama")}
    assert vocab.flags["genre"][1].tolist() == [1.0, 1.0]  # m1 is both
    assert vocab.numeric_names == ("year",)
    assert vocab.numeric[1:, 0].tolist() == [0.0, 0.5, 1.0]
    assert set(vocab.customer_features) == {"age", "gender"}
    codes = vocab.encode_customers(customers, ["2", "1", "unknown"])
    assert (codes[2] == 0).all() and (codes[:2] > 0).all()


def test_encode_sequences_pads_reports_empty_customers_and_unknown_items() -> None:
    events = _events([("a", "x", "view", 1.0, pd.NaT), ("a", "y", "cart", 1.0, pd.NaT),
                      ("b", "y", "view", 1.0, pd.NaT)])
    vocab = build_vocabulary(events)
    extra = pd.concat([events, _events([("b", "new-item", "view", 1.0, pd.NaT)])])
    encoded = encode_sequences(order_events(extra), vocab, customer_ids=["a", "b", "c"])
    data = encoded.data
    assert encoded.empty_customers.tolist() == ["c"]
    assert encoded.unknown_item_events == 1
    assert data.customer_ids.tolist() == ["a", "b"]
    assert data.lengths.tolist() == [2, 1]
    assert data.items.tolist() == [[1, 2], [2, 0]]
    assert data.events[0].tolist() == [vocab.events.index("view") + 1,
                                       vocab.events.index("cart") + 1]
    assert not data.has_repeats()


def test_encode_sequences_keeps_the_last_max_events() -> None:
    events = _events([("a", f"i{k}", "view", 1.0, pd.NaT) for k in range(6)])
    vocab = build_vocabulary(events)
    data = encode_sequences(order_events(events), vocab, max_events=4).data
    assert data.lengths.tolist() == [4]
    assert [vocab.item_ids[c - 1] for c in data.items[0]] == ["i2", "i3", "i4", "i5"]


def test_leave_last_out_by_history_length() -> None:
    rows = [("one", "x", "view", 1.0, pd.NaT)]
    rows += [("two", i, "view", 1.0, pd.NaT) for i in ("x", "y")]
    rows += [("four", i, "view", 1.0, pd.NaT) for i in ("x", "y", "z", "w")]
    vocab = build_vocabulary(_events(rows))
    data = encode_sequences(order_events(_events(rows)), vocab).data
    split = leave_last_out(data)
    code = dict(zip(vocab.item_ids, range(1, 5), strict=True))
    by_id = {c: i for i, c in enumerate(data.customer_ids)}
    # one event: kept for training (no target), no validation or test target
    assert split.train.lengths[by_id["one"]] == 1
    assert split.validation_targets[by_id["one"]] == split.test_targets[by_id["one"]] == 0
    # two events: the last is the test target, the first its input
    assert split.test_targets[by_id["two"]] == code["y"]
    assert split.validation_targets[by_id["two"]] == 0
    assert split.test_inputs.lengths[by_id["two"]] == 1
    # four: train on 2, validate on the 3rd, test on the 4th from the first 3
    assert split.train.lengths[by_id["four"]] == 2
    assert split.validation_targets[by_id["four"]] == code["z"]
    assert split.test_targets[by_id["four"]] == code["w"]
    assert split.test_inputs.lengths[by_id["four"]] == 3


def test_behaviour_generator_plants_cycles_affinity_and_the_requested_sizes() -> None:
    data = make_behaviour_dataset(300, 120, 3, n_behaviour_segments=4, seed=3)
    assert len(data.customers) == len(data.truth) == 300
    assert len(data.items) == 120
    assert {"customer_id", "item_id", "value", "event", "timestamp"} <= set(data.interactions)
    assert set(data.interactions["value"]) <= {0.0, 1.0}  # thumbs down / up
    assert set(data.interactions["event"]) == {"view", "cart", "purchase"}
    assert {"item_id", "category", "brand", "price", "quality"} <= set(data.items)
    assert {"customer_id", "age", "gender", "region"} <= set(data.customers)
    assert set(data.truth["segment"]) == {0, 1, 2}
    assert set(data.truth["behaviour_segment"]) == {0, 1, 2, 3}
    cycles = segment_cycles(4, 8)
    assert sorted(cycles[0]) == sorted(cycles[1]) and cycles[0] == cycles[1][::-1]
    merged = data.interactions.merge(data.items, on="item_id").merge(data.truth, on="customer_id")
    # each segment's own categories dominate its events
    for s, cycle in enumerate(cycles):
        mine = merged[merged["behaviour_segment"] == s]
        share = mine["category"].isin([f"cat_{c}" for c in cycle]).mean()
        assert share > 0.6
    # premium-affine customers buy premium items far more often
    premium = merged[(merged["event"] == "purchase") & (merged["price"] >= PREMIUM_PRICE)]
    per_customer = premium.groupby("customer_id").size().reindex(data.truth["customer_id"],
                                                                 fill_value=0)
    affine = data.truth["premium_affine"].to_numpy()
    assert per_customer[affine].mean() > 3 * per_customer[~affine].mean()
    # events are in time order within each customer
    assert data.interactions.groupby("customer_id")["timestamp"].is_monotonic_increasing.all()
