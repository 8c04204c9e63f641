"""Executors: map a per-block partial-sum function (:mod:`gradloop.fast.blocksums`) over a source's
blocks and return the partials in block order.

- :class:`LocalBlocks`: in this process, reading each block from the source (a memory map,
  Parquet row groups, CSV chunks), the next block read while the current one is summed;
- :class:`DaskBlocks`: one task per chunk on the Dask workers, the epoch's weights inside each
  task when small or as one task every chunk depends on when large, only the partial sums
  coming back.

Either way one BLAS thread runs per block thread (:class:`_OneBlasThread`).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .kernels import _cores

class LocalBlocks:
    """Map a partial-sum function over a source's blocks in this process, in block order.

    ``threads`` blocks are read and summed at once (row loops and pyarrow release the GIL;
    one thread when the function is not thread-safe, e.g. the layers keep their forward pass).
    Results come back in block order, whatever order the threads finish in.
    """

    def __init__(self, source, threads=None):
        self.source = source
        self.threads = max(1, int(threads if threads is not None else min(2, _cores())))
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self._reader = ThreadPoolExecutor(1)  # reads the next block of a sequential source

    def map(self, fn, *args, parallel=True):
        """``fn(X, Y, *args)`` of every block, in block order."""
        source = self.source
        if source.random_access and parallel and self._pool is not None and source.n_blocks > 1:
            # One BLAS thread per block thread while they run (a process-wide limit, as the Gram pass
            # in memory has): two threads each running a two-thread BLAS product fought for the cores.
            with _one_blas_thread():
                return list(self._pool.map(lambda i: fn(*source.block(i), *args), range(source.n_blocks)))
        return [fn(X, Y, *args) for X, Y in self._read_ahead()]

    def map_index(self, fn):
        """``fn(i)`` for every block number i, in block order: on the block threads when the source
        is read in any order, else one after another."""
        if self.source.random_access and self._pool is not None and self.source.n_blocks > 1:
            with _one_blas_thread():
                return list(self._pool.map(fn, range(self.source.n_blocks)))
        return [fn(i) for i in range(self.source.n_blocks)]

    def _read_ahead(self):
        return read_ahead(iter(self.source), self._reader)

    def close(self):
        for pool in (self._pool, self._reader):
            if pool is not None:
                pool.shutdown()


def read_ahead(blocks, reader):
    """The blocks of an iterator in order, each next one read on ``reader`` (an executor of one
    thread) while the caller works on the current one."""
    pending = reader.submit(next, blocks, None)
    while True:
        block = pending.result()
        if block is None:
            return
        pending = reader.submit(next, blocks, None)
        yield block


class _OneBlasThread:
    """One BLAS thread for as long as any block computation in this process runs.

    threadpoolctl's limit is process-wide: entered and left by several threads at once, each
    restores what it saw on entry, and the last to leave can restore another thread's limit of 1
    for good (seen: a process left on one BLAS thread after a Dask run on threads, whose later
    products then differed in the last bits). So the limit is set by the first to enter and
    restored by the last to leave. It limits the libraries loaded at its first use, NumPy's BLAS
    among them (the one block passes use); one loaded later (SciPy's own) is left as it is.
    """

    def __init__(self):
        self._lock, self._users, self._limiter, self._controller = threading.Lock(), 0, None, None

    def __enter__(self):
        with self._lock:
            if self._users == 0:
                if self._controller is None:
                    from threadpoolctl import ThreadpoolController  # lazy: only block passes need it

                    self._controller = ThreadpoolController()  # inspects the loaded libraries once
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._users += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self._users -= 1
            if self._users == 0:
                self._limiter.restore_original_limits()
                self._limiter = None


_ONE_BLAS_THREAD = _OneBlasThread()


def _one_blas_thread():
    return _ONE_BLAS_THREAD


def _run_block(X, Y, fn, args, first_row=None):
    """One Dask task: ``fn`` on one chunk with the broadcast arguments (and the chunk's first row, when
    given), one BLAS thread per worker thread."""
    with _one_blas_thread():
        return fn(X, Y, *args) if first_row is None else fn(X, Y, *args, first_row=first_row)


EMBED_BYTES = 64 << 10  # weights up to this size travel inside each chunk's task


def _nbytes(args):
    """Bytes of the arrays in ``args`` (a model counts its parameters)."""
    total = 0
    for a in args:
        if isinstance(a, np.ndarray):
            total += a.nbytes
        elif hasattr(a, "parameters"):
            total += sum(p.nbytes for p in a.parameters())
    return total


def _weights(args):
    """The task that holds an epoch's weights on the workers."""
    return args


class DaskBlocks:
    """Map a partial-sum function over a Dask source's chunks: one task per chunk, on the workers.

    The chunks are persisted in the workers' memory at the start (the first pass reads them;
    later epochs reuse them); each :meth:`map` broadcasts its arguments (the weights) to every
    worker once and gathers only the partial sums. With a ``distributed.Client`` active it is
    the scheduler used; without one, Dask's local threaded scheduler.
    """

    def __init__(self, source, client=None):
        import dask

        self.source, self.client = source, client if client is not None else _active_client()
        X, Y = source.X, source.Y
        if source.dtype != X.dtype:
            X = X.astype(source.dtype)
        X, Y = dask.persist(X, Y)  # on the workers with a client: never gathered here
        xs, ys = X.to_delayed().ravel(), Y.to_delayed().ravel()
        self._chunks = [(xs[i], ys[i]) for i in source.chunk_index]
        if self.client is not None:
            self._futures = self.client.compute([c for pair in self._chunks for c in pair])

    def map(self, fn, *args, parallel=True, first_rows=False):
        """``fn(X, Y, *args)`` of every chunk, one task each (``first_rows``: with ``first_row=`` the
        chunk's first row in the source)."""
        firsts = [a for a, _ in self.source.bounds] if first_rows else [None] * len(self._chunks)
        if self.client is None:
            import dask

            tasks = [dask.delayed(_run_block, pure=True)(x, y, fn, args, first)
                     for (x, y), first in zip(self._chunks, firsts)]
            return list(dask.compute(*tasks, scheduler="threads"))
        client = self.client
        xf, yf = self._futures[0::2], self._futures[1::2]
        if _nbytes(args) > EMBED_BYTES:
            # Large weights (a network's) as one task of their own, which every chunk's task depends
            # on: each worker fetches them once, and a worker lost mid-epoch costs a recomputation, not
            # the run (data scattered to a worker that dies is gone; a broadcast stalls on a worker that
            # is restarting).
            shared = client.submit(_weights, args, pure=False)
        else:
            # Small weights ride in each task: the extra round trip of a weights task cost more than
            # sending them n times (measured: 34 ms against 19 ms a round of 4 tasks on 2 workers).
            shared = args
        tasks = client.map(_run_block, xf, yf, [fn] * len(xf), [shared] * len(xf), firsts, pure=False)
        return client.gather(tasks)

    def close(self):
        # Dropped, not cancelled: the persisted chunks share their keys with the caller's Dask
        # array, whose other computations must go on; the scheduler frees them when unreferenced.
        self._futures = self._chunks = None


def _active_client():
    """The active distributed Client, or None (distributed not installed, or no client)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def executor_for(source, client=None):
    """:class:`DaskBlocks` for a Dask source (``source.on_dask``), else :class:`LocalBlocks`."""
    return DaskBlocks(source, client) if source.on_dask else LocalBlocks(source)
