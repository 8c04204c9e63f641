"""Full-batch kernels over a data source, block by block: data beyond memory and on Dask.

The chapter's full-batch gradient is a sum over rows, so it is a sum of per-block
partial sums. Each block's partial sums come from one pure function of the block
and the weights (:func:`linear_partial`, :func:`layers_partial`, :func:`gram_partial`),
and the partials are added in a fixed pairwise tree over the blocks' index
(:func:`tree_sum`), never in the order blocks happen to finish. An executor maps the
function over the blocks:

- :class:`LocalBlocks`: in this process, reading each block from the source (a memory
  map, Parquet row groups, CSV chunks), the next block read while the current one is
  summed;
- :class:`DaskBlocks`: one task per chunk on the Dask workers, the epoch's weights
  inside each task when small or as one task every chunk depends on when large, only
  the partial sums coming back.

The same function, the same blocks and the same tree give the same bits whichever
executor, however many threads or workers. A chunk that travelled between workers can
arrive at any address: the row loop's sums do not depend on it (tested at every offset),
and the Gram pass copies each block into a buffer of its own; the layers' products on a
block are BLAS calls whose kernels may split by address, so the layers copy an unaligned
block to a 64-byte aligned buffer first.
"""

from __future__ import annotations

import copy
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..layers import Dropout
from ..losses import fit_targets
from ..records import HEAD
from .columns import MAX_WIDTH, column_gram
from .kernels import GramKernel, StreamKernel, _cores, _LinearKernel, augmented_gram, choose_mode, is_linear_mse
from .rowloop import BLOCK_ROWS, row_sums

ALIGNMENT = 64  # bytes: a cache line, and the widest SIMD register


