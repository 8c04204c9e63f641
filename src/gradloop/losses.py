"""Losses: the value (mean over the batch) and its gradient with respect to the predictions.

Every loss has ``value(y_true, y_pred) -> float`` and ``grad(y_true, y_pred)``
(the gradient of that mean, shape of ``y_pred``), plus ``value_and_grad`` that
shares the work, which the training loop uses. Shapes: ``y_pred`` is
(batch, outputs); for regression and binary losses ``y_true`` is (batch,) or
(batch, outputs); for softmax cross-entropy it is (batch,) integer classes.
The means follow PyTorch's ``reduction="mean"``: over every element.
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .layers import sigmoid


def _match(y_true, y_pred):
    """View targets (batch,) as (batch, 1) when the model has one output, in the predictions' dtype."""
    # Targets take the predictions' dtype so float32 gradients stay float32.
    y_true = np.asarray(y_true, dtype=y_pred.dtype)
    if y_true.ndim == 1 and y_pred.ndim == 2:
        return y_true.reshape(-1, 1)
    return y_true


class Loss:
    """Base: ``value`` and ``grad`` are derived from ``value_and_grad``."""

    name = ""
    task = "regression"  # regression | binary | multiclass: how outputs turn into answers

    def value(self, y_true, y_pred) -> float:
        return self.value_and_grad(y_true, y_pred)[0]

    def grad(self, y_true, y_pred):
        return self.value_and_grad(y_true, y_pred)[1]

    def config(self):
        return {"name": self.name}

    def __repr__(self):
        return f"{type(self).__name__}()"


class MSE(Loss):
    """Mean squared error ``mean((p - y)**2)``; gradient ``2 (p - y) / n``."""

    name = "mse"

    def value(self, y_true, y_pred):
        r = y_pred - _match(y_true, y_pred)
        return float(np.vdot(r, r)) / r.size

    def value_and_grad(self, y_true, y_pred):
        r = y_pred - _match(y_true, y_pred)
        value = float(np.vdot(r, r)) / r.size
        r *= 2.0 / r.size
        return value, r


class MAE(Loss):
    """Mean absolute error ``mean(|p - y|)``; gradient ``sign(p - y) / n`` (0 where equal, as PyTorch)."""

    name = "mae"

    def value_and_grad(self, y_true, y_pred):
        r = y_pred - _match(y_true, y_pred)
        value = float(np.abs(r).sum()) / r.size
        return value, np.sign(r) / r.dtype.type(r.size)


class Huber(Loss):
    """Huber loss: ``r**2 / 2`` where ``|r| < delta``, else ``delta * (|r| - delta/2)``.

    Gradient ``clip(r, -delta, delta) / n``. Matches ``torch.nn.HuberLoss(delta=delta)``.
    """

    name = "huber"

    def __init__(self, delta=1.0):
        delta = float(delta)
        if not delta > 0:
            raise ConfigError(f"Huber delta must be positive, got {delta}")
        self.delta = delta

    def value_and_grad(self, y_true, y_pred):
        r = y_pred - _match(y_true, y_pred)
        a = np.abs(r)
        per = np.where(a < self.delta, 0.5 * r * r, self.delta * (a - 0.5 * self.delta))
        return float(per.sum()) / r.size, np.clip(r, -self.delta, self.delta) / r.dtype.type(r.size)

    def config(self):
        return {"name": self.name, "delta": self.delta}

    def __repr__(self):
        return f"Huber(delta={self.delta})"


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy on logits z with targets y in {0, 1}.

    ``max(z, 0) - z*y + log(1 + exp(-|z|))`` never overflows (stable for |z| = 1e4);
    gradient ``(sigmoid(z) - y) / n``. Matches ``torch.nn.BCEWithLogitsLoss``.
    """

    name = "bce"
    task = "binary"

    def value_and_grad(self, y_true, y_pred):
        y = _match(y_true, y_pred).astype(y_pred.dtype, copy=False)
        z = y_pred
        per = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))
        return float(per.sum()) / z.size, (sigmoid(z) - y) / z.dtype.type(z.size)


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy on logits Z (batch, classes) with integer labels y (batch,).

    ``logsumexp(Z) - Z[y]`` with the max subtracted first (stable for 1e4 logits);
    gradient ``(softmax(Z) - onehot(y)) / batch``. Matches ``torch.nn.CrossEntropyLoss``.
    """

    name = "cross-entropy"
    task = "multiclass"

    def value(self, y_true, y_pred):
        exp, total, picked, _ = _shifted_exp(y_true, y_pred)
        return float(np.log(total).sum() - picked) / y_pred.shape[0]

    def value_and_grad(self, y_true, y_pred):
        n = y_pred.shape[0]
        exp, total, picked, at_label = _shifted_exp(y_true, y_pred)
        value = float(np.log(total).sum() - picked) / n
        # grad = (exp / total - onehot) / n, built in exp's array (new, and no one else holds it)
        grad = np.divide(exp, total, out=exp)
        grad.reshape(-1)[at_label] -= 1
        grad /= n
        return value, grad


