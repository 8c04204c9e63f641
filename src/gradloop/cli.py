"""The ``gradloop`` command: train, evaluate, predict, report, demo.

Every user error becomes one line on stderr and exit status 2 (divergence: 3),
with no traceback, and no file written or overwritten: inputs are validated and
training finishes before anything is saved, and saving is atomic. One exception:
a run that diverges after its first epoch leaves its ``--log`` with the epochs
before the divergence (the message says so), the evidence of what went wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from .errors import ConfigError, DataError, DivergenceError, GradloopError

EXIT_ERROR, EXIT_DIVERGED = 2, 3
CLASSIFICATION_LOSSES = ("bce", "cross-entropy")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the project's error format), exit 2."""

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _lr(text):
    if text == "auto":
        return text
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'auto', got {text!r}")
    return value


def _hidden(text):
    sizes = []
    for part in text.split(","):
        try:
            size = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
        if size < 1:
            raise argparse.ArgumentTypeError(f"every hidden size must be at least 1, got {text!r}")
        sizes.append(size)
    return sizes


def build_parser():
    from .layers import ACTIVATIONS
    from .losses import LOSSES
    from .optimizers import OPTIMIZERS, SCHEDULES

    parser = _Parser(prog="gradloop", description="A glass-box training loop: every number, every epoch.")
    parser.add_argument("--version", action="version", version=f"gradloop {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model on a data file")
    train.add_argument("data", help="CSV (with a header), Parquet, .npy or .npz file, or sklearn:NAME for "
                                    "scikit-learn's bundled diabetes, digits, iris, wine, breast_cancer")
    train.add_argument("--target", required=True, help="name of the target column")
    train.add_argument("--features", help="comma-separated feature columns (default: every other column)")
    train.add_argument("--lr", type=_lr, default=None,
                       help="learning rate, or 'auto' (linear model with MSE: 1/L); "
                            "default auto for the linear model with sgd, else 0.01 (sgd) or 0.001 (adam)")
    train.add_argument("--epochs", type=_non_negative_int, default=100, help="number of epochs (default 100)")
    train.add_argument("--standardize", action="store_true",
                       help="scale features to mean 0, std 1 (fitted on the training rows)")
    train.add_argument("--test-size", type=_float, default=None,
                       help="fraction of rows held out for testing (default 0.2; 0 trains on every row)")
    train.add_argument("--seed", type=int, default=0, help="seed of the split, initial weights and batches")
    train.add_argument("--trace", nargs="?", type=_positive_int, const=1, default=None, metavar="EVERY",
                       help="print the chapter's per-epoch report, every EVERY epochs (default 1)")
    train.add_argument("--round-to", type=_non_negative_int, default=None, metavar="N",
                       help="round gradients and weights to N decimals each epoch, as the chapter does")
    train.add_argument("--log", metavar="RUN.jsonl",
                       help="write every epoch's record as a JSON line (or a CSV row, for a .csv name)")
    train.add_argument("--val-split", type=_float, default=None, metavar="F",
                       help="hold out this fraction of the training rows for validation (by --seed; "
                            "stratified for classifiers): val loss every epoch")
    train.add_argument("--early-stopping", type=_non_negative_int, default=None, metavar="PATIENCE",
                       help="stop when the validation loss (training loss without --val-split) has not "
                            "improved for PATIENCE epochs, and keep the best epoch's weights")
    train.add_argument("--checkpoint", metavar="DIR",
                       help="save the whole run (model, optimizer, generator, history) in DIR for --resume")
    train.add_argument("--checkpoint-every", type=_positive_int, default=1, metavar="N",
                       help="checkpoint every N epochs (default 1), and always at the end")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run checkpointed in DIR; --epochs is the total, not a count")
    train.add_argument("--quiet", action="store_true", help="print nothing but errors")
    train.add_argument("--out", metavar="MODEL", help="save the trained model (safetensors + JSON metadata)")
    train.add_argument("--model", choices=("linear", "mlp"), default="linear")
    train.add_argument("--hidden", type=_hidden, default=[64], help="hidden layer sizes of the MLP, e.g. 64,32")
    train.add_argument("--activation", default="relu", help=f"MLP activation: {', '.join(ACTIVATIONS)}")
    train.add_argument("--loss", default="mse", help=f"loss: {', '.join(LOSSES)} (bce and cross-entropy classify)")
    train.add_argument("--optimizer", default="sgd", help=f"optimizer: {', '.join(OPTIMIZERS)}")
    train.add_argument("--batch-size", type=_positive_int, default=None,
                       help="rows per step (default: the full batch, the chapter's mode)")
    train.add_argument("--weight-decay", type=_float, default=0.0)
    train.add_argument("--schedule", default=None, help=f"learning-rate schedule: {', '.join(SCHEDULES)}")
    train.add_argument("--clip-norm", type=_float, default=None, help="clip the global gradient norm")
    train.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    train.add_argument("--gradient", choices=("auto", "gram", "stream", "layers"), default="auto",
                       help="full-batch gradient executor for the linear model with MSE: gram (X^T X once, "
                            "then O(d^2) per epoch), stream (one blocked pass over X per epoch), layers, "
                            "or auto (default: by cost)")

    evaluate = sub.add_parser("evaluate", help="metrics of a saved model on a data file")
    evaluate.add_argument("model")
    evaluate.add_argument("data", help="a data file as for train, with the target column")
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")

    predict = sub.add_parser("predict", help="one prediction per row of a data file")
    predict.add_argument("model")
    predict.add_argument("data", help="a data file as for train (the target column is not needed)")
    predict.add_argument("--out", metavar="CSV", help="write a CSV file instead of printing")
    predict.add_argument("--proba", action="store_true", help="class probabilities (classifiers)")

    report = sub.add_parser("report", help="an HTML page (and PNG plots) of a training log")
    report.add_argument("log", help="a JSON-lines log from train --log, or a CSV with epoch and loss columns")
    report.add_argument("-o", "--out", metavar="HTML",
                        help="the HTML report to write (default: the log's name with .html, unless --png is given)")
    report.add_argument("--png", metavar="DIR", help="write every plot as a PNG file into DIR (created if missing)")

    sub.add_parser("demo", help="train on the bundled diabetes data and show every number")
    return parser


