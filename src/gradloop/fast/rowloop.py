"""The streaming epoch's row loop, compiled: X is read from memory once per epoch.

For the linear model with MSE every row ``x_i`` (d,) contributes::

    r_i = x_i W + b - y_i          (k,)   the residual
    sse += r_i . r_i                       the loss, times N k
    G   += outer(x_i, r_i)         (d, k)  X^T R, the weight gradient, times N k / 2
    s   += r_i                     (k,)    sum of R, the bias gradient, times N k / 2

Used while the row is still in registers, one read of X serves both the
forward product and the gradient. Written with NumPy, the same loop needs
several calls per block of rows, and on two cores those calls (not the
arithmetic) were most of an epoch: 3.8x one read of X. So the loop below is
plain Python compiled by numba; it runs without the GIL, so threads can each
take a range of rows.

Accumulation: in X's dtype within a block of ``block`` rows (as a BLAS would),
then in float64 across blocks and threads.
"""

from __future__ import annotations

import numpy as np

from .jit import compiled, prefetch

BLOCK_ROWS = 512  # rows summed in X's dtype before the float64 total (float32: ~1e-8 relative)
# How far ahead of the rows being summed their successors are requested from memory: without the
# hint the loop's arithmetic and its memory reads took turns (1.6-2.1x one BLAS read of X on two
# threads); with it they overlap (1.0-1.2x, measured on 2,000,000 x 64 and x 256).
PREFETCH_BYTES = 8192
PREFETCH_MIN_ROWS = 8


# fastmath: reassociation lets the dot products use SIMD lanes, and contraction fused multiply-adds;
# finite values are not assumed, so a NaN or infinity in X or Y still reaches the loss.
@compiled(fastmath={"reassoc", "contract"})
def row_sums(X, WT, b, Y, start, stop, block, gWT, gb):
    """Add rows [start, stop)'s G^T and s to ``gWT`` (k, d) and ``gb`` (k,) (float64); return their sse.

    ``WT`` is W transposed, (k, d) and contiguous, so that for each output the
    dot product and the update run along one row of X and one row of WT. Rows go
    four at a time: four dot products share each weight's load, and the four
    rows' terms are added together before they reach G (one load and store of G
    per four rows).
    """
    d = X.shape[1]
    k = WT.shape[0]
    g = np.zeros((k, d), dtype=X.dtype)  # this block's sums, in X's dtype
    s = np.zeros(k, dtype=X.dtype)
    zero = s[0]  # 0 in X's dtype: a literal 0.0 would make the sums float64 (and slow float32 down)
    sse = 0.0
    ahead = max(PREFETCH_MIN_ROWS, PREFETCH_BYTES // max(1, d * X.itemsize))
    line = max(1, 64 // X.itemsize)  # elements per cache line
    for lo in range(start, stop, block):
        hi = min(lo + block, stop)
        block_sse = zero
        i = lo
        while i + 4 <= hi:
            if i + ahead + 4 <= X.shape[0]:
                for q in range(i + ahead, i + ahead + 4):
                    for c in range(0, d, line):
                        prefetch(X, q, c)
            x0, x1, x2, x3 = X[i], X[i + 1], X[i + 2], X[i + 3]
            for j in range(k):
                w, gj = WT[j], g[j]
                a0 = a1 = a2 = a3 = zero
                for c in range(d):
                    a0 += x0[c] * w[c]
                    a1 += x1[c] * w[c]
                    a2 += x2[c] * w[c]
                    a3 += x3[c] * w[c]
                r0, r1 = a0 + b[j] - Y[i, j], a1 + b[j] - Y[i + 1, j]
                r2, r3 = a2 + b[j] - Y[i + 2, j], a3 + b[j] - Y[i + 3, j]
                block_sse += (r0 * r0 + r1 * r1) + (r2 * r2 + r3 * r3)
                s[j] += (r0 + r1) + (r2 + r3)
                for c in range(d):
                    gj[c] += (x0[c] * r0 + x1[c] * r1) + (x2[c] * r2 + x3[c] * r3)
            i += 4
        for i in range(i, hi):  # the block's last rows, one at a time
            x = X[i]
            for j in range(k):
                w, gj = WT[j], g[j]
                acc = zero
                for c in range(d):
                    acc += x[c] * w[c]
                r = acc + b[j] - Y[i, j]
                block_sse += r * r
                s[j] += r
                for c in range(d):
                    gj[c] += x[c] * r
        sse += block_sse
        for j in range(k):
            gb[j] += s[j]
            s[j] = zero
            for c in range(d):
                gWT[j, c] += g[j, c]
                g[j, c] = zero
    return sse
