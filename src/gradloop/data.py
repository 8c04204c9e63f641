"""Load, validate, split and scale tabular data for the training loop.

Files (CSV, Parquet, ``.npy``, ``.npz``) become a pandas DataFrame with
:func:`read_table`; :func:`select_xy` turns one into float64 arrays ``X`` of
shape (n_rows, n_features) and ``y`` of shape (n_rows,). Every problem a file
can have comes out as one :class:`~gradloop.errors.DataError` whose one-line
message names the file, the place (CSV line, or 0-based row for other
formats, and column) and the value. pandas is imported inside the functions
that need it so that ``import gradloop`` costs only numpy.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradloop.errors import ConfigError, DataError

__all__ = ["DEFAULT_TEST_SIZE", "Dataset", "Standardizer", "encode_labels", "load_xy",
           "read_table", "select_xy", "train_test_split"]

DEFAULT_TEST_SIZE = 0.2
SUPPORTED = (".csv", ".parquet", ".pq", ".npy", ".npz")


def _one_line(text, limit=200) -> str:
    """Collapse a library's message (often multi-line) into one short line."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value, limit=40) -> str:
    """Quote a cell value for a message; repr() escapes newlines."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _listing(names, limit=20) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


# ----------------------------------------------------------------- reading

def read_table(path):
    """Read a CSV, Parquet, ``.npy`` or ``.npz`` file into a pandas DataFrame.

    ``.npy``: a 2-D numeric array (columns "0", "1", ...) or a 1-D structured
    array (columns named by its fields). ``.npz``: 1-D arrays of equal length,
    one column per key; or exactly ``X`` (n, d) and ``y`` (n,), giving columns
    "x0".."x{d-1}" and "y". Never unpickles. Raises DataError for anything else.
    """
    p, name = Path(path), str(path)
    if not p.exists():
        raise DataError(f"{name}: no such file; check the path")
    if p.is_dir():
        raise DataError(f"{name}: is a directory, not a data file; name a file inside it")
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise DataError(f"{name}: unsupported file type {ext or '(no extension)'!r}; "
                        f"use one of {', '.join(SUPPORTED)}")
    if p.stat().st_size == 0:
        raise DataError(f"{name}: file is empty (0 bytes); write a header row and data to it")
    reader = {".csv": _read_csv, ".npy": _read_npy, ".npz": _read_npz}.get(ext, _read_parquet)
    try:
        frame = reader(p, name)
    except DataError:
        raise
    except Exception as exc:  # the boundary: no library exception escapes for any content
        raise DataError(f"{name}: cannot read this {ext} file ({_one_line(exc)}); "
                        "is it corrupted or of another format?") from exc
    if frame.shape[1] == 0:
        raise DataError(f"{name}: holds no columns")
    if len(frame) == 0:
        what = "a header but no data rows" if ext == ".csv" else "no rows"
        raise DataError(f"{name}: has {what}; add data to it")
    return frame


def _read_csv(p: Path, name: str):
    import pandas as pd

    try:
        with warnings.catch_warnings():
            # With index_col=False pandas only *warns* when the first data row
            # is longer than the header and then drops the extra field.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            # skip_blank_lines=False keeps data row i on file line i + 2, so
            # messages can name the line; blank lines at the end are cut below.
            frame = pd.read_csv(p, index_col=False, skip_blank_lines=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} "
                        f"at offset {exc.start}); save it as a UTF-8 CSV") from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{name}: has no header row (the file is blank); "
                        "the first line must be the header naming the columns") from exc
    except pd.errors.ParserWarning as exc:
        raise DataError(f"{name}: line 2 has more fields than the header; "
                        "add the missing column name or remove the extra field") from exc
    except pd.errors.ParserError as exc:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(exc))
        if m is None:
            raise DataError(f"{name}: cannot parse as CSV ({_one_line(str(exc).split('C error:')[-1])})") from exc
        header = len(pd.read_csv(p, nrows=0, encoding="utf-8").columns)
        raise DataError(f"{name}: line {m[2]} has {m[3]} fields, the header has {header}; "
                        "quote fields that contain commas") from exc
    if all(not str(c).strip() for c in frame.columns):  # also no columns at all
        raise DataError(f"{name}: line 1 is blank; the first line must be the header naming the columns")
    filled = np.flatnonzero(frame.notna().to_numpy().any(axis=1))
    return frame.iloc[: filled[-1] + 1 if len(filled) else 0]


def _read_parquet(p: Path, name: str):
    import pandas as pd

    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine)
    except ImportError as exc:
        raise DataError(f"{name}: reading Parquet needs pyarrow; pip install pyarrow") from exc
    # A stored index is row labels, not data: number rows 0..n-1 like the other formats.
    return pd.read_parquet(p).reset_index(drop=True)


def _load_npy(p: Path, name: str, want_npz: bool):
    obj = np.load(p, allow_pickle=False)  # never unpickle: a data file must not run code
    if want_npz != isinstance(obj, np.lib.npyio.NpzFile):
        if not isinstance(obj, np.ndarray):
            obj.close()
        actual = ".npz archive" if isinstance(obj, np.lib.npyio.NpzFile) else ".npy array"
        raise DataError(f"{name}: holds an {actual}; rename it to match its content")
    return obj


def _read_npy(p: Path, name: str):
    import pandas as pd

    arr = _load_npy(p, name, want_npz=False)
    if arr.dtype.names is not None:
        if arr.ndim != 1:
            raise DataError(f"{name}: structured array has shape {arr.shape}; expected 1-D (one record per row)")
        columns = {}
        for field in arr.dtype.names:
            col = arr[field]
            if col.ndim != 1 or col.dtype.names is not None:
                raise DataError(f"{name}: field {field!r} is not a scalar column; flatten it into one field per value")
            columns[field] = col
        return pd.DataFrame(columns)
    if arr.ndim != 2:
        raise DataError(f"{name}: array has shape {arr.shape}; expected 2-D (rows, columns), "
                        "e.g. reshape a 1-D array to (n, 1)")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name}: array holds {arr.dtype} values; expected numbers")
    return pd.DataFrame(arr, columns=[str(j) for j in range(arr.shape[1])])


def _read_npz(p: Path, name: str):
    import pandas as pd

    with _load_npy(p, name, want_npz=True) as archive:
        arrays = {key: archive[key] for key in archive.files}
    if not arrays:
        raise DataError(f"{name}: archive holds no arrays")
    if set(arrays) == {"X", "y"} and arrays["X"].ndim == 2:
        X, y = arrays["X"], arrays["y"]
        if y.ndim != 1 or len(y) != len(X):
            raise DataError(f"{name}: y has shape {y.shape}, expected ({len(X)},) to match X {X.shape}")
        arrays = {f"x{j}": X[:, j] for j in range(X.shape[1])} | {"y": y}
    n = None
    for key, arr in arrays.items():
        if arr.ndim != 1 or arr.dtype.names is not None:
            raise DataError(f"{name}: array {key!r} has shape {arr.shape}; expected 1-D "
                            "(one array per column, or exactly X 2-D and y 1-D)")
        if n is not None and len(arr) != n:
            raise DataError(f"{name}: array {key!r} has {len(arr)} rows, the others {n}; columns must be equally long")
        n = len(arr)
    return pd.DataFrame(arrays)


# -------------------------------------------------------- columns to arrays

@dataclass(eq=False)
class Dataset:
    """Arrays ready for training.

    X: float64 (n_rows, n_features), C-contiguous. y: (n_rows,), float64, or
    int64 class indices 0..k-1 when read with ``labels=True``. classes: the
    original label of each index (sorted), or None for regression.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list
    target_name: str
    classes: list | None
    source: str


