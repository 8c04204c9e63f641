"""Callbacks that watch a number and act: early stopping, learning-rate reduction, NaN, best-model files."""

from __future__ import annotations

import math

from ..files.bundle import ModelBundle
from ..constraints import check
from ..errors import ConfigError
from ..files.paths import Place
from .base import Callback


def _check_monitor(trainer, monitor, owner):
    """Refuse, before any epoch runs, to watch a validation loss that will never exist."""
    if monitor == "val_loss" and not trainer.has_validation:
        raise ConfigError(f"{owner} monitors 'val_loss', which this run does not record "
                          f"(pass validation_data or validation_split, or monitor 'loss')")


def _monitored(trainer, monitor, owner):
    """The latest value of ``monitor`` ("val_loss", "loss", "new_loss") from the History."""
    values = trainer.history.history.get(monitor)
    if not values:
        hint = " (pass validation_data or validation_split)" if monitor == "val_loss" else ""
        raise ConfigError(f"{owner} monitors {monitor!r}, which this run does not record{hint}")
    return values[-1]


class _Monitor(Callback):
    """Shared by callbacks that watch a quantity for improvement (lower is better)."""

    wants_records = False

    def __init__(self, monitor, min_delta):
        self.monitor, self.min_delta = monitor, float(check("min_delta", min_delta, type(self).__name__))
        self.best, self.best_epoch = math.inf, None

    def on_train_begin(self, trainer):
        _check_monitor(trainer, self.monitor, type(self).__name__)
        self.best, self.best_epoch = math.inf, None

    def _improved(self, trainer):
        """Read the monitored value; True (and remember it) when it beats the best by min_delta."""
        value = _monitored(trainer, self.monitor, type(self).__name__)
        if math.isfinite(value) and value < self.best - self.min_delta:
            self.best, self.best_epoch = value, trainer.epoch
            return True
        return False


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best`` the model ends with the weights of its best epoch,
    however training ended (stopped early, finished, diverged or interrupted).

    Example:
        >>> fit(model, X, y, ..., validation_split=0.2, callbacks=[EarlyStopping(patience=10)])
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, restore_best=True):
        super().__init__(monitor, min_delta)
        self.patience = int(check("patience", patience, "EarlyStopping"))
        self.restore_best = bool(restore_best)
        self.best_weights, self.stopped_epoch = None, None

    def on_train_begin(self, trainer):
        super().on_train_begin(trainer)
        self.best_weights, self.stopped_epoch = None, None

    def on_epoch_end(self, record, trainer):
        if self._improved(trainer):
            if self.restore_best:
                self.best_weights = trainer.model.state_dict()
        # ">=": stop once `patience` epochs in a row have not improved, as documented and as the stop
        # message says: patience=3 stops 3 epochs after the best.
        elif trainer.epoch - (self.best_epoch or 0) >= self.patience:
            trainer.stop_training, trainer.stop_reason = True, "early stopping"
            self.stopped_epoch = trainer.epoch
            trainer.history.stop_message = (
                f"early stopping at epoch {trainer.epoch}: {self.monitor} has not improved for "
                f"{self.patience} epochs; best {self.best:.6g} at epoch {self.best_epoch}")

    def state_dict(self):
        """Counters and best weights, for checkpoints: a resumed run stops where an unbroken one would."""
        return {"best": None if math.isinf(self.best) else self.best, "best_epoch": self.best_epoch,
                "arrays": self.best_weights}

    def load_state_dict(self, state):
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.best_epoch = state["best_epoch"]
        self.best_weights = state.get("arrays")

    def on_train_end(self, history, trainer):
        if self.restore_best and self.best_weights is not None:
            trainer.model.load_state_dict(self.best_weights)
            history.restored_epoch = self.best_epoch


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` stalls for ``patience`` epochs.

    Works with schedules: it scales whatever the schedule gives. Never below ``min_lr``.

    Example:
        >>> fit(model, X, y, ..., validation_split=0.2, callbacks=[ReduceLROnPlateau(factor=0.5, patience=3)])
    """

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_delta=0.0, min_lr=0.0, cooldown=0):
        super().__init__(monitor, min_delta)
        owner = "ReduceLROnPlateau"
        self.factor, self.patience = float(check("factor", factor, owner)), int(check("patience", patience, owner))
        self.min_lr, self.cooldown = float(check("min_lr", min_lr, owner)), int(check("cooldown", cooldown, owner))
        self._wait = self._cooling = 0

    def on_train_begin(self, trainer):
        super().on_train_begin(trainer)
        self._wait = self._cooling = 0

    def state_dict(self):
        return {"best": None if math.isinf(self.best) else self.best, "best_epoch": self.best_epoch,
                "wait": self._wait, "cooling": self._cooling}

    def load_state_dict(self, state):
        self.best = math.inf if state["best"] is None else float(state["best"])
        self.best_epoch, self._wait, self._cooling = state["best_epoch"], int(state["wait"]), int(state["cooling"])

    def on_epoch_end(self, record, trainer):
        if self._cooling:
            self._cooling -= 1
        if self._improved(trainer):
            self._wait = 0
            return
        self._wait += 1
        # ">=": reduce after `patience` stalled epochs, as documented.
        if self._wait >= self.patience and not self._cooling:
            lr = trainer.optimizer.lr
            new_lr = max(lr * self.factor, self.min_lr)
            if new_lr < lr:
                factor = trainer.lr_factor * new_lr / lr
                if trainer.schedule is None:
                    # The loop sets lr = base_lr * lr_factor, which can round one ulp below the value meant
                    # (base 0.1, factor 0.1, min_lr 0.007 gave 0.006999999999999999): nudge the factor up.
                    while trainer.base_lr * factor < new_lr:
                        factor = math.nextafter(factor, math.inf)
                trainer.lr_factor = factor
            self._wait, self._cooling = 0, self.cooldown


class TerminateOnNaN(Callback):
    """Stop quietly, instead of raising DivergenceError, when a loss is not finite.

    The loop checks every batch's loss before its update, so the bad gradient
    never reaches the weights: they stay those before that batch (mini-batch)
    or before the epoch that produced the NaN (full batch). ``history.stop_message``
    names the epoch and batch.

    Example:
        >>> history = fit(model, X, y, ..., batch_size=32, callbacks=[TerminateOnNaN()])
        >>> history.stop_message    # e.g. "stopped at epoch 3, batch 17: the loss is nan; ..."
    """

    wants_records = False
    terminates_on_nan = True


class ModelCheckpoint(Callback):
    """Save the model (a gradloop model file) after epochs where ``monitor`` improved, or every epoch.

    ``bundle``: a :class:`gradloop.files.bundle.ModelBundle` describing the data
    (feature names, scaling, classes) whose ``model`` is the model being
    trained; without one, features are named x0, x1, ... and the target "y".
    Each save is atomic: the file is always a complete model.

    Example:
        >>> fit(model, X, y, ..., validation_split=0.2, callbacks=[ModelCheckpoint("best.safetensors")])
        >>> ModelBundle.load("best.safetensors").predict(X_new)
    """

    wants_records = False

    def __init__(self, path, monitor="val_loss", save_best_only=True, bundle=None):
        self.path, self.monitor, self.save_best_only, self.bundle = path, monitor, bool(save_best_only), bundle
        self.best, self.saved_epoch = math.inf, None

    def output_places(self):
        return [Place("ModelCheckpoint path", self.path)]

    def on_train_begin(self, trainer):
        if self.save_best_only:
            _check_monitor(trainer, self.monitor, "ModelCheckpoint")
        self.best, self.saved_epoch = math.inf, None

    def on_epoch_end(self, record, trainer):
        if self.save_best_only:
            value = _monitored(trainer, self.monitor, "ModelCheckpoint")
            if not (math.isfinite(value) and value < self.best):
                return
            self.best = value
        self._bundle(trainer).save(self.path)
        self.saved_epoch = trainer.epoch

    def _bundle(self, trainer):
        if self.bundle is not None:
            return self.bundle
        model = trainer.model
        classes = list(range(max(model.n_outputs, 2))) if model.task != "regression" else None
        return ModelBundle(model, [f"x{i}" for i in range(model.n_inputs)], "y", None, classes, trainer.loss.name)
