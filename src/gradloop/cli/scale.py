"""``gradloop train --out-of-core`` and ``--dask``: the train command on data read block by block.

The data is never read whole: a source (:mod:`gradloop.data.sources`) yields its blocks,
the test set is a seeded draw of whole blocks, standardization statistics come from
one streaming pass, and the full-batch kernels read the training blocks once per epoch
(stream, layers) or once in all (Gram). With ``--dask local[:WORKERS]`` a
``distributed.LocalCluster`` on 127.0.0.1 does the blocks' arithmetic and is closed at the
end, however the run ends; ``--dask tcp://HOST:PORT`` uses a running scheduler.

Data files larger than :data:`OUT_OF_CORE_SHARE` of the machine's memory are read this
way without ``--out-of-core``.
"""

from __future__ import annotations

import contextlib
import glob
import math
import os
import sys
from concurrent.futures import CancelledError

import numpy as np

from ..bundle import ModelBundle
from ..constraints import machine_memory
from ..data import CSVSource, ParquetSource, open_npy, train_test_split
from ..data.files import parquet_files
from ..data.tables import _pandas
from ..errors import ConfigError, DataError, DivergenceError, GradloopError
from ..fast.blockwise import executor_for, merge_moments, shipping_copy, source_loss, tree_sum
from ..loop import fit
from ..losses import get_loss
from ..metrics import confusion_matrix, confusion_metrics
from ..modelfile import atomic_file
from ..optimizers import get_optimizer
from ..paths import Place, check_places
from ..sums import SourceSums, fit_standardizer
from ..validation import split_source_validation
from .options import check_fingerprint, run_config
from .train import (CLASSIFICATION_LOSSES, _build_model, _callbacks, _found_lr, _schedule, _SignalStop,
                    checkpoint_lock, command_line_divergence, finished_report, metrics_line, model_summary, stopped,
                    train_places)

# A data file larger than this share of physical memory is streamed from disk even without
# --out-of-core: reading it whole (and its float64 copy) would leave too little for the rest.
OUT_OF_CORE_SHARE = 0.25
PARQUET = (".parquet", ".pq")
# --lr find on a source sweeps in memory on whole training blocks, up to this many rows (a few MB).
SWEEP_ROWS = 100_000


def wants_source(args):
    """Whether this command (train, predict, evaluate) reads its data block by block."""
    return (bool(getattr(args, "out_of_core", False)) or getattr(args, "dask", None) is not None
            or _larger_than_memory_share(args.data))


def _larger_than_memory_share(data):
    if data is None or str(data).startswith("sklearn:") or not os.path.isfile(str(data)):
        return _many_files(str(data))  # folders and globs: always
    memory = machine_memory()  # 0 where the platform does not say: then only the options decide
    return bool(memory) and os.path.getsize(str(data)) > OUT_OF_CORE_SHARE * memory


def _many_files(data):
    """Whether DATA names a folder or a glob (of Parquet files) rather than one file."""
    return os.path.isdir(data) or any(c in data for c in "*?[")


def data_files(args):
    """The files DATA names: each Parquet file of a folder or a glob, else DATA itself."""
    data = str(args.data)
    return parquet_files(data) if _many_files(data) else [data]


def train_from_source(args, resume, trace_first=None, progress=True):
    """The train command over a source; returns the exit status. With --batch-size, mini-batches
    come from blocks in an order drawn by --seed, rows shuffled within each block; ``resume``: the
    checkpoint to continue (its data compared by content) or None."""
    loss = get_loss(args.loss)
    check_places(*train_places(args, data_files(args)))
    with checkpoint_lock(args) as lock, dask_client(args.dask) as client:
        try:
            return _train(args, resume, loss, client, lock, trace_first, progress)
        # A lost scheduler shows as a refused connection, a timeout or tasks it cancelled.
        except (OSError, TimeoutError, CancelledError) as exc:
            if client is None:
                raise
            kept = (f"; the last complete epoch is checkpointed in {args.checkpoint} (continue with --resume "
                    f"{args.checkpoint})" if args.checkpoint else "; nothing was saved")
            raise GradloopError(f"--dask {args.dask}: the Dask scheduler or a worker could not be reached "
                                f"({exc.__class__.__name__}: {exc}){kept}") from exc


