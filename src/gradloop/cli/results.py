"""What a run reports of a trained model: its metrics on a set of rows (arrays, or a source in one
streaming pass), the printed lines, and the ``--log``'s final line."""

from __future__ import annotations

import math

import numpy as np

from ..fast.blocksums import merge_moments, shipping_copy, tree_sum
from ..fast.executors import executor_for
from ..layers import Dense
from ..metrics import classification_metrics, confusion_matrix, confusion_metrics, regression_metrics

FINAL_ROWS = 5000  # rows of targets and predictions kept in the --log's final line


def model_summary(model, loss):
    sizes = [model.n_inputs] + [layer.out_features for layer in model.layers if isinstance(layer, Dense)]
    kind = "linear model" if len(sizes) == 2 else "MLP " + "-".join(map(str, sizes))
    return f"{kind}, {loss.name} loss, {sum(p.size for p in model.parameters())} parameters"


def metrics_of(bundle, X_scaled, y):
    """Metrics of the bundle's network on already-scaled inputs (targets: values or class indices)."""
    model = bundle.model
    if model.task == "regression":
        return regression_metrics(y, model.predict(X_scaled)[:, 0])
    proba = model.predict_proba(X_scaled)
    onehot = np.eye(proba.shape[1])[y]
    # For classifiers the regression keys describe the probabilities against one-hot targets (Brier score).
    result = regression_metrics(onehot[:, 1] if proba.shape[1] == 2 else onehot,
                                proba[:, 1] if proba.shape[1] == 2 else proba)
    result.update(classification_metrics(y, proba.argmax(axis=1), proba.shape[1]))
    return result


def metrics_partial(X, Y, model):
    """One block's sums for the metrics :func:`metrics_of` computes in memory: rows, squared and absolute
    errors, the targets' means and squared deviations (merged as block moments, without cancellation),
    and a classifier's confusion counts (None for regression). A classifier's errors are its
    probabilities against one-hot targets (the Brier score), as in memory."""
    if model.task == "regression":
        T, P, counts = np.asarray(Y, dtype=np.float64).reshape(len(X), -1), model.predict_raw(X), None
    else:
        proba, labels = model.predict_proba(X), np.asarray(Y).reshape(-1)
        k = proba.shape[1]
        T = np.eye(k)[labels]
        T, P = (T[:, 1:], proba[:, 1:]) if k == 2 else (T, proba)
        counts = confusion_matrix(labels, proba.argmax(axis=1), k)
    err = np.asarray(P, dtype=np.float64) - T
    mean = T.mean(axis=0)
    return len(X), float(np.vdot(err, err)), float(np.abs(err).sum()), mean, ((T - mean) ** 2).sum(axis=0), counts


def _merge_metrics(a, b):
    n, mean, spread = merge_moments((a[0], a[3], a[4]), (b[0], b[3], b[4]))
    return n, a[1] + b[1], a[2] + b[2], mean, spread, None if a[5] is None else a[5] + b[5]


def source_metrics(model, source, client=None):
    """MSE, RMSE, MAE and R^2 (and a classifier's accuracy, precision, recall, F1 and confusion matrix)
    of a model over a source, in one streaming pass."""
    model.eval()
    blocks = executor_for(source, client)
    try:
        n, sse, sae, _, spread, counts = tree_sum(blocks.map(metrics_partial, shipping_copy(model), parallel=False),
                                                  _merge_metrics)
    finally:
        blocks.close()
    size = n * len(spread)
    mse = sse / size
    total = float(spread.sum())
    metrics = {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": sae / size,
               "r2": 1.0 - sse / total if total > 0 else math.nan}  # as in memory: undefined for a constant target
    if counts is not None:
        metrics.update(confusion_metrics(counts))
    return metrics


def metrics_line(title, m):
    """One line of the metrics the train command prints for a set of rows (a classifier's or a regression's)."""
    if "accuracy" in m:
        return (f"  {title:14s} accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  "
                f"recall {m['recall']:.4f}  f1 {m['f1']:.4f}")
    r2 = "n/a (constant target)" if math.isnan(m["r2"]) else f"{m['r2']:.4f}"
    return f"  {title:14s} MSE {m['mse']:.6g}  RMSE {m['rmse']:.6g}  MAE {m['mae']:.6g}  R^2 {r2}"


def final_line(bundle, metrics, rows, head, split, history, sweep=None):
    """The run's result, the ``--log``'s last line ``{"final": true, ...}`` (and the --report's summary).

    metrics: of the held-out rows (the training rows when none are held out), ``rows`` of them;
    head: their first FINAL_ROWS rows, (X scaled, y: values or class indices). The line holds the
    task, those rows' targets and predictions, the classes, the metrics and confusion matrix: what
    ``gradloop report`` draws beside the epochs. Labels are the data's. Also why training stopped,
    whose weights the model kept, and the features' names.
    """
    model, classes = bundle.model, bundle.classes
    metrics = dict(metrics)
    confusion = metrics.pop("confusion_matrix", None)
    X_head, true = head
    pred = model.predict(X_head)
    if classes is None:
        y_true, y_pred = true.tolist(), pred.reshape(len(pred), -1)[:, 0].tolist()
    else:
        y_true, y_pred = [classes[i] for i in true], [classes[i] for i in pred]
    restored = history.restored_epoch
    line = {"final": True, "task": model.task, "split": split, "rows": rows, "y_true": y_true,
            "y_pred": y_pred, "classes": classes, "metrics": metrics,
            "stopped": history.stop_message or f"after its last epoch ({history.epochs_run})",
            "kept_epoch": history.epochs_run if restored is None else restored, "restored": restored is not None,
            "feature_names": [str(name) for name in bundle.feature_names]}
    if confusion is not None:
        line["confusion_matrix"] = confusion
    if sweep is not None:  # the --lr find curve, for the report
        line["lr_find"] = {"lrs": sweep.lrs, "losses": sweep.losses, "suggestion": sweep.suggestion,
                           "stable_lr": sweep.stable_lr}
    return line
