"""``gradloop train``: one pipeline wherever the data lives, in memory, out of core or on Dask.

    read (rundata) -> split, scale, hold out -> build the model -> learning rate -> callbacks
    -> train (resuming if asked, stopping cleanly on SIGINT/SIGTERM) -> report -> save

:mod:`gradloop.cli.rundata` holds the data and answers every question the pipeline asks of it
(the step-size bound, the optimum, losses, metrics) in memory or block by block; the steps here
are the same for both, so one command gives one behaviour and one model file. Errors are raised
as GradloopError; :mod:`gradloop.cli` turns them into one line and an exit status.
"""

from __future__ import annotations

from concurrent.futures import CancelledError

import numpy as np

from ..files.bundle import ModelBundle
from ..callbacks import Diagnostics
from ..constraints import check_memory
from ..defaults import command_line_lr, command_line_takes_auto
from ..errors import ConfigError, DivergenceError, GradloopError
from ..glass.explain import ExplainEpoch
from ..loop import fit
from ..losses import get_loss
from ..files.modelfile import json_line
from ..models import linear, mlp
from ..optimizers import CosineLR, ExponentialLR, StepLR, get_optimizer
from ..files.paths import check_places
from .cluster import dask_client, data_files, parse_dask, wants_source
from .consumers import (SignalStop, checkpoint_lock, command_line_divergence, finished_report, run_callbacks,
                        stopped, train_places)
from .options import check_fingerprint, run_config
from .results import final_line, metrics_line, model_summary
from .rundata import DIAGNOSE_SIZE, open_run_data

CLASSIFICATION_LOSSES = ("bce", "cross-entropy")


def train_command(args, resume, trace_first=None, progress=True):
    """The train command on ``args`` (resolved: :func:`gradloop.cli.options.resolve`); ``resume``: the
    checkpoint to continue (its data compared by content) or None. Returns the exit status."""
    if args.dask is not None:
        parse_dask(args.dask)  # a malformed --dask is refused before anything is read or written
    files = data_files(args) if wants_source(args) else None
    check_places(*train_places(args, files))
    with checkpoint_lock(args) as lock, dask_client(args.dask) as client:
        try:
            return _run(args, resume, client, lock, trace_first, progress)
        # A lost scheduler shows as a refused connection, a timeout or tasks it cancelled.
        except (OSError, TimeoutError, CancelledError) as exc:
            if client is None:
                raise
            kept = (f"; the last complete epoch is checkpointed in {args.checkpoint} (continue with --resume "
                    f"{args.checkpoint})" if args.checkpoint else "; nothing was saved")
            raise GradloopError(f"--dask {args.dask}: the Dask scheduler or a worker could not be reached "
                                f"({exc.__class__.__name__}: {exc}){kept}") from exc


def _run(args, resume, client, lock, trace_first, progress):
    loss = get_loss(args.loss)
    classify = loss.name in CLASSIFICATION_LOSSES
    data = open_run_data(args, classify, client)
    if resume is not None:
        check_fingerprint(resume, args, data.fingerprint)
    data.prepare(args, classify)
    model = build_model(args, data, loss)
    lr, stable_lr, auto_lr, sweep = learning_rate(args, model, loss, data, resume)
    optimizer = get_optimizer(args.optimizer, lr, args.weight_decay)
    callbacks = run_callbacks(args, trace_first, progress, run_config(args, data.fingerprint), lock,
                              data.feature_names, data.classes)
    if args.explain is not None:
        X_fit, y_fit = data.explain_rows()
        callbacks.append(ExplainEpoch(args.explain, X_fit, y_fit, batch_size=args.batch_size, round_to=args.round_to))
    # First among the consumers, so that its findings are in the record the loggers write.
    diagnostics = _diagnostics(args, data, loss, stable_lr, auto_lr)
    callbacks.insert(0, diagnostics)
    print(_run_summary(args, model, loss, data, lr, auto_lr, resume))
    stopper = SignalStop()
    X, y, validation = data.fit_inputs()
    with finished_report(callbacks, args) as report:
        try:
            history = fit(model, X, y, loss=loss, optimizer=optimizer, epochs=args.epochs,
                          batch_size=args.batch_size, seed=args.seed, callbacks=[stopper, *callbacks],
                          round_to=args.round_to, schedule=schedule(args), clip_norm=args.clip_norm,
                          stable_lr=stable_lr, gradient=args.gradient, validation_data=validation, resume=resume,
                          check_gradients=args.check_gradients)
        except DivergenceError as exc:
            raise command_line_divergence(exc, args) from exc
        if (status := stopped(stopper, history, args)) is not None:
            report["ended"] = f"it was interrupted by {stopper.name} after epoch {history.epochs_run}"
            return status
        bundle = _report(args, data, model, loss, history, diagnostics, lr, sweep, report)
        if args.out:
            bundle.save(args.out)
            print(f"Saved the model to {args.out}")
        return 0