def _version():
    from . import __version__

    return __version__


def main(argv=None):
    """Entry point of the ``gradloop`` console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        # NumPy's overflow/invalid warnings would add lines to stderr: the loop and the checks
        # below detect non-finite numbers themselves and say so in one line.
        with np.errstate(all="ignore"):
            status = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "demo": cmd_demo,
                      "report": cmd_report}[
                args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return status
    except BrokenPipeError:
        # `gradloop predict ... | head`: the reader left. Not an error of ours; exit quietly
        # (128 + SIGPIPE, as a shell reports it), and keep Python from complaining at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests)
            pass
        return 141
    except DivergenceError as exc:
        print(f"gradloop: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except GradloopError as exc:
        print(f"gradloop: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # e.g. permission denied on an output file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"gradloop: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("gradloop: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- train
def _check_output_path(path, option, folder=False):
    """Refuse an output whose parent folder is missing, or that is a folder (a file) or a file (a folder)."""
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ConfigError(f"{option} {path}: the folder {parent} does not exist")
    if folder and os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{option} {path}: is a file, expected a folder")
    if not folder and os.path.isdir(path):
        raise ConfigError(f"{option} {path}: is a folder, expected a file name")


def cmd_train(args, *, trace_first=None, progress=True):
    """``gradloop train``; with --quiet everything but errors (stderr) is silenced."""
    if not args.quiet:
        return _train(args, trace_first, progress)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return _train(args, trace_first, progress)


def _train(args, trace_first, progress):
    from .bundle import ModelBundle
    from .data import DEFAULT_TEST_SIZE, Standardizer, load_xy, train_test_split
    from .loop import fit
    from .losses import get_loss

    _check_output_path(args.out, "--out")
    _check_output_path(args.log, "--log")
    _check_output_path(args.checkpoint, "--checkpoint", folder=True)
    try:
        loss = get_loss(args.loss)
    except ConfigError as exc:  # name the option, like the other unknown names
        raise ConfigError(f"--loss: {exc}") from None
    classify = loss.name in CLASSIFICATION_LOSSES
    optimizer_name = args.optimizer
    _check_choices(args)

    try:
        data = load_xy(args.data, args.target, args.features, labels=classify)
    except DataError as exc:
        # Text in the target under a regression loss: the user most likely wants a classifier.
        if not classify and f"column {str(args.target)!r}: " in str(exc) and "is not a number" in str(exc):
            raise DataError(f"{exc}; to predict labels train a classifier (--loss cross-entropy or bce)") from None
        raise
    test_size = DEFAULT_TEST_SIZE if args.test_size is None else args.test_size
    train_idx, test_idx = train_test_split(len(data.X), test_size, args.seed)
    X_train, y_train = data.X[train_idx], data.y[train_idx]
    X_test, y_test = data.X[test_idx], data.y[test_idx]
    scaler = Standardizer().fit(X_train) if args.standardize else None
    if scaler is not None:
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
    lr, stable_lr = _learning_rate(args, model, loss, X_train)
    from .optimizers import get_optimizer

    optimizer = get_optimizer(optimizer_name, lr, args.weight_decay)
    schedule = _schedule(args)

    config = _run_config(args)
    resume = _load_resume(args, config)
    callbacks = _callbacks(args, trace_first, progress, config)
    print(_run_summary(args, model, loss, len(X_train), len(X_test), lr, stable_lr, resume))
    stopper = _SignalStop()
    try:
        history = fit(model, X_train, y_train, loss=loss, optimizer=optimizer, epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, callbacks=[stopper, *callbacks],
                      round_to=args.round_to, schedule=schedule, clip_norm=args.clip_norm, stable_lr=stable_lr,
                      gradient=args.gradient, validation_split=args.val_split, resume=resume)
    except DivergenceError as exc:
        # The loop "keeps" the last finite weights in memory; on the command line say what that means.
        done = (f"; they were not saved to {args.out}" if args.out else "") + (
            f"; {args.log} holds epochs 1 to {exc.epoch - 1}" if args.log and exc.epoch > 1 else "")
        raise DivergenceError(f"{exc}{done}", epoch=exc.epoch, weights=exc.weights, stable_lr=exc.stable_lr,
                              lr=exc.lr, bias=exc.bias) from exc
    if stopper.signum is not None:
        where = f"; the run up to epoch {history.epochs_run} is checkpointed in {args.checkpoint} " \
                f"(continue with --resume {args.checkpoint})" if args.checkpoint else "; nothing was saved"
        print(f"gradloop: interrupted by {stopper.name}{where}", file=sys.stderr)
        return 128 + stopper.signum
    if history.stop_message:
        print(f"gradloop: {history.stop_message}")

    bundle = ModelBundle(model, data.feature_names, data.target_name, scaler, data.classes, loss.name,
                         {"epochs": history.epochs_run, "lr": lr, "optimizer": optimizer_name,
                          "batch_size": args.batch_size, "seed": args.seed, "final_loss": history.final_loss})
    # --epochs 0 is allowed (the starting weights, evaluated): there is no final loss to print then.
    final = "none (no epoch run)" if history.final_loss is None else f"{history.final_loss:.6g}"
    restored = getattr(history, "restored_epoch", None)
    kept = f" (the model keeps epoch {restored}'s weights, the best)" if restored is not None else ""
    print(f"\nTrained {history.epochs_run} epochs; final training loss {final}{kept}")
    _print_metrics("training rows", bundle, X_train, y_train)
    if len(X_test):
        _print_metrics("test rows", bundle, X_test, y_test)
    if args.model == "linear" and loss.name == "mse":
        _print_optimum(bundle, X_train, y_train)
    if args.log and history.epochs_run and not args.log.lower().endswith(".csv"):  # CSV rows are epochs only
        held_out = len(X_test) > 0
        _log_final(args.log, bundle, X_test if held_out else X_train, y_test if held_out else y_train,
                   "test" if held_out else "training")
    if args.out:
        bundle.save(args.out)
        print(f"Saved the model to {args.out}")
    return 0


def _run_summary(args, model, loss, n_train, n_test, lr, stable_lr, resume):
    """The one line that says what is about to be trained, on what, and how."""
    rows = f"{n_train} training rows ({n_test} test"
    if args.val_split:
        rows += f"; {round(args.val_split * n_train)} of the training rows held out for validation"
    auto = " (auto: 1/L)" if args.lr in (None, "auto") and stable_lr else ""
    batches = f"batches of {args.batch_size}" if args.batch_size else "full batch"
    resuming = f", resuming at epoch {resume.epoch}" if resume else ""
    return (f"gradloop: {model_summary(model, loss)} on {rows}), lr {lr:.6g}{auto}, "
            f"{args.epochs} epochs, {batches}{resuming}")


def _callbacks(args, trace_first, progress, config):
    """The consumers of the run's records that the options ask for."""
    from .callbacks import (CSVLogger, EarlyStopping, JSONLinesLogger, ProgressPrinter, RichProgress,
                            TracePrinter)
    from .checkpoint import CheckpointWriter

    callbacks = []
    if args.trace is not None or trace_first is not None:
        callbacks.append(TracePrinter(every=args.trace or 1, limit=trace_first))
    elif progress and not args.quiet:
        # A bar on a terminal; plain lines where the output is a file or a pipe (logs stay readable).
        callbacks.append(RichProgress() if sys.stdout.isatty() else ProgressPrinter(after=trace_first or 0))
    if args.log:
        callbacks.append(CSVLogger(args.log) if args.log.lower().endswith(".csv") else JSONLinesLogger(args.log))
    if args.early_stopping is not None:
        callbacks.append(EarlyStopping("val_loss" if args.val_split else "loss", patience=args.early_stopping))
    if args.checkpoint:
        callbacks.append(CheckpointWriter(args.checkpoint, args.checkpoint_every, config))
    return callbacks


