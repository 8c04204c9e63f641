"""The files and consumers of a ``gradloop train`` run: what it reads and writes (checked before
anything runs), the checkpoint folder's lock, the callbacks its options ask for (report, progress,
logs, early stopping, checkpoints), Ctrl-C and SIGTERM, the --report's final page, and what a run
that stopped or diverged says about its files."""

from __future__ import annotations

import contextlib
import json
import os
import sys

from ..callbacks import (CSVLogger, Callback, EarlyStopping, JSONLinesLogger, LiveReport, ProgressPrinter,
                         RichProgress, TracePrinter)
from ..checkpoint import FILE_NAME, LOCK_NAME, CheckpointWriter, FolderLock
from ..data import SKLEARN_PREFIX
from ..errors import DataError, DivergenceError
from ..divergence import STANDARDIZE_ADVICE
from ..files.modelfile import json_line
from ..files.paths import Place
from ..files.runlog import read_log


def train_places(args, data_files=None):
    """(inputs, outputs) of a train command, for :func:`gradloop.files.paths.check_places`; ``data_files``:
    the files DATA names when it is not one file (a folder or a glob of Parquet files)."""
    if data_files is not None:
        inputs = [Place("DATA file", f) for f in data_files]
    else:
        inputs = [None if str(args.data).startswith(SKLEARN_PREFIX) else Place("DATA file", args.data)]
    # Continuing a run in the folder it was checkpointed in is the point of --resume: that folder
    # is written again, by design; any other output on the checkpoint it reads is refused.
    if args.resume is not None and not (args.checkpoint and same_path(args.resume, args.checkpoint)):
        reads = () if os.path.isfile(args.resume) else (FILE_NAME,)
        inputs.append(Place("--resume checkpoint", args.resume, writes=reads))
    outputs = [Place("--out", args.out), Place("--log", args.log), Place("--report", args.report),
               Place("--checkpoint", args.checkpoint, folder=True, writes=(FILE_NAME, LOCK_NAME))]
    return inputs, outputs


def same_path(a, b):
    return os.path.realpath(a) == os.path.realpath(b)


@contextlib.contextmanager
def checkpoint_lock(args):
    """The --checkpoint folder's lock, held from before any work: a second run on the folder is refused
    at its start. A folder that does not exist yet is created and locked when training starts (None)."""
    lock = FolderLock(args.checkpoint) if args.checkpoint and os.path.isdir(args.checkpoint) else None
    with lock or contextlib.nullcontext():
        yield lock


def command_line_divergence(exc, args):
    """The loop's DivergenceError in the command line's words (its option), with what became of the
    run's files: the loop "keeps" the last finite weights in memory, which the command does not save."""
    done = (f"; they were not saved to {args.out}" if args.out else "") + (
        f"; {args.log} holds epochs 1 to {exc.epoch - 1}" if args.log and exc.epoch > 1 else "")
    message = str(exc).replace(STANDARDIZE_ADVICE, "standardize them (--standardize)")
    return DivergenceError(f"{message}{done}", epoch=exc.epoch, weights=exc.weights, stable_lr=exc.stable_lr,
                           lr=exc.lr, bias=exc.bias)


def stopped(stopper, history, args):
    """What a run that stopped early says: the exit status when a signal stopped it (None otherwise)."""
    if stopper.signum is not None:
        inside = history.stopped_inside  # a run from a source stops between two blocks
        upto = f"block {inside['blocks']} of epoch {inside['epoch']}" if inside else f"epoch {history.epochs_run}"
        where = f"; the run up to {upto} is checkpointed in {args.checkpoint} " \
                f"(continue with --resume {args.checkpoint})" if args.checkpoint else "; nothing was saved"
        print(f"gradloop: interrupted by {stopper.name}{where}", file=sys.stderr)
        return 128 + stopper.signum
    if history.stop_message:
        print(f"gradloop: {history.stop_message}")
    return None


def run_callbacks(args, trace_first, progress, config, lock, feature_names=None, classes=None):
    """The consumers of the run's records that the options ask for."""

    callbacks = []
    if args.trace is not None or trace_first is not None:
        callbacks.append(TracePrinter(every=args.trace or 1, limit=trace_first, feature_names=feature_names,
                                      standardized=bool(args.standardize), classes=classes))
    elif progress and not args.quiet:
        # A bar on a terminal; plain lines where the output is a file or a pipe (logs stay readable).
        callbacks.append(RichProgress() if sys.stdout.isatty() else ProgressPrinter(after=trace_first or 0))
    if args.log:
        callbacks.append(CSVLogger(args.log) if args.log.lower().endswith(".csv")
                         else JSONLinesLogger(args.log, tensors=bool(args.log_tensors)))
    if args.report:
        callbacks.append(LiveReport(args.report, title=report_title(args), feature_names=feature_names,
                                    records=logged_records(args), finish_later=True))
    if args.early_stopping is not None:
        callbacks.append(EarlyStopping("val_loss" if args.val_split else "loss", patience=args.early_stopping))
    if args.checkpoint:
        callbacks.append(CheckpointWriter(args.checkpoint, args.checkpoint_every, config, lock=lock))
    return callbacks


class SignalStop(Callback):
    """Ctrl-C (SIGINT) or SIGTERM: finish the current epoch (mini-batches from a source: the current
    block), let the checkpoint be written, then stop.

    A second signal interrupts at once (the last complete checkpoint is still on disk).
    """

    wants_records = False

    def __init__(self):
        self.signum, self.name, self._previous = None, None, {}

    def on_train_begin(self, trainer):
        import signal

        def handler(signum, frame):
            if self.signum is not None:
                raise KeyboardInterrupt
            self.signum, self.name = signum, signal.Signals(signum).name
            trainer.stop_training, trainer.stop_reason = True, self.name

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not the main thread: leave the signals alone
                pass

    def on_train_end(self, history, trainer):
        import signal

        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


@contextlib.contextmanager
def finished_report(callbacks, args):
    """Around training: once it has ended, however it ended, the --report's final, static page.

    Yields a dict whose ``"final"`` the run sets to its final line. The page is what ``gradloop
    report`` draws from the --log (read back whole); without a log, the run's records and final
    line. A run refused before training started has no page, and gets none; one that stopped
    before its first epoch (a non-finite starting loss) removes the page it wrote at its start.
    """
    holder = {"final": None, "ended": None}  # "ended": how a run that did not finish ended, for the page
    try:
        yield holder
    except BaseException as exc:
        holder["ended"] = (f"it diverged at epoch {exc.epoch}" if isinstance(exc, DivergenceError)
                           else "it was interrupted" if isinstance(exc, KeyboardInterrupt)
                           else f"it stopped on an error: {exc}")
        raise
    finally:
        report = next((cb for cb in callbacks if isinstance(cb, LiveReport)), None)
        if report is not None and report.ran_epochs and args.log and os.path.exists(args.log):
            records, final = read_log(args.log)
            report.finish(final, records, ended=holder["ended"])
        elif report is not None:  # the final line through JSON, as a log would give it
            final = None if holder["final"] is None else json.loads(json_line(holder["final"]))
            report.finish(final, ended=holder["ended"])


def report_title(args):
    """The line under the report's heading: the log's name (as gradloop report writes it), else the page's."""
    return os.path.basename(args.log or args.report)


def logged_records(args):
    """The epochs a resumed run's --log already holds, for its --report (none when it cannot be read)."""
    if args.resume is None or not args.log or not os.path.exists(args.log):
        return []
    try:
        return read_log(args.log)[0]
    except DataError:
        return []
