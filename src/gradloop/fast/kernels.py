"""Full-batch gradient kernels: the loss and every gradient at the current weights, in one call.

The training loop asks a kernel one thing per epoch: ``evaluate()`` returns the
loss at the current parameters and leaves their gradients in the layers'
``grads``; ``head()`` gives the first rows' predictions for the report. Four
executors answer it:

- :class:`LayerKernel`, any model: forward, loss gradient, backward.
- :class:`FusedKernel`, linear model + MSE on small data: the same operations
  without the layer calls (the same bits).
- :class:`StreamKernel`, linear model + MSE: each row's forward product,
  residual and gradient term while the row is still in registers, so X is
  read from memory once per epoch instead of twice; the loop is compiled
  (:mod:`gradloop.fast.rowloop`) and ranges of rows go to threads, one per core.
- :class:`GramKernel`, linear model + MSE: one pass forms ``X^T X``,
  ``X^T Y``, ``Y^T Y`` and the column sums (in float64); every epoch after
  that costs O(d^2 k), whatever the number of rows. Where the loss is tiny
  next to ``Y^T Y / N`` the sums lose it to cancellation, so that epoch is
  computed by a streaming pass instead.

For the linear model with MSE (mean over all N*k entries), with residual
``R = X W + b - Y``::

    loss = sum(R**2) / (N k),   dW = 2 X^T R / (N k),   db = 2 sum(R, axis=0) / (N k)
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ConfigError
from ..layers import Dense
from ..losses import MSE
from ..records import HEAD
from .rowloop import BLOCK_ROWS, row_sums

STREAM_MIN_BYTES = 32 << 20  # below this, one plain pass beats the thread hand-off
# Threads for a pass over large X: one per core, up to the point where memory bandwidth, not
# the cores, is the limit (two cores already read X at ~80% of one BLAS pass's speed here).
MAX_THREADS = 8
# sse / max(Y^T Y, W^T G W) below which the Gram sums cannot be trusted to 1e-9: their rounding
# error is ~d * 1e-16 of that scale (measured: 1.1e-9 relative at 2.4e-6 of it).
GRAM_CANCELLATION = 1e-4
GRAM_BLOCK_ROWS = 4096  # rows per block of the Gram pass: 2 MiB of float64 at 64 columns, in L2
GRAM_MIN_SIZE = 20_000  # entries of X below which a plain pass is cheaper than the Gram algebra


class LayerKernel:
    """Any model and loss: ``forward``, ``value_and_grad``, ``backward`` over all rows."""

    name = "layers"

    def __init__(self, model, loss, X, y):
        self.model, self.loss, self.X, self.y = model, loss, X, y
        self._pred = None

    def evaluate(self):
        self._pred = self.model.forward(self.X)
        value, dpred = self.loss.value_and_grad(self.y, self._pred)
        if math.isfinite(value):  # a non-finite loss ends training: no gradient needed
            self.model.backward(dpred)
        return value

    def head(self):
        return self._pred[:HEAD]

    def close(self):
        pass  # holds no threads


def is_linear_mse(model, loss):
    return len(model.layers) == 1 and isinstance(model.layers[0], Dense) and isinstance(loss, MSE)


class _LinearKernel:
    """Shared by the linear-MSE kernels: the layer's arrays and the head of the data."""

    def __init__(self, model, X, Y):
        self.layer = model.layers[0]
        self.X, self.Y = X, Y
        self.n, self.k = len(X), Y.shape[1]
        self.size = self.n * self.k  # entries of Y (and of the residual)
        self.scale = 2.0 / self.size

    def head(self):
        W, b = self.layer.params["W"], self.layer.params.get("b")
        out = self.X[:HEAD] @ W
        return out if b is None else out + b

    def close(self):
        pass  # the fused kernel holds no threads; the stream and Gram kernels say otherwise


class FusedKernel(_LinearKernel):
    """Linear model + MSE, small data: the layer path's arithmetic without its calls.

    The same NumPy operations in the same order as ``Dense.forward``,
    ``MSE.value_and_grad`` and ``Dense.backward``, so the same bits as
    ``gradient="layers"``; on a 100 x 3 problem the Python calls around them
    were half of an epoch.
    """

    name = "fused"

    def __init__(self, model, X, Y):
        super().__init__(model, X, Y)
        params, grads = self.layer.params, self.layer.grads
        self.W, self.b = params["W"], params.get("b")
        self.gW, self.gb = grads["W"], grads.get("b")
        self.XT = X.T
        self._pred = None

    def evaluate(self):
        pred = np.dot(self.X, self.W)
        if self.b is not None:
            pred += self.b
        self._pred = pred
        r = pred - self.Y
        value = float(np.vdot(r, r)) / self.size
        if math.isfinite(value):  # as LayerKernel: a non-finite loss ends training
            r *= self.scale  # 2 / r.size, as MSE.value_and_grad computes it
            np.dot(self.XT, r, out=self.gW)
            if self.gb is not None:
                # np.sum's own arithmetic (it calls add.reduce) without its Python wrapper.
                np.add.reduce(r, axis=0, out=self.gb)
        return value

    def head(self):
        return self._pred[:HEAD]


