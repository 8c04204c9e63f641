"""A classifier's labels read block by block: the classes listed in one pass, each block's as indices.

A label column of a file too big for memory is listed once (only that column is read where the
format allows it) into the classes, sorted as :func:`~gradloop.data.tables.encode_labels` sorts
a whole column's; each block's labels then become int64 indices into them, so a source gives
the same classes and the same indices as the table read whole.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .tables import encode_labels


def missing_labels(values):
    """Mask (rows,) of missing labels: None, NaN, or an infinity (no class can be named by those)."""
    values = np.asarray(values)
    if values.dtype.kind == "f":
        return ~np.isfinite(values)
    if values.dtype.kind in "biuU":
        return np.zeros(len(values), dtype=bool)
    return np.fromiter((v is None or (isinstance(v, float) and not np.isfinite(v)) for v in values), bool,
                       len(values))


def check_labels(values, name, column, where):
    """Raise DataError naming the first missing label (``where(i)``: "row 7" or "line 9" of block row i)."""
    bad = missing_labels(values)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{name}: {where(i)}, column {column!r}: missing label; fill it in or drop the row")


def list_classes(label_blocks):
    """The sorted distinct labels of every block (an iterable of 1-D label arrays), as a list."""
    found = []
    for values in label_blocks:
        found.extend(encode_labels(np.asarray(values).reshape(-1))[1])
    if not found:
        raise DataError("no labels to list: the target column is empty")
    return encode_labels(np.array(found, dtype=object))[1]


def to_indices(values, classes, name, column, first_row):
    """One block's labels (rows,) as int64 class indices (rows, 1); a label not among ``classes`` is an
    error naming the block's rows."""
    try:
        indices, _ = encode_labels(np.asarray(values).reshape(-1), classes)
    except DataError as exc:
        raise DataError(f"{name}: column {column!r} (rows {first_row} to {first_row + len(values) - 1}): "
                        f"{exc}") from None
    return indices.reshape(-1, 1)
