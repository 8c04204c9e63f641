"""Benchmark workloads for data read block by block: out of core and on a Dask cluster.

- ``outofcore-npy``: the stream epoch over a memory-mapped ``.npy`` (in the page cache) against
  one in-memory read of the same array (the limit).
- ``outofcore-parquet-gram``: 100 Gram-mode epochs over a Parquet file against pyarrow alone
  reading the same columns once.
- ``dask-stream``, ``dask-gram``: a ``LocalCluster`` of 2 worker processes on 127.0.0.1: the
  stream epoch against the in-process block stream (the per-epoch task overhead is the
  difference, printed as a note), and 100 Gram epochs against one Gram pass.
- With dask-ml installed, ``dask-ml``: its ``LinearRegression(solver="lbfgs")`` on the same
  Dask array against gradloop reaching the same training loss.

Files are written to a temporary folder and removed at the end; clusters are closed.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np

import gradloop
from gradloop.cli.cluster import local_cluster
from gradloop.data import ArraySource, ParquetSource, open_npy
from gradloop.fast.blockwise import BlockStreamKernel, make_source_kernel, source_gram
from gradloop.fast.executors import LocalBlocks, executor_for
from gradloop.losses import MSE
from gradloop.models import linear
from gradloop.optimizers import SGD

from .contenders import Workload


def _data(n, d, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    # Noisy targets, as real data: an exact fit would send Gram mode to its streaming fallback.
    Y = X @ rng.standard_normal((d, 1)) + rng.standard_normal((n, 1))
    return X, Y


def _stream_epochs(source, epochs, blocks=None):
    """``epochs`` stream epochs (kernel pass and SGD step) over a source: the epoch as a run pays it
    (the kernel a run picks; ``blocks``: the block kernel over these executor's blocks)."""
    model, optimizer = linear(source.n_features, 1, bias=False), SGD(0.1)
    kernel = (BlockStreamKernel(model, source, blocks) if blocks is not None
              else make_source_kernel(model, MSE(), source, "stream"))
    for _ in range(epochs):
        kernel.evaluate()
        optimizer.step(model.parameters(), model.gradients())
    kernel.close()


def outofcore_npy(quick):
    """The stream epoch from a memory-mapped .npy in the page cache, against one in-memory read."""
    n, d = (20_000, 64) if quick else (2_000_000, 64)
    # Epochs per timed call, as a run's follow each other: after another contender's sweep of its own
    # gigabyte the map's first epoch or two are slower (measured: 61-74 ms, then 41-53 ms), which 5
    # epochs a call charged at 40% (1.31-1.36x the limit) and 20 charge at 10%.
    epochs = 20
    X, Y = _data(n, d)
    folder = tempfile.mkdtemp(prefix="gradloop-bench-")
    np.save(os.path.join(folder, "X.npy"), X)
    np.save(os.path.join(folder, "y.npy"), Y)
    _settle(folder)
    source = open_npy(os.path.join(folder, "X.npy"), y=os.path.join(folder, "y.npy"))
    X_memory = np.ascontiguousarray(X)
    ones = np.ones(d)

    def one_read():
        for _ in range(epochs):
            X_memory @ ones

    work = Workload(f"stream epoch from a memory-mapped .npy, {n:,} x {d} float64",
                    "epoch", epochs,
                    {"gradloop (memory-mapped .npy)": lambda: _stream_epochs(source, epochs),
                     "gradloop (the array in memory, in blocks)":
                         lambda: _stream_epochs(ArraySource(X_memory, Y), epochs),
                     "limit: one in-memory read of X": one_read},
                    limit="limit: one in-memory read of X", baseline="gradloop (memory-mapped .npy)")
    work.input_bytes = X.nbytes
    work.notes.append("X.npy and y.npy memory-mapped: the stream kernel reads the maps whole, on two row "
                      "ranges, once per epoch (the OS pages them in); peak extra memory is the partial sums, not X; "
                      f"{epochs} epochs a timed call (the map's first epochs after another contender's sweep are "
                      "slower)")
    work.close = lambda: _remove(folder)
    return work


def outofcore_parquet_gram(quick):
    """100 Gram epochs from a Parquet file, against pyarrow reading those columns once."""
    import pandas as pd
    import pyarrow.parquet as pq

    n, d = (20_000, 32) if quick else (2_000_000, 32)
    epochs = 100
    X, Y = _data(n, d)
    folder = tempfile.mkdtemp(prefix="gradloop-bench-")
    path = os.path.join(folder, "d.parquet")
    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(d)]).assign(y=Y[:, 0])
    frame.to_parquet(path, row_group_size=125_000)
    _settle(folder)
    columns = list(frame.columns)
    del frame

    def gradloop_gram():
        gradloop.train(ParquetSource(path, "y"), None, np.zeros(d), 0.1, epochs, gradient="gram")

    def pyarrow_read():
        pq.read_table(path, columns=columns)

    def pyarrow_read_mapped():
        pq.read_table(path, columns=columns, memory_map=True)

    work = Workload(f"linear MSE, {epochs} epochs, Parquet {n:,} x {d} (gram)", "run", 1,
                    {"gradloop (gram, from Parquet)": gradloop_gram, "limit: pyarrow reads the columns once":
                     pyarrow_read, "pyarrow reads the columns once, memory-mapped": pyarrow_read_mapped},
                    limit="limit: pyarrow reads the columns once", baseline="gradloop (gram, from Parquet)")
    work.input_bytes = X.nbytes
    work.notes.append("gradloop reads each row group through a memory map of its own (no read() copy; the "
                      "map is released with the block) and sums its Gram matrix from the Arrow buffers in "
                      "place; pyarrow's own read is timed both ways: its default (the target's limit) and "
                      "memory-mapped")
    work.close = lambda: _remove(folder)
    return work