def _shifted_exp(y_true, z):
    """Pieces of softmax cross-entropy on logits z (n, k) and labels y (n,).

    Returns exp(z - max) (a new array), its row sums (n, 1), the sum of
    (z - max)[i, y_i], and the flat positions i * k + y_i of the labels.
    """
    n, k = z.shape
    labels = np.asarray(y_true).reshape(-1).astype(np.intp, copy=False)
    at_label = np.arange(0, n * k, k) + labels  # z.reshape(-1)[at_label] is z[i, y_i], a cheaper gather
    shifted = z - row_max(z)
    picked = shifted.reshape(-1).take(at_label).sum()
    exp = np.exp(shifted, out=shifted)
    return exp, exp.sum(axis=1, keepdims=True), picked, at_label


# Row blocks of the transposed copy in row_max: 2,048 rows of <= 32 classes stay inside L2.
_ROW_MAX_BLOCK = 2048


def row_max(z):
    """Maximum of each row of z (batch, classes), shape (batch, 1).

    NumPy reduces a short last axis one row at a time: for a batch of 128 with
    10 classes ``z.max(axis=1)`` costs 7 us, more than the rest of the loss.
    With few classes (2 to 32) and enough rows, the rows of the transposed
    copy are compared in vectorized sweeps instead (1.8 us; 0.4 ms instead of
    3.1 ms for 60,000 x 10). A maximum is exact in any order, so both give the
    same numbers (NaN included).
    """
    n, k = z.shape
    if not (2 <= k <= 32 and n >= 64):  # measured crossovers, float32 and float64
        return z.max(axis=1, keepdims=True)
    if n <= _ROW_MAX_BLOCK:
        return z.T.copy().max(axis=0).reshape(n, 1)
    out = np.empty((n, 1), dtype=z.dtype)
    for lo in range(0, n, _ROW_MAX_BLOCK):
        block = z[lo:lo + _ROW_MAX_BLOCK]
        np.max(block.T.copy(), axis=0, out=out[lo:lo + len(block), 0])
    return out


def softmax(z):
    """Row-wise softmax of logits (batch, classes), stable for large logits."""
    e = np.exp(z - row_max(z))
    return e / e.sum(axis=1, keepdims=True)


LOSSES = {cls.name: cls for cls in (MSE, MAE, Huber, BinaryCrossEntropy, SoftmaxCrossEntropy)}


def get_loss(name_or_loss):
    """A loss object from a name ("mse", "mae", "huber", "bce", "cross-entropy") or a Loss."""
    if isinstance(name_or_loss, Loss):
        return name_or_loss
    if name_or_loss not in LOSSES:
        raise ConfigError(f"unknown loss {name_or_loss!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name_or_loss]()


def fit_targets(model, loss, y):
    """Targets shaped once for the loss: (n, outputs) for regression/binary, (n,) int for classes."""
    if loss.task == "multiclass":
        labels = np.asarray(y).reshape(-1)
        if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                            or labels.max() >= model.n_outputs):
            raise ConfigError(f"class labels must be integers in [0, {model.n_outputs}) for a model with "
                              f"{model.n_outputs} outputs, got {labels.dtype} in [{labels.min()}, {labels.max()}]")
        return labels.astype(np.intp, copy=False)
    y = np.asarray(y, dtype=model.dtype)
    return y.reshape(-1, 1) if y.ndim == 1 else y
