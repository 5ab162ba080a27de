"""Recovery and prediction metrics."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, roc_auc_score


def sorted_label_accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    """The paper's rule: both labelings are numbered by increasing alpha, then compared as is.

    It penalises merged or swapped segments, unlike a best matching.
    """
    true, predicted = _check_pair(true, predicted)
    return float((true == predicted).mean())


def hungarian_accuracy(true: np.ndarray, predicted: np.ndarray) -> float:
    """Accuracy under the best one-to-one matching of predicted to true segments."""
    _check_pair(true, predicted)
    true_codes, t = np.unique(true, return_inverse=True)
    pred_codes, p = np.unique(predicted, return_inverse=True)
    confusion = np.zeros((len(true_codes), len(pred_codes)))
    np.add.at(confusion, (t, p), 1)
    r, c = linear_sum_assignment(-confusion)
    return float(confusion[r, c].sum() / len(t))


def adjusted_rand(true: np.ndarray, predicted: np.ndarray) -> float:
    _check_pair(true, predicted)
    return float(adjusted_rand_score(true, predicted))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((y_true == y_pred).mean())


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
