"""Regression and classification metrics, from targets and predictions."""

from __future__ import annotations

import math

import numpy as np

from .errors import DataError


def regression_metrics(y_true, y_pred):
    """MSE, RMSE, MAE and R^2 of predictions (n,) or (n, k) against targets of the same size.

    R^2 is ``1 - SS_res / SS_tot`` over all outputs (scikit-learn's for one
    output); NaN when the targets are constant.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    # Sizes must match exactly: (n, 1) against (n, 2) would broadcast into wrong numbers.
    if np.size(y_pred) != y_true.size:
        raise DataError(f"y_pred has {np.size(y_pred)} values but y_true has {y_true.size}: they must match")
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(y_true.shape)
    r = y_true - y_pred
    mse = float(np.vdot(r, r)) / r.size
    centred = y_true - y_true.mean(axis=0)
    ss_tot = float(np.vdot(centred, centred))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(np.abs(r).mean()),
        "r2": 1.0 - float(np.vdot(r, r)) / ss_tot if ss_tot > 0 else math.nan,
    }


def confusion_matrix(y_true, y_pred, n_classes):
    """Counts (n_classes, n_classes): row = true class, column = predicted class."""
    # Equal lengths: a single label would otherwise broadcast against the other list.
    if np.size(y_true) != np.size(y_pred):
        raise DataError(f"y_true has {np.size(y_true)} labels but y_pred has {np.size(y_pred)}: they must match")
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (_labels("y_true", y_true, n_classes), _labels("y_pred", y_pred, n_classes)), 1)
    return counts


def _labels(name, y, n_classes):
    """Class indices as intp, checked to be whole numbers in [0, n_classes).

    Checked because indexing would silently count -1 in the last class and 1.5 in class 1.
    """
    a = np.asarray(y).reshape(-1)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise DataError(f"{name} must hold class indices (whole numbers), got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= n_classes):
        raise DataError(f"{name} holds labels outside [0, {n_classes}): min {a.min()}, max {a.max()}")
    return a.astype(np.intp)


def classification_metrics(y_true, y_pred, n_classes):
    """Accuracy, macro-averaged precision, recall and F1, and the confusion matrix.

    For two classes precision, recall and F1 are those of class 1 (the
    positive class), as scikit-learn's default ``average="binary"``; with more
    classes they are macro averages. A class never predicted has precision 0.
    """
    return confusion_metrics(confusion_matrix(y_true, y_pred, n_classes))


def confusion_metrics(cm):
    """:func:`classification_metrics` from the confusion counts (n_classes, n_classes) alone (e.g.
    counts added up block by block)."""
    cm = np.asarray(cm, dtype=np.int64)
    n_classes = len(cm)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    pick = (lambda a: float(a[1])) if n_classes == 2 else (lambda a: float(a.mean()))
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "precision": pick(precision),
        "recall": pick(recall),
        "f1": pick(f1),
        "confusion_matrix": cm.tolist(),
    }