def load_xy(path, target, features=None, *, labels=False) -> Dataset:
    """Read ``path`` and select its target and feature columns (see :func:`select_xy`)."""
    return select_xy(read_table(path), target, features, labels=labels, source=str(path))


def _floats(col):
    """Column -> (float64 values (n,), bool mask (n,) of cells that are not numbers).

    Missing cells become NaN and are not flagged: the caller tells them apart.
    """
    import pandas as pd

    dtype = col.dtype
    if pd.api.types.is_complex_dtype(dtype):
        return np.full(len(col), np.nan), col.notna().to_numpy()
    if pd.api.types.is_numeric_dtype(dtype):
        return col.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(col), bool)
    # Text, bytes, dates, mixed objects: go through each cell's text, so a date
    # is reported as not a number instead of silently becoming nanoseconds.
    cells = col.to_numpy(dtype=object)
    text = [None if z else (c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c))
            for c, z in zip(cells, pd.isna(cells))]
    values = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(np.float64)
    blank = np.array([t is None or t.strip().lower() in ("", "nan", "+nan", "-nan") for t in text], bool)
    return values, np.isnan(values) & ~blank


def select_xy(frame, target, features=None, *, labels=False, source="<data>") -> Dataset:
    """Pick the target and feature columns of ``frame`` and check every value.

    Column names are compared as strings. ``features`` is a list of names, a
    comma-separated string, or None for every column except the target.
    Messages name CSV cells by file line (data row i is line i + 2) and other
    sources by 0-based row; a quoted field spanning lines shifts the count.
    """
    names = [str(c) for c in frame.columns]
    seen = set()
    for n in names:
        if n in seen:
            raise DataError(f"{source}: column name {n!r} appears twice; give each column its own name")
        seen.add(n)
    target = str(target)
    hint = ("; the file looks ';'- or tab-separated, gradloop reads comma-separated files"
            if len(names) == 1 and re.search("[;\t]", names[0]) else "")
    if target not in seen:
        raise DataError(f"{source}: no target column {target!r}; columns are {_listing(names)}{hint}")
    if features is None:
        feats = [n for n in names if n != target]
    else:
        feats = [str(f).strip() for f in (features.split(",") if isinstance(features, str) else features)]
        feats = [f for f in feats if f]
        missing = [f for f in feats if f not in seen]
        if missing:
            raise DataError(f"{source}: no feature column {_listing(missing)}; columns are {_listing(names)}{hint}")
        if target in feats:
            raise DataError(f"{source}: column {target!r} is the target and cannot also be a feature")
        if len(set(feats)) != len(feats):
            raise DataError(f"{source}: a feature is listed twice in {_listing(feats)}")
    if not feats:
        raise DataError(f"{source}: no feature columns left besides the target {target!r}; "
                        "the data needs at least one more column")
    if len(frame) == 0:
        raise DataError(f"{source}: has no rows")

    csv = source.lower().endswith(".csv")
    where = (lambda i: f"line {i + 2}") if csv else (lambda i: f"row {i}")
    index = {n: j for j, n in enumerate(names)}
    X = np.empty((len(frame), len(feats)), dtype=np.float64)
    problems = []  # (row, order, message): report the first offending cell of the file
    for order, col_name in enumerate(feats + [target]):
        col = frame.iloc[:, index[col_name]]
        if col_name == target and labels:
            # any label value is fine except a missing or infinite one
            missing = col.isna().to_numpy()
            values = (col.to_numpy(np.float64, na_value=np.nan) if col.dtype.kind == "f"
                      else np.where(missing, np.nan, 0.0))
            text_bad = np.zeros(len(col), bool)
            what_nan = "missing label; fill it in or drop the row"
        else:
            values, text_bad = _floats(col)
            what_nan = "missing value (empty cell, NaN or a short row); fill it in or drop the row"
        bad = text_bad | ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            if text_bad[i]:
                what = f"{_show(col.iloc[i])} is not a number"
            elif np.isnan(values[i]):
                what = what_nan
            else:
                what = "infinite value; replace it with a finite number"
            problems.append((i, order, f"{source}: {where(i)}, column {col_name!r}: {what}"))
        elif col_name != target:
            X[:, order] = values
        elif not labels:
            y = values
    if problems:
        raise DataError(min(problems)[2])
    classes = None
    if labels:
        y, classes = encode_labels(frame.iloc[:, index[target]].to_numpy())
    return Dataset(X, y, feats, target, classes, source)