def local_cluster(workers=None):
    """The ``distributed.LocalCluster`` that ``--dask local[:WORKERS]`` starts: worker processes of one
    thread each, every port on 127.0.0.1 (the status page's too: left to itself it takes 8787, which a
    second cluster on the machine then finds taken), and no work stealing. Every task of a run goes
    where its chunk already lies; stealing's bookkeeping runs in the scheduler, in this process, on
    the cores the workers use: a stream epoch over 8 chunks on 2 workers took 77-81 ms without it and
    89-95 ms with it."""
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address="127.0.0.1:0", silence_logs=50)


@contextlib.contextmanager
def dask_client(spec):
    """A distributed Client for ``--dask`` (None without it): ``local[:WORKERS]`` starts a LocalCluster on
    127.0.0.1 (one thread per worker) that is closed on the way out, Ctrl-C included; ``tcp://HOST:PORT``
    connects to a running scheduler."""
    if spec is None:
        yield None
        return
    try:
        import distributed
    except ImportError:
        raise ConfigError("--dask needs Dask: pip install 'gradloop[dask]'") from None
    if spec == "local" or spec.startswith("local:"):
        workers = spec.partition(":")[2]
        if workers and (not workers.isdigit() or int(workers) < 1):
            raise ConfigError(f"--dask {spec}: the number of workers must be a positive integer, e.g. local:2")
        with local_cluster(int(workers) if workers else None) as cluster, distributed.Client(cluster) as client:
            yield client
    elif spec.startswith("tcp://"):
        try:
            client = distributed.Client(spec, timeout=10)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"--dask {spec}: no Dask scheduler answers there ({exc})") from None
        with client:
            yield client
    else:
        raise ConfigError(f"--dask {spec!r}: expected local, local:WORKERS or tcp://HOST:PORT")


def open_source(data, target, features, dtype, on_dask=False, labels=False, classes=None):
    """DATA as a source: Parquet (file, folder or glob), CSV or .npy. ``target`` None: the feature
    columns only (the rows a model predicts). ``labels``: the target holds a classifier's labels, read
    as indices into ``classes`` (given, or listed in a first pass over the target column). On Dask
    each block is read by a task: the out-of-core run's blocks, so its bits."""
    data, dtype = str(data), np.dtype(dtype)
    lowered = data.lower()
    is_parquet = lowered.endswith(PARQUET) or (_many_files(data) and (
        os.path.isdir(data) or all(f.lower().endswith(PARQUET) for f in glob.glob(data))))
    if is_parquet:
        source = ParquetSource(data, target, features, dtype=dtype, labels=labels)
    elif lowered.endswith(".csv"):
        source = CSVSource(data, target, features, dtype=dtype, labels=labels)
    elif lowered.endswith(".npy") and not on_dask:
        source = open_npy(data, target=target, features=features)
        if source.dtype != dtype:
            raise ConfigError(f"{data}: holds {source.dtype}; give --dtype {source.dtype} to read it block by block")
    elif on_dask:
        raise DataError(f"{data}: --dask reads Parquet (a file, a folder or a glob) or CSV; convert it")
    else:
        raise DataError(f"{data}: --out-of-core reads Parquet (a file, a folder or a glob), CSV or .npy")
    if labels:
        source = source.labelled(classes)
    return source.to_dask() if on_dask else source