class StreamKernel(_LinearKernel):
    """Linear model + MSE, one read of X per epoch: the compiled row loop, one thread per range of rows."""

    name = "stream"

    def __init__(self, model, X, Y, threads=None, block_rows=BLOCK_ROWS):
        super().__init__(model, X, Y)
        self.block_rows = int(block_rows)
        self.ranges = row_ranges(X, threads)
        self._pool = ThreadPoolExecutor(len(self.ranges)) if len(self.ranges) > 1 else None
        self._no_bias = np.zeros(self.k, dtype=X.dtype)

    def evaluate(self):
        W, b = self.layer.params["W"], self.layer.params.get("b")
        WT = np.ascontiguousarray(W.T)
        b = self._no_bias if b is None else b

        def partial(bounds):
            gWT, gb = np.zeros(WT.shape), np.zeros(self.k)
            sse = row_sums(self.X, WT, b, self.Y, bounds[0], bounds[1], self.block_rows, gWT, gb)
            return sse, gWT, gb

        parts = [partial(self.ranges[0])] if self._pool is None else list(self._pool.map(partial, self.ranges))
        sse = sum(p[0] for p in parts)
        grads = self.layer.grads
        np.multiply(sum(p[1] for p in parts).T, self.scale, out=grads["W"], casting="same_kind")
        if "b" in grads:
            np.multiply(sum(p[2] for p in parts), self.scale, out=grads["b"], casting="same_kind")
        return sse / (self.n * self.k)

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()


class GramKernel(_LinearKernel):
    """Linear model + MSE from sufficient statistics: O(d^2 k) per epoch after one pass."""

    name = "gram"

    def __init__(self, model, X, Y, stream=None):
        super().__init__(model, X, Y)
        self._set_sums(augmented_gram(X, Y), X.shape[1])
        self.stream = stream  # for epochs whose loss the sums cannot resolve
        self.fallbacks = 0

    @classmethod
    def from_sums(cls, model, X_head, Y_head, S, n_rows, stream):
        """The kernel from sums formed elsewhere (block by block over a source): ``S`` is
        ``[X, Y, 1]^T [X, Y, 1]`` (d+k+1, d+k+1) of all ``n_rows`` rows; ``X_head``, ``Y_head``
        the first rows (for the report); ``stream`` measures the epochs the sums cannot resolve."""
        self = cls.__new__(cls)
        _LinearKernel.__init__(self, model, X_head, Y_head)
        self.n, self.size = n_rows, n_rows * self.k
        self.scale = 2.0 / self.size
        self._set_sums(S, X_head.shape[1])
        self.stream, self.fallbacks = stream, 0
        return self

    def _set_sums(self, S, d):
        k = self.k
        self.S = S
        self.G = S[:d, :d]  # X^T X (d, d)
        self.c = S[:d, d:d + k]  # X^T Y (d, k)
        self.sx = S[:d, -1]  # column sums of X (d,)
        self.yy = float(np.trace(S[d:d + k, d:d + k]))  # Y^T Y summed over outputs
        self.sy = S[d:d + k, -1]  # column sums of Y (k,)

    def evaluate(self):
        W = self.layer.params["W"].astype(np.float64, copy=False)
        b = self.layer.params.get("b")
        # X^T R = G W + sx b^T - c ;  sum(R) = sx^T W + n b - sy
        GW = self.G @ W
        XtR = GW - self.c
        sumR = self.sx @ W - self.sy
        if b is not None:
            b = b.astype(np.float64, copy=False)
            XtR += np.outer(self.sx, b)
            sumR += self.n * b
        # sum(R**2) = tr(W^T G W) - 2 tr(W^T c) + yy + b-terms
        quad = float(np.vdot(W, GW))
        sse = quad - 2.0 * float(np.vdot(W, self.c)) + self.yy
        if b is not None:
            sse += 2.0 * float(b @ (self.sx @ W)) - 2.0 * float(b @ self.sy) + self.n * float(b @ b)
        if sse < GRAM_CANCELLATION * max(self.yy, quad) and self.stream is not None:
            # Cancellation: the difference of large sums has lost the digits; measure directly.
            self.fallbacks += 1
            return self.stream.evaluate()
        grads = self.layer.grads
        np.multiply(XtR, self.scale, out=grads["W"], casting="same_kind")
        if "b" in grads:
            np.multiply(sumR, self.scale, out=grads["b"], casting="same_kind")
        return max(sse, 0.0) / (self.n * self.k)

    def close(self):
        if self.stream is not None:
            self.stream.close()