def _report(args, data, model, loss, history, diagnostics, lr, sweep, report):
    """After training: the final loss, the metrics of each set of rows, the gap to the optimum, and the
    --log's and --report's final line. Returns the model's bundle, ready to save."""
    # The loss of the weights the model keeps (an early-stopped run: the best epoch's), on the rows
    # it trained on, in evaluation mode: one number whatever the logging, resumed or not.
    final_loss = data.final_loss(model, loss) if history.epochs_run else None
    bundle = ModelBundle(model, data.feature_names, data.target_name, data.scaler, data.classes, loss.name,
                         {"epochs": history.epochs_run, "lr": lr, "optimizer": args.optimizer,
                          "batch_size": args.batch_size, "seed": args.seed, "final_loss": final_loss})
    # --epochs 0 is allowed (the starting weights, evaluated): there is no final loss to print then.
    final = "none (no epoch run)" if final_loss is None else f"{final_loss:.6g}"
    restored = history.restored_epoch
    kept = f" (the model keeps epoch {restored}'s weights, the best)" if restored is not None else ""
    print(f"\nTrained {history.epochs_run} epochs; final training loss {final}{kept}")
    if not args.diagnose and diagnostics.summary():
        print(diagnostics.summary())
    parts = data.parts()
    metrics = [data.metrics(bundle, rows) for _, rows in parts]
    for (title, _), values in zip(parts, metrics):
        print(metrics_line(title, values))
    if args.model == "linear" and loss.name == "mse":
        _print_optimum(bundle, data)
    json_log = args.log and not args.log.lower().endswith(".csv")  # CSV rows are epochs only
    if (json_log or args.report) and history.epochs_run:
        # The held-out rows when there are any, else the training rows.
        held_out = parts[-1][0] == "test rows"
        rows, values = (parts[-1][1], metrics[-1]) if held_out else (parts[0][1], metrics[0])
        report["final"] = line = final_line(bundle, values, data.size(rows), data.head(rows),
                                            "test" if held_out else "training", history, sweep)
        if json_log:
            with open(args.log, "a", encoding="utf-8") as fh:
                fh.write(json_line(line) + "\n")
    return bundle


def _print_optimum(bundle, data):
    layer = bundle.model.layers[0]
    gap = data.gap(layer.params["W"], layer.params.get("b"))
    print(f"Gap to the least-squares optimum (training rows): {gap.summary()}")
    W, b = bundle.linear_coefficients()
    coefficients = ", ".join(f"{name} {w:.6g}" for name, w in zip(bundle.feature_names, W[:, 0]))
    print(f"Coefficients in the original units: {coefficients}; intercept {b[0]:.6g}")


