"""The training loop: one loop for every model, producing epoch records.

Per epoch (full batch, the chapter's mode)::

    predictions, loss      <- forward pass (reused from the end of the last epoch)
    gradients              <- model.backward(loss gradient)
    weights                <- optimizer.step(weights, gradients)
    new predictions, loss  <- forward pass with the new weights = next epoch's first line

so each epoch costs one forward and one backward pass, report or not. With
mini-batches the same steps run once per batch and the epoch's loss is the
mean over its batches.

The loop never prints: it hands an :class:`EpochRecord` to each callback
(the report printer, loggers, early stopping...). Records are only built when
some callback consumes them, so a silent run pays nothing for them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError, DivergenceError
from .optimizers import Optimizer, clip_grad_norm

HEAD = 5  # rows shown in the chapter's report

# A loss this many times the starting loss counts as divergence: gradient
# descent on a convex problem never goes up, and a healthy network run does
# not climb six orders of magnitude.
DIVERGENCE_FACTOR = 1e6


@dataclass
class EpochRecord:
    """What the chapter prints for one epoch, as data.

    Heads are the first ``HEAD`` rows, shape (≤5, outputs). ``gradients`` and
    ``weights`` are copies, one array per parameter, in ``names`` order.
    ``loss`` is the loss before this epoch's update (full batch) or the mean
    over the epoch's batches; ``new_loss`` is the loss of the updated weights on
    the whole training set (``None`` if nothing asked for it).
    """

    epoch: int
    loss: float
    new_loss: float | None
    pred_head: np.ndarray
    target_head: np.ndarray
    new_pred_head: np.ndarray | None
    gradients: list[np.ndarray]
    weights: list[np.ndarray]
    names: list[str]
    lr: float
    grad_norm: float
    seconds: float
    batches: int = 1
    val_loss: float | None = None
    metrics: dict = field(default_factory=dict)

    @property
    def diff_head(self):
        """Actual minus predicted, first rows (the chapter's 'difference')."""
        return self.target_head - self.pred_head

    def to_dict(self):
        """JSON-friendly dict: one line of a JSON-lines log."""
        def listify(a):
            return None if a is None else np.asarray(a).tolist()

        return {
            "epoch": self.epoch, "loss": self.loss, "new_loss": self.new_loss, "val_loss": self.val_loss,
            "lr": self.lr, "grad_norm": self.grad_norm, "seconds": self.seconds, "batches": self.batches,
            "pred_head": listify(self.pred_head), "target_head": listify(self.target_head),
            "diff_head": listify(self.diff_head), "new_pred_head": listify(self.new_pred_head),
            "gradients": {n: listify(g) for n, g in zip(self.names, self.gradients)},
            "weights": {n: listify(w) for n, w in zip(self.names, self.weights)},
            **self.metrics,
        }


class History:
    """The run as data: ``history`` is a dict of per-epoch lists (Keras' layout).

    Keys: "loss" always; "new_loss" (full-batch runs, and mini-batch runs with
    records); "val_loss" with validation data; "lr". ``records`` holds the
    :class:`EpochRecord` objects when ``keep_records`` was asked for.
    """

    def __init__(self):
        self.history: dict[str, list] = {"loss": [], "lr": []}
        self.records: list[EpochRecord] = []
        self.epochs_run = 0
        self.gradient_mode = None  # which full-batch kernel ran: layers, stream or gram
        self.stopped_early = False

    def append(self, key, value):
        self.history.setdefault(key, []).append(value)

    @property
    def final_loss(self):
        """The loss of the final weights (full batch) or the last epoch's mean loss."""
        new = self.history.get("new_loss")
        return new[-1] if new else (self.history["loss"][-1] if self.history["loss"] else None)

    def __repr__(self):
        return f"History(epochs={self.epochs_run}, final_loss={self.final_loss})"


class Callback:
    """Consumer of epoch records. Override the hooks you need.

    ``wants_records``: set False for a callback that only needs the loss values
    (then the loop can skip building records). ``trainer.stop_training = True``
    in ``on_epoch_end`` ends training after that epoch.
    """

    wants_records = True

    def on_train_begin(self, trainer):
        pass

    def on_epoch_end(self, record, trainer):
        pass

    def on_train_end(self, history, trainer):
        pass


@dataclass
class Trainer:
    """What callbacks can see and change while training runs."""

    model: object
    optimizer: Optimizer
    loss: object
    history: History
    epochs: int = 0
    stop_training: bool = False


def fit(model, X, y, *, loss, optimizer, epochs, batch_size=None, shuffle=True, seed=0,
        validation_data=None, callbacks=(), verbose=False, every=1, round_to=None,
        schedule=None, clip_norm=None, keep_records=False, stable_lr=None, gradient="auto"):
    """Train ``model`` on (X, y) and return its :class:`History`.

    Args:
        model: a :class:`gradloop.models.Sequential`.
        X: (n_samples, n_features), the model's dtype.
        y: (n_samples,) or (n_samples, outputs); integer classes for cross-entropy.
        loss: a Loss object or name ("mse", "cross-entropy", ...).
        optimizer: an Optimizer object (updated in place; its state persists).
        epochs: number of epochs (0 runs none and records the start).
        batch_size: None for full batch (the chapter's mode), else rows per step.
        shuffle, seed: mini-batch order from ``numpy.random.default_rng(seed)``.
        validation_data: optional (X_val, y_val); "val_loss" is recorded each epoch.
        callbacks: consumers of epoch records (see :mod:`gradloop.callbacks`).
        verbose: add the chapter's report printer (every ``every`` epochs).
        round_to: round gradients and weights to this many decimals each step,
            as the chapter does (stalls once ``lr * gradient`` < half the last digit).
        schedule: a :class:`gradloop.optimizers.Schedule` (lr per epoch).
        clip_norm: clip the global gradient norm to this value each step.
        keep_records: keep every EpochRecord in ``history.records``.
        gradient: full-batch executor: "auto", "layers" (any model), or for the
            linear model with MSE "stream" (one blocked pass over X per epoch)
            or "gram" (X^T X once, then O(d^2) per epoch); see :mod:`gradloop.kernels`.
        stable_lr: the largest stable learning rate if known (for the divergence
            message), or a function computing it, called only if training diverges.

    Raises:
        DivergenceError: the loss stopped being finite or grew 1e6-fold; the
            model keeps the last parameters whose loss was finite.

    Example:
        >>> from gradloop.models import mlp
        >>> from gradloop.optimizers import Adam
        >>> model = mlp([4, 16, 1], "tanh")
        >>> history = fit(model, X, y, loss="mse", optimizer=Adam(1e-2), epochs=100)
    """
    from .losses import get_loss

    loss = get_loss(loss)
    epochs = check_epochs(epochs)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ConfigError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    callbacks = list(callbacks)
    if verbose:
        from .callbacks import TracePrinter

        callbacks.insert(0, TracePrinter(every=every))
    if keep_records:
        callbacks.append(_KeepRecords())
    X = _inputs_for(model, X, "X")
    if validation_data is not None:
        validation_data = (_inputs_for(model, validation_data[0], "validation X"), validation_data[1])
    y = _targets_for(model, loss, y)
    history = History()
    trainer = Trainer(model, optimizer, loss, history, epochs)
    run = _EpochRunner(model, loss, optimizer, X, y, callbacks, trainer, round_to, schedule, clip_norm,
                       validation_data, stable_lr)
    model.train()
    for cb in callbacks:
        cb.on_train_begin(trainer)
    try:
        if batch_size is None or batch_size >= len(X):
            run.full_batch(epochs, gradient)
        else:
            run.mini_batch(epochs, int(batch_size), shuffle, np.random.default_rng(seed))
    finally:
        # Train end runs however training ended (divergence included): loggers close their files.
        model.eval()
        for cb in callbacks:
            cb.on_train_end(history, trainer)
    return history


def check_epochs(epochs):
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)):
        raise ConfigError(f"epochs must be a non-negative integer, got {epochs!r}")
    if epochs < 0:
        raise ConfigError(f"epochs must be a non-negative integer, got {epochs}")
    return int(epochs)


