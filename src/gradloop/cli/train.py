"""``gradloop train``: data in, a trained model, its evaluation and its files out.

The whole run of the command: load and split the data, scale it, build the
model and optimizer, the callbacks the options ask for (report, progress,
logs, early stopping, checkpoints), train (resuming if asked, stopping cleanly
on SIGINT/SIGTERM), print the evaluation and the gap to the least-squares
optimum, and save. Errors are raised as GradloopError; :mod:`gradloop.cli`
turns them into one line and an exit status.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys

import numpy as np

from ..bundle import ModelBundle
from ..callbacks import (CSVLogger, Diagnostics, EarlyStopping, JSONLinesLogger, LiveReport, ProgressPrinter,
                         RichProgress, TracePrinter)
from ..chapter import gap_to_optimum, least_squares, lipschitz
from ..checkpoint import FILE_NAME, LOCK_NAME, CheckpointWriter, FolderLock
from ..constraints import check_memory
from ..data import DEFAULT_TEST_SIZE, SKLEARN_PREFIX, Standardizer, fingerprint, load_xy, train_test_split
from ..errors import ConfigError, DataError, DivergenceError
from ..explain import ExplainEpoch
from ..layers import Dense
from ..loop import STANDARDIZE_ADVICE, fit, fit_targets, split_validation
from ..losses import get_loss
from ..lrfind import lr_find
from ..metrics import classification_metrics, regression_metrics
from ..modelfile import json_line
from ..models import linear, mlp
from ..optimizers import CosineLR, ExponentialLR, StepLR, get_optimizer
from ..paths import Place, check_places
from ..runlog import read_log
from .options import check_fingerprint, run_config

CLASSIFICATION_LOSSES = ("bce", "cross-entropy")
DIAGNOSE_SIZE = 10_000_000  # entries of X up to which the diagnosis computes the stable bound 2/L


# ---------------------------------------------------------------- train
def train_places(args, data_files=None):
    """(inputs, outputs) of a train command, for :func:`gradloop.paths.check_places`; ``data_files``:
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


def train_in_memory(args, resume, trace_first=None, progress=True):
    """``gradloop train`` on data read whole; ``args`` resolved, ``resume`` the checkpoint or None."""
    check_places(*train_places(args))
    with checkpoint_lock(args) as lock:
        return _train_locked(args, resume, trace_first, progress, lock)


@contextlib.contextmanager
def checkpoint_lock(args):
    """The --checkpoint folder's lock, held from before any work: a second run on the folder is refused
    at its start. A folder that does not exist yet is created and locked when training starts (None)."""
    lock = FolderLock(args.checkpoint) if args.checkpoint and os.path.isdir(args.checkpoint) else None
    with lock or contextlib.nullcontext():
        yield lock