def _train(args, resume, loss, client, lock, trace_first, progress):
    classify = loss.name in CLASSIFICATION_LOSSES
    source = open_source(args.data, args.target, args.features, args.dtype, client is not None, labels=classify)
    fingerprint = source.fingerprint()
    if resume is not None:
        check_fingerprint(resume, args, fingerprint)
    test_size = 0.2 if args.test_size is None else args.test_size
    # The test set is whole blocks drawn by --seed: a row-level draw would need every block per row.
    train_blocks, test_blocks = train_test_split(source.n_blocks, test_size, args.seed, name="--test-size")
    train, test = source.subset(sorted(train_blocks)), source.subset(sorted(test_blocks)) if len(test_blocks) else None
    scaler = None
    if args.standardize:
        scaler = fit_standardizer(train, client)
        train, test = train.scaled(scaler), test.scaled(scaler) if test is not None else None
    validation = None
    if args.val_split:  # whole training blocks, after the scaler saw them all (as in memory)
        train, validation = split_source_validation(train, args.val_split, args.seed, name="--val-split")
    dtype = np.dtype(args.dtype)
    outputs = source.n_outputs
    if classify:
        if loss.name == "bce" and len(source.classes) != 2:
            raise ConfigError(f"--loss bce needs exactly 2 classes in {args.target!r}, found {len(source.classes)}; "
                              "use --loss cross-entropy")
        outputs = len(source.classes) if loss.name == "cross-entropy" else 1
    model = _build_model(args, source.n_features, outputs, loss.task, dtype)
    linear_mse = args.model == "linear" and loss.name == "mse"
    sums = SourceSums(train, client) if linear_mse else None
    auto = args.lr == "auto" or (args.lr is None and linear_mse and args.optimizer == "sgd")
    if auto and sums is None:
        raise ConfigError("--lr auto needs the linear model with --loss mse; give a number")
    if args.lr == "find":
        lr = _found_lr_from_source(args, model, loss, train, sums, resume)
    else:
        lr = 1.0 / sums.lipschitz() if auto else (args.lr or (1e-3 if args.optimizer.startswith("adam") else 0.01))
    stable_lr = (lambda: 2.0 / sums.lipschitz()) if sums is not None else None
    optimizer = get_optimizer(args.optimizer, lr, args.weight_decay)
    callbacks = _callbacks(args, trace_first, progress, run_config(args, fingerprint), lock, source.feature_names,
                           source.classes)
    where = f"Dask ({len(client.scheduler_info()['workers'])} workers)" if client is not None else "out of core"
    batches = f"batches of {args.batch_size} (blocks in random order)" if args.batch_size else "full batch"
    resuming = f", resuming at epoch {resume.epoch}" if resume else ""
    held = "" if validation is None else f"; {validation.n_rows} rows in {validation.n_blocks} block(s) for validation"
    print(f"gradloop: {model_summary(model, loss)} on {train.n_rows} training rows in {train.n_blocks} block(s) "
          f"({0 if test is None else test.n_rows} test rows{held}), {where}, lr {lr:.6g}"
          f"{' (auto: 1/L)' if auto else ''}, {args.epochs} epochs, {batches}{resuming}")
    stopper = _SignalStop()
    with finished_report(callbacks, args):
        try:
            history = fit(model, train, None, loss=loss, optimizer=optimizer, epochs=args.epochs,
                          batch_size=args.batch_size, seed=args.seed, callbacks=[stopper, *callbacks],
                          round_to=args.round_to, schedule=_schedule(args), clip_norm=args.clip_norm,
                          stable_lr=stable_lr, gradient=args.gradient, resume=resume,
                          check_gradients=args.check_gradients, validation_data=validation)
        except DivergenceError as exc:
            raise command_line_divergence(exc, "; nothing was saved") from exc
        if (status := stopped(stopper, history, args)) is not None:
            return status
        # The loss of the weights the model keeps (early stopping: the best epoch's), on the training rows.
        final_loss = source_loss(model, loss, train, client) if history.epochs_run else None
        bundle = ModelBundle(model, source.feature_names, source.target_names[0], scaler, source.classes, loss.name,
                             {"epochs": history.epochs_run, "lr": lr, "optimizer": args.optimizer,
                              "batch_size": None, "seed": args.seed, "final_loss": final_loss})
        restored = getattr(history, "restored_epoch", None)
        kept = f" (the model keeps epoch {restored}'s weights, the best)" if restored is not None else ""
        final = "none (no epoch run)" if final_loss is None else f"{final_loss:.6g}"
        print(f"\nTrained {history.epochs_run} epochs; final training loss {final}{kept}")
        _print_metrics("training rows", model, train, client)
        if validation is not None:
            _print_metrics("validation rows", model, validation, client)
        if test is not None:
            _print_metrics("test rows", model, test, client)
        if sums is not None:
            layer = model.layers[0]
            optimum = sums.optimum()
            print(f"Gap to the least-squares optimum (training rows): "
                  f"{sums.gap(layer.params['W'], layer.params.get('b'), optimum).summary()}")
        if args.out:
            bundle.save(args.out)
            print(f"Saved the model to {args.out}")
        return 0


def _found_lr_from_source(args, model, loss, train, sums, resume):
    """--lr find over a source. For the linear model with MSE the sweep's answer is exactly 1/L, here
    from the block sums of every training row; for any other model the in-memory sweep runs on a
    sample: whole training blocks drawn by --seed, up to SWEEP_ROWS rows. A resumed run takes its
    learning rate from the checkpoint (no sweep)."""
    if resume is not None:
        return 1e-3  # replaced by the checkpoint's
    if sums is not None:
        lr = 1.0 / sums.lipschitz()
        print(f"lr_find: exact for the linear model with MSE: 1/L = {lr:.6g} (from the block sums); "
              f"the stable bound 2/L is {2 * lr:.6g}")
        return lr
    X, Y = train.sample(SWEEP_ROWS, args.seed)
    print(f"lr_find: sweeping on {len(X)} training rows ({SWEEP_ROWS} at most, whole blocks drawn by --seed)")
    return _found_lr(args, model, loss, X, Y, args.optimizer).suggestion