# Options that must match between a checkpointed run and its resumption (the rest may change).
RESUME_KEYS = ("data", "target", "features", "model", "hidden", "activation", "loss", "optimizer", "batch_size",
               "seed", "standardize", "test_size", "val_split", "dtype", "weight_decay", "schedule", "round_to")


def _run_config(args):
    return {key: getattr(args, key) for key in RESUME_KEYS}


def _load_resume(args, config):
    """The checkpoint to continue from (None without --resume), checked against this command's options."""
    from .checkpoint import load
    from .errors import CheckpointError

    if args.resume is None:
        return None
    state = load(args.resume)
    saved = state.config
    for key in RESUME_KEYS:
        if key in saved and saved[key] != config[key]:
            raise CheckpointError(f"--resume {args.resume}: the checkpoint was trained with --{key.replace('_', '-')} "
                                  f"{saved[key]!r}, this command says {config[key]!r}; give the same options")
    return state


class _SignalStop:
    """Ctrl-C (SIGINT) or SIGTERM: finish the current epoch, let the checkpoint be written, then stop.

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
    from .layers import Dense

    sizes = [model.n_inputs] + [layer.out_features for layer in model.layers if isinstance(layer, Dense)]
    kind = "linear model" if len(sizes) == 2 else "MLP " + "-".join(map(str, sizes))
    return f"{kind}, {loss.name} loss, {sum(p.size for p in model.parameters())} parameters"


def _check_choices(args):
    from .layers import ACTIVATIONS
    from .optimizers import OPTIMIZERS, SCHEDULES

    if args.activation not in ACTIVATIONS:
        raise ConfigError(f"--activation: unknown activation {args.activation!r}; known: {', '.join(ACTIVATIONS)}")
    if args.optimizer not in OPTIMIZERS:
        raise ConfigError(f"--optimizer: unknown optimizer {args.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    if args.schedule is not None and args.schedule not in SCHEDULES:
        raise ConfigError(f"--schedule: unknown schedule {args.schedule!r}; known: {', '.join(SCHEDULES)}")
    if args.weight_decay < 0:
        raise ConfigError(f"--weight-decay must be >= 0, got {args.weight_decay}")
    if args.clip_norm is not None and args.clip_norm <= 0:
        raise ConfigError(f"--clip-norm must be > 0, got {args.clip_norm}")


def _build_model(args, n_features, n_outputs, task, dtype):
    from .models import linear, mlp

    if args.model == "linear":
        model = linear(n_features, n_outputs, dtype=dtype)
        model.task = task
        return model
    return mlp([n_features, *args.hidden, n_outputs], args.activation, seed=args.seed, dtype=dtype, task=task)


def _learning_rate(args, model, loss, X):
    """(lr, stable lr or None). 'auto' = 1/L exists only where L is known: linear model, MSE."""
    from .chapter import lipschitz

    linear_mse = args.model == "linear" and loss.name == "mse"
    if linear_mse and X.size:
        # 1/L needs X^T X: with values near sqrt(float max) it overflows to inf and the step to 0.
        big = float(np.abs(X).max())
        if not math.isfinite(big * big * len(X)):
            raise ConfigError(f"{args.data}: feature values up to {big:.3g} are too large for the linear model "
                              "(their squares overflow); use --standardize or rescale them")
    stable = 2.0 / lipschitz(X) if linear_mse else None
    if args.lr == "auto" or (args.lr is None and linear_mse and args.optimizer == "sgd"):
        if not linear_mse:
            raise ConfigError("--lr auto needs the linear model with --loss mse; give a number")
        return stable / 2.0, stable
    if args.lr is None:
        return (1e-3 if args.optimizer.startswith("adam") else 0.01), stable
    return args.lr, stable


def _schedule(args):
    from .optimizers import CosineLR, ExponentialLR, StepLR

    if args.schedule is None:
        return None
    epochs = max(args.epochs, 1)
    return {"step": lambda: StepLR(max(1, epochs // 3), 0.1), "exponential": lambda: ExponentialLR(0.99),
            "cosine": lambda: CosineLR(epochs)}[args.schedule]()


def _metrics(bundle, X_scaled, y):
    """Metrics of the bundle's network on already-scaled inputs (targets: values or class indices)."""
    from .metrics import classification_metrics, regression_metrics

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
    m = _metrics(bundle, X_scaled, y)
    if "accuracy" in m:
        print(f"  {title:14s} accuracy {m['accuracy']:.4f}  precision {m['precision']:.4f}  "
              f"recall {m['recall']:.4f}  f1 {m['f1']:.4f}")
    else:
        print(f"  {title:14s} MSE {m['mse']:.6g}  RMSE {m['rmse']:.6g}  MAE {m['mae']:.6g}  R^2 {m['r2']:.4f}")