def aligned(a):
    """``a`` itself when C-contiguous and 64-byte aligned, else a copy that is."""
    if a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0:
        return a
    raw = np.empty(a.nbytes + ALIGNMENT, dtype=np.uint8)
    offset = (-raw.ctypes.data) % ALIGNMENT
    out = raw[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def tree_sum(parts, combine=None):
    """Sum ``parts`` pairwise in a fixed tree over their index: ((p0+p1)+(p2+p3))+...

    Each part is a number, an array, or a tuple/list of them (summed entry by entry);
    ``combine(a, b)`` replaces the addition (e.g. merging block means and variances).
    """
    parts, combine = list(parts), combine or _add
    if not parts:
        raise ValueError("tree_sum of no parts")
    while len(parts) > 1:
        parts = [combine(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _add(a, b):
    if isinstance(a, (tuple, list)):
        return type(a)(_add(x, y) for x, y in zip(a, b))
    return a + b


# ------------------------------------------------------------------ per-block partial sums
# Pure functions of a block and the weights: Dask may run one twice (a lost worker) and the
# result must be the same.

def linear_partial(X, Y, WT, b):
    """Linear model + MSE on one block: (sse, X^T R as (k, d), sum of R (k,)), float64, R = X W + b - Y."""
    X, Y = np.ascontiguousarray(X), np.ascontiguousarray(Y, dtype=X.dtype)  # the loop walks rows
    gWT, gb = np.zeros(WT.shape), np.zeros(WT.shape[0])
    sse = row_sums(X, WT.astype(X.dtype, copy=False), b.astype(X.dtype, copy=False), Y, 0, len(X), BLOCK_ROWS,
                   gWT, gb)
    return sse, gWT, gb


def layers_partial(X, Y, model, loss, dropout=None, first_row=0):
    """Any model and loss on one block: (loss x rows, [gradient x rows per parameter]), float64.

    The loss and its gradient are means over the block's rows; times the rows they add up
    to the whole data set's sums, which the kernel divides by N. ``dropout``: for a pass whose
    blocks run apart (on Dask), each Dropout layer's (generator state at the pass's start, width);
    the block's masks are then drawn from that state advanced past the ``first_row`` rows before
    it, so they are the masks of the whole pass in order (see :func:`dropout_plan`).
    """
    X, model = aligned(X), shipping_copy(model)  # its own passes and gradients: blocks may run at once
    for layer, (state, width) in zip(model.dropouts, dropout or ()):
        bits = type(layer._rng.bit_generator)()
        bits.state = state
        bits.advance(first_row * width)  # one 64-bit draw per mask entry (Generator.random, float64)
        layer._rng = np.random.Generator(bits)
    rows = len(X)
    pred = model.forward(X)
    value, dpred = loss.value_and_grad(fit_targets(model, loss, Y), pred)
    if not math.isfinite(value):
        return value * rows, [np.zeros(g.shape) for g in model.gradients()]
    model.backward(dpred)
    return value * rows, [g.astype(np.float64) * rows for g in model.gradients()]


def moments_partial(X, Y):
    """Rows, column means (d,) and sums of squared deviations (d,) of one block's X, in float64."""
    X = np.asarray(X, dtype=np.float64)
    mean = X.mean(axis=0)
    return len(X), mean, ((X - mean) ** 2).sum(axis=0)


def merge_moments(a, b):
    """Two blocks' (rows, means, squared deviations) as one (Chan, Golub and LeVeque's pairwise update):
    no difference of large sums, so no cancellation where the spread is small next to the mean."""
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * (nb / n), sa + sb + delta * delta * (na * nb / n)


def gram_partial(X, Y):
    """``A^T A`` for ``A = [X, Y, 1]`` of one block, float64 (d+k+1, d+k+1).

    A column-ordered float64 block (a Parquet row group's, scaled or not) up to ``MAX_WIDTH`` columns
    of ``[X, Y, 1]`` is summed where its columns lie (:func:`~gradloop.fast.columns.column_gram`, the
    same bits as the Parquet source's own :meth:`block_gram`); any other through BLAS on row tiles.
    The layout and width of a block are the same on every executor, so the same block gives the same
    bits on each.
    """
    Y = np.asarray(Y).reshape(len(X), -1)
    if X.dtype == np.float64 and X.flags.f_contiguous and X.shape[1] + Y.shape[1] + 1 <= MAX_WIDTH:
        columns = [X[:, j] for j in range(X.shape[1])]
        columns += [np.ascontiguousarray(Y[:, j], dtype=np.float64) for j in range(Y.shape[1])]
        return column_gram(columns, len(X))
    return augmented_gram(X, Y, threads=1)


def _own_block_gram(source, i):
    """Block i's :func:`gram_partial`, from the source's own buffers where it sums them in place
    (``source.block_gram(i)`` not None: a Parquet row group of float64 columns, no array built)."""
    own = getattr(source, "block_gram", None)
    gram = own(i) if own is not None else None
    return gram if gram is not None else gram_partial(*source.block(i))


# ------------------------------------------------------------------ executors

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
        self._chunks = [(xs[i], ys[i]) for i in source._chunk_index]
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
    return DaskBlocks(source, client) if getattr(source, "on_dask", False) else LocalBlocks(source)


# ------------------------------------------------------------------ kernels over a source

class BlockStreamKernel(_LinearKernel):
    """Linear model + MSE over a source: one read of every block per epoch, partials in a fixed tree."""

    name = "stream"

    def __init__(self, model, source, blocks):
        super().__init__(model, *source.head(HEAD))  # the first rows: the report's heads and the shapes
        self.n, self.k = source.n_rows, source.n_outputs
        self.size, self.scale = self.n * self.k, 2.0 / (self.n * self.k)
        self.blocks = blocks
        self._no_bias = np.zeros(self.k)

    def evaluate(self):
        W, b = self.layer.params["W"], self.layer.params.get("b")
        WT = np.ascontiguousarray(W.T)
        sse, gWT, gb = tree_sum(self.blocks.map(linear_partial, WT, self._no_bias if b is None else b))
        grads = self.layer.grads
        np.multiply(gWT.T, self.scale, out=grads["W"], casting="same_kind")
        if "b" in grads:
            np.multiply(gb, self.scale, out=grads["b"], casting="same_kind")
        return sse / self.size

    def close(self):
        self.blocks.close()


class BlockLayerKernel:
    """Any model and loss over a source: forward, loss and backward per block, gradients summed in a tree."""

    name = "layers"

    def __init__(self, model, loss, source, blocks):
        self.model, self.loss, self.blocks, self.n = model, loss, blocks, source.n_rows
        self.head_X = source.head(HEAD)[0]
        # In this process blocks go one by one: the BLAS already runs a block's products on every core.
        self.parallel = isinstance(blocks, DaskBlocks)

    def evaluate(self):
        model = self.model
        # Each block's pass works on a shipping copy of its own (layers_partial); sent to Dask workers,
        # the model travels without the arrays its last forward pass kept.
        if not self.parallel:  # blocks in order: each Dropout's generator runs on from block to block
            total, grads = tree_sum(self.blocks.map(layers_partial, model, self.loss, parallel=False))
        else:
            plan = dropout_plan(model, self.head_X)
            total, grads = tree_sum(self.blocks.map(layers_partial, shipping_copy(model), self.loss, plan,
                                                    first_rows=True))
            for layer, (_, width) in zip(model.dropouts, plan or ()):
                layer._rng.bit_generator.advance(self.n * width)  # past the pass's masks, as in order
        value = total / self.n
        if math.isfinite(value):
            for g, summed in zip(model.gradients(), grads):
                np.multiply(summed, 1.0 / self.n, out=g, casting="same_kind")
        return value

    def head(self):
        return self.model.predict_raw(self.head_X)

    def close(self):
        self.blocks.close()


def dropout_plan(model, X_head):
    """For a pass whose blocks run apart: each training-mode Dropout layer's (generator state, width),
    or None without one. In memory and block by block in order a layer's masks are one stream of
    draws, row after row; a block that knows the stream's start and its first row draws its own part
    of it (:func:`layers_partial`), so the masks do not depend on where or in what order blocks run.
    The widths come from one row of ``X_head`` through a copy of the model."""
    if not model.training or not any(layer.p > 0 for layer in model.dropouts):
        return None
    x, plan = np.asarray(X_head[:1]), []
    for layer in shipping_copy(model).eval().layers:
        if isinstance(layer, Dropout):  # p = 0 draws nothing: width 0
            plan.append((layer._rng.bit_generator.state, x.shape[1] if layer.p > 0 else 0))
        x = layer.forward(x)
    return plan


# What a layer keeps from its last forward pass for its backward: not for the workers.
_PASS_CACHES = ("_x", "_y", "_slope", "_mask")


def shipping_copy(model):
    """The model as a block's pass needs it: the same parameters (shared, read only), gradients of
    its own, and none of the arrays the last forward pass kept (the size of a block, not of the
    model: the workers need not receive them)."""
    layers = []
    for layer in model.layers:
        light = copy.copy(layer)
        for name in _PASS_CACHES:
            if hasattr(light, name):
                setattr(light, name, None)
        light.grads = {name: np.zeros_like(g) for name, g in layer.grads.items()}
        layers.append(light)
    return type(model)(layers, task=model.task)


def source_loss(model, loss, source, client=None, blocks=None):
    """The loss of the model's weights over a whole source, in evaluation mode (dropout off), in one
    streaming pass; the model's mode is as it was afterwards. ``blocks``: an executor over the source
    to reuse (left open), else one is made for this pass."""
    was_training = model.training
    model.eval()
    executor = blocks or executor_for(source, client)
    try:
        total, _ = tree_sum(executor.map(layers_partial, shipping_copy(model), loss, parallel=False))
    finally:
        if blocks is None:
            executor.close()
        if was_training:
            model.train()
    return total / source.n_rows


def source_gram(blocks):
    """``[X, Y, 1]^T [X, Y, 1]`` of a whole source, float64: one pass, per-block matrices in a tree.

    Kept on the source (whose data does not change): ``lr="auto"``, the Gram kernel and the
    optimum then share the one pass.
    """
    source = blocks.source
    if source.gram_sums is None:
        if isinstance(blocks, LocalBlocks) and source.random_access and hasattr(source, "block_gram"):
            parts = blocks.map_index(lambda i: _own_block_gram(source, i))
        else:
            parts = blocks.map(gram_partial)
        source.gram_sums = tree_sum(parts)
    return source.gram_sums


def make_source_kernel(model, loss, source, mode="auto", epochs=None, client=None):
    """The full-batch kernel over a source: "gram", "stream" or "layers" ("auto": Gram when
    there are more epochs than columns, else stream, for the linear model with MSE; else layers)."""
    mode = choose_mode(mode, is_linear_mse(model, loss), epochs, source.n_features)
    blocks = executor_for(source, client)
    if mode == "layers":
        return BlockLayerKernel(model, loss, source, blocks)
    mapped = getattr(source, "mapped_arrays", lambda: None)()
    if mapped is None:
        stream = BlockStreamKernel(model, source, blocks)
        return stream if mode == "stream" else GramKernel.from_sums(model, stream.X, stream.Y, source_gram(blocks),
                                                                    source.n_rows, stream=stream)
    # Memory maps (X.npy and y.npy): the in-memory stream kernel reads them whole, on row ranges, as
    # train() does a map it is given; block by block the same epoch measured 1.40-1.48x one read of X,
    # whole 1.13-1.16x. The Gram pass stays block by block: its sums are kept on the source.
    stream = StreamKernel(model, *mapped)
    try:
        if mode == "stream":
            return stream
        return GramKernel.from_sums(model, stream.X[:HEAD], stream.Y[:HEAD], source_gram(blocks), source.n_rows,
                                    stream=stream)
    finally:
        blocks.close()