# ------------------------------------------------------------------ labels

def _label(value):
    """A label as a JSON-friendly scalar: numpy scalars -> python, 2.0 -> 2, bytes -> str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise DataError("missing label (None or NaN); fill it in or drop the row")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # a label column read as float (1.0) must match one read as int (1)
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def encode_labels(values, classes=None):
    """Map labels to class indices.

    Args:
        values: array-like of n labels (numbers, strings, bools).
        classes: the known classes (e.g. from a trained model), or None to use
            the sorted distinct labels of ``values``.
    Returns:
        (indices, classes): int64 (n,) with values in 0..k-1, and the class list.
    Labels match classes by ``str()`` of their normalised form, so 1, 1.0, "1"
    and numpy's 1 are the same class whichever way the file stored them.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind in "biufU":  # fast path: numpy sorts and finds distinct values
        if arr.dtype.kind == "f" and np.isnan(arr).any():
            raise DataError(f"missing label (NaN) at row {int(np.argmax(np.isnan(arr)))}; fill it in or drop the row")
        uniq, inverse = np.unique(arr, return_inverse=True)
        found = [_label(u) for u in uniq]
    else:
        labs = [_label(v) for v in arr]
        first = {}
        for v in labs:
            first.setdefault(str(v), v)
        try:
            found = sorted(first.values())
        except TypeError:  # mixed kinds (e.g. int and str): order by text
            found = sorted(first.values(), key=str)
        position = {str(v): i for i, v in enumerate(found)}
        inverse = np.fromiter((position[str(v)] for v in labs), np.int64, len(labs))
    if classes is None:
        return np.asarray(inverse, np.int64).reshape(-1), found
    classes = list(classes)
    known = {str(_label(c)): i for i, c in enumerate(classes)}
    if len(known) != len(classes):
        raise DataError(f"classes {classes!r} contain duplicates")
    unseen = [v for v in found if str(v) not in known]
    if unseen:
        raise DataError(f"label(s) {_listing(unseen)} not among the model's classes {_listing(classes)}; "
                        "retrain with these labels or drop those rows")
    lookup = np.array([known[str(v)] for v in found], dtype=np.int64)
    return lookup[np.asarray(inverse).reshape(-1)], classes


