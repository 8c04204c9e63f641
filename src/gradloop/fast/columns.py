"""The Gram sums of column-ordered data, compiled: every column read where it lies.

A Parquet row group arrives as one Arrow buffer per column, and a block built from one
is column-ordered. BLAS's fast product for ``A^T A`` wants rows: on a 125,000 x 33 row
group, copying the columns into row-ordered tiles took 8 ms and the product 6.7 ms, and
the product on column-ordered tiles 10 ms. The loop below reads the columns in place
instead, 4 by 4 against 4 others (16 sums in registers for 8 loads; SIMD lanes along the
rows), a tile of rows at a time so the columns' tiles stay in cache: 5-7 ms for that row
group, with no copy at all.

Standardized columns, ``(c - shift) / scale``, are scaled a tile at a time into a small
buffer that the same products then read: no scaled copy of the block (scaling a 125,000 x 33
row group as a NumPy array took 15 ms, this 2-3 ms).

Bits: the sums depend on the values and the tile boundaries only, not on where the
columns lie, so the same block gives the same Gram matrix from Arrow's buffers and from a
column-ordered array, and scaled here or by ``Standardizer.transform`` (each value is the
same ``(c - shift) / scale``), on any executor (tested).
"""

from __future__ import annotations

import numpy as np

from .jit import column_at, compiled

TILE_ROWS = 256  # rows per tile: 36 columns' tiles are 74 KB, in L2 (256 measured best of 128-1024)
# The widest [X, Y, 1] the loop sums. Its cost per row grows as the width squared, and so does BLAS's,
# but BLAS's kernels use the wide blocks better: against BLAS on row tiles (copy included), the loop
# took 0.52x the time at 17 columns, 0.77x at 129, 1.0-1.05x at 257, 1.3x at 513 and 1.9x at 1025.
MAX_WIDTH = 256


def column_gram(columns, n_rows, shifts=None, scales=None):
    """``A^T A`` (W + 1, W + 1) in float64, for ``A = [c_0, ..., c_{W-1}, 1]`` (n_rows, W + 1).

    ``columns``: W 1-D contiguous float64 arrays of ``n_rows`` values each (not copied); W + 1 at
    most :data:`MAX_WIDTH` is where the loop beats BLAS (it sums any width).
    ``shifts``, ``scales``: (V,) with V <= W, or None; given, column j < V enters as
    ``(c_j - shifts[j]) / scales[j]`` (a block's X scaled, its Y columns after them as they are).
    The ones column gives the column sums and the row count, as in
    :func:`gradloop.fast.kernels.augmented_gram`.
    """
    columns = list(columns)
    for c in columns:
        if c.dtype != np.float64 or c.ndim != 1 or not c.flags.c_contiguous or len(c) != n_rows:
            raise ValueError(f"column_gram: every column must be contiguous float64 of {n_rows} values")
    width = len(columns) + 1
    padded = -(-width // 4) * 4  # the loop takes columns 4 at a time: zero columns fill the last group
    columns.append(np.ones(n_rows))
    if padded > width:
        zeros = np.zeros(n_rows)
        columns += [zeros] * (padded - width)
    addresses = np.array([c.ctypes.data for c in columns], dtype=np.intp)
    scaled = shifts is not None
    shift, scale = np.zeros(padded), np.ones(padded)  # the ones and zero columns stay as they are
    if scaled:
        shift[:len(shifts)], scale[:len(scales)] = shifts, scales
    buffer = np.empty((padded, TILE_ROWS if scaled else 0))
    upper = np.zeros((padded, padded))
    _upper_gram(addresses, shift, scale, scaled, n_rows, buffer, upper)  # ``columns`` keeps the buffers alive
    gram = np.triu(upper[:width, :width])
    return gram + np.triu(gram, 1).T


def _scale_tile(column, shift, scale, row):
    """``row[r] = (column[r] - shift) / scale``: compiled apart from the products, without fast-math
    flags, so that each value is exactly what ``Standardizer.transform`` gives."""
    for r in range(len(column)):
        row[r] = (column[r] - shift) / scale


# fastmath: reassociation lets each of the 16 sums use SIMD lanes along the rows, and contraction
# fused multiply-adds; finite values are not assumed, so a NaN or infinity reaches the diagonal.
@compiled(uses=(_scale_tile,), fastmath={"reassoc", "contract"})
def _upper_gram(addresses, shift, scale, scaled, n_rows, buffer, out):
    """Add ``sum_r c_i[r] c_j[r]`` to ``out[i, j]`` for the 4x4 groups of columns on and above the
    diagonal (entries below it in a diagonal group too), the columns at ``addresses`` (a multiple of 4).

    A tile of rows at a time: ``tile[j]`` is where column j's tile lies, in place, or (``scaled``) in
    row j of ``buffer`` (width, TILE_ROWS) once scaled there; the products then read 4 columns against
    4 others, the same loop either way.
    """
    width = len(addresses)
    tile = np.empty(width, dtype=np.intp)
    for lo in range(0, n_rows, TILE_ROWS):
        rows = min(TILE_ROWS, n_rows - lo)
        for j in range(width):
            if scaled:
                _scale_tile(column_at(addresses[j], lo, rows), shift[j], scale[j], buffer[j])
                tile[j] = buffer[j].ctypes.data
            else:
                tile[j] = addresses[j] + 8 * lo
        for i in range(0, width, 4):
            a0, a1 = column_at(tile[i], 0, rows), column_at(tile[i + 1], 0, rows)
            a2, a3 = column_at(tile[i + 2], 0, rows), column_at(tile[i + 3], 0, rows)
            for j in range(i, width, 4):
                b0, b1 = column_at(tile[j], 0, rows), column_at(tile[j + 1], 0, rows)
                b2, b3 = column_at(tile[j + 2], 0, rows), column_at(tile[j + 3], 0, rows)
                s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = 0.0
                s20 = s21 = s22 = s23 = s30 = s31 = s32 = s33 = 0.0
                for r in range(rows):  # from 0: an index known not negative, so plain vector loads
                    x0, x1, x2, x3 = a0[r], a1[r], a2[r], a3[r]
                    y0, y1, y2, y3 = b0[r], b1[r], b2[r], b3[r]
                    s00 += x0 * y0
                    s01 += x0 * y1
                    s02 += x0 * y2
                    s03 += x0 * y3
                    s10 += x1 * y0
                    s11 += x1 * y1
                    s12 += x1 * y2
                    s13 += x1 * y3
                    s20 += x2 * y0
                    s21 += x2 * y1
                    s22 += x2 * y2
                    s23 += x2 * y3
                    s30 += x3 * y0
                    s31 += x3 * y1
                    s32 += x3 * y2
                    s33 += x3 * y3
                out[i, j] += s00
                out[i, j + 1] += s01
                out[i, j + 2] += s02
                out[i, j + 3] += s03
                out[i + 1, j] += s10
                out[i + 1, j + 1] += s11
                out[i + 1, j + 2] += s12
                out[i + 1, j + 3] += s13
                out[i + 2, j] += s20
                out[i + 2, j + 1] += s21
                out[i + 2, j + 2] += s22
                out[i + 2, j + 3] += s23
                out[i + 3, j] += s30
                out[i + 3, j + 1] += s31
                out[i + 3, j + 2] += s32
                out[i + 3, j + 3] += s33
