"""The training loop: one loop for every model, producing epoch records.

Per epoch (full batch, the chapter's mode)::

    predictions, loss      <- forward pass (reused from the end of the last epoch)
    gradients              <- model.backward(loss gradient)
    weights                <- optimizer.step(weights, gradients)
    new predictions, loss  <- forward pass with the new weights = next epoch's first line

so each epoch costs one forward and one backward pass, report or not. The
"loss and gradients at these weights" step is a kernel (:mod:`gradloop.kernels`):
through the layers for any model, or for the linear model with MSE a blocked
one-pass stream or the Gram form. With mini-batches the same steps run once
per batch and the epoch's loss is the mean over its batches.

Callbacks see a :class:`Trainer` and can stop the run; checkpoints capture it
(:mod:`gradloop.checkpoint`) so that a resumed run continues exactly.

The loop never prints: it hands an :class:`EpochRecord` to each callback
(the report printer, loggers, early stopping...). Records are only built when
some callback consumes them, so a silent run pays nothing for them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .callbacks import BatchRecord, Callback, TracePrinter  # noqa: F401  (BatchRecord, Callback: also importable here)
from .constraints import check, check_all
from .errors import ConfigError, DivergenceError
from . import kernels
from .kernels import HEAD
from .optimizers import Optimizer, clip_grad_norm
from .paths import callback_places


# A loss this many times the starting loss counts as divergence: gradient
# descent on a convex problem never goes up, and a healthy network run does
# not climb six orders of magnitude.
DIVERGENCE_FACTOR = 1e6
# The library's advice names the class; the command line says its option instead.
STANDARDIZE_ADVICE = "standardize them (gradloop.data.Standardizer)"


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
    update_ratio: float | None = None  # ||weights after - before|| / ||before||
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
            "lr": self.lr, "grad_norm": self.grad_norm, "update_ratio": self.update_ratio,
            "seconds": self.seconds, "batches": self.batches,
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
        self.start_loss = None  # loss of the very first weights: the divergence threshold's base
        self.stop_message = None  # why a run stopped before its last epoch, when a callback says
        self.stopped_early = False

    def append(self, key, value):
        self.history.setdefault(key, []).append(value)

    @property
    def final_loss(self):
        """The loss of the final weights (full batch) or the last epoch's mean loss."""
        new = self.history.get("new_loss")
        return new[-1] if new else (self.history["loss"][-1] if self.history["loss"] else None)

    def plot(self, ax=None):
        """Draw the loss curves (loss, new loss, validation loss per epoch) with matplotlib; returns the axes."""
        from .report import plot_history

        return plot_history(self, ax)

    def __repr__(self):
        return f"History(epochs={self.epochs_run}, final_loss={self.final_loss})"


@dataclass
class Trainer:
    """What callbacks can see and change while training runs.

    ``lr_factor`` multiplies the learning rate (or the schedule's) from the
    next epoch on (ReduceLROnPlateau lowers it); ``stop_reason`` says why a
    run stopped early; ``rng`` is the mini-batch order's generator and
    ``epoch`` the last completed epoch, both saved by checkpoints.
    """

    model: object
    optimizer: Optimizer
    loss: object
    history: History
    epochs: int = 0
    stop_training: bool = False
    stop_reason: str | None = None
    lr_factor: float = 1.0
    base_lr: float = 0.0
    epoch: int = 0
    rng: object = None
    schedule: object = None
    terminate_on_nan: bool = False
    dropout_states: list | None = None  # full batch: dropout generators before the last evaluation
    has_validation: bool = False
    callbacks: list = field(default_factory=list)