def _print_optimum(bundle, X, y):
    from .chapter import gap_to_optimum, least_squares

    layer = bundle.model.layers[0]
    optimum = least_squares(X, y)
    gap = gap_to_optimum(X, y, layer.params["W"], layer.params.get("b"), optimum)
    print(f"Gap to the least-squares optimum (training rows): {gap.summary()}")
    W, b = bundle.linear_coefficients()
    coefficients = ", ".join(f"{name} {w:.6g}" for name, w in zip(bundle.feature_names, W[:, 0]))
    print(f"Coefficients in the original units: {coefficients}; intercept {b[0]:.6g}")


# ---------------------------------------------------------------- evaluate / predict
def _load_for(model_path, data_path, *, need_target):
    """Load a saved bundle and the data columns it reads (target too when ``need_target``)."""
    from .bundle import ModelBundle
    from .data import _listing, encode_labels, read_table, select_xy

    bundle = ModelBundle.load(model_path)
    frame = read_table(data_path)
    has_target = bundle.target in [str(c) for c in frame.columns]
    if need_target or has_target:
        data = select_xy(frame, bundle.target, bundle.feature_names, labels=bundle.classes is not None,
                         source=str(data_path))
        y = data.y
        if bundle.classes is not None:
            originals = np.asarray(data.classes, dtype=object)[data.y]
            try:
                y, _ = encode_labels(originals, bundle.classes)
            except DataError as exc:  # say where the unseen labels are
                raise DataError(f"{data_path}: column {bundle.target!r}: {exc}") from None
        return bundle, data.X, y
    # Predicting on rows without a target: borrow a dummy target for the checks; name missing
    # features here so the message does not list the dummy column.
    columns = [str(c) for c in frame.columns]
    if missing := [f for f in bundle.feature_names if f not in columns]:
        raise DataError(f"{data_path}: no feature column {_listing(missing)}, which the model reads; "
                        f"columns are {_listing(columns)}")
    data = select_xy(frame.assign(__no_target__=0.0), "__no_target__", bundle.feature_names, source=str(data_path))
    return bundle, data.X, None


