"""A learning-rate finder that leaves no trace on the run that follows it.

``lr_find`` trains for a short sweep with the learning rate growing exponentially from
``start`` to ``end``, one step per rate, and records the loss of each step (smoothed).
Its suggestion is the rate where the smoothed loss falls fastest against log(lr): past
it the steps grow too large to keep helping, before it they are too small to matter.
For the linear model with MSE the answer is known exactly, 1/L (the largest step that
is safe in every direction, see :func:`gradloop.lipschitz`); the sweep then also says
where the stable bound 2/L lies.

Afterwards the model's parameters, the optimizer's state and learning rate, every
dropout generator and the training mode are as they were: training after ``lr_find`` is
bit for bit training without it (tested). Batches are drawn from a generator of the
finder's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..fast.kernels import is_linear_mse
from ..losses import fit_targets, get_loss
from ..sums import lipschitz

SMOOTHING = 0.98  # exponential moving average of the step losses (bias-corrected), as fastai's finder
DIVERGED = 4.0  # the sweep stops once the smoothed loss exceeds this many times its best


@dataclass
class LRFind:
    """The sweep: ``lrs`` and smoothed ``losses`` (one per step), the ``suggestion`` (a float), and for
    the linear model with MSE the exact 1/L it equals and the stable bound ``stable_lr`` = 2/L."""

    lrs: list
    losses: list
    suggestion: float
    rule: str
    stable_lr: float | None = None
    raw_losses: list = field(default_factory=list)

    def __float__(self):
        return float(self.suggestion)

    def __str__(self):
        bound = f"; the stable bound 2/L is {self.stable_lr:.6g}" if self.stable_lr else ""
        return (f"lr_find: {len(self.lrs)} steps from {self.lrs[0]:.3g} to {self.lrs[-1]:.3g}; suggestion "
                f"{self.suggestion:.6g} ({self.rule}){bound}")


def lr_find(model, X, y, *, loss, optimizer, start=1e-7, end=10.0, steps=100, batch_size=None, seed=0) -> LRFind:
    """Sweep the learning rate exponentially over ``steps`` training steps and suggest one.

    Args:
        model: a :class:`gradloop.models.Sequential`; X (n_samples, n_features), y as for ``fit``.
        loss, optimizer: as for :func:`gradloop.fit` (the optimizer's state is restored afterwards).
        start, end: the first and last learning rate; steps: how many (one training step each).
        batch_size: rows per step (None: the full batch), drawn by a generator seeded with ``seed``.

    Returns:
        an :class:`LRFind`; ``float()`` of it is the suggestion.
    """
    loss = get_loss(loss)
    if not (0 < start < end and math.isfinite(end)) or int(steps) < 3:
        raise ConfigError(f"lr_find needs 0 < start < end and at least 3 steps, got start={start}, end={end}, "
                          f"steps={steps}")
    X = np.asarray(X, dtype=model.dtype)
    targets = fit_targets(model, loss, y)
    saved = _save(model, optimizer)
    try:
        lrs, raw = _sweep(model, X, targets, loss, optimizer, start, end, int(steps), batch_size, seed)
    finally:
        _restore(model, optimizer, saved)
    smooth = _smoothed(raw)
    if is_linear_mse(model, loss) and targets.ndim == 2:
        L = lipschitz(X, bias=model.layers[0].has_bias) / targets.shape[1]
        return LRFind(lrs, smooth, 1.0 / L, "exact for the linear model with MSE: 1/L", 2.0 / L, raw)
    return LRFind(lrs, smooth, _steepest(lrs, smooth), "where the smoothed loss falls fastest against log(lr)",
                  None, raw)


def _sweep(model, X, y, loss, optimizer, start, end, steps, batch_size, seed):
    rng = np.random.default_rng(seed)
    params, grads = model.parameters(), model.gradients()
    lrs, losses, best = [], [], math.inf
    model.train()
    for i in range(steps):
        lr = start * (end / start) ** (i / (steps - 1))
        rows = slice(None) if batch_size is None or batch_size >= len(X) else rng.choice(len(X), batch_size,
                                                                                       replace=False)
        value, dpred = loss.value_and_grad(y[rows], model.forward(X[rows]))
        if not math.isfinite(value):
            break
        lrs.append(lr)
        losses.append(value)
        smooth = _smoothed(losses)[-1]
        best = min(best, smooth)
        if smooth > DIVERGED * best:
            break
        model.backward(dpred)
        optimizer.lr = lr
        optimizer.step(params, grads)
    if len(lrs) < 3:
        raise ConfigError(f"lr_find: the loss was not finite after {len(lrs)} steps from lr {start:.3g}; "
                          "lower start")
    return lrs, losses


def _smoothed(values):
    out, average = [], 0.0
    for i, v in enumerate(values, 1):
        average = SMOOTHING * average + (1 - SMOOTHING) * v
        out.append(average / (1 - SMOOTHING ** i))
    return out


def _steepest(lrs, losses):
    """The lr where d(loss)/d(log lr) is most negative (central differences of the smoothed curve)."""
    slopes = np.gradient(np.asarray(losses), np.log(np.asarray(lrs)))
    return float(lrs[int(np.argmin(slopes))])


def _save(model, optimizer):
    return (model.state_dict(), [g.copy() for g in model.gradients()], optimizer.state_dict(), optimizer.lr,
            model.training, model.dropout_states())


def _restore(model, optimizer, saved):
    parameters, gradients, state, lr, training, dropout_states = saved
    model.load_state_dict(parameters)
    for g, kept in zip(model.gradients(), gradients):
        g[...] = kept
    optimizer.load_state_dict(state)
    optimizer.lr = lr
    model.set_dropout_states(dropout_states)
    if training:
        model.train()
    else:
        model.eval()
