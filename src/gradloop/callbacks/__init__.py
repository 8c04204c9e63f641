"""Consumers of epoch records: the report printer, progress, loggers, early stopping, checkpoints.

Each is a :class:`Callback` (the base class lives here, as in Keras); pass them to
``fit(..., callbacks=[...])``: ``TracePrinter`` (the chapter's report), ``ProgressPrinter``,
``RichProgress``, ``JSONLinesLogger``, ``CSVLogger``, ``EarlyStopping``, ``ReduceLROnPlateau``,
``TerminateOnNaN``, ``ModelCheckpoint``, ``Diagnostics`` (what goes wrong, with remedies),
``LivePlot`` (loss curves updated in place in a notebook), ``LiveReport`` (the HTML report,
rewritten on disk while training);
``gradloop.checkpoint.CheckpointWriter`` saves runs
for exact resume. The modules: ``base`` (the hooks), ``printing``, ``loggers``, ``monitors``.

Example:
    >>> fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=10,
    ...     callbacks=[TracePrinter(every=5), JSONLinesLogger("run.jsonl")])
"""

from .base import BatchRecord, Callback
from .diagnostics import Diagnostics, Finding
from .liveplot import LivePlot
from .livereport import LiveReport
from .loggers import CSVLogger, JSONLinesLogger
from .monitors import EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, TerminateOnNaN
from .printing import ProgressPrinter, RichProgress, TracePrinter

__all__ = ["BatchRecord", "CSVLogger", "Callback", "Diagnostics", "EarlyStopping", "Finding", "JSONLinesLogger",
           "LivePlot", "LiveReport", "ModelCheckpoint", "ProgressPrinter", "ReduceLROnPlateau", "RichProgress",
           "TerminateOnNaN", "TracePrinter"]