def cmd_evaluate(args):
    bundle, X, y = _load_for(args.model, args.data, need_target=True)
    X_scaled = bundle.scaler.transform(X) if bundle.scaler is not None else X
    metrics = _metrics(bundle, X_scaled.astype(bundle.model.dtype), y)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items()}))
        return 0
    print(f"{args.model} on {args.data} ({len(X)} rows):")
    for key, value in metrics.items():
        if key != "confusion_matrix":
            print(f"  {key:10s} {value:.6g}")
    if "confusion_matrix" in metrics:
        print("  confusion matrix (rows: true class, columns: predicted), classes "
              + ", ".join(map(str, bundle.classes)))
        for row in metrics["confusion_matrix"]:
            print("   ", " ".join(f"{v:5d}" for v in row))
    return 0


def cmd_predict(args):
    import pandas as pd

    _check_output_path(args.out, "--out")
    bundle, X, _ = _load_for(args.model, args.data, need_target=False)
    if args.proba:
        if bundle.classes is None:
            raise ConfigError("--proba needs a classifier; this model does regression")
        frame = pd.DataFrame(bundle.predict_proba(X), columns=[f"p_{c}" for c in bundle.classes])
    else:
        frame = pd.DataFrame({bundle.target: bundle.predict(X)})
    if args.out is None:
        frame.to_csv(sys.stdout, index=False)
        return 0
    from .io import atomic_write_bytes

    atomic_write_bytes(args.out, frame.to_csv(index=False).encode("utf-8"))
    print(f"Wrote {len(frame)} predictions to {args.out}")
    return 0


