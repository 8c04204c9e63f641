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

from .jit import compiled

BLOCK_ROWS = 512  # rows summed in X's dtype before the float64 total (float32: ~1e-8 relative)


# fastmath: reassociation lets the dot products use SIMD lanes, and contraction fused multiply-adds;
# finite values are not assumed, so a NaN or infinity in X or Y still reaches the loss.
@compiled(fastmath={"reassoc", "contract"})
def row_sums(X, WT, b, Y, start, stop, block, gWT, gb):
    """Add rows [start, stop)'s G^T and s to ``gWT`` (k, d) and ``gb`` (k,) (float64); return their sse.

    ``WT`` is W transposed, (k, d) and contiguous, so that for each output the
    dot product and the update run along one row of X and one row of WT.
    """
    d = X.shape[1]
    k = WT.shape[0]
    g = np.zeros((k, d), dtype=X.dtype)  # this block's sums, in X's dtype
    s = np.zeros(k, dtype=X.dtype)
    zero = s[0]  # 0 in X's dtype: a literal 0.0 would make the sums float64 (and slow float32 down)
    sse = 0.0
    for lo in range(start, stop, block):
        hi = min(lo + block, stop)
        block_sse = zero
        for i in range(lo, hi):
            for j in range(k):
                acc = zero
                for c in range(d):
                    acc += X[i, c] * WT[j, c]
                r = acc + b[j] - Y[i, j]
                block_sse += r * r
                s[j] += r
                for c in range(d):
                    g[j, c] += X[i, c] * r
        sse += block_sse
        for j in range(k):
            gb[j] += s[j]
            s[j] = zero
            for c in range(d):
                gWT[j, c] += g[j, c]
                g[j, c] = zero
    return sse