def fit(model, X, y, *, loss, optimizer, epochs, batch_size=None, shuffle=True, seed=0,
        validation_data=None, callbacks=(), verbose=False, every=1, round_to=None,
        schedule=None, clip_norm=None, keep_records=False, stable_lr=None, gradient="auto",
        validation_split=None, resume=None):
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
        validation_split: or a fraction of (X, y) held out for validation, drawn
            at random from ``seed`` (stratified by class for classifiers).
        callbacks: consumers of epoch records (see :mod:`gradloop.callbacks`).
        verbose: add the chapter's report printer (every ``every`` epochs).
        round_to: round gradients and weights to this many decimals each step,
            as the chapter does (stalls once ``lr * gradient`` < half the last digit).
        schedule: a :class:`gradloop.optimizers.Schedule` (lr per epoch).
        clip_norm: clip the global gradient norm to this value each step.
        keep_records: keep every EpochRecord in ``history.records``.
        gradient: full-batch executor: "auto", "layers" (any model), or for the
            linear model with MSE "fused" (the layers' arithmetic without their
            calls), "stream" (one compiled pass over X per epoch) or "gram" (X^T X
            once, then O(d^2) per epoch); see :mod:`gradloop.kernels`.
        stable_lr: the largest stable learning rate if known (for the divergence
            message), or a function computing it, called only if training diverges.
        resume: a :class:`gradloop.checkpoint.TrainingState` to continue from:
            model, optimizer, generator and history are restored and training
            runs from its epoch up to ``epochs`` (the total, not a count).

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
    # Every option is checked here, before anything trains (scikit-learn's validate-at-fit).
    check_all(epochs=epochs, batch_size=batch_size, round_to=round_to, every=every, clip_norm=clip_norm,
              validation_split=validation_split)
    if not isinstance(seed, np.random.Generator):
        check("seed", seed)
    epochs = int(epochs)
    callbacks = list(callbacks)
    if verbose:
        callbacks.insert(0, TracePrinter(every=every))
    if keep_records:
        callbacks.append(_KeepRecords())
    callback_places(callbacks)  # two loggers on one file, a logger aimed at a folder: refused before epoch 1
    X = _inputs_for(model, X, "X")
    y = fit_targets(model, loss, y)
    if validation_split is not None:
        if validation_data is not None:
            raise ConfigError("give validation_data or validation_split, not both")
        X, y, validation_data = split_validation(X, y, validation_split, seed, loss.task != "regression")
    if validation_data is not None:
        validation_data = (_inputs_for(model, validation_data[0], "validation X"), validation_data[1])
    history = History()
    mini_batch = batch_size is not None and batch_size < len(X)
    trainer = Trainer(model, optimizer, loss, history, epochs, base_lr=optimizer.lr, schedule=schedule,
                      rng=np.random.default_rng(seed) if mini_batch else None)
    trainer.terminate_on_nan = any(getattr(cb, "terminates_on_nan", False) for cb in callbacks)
    trainer.has_validation = validation_data is not None
    if resume is not None:
        resume.restore(trainer)
    run = _EpochRunner(model, loss, optimizer, X, y, callbacks, trainer, round_to, schedule, clip_norm,
                       validation_data, stable_lr)
    trainer.callbacks = callbacks
    model.train()
    for cb in callbacks:
        cb.on_train_begin(trainer)
    if resume is not None:
        resume.restore_callbacks(callbacks)  # after train begin, which resets their counters
    try:
        if mini_batch:
            run.mini_batch(epochs, int(batch_size), shuffle)
        else:
            run.full_batch(epochs, gradient)
    except BaseException:
        _end_training(model, callbacks, history, trainer, failing=True)
        raise
    _end_training(model, callbacks, history, trainer, failing=False)
    return history


def _end_training(model, callbacks, history, trainer, failing):
    """Train end runs for every callback however training ended: loggers close, best weights return.

    One callback's error does not skip the others; it is raised afterwards unless
    training itself already failed (that error says more).
    """
    model.eval()
    first = None
    for cb in callbacks:
        try:
            cb.on_train_end(history, trainer)
        except Exception as exc:
            first = first or exc
    if first is not None and not failing:
        raise first