def augmented_gram(X, Y, threads=None, block_rows=GRAM_BLOCK_ROWS):
    """``A^T A`` for ``A = [X, Y, 1]``, in float64, (d+k+1, d+k+1): every sum the Gram kernel needs.

    One read of X: each block of rows is copied (and widened to float64) into
    a buffer that stays in cache, whose ones column gives the column sums, and
    the buffer's ``a.T @ a`` (a BLAS syrk) is added up. Ranges of rows go to
    threads, each with a single-threaded BLAS (threadpoolctl's limit, which
    holds for the whole process while the pass runs): OpenBLAS's own threading of
    ``X.T @ X`` for a tall, narrow X measured 1.7x slower here (300 ms against
    176 ms for 2,000,000 x 64 on two cores), and it would need a second pass
    for X^T Y (100 ms more).
    """
    d, k = X.shape[1], Y.shape[1]
    width = d + k + 1
    ranges = row_ranges(X, threads)

    def partial(row_range):
        start, stop = row_range
        buffer = np.ones((min(block_rows, stop - start), width))
        S = np.zeros((width, width))
        for lo in range(start, stop, block_rows):
            hi = min(lo + block_rows, stop)
            a = buffer[: hi - lo]
            a[:, :d] = X[lo:hi]
            a[:, d:d + k] = Y[lo:hi]
            S += a.T @ a
        return S

    if len(ranges) == 1:
        return partial(ranges[0])
    from threadpoolctl import threadpool_limits  # lazy: only the Gram pass on large data needs it

    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(len(ranges)) as pool:
        return sum(pool.map(partial, ranges))


#: The one registry of the ``gradient=`` names (the loop's, the chapter's, the estimators' and
#: ``--gradient``): what each means; :func:`choose_mode` decides what "auto" picks.
GRADIENT_MODES = {
    "auto": "the fastest executor for the model, the data and the number of epochs",
    "gram": "linear model with MSE: X^T X once, then O(d^2) an epoch",
    "stream": "linear model with MSE: one compiled pass over X an epoch",
    "fused": "linear model with MSE: the layers' arithmetic without their calls",
    "layers": "any model: forward, loss gradient, backward",
}
LINEAR_ONLY = ("gram", "stream", "fused")


def check_mode(mode):
    """Refuse a ``gradient=`` name that is not in :data:`GRADIENT_MODES`, listing the names."""
    if not isinstance(mode, str) or mode not in GRADIENT_MODES:
        raise ConfigError(f"unknown gradient mode {mode!r}; known: {', '.join(GRADIENT_MODES)}")
    return mode


def choose_mode(mode, linear, epochs, n_columns, X=None):
    """The executor's name for a full-batch run, for arrays and sources alike.

    mode: a name of :data:`GRADIENT_MODES`; linear: the model is linear with MSE; epochs: the run's
    (None: unknown); n_columns: X's; X: the array in memory, None for a source read block by block.

    auto, for the linear model with MSE: Gram when there are more epochs than columns (forming
    X^T X is one BLAS-3 pass, repaid once the O(N d) epochs it saves outnumber d) and, in memory,
    X is not tiny (there a plain pass is a handful of microseconds, fewer NumPy calls than the
    Gram algebra); else streaming for large row-major X and every source, else the fused layer
    arithmetic; the layers for every other model. A source has no fused form: "fused" streams.
    """
    check_mode(mode)
    if mode in LINEAR_ONLY and not linear:
        raise ConfigError(f"gradient={mode!r} needs the linear model with MSE loss (full batch)")
    if mode == "auto":
        if not linear:
            return "layers"
        many_epochs = epochs is not None and epochs > n_columns
        if X is None:
            return "gram" if many_epochs else "stream"
        if many_epochs and X.size >= GRAM_MIN_SIZE:
            return "gram"
        # The row loop walks rows: for a column-major X one BLAS pass per product reads it better.
        return "stream" if X.nbytes >= STREAM_MIN_BYTES and X.flags.c_contiguous else "fused"
    return "stream" if mode == "fused" and X is None else mode


def make_kernel(model, loss, X, y, mode="auto", epochs=None):
    """The kernel for a full-batch run on arrays: ``mode`` one of :data:`GRADIENT_MODES`
    (see :func:`choose_mode`)."""
    mode = choose_mode(mode, is_linear_mse(model, loss) and y.ndim == 2, epochs, X.shape[1], X)
    if mode == "layers":
        return LayerKernel(model, loss, X, y)
    if mode == "fused":
        return FusedKernel(model, X, y)
    if mode == "stream":
        return StreamKernel(model, X, y)
    return GramKernel(model, X, y, stream=StreamKernel(model, X, y))


def row_ranges(X, threads=None):
    """Contiguous ranges of X's rows, one per thread: one per core for large X, else one.

    Partial sums are added in range order, so a given number of threads gives the same bits every run.
    """
    if threads is None:
        threads = min(MAX_THREADS, _cores()) if X.nbytes >= STREAM_MIN_BYTES else 1
    bounds = np.linspace(0, len(X), max(1, int(threads)) + 1).astype(int)
    return [(int(a), int(c)) for a, c in zip(bounds[:-1], bounds[1:]) if c > a]


def _cores():
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1
