"""Data sources: the rows of a data set as blocks of (X, Y), for data bigger than memory.

A source knows before training what every block will hold: the feature and target
names, the dtype, the row count and each block's rows (``bounds``). ``block(i)`` reads
block i, ``(X_block (rows, n_features), Y_block (rows, n_outputs))``; iterating a source
reads every block in order. The training loop's block kernels (:mod:`gradloop.fast.blockwise`)
see nothing else.

- :class:`ArraySource`: arrays in memory, or a memory-mapped array (read block by block).
- :func:`open_npy`: an ``.npy`` file opened memory-mapped, never read whole.
- :class:`~gradloop.data.files.ParquetSource` and :class:`~gradloop.data.files.CSVSource`
  (in :mod:`gradloop.data.files`): Parquet row groups and CSV chunks.
- :class:`~gradloop.data.dasksource.DaskSource` (in :mod:`gradloop.data.dasksource`): a Dask array
  or DataFrame, one block per chunk of rows.
- :func:`~gradloop.data.convert.as_source` (in :mod:`gradloop.data.convert`): what a caller passes,
  arrays or Dask collections, as a source at the boundary.

Every value is checked as its block is read (or, for arrays, when the first pass finds a
non-finite loss): a bad value is reported by file, row and column, in any block.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError, one_line
from ..finite import first_non_finite
from .labels import list_classes, to_indices
from .columns import _listing, _refuse_repeated_names, refuse_unnamed

__all__ = ["ArraySource", "Source", "open_npy"]

# Rows per block of an array source: about this many bytes of X. Large enough that per-block
# overhead (a Python call, a Dask task's hundreds of microseconds) is small next to the block's
# arithmetic; small enough that a few blocks fit in memory beside the model.
BLOCK_BYTES = 16 << 20


class Source:
    """Row blocks of (X, Y) with names, dtype and row count known before any block is read.

    Subclasses set ``name``, ``feature_names``, ``target_names``, ``dtype`` and ``bounds``
    (a list of (first row, end row) per block) and implement ``_read(i)``. Everything the loop
    and its executors ask of a source is declared here, with its default: random access, the
    executor it runs on (``on_dask``), a block's Gram sums in place (``block_gram``), memory
    maps a kernel may read whole (``mapped_arrays``), the Gram sums kept once formed (``gram``).
    """

    name = "<source>"
    random_access = True  # whether block(i) may be read in any order (CSV: no)
    on_dask = False  # whether its blocks' arithmetic runs on Dask workers (gradloop.fast.executors)
    classes = None  # a classifier's labels (see labelled()): Y then holds int64 indices into them
    _gram = None

    def gram(self, compute):
        """``[X, Y, 1]^T [X, Y, 1]`` (float64), from ``compute()`` the first time and then kept: the data
        does not change, so ``lr="auto"``, the Gram kernel and the optimum share one pass."""
        if self._gram is None:
            self._gram = compute()
        return self._gram

    def block_gram(self, i, scaler=None):
        """Block i's ``[X, Y, 1]^T [X, Y, 1]`` summed where the source keeps its data (X scaled by
        ``scaler`` if given), or None: the block is then read and summed as an array."""
        return None

    def mapped_arrays(self):
        """(X, Y) as memory maps a kernel may read whole, without a copy; None: read block by block."""
        return None

    @property
    def n_rows(self):
        return self.bounds[-1][1] if self.bounds else 0

    @property
    def n_features(self):
        return len(self.feature_names)

    @property
    def n_outputs(self):
        return len(self.target_names)

    @property
    def n_blocks(self):
        return len(self.bounds)

    @property
    def shape(self):
        return (self.n_rows, self.n_features)

    def block(self, i):
        """Block i: X (rows, n_features) in ``dtype`` (row or column order), Y (rows, n_outputs)."""
        return self._read(i)

    def __iter__(self):
        for i in range(self.n_blocks):
            yield self.block(i)

    def head(self, rows):
        """The first ``rows`` rows (or fewer) of X and Y, for the report's heads (read once, kept)."""
        kept = self.__dict__.get("_head")
        first_block = self.bounds[0][1] - self.bounds[0][0]
        if kept is None or len(kept[0]) < min(rows, first_block):
            X, Y = self.block_head(0, rows) if self.random_access else next(iter(self))
            kept = self._head = (X[:rows].copy(), Y[:rows].copy())
        return kept[0][:rows].copy(), kept[1][:rows].copy()

    def block_head(self, i, rows):
        """The first ``rows`` rows (or fewer) of block i, (X, Y); a source may read fewer than the block."""
        X, Y = self.block(i)
        return X[:rows], Y[:rows]

    def find_bad_value(self):
        """DataError naming the first non-finite value, block by block; None when all are finite."""
        for (first, _), (X, Y) in zip(self.rows_read(), self):
            self.check_block(X, Y, first)
        return None

    def rows_read(self):
        """Each block's (first row, end row) as the data's reader numbers them (a subset: its base's rows)."""
        return self.bounds

    def check_block(self, X, Y, first_row):
        """DataError naming the first non-finite value of a block (X, Y) whose first row is ``first_row``."""
        for what, names, a in (("X", self.feature_names, X), ("Y", self.target_names, Y)):
            if (bad := first_non_finite(a)) is not None:
                row, col = bad
                raise DataError(f"{self.name}: row {first_row + row}, column {names[col]!r} ({what}): "
                                f"non-finite value {a[row, col]}; replace it with a finite number")

    def fingerprint(self):
        """SHA-256 of the names, sizes and the bytes of sampled blocks (first, middle, last).

        Hashing every byte would cost a read of the data; sampled blocks catch other data
        under the same name, and a path spelt another way gives the same digest.
        """
        digest = hashlib.sha256(json.dumps([self.feature_names, self.target_names, str(np.dtype(self.dtype)),
                                            self.n_rows, [list(b) for b in self.bounds]]).encode("utf-8"))
        picks = sorted({0, self.n_blocks // 2, self.n_blocks - 1}) if self.n_blocks else []
        if self.random_access:
            blocks = [self.block(i) for i in picks]
        else:
            blocks = [b for i, b in enumerate(self) if i in picks]
        for X, Y in blocks:
            digest.update(np.ascontiguousarray(X).tobytes())
            digest.update(np.ascontiguousarray(Y).tobytes())
        return digest.hexdigest()

    def scaled(self, scaler):
        """This source with ``scaler`` (a fitted Standardizer) applied to X block by block, as it is read."""
        return _Derived(self, range(self.n_blocks), scaler)

    def subset(self, blocks):
        """This source's blocks numbered ``blocks`` (in that order), e.g. a held-out test set of blocks."""
        return _Derived(self, blocks, None)

    def sample(self, rows, seed):
        """At least ``rows`` rows (or all) in memory, (X, Y): whole blocks in an order drawn by ``seed``
        (a file read in order: its first blocks), concatenated."""
        if self.random_access:
            blocks = (self.block(int(i)) for i in np.random.default_rng(seed).permutation(self.n_blocks))
        else:
            blocks = iter(self)
        Xs, Ys, n = [], [], 0
        for X, Y in blocks:
            Xs.append(X)
            Ys.append(Y)
            n += len(X)
            if n >= rows:
                break
        return np.concatenate(Xs), np.concatenate(Ys)

    def labelled(self, classes=None):
        """This source for a classifier: each block's Y (one label column) as int64 class indices
        (rows, 1) into ``classes``: given (a trained model's), or listed from the labels in one pass."""
        return Labelled(self, classes)

    def label_blocks(self):
        """Each block's target labels (rows,), in block order: the pass that lists the classes (file
        sources read only the target column)."""
        for _, Y in self:
            yield Y[:, 0]

    def __repr__(self):
        return (f"{type(self).__name__}({self.name!r}: {self.n_rows} rows x {self.n_features} features, "
                f"{self.n_outputs} target(s), {np.dtype(self.dtype)}, {self.n_blocks} blocks)")


class _Derived(Source):
    """Some of another source's blocks, with a scaler applied to X or not: never a copy of the data."""

    def __init__(self, base, blocks, scaler):
        self.base, self.picks, self.scaler = base, [int(i) for i in blocks], scaler
        for name in ("name", "feature_names", "target_names", "dtype", "y_dtype", "random_access", "classes"):
            setattr(self, name, getattr(base, name))
        sizes = np.cumsum([0] + [base.bounds[i][1] - base.bounds[i][0] for i in self.picks])
        self.bounds = [(int(a), int(b)) for a, b in zip(sizes[:-1], sizes[1:])]

    def rows_read(self):
        base = self.base.rows_read()
        return [base[i] for i in self.picks]

    def _scale(self, block):
        X, Y = block
        return (X, Y) if self.scaler is None else (self.scaler.transform(X).astype(self.dtype, copy=False), Y)

    def _read(self, i):
        return self._scale(self.base.block(self.picks[i]))

    def block_head(self, i, rows):
        return self._scale(self.base.block_head(self.picks[i], rows))

    def block_gram(self, i, scaler=None):
        """The base's in-place Gram of block i, scaled by this source's scaler (see
        ``ParquetSource.block_gram``), or None."""
        if scaler is not None and self.scaler is not None:
            return None
        return self.base.block_gram(self.picks[i], scaler=self.scaler if scaler is None else scaler)

    def __iter__(self):
        if self.random_access:
            yield from super().__iter__()
            return
        if self.picks != sorted(set(self.picks)):
            raise ConfigError(f"{self.name}: blocks of a file-order source can only be taken in file order")
        wanted = set(self.picks)
        for i, block in enumerate(self.base):
            if i in wanted:
                yield self._scale(block)


class Labelled(Source):
    """Another source whose one target column holds a classifier's labels, read as class indices."""

    def __init__(self, base, classes=None):
        if base.n_outputs != 1:
            raise ConfigError(f"{base.name}: a classifier reads one label column; this source has "
                              f"{base.n_outputs} targets")
        self.base = base
        for name in ("name", "feature_names", "target_names", "dtype", "random_access", "bounds"):
            setattr(self, name, getattr(base, name))
        self.y_dtype = np.dtype(np.int64)
        self.classes = list(classes) if classes is not None else list_classes(base.label_blocks())

    def _indices(self, i, block):
        X, labels = block
        return X, to_indices(labels[:, 0], self.classes, self.name, self.target_names[0], self.bounds[i][0])

    def _read(self, i):
        return self._indices(i, self.base.block(i))

    def __iter__(self):
        for i, block in enumerate(self.base):
            yield self._indices(i, block)

    def label_blocks(self):
        return self.base.label_blocks()


def _row_bounds(n_rows, block_rows):
    block_rows = max(1, int(block_rows))
    return [(a, min(a + block_rows, n_rows)) for a in range(0, n_rows, block_rows)]


def _default_block_rows(n_features, itemsize):
    return max(1, BLOCK_BYTES // max(1, n_features * itemsize))


def _names(feature_names, target_names, d, k):
    """The columns' names as given, else "0".."d-1" for the features and "y" (or "y0".."yk-1")."""
    features = list(feature_names) if feature_names is not None else [str(j) for j in range(d)]
    targets = list(target_names) if target_names is not None else (["y"] if k == 1 else [f"y{j}" for j in range(k)])
    return features, targets


def _target_dtype(y_dtype, dtype):
    """Integer targets stay integers (class labels); any other is read in the features' dtype."""
    return np.dtype(y_dtype) if np.dtype(y_dtype).kind in "iu" else dtype


def _float_dtype(dtype):
    return np.dtype(np.float32) if np.dtype(dtype) == np.float32 else np.dtype(np.float64)


class ArraySource(Source):
    """X (n, d) and Y (n,) or (n, k) arrays, in memory or memory-mapped, in blocks of ``block_rows`` rows.

    Blocks are views where the arrays already have the source's dtype (no copy of the data);
    a memory-mapped array is read one block at a time.
    """

    def __init__(self, X, Y, *, block_rows=None, feature_names=None, target_names=None, name="X",
                 dtype=None):
        X = X if isinstance(X, np.ndarray) else np.asarray(X)  # a memory map stays one
        Y = Y if isinstance(Y, np.ndarray) else np.asarray(Y)
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            raise DataError(f"{name}: X must be a numeric 2-D array (n_samples, n_features), got {X.dtype} {X.shape}")
        if Y.ndim not in (1, 2) or Y.dtype.kind not in "biuf" or len(Y) != len(X):
            raise DataError(f"{name}: Y must be numeric, (n_samples,) or (n_samples, n_outputs) with "
                            f"{len(X)} rows, got {Y.dtype} {Y.shape}")
        if len(X) == 0:
            raise DataError(f"{name}: has no rows")
        self.X, self.Y = X, Y.reshape(len(Y), -1)
        self.name = name
        self.dtype = _float_dtype(X.dtype) if dtype is None else np.dtype(dtype)
        self.y_dtype = _target_dtype(self.Y.dtype, self.dtype)
        self.feature_names, self.target_names = _names(feature_names, target_names, X.shape[1], self.Y.shape[1])
        self.bounds = _row_bounds(len(X), block_rows or _default_block_rows(X.shape[1], self.dtype.itemsize))

    def _read(self, i):
        a, b = self.bounds[i]
        return (np.ascontiguousarray(self.X[a:b], dtype=self.dtype),
                np.ascontiguousarray(self.Y[a:b], dtype=self.y_dtype))

    def mapped_arrays(self):
        """(X, Y) when both are memory maps a kernel can read whole without a copy (row order, the
        source's dtype), else None. The OS pages a map in and out: reading it whole holds no more
        of it in this process's own memory than reading it block by block."""
        X, Y = self.X, self.Y
        if all(isinstance(a, np.memmap) and a.flags.c_contiguous and a.dtype == self.dtype for a in (X, Y)):
            return X, Y
        return None


class _ColumnsSource(Source):
    """A 2-D or structured memory-mapped array whose columns are split into features and target by name."""

    def __init__(self, array, columns, feature_idx, target_idx, *, block_rows, name, dtype=None):
        self.array, self.feature_idx, self.target_idx = array, feature_idx, target_idx
        self.name = name
        self.structured = array.dtype.names is not None
        first = array[columns[0]] if self.structured else array[:, 0]
        self.dtype = _float_dtype(first.dtype) if dtype is None else np.dtype(dtype)
        self.y_dtype = self.dtype
        self.feature_names = [columns[j] for j in feature_idx]
        self.target_names = [columns[j] for j in target_idx]
        self.columns = columns
        self.bounds = _row_bounds(len(array), block_rows or _default_block_rows(len(feature_idx), self.dtype.itemsize))

    def _read(self, i):
        a, b = self.bounds[i]
        rows = self.array[a:b]  # a view of the map: only this block's pages are read
        if self.structured:
            X = np.column_stack([rows[self.columns[j]] for j in self.feature_idx]).astype(self.dtype, copy=False)
            Y = np.column_stack([rows[self.columns[j]] for j in self.target_idx]).astype(self.dtype, copy=False)
        else:
            X, Y = rows[:, self.feature_idx], rows[:, self.target_idx]
        return np.ascontiguousarray(X, dtype=self.dtype), np.ascontiguousarray(Y, dtype=self.dtype)


def _pick_columns(columns, target, features, name):
    """Indices of the features and the target among ``columns`` (names as strings), or DataError.

    ``target`` None: no target (the rows a model predicts); ``features`` must then be named.
    """
    _refuse_repeated_names(columns, name)
    pos = {c: j for j, c in enumerate(columns)}
    if target is None and features is None:
        raise ConfigError(f"{name}: give the target column, or the feature columns to read without one")
    targets = [] if target is None else [str(t) for t in ([target] if isinstance(target, (str, int)) else target)]
    if missing := [t for t in targets if t not in pos]:
        raise DataError(f"{name}: no target column {_listing(missing)}; columns are {_listing(columns)}")
    if features is None:
        feats = [c for c in columns if c not in targets]
        refuse_unnamed(feats, name)
    else:
        feats = [str(f).strip() for f in (features.split(",") if isinstance(features, str) else features)]
        if unknown := [f for f in feats if f not in pos]:
            raise DataError(f"{name}: no feature column {_listing(unknown)}; columns are {_listing(columns)}")
        if both := [f for f in feats if f in targets]:
            raise DataError(f"{name}: column {both[0]!r} is the target and cannot also be a feature")
    if not feats:
        raise DataError(f"{name}: no feature columns left besides the target")
    return [pos[f] for f in feats], [pos[t] for t in targets]


def open_npy(path, target=None, features=None, *, y=None, block_rows=None, dtype=None):
    """An ``.npy`` file as a source, memory-mapped (never read whole).

    Either ``path`` holds X (n, d) and ``y`` names a second ``.npy`` with Y (n,) or (n, k);
    or ``path`` holds every column, 2-D (columns "0", "1", ...) or structured (columns by
    field name), and ``target`` names the target column (``features``: the rest by default).
    ``dtype``: the blocks' (each converted as it is read), else the file's float type.
    """
    name = str(path)
    X = _map_npy(path)
    if y is not None:
        Y = _map_npy(y)
        if X.dtype.names is not None or X.ndim != 2:
            raise DataError(f"{name}: X must be a 2-D numeric array, got shape {X.shape}")
        return ArraySource(X, Y, block_rows=block_rows, name=name, dtype=dtype)
    if target is None and features is None:
        raise ConfigError("open_npy: give target (the target column) or y (a second .npy file), or the "
                          "feature columns to read without a target")
    if X.dtype.names is not None:
        if X.ndim != 1:
            raise DataError(f"{name}: structured array of shape {X.shape}; expected 1-D")
        columns = list(X.dtype.names)
        if bad := [c for c in columns if X.dtype[c].kind not in "biuf" or X.dtype[c].shape]:
            raise DataError(f"{name}: field {bad[0]!r} is not a number")
    else:
        if X.ndim != 2 or X.dtype.kind not in "biuf":
            raise DataError(f"{name}: array has shape {X.shape} and dtype {X.dtype}; expected 2-D numbers")
        columns = [str(j) for j in range(X.shape[1])]
    feature_idx, target_idx = _pick_columns(columns, target, features, name)
    if len(X) == 0:
        raise DataError(f"{name}: has no rows")
    return _ColumnsSource(X, columns, feature_idx, target_idx, block_rows=block_rows, name=name, dtype=dtype)


def _map_npy(path):
    name = str(path)
    if not Path(path).is_file():
        raise DataError(f"{name}: no such file; check the path")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # the boundary: a bad file gives one line
        raise DataError(f"{name}: cannot open as a memory-mapped .npy array ({one_line(exc)})") from exc
