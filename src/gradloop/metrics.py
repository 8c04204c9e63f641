"""Regression and classification metrics, from targets and predictions."""

from __future__ import annotations

import math

import numpy as np


def regression_metrics(y_true, y_pred):
    """MSE, RMSE, MAE and R^2 of predictions (n,) or (n, k) against targets of the same size.

    R^2 is ``1 - SS_res / SS_tot`` over all outputs (scikit-learn's for one
    output); NaN when the targets are constant.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(y_true.shape) if np.size(y_pred) == np.size(
        y_true) else np.asarray(y_pred, dtype=np.float64)
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
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y_true, dtype=np.intp), np.asarray(y_pred, dtype=np.intp)), 1)
    return counts


def classification_metrics(y_true, y_pred, n_classes):
    """Accuracy, macro-averaged precision, recall and F1, and the confusion matrix.

    For two classes precision, recall and F1 are those of class 1 (the
    positive class), as scikit-learn's default ``average="binary"``; with more
    classes they are macro averages. A class never predicted has precision 0.
    """
    cm = confusion_matrix(y_true, y_pred, n_classes)
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
