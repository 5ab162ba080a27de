"""Recovery and prediction metrics."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import accuracy_score, adjusted_rand_score, roc_auc_score
from sklearn.metrics.cluster import contingency_matrix


def sorted_label_accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    """The paper's rule: both labelings are numbered by increasing alpha, then compared as is.

    It penalises merged or swapped segments, unlike a best matching.
    """
    true, predicted = _check_pair(true, predicted)
    return float(accuracy_score(true, predicted))


def hungarian_accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of predicted to true segments.

    scikit-learn has the contingency table but no matched accuracy; the matching is
    scipy's Hungarian algorithm on it.
    """
    true, predicted = _check_pair(true, predicted)
    confusion = contingency_matrix(true, predicted)
    r, c = linear_sum_assignment(-confusion)
    return float(confusion[r, c].sum() / len(true))


def adjusted_rand(true: np.ndarray, predicted: np.ndarray) -> float:
    _check_pair(true, predicted)
    return float(adjusted_rand_score(true, predicted))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float(accuracy_score(y_true, y_pred))


def auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """ROC-AUC; NaN when only one class is present (AUC is undefined there)."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, scores))


def _check_pair(true: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    true, predicted = np.asarray(true), np.asarray(predicted)
    if true.shape != predicted.shape:
        raise ValueError(
            f"true and predicted labels must have the same shape; got {true.shape} "
            f"and {predicted.shape}"
        )
    if len(true) == 0:
        raise ValueError("no labels to compare")
    return true, predicted
