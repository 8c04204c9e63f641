"""Consumers of epoch records: the chapter's report printer and the JSON-lines logger.

Each is a :class:`gradloop.loop.Callback`; pass them to ``fit(..., callbacks=[...])``.

Example:
    >>> fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=10,
    ...     callbacks=[TracePrinter(every=5), JSONLinesLogger("run.jsonl")])
"""

from __future__ import annotations

import json
import sys

import numpy as np

from .loop import Callback

# Parameters with more entries than this are summarised (norm and a few values).
PRINT_LIMIT = 12


def _fmt(array, precision=6):
    """A head of predictions as a flat list when there is one output, else as rows."""
    a = np.asarray(array)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    return np.array2string(a, precision=precision, separator=", ", suppress_small=False,
                           max_line_width=120)


# A one-layer model is the chapter's linear model: call its parameters what the chapter does.
_CHAPTER_NAMES = {"0.W": "weights", "0.b": "bias"}


def _fmt_params(names, arrays, precision=6):
    if set(names) <= set(_CHAPTER_NAMES):
        names = [_CHAPTER_NAMES[n] for n in names]
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
    """

    def __init__(self, every=1, file=None, limit=None):
        self.every = max(1, int(every))
        self.file = file
        self.limit = limit  # print no epoch after this one (the demo shows the first few)

    def on_epoch_end(self, record, trainer):
        if record.epoch % self.every and record.epoch not in (1, trainer.epochs):
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


def _json_line(obj):
    """Strict JSON: a non-finite number (a diverging run's loss) is written as null."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        def clean(v):
            if isinstance(v, float):
                return v if np.isfinite(v) else None
            if isinstance(v, dict):
                return {k: clean(x) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x) for x in v]
            return v

        return json.dumps(clean(obj), allow_nan=False)


class JSONLinesLogger(Callback):
    """One JSON object per epoch (``EpochRecord.to_dict()``), each line written whole and flushed.

    The file is opened when training begins, after every input was validated,
    so a bad argument never leaves a file behind.
    """

    def __init__(self, path, every=1):
        self.path = path
        self.every = max(1, int(every))
        self._file = None

    def on_train_begin(self, trainer):
        self._file = open(self.path, "w", encoding="utf-8")

    def on_epoch_end(self, record, trainer):
        if record.epoch % self.every and record.epoch not in (1, trainer.epochs):
            return
        self._file.write(_json_line(record.to_dict()) + "\n")
        self._file.flush()

    def on_train_end(self, history, trainer):
        self.close()

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


class ProgressPrinter(Callback):
    """A short progress summary: about ``lines`` plain lines over the run (epoch, loss, val loss, lr).

    Reads only the History's numbers, so the loop builds no records for it.
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
        if h.get("new_loss"):
            parts.append(f"after update {h['new_loss'][-1]:.6g}")
        if h.get("val_loss"):
            parts.append(f"val loss {h['val_loss'][-1]:.6g}")
        parts.append(f"lr {h['lr'][-1]:.4g}")
        print("  ".join(parts), file=self.file or sys.stdout)
