"""Numerical helpers shared by the gradient tests."""

import numpy as np


def rel_err(a, b):
    """Relative error of two arrays in the 2-norm (0 when both are zero)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - b) / scale)


def central_diff(f, x, h=1e-6):
    """d f / d x by central differences, perturbing ``x`` in place (restored after)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return g


def central_diff_of(f, x, h=1e-6):
    """d f(x) / d x by central differences, for an ``f`` that takes the array (``x`` is not changed)."""
    work = np.array(x, dtype=np.float64)
    return central_diff(lambda: f(work), work, h)
