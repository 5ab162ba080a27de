"""The UNICON network and its training: causality, determinism, embeddings, persistence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from segmentation_dagster.core.sequence.data import (
    SequenceData,
    build_vocabulary,
    encode_sequences,
    leave_last_out,
    order_events,
)
from segmentation_dagster.core.sequence.metrics import (
    category_diversity,
    hit_rate,
    ndcg,
    rank_targets,
    top_k,
)
from segmentation_dagster.core.sequence.model import (
    ClassAttentionHead,
    LookalikeNetwork,
    UniconNetwork,
)
from segmentation_dagster.core.sequence.synthetic import make_behaviour_dataset
from segmentation_dagster.core.sequence.train import (
    NextItemModel,
    UniconConfig,
    resolve_device,
    seen_so_far,
)

TINY = UniconConfig(d_model=16, n_heads=2, n_layers=1, dropout=0.1, learning_rate=5e-3,
                    max_epochs=3, patience=3, threads=1, batch_size=64)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def small():
    """(vocabulary, sequences) of 120 synthetic customers with item attributes."""
    data = make_behaviour_dataset(120, 64, 2, n_behaviour_segments=2, mean_events=12, seed=0)
    events = data.interactions.assign(customer_id=data.interactions["customer_id"].astype(str),
                                      item_id=data.interactions["item_id"].astype(str))
    items = data.items.assign(item_id=data.items["item_id"].astype(str))
    customers = data.customers.assign(customer_id=data.customers["customer_id"].astype(str))
    ordered = order_events(events, 20)
    vocabulary = build_vocabulary(ordered, items, customers)
    return vocabulary, encode_sequences(ordered, vocabulary, customers).data


def _network(vocabulary, seed: int = 0) -> UniconNetwork:
    torch.manual_seed(seed)
    return UniconNetwork(vocabulary, max_len=20, d_model=16, n_heads=2, n_layers=2,
                         dropout=0.1).eval()


def _tensors(data: SequenceData):
    return (torch.from_numpy(data.items.astype(np.int64)),
            torch.from_numpy(data.events.astype(np.int64)),
            torch.from_numpy(data.features.astype(np.int64)))


def test_output_at_t_does_not_change_when_later_events_change(small) -> None:
    vocabulary, data = small
    network = _network(vocabulary)
    rows = np.flatnonzero(data.lengths >= 10)[:8]
    items, events, features = _tensors(data.subset(rows))
    t = 5  # event index; model position t + 1
    changed_items, changed_events = items.clone(), events.clone()
    changed_items[:, t + 1:10] = (changed_items[:, t + 1:10] % vocabulary.n_items) + 1
    changed_events[:, t + 1:10] = (changed_events[:, t + 1:10] % vocabulary.n_events) + 1
    with torch.no_grad():
        before = network(items, events, features)
        after = network(changed_items, changed_events, features)
    assert torch.equal(before[:, : t + 2], after[:, : t + 2])  # CLS and events 0..t
    # the change is real: later outputs move
    assert (before[:, t + 2:11] - after[:, t + 2:11]).abs().max() > 1e-3


def test_customer_features_reach_every_position_through_the_cls_token(small) -> None:
    vocabulary, data = small
    network = _network(vocabulary)
    items, events, features = _tensors(data.subset(np.arange(4)))
    other = (features % torch.tensor(vocabulary.customer_cardinalities()).clamp(min=2)) + 1
    other = torch.minimum(other, torch.tensor(vocabulary.customer_cardinalities()) - 1)
    with torch.no_grad():
        a = network(items, events, features)
        b = network(items, events, other)
    assert (a[:, 1:] - b[:, 1:]).abs().max() > 1e-4


def test_class_attention_head_ignores_padding(small) -> None:
    vocabulary, data = small
    torch.manual_seed(0)
    network = LookalikeNetwork(_network(vocabulary), ClassAttentionHead(16, 2, 0.0)).eval()
    rows = np.flatnonzero(data.lengths < 15)[:6]
    subset = data.subset(rows)
    items, events, features = _tensors(subset)
    lengths = torch.from_numpy(subset.lengths)
    width = int(subset.lengths.max())
    with torch.no_grad():
        cropped = network(items[:, :width], events[:, :width], features, lengths)
        padded = network(items, events, features, lengths)
    torch.testing.assert_close(cropped, padded, rtol=1e-5, atol=1e-6)


def test_training_is_seeded_and_deterministic(small) -> None:
    vocabulary, data = small
    split = leave_last_out(data)

    def fit(seed: int) -> np.ndarray:
        config = UniconConfig(**{**vars(TINY), "seed": seed, "max_epochs": 2})
        model = NextItemModel(config).fit(split.train, vocabulary,
                                          validation=(split.train, split.validation_targets))
        return model.embed(data)

    first, again, other = fit(0), fit(0), fit(1)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3


def test_next_item_training_learns_and_beats_nothing_learned(small) -> None:
    """After a few epochs the loss falls and the model ranks the held-out item well above
    chance (1 in n_items); the bar is chance x 2, far below what it reaches."""
    vocabulary, data = small
    split = leave_last_out(data)
    model = NextItemModel(UniconConfig(**{**vars(TINY), "max_epochs": 6})).fit(
        split.train, vocabulary, validation=(split.train, split.validation_targets))
    losses = [r.train_loss for r in model.history_]
    assert losses[-1] < losses[0]
    ranks = model.rank(split.test_inputs, split.test_targets)
    chance = 10 / vocabulary.n_items
    assert hit_rate(ranks, 10) > 2 * chance
    assert model.best_epoch_ == max(model.history_, key=lambda r: r.validation_ndcg).epoch


def test_one_event_customer_gets_a_finite_embedding_and_empty_ones_are_refused(small) -> None:
    vocabulary, data = small
    split = leave_last_out(data)
    model = NextItemModel(TINY).fit(split.train, vocabulary)
    single = data.subset([0]).with_lengths(np.array([1]))
    embedding = model.embed(single)
    assert embedding.shape == (1, 16) and np.isfinite(embedding).all()
    with pytest.raises(ValueError, match="without events"):
        model.embed(data.subset([0]).with_lengths(np.array([0])))


def test_fit_refuses_data_without_any_next_item(small) -> None:
    vocabulary, data = small
    with pytest.raises(ValueError, match="two events"):
        NextItemModel(TINY).fit(data.with_lengths(np.minimum(data.lengths, 1)), vocabulary)


def test_saved_model_embeds_the_same(small, tmp_path) -> None:
    vocabulary, data = small
    model = NextItemModel(TINY).fit(leave_last_out(data).train, vocabulary)
    model.save(tmp_path / "model.pt")
    loaded = NextItemModel.load(tmp_path / "model.pt")
    np.testing.assert_allclose(loaded.embed(data), model.embed(data), rtol=1e-6, atol=1e-6)
    assert loaded.vocabulary_.events == vocabulary.events


def test_seen_so_far_marks_the_items_before_each_prediction() -> None:
    items = torch.tensor([[3, 1, 2, 0], [2, 4, 0, 0]])  # 0 = padding
    predicting = items[:, 1:] > 0  # outputs at events 0, 1 of row 0 and 0 of row 1
    seen = seen_so_far(items, 4, predicting)  # columns: item codes 1..4
    assert seen.tolist() == [
        [False, False, True, False],  # row 0 after event 0 (item 3), predicting item 1
        [True, False, True, False],  # row 0 after events 0-1, predicting item 2
        [False, True, False, False],  # row 1 after event 0 (item 2), predicting item 4
    ]


def test_training_that_excludes_seen_items_refuses_repeats(small) -> None:
    vocabulary, data = small
    repeated = data.subset([0])
    items = repeated.items.copy()
    items[0, 1] = items[0, 0]
    repeated = SequenceData(repeated.customer_ids, items, repeated.events, repeated.lengths,
                            repeated.features)
    with pytest.raises(ValueError, match="never repeat"):
        NextItemModel(TINY).fit(repeated, vocabulary, exclude_seen=True)


def test_device_auto_takes_a_gpu_only_when_torch_sees_one() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_asking_for_cuda_without_a_gpu_is_a_clear_error(small) -> None:
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        resolve_device("cuda")
    vocabulary, data = small
    with pytest.raises(ValueError, match="'cuda:0'"):
        NextItemModel(UniconConfig(**{**vars(TINY), "device": "cuda:0"})).fit(
            leave_last_out(data).train, vocabulary)


@pytest.mark.parametrize("name", ["tpu", "not a device", "meta"])
def test_unknown_devices_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=repr(name)):
        resolve_device(name)


def test_a_saved_model_loads_on_the_device_asked_for(small, tmp_path) -> None:
    vocabulary, data = small
    model = NextItemModel(UniconConfig(**{**vars(TINY), "device": "cpu"})).fit(
        leave_last_out(data).train, vocabulary)
    assert model.device_ == torch.device("cpu")
    model.save(tmp_path / "model.pt")
    loaded = NextItemModel.load(tmp_path / "model.pt", device="auto")
    assert loaded.config.device == "auto"
    assert next(loaded.network_.parameters()).device == resolve_device("auto")
    np.testing.assert_allclose(loaded.embed(data), model.embed(data), rtol=1e-5, atol=1e-5)


def test_rank_and_top_k_exclude_seen_items_and_break_ties_by_code() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]])
    seen = np.array([[2, 0], [0, 0]])  # item code 2 (score 0.9) removed for row 0
    ranks = rank_targets(scores, np.array([3, 4]), seen)
    assert ranks.tolist() == [0, 3]  # codes 3 and 4 tie in row 0: 3 first; row 1: all tie
    assert top_k(scores, 2, seen)[0].tolist() == [3, 4]
    assert hit_rate(np.array([0, 9, 10]), 10) == pytest.approx(2 / 3)
    assert ndcg(np.array([0, 1])) == pytest.approx((1 + 1 / np.log2(3)) / 2)


def test_category_diversity_counts_distinct_categories() -> None:
    category = np.array([0, 1, 1, 2, 3])  # code 0 is padding
    lists = np.array([[1, 2], [1, 3]])
    assert category_diversity(lists, category).tolist() == [0.5, 1.0]


def test_popularity_and_data_shapes_are_checked() -> None:
    with pytest.raises(ValueError, match="do not match"):
        SequenceData(np.array(["a"]), np.zeros((1, 3), np.int32), np.zeros((1, 2), np.int32),
                     np.array([1]), np.zeros((1, 0), np.int32))
    assert pd.isna(hit_rate(np.array([])))
