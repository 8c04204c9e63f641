"""The chapter's loop explained line by line, with one epoch's numbers in it.

``explain(X, Y, weights, lr, epoch=k)`` takes the weights ``train`` reaches after k-1
epochs and writes out the step of epoch k the way the chapter reads its code: the
forward products, the loss as a mean of squares, each weight's gradient as the sum it
is, the update, the new prediction and loss, and why the loss fell or rose (the
first-order prediction ``lr * ||g||^2`` beside the actual change, and the step against
the stable bound 2/L). Every number comes from :func:`gradloop.gradients`,
:func:`gradloop.loss` and :func:`gradloop.train`: nothing is computed a second way.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np

from ..callbacks import Callback
from ..chapter import _stable_lr, _validate, fit_linear, gradients, loss
from ..constraints import check_all
from ..errors import ConfigError
from .network import explain_network
from ..fast.kernels import is_linear_mse
from ..sums import ArraySums
from ..optimizers import SGD

ROWS = 3  # rows whose products and squares are written out
TERMS = 4  # terms of a long sum written out before "... (n more)"


def _num(value):
    """A number to 10 significant digits: enough to check every line against the arithmetic."""
    return f"{float(value):.10g}"


def _f(value):
    """A number as a factor or a term being subtracted: negative ones in parentheses."""
    text = _num(value)
    return f"({text})" if text.startswith("-") else text


def _sum(terms, total):
    """``t1 + t2 + ... (n more) = total`` for a sum of ``terms`` (already formatted)."""
    shown = " + ".join(terms[:TERMS])
    more = f" + ... ({len(terms) - TERMS} more)" if len(terms) > TERMS else ""
    return f"{shown}{more} = {_num(total)}"


@dataclass
class Explanation:
    """One epoch of the chapter's loop, as text (``print(explanation)``) and as numbers (:meth:`to_dict`).

    Shapes: ``weights``, ``gradients``, ``new_weights`` (d, k); ``bias``, ``bias_gradient``, ``new_bias``
    (k,) or None.
    """

    epoch: int
    lr: float
    loss: float
    new_loss: float
    weights: np.ndarray
    gradients: np.ndarray
    new_weights: np.ndarray
    bias: np.ndarray | None
    bias_gradient: np.ndarray | None
    new_bias: np.ndarray | None
    predicted_change: float  # first order: -lr * ||g||^2
    actual_change: float  # new_loss - loss
    stable_lr: float | None  # 2/L
    lines: list = field(default_factory=list)

    def __str__(self):
        return "\n".join(self.lines)

    def to_dict(self):
        def listed(a):
            return None if a is None else np.asarray(a).tolist()

        return {"epoch": self.epoch, "lr": self.lr, "loss": self.loss, "new_loss": self.new_loss,
                "weights": listed(self.weights), "gradients": listed(self.gradients),
                "new_weights": listed(self.new_weights), "bias": listed(self.bias),
                "bias_gradient": listed(self.bias_gradient), "new_bias": listed(self.new_bias),
                "predicted_change": self.predicted_change, "actual_change": self.actual_change,
                "stable_lr": self.stable_lr, "text": str(self)}


def explain(X, Y, weights=None, lr=None, epoch=1, *, bias=None, round_to=None, loss=None, sample=0):
    """Explain epoch ``epoch`` of ``train(X, Y, weights, lr, epochs)``: the step from the weights it
    reaches after ``epoch - 1`` epochs; or, called as ``explain(model, X, y, loss=..., sample=i)``
    with a network, one training step of it layer by layer with sample i's numbers
    (:func:`gradloop.glass.network.explain_network`; ``lr`` shows each update's size).

    Args as :func:`gradloop.train` (X (N, d), Y (N,) or (N, k), weights (d,) or (d, k), lr a number
    or "auto", bias, round_to); ``epoch`` >= 1.

    Example:
        >>> X = np.array([[0.5], [1.0], [1.5]]); print(explain(X, 2 * X, np.array([[1.0]]), 0.1))
    """
    if hasattr(X, "layers"):  # explain(model, X, y, loss=..., sample=i)
        if loss is None:
            raise ConfigError("explain(model, X, y, loss=...): name the loss the network is trained with")
        return explain_network(X, Y, weights, loss=loss, sample=sample, lr=lr)
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 1:
        raise ConfigError(f"epoch must be an integer >= 1 (the epoch to explain), got {epoch!r}")
    check_all(round_to=round_to)
    X, Y, _, _, _ = _validate(X, Y, weights, bias, lr)
    start = fit_linear(X, Y, weights, lr, int(epoch) - 1, bias=bias, round_to=round_to)
    return explain_step(X, Y, start.weights, start.bias, start.lr, epoch=int(epoch), round_to=round_to)


def explain_step(X, Y, weights, bias, lr, *, epoch, round_to=None) -> Explanation:
    """The chapter's explanation of one step from ``weights`` (d, k) and ``bias`` (k,) or None at learning
    rate ``lr`` (a number), numbered ``epoch``: what :func:`explain` writes once it has the weights."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    W = np.asarray(weights, dtype=np.float64).reshape(X.shape[1], -1)
    b = None if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    step = _step(X, Y, W, b, lr, round_to)
    stable = _stable_lr(ArraySums(X, Y), b is not None, Y.shape[1])
    lines = _text(X, Y, W, b, lr, epoch, round_to, step, stable)
    return Explanation(epoch, lr, step["loss"], step["new_loss"], W, step["gW"], step["W1"], b, step["gb"],
                       step["b1"], step["predicted"], step["new_loss"] - step["loss"], stable, lines)


class ExplainEpoch(Callback):
    """Print the explanation of epoch ``epoch``'s step just before it is taken (``train --explain``).

    The linear model with MSE, full batch: the chapter's explanation (:func:`explain_step`); any other
    model: :func:`~gradloop.glass.network.explain_network` on the epoch's first batch (drawn from a
    copy of the run's generator, so the run's own draws are untouched), showing row ``sample`` of it.
    X (n_samples, n_features) and y are the training rows as the loop sees them.
    """

    wants_records = False

    def __init__(self, epoch, X, y, *, batch_size=None, shuffle=True, round_to=None, sample=0, out=print):
        self.epoch, self.X, self.y = int(epoch), X, y
        self.batch_size, self.shuffle, self.round_to, self.sample, self.out = batch_size, shuffle, round_to, \
            sample, out

    def on_train_begin(self, trainer):
        if trainer.epoch == self.epoch - 1:
            self._explain(trainer)

    def on_epoch_end(self, record, trainer):
        if trainer.epoch == self.epoch - 1 and not trainer.stop_training:
            self._explain(trainer)

    def _explain(self, trainer):
        model, lr = trainer.model, trainer.optimizer.lr
        if self.batch_size is None and is_linear_mse(model, trainer.loss) and isinstance(trainer.optimizer, SGD):
            layer = model.layers[0]
            self.out(explain_step(self.X, self.y, layer.params["W"], layer.params.get("b"), lr, epoch=self.epoch,
                                  round_to=self.round_to))
            return
        rows = np.arange(len(self.X))
        if self.batch_size is not None and self.batch_size < len(self.X):
            order = copy.deepcopy(trainer.rng).permutation(len(self.X)) if self.shuffle else rows
            rows = order[:self.batch_size]
        where = "its first batch" if len(rows) < len(self.X) else "the full batch"
        self.out(f"Epoch {self.epoch}, {where}:")
        self.out(explain_network(model, self.X[rows], self.y[rows], loss=trainer.loss,
                                 sample=min(self.sample, len(rows) - 1), lr=lr))


def _step(X, Y, W, b, lr, round_to):
    """The epoch's numbers, by the chapter's functions: predictions, loss, gradients, update, new loss."""
    pred = X @ W + (0 if b is None else b)
    value = loss(Y, pred)
    grads = gradients(X, Y, W, b)
    gW, gb = (grads, None) if b is None else grads
    gW = np.asarray(gW, dtype=np.float64).reshape(W.shape)
    gb = None if gb is None else np.asarray(gb, dtype=np.float64).reshape(-1)
    if round_to is not None:  # the chapter rounds the gradients, then the updated weights
        gW, gb = np.round(gW, round_to), None if gb is None else np.round(gb, round_to)
    W1 = W - lr * gW
    b1 = None if b is None else b - lr * gb
    if round_to is not None:
        W1, b1 = np.round(W1, round_to), None if b1 is None else np.round(b1, round_to)
    new_pred = X @ W1 + (0 if b1 is None else b1)
    norm2 = float(np.vdot(gW, gW)) + (0.0 if gb is None else float(np.vdot(gb, gb)))
    return {"pred": pred, "loss": value, "gW": gW, "gb": gb, "W1": W1, "b1": b1, "new_pred": new_pred,
            "new_loss": loss(Y, new_pred), "norm2": norm2, "predicted": -lr * norm2}


def _rounded(exact, used, round_to):
    """The value as computed, and with the chapter's rounding the rounded value the update uses."""
    return _num(used) if round_to is None else f"{_num(exact)}, rounded: {_num(used)}"


def _name(i, j, k):
    return f"w[{i}]" if k == 1 else f"w[{i},{j}]"


def _text(X, Y, W, b, lr, epoch, round_to, step, stable):
    n, d = X.shape
    k = Y.shape[1]
    size = n * k
    pred, r = step["pred"], Y - step["pred"]
    lines = [f"Epoch {epoch} of the chapter's loop, with its numbers: N = {n} rows, {d} feature(s), "
             f"{k} output(s), lr = {_num(lr)}" + (f", rounding to {round_to} decimals" if round_to is not None
                                                  else "")]
    lines += ["", "Y_pred = model(X, weights)" + ("  # X @ weights + bias" if b is not None else "  # X @ weights")]
    for row in range(min(ROWS, n)):
        for j in range(k):
            terms = [f"{_f(X[row, i])}*{_f(W[i, j])}" for i in range(d)] + (
                [_f(b[j])] if b is not None else [])
            lines.append(f"  row {row + 1}{'' if k == 1 else f', output {j + 1}'}: {_sum(terms, pred[row, j])}")
    if n > ROWS:
        lines.append(f"  ... ({n - ROWS} more rows)")

    lines += ["", "loss(Y, Y_pred)  # the mean of (Y - Y_pred)**2 over all entries"]
    squares = [f"({_num(Y[i, j])} - {_f(pred[i, j])})**2" for i in range(n) for j in range(k)]
    lines.append(f"  sum = {_sum(squares, float(np.vdot(r, r)))}")
    lines.append(f"  loss = {_num(float(np.vdot(r, r)))} / {size} = {_num(step['loss'])}")

    scale = f"{n}" if k == 1 else f"({n}*{k})"
    lines += ["", f"gradients = -2 * X.T @ (Y - Y_pred) / {'len(X)' if k == 1 else 'len(X) / k'}"]
    for i in range(d):
        for j in range(k):
            total = float(X[:, i] @ r[:, j])
            terms = [f"{_f(X[row, i])}*{_f(r[row, j])}" for row in range(n)]
            lines.append(f"  {_name(i, j, k)}: sum of x*(y - y_pred) = {_sum(terms, total)}")
            value = _rounded(-2 * total / size, step["gW"][i, j], round_to)
            lines.append(f"        -2 * {_f(total)} / {scale} = {value}")
    if b is not None:
        for j in range(k):
            total = float(r[:, j].sum())
            terms = [_f(r[row, j]) for row in range(n)]
            lines.append(f"  bias{'' if k == 1 else f'[{j}]'}: sum of (y - y_pred) = {_sum(terms, total)}")
            lines.append(f"        -2 * {_f(total)} / {scale} = {_rounded(-2 * total / size, step['gb'][j], round_to)}")
    if round_to is not None:
        lines.append(f"  (gradients rounded to {round_to} decimals, as the chapter does; so are the new weights)")

    lines += ["", "weights -= lr * gradients"]
    for i in range(d):
        for j in range(k):
            lines.append(f"  {_name(i, j, k)}: {_num(W[i, j])} - {_num(lr)} * {_f(step['gW'][i, j])} = "
                         f"{_num(step['W1'][i, j])}")
    if b is not None:
        for j in range(k):
            lines.append(f"  bias{'' if k == 1 else f'[{j}]'}: {_num(b[j])} - {_num(lr)} * {_f(step['gb'][j])} = "
                         f"{_num(step['b1'][j])}")

    lines += ["", "New prediction and loss after the update"]
    for row in range(min(ROWS, n)):
        values = ", ".join(_num(v) for v in step["new_pred"][row])
        lines.append(f"  row {row + 1}: {values}")
    lines.append(f"  new loss = {_num(step['new_loss'])}")
    lines += ["", *_why(lr, step, stable)]
    return lines


def _why(lr, step, stable):
    """Why the loss fell or rose: the first-order prediction, the actual change, the stable bound."""
    change = step["new_loss"] - step["loss"]
    verb = "fell" if change < 0 else ("rose" if change > 0 else "did not change")
    lines = [f"Why the loss {verb}",
             f"  first-order prediction: -lr * ||g||^2 = -{_num(lr)} * {_num(step['norm2'])} = "
             f"{_num(step['predicted'])}",
             f"  actual change: {_num(step['new_loss'])} - {_num(step['loss'])} = {_num(change)}"]
    if step["predicted"] != 0:
        lines.append(f"  actual / predicted = {_num(change / step['predicted'])} (1 for a small step on a flat "
                     "surface; less where the curvature takes back part of the gain)")
    if stable is not None and math.isfinite(stable):
        where = ("below it: every direction's error shrinks" if lr < stable else
                 "at or above it: the steepest direction's error grows each step, and training diverges")
        lines.append(f"  lr = {_num(lr)} against the stable bound 2/L = {_num(stable)}: {_num(lr / stable)} of "
                     f"it, {where}")
    return lines