def _train_locked(args, resume, trace_first, progress, lock):
    loss = get_loss(args.loss)
    classify = loss.name in CLASSIFICATION_LOSSES
    optimizer_name = args.optimizer

    try:
        data = load_xy(args.data, args.target, args.features, labels=classify)
    except DataError as exc:
        # Text in the target under a regression loss: the user most likely wants a classifier.
        if not classify and f"column {str(args.target)!r}: " in str(exc) and "is not a number" in str(exc):
            raise DataError(f"{exc}; to predict labels train a classifier (--loss cross-entropy or bce)") from None
        raise
    data_fingerprint = fingerprint(data)
    if resume is not None:
        check_fingerprint(resume, args, data_fingerprint)
    test_size = DEFAULT_TEST_SIZE if args.test_size is None else args.test_size
    train_idx, test_idx = train_test_split(len(data.X), test_size, args.seed, name="--test-size")
    X_train, y_train = data.X[train_idx], data.y[train_idx]
    X_test, y_test = data.X[test_idx], data.y[test_idx]
    scaler = None
    if args.standardize:
        scaler = Standardizer().fit(X_train, names=data.feature_names, source=args.data)
        X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    dtype = np.dtype(args.dtype)
    X_train, X_test = X_train.astype(dtype), X_test.astype(dtype)
    # float32 holds up to 3.4e38: a larger value would become inf here and fail far away.
    if not (np.isfinite(X_train).all() and np.isfinite(X_test).all()
            and (classify or np.isfinite(y_train.astype(dtype)).all())):
        raise ConfigError(f"--dtype {args.dtype}: {args.data} holds values too large for {args.dtype}; "
                          "use --dtype float64" + ("" if args.standardize else " or --standardize"))

    n_classes = len(data.classes) if classify else 0
    if loss.name == "bce" and n_classes != 2:
        raise ConfigError(f"--loss bce needs exactly 2 classes in {args.target!r}, found {n_classes}; "
                          f"use --loss cross-entropy")
    outputs = n_classes if loss.name == "cross-entropy" else 1
    model = _build_model(args, X_train.shape[1], outputs, loss.task, dtype)
    lr, stable_lr, auto_lr = _learning_rate(args, model, loss, X_train, data.feature_names)
    sweep = None
    if args.lr == "find":
        # A resumed run takes its learning rate from the checkpoint: no sweep then.
        sweep = None if resume is not None else _found_lr(args, model, loss, X_train, y_train, optimizer_name)
        lr = 1e-3 if sweep is None else sweep.suggestion

    optimizer = get_optimizer(optimizer_name, lr, args.weight_decay)
    schedule = _schedule(args)

    # The validation rows are split off here, as fit would: the rows trained on are then known,
    # and the final training loss is measured on them.
    X_fit, y_fit, validation = X_train, y_train, None
    if args.val_split:
        X_fit, y_fit, validation = split_validation(X_train, y_train, args.val_split, args.seed, classify)
    config = run_config(args, data_fingerprint)
    callbacks = _callbacks(args, trace_first, progress, config, lock, data.feature_names, data.classes)
    if args.explain is not None:
        callbacks.append(ExplainEpoch(args.explain, X_fit, y_fit, batch_size=args.batch_size, round_to=args.round_to))
    # First among the consumers, so that its findings are in the record the loggers write.
    linear_mse = args.model == "linear" and loss.name == "mse"
    # The bound 2/L costs one pass over X (an X^T X): paid for the diagnosis on data up to DIAGNOSE_SIZE
    # entries, or when --lr auto has already paid it.
    bound = stable_lr if auto_lr else (stable_lr() if linear_mse and X_fit.size <= DIAGNOSE_SIZE else None)
    diagnostics = Diagnostics(verbose=bool(args.diagnose), stable_lr=bound,
                              feature_scales=None if args.standardize else _scales(X_fit, data.feature_names),
                              classes=data.classes,
                              optimum=(lambda: least_squares(X_fit, y_fit).loss) if linear_mse else None)
    callbacks.insert(0, diagnostics)
    print(_run_summary(args, model, loss, len(X_train), len(X_test), lr, auto_lr, resume))
    stopper = _SignalStop()
    with finished_report(callbacks, args) as report:
        try:
            history = fit(model, X_fit, y_fit, loss=loss, optimizer=optimizer, epochs=args.epochs,
                          batch_size=args.batch_size, seed=args.seed, callbacks=[stopper, *callbacks],
                          round_to=args.round_to, schedule=schedule, clip_norm=args.clip_norm, stable_lr=stable_lr,
                          gradient=args.gradient, validation_data=validation, resume=resume,
                          check_gradients=args.check_gradients)
        except DivergenceError as exc:
            # The loop "keeps" the last finite weights in memory; on the command line say what that means.
            done = (f"; they were not saved to {args.out}" if args.out else "") + (
                f"; {args.log} holds epochs 1 to {exc.epoch - 1}" if args.log and exc.epoch > 1 else "")
            raise command_line_divergence(exc, done) from exc
        if (status := stopped(stopper, history, args)) is not None:
            return status

        # The loss of the weights the model keeps (an early-stopped run: the best epoch's), on the rows
        # it trained on, in evaluation mode: one number whatever the logging, resumed or not.
        final_loss = float(loss.value(fit_targets(model, loss, y_fit), model.predict_raw(X_fit))) \
            if history.epochs_run else None
        bundle = ModelBundle(model, data.feature_names, data.target_name, scaler, data.classes, loss.name,
                             {"epochs": history.epochs_run, "lr": lr, "optimizer": optimizer_name,
                              "batch_size": args.batch_size, "seed": args.seed, "final_loss": final_loss})
        # --epochs 0 is allowed (the starting weights, evaluated): there is no final loss to print then.
        final = "none (no epoch run)" if final_loss is None else f"{final_loss:.6g}"
        restored = getattr(history, "restored_epoch", None)
        kept = f" (the model keeps epoch {restored}'s weights, the best)" if restored is not None else ""
        print(f"\nTrained {history.epochs_run} epochs; final training loss {final}{kept}")
        if not args.diagnose and diagnostics.summary():
            print(diagnostics.summary())
        _print_metrics("training rows", bundle, X_fit, y_fit)
        if validation is not None:
            _print_metrics("validation rows", bundle, *validation)
        if len(X_test):
            _print_metrics("test rows", bundle, X_test, y_test)
        if args.model == "linear" and loss.name == "mse":
            _print_optimum(bundle, X_fit, y_fit)
        json_log = args.log and not args.log.lower().endswith(".csv")  # CSV rows are epochs only
        if (json_log or args.report) and history.epochs_run:
            held_out = len(X_test) > 0
            report["final"] = line = final_line(bundle, X_test if held_out else X_fit, y_test if held_out else y_fit,
                                                "test" if held_out else "training", history, sweep)
            if json_log:
                with open(args.log, "a", encoding="utf-8") as fh:
                    fh.write(json_line(line) + "\n")
        if args.out:
            bundle.save(args.out)
            print(f"Saved the model to {args.out}")
        return 0


