"""Callbacks that print: the chapter's per-epoch report, plain progress lines, a rich progress bar."""

from __future__ import annotations

import sys

import numpy as np

from ..constraints import check
from ..layers import sigmoid
from ..losses import softmax
from ..models import CHAPTER_NAMES
from .base import Callback, due


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


class TracePrinter(Callback):
    """The chapter's per-epoch report, every ``every`` epochs (and always the last).

    Prints, in the chapter's order: Epoch k; predicted output for the first 5
    samples; actual output; difference (actual - predicted); current loss;
    gradients; updated weights; new prediction after the update; new loss.

    For a classifier the heads are read as a classifier is: the predicted
    probabilities, the predicted class beside the true one, and in place of
    "difference" the probability of the true class and its loss (-log p).
    ``feature_names`` names the linear model's weights; ``standardized`` says
    they are in standardized units; ``classes`` names the classes.

    Example:
        >>> fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=100, callbacks=[TracePrinter(every=10)])
    """

    def __init__(self, every=1, file=None, limit=None, *, feature_names=None, standardized=False, classes=None):
        self.every = check("every", every)
        self.file = file
        self.limit = limit  # print no epoch after this one (the demo shows the first few)
        self.feature_names, self.standardized, self.classes = feature_names, standardized, classes

    def on_epoch_end(self, record, trainer):
        if not due(record.epoch, self.every, trainer.epochs):
            return
        if self.limit is not None and record.epoch > self.limit:
            return
        out = self.file or sys.stdout
        mean = record.batches > 1
        loss_label = f"Current loss (mean over the epoch's {record.batches} batches)" if mean else "Current loss"
        new_label = "New loss (final weights, whole training set)" if mean else "New loss after the update"
        pred_label = "Predicted output for the first 5 samples" + (" (first batch)" if mean else "")
        task = getattr(trainer.model, "task", "regression")
        if task == "regression":
            heads = (f"  {pred_label}: {_fmt(record.pred_head)}\n"
                     f"  Actual output for the first 5 samples: {_fmt(record.target_head)}\n"
                     f"  Difference between actual and predicted: {_fmt(record.diff_head)}\n")
            new_head = f"  New prediction for the first 5 samples after the update: {_fmt(record.new_pred_head)}\n"
        else:
            heads = self._classified(pred_label, record.pred_head, record.target_head, task)
            new_head = self._classified("New prediction for the first 5 samples after the update",
                                        record.new_pred_head, record.target_head, task, short=True)
        print(
            f"Epoch {record.epoch}:\n{heads}"
            f"  {loss_label}: {record.loss:.10g}\n"
            f"  Gradients for this epoch:\n{_fmt_params(record.names, record.gradients)}\n"
            f"  Updated weights after this epoch:\n{_fmt_params(record.names, record.weights)}\n"
            f"{self._weights_note(record)}{new_head}"
            f"  {new_label}: {record.new_loss:.10g}"
            + (f"\n  Validation loss: {record.val_loss:.10g}" if record.val_loss is not None else ""),
            file=out,
        )

    def _weights_note(self, record):
        """Which feature each of the linear model's weights belongs to, and in what units."""
        names = list(record.names)
        linear = (self.feature_names is not None and names[:1] == ["0.W"]
                  and record.weights[0].shape[0] == len(self.feature_names))
        parts = [f"in the order of the features {', '.join(map(str, self.feature_names))}"] if linear else []
        if self.standardized:
            parts.append("in standardized units: the inputs were scaled to mean 0, std 1")
        return f"    ({'; '.join(parts)})\n" if parts else ""

    def _classified(self, label, logits, target, task, short=False):
        """A classifier's heads: probabilities, predicted and true class, the true class's probability and loss."""
        logits = np.asarray(logits, dtype=np.float64)
        if task == "binary":
            p1 = sigmoid(logits[:, 0])
            proba = np.column_stack([1 - p1, p1])
        else:
            proba = softmax(logits)
        true = np.asarray(target, dtype=np.float64).reshape(len(proba), -1)[:, 0].astype(int)
        predicted = proba.argmax(axis=1)
        name = (lambda i: repr(self.classes[i])) if self.classes is not None else str
        pairs = ", ".join(f"{name(p)}/{name(t)}" for p, t in zip(predicted, true))
        p_true = proba[np.arange(len(true)), true]
        text = (f"  {label}, probabilities: {_fmt(proba, 4)}\n"
                f"  {'  ' if short else ''}predicted/true class: {pairs}\n")
        if not short:
            text += (f"  Probability of the true class: {_fmt(p_true, 4)}; its loss -log p: "
                     f"{_fmt(-np.log(np.maximum(p_true, 1e-300)), 4)}\n")
        return text


class ProgressPrinter(Callback):
    """A short progress summary: about ``lines`` plain lines over the run (epoch, loss, val loss, lr).

    Reads only the History's numbers, so the loop builds no records for it.

    Example:
        >>> fit(model, X, y, ..., epochs=1000, callbacks=[ProgressPrinter(lines=20)])
    """

    wants_records = False

    def __init__(self, lines=10, file=None, after=0):
        self.lines = int(check("lines", lines, "ProgressPrinter"))
        self.file = file
        # Epochs already shown in full (the demo's first reports): no line for them.
        self.after = int(check("after", after, "ProgressPrinter"))

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
        # rich loads here, on purpose: it is heavy, and only a run on a terminal draws a bar.
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