# ---------------------------------------------------------------- report
FINAL_ROWS = 5000  # rows of targets and predictions kept in the --log's final line


def _log_final(path, bundle, X_scaled, y, split):
    """Append the run's result to the ``--log`` file: one last line ``{"final": true, ...}``.

    It holds the task, the targets and predictions of the held-out rows (the training rows when
    none are held out; the first FINAL_ROWS), the classes, and the metrics and confusion matrix of
    all those rows: what ``gradloop report`` draws beside the epochs. Labels are the data's.
    """
    from .callbacks import _json_line

    model, classes = bundle.model, bundle.classes
    metrics = _metrics(bundle, X_scaled, y)
    confusion = metrics.pop("confusion_matrix", None)
    true, pred = y[:FINAL_ROWS], model.predict(X_scaled[:FINAL_ROWS])
    if classes is None:
        y_true, y_pred = true.tolist(), pred.reshape(len(pred), -1)[:, 0].tolist()
    else:
        y_true, y_pred = [classes[i] for i in true], [classes[i] for i in pred]
    line = {"final": True, "task": model.task, "split": split, "rows": len(y), "y_true": y_true,
            "y_pred": y_pred, "classes": classes, "metrics": metrics}
    if confusion is not None:
        line["confusion_matrix"] = confusion
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(_json_line(line) + "\n")


def cmd_report(args):
    from .io import atomic_write_bytes
    from .report import figures, png_bytes, read_log, render_html, write_pngs

    out = args.out
    if out is None and args.png is None:
        out = os.path.splitext(args.log)[0] + ".html"
    records, final = read_log(args.log)
    _check_output_path(out, "-o")
    if out is not None and os.path.abspath(out) == os.path.abspath(args.log):
        raise ConfigError(f"-o {out}: is the log itself; give the report another name")
    if args.png is not None and os.path.exists(args.png) and not os.path.isdir(args.png):
        raise ConfigError(f"--png {args.png}: is a file, expected a folder for the PNG files")
    # Everything is rendered before the first file is written.
    pngs = {name: png_bytes(fig) for name, fig in figures(records, final).items()}
    page = render_html(records, final, pngs, title=os.path.basename(args.log)) if out is not None else None
    if args.png is not None:
        paths = write_pngs(args.png, pngs)
        print(f"Wrote {len(paths)} plot{'s' * (len(paths) != 1)} to {args.png}: {', '.join(p.name for p in paths)}")
    if page is not None:
        atomic_write_bytes(out, page.encode("utf-8"), "report")
        print(f"Wrote the report of {len(records)} epoch{'s' * (len(records) != 1)} "
              f"({len(pngs)} plot{'s' * (len(pngs) != 1)}) to {out}")
    return 0


# ---------------------------------------------------------------- demo
def cmd_demo(args):
    from . import datasets

    print("gradloop demo: the chapter's loop on real data (442 diabetes patients, 10 measurements;\n"
          "target: disease progression after one year). Linear model, MSE, full-batch gradient descent,\n"
          "standardized features, learning rate 1/L. The report of the first 2 epochs, then a summary.\n")
    train_args = build_parser().parse_args(
        ["train", datasets.path("diabetes"), "--target", "progression", "--standardize", "--epochs", "3000"])
    return cmd_train(train_args, trace_first=2)


if __name__ == "__main__":
    sys.exit(main())
