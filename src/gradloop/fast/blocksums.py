"""Per-block partial sums: pure functions of one block of a source and the weights.

The chapter's full-batch gradient is a sum over rows, so it is a sum of per-block partial
sums (:func:`linear_partial`, :func:`layers_partial`, :func:`gram_partial`,
:func:`moments_partial`), added in a fixed pairwise tree over the blocks' index
(:func:`tree_sum`), never in the order blocks happen to finish: the same blocks give the same
bits whichever executor (:mod:`gradloop.fast.executors`) ran them, however many threads or
workers. A chunk that travelled between workers can arrive at any address: the row loop's sums
do not depend on it (tested at every offset), and the Gram pass copies each block into a buffer
of its own; the layers' products on a block are BLAS calls whose kernels may split by address, so
the layers copy an unaligned block to a 64-byte aligned buffer first (:func:`aligned`).
"""

from __future__ import annotations

import math

import numpy as np

from ..layers import Dropout
from ..losses import fit_targets
from .columns import MAX_WIDTH, column_gram
from .kernels import augmented_gram
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


# ------------------------------------------------------------------ the partial sums
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
        layer.draw_from(state, skip=first_row * width)
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
    gram = source.block_gram(i)
    return gram if gram is not None else gram_partial(*source.block(i))


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
            plan.append((layer.generator_state(), x.shape[1] if layer.p > 0 else 0))
        x = layer.forward(x)
    return plan




def shipping_copy(model):
    """The model as a block's pass needs it: the same parameters (shared, read only), gradients of
    its own, and none of the arrays the last forward pass kept (the size of a block, not of the
    model: the workers need not receive them)."""
    return type(model)([layer.light_copy() for layer in model.layers], task=model.task)