def split_validation(X, y, fraction, seed, stratify):
    """Hold out ``fraction`` of the rows at random (by class when ``stratify``): (X, y, (X_val, y_val))."""
    check("validation_split", fraction)
    # A generator of its own: the split never shifts the mini-batch order drawn from the same seed.
    rng = np.random.default_rng([int(seed), 0x5EED])
    labels = y.reshape(len(y), -1)[:, 0] if stratify else None  # binary targets are (n, 1)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if stratify else [np.arange(len(X))]
    held = np.concatenate([g[rng.permutation(len(g))[:int(round(fraction * len(g)))]] for g in groups])
    if len(held) == 0 or len(held) == len(X):
        raise ConfigError(f"validation_split {fraction} of {len(X)} rows leaves no rows for "
                          f"{'validation' if len(held) == 0 else 'training'}")
    keep = np.ones(len(X), dtype=bool)
    keep[held] = False
    held.sort()
    return X[keep], y[keep], (X[held], y[held])


def check_epochs(epochs):
    return int(check("epochs", epochs))


def _inputs_for(model, X, name):
    """Inputs must already have the model's dtype: gradloop never mixes precisions silently."""
    X = np.asarray(X)
    if X.dtype != model.dtype:
        raise ConfigError(f"{name} is {X.dtype} but the model is {model.dtype}: convert one of them "
                          f"(e.g. X.astype(np.{model.dtype})) so the arithmetic runs in one precision")
    if X.ndim != 2 or X.shape[1] != model.n_inputs:
        raise ConfigError(f"{name} has shape {X.shape}; the model reads (n_samples, {model.n_inputs})")
    return X


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
        self.batch_callbacks = [cb for cb in callbacks if getattr(cb, "wants_batches", False)]
        self.round_to, self.schedule, self.clip_norm = round_to, schedule, clip_norm
        self.validation = None
        if validation_data is not None:
            X_val, y_val = validation_data
            self.validation = (X_val, fit_targets(model, loss, y_val))
        self.stable_lr = stable_lr
        self.params, self.grads = model.parameters(), model.gradients()
        self.names = [n for n, _ in model.named_parameters()]
        # The last parameters with a finite loss, restored if training diverges.
        self.last_good = [p.copy() for p in self.params]
        from .layers import Dropout

        self.dropouts = [layer for layer in model.layers if isinstance(layer, Dropout)]

    # ------------------------------------------------------------ full batch
    def full_batch(self, epochs, gradient):
        optimizer, params, grads, trainer = self.optimizer, self.params, self.grads, self.trainer
        last_good, round_to = self.last_good, self.round_to
        losses, new_losses = self.history.history["loss"], self.history.history.setdefault("new_loss", [])
        # Per-epoch bookkeeping only when something reads it: a silent run is the bare arithmetic.
        bookkeeping = bool(self.callbacks) or self.validation is not None or self.schedule is not None
        adjust_grads = self.clip_norm is not None or round_to is not None or self.records_wanted
        kernel = kernels.make_kernel(self.model, self.loss, self.X, self.y, gradient, epochs)
        self.history.gradient_mode = kernel.name
        first = trainer.epoch + 1
        epoch = trainer.epoch
        try:
            # Loss and gradients at the current weights; after each update the same call is
            # the report's "new loss" and the next epoch's gradient: one pass per epoch.
            if self.dropouts:
                trainer.dropout_states = [d._rng.bit_generator.state for d in self.dropouts]
            value = kernel.evaluate()
            limit = self._check_start(value)
            for epoch in range(first, epochs + 1):
                if bookkeeping:
                    started = time.perf_counter()
                    self._set_lr(epoch)
                grad_norm = self._clip_and_round(grads) if adjust_grads else math.nan
                partial = self._partial_record(epoch, value, kernel.head(), grad_norm) if self.records_wanted else None
                for keep, p in zip(last_good, params):
                    keep[...] = p  # 0.09 us where np.copyto takes 0.24 us on the chapter's arrays
                optimizer.step(params, grads)
                if round_to is not None:
                    for p in params:
                        np.round(p, round_to, out=p)
                if self.dropouts:
                    # This evaluation draws the masks of the next epoch's gradient: a checkpoint
                    # of this epoch must let a resumed run draw them again.
                    trainer.dropout_states = [d._rng.bit_generator.state for d in self.dropouts]
                new_value = kernel.evaluate()
                if not new_value <= limit:  # also true for NaN
                    if trainer.terminate_on_nan and not math.isfinite(new_value):
                        self._undo_epoch(epoch, new_value)
                        if bookkeeping:
                            self.history.history["lr"].pop()
                        epoch -= 1
                        break
                    self._diverge(epoch, new_value, "")
                losses.append(value)
                new_losses.append(new_value)
                value = new_value
                if bookkeeping:
                    trainer.epoch = epoch
                    self._end_epoch(epoch, partial, new_value, kernel.head() if partial else None, started)
                    if trainer.stop_training:
                        break
        finally:
            getattr(kernel, "close", lambda: None)()
        self._finish(epoch, epochs, bookkeeping, first)

    # ------------------------------------------------------------ mini-batch
    def mini_batch(self, epochs, batch_size, shuffle):
        model, loss, optimizer, params, grads = self.model, self.loss, self.optimizer, self.params, self.grads
        trainer, X, y = self.trainer, self.X, self.y
        n = len(X)
        # The starting loss (the divergence threshold's base) is the first batch's, which the
        # first step computes anyway: a separate forward pass over all of X cost a third of an
        # epoch (65 ms of 310 on the MLP benchmark). A run of no epochs has no batch to use.
        limit = None if epochs > trainer.epoch else self._start_limit(loss.value(y, model.predict_raw(X)))
        model.train()
        epoch = trainer.epoch
        for epoch in range(trainer.epoch + 1, epochs + 1):
            started = time.perf_counter()
            self._set_lr(epoch)
            order = trainer.rng.permutation(n) if shuffle else None
            for keep, p in zip(self.last_good, params):
                np.copyto(keep, p)
            # The report's "predicted output for the first 5 samples": before this epoch's updates.
            head = model.predict_raw(X[:HEAD]) if self.records_wanted else None
            total, grad_norm = 0.0, 0.0
            for batch, start in enumerate(range(0, n, batch_size), 1):
                if order is None:
                    xb, yb = X[start:start + batch_size], y[start:start + batch_size]
                else:
                    idx = order[start:start + batch_size]
                    xb, yb = X[idx], y[idx]
                pred = model.forward(xb)
                value, dpred = loss.value_and_grad(yb, pred)
                if limit is None:
                    limit = self._start_limit(value)
                if not math.isfinite(value):
                    # Stop before a non-finite gradient reaches the weights: they are still finite.
                    if self._stop_on_nan(epoch, batch, value):
                        break
                model.backward(dpred)
                grad_norm = self._clip_and_round(grads)
                optimizer.step(params, grads)
                if self.round_to is not None:
                    for p in params:
                        np.round(p, self.round_to, out=p)
                total += value * len(xb)
                if self.batch_callbacks:
                    record = BatchRecord(epoch, batch, value, len(xb))
                    for cb in self.batch_callbacks:
                        cb.on_batch_end(record, trainer)
            if trainer.stop_reason == "nan":
                epoch -= 1  # the interrupted epoch did not complete: it leaves no entries
                self.history.history["lr"].pop()
                break
            mean_loss = total / n
            if not mean_loss <= limit:
                self._diverge(epoch, mean_loss, "")
            self.history.history["loss"].append(mean_loss)
            trainer.epoch = epoch
            if self.records_wanted:
                # The loss of the epoch's final weights on the whole training set, evaluation mode.
                pred = model.predict_raw(X)
                new_value = loss.value(y, pred)
                self.history.append("new_loss", new_value)
                partial = self._partial_record(epoch, mean_loss, head, grad_norm, batches=-(-n // batch_size))
                self._end_epoch(epoch, partial, new_value, pred[:HEAD], started)
            else:
                self._end_epoch(epoch, None, None, None, started)
            if trainer.stop_training:
                break
        self._finish(epoch, epochs, True, None)

    # ------------------------------------------------------------ helpers
    def _finish(self, epoch, epochs, bookkeeping, first):
        history, trainer = self.history, self.trainer
        trainer.epoch = history.epochs_run = epoch
        history.stopped_early = epoch < epochs
        if not bookkeeping and epoch >= first:
            history.history["lr"].extend([self.optimizer.lr] * (epoch - first + 1))

    def _undo_epoch(self, epoch, value):
        """TerminateOnNaN, full batch: this epoch's update gave a non-finite loss; take it back and stop."""
        for keep, p in zip(self.last_good, self.params):
            np.copyto(p, keep)
        self.trainer.stop_training, self.trainer.stop_reason = True, "nan"
        self.history.stop_message = (f"stopped at epoch {epoch}: its update made the loss {value}; "
                                     f"the weights of epoch {epoch - 1} are kept")

    def _stop_on_nan(self, epoch, batch, value):
        """A non-finite batch loss: stop quietly (TerminateOnNaN) or raise DivergenceError."""
        if self.trainer.terminate_on_nan:
            self.trainer.stop_training, self.trainer.stop_reason = True, "nan"
            self.history.stop_message = (f"stopped at epoch {epoch}, batch {batch}: the loss is {value}; "
                                         f"the weights are those before that batch's update")
            return True
        self._diverge(epoch, value, f" (batch {batch})")

    def _set_lr(self, epoch):
        trainer = self.trainer
        base = self.schedule.lr(trainer.base_lr, epoch - 1) if self.schedule is not None else trainer.base_lr
        self.optimizer.lr = base * trainer.lr_factor
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
            # How far this epoch moved the weights, relative to where they were.
            moved = math.sqrt(sum(float(np.vdot(w - old, w - old)) for w, old in zip(record.weights, self.last_good)))
            size = math.sqrt(sum(float(np.vdot(old, old)) for old in self.last_good))
            record.update_ratio = moved / size if size > 0 else None  # undefined from all-zero weights
            record.val_loss = val_loss
            record.seconds = time.perf_counter() - started
        for cb in self.callbacks:
            cb.on_epoch_end(record, self.trainer)

    def _start_limit(self, start):
        """Mini-batch: the divergence limit from the starting loss, or inf when it is not finite.

        A non-finite start (a NaN in the data): each batch's check finds the batch and stops
        before its update; there is no start to measure growth from.
        """
        return self._check_start(start) if math.isfinite(start) else math.inf

    def _check_start(self, value):
        if not math.isfinite(value):
            raise DivergenceError(
                f"the loss of the starting weights is {value}: check the data and the initial weights",
                epoch=self.trainer.epoch, weights=[p.copy() for p in self.params], stable_lr=None,
                lr=self.optimizer.lr)
        # A resumed run keeps the divergence threshold of its first start.
        if self.history.start_loss is None:
            self.history.start_loss = value
        return DIVERGENCE_FACTOR * max(self.history.start_loss, 1e-8)  # a loss above this (or NaN) diverged

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
        kept = f"the last finite weights (epoch {epoch - 1}) are kept"
        raise DivergenceError(
            f"training diverged at epoch {epoch}{where}: the loss {what} with learning rate {lr:.6g}; "
            f"{advice}; {kept}{_scale_hint(self.X)}",
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
        return f"; the features' scales differ widely: {STANDARDIZE_ADVICE}"
    return ""