def _scales(X, names):
    """Each feature's root mean square: how big it is to the gradient (for the diagnostics)."""
    return dict(zip(names, np.sqrt(np.einsum("ij,ij->j", X, X) / max(len(X), 1)).tolist()))


def command_line_divergence(exc, done):
    """The loop's DivergenceError in the command line's words (its option), with ``done``: what became
    of the run's files."""
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


def _run_summary(args, model, loss, n_train, n_test, lr, auto_lr, resume):
    """The one line that says what is about to be trained, on what, and how."""
    rows = f"{n_train} training rows ({n_test} test"
    if args.val_split:
        rows += f"; {round(args.val_split * n_train)} of the training rows held out for validation"
    auto = " (auto: 1/L)" if auto_lr else ""
    batches = f"batches of {args.batch_size}" if args.batch_size else "full batch"
    resuming = f", resuming at epoch {resume.epoch}" if resume else ""
    return (f"gradloop: {model_summary(model, loss)} on {rows}), lr {lr:.6g}{auto}, "
            f"{args.epochs} epochs, {batches}{resuming}")


def _callbacks(args, trace_first, progress, config, lock, feature_names=None, classes=None):
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


class _SignalStop:
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

    def on_epoch_end(self, record, trainer):
        pass

    def on_train_end(self, history, trainer):
        import signal

        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def model_summary(model, loss):
    sizes = [model.n_inputs] + [layer.out_features for layer in model.layers if isinstance(layer, Dense)]
    kind = "linear model" if len(sizes) == 2 else "MLP " + "-".join(map(str, sizes))
    return f"{kind}, {loss.name} loss, {sum(p.size for p in model.parameters())} parameters"


def _build_model(args, n_features, n_outputs, task, dtype):
    if args.model == "linear":
        model = linear(n_features, n_outputs, dtype=dtype)
        model.task = task
        return model
    sizes = [n_features, *args.hidden, n_outputs]
    check_memory(sizes, dtype.itemsize, f"--hidden {','.join(map(str, args.hidden))}")
    return mlp(sizes, args.activation, seed=args.seed, dtype=dtype, task=task)


def _learning_rate(args, model, loss, X, names):
    """(lr, stable lr: a number, a function computing it, or None; whether lr is 'auto').

    'auto' = 1/L exists only where L is known: the linear model with MSE.
    """
    linear_mse = args.model == "linear" and loss.name == "mse"
    if linear_mse and X.size:
        # 1/L needs X^T X: with values near sqrt(float max) it overflows to inf and the step to 0.
        big = np.abs(X).max(axis=0)
        top = float(big.max())
        if not math.isfinite(top * top * len(X)):  # (top ** 2 would raise OverflowError)
            j = int(np.argmax(big))
            raise ConfigError(f"{args.data}: column {names[j]!r}: feature values up to {big[j]:.3g} are too large "
                              "for the linear model (their squares overflow); use --standardize or rescale them")
    if args.lr == "auto" or (args.lr is None and linear_mse and args.optimizer == "sgd"):
        if not linear_mse:
            raise ConfigError("--lr auto needs the linear model with --loss mse; give a number")
        stable = 2.0 / lipschitz(X)
        return stable / 2.0, stable, True
    # Otherwise L only matters if training diverges: fit computes it then (an X^T X pass saved).
    stable = (lambda: 2.0 / lipschitz(X)) if linear_mse else None
    if args.lr is None:
        return (1e-3 if args.optimizer.startswith("adam") else 0.01), stable, False
    return args.lr, stable, False


def _found_lr(args, model, loss, X, y, optimizer_name):
    """--lr find: the finder's sweep on the training rows (model and optimizer left as they were)."""
    found = lr_find(model, X, y, loss=loss, optimizer=get_optimizer(optimizer_name, 1e-3, args.weight_decay),
                    batch_size=args.batch_size, seed=args.seed)
    print(found)
    return found