def _diagnostics(args, data, loss, stable_lr, auto_lr):
    """The run's Diagnostics, given what is known of the data: the stable bound 2/L (one pass over X
    for an X^T X: paid on data up to DIAGNOSE_SIZE entries, or when --lr auto has already paid it),
    the features' scales and the optimum (the linear model with MSE)."""
    linear_mse = args.model == "linear" and loss.name == "mse"
    small = data.entries() <= DIAGNOSE_SIZE
    bound = stable_lr if auto_lr else (stable_lr() if linear_mse and small else None)
    scales = None if args.standardize or not (small or auto_lr) else data.feature_scales()
    return Diagnostics(verbose=bool(args.diagnose), stable_lr=bound, feature_scales=scales, classes=data.classes,
                       optimum=data.optimum_loss if linear_mse else None)


def _run_summary(args, model, loss, data, lr, auto_lr, resume):
    """The one line that says what is about to be trained, on what, and how."""
    auto = " (auto: 1/L)" if auto_lr else ""
    batches = f"batches of {args.batch_size}{data.batch_order}" if args.batch_size else "full batch"
    resuming = f", resuming at epoch {resume.epoch}" if resume else ""
    return (f"gradloop: {model_summary(model, loss)} on {data.rows_summary(args)}, lr {lr:.6g}{auto}, "
            f"{args.epochs} epochs, {batches}{resuming}")


def build_model(args, data, loss):
    """The network the options describe, for the data's features and (a classifier's) classes."""
    outputs = 1
    if loss.name in CLASSIFICATION_LOSSES:
        n_classes = len(data.classes)
        if n_classes < 2:  # a model of one class would be saved, and every predict refuse to load it
            raise ConfigError(f"--loss {loss.name}: {args.target!r} holds one class ({data.classes[0]!r}); "
                              "a classifier needs at least two")
        if loss.name == "bce" and n_classes != 2:
            raise ConfigError(f"--loss bce needs exactly 2 classes in {args.target!r}, found {n_classes}; "
                              "use --loss cross-entropy")
        outputs = n_classes if loss.name == "cross-entropy" else 1
    dtype = np.dtype(args.dtype)
    if args.model == "linear":
        model = linear(data.n_features, outputs, dtype=dtype)
        model.task = loss.task
        return model
    sizes = [data.n_features, *args.hidden, outputs]
    check_memory(sizes, dtype.itemsize, f"--hidden {','.join(map(str, args.hidden))}")
    return mlp(sizes, args.activation, seed=args.seed, dtype=dtype, task=loss.task)


def learning_rate(args, model, loss, data, resume):
    """(lr, stable lr: a number, a function computing it, or None; whether lr is 'auto'; the --lr find
    sweep or None).

    'auto' = 1/L exists only where L is known: the linear model with MSE. Otherwise L only matters
    if training diverges: fit computes it then (a pass over the data saved).
    """
    linear_mse = args.model == "linear" and loss.name == "mse"
    if linear_mse:
        data.check_linear()
    stable = (lambda: 2.0 / data.lipschitz()) if linear_mse else None
    if command_line_takes_auto(args.lr, linear_mse, args.optimizer):
        if not linear_mse:
            raise ConfigError("--lr auto needs the linear model with --loss mse; give a number")
        bound = stable()
        return bound / 2.0, bound, True, None
    if args.lr == "find":
        # A resumed run takes its learning rate from the checkpoint: no sweep then.
        lr, sweep = (1e-3, None) if resume is not None else data.find_lr(args, model, loss)
        return lr, stable, False, sweep
    return (command_line_lr(args.optimizer) if args.lr is None else args.lr), stable, False, None


def schedule(args):
    """The --schedule: step (a tenth every third of the run), exponential (0.99 an epoch) or cosine."""
    if args.schedule is None:
        return None
    epochs = max(args.epochs, 1)
    return {"step": lambda: StepLR(max(1, epochs // 3), 0.1), "exponential": lambda: ExponentialLR(0.99),
            "cosine": lambda: CosineLR(epochs)}[args.schedule]()