def _inputs_for(model, X, name):
    """Inputs must already have the model's dtype: gradloop never mixes precisions silently."""
    X = np.asarray(X)
    if X.dtype != model.dtype:
        raise ConfigError(f"{name} is {X.dtype} but the model is {model.dtype}: convert one of them "
                          f"(e.g. X.astype(np.{model.dtype})) so the arithmetic runs in one precision")
    if X.ndim != 2 or X.shape[1] != model.n_inputs:
        raise ConfigError(f"{name} has shape {X.shape}; the model reads (n_samples, {model.n_inputs})")
    return X


def _targets_for(model, loss, y):
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


class _KeepRecords(Callback):
    def on_epoch_end(self, record, trainer):
        trainer.history.records.append(record)


class _EpochRunner:
    """The two loops (full batch and mini-batch) sharing one set of helpers."""

    def __init__(self, model, loss, optimizer, X, y, callbacks, trainer, round_to, schedule, clip_norm,
                 validation_data, stable_lr):
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.X, self.y = X, y
        self.callbacks, self.trainer, self.history = callbacks, trainer, trainer.history
        self.records_wanted = any(cb.wants_records for cb in callbacks)
        self.round_to, self.schedule, self.clip_norm = round_to, schedule, clip_norm
        self.validation = None
        if validation_data is not None:
            X_val, y_val = validation_data
            self.validation = (X_val, _targets_for(model, loss, y_val))
        self.stable_lr = stable_lr
        self.params, self.grads = model.parameters(), model.gradients()
        self.names = [n for n, _ in model.named_parameters()]
        self.base_lr = optimizer.lr
        # The last parameters with a finite loss, restored if training diverges.
        self.last_good = [p.copy() for p in self.params]
        self.start_loss = None

    # ------------------------------------------------------------ full batch
    def full_batch(self, epochs, gradient):
        from .kernels import make_kernel

        optimizer, params, grads = self.optimizer, self.params, self.grads
        last_good, round_to = self.last_good, self.round_to
        losses, new_losses = self.history.history["loss"], self.history.history.setdefault("new_loss", [])
        # Per-epoch bookkeeping only when something reads it: a silent run is the bare arithmetic.
        bookkeeping = bool(self.callbacks) or self.validation is not None or self.schedule is not None
        adjust_grads = self.clip_norm is not None or round_to is not None or self.records_wanted
        kernel = make_kernel(self.model, self.loss, self.X, self.y, gradient, epochs)
        self.history.gradient_mode = kernel.name
        try:
            # Loss and gradients at the current weights; after each update the same call is
            # the report's "new loss" and the next epoch's gradient: one pass per epoch.
            value = kernel.evaluate()
            limit = self._check_start(value)
            epoch = 0
            for epoch in range(1, epochs + 1):
                if bookkeeping:
                    started = time.perf_counter()
                    self._set_lr(epoch)
                grad_norm = self._clip_and_round(grads) if adjust_grads else math.nan
                partial = self._partial_record(epoch, value, kernel.head(), grad_norm) if self.records_wanted else None
                for keep, p in zip(last_good, params):
                    np.copyto(keep, p)
                optimizer.step(params, grads)
                if round_to is not None:
                    for p in params:
                        np.round(p, round_to, out=p)
                new_value = kernel.evaluate()
                if not new_value <= limit:  # also true for NaN
                    self._diverge(epoch, new_value, "")
                losses.append(value)
                new_losses.append(new_value)
                value = new_value
                if bookkeeping:
                    self._end_epoch(epoch, partial, new_value, kernel.head() if partial else None, started)
                    if self.trainer.stop_training:
                        self.history.stopped_early = epoch < epochs
                        break
        finally:
            getattr(kernel, "close", lambda: None)()
        self.history.epochs_run = epoch
        if not bookkeeping:
            self.history.history["lr"] = [optimizer.lr] * epoch

    # ------------------------------------------------------------ mini-batch
    def mini_batch(self, epochs, batch_size, shuffle, rng):
        model, loss, optimizer, params, grads = self.model, self.loss, self.optimizer, self.params, self.grads
        X, y = self.X, self.y
        n = len(X)
        limit = self._check_start(loss.value(y, model.predict_raw(X)))
        model.train()
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            self._set_lr(epoch)
            order = rng.permutation(n) if shuffle else None
            for keep, p in zip(self.last_good, params):
                np.copyto(keep, p)
            total = 0.0
            grad_norm = 0.0
            # The report's "predicted output for the first 5 samples": before this epoch's updates.
            head = model.predict_raw(X[:HEAD]) if self.records_wanted else None
            model.train()
            for start in range(0, n, batch_size):
                if order is None:
                    xb, yb = X[start:start + batch_size], y[start:start + batch_size]
                else:
                    idx = order[start:start + batch_size]
                    xb, yb = X[idx], y[idx]
                pred = model.forward(xb)
                value, dpred = loss.value_and_grad(yb, pred)
                if not math.isfinite(value):
                    # Stop before a non-finite gradient reaches the weights.
                    self._diverge(epoch, value, f" (batch {start // batch_size + 1})")
                model.backward(dpred)
                grad_norm = self._clip_and_round(grads)
                optimizer.step(params, grads)
                if self.round_to is not None:
                    for p in params:
                        np.round(p, self.round_to, out=p)
                total += value * len(xb)
            mean_loss = total / n
            if not mean_loss <= limit:
                self._diverge(epoch, mean_loss, "")
            self.history.history["loss"].append(mean_loss)
            if self.records_wanted:
                # The loss of the epoch's final weights on the whole training set, evaluation mode.
                pred = model.predict_raw(X)
                new_value = loss.value(y, pred)
                self.history.append("new_loss", new_value)
                partial = self._partial_record(epoch, mean_loss, head, grad_norm, batches=-(-n // batch_size))
                self._end_epoch(epoch, partial, new_value, pred[:HEAD], started)
            else:
                self._end_epoch(epoch, None, None, None, started)
            if self.trainer.stop_training:
                self.history.stopped_early = epoch < epochs
                break

    # ------------------------------------------------------------ helpers
    def _set_lr(self, epoch):
        if self.schedule is not None:
            self.optimizer.lr = self.schedule.lr(self.base_lr, epoch - 1)
        self.history.history["lr"].append(self.optimizer.lr)

    def _clip_and_round(self, grads):
        """Clip by global norm and apply the chapter's rounding; return the norm before clipping (or NaN)."""
        norm = math.nan
        if self.clip_norm is not None:
            norm = clip_grad_norm(grads, self.clip_norm)
        elif self.records_wanted:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
        if self.round_to is not None:
            for g in grads:
                np.round(g, self.round_to, out=g)
        return norm

    def _partial_record(self, epoch, value, pred, grad_norm, batches=1):
        n_head = min(HEAD, len(self.y))
        target = self.y[:n_head]
        return EpochRecord(
            epoch=epoch, loss=value, new_loss=None, pred_head=np.array(pred[:n_head], dtype=np.float64),
            target_head=np.asarray(target, dtype=np.float64).reshape(n_head, -1), new_pred_head=None,
            gradients=[g.copy() for g in self.grads], weights=[], names=self.names, lr=self.optimizer.lr,
            grad_norm=grad_norm, seconds=0.0, batches=batches)

    def _end_epoch(self, epoch, record, new_value, new_head, started):
        history = self.history
        history.epochs_run = epoch
        val_loss = None
        if self.validation is not None:
            X_val, y_val = self.validation
            val_loss = self.loss.value(y_val, self.model.predict_raw(X_val))
            history.append("val_loss", val_loss)
        if record is not None:
            record.new_loss = new_value
            record.new_pred_head = np.array(new_head, dtype=np.float64)
            record.weights = [p.copy() for p in self.params]
            record.val_loss = val_loss
            record.seconds = time.perf_counter() - started
            for cb in self.callbacks:
                cb.on_epoch_end(record, self.trainer)
        elif self.callbacks:
            for cb in self.callbacks:
                cb.on_epoch_end(None, self.trainer)

    def _check_start(self, value):
        if not math.isfinite(value):
            raise DivergenceError(
                f"the loss of the starting weights is {value}: check the data and the initial weights",
                epoch=0, weights=[p.copy() for p in self.params], stable_lr=None, lr=self.optimizer.lr)
        self.start_loss = value
        return DIVERGENCE_FACTOR * max(value, 1e-8)  # a loss above this (or NaN) is divergence

    def _diverge(self, epoch, value, where):
        for keep, p in zip(self.last_good, self.params):
            np.copyto(p, keep)
        lr = self.optimizer.lr
        stable = self.stable_lr() if callable(self.stable_lr) else self.stable_lr
        what = "is not finite" if not math.isfinite(value) else f"exploded to {value:.3g}"
        if stable is not None:
            advice = f"the largest stable learning rate for this problem is {stable:.6g}"
        else:
            advice = f"try a smaller learning rate, e.g. {lr / 10:.3g}"
        raise DivergenceError(
            f"training diverged at epoch {epoch}{where}: the loss {what} with learning rate {lr:.6g}; "
            f"{advice}; the last finite weights (epoch {epoch - 1}) are kept{_scale_hint(self.X)}",
            epoch=epoch, weights=[p.copy() for p in self.params], stable_lr=stable, lr=lr)


def _scale_hint(X):
    """Advice to standardize when the features' sizes (root mean square) differ more than 10-fold.

    Uneven (or uncentred) features stretch the loss surface: the stable step
    is set by the largest feature while the small ones barely move.
    """
    X = np.asarray(X)
    scales = np.sqrt(np.einsum("ij,ij->j", X, X) / len(X))
    scales = scales[scales > 0]
    if len(scales) > 1 and scales.max() / scales.min() > 10:
        return "; the features' scales differ widely: standardize them (--standardize)"
    return ""