def _schedule(args):
    if args.schedule is None:
        return None
    epochs = max(args.epochs, 1)
    return {"step": lambda: StepLR(max(1, epochs // 3), 0.1), "exponential": lambda: ExponentialLR(0.99),
            "cosine": lambda: CosineLR(epochs)}[args.schedule]()


def metrics_of(bundle, X_scaled, y):
    """Metrics of the bundle's network on already-scaled inputs (targets: values or class indices)."""
    model = bundle.model
    if model.task == "regression":
        return regression_metrics(y, model.predict(X_scaled)[:, 0])
    proba = model.predict_proba(X_scaled)
    onehot = np.eye(proba.shape[1])[y]
    # For classifiers the regression keys describe the probabilities against one-hot targets (Brier score).
    result = regression_metrics(onehot[:, 1] if proba.shape[1] == 2 else onehot,
                                proba[:, 1] if proba.shape[1] == 2 else proba)
    result.update(classification_metrics(y, proba.argmax(axis=1), proba.shape[1]))
    return result


def _print_metrics(title, bundle, X_scaled, y):
    print(metrics_line(title, metrics_of(bundle, X_scaled, y)))


def metrics_line(title, m):
    """One line of the metrics the train command prints for a set of rows (a classifier's or a regression's)."""
    if "accuracy" in m:
        return (f"  {title:14s} accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  "
                f"recall {m['recall']:.4f}  f1 {m['f1']:.4f}")
    r2 = "n/a (constant target)" if math.isnan(m["r2"]) else f"{m['r2']:.4f}"
    return f"  {title:14s} MSE {m['mse']:.6g}  RMSE {m['rmse']:.6g}  MAE {m['mae']:.6g}  R^2 {r2}"


def _print_optimum(bundle, X, y):
    layer = bundle.model.layers[0]
    optimum = least_squares(X, y)
    gap = gap_to_optimum(X, y, layer.params["W"], layer.params.get("b"), optimum)
    print(f"Gap to the least-squares optimum (training rows): {gap.summary()}")
    W, b = bundle.linear_coefficients()
    coefficients = ", ".join(f"{name} {w:.6g}" for name, w in zip(bundle.feature_names, W[:, 0]))
    print(f"Coefficients in the original units: {coefficients}; intercept {b[0]:.6g}")


# ---------------------------------------------------------------- report
FINAL_ROWS = 5000  # rows of targets and predictions kept in the --log's final line


def final_line(bundle, X_scaled, y, split, history, sweep=None):
    """The run's result, the ``--log``'s last line ``{"final": true, ...}`` (and the --report's summary).

    It holds the task, the targets and predictions of the held-out rows (the training rows when
    none are held out; the first FINAL_ROWS), the classes, and the metrics and confusion matrix of
    all those rows: what ``gradloop report`` draws beside the epochs. Labels are the data's. Also
    why training stopped, whose weights the model kept, and the features' names.
    """
    model, classes = bundle.model, bundle.classes
    metrics = metrics_of(bundle, X_scaled, y)
    confusion = metrics.pop("confusion_matrix", None)
    true, pred = y[:FINAL_ROWS], model.predict(X_scaled[:FINAL_ROWS])
    if classes is None:
        y_true, y_pred = true.tolist(), pred.reshape(len(pred), -1)[:, 0].tolist()
    else:
        y_true, y_pred = [classes[i] for i in true], [classes[i] for i in pred]
    restored = getattr(history, "restored_epoch", None)
    line = {"final": True, "task": model.task, "split": split, "rows": len(y), "y_true": y_true,
            "y_pred": y_pred, "classes": classes, "metrics": metrics,
            "stopped": history.stop_message or f"after its last epoch ({history.epochs_run})",
            "kept_epoch": history.epochs_run if restored is None else restored, "restored": restored is not None,
            "feature_names": [str(name) for name in bundle.feature_names]}
    if confusion is not None:
        line["confusion_matrix"] = confusion
    if sweep is not None:  # the --lr find curve, for the report
        line["lr_find"] = {"lrs": sweep.lrs, "losses": sweep.losses, "suggestion": sweep.suggestion,
                           "stable_lr": sweep.stable_lr}
    return line


@contextlib.contextmanager
def finished_report(callbacks, args):
    """Around training: once it has ended, however it ended, the --report's final, static page.

    Yields a dict whose ``"final"`` the run sets to its final line. The page is what ``gradloop
    report`` draws from the --log (read back whole); without a log, the run's records and final
    line. A run refused before training started has no page, and gets none; one that stopped
    before its first epoch (a non-finite starting loss) removes the page it wrote at its start.
    """
    holder = {"final": None}
    try:
        yield holder
    finally:
        report = next((cb for cb in callbacks if isinstance(cb, LiveReport)), None)
        if report is not None and report.ran_epochs and args.log and os.path.exists(args.log):
            records, final = read_log(args.log)
            report.finish(final, records)
        elif report is not None:  # the final line through JSON, as a log would give it
            report.finish(None if holder["final"] is None else json.loads(json_line(holder["final"])))


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