# ------------------------------------------------------------------- split

def train_test_split(n_rows, test_size, seed):
    """Shuffle row indices 0..n_rows-1 and split them.

    Returns (train_idx, test_idx), int64 arrays. The test set has
    round(test_size * n_rows) rows (Python's round: halves go to even). When
    that is 0 the train indices are 0..n-1 in order, keeping the file's order.
    """
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real) \
            or not 0 <= test_size < 1:  # NaN fails the comparison too
        raise ConfigError(f"--test-size must be in [0, 1), got {test_size!r}")
    n_rows = int(n_rows)
    if n_rows < 1:
        raise DataError("no rows to split; the data set is empty")
    n_test = int(round(float(test_size) * n_rows))
    if n_rows - n_test < 1:
        raise DataError(f"--test-size {test_size} of {n_rows} rows leaves no training row; "
                        "lower --test-size or add data")
    if n_test == 0:
        return np.arange(n_rows, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n_rows).astype(np.int64)
    return order[n_test:], order[:n_test]


# ----------------------------------------------------------------- scaling

class Standardizer:
    """Per-column centring and scaling: (X - mean_) / scale_, both of shape (d,)."""

    def __init__(self):
        self.mean_ = None
        self.scale_ = None

    def fit(self, X):
        """Learn mean and population std (ddof=0) of X (n, d) in float64; returns self."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0 or X.dtype.kind not in "biuf":
            raise DataError(f"Standardizer.fit needs a numeric 2-D array with rows, got {X.dtype} {X.shape}")
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            raise DataError("Standardizer.fit: X holds NaN or infinite values (or overflows)")
        # A constant column has std 0 (or rounding noise): scale 1 avoids 0/0,
        # and centring on its first value makes it exactly 0 (the mean of n
        # equal floats can differ from them in the last bit).
        const = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
        mean[const] = X[0, const]
        self.mean_, self.scale_ = mean, np.where(const, 1.0, std)
        return self

    def _fitted(self):
        if self.mean_ is None:
            raise ConfigError("Standardizer is not fitted; call fit(X) first")
        return self.mean_, self.scale_

    def transform(self, X):
        """Return (X - mean_) / scale_ as a new (n, d) array; float32 stays float32, ints become float64."""
        mean, scale = self._fitted()
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(mean):
            raise DataError(f"Standardizer.transform: expected shape (n, {len(mean)}), got {X.shape}")
        dtype = X.dtype if X.dtype.kind == "f" else np.float64
        return (X - mean.astype(dtype)) / scale.astype(dtype)

    def fit_transform(self, X):
        return self.fit(X).transform(X)

    def unscale_linear(self, W, b=None):
        """Weights learnt on standardized inputs -> the same model on raw inputs.

        W: (d, k) or (d,); b: (k,), a scalar, or None (zero). Returns float64
        (W / scale_[:, None], b - (mean_ / scale_) @ W), so that
        standardize(X) @ W + b == X @ W_orig + b_orig.
        """
        mean, scale = self._fitted()
        W = np.asarray(W, dtype=np.float64)
        if W.shape[:1] != (len(mean),) or W.ndim > 2:
            raise DataError(f"unscale_linear: W has shape {W.shape}, expected ({len(mean)}, k)")
        b = np.zeros(W.shape[1:]) if b is None else np.asarray(b, dtype=np.float64)
        shift = (mean / scale) @ W
        return W / (scale[:, None] if W.ndim == 2 else scale), b - shift

    def to_dict(self):
        mean, scale = self._fitted()
        return {"mean": mean.tolist(), "scale": scale.tolist()}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict` output, checking lengths and values."""
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            scale = np.asarray(d["scale"], dtype=np.float64)
        except (TypeError, KeyError, ValueError, IndexError) as exc:
            raise DataError(f"scaling statistics must be {{'mean': [...], 'scale': [...]}} of numbers "
                            f"({_one_line(exc)})") from exc
        if mean.ndim != 1 or mean.shape != scale.shape or len(mean) == 0:
            raise DataError(f"scaling statistics: mean {mean.shape} and scale {scale.shape} "
                            "must be non-empty lists of equal length")
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise DataError("scaling statistics: mean must be finite and scale finite and positive")
        self = cls()
        self.mean_, self.scale_ = mean, scale
        return self
