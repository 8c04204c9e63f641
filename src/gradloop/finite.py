"""The one finite-value check every reader of data uses: arrays given to the chapter's API, Parquet
row groups, a source's blocks searched after a non-finite loss."""

from __future__ import annotations

import numpy as np


def all_finite(a):
    """True when every entry of ``a`` is finite, in one BLAS pass and no boolean temporary.

    A NaN or infinity anywhere makes the row sums (``a @ ones``) non-finite; a non-finite sum of
    finite entries (overflow near 1e308) is settled by the exact check.
    """
    sums = a.reshape(len(a), -1) @ np.ones(a[0].size, dtype=a.dtype) if a.ndim and len(a) else a
    return bool(np.isfinite(sums).all()) or bool(np.isfinite(a).all())


def first_non_finite(a):
    """The index (a tuple) of the first non-finite entry of ``a`` in C order, or None."""
    if all_finite(a):
        return None
    return tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
