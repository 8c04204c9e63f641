"""Callbacks that log: one line per epoch, as JSON lines or CSV rows, flushed line by line."""

from __future__ import annotations

import csv
import json
import math
import os

from ..constraints import check
from ..errors import ConfigError
from ..files.modelfile import atomic_write_bytes, json_line
from ..files.paths import Place
from .base import Callback, due


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
        if not due(record.epoch, self.every, trainer.epochs):
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

    ``tensors=False`` (the default) logs arrays of more than 64 entries as their shape, norm and
    first entries; ``tensors=True`` logs every gradient and weight whole.

    Example:
        >>> fit(model, X, y, ..., callbacks=[JSONLinesLogger("run.jsonl")])   # then: gradloop report run.jsonl
    """

    def __init__(self, path, every=1, tensors=False):
        super().__init__(path, every)
        self.tensors = bool(tensors)

    def _write(self, record):
        self._file.write(json_line(record.to_dict(tensors=self.tensors)) + "\n")

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
