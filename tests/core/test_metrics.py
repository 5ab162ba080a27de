"""Recovery and prediction metrics."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation_dagster.core.metrics import (
    accuracy,
    adjusted_rand,
    auc,
    hungarian_accuracy,
    sorted_label_accuracy,
)


def test_sorted_and_hungarian_differ_on_swapped_labels():
    true = np.array([0, 0, 1, 1, 2, 2])
    swapped = np.array([1, 1, 0, 0, 2, 2])
    assert sorted_label_accuracy(true, swapped) == pytest.approx(1 / 3)
    assert hungarian_accuracy(true, swapped) == 1.0
    assert adjusted_rand(true, swapped) == pytest.approx(1.0)


def test_sorting_rule_penalises_merged_segments():
    true = np.array([0, 0, 1, 1, 2, 2])
    merged = np.array([0, 0, 0, 0, 1, 1])  # segments 0 and 1 merged
    assert sorted_label_accuracy(true, merged) == pytest.approx(2 / 6)
    assert hungarian_accuracy(true, merged) == pytest.approx(4 / 6)


def test_hungarian_with_more_predicted_than_true_segments():
    true = np.array([0, 0, 0, 1, 1, 1])
    predicted = np.array([0, 0, 2, 1, 1, 1])
    assert hungarian_accuracy(true, predicted) == pytest.approx(5 / 6)


def test_ari_of_random_labels_is_near_zero():
    rng = np.random.default_rng(0)
    true, predicted = rng.integers(3, size=3000), rng.integers(3, size=3000)
    assert abs(adjusted_rand(true, predicted)) < 0.01
    assert adjusted_rand(true, true) == pytest.approx(1.0)


def test_accuracy_and_auc():
    assert accuracy([1, 0, 1], [1, 1, 1]) == pytest.approx(2 / 3)
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc([0, 1, 0, 1], [0.9, 0.1, 0.8, 0.2]) == 0.0
    assert np.isnan(auc([1, 1], [0.2, 0.3]))  # documented: undefined with one class


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same shape"):
        sorted_label_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="same shape"):
        hungarian_accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="same shape"):
        adjusted_rand([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="no labels"):
        sorted_label_accuracy([], [])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])