def _cluster():
    import distributed

    cluster = local_cluster(2)  # the cluster `gradloop train --dask local:2` starts
    return cluster, distributed.Client(cluster)


def _dask_data(n, d, chunk):
    """Noisy linear data generated chunk by chunk on the workers (never sent from here), persisted."""
    import dask
    import dask.array as da

    rng = da.random.default_rng(0)
    X = rng.standard_normal((n, d), chunks=(chunk, d))
    Y = X @ np.random.default_rng(1).standard_normal((d, 1)) + rng.standard_normal((n, 1), chunks=(chunk, 1))
    return dask.persist(X, Y)


def dask_stream(quick):
    """The stream epoch on a LocalCluster of 2 workers, against the same blocks in this process."""
    n, d = (20_000, 64) if quick else (2_000_000, 64)
    epochs, chunk = 10, (5_000 if quick else 250_000)
    cluster, client = _cluster()
    Xd, Yd = _dask_data(n, d, chunk)
    X, Y = Xd.compute(), Yd.compute()
    dask_source = gradloop.data.as_source(Xd, Yd)
    local_source = ArraySource(X, Y, block_rows=chunk)
    blocks = executor_for(dask_source, client)  # chunks persisted on the workers once, as a run does
    local_blocks = LocalBlocks(local_source)
    work = Workload(f"stream epoch on Dask (LocalCluster, 2 workers), {n:,} x {d}, {n // chunk} chunks", "epoch",
                    epochs, {"gradloop on Dask": lambda: _stream_epochs(dask_source, epochs, _Keep(blocks)),
                             "gradloop in process (same blocks)":
                                 lambda: _stream_epochs(local_source, epochs, _Keep(local_blocks))},
                    baseline="gradloop on Dask")
    work.input_bytes = X.nbytes

    def close():
        blocks.close()
        local_blocks.close()
        client.close()
        cluster.close()

    work.close = close
    work.notes.append("per-epoch task overhead = gradloop on Dask - gradloop in process (see the two medians)")
    return work


