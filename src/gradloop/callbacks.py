"""Consumers of epoch records: the report printer, progress, loggers, early stopping, checkpoints.

Each is a :class:`Callback` (the base class lives here, as in Keras); pass them to ``fit(..., callbacks=[...])``:
``TracePrinter`` (the chapter's report), ``ProgressPrinter``, ``JSONLinesLogger``,
``CSVLogger``, ``EarlyStopping``, ``ReduceLROnPlateau``, ``TerminateOnNaN``,
``ModelCheckpoint``; ``gradloop.checkpoint.CheckpointWriter`` saves runs for exact resume.

Example:
    >>> fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=10,
    ...     callbacks=[TracePrinter(every=5), JSONLinesLogger("run.jsonl")])
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass

import numpy as np

from .constraints import check
from .errors import ConfigError
from .io import json_line
from .models import CHAPTER_NAMES
from .paths import Place


class Callback:
    """Consumer of the loop's records. Override the hooks you need.

    Hooks: ``on_train_begin(trainer)``, ``on_epoch_end(record, trainer)``,
    ``on_batch_end(batch, trainer)`` (only for callbacks with
    ``wants_batches = True``; ``batch`` is a :class:`BatchRecord`), and
    ``on_train_end(history, trainer)``, which runs however training ended.
    ``wants_records = False`` marks a callback that reads only
    ``trainer.history`` (its ``record`` may then be None, and a run without
    record consumers builds none). ``trainer.stop_training = True`` ends
    training after the current epoch.
    """

    wants_records = True
    wants_batches = False

    def on_train_begin(self, trainer):
        pass

    def on_batch_end(self, batch, trainer):
        pass

    def on_epoch_end(self, record, trainer):
        pass

    def on_train_end(self, history, trainer):
        pass


@dataclass
class BatchRecord:
    """One mini-batch step: its epoch, its number in the epoch (1-based), its loss and size."""

    epoch: int
    batch: int
    loss: float
    size: int


# Parameters with more entries than this are summarised (norm and a few values).
PRINT_LIMIT = 12


def _fmt(array, precision=6):
    """A head of predictions as a flat list when there is one output, else as rows."""
    a = np.asarray(array)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    return np.array2string(a, precision=precision, separator=", ", suppress_small=False,
                           max_line_width=120)


def _fmt_params(names, arrays, precision=6):
    if set(names) <= set(CHAPTER_NAMES):
        names = [CHAPTER_NAMES[n] for n in names]
    lines = []
    for name, a in zip(names, arrays):
        if a.size <= PRINT_LIMIT:
            body = np.array2string(a.reshape(-1) if a.ndim == 2 and 1 in a.shape else a,
                                   precision=precision, separator=", ", max_line_width=120)
        else:
            first = np.array2string(a.reshape(-1)[:3], precision=4, separator=", ")
            body = f"shape {a.shape}, norm {np.linalg.norm(a):.6g}, first entries {first[:-1]}, ...]"
        lines.append(f"    {name}: {body}")
    return "\n".join(lines)


def _due(epoch, every, last):
    """Whether an every-``every``-epochs consumer handles ``epoch``: its multiples, the first and the last."""
    return epoch % every == 0 or epoch in (1, last)


class TracePrinter(Callback):
    """The chapter's per-epoch report, every ``every`` epochs (and always the last).

    Prints, in the chapter's order: Epoch k; predicted output for the first 5
    samples; actual output; difference (actual - predicted); current loss;
    gradients; updated weights; new prediction after the update; new loss.

    Example:
        >>> fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=100, callbacks=[TracePrinter(every=10)])
    """

    def __init__(self, every=1, file=None, limit=None):
        self.every = check("every", every)
        self.file = file
        self.limit = limit  # print no epoch after this one (the demo shows the first few)

    def on_epoch_end(self, record, trainer):
        if not _due(record.epoch, self.every, trainer.epochs):
            return
        if self.limit is not None and record.epoch > self.limit:
            return
        out = self.file or sys.stdout
        mean = record.batches > 1
        loss_label = f"Current loss (mean over the epoch's {record.batches} batches)" if mean else "Current loss"
        new_label = "New loss (final weights, whole training set)" if mean else "New loss after the update"
        pred_label = "Predicted output for the first 5 samples" + (" (first batch)" if mean else "")
        print(
            f"Epoch {record.epoch}:\n"
            f"  {pred_label}: {_fmt(record.pred_head)}\n"
            f"  Actual output for the first 5 samples: {_fmt(record.target_head)}\n"
            f"  Difference between actual and predicted: {_fmt(record.diff_head)}\n"
            f"  {loss_label}: {record.loss:.10g}\n"
            f"  Gradients for this epoch:\n{_fmt_params(record.names, record.gradients)}\n"
            f"  Updated weights after this epoch:\n{_fmt_params(record.names, record.weights)}\n"
            f"  New prediction for the first 5 samples after the update: {_fmt(record.new_pred_head)}\n"
            f"  {new_label}: {record.new_loss:.10g}"
            + (f"\n  Validation loss: {record.val_loss:.10g}" if record.val_loss is not None else ""),
            file=out,
        )


class _LineLogger(Callback):
    """A file with one line per epoch, opened at the first epoch's end and flushed line by line.

    Opening late means a run that fails before any epoch (bad input, a
    non-finite starting loss) leaves no file behind and overwrites none; a
    0-epoch run that finishes gets its (header-only) file.

    A resumed run (one that starts after epoch k of a checkpoint) appends: it first
    cuts the lines of epochs after k (written by a run killed before its next
    checkpoint) and the run's final line, so that after any sequence of kills and
    resumes the log holds every epoch once, as an unbroken run's would.
    """

    def __init__(self, path, every=1):
        self.path = path
        self.every = check("every", every)
        self._file = None
        self._resumed_at = 0

    def output_places(self):
        return [Place(f"{type(self).__name__} path", self.path)]

    def on_train_begin(self, trainer):
        self._file = None
        self._resumed_at = trainer.epoch
        if trainer.epoch > 0 and os.path.exists(self.path):
            self._cut_after(trainer.epoch)

    def _cut_after(self, epoch):
        """Rewrite the file (atomically) without the lines of epochs after ``epoch`` and without a final line."""
        from .io import atomic_write_bytes

        with open(self.path, encoding="utf-8", newline="") as fh:
            lines = fh.read().splitlines(keepends=True)
        kept = [line for number, line in enumerate(lines, 1) if self._keep(line, number, epoch)]
        if kept != lines:
            atomic_write_bytes(self.path, "".join(kept).encode("utf-8"), "log")

    def _epoch_of(self, line, number):
        """The epoch a line records; None for a line kept whatever the epoch (the CSV header), inf for
        one always cut (the final line, written again when the resumed run ends)."""
        raise NotImplementedError

    def _keep(self, line, number, epoch):
        if not line.strip():
            return False
        try:
            line_epoch = self._epoch_of(line, number)
        except (ValueError, TypeError, KeyError, IndexError):
            raise ConfigError(f"{type(self).__name__} path {self.path}: line {number} is not a line of a "
                              f"gradloop log, so the resumed run cannot continue it; give another log path") from None
        return line_epoch is None or line_epoch <= epoch

    def _open(self):
        append = self._resumed_at > 0 and os.path.exists(self.path)
        self._file = open(self.path, "a" if append else "w", newline="", encoding="utf-8")
        self._start(header=not append)

    def _start(self, header):
        pass

    def on_epoch_end(self, record, trainer):
        if not _due(record.epoch, self.every, trainer.epochs):
            return
        if self._file is None:
            self._open()
        self._write(record)
        self._file.flush()

    def on_train_end(self, history, trainer):
        if self._file is None and trainer.epochs == 0:
            self._open()
        self.close()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class JSONLinesLogger(_LineLogger):
    """One JSON object per epoch (``EpochRecord.to_dict()``): strict JSON, each line written whole.

    Example:
        >>> fit(model, X, y, ..., callbacks=[JSONLinesLogger("run.jsonl")])   # then: gradloop report run.jsonl
    """

    def _write(self, record):
        self._file.write(json_line(record.to_dict()) + "\n")

    def _epoch_of(self, line, number):
        obj = json.loads(line)
        if obj.get("final") is True:
            return math.inf  # the run's result: written again when the resumed run ends
        return int(obj["epoch"])


class CSVLogger(_LineLogger):
    """One CSV row per epoch: epoch, loss, new_loss, val_loss, lr, grad_norm, update_ratio, seconds.

    Written with the standard csv module, each row flushed whole.

    Example:
        >>> fit(model, X, y, ..., validation_split=0.2, callbacks=[CSVLogger("run.csv")])
    """

    COLUMNS = ("epoch", "loss", "new_loss", "val_loss", "lr", "grad_norm", "update_ratio", "seconds")

    def _start(self, header):
        self._writer = csv.writer(self._file)
        if header:
            self._writer.writerow(self.COLUMNS)

    def _epoch_of(self, line, number):
        fields = next(csv.reader([line]))
        if number == 1:
            if fields[:1] != ["epoch"]:
                raise ValueError("not our header")
            return None
        return int(fields[0])

    def _write(self, record):
        row = record.to_dict()
        self._writer.writerow(["" if row.get(c) is None else row.get(c) for c in self.COLUMNS])


class ProgressPrinter(Callback):
    """A short progress summary: about ``lines`` plain lines over the run (epoch, loss, val loss, lr).

    Reads only the History's numbers, so the loop builds no records for it.

    Example:
        >>> fit(model, X, y, ..., epochs=1000, callbacks=[ProgressPrinter(lines=20)])
    """

    wants_records = False

    def __init__(self, lines=10, file=None, after=0):
        self.lines = max(1, int(lines))
        self.file = file
        self.after = after  # epochs already shown in full (the demo's first reports): no line for them

    def on_epoch_end(self, record, trainer):
        epoch, total = trainer.history.epochs_run, trainer.epochs
        if epoch <= self.after:
            return
        step = max(1, total // self.lines)
        if epoch % step and epoch not in (1, total):
            return
        h = trainer.history.history
        parts = [f"epoch {epoch:>{len(str(total))}}/{total}", f"loss {h['loss'][-1]:.6g}"]
        if len(h.get("new_loss", ())) == len(h["loss"]):  # this epoch measured it
            parts.append(f"after update {h['new_loss'][-1]:.6g}")
        if h.get("val_loss"):
            parts.append(f"val loss {h['val_loss'][-1]:.6g}")
        parts.append(f"lr {h['lr'][-1]:.4g}")
        print("  ".join(parts), file=self.file or sys.stdout)


class RichProgress(Callback):
    """A progress bar on a terminal (rich): epoch, loss, validation loss, learning rate, time left.

    For output that is not a terminal use :class:`ProgressPrinter` (plain lines that
    stay readable in logs). Reads only the History: no records are built for it.

    Example:
        >>> fit(model, X, y, ..., validation_split=0.2, callbacks=[RichProgress()])
    """

    wants_records = False

    def __init__(self, console=None):
        self.console = console
        self._progress = None

    def on_train_begin(self, trainer):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("epoch"), MofNCompleteColumn(), BarColumn(),
                                  TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                  console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task("train", total=trainer.epochs, completed=trainer.epoch, status="")

    def on_epoch_end(self, record, trainer):
        h = trainer.history.history
        status = f"loss {h['loss'][-1]:.5g}"
        if h.get("val_loss"):
            status += f"  val loss {h['val_loss'][-1]:.5g}"
        status += f"  lr {h['lr'][-1]:.3g}"
        self._progress.update(self._task, completed=trainer.epoch, status=status)

    def on_train_end(self, history, trainer):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# ---------------------------------------------------------------- monitoring
def _check_monitor(trainer, monitor, owner):
    """Refuse, before any epoch runs, to watch a validation loss that will never exist."""
    if monitor == "val_loss" and not trainer.has_validation:
        from .errors import ConfigError

        raise ConfigError(f"{owner} monitors 'val_loss', which this run does not record "
                          f"(pass validation_data or validation_split, or monitor 'loss')")


def _monitored(trainer, monitor, owner):
    """The latest value of ``monitor`` ("val_loss", "loss", "new_loss") from the History."""
    values = trainer.history.history.get(monitor)
    if not values:
        from .errors import ConfigError

        hint = " (pass validation_data or validation_split)" if monitor == "val_loss" else ""
        raise ConfigError(f"{owner} monitors {monitor!r}, which this run does not record{hint}")
    return values[-1]


class _Monitor(Callback):
    """Shared by callbacks that watch a quantity for improvement (lower is better)."""

    wants_records = False

    def __init__(self, monitor, min_delta):
        self.monitor, self.min_delta = monitor, float(min_delta)
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
        if int(patience) < 0:
            from .errors import ConfigError

            raise ConfigError(f"EarlyStopping patience must be >= 0, got {patience}")
        self.patience, self.restore_best = int(patience), bool(restore_best)
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
        if not 0 < float(factor) < 1:
            from .errors import ConfigError

            raise ConfigError(f"ReduceLROnPlateau factor must be in (0, 1), got {factor}")
        self.factor, self.patience = float(factor), int(patience)
        self.min_lr, self.cooldown = float(min_lr), int(cooldown)
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

    ``bundle``: a :class:`gradloop.bundle.ModelBundle` describing the data
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
        from .bundle import ModelBundle

        if self.bundle is not None:
            return self.bundle
        model = trainer.model
        classes = list(range(max(model.n_outputs, 2))) if model.task != "regression" else None
        return ModelBundle(model, [f"x{i}" for i in range(model.n_inputs)], "y", None, classes, trainer.loss.name)