def metrics_partial(X, Y, model):
    """One block's sums for the metrics the in-memory run computes (``metrics_of``): rows, squared and
    absolute errors, the targets' means and squared deviations (merged as block moments, without
    cancellation), and a classifier's confusion counts (None for regression). A classifier's errors
    are its probabilities against one-hot targets (the Brier score), as in memory."""
    if model.task == "regression":
        T, P, counts = np.asarray(Y, dtype=np.float64).reshape(len(X), -1), model.predict_raw(X), None
    else:
        proba, labels = model.predict_proba(X), np.asarray(Y).reshape(-1)
        k = proba.shape[1]
        T = np.eye(k)[labels]
        T, P = (T[:, 1:], proba[:, 1:]) if k == 2 else (T, proba)
        counts = confusion_matrix(labels, proba.argmax(axis=1), k)
    err = np.asarray(P, dtype=np.float64) - T
    mean = T.mean(axis=0)
    return len(X), float(np.vdot(err, err)), float(np.abs(err).sum()), mean, ((T - mean) ** 2).sum(axis=0), counts


def _merge_metrics(a, b):
    n, mean, spread = merge_moments((a[0], a[3], a[4]), (b[0], b[3], b[4]))
    return n, a[1] + b[1], a[2] + b[2], mean, spread, None if a[5] is None else a[5] + b[5]


def source_metrics(model, source, client=None):
    """MSE, RMSE, MAE and R^2 (and a classifier's accuracy, precision, recall, F1 and confusion matrix)
    of a model over a source, in one streaming pass."""
    model.eval()
    blocks = executor_for(source, client)
    try:
        n, sse, sae, _, spread, counts = tree_sum(blocks.map(metrics_partial, shipping_copy(model), parallel=False),
                                                  _merge_metrics)
    finally:
        blocks.close()
    size = n * len(spread)
    mse = sse / size
    total = float(spread.sum())
    metrics = {"mse": mse, "rmse": float(np.sqrt(mse)), "mae": sae / size,
               "r2": 1.0 - sse / total if total > 0 else math.nan}  # as in memory: undefined for a constant target
    if counts is not None:
        metrics.update(confusion_metrics(counts))
    return metrics


def _print_metrics(title, model, source, client):
    print(metrics_line(title, source_metrics(model, source, client)))


# ---------------------------------------------------------------- predict and evaluate
def predict_from_source(args):
    """``gradloop predict`` block by block: the model's features by name, predictions written as each
    block is read (a temporary file renamed at the end, or stdout), never the whole data in memory."""
    check_places([Place("MODEL file", args.model), *(Place("DATA file", f) for f in data_files(args))],
                 [Place("--out", args.out)])
    bundle = ModelBundle.load(args.model)
    if args.proba and bundle.classes is None:
        raise ConfigError("--proba needs a classifier; this model does regression")
    source = open_source(args.data, None, bundle.feature_names, np.float64)
    columns = [f"p_{c}" for c in bundle.classes] if args.proba else [bundle.target]
    with (atomic_file(args.out, "predictions") if args.out else contextlib.nullcontext(sys.stdout.buffer)) as out:
        for i, (X, _) in enumerate(source):
            values = bundle.predict_proba(X) if args.proba else bundle.predict(X)
            block = _pandas().DataFrame(np.asarray(values).reshape(len(X), -1), columns=columns)
            out.write(block.to_csv(index=False, header=i == 0).encode("utf-8"))
    if args.out:
        print(f"Wrote {source.n_rows} predictions to {args.out}")
    return 0


def evaluate_from_source(args):
    """``gradloop evaluate`` block by block: (the model's metrics in one streaming pass, rows, the model)."""
    check_places([Place("MODEL file", args.model), *(Place("DATA file", f) for f in data_files(args))], [])
    bundle = ModelBundle.load(args.model)
    classifier = bundle.classes is not None
    source = open_source(args.data, bundle.target, bundle.feature_names, bundle.model.dtype, labels=classifier,
                         classes=bundle.classes)
    if bundle.scaler is not None:
        source = source.scaled(bundle.scaler)
    return source_metrics(bundle.model, source), source.n_rows, bundle