def dask_gram(quick):
    """100 Gram epochs on a LocalCluster of 2 workers, against one Gram pass over the chunks."""
    n, d = (20_000, 64) if quick else (2_000_000, 64)
    chunk = 5_000 if quick else 250_000
    cluster, client = _cluster()
    Xd, Yd = _dask_data(n, d, chunk)

    def gram_run():
        gradloop.train(Xd, Yd, np.zeros(d), 0.1, 100, gradient="gram")

    def one_pass():
        blocks = executor_for(gradloop.data.as_source(Xd, Yd), client)
        source_gram(blocks)
        blocks.close()

    work = Workload(f"linear MSE, 100 epochs on Dask (LocalCluster, 2 workers), {n:,} x {d} (gram)", "run", 1,
                    {"gradloop (gram, 100 epochs)": gram_run, "limit: one Gram pass": one_pass},
                    limit="limit: one Gram pass", baseline="gradloop (gram, 100 epochs)")
    work.input_bytes = Xd.nbytes

    def close():
        client.close()
        cluster.close()

    work.close = close
    return work


def dask_ml(quick):
    """dask-ml's LinearRegression (lbfgs) against gradloop to the same training loss, on one Dask array."""
    from dask_ml.linear_model import LinearRegression

    n, d = (20_000, 16) if quick else (2_000_000, 16)
    chunk = 5_000 if quick else 250_000
    cluster, client = _cluster()
    Xd, Yd = _dask_data(n, d, chunk)  # generated and persisted on the workers, for both contenders
    yd = Yd[:, 0].persist()
    peer = LinearRegression(solver="lbfgs").fit(Xd, yd)
    r = Xd @ peer.coef_ + peer.intercept_ - yd
    target = float((r * r).mean().compute())
    epochs = {}

    def gradloop_to_target():
        run = gradloop.fit_linear(Xd, yd, np.zeros(d), "auto", 200, bias=0.0)
        losses = np.array(run.history.history["new_loss"])
        reached = np.flatnonzero(losses <= target * (1 + 1e-9))
        epochs["needed"] = int(reached[0]) + 1 if len(reached) else None

    work = Workload(f"linear regression on Dask (LocalCluster, 2 workers), {n:,} x {d}: to dask-ml's loss",
                    "run", 1, {"gradloop (auto: gram, 200 epochs)": gradloop_to_target,
                               "dask-ml LinearRegression(lbfgs)": lambda: LinearRegression(solver="lbfgs").fit(Xd, yd)},
                    baseline="gradloop (auto: gram, 200 epochs)")
    work.input_bytes = Xd.nbytes
    gradloop_to_target()
    work.notes.append(f"dask-ml's training loss {target:.9g}; gradloop reaches it at epoch {epochs['needed']}")

    def close():
        client.close()
        cluster.close()

    work.close = close
    return work


class _Keep:
    """An executor whose close() leaves it open: the workload reuses it across repetitions."""

    def __init__(self, blocks):
        self.blocks, self.source = blocks, blocks.source

    def map(self, *args, **kwargs):
        return self.blocks.map(*args, **kwargs)

    def close(self):
        pass


def _settle(folder):
    """Write the folder's new files to disk before timing: "from the page cache" means clean pages, not
    the OS writing a gigabyte back while the contenders run."""
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as f:
            os.fsync(f.fileno())


def _remove(folder):
    for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
    os.rmdir(folder)


def _dask_installed():
    try:
        import distributed  # noqa: F401

        return True
    except ImportError:
        return False


def _dask_ml_installed():
    try:
        import dask_ml  # noqa: F401

        return True
    except ImportError:
        return False


WORKLOADS = {"outofcore-npy": outofcore_npy, "outofcore-parquet-gram": outofcore_parquet_gram}
if _dask_installed():
    WORKLOADS.update({"dask-stream": dask_stream, "dask-gram": dask_gram})
if _dask_ml_installed():
    WORKLOADS["dask-ml"] = dask_ml
