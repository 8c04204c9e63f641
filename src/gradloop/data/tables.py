"""Load and validate tabular data for the training loop (the split and the scaling are in
:mod:`gradloop.preprocessing`, importable from here too).

:func:`read_table` turns a CSV, Parquet, ``.npy`` or ``.npz`` file into a pandas
DataFrame; :func:`select_xy` turns that into float64 ``X`` (n_rows, n_features)
and ``y`` (n_rows,). Whatever a file holds, the only exception that comes out
is :class:`~gradloop.errors.DataError`, with a one-line message naming the file,
the place (CSV line, or 0-based row for other formats, and column) and the
value. pandas is imported where files are read, so ``import gradloop`` costs
only numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, one_line
from .columns import _listing, _refuse_repeated_names, refuse_unnamed
from ..preprocessing import DEFAULT_TEST_SIZE, Standardizer, train_test_split

__all__ = ["DEFAULT_TEST_SIZE", "SKLEARN_DATASETS", "SUPPORTED", "Dataset", "Standardizer", "encode_labels",
           "fingerprint", "load_xy", "read_table", "select_features", "select_xy", "train_test_split"]

SUPPORTED = (".csv", ".parquet", ".pq", ".npy", ".npz")
# Real data sets bundled with scikit-learn (on disk, no network): a data argument
# "sklearn:NAME" reads sklearn.datasets.load_NAME(as_frame=True).frame.
SKLEARN_PREFIX = "sklearn:"
SKLEARN_DATASETS = ("diabetes", "digits", "iris", "wine", "breast_cancer")


def _pandas():
    """pandas, imported on first use, on purpose: it is heavy, and ``import gradloop`` stays NumPy only."""
    import pandas

    return pandas


def _show(value, limit=40) -> str:
    """A cell value quoted for a message; repr() escapes newlines."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


# ----------------------------------------------------------------- reading

def read_table(path):
    """Read a data file into a pandas DataFrame with at least one row and column.

    ``.csv``: a header row, then data (UTF-8). ``.parquet``/``.pq``: any table.
    ``.npy``: a 2-D numeric array (columns "0", "1", ...) or a 1-D structured
    array (columns named by its fields). ``.npz``: 1-D arrays of equal length,
    one column per key; or exactly ``X`` (n, d) and ``y`` (n,), giving columns
    "x0".."x{d-1}" and "y". ``sklearn:NAME`` (NAME one of ``SKLEARN_DATASETS``):
    scikit-learn's bundled data set, its feature columns then "target" (read
    from scikit-learn's installation, no network). Never unpickles. Raises
    DataError for anything else.

    Example:
        >>> read_table("sklearn:iris").shape
        (150, 5)
    """
    if isinstance(path, str) and path.startswith(SKLEARN_PREFIX):
        return _read_sklearn(path[len(SKLEARN_PREFIX):], path)
    p, name = Path(path), str(path)
    if not p.exists():
        raise DataError(f"{name}: no such file; check the path")
    if p.is_dir():
        raise DataError(f"{name}: is a directory, not a data file; name a file inside it")
    ext = p.suffix.lower()
    if ext not in SUPPORTED:
        raise DataError(f"{name}: unsupported file type {ext or '(no extension)'!r}; use one of {', '.join(SUPPORTED)}")
    if p.stat().st_size == 0:
        raise DataError(f"{name}: file is empty (0 bytes); write a header row and data to it")
    reader = {".csv": _read_csv, ".npy": _read_npy, ".npz": _read_npz}.get(ext, _read_parquet)
    try:
        frame = reader(p, name)
    except DataError:
        raise
    except Exception as exc:  # the boundary: no library exception may escape, whatever the bytes
        raise DataError(f"{name}: cannot read this {ext} file ({one_line(exc)}); "
                        "is it corrupted or of another format?") from exc
    if frame.shape[1] == 0:
        raise DataError(f"{name}: holds no columns; add data to it")
    if len(frame) == 0:
        raise DataError(f"{name}: has {'a header but no data rows' if ext == '.csv' else 'no rows'}; add data to it")
    return frame


def _read_sklearn(dataset: str, name: str):
    """scikit-learn's bundled data set ``dataset`` as a DataFrame (its ``.frame``: features, then "target")."""
    if dataset not in SKLEARN_DATASETS:
        raise DataError(f"{name}: unknown scikit-learn data set {dataset!r}; known: "
                        f"{', '.join(SKLEARN_PREFIX + d for d in SKLEARN_DATASETS)}")
    try:
        import sklearn.datasets  # lazy: scikit-learn is optional and slow to import
    except ImportError as exc:
        raise DataError(f"{name}: reading scikit-learn's data sets needs scikit-learn; "
                        "pip install scikit-learn") from exc
    try:
        frame = getattr(sklearn.datasets, f"load_{dataset}")(as_frame=True).frame
    except Exception as exc:  # e.g. a broken installation: still one line, never a traceback
        raise DataError(f"{name}: scikit-learn could not load it ({one_line(exc)})") from exc
    # Copy with plain string column names and a 0..n-1 index, like the files.
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _read_csv(p: Path, name: str):
    pd = _pandas()

    # Text never holds NUL bytes; without this check pandas parses binary files as
    # ragged CSV and the message would be about field counts.
    with open(p, "rb") as fh:
        head = fh.read(1 << 16)
    if (nul := head.find(b"\0")) >= 0:
        raise DataError(f"{name}: is a binary file, not UTF-8 CSV text (NUL byte at offset {nul}); "
                        "is it another format (.parquet, .npy, .npz)?")

    try:
        with warnings.catch_warnings():
            # With index_col=False pandas only warns (and drops a field) when the
            # first data row is longer than the header; without it, it would
            # silently turn the first column into the index.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed columns are checked cell by cell
            # skip_blank_lines=False keeps data row i on file line i + 2, so messages
            # can name the line; blank lines at the end are cut below.
            # Only an empty cell is missing: "NA", "None" or "null" in a label column are labels
            # (pandas' default would read them as missing); feature cells spelled so are
            # reported as missing values by the column check.
            frame = pd.read_csv(p, index_col=False, skip_blank_lines=False, encoding="utf-8",
                                keep_default_na=False, na_values=[""])
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
            raise DataError(f"{name}: cannot parse as CSV ({one_line(str(exc).split('C error:')[-1])})") from exc
        header = len(pd.read_csv(p, nrows=0, encoding="utf-8").columns)
        raise DataError(f"{name}: line {m[2]} has {m[3]} fields, the header has {header}; "
                        "quote fields that contain commas") from exc
    if all(not str(c).strip() for c in frame.columns):  # also true with no columns at all
        raise DataError(f"{name}: line 1 is blank; the first line must be the header naming the columns")
    # pandas renames a repeated name (the second "y" becomes "y.1", which would then be read as a
    # feature): compare the header as written.
    header = pd.read_csv(p, header=None, nrows=1, dtype=str, keep_default_na=False, encoding="utf-8").iloc[0]
    _refuse_repeated_names([str(c) for c in header], name)
    # Blank lines (and rows of missing cells) at the end are cut: many editors leave them.
    end = len(frame)
    while end and all(_missing(cell) for cell in frame.iloc[end - 1]):
        end -= 1
    return frame.iloc[:end]


def _missing(cell):
    """Whether one cell is missing: empty (NaN in the frame), or text spelling a missing number."""
    if isinstance(cell, str):
        return cell.strip().lower() in MISSING_SPELLINGS
    try:
        return bool(cell != cell)  # NaN, and pandas' NA
    except (TypeError, ValueError):
        return False


def _read_parquet(p: Path, name: str):
    pd = _pandas()

    # A stored index is row labels, not data: number rows 0..n-1 like the other formats.
    return pd.read_parquet(p).reset_index(drop=True)


def _load(p: Path, name: str, want_npz: bool):
    """The array of an .npy file, or the arrays of an .npz file by key, read in full."""
    with open(p, "rb") as fh:  # our own handle, closed even when numpy fails half-way
        obj = np.load(fh, allow_pickle=False)  # never unpickle: reading data must not run code
        is_npz = isinstance(obj, np.lib.npyio.NpzFile)
        if want_npz != is_npz:
            raise DataError(f"{name}: holds an {'.npz archive' if is_npz else '.npy array'}; "
                            "rename it to match its content")
        return {key: obj[key] for key in obj.files} if is_npz else obj


def _frame(columns: dict):
    pd = _pandas()

    # Decode text now: numpy 'U' arrays can hold invalid code points that would
    # otherwise blow up later, far from the file.
    return pd.DataFrame({k: v.astype(object) if v.dtype.kind == "U" else v for k, v in columns.items()})


def _read_npy(p: Path, name: str):
    pd = _pandas()

    arr = _load(p, name, want_npz=False)
    if arr.dtype.names is not None:
        columns = {field: arr[field] for field in arr.dtype.names}
        bad = [f for f, col in columns.items() if col.ndim != 1 or col.dtype.names is not None]
        if bad:
            raise DataError(f"{name}: structured array of shape {arr.shape} with field {bad[0]!r} of shape "
                            f"{columns[bad[0]].shape[1:]}; expected a 1-D array of scalar fields")
        return _frame(columns)
    if arr.ndim != 2:
        raise DataError(f"{name}: array has shape {arr.shape}; expected 2-D (rows, columns), "
                        "e.g. reshape a 1-D array to (n, 1)")
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{name}: array holds {arr.dtype} values; expected numbers")
    return pd.DataFrame(arr, columns=[str(j) for j in range(arr.shape[1])])


def _read_npz(p: Path, name: str):
    arrays = _load(p, name, want_npz=True)
    if set(arrays) == {"X", "y"} and arrays["X"].ndim == 2:
        X, y = arrays["X"], arrays["y"]
        if y.shape != (len(X),):
            raise DataError(f"{name}: y has shape {y.shape}, expected ({len(X)},) to match X {X.shape}")
        arrays = {f"x{j}": X[:, j] for j in range(X.shape[1])} | {"y": y}
    if not arrays:
        raise DataError(f"{name}: archive holds no arrays")
    for key, arr in arrays.items():
        if arr.ndim != 1 or arr.dtype.names is not None:
            raise DataError(f"{name}: array {key!r} has shape {arr.shape}; expected 1-D "
                            "(one array per column, or exactly X 2-D and y 1-D)")
    first = next(iter(arrays))
    if odd := [key for key, arr in arrays.items() if len(arr) != len(arrays[first])]:
        raise DataError(f"{name}: array {odd[0]!r} has {len(arrays[odd[0]])} rows, {first!r} has "
                        f"{len(arrays[first])}; columns must be equally long")
    return _frame(arrays)


# -------------------------------------------------------- columns to arrays

@dataclass(eq=False)
class Dataset:
    """Arrays ready for training.

    X: float64 (n_rows, n_features), C-contiguous. y: (n_rows,), float64, or int64
    class indices 0..k-1 with ``labels=True``. classes: the original label of each
    index, sorted, or None without labels. source: where the rows came from.
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: list
    target_name: str
    classes: list | None
    source: str


def load_xy(path, target, features=None, *, labels=False) -> Dataset:
    """:func:`read_table` then :func:`select_xy`."""
    return select_xy(read_table(path), target, features, labels=labels, source=str(path))


# How a missing number is spelled in files (pandas' default NA strings): in a feature or a
# regression target these cells are missing values, reported as such.
MISSING_SPELLINGS = frozenset({"", "nan", "+nan", "-nan", "na", "n/a", "null", "none", "<na>", "#n/a", "#na",
                               "#n/a n/a", "-1.#ind", "1.#ind", "-1.#qnan", "1.#qnan"})


def _floats(col):
    """Column -> (float64 values (n,), mask (n,) of cells that are not numbers); missing cells are NaN."""
    pd = _pandas()

    if pd.api.types.is_complex_dtype(col.dtype):
        return np.full(len(col), np.nan), col.notna().to_numpy()
    if pd.api.types.is_numeric_dtype(col.dtype):  # includes bool
        return col.to_numpy(dtype=np.float64, na_value=np.nan), np.zeros(len(col), bool)
    # Text, bytes, dates, mixed objects: convert each cell's text, so that a date
    # is reported as not a number instead of silently becoming nanoseconds.
    cells = col.to_numpy(dtype=object)
    text = [None if na else (c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c))
            for c, na in zip(cells, pd.isna(cells))]
    values = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(np.float64)
    blank = np.array([t is None or t.strip().lower() in MISSING_SPELLINGS for t in text], bool)
    return values, np.isnan(values) & ~blank


def select_xy(frame, target, features=None, *, labels=False, source="<data>", first_row=0) -> Dataset:
    """Pick the target and feature columns of a DataFrame and check every value.

    Column names are compared as strings. ``features``: a list of names, a
    comma-separated string, or None for every column but the target. Messages
    name CSV cells by file line (data row i is line i + 2; a quoted field
    spanning lines shifts this) and other sources by 0-based row; ``first_row`` is the file's
    row of the frame's first (a block of a larger file).
    """
    try:
        return _select_xy(frame, target, features, labels, source, first_row)
    except DataError:
        raise
    except Exception as exc:  # cell objects that pandas or numpy cannot convert
        raise DataError(f"{source}: cannot use the values of this table ({one_line(exc)})") from exc


def _select_xy(frame, target, features, labels, source, first_row=0):
    names, target = [str(c) for c in frame.columns], str(target)
    _refuse_repeated_names(names, source)
    pos = {n: i for i, n in enumerate(names)}
    hint = ("; the file looks ';'- or tab-separated, gradloop reads comma-separated files"
            if len(names) == 1 and re.search("[;\t]", names[0]) else "")
    if target not in pos:
        raise DataError(f"{source}: no target column {target!r}; columns are {_listing(names)}{hint}")
    if features is None:
        feats = [n for n in names if n != target]
        refuse_unnamed(feats, source)
    else:
        feats = [str(f).strip() for f in (features.split(",") if isinstance(features, str) else features)]
        feats = [f for f in feats if f]
        if unknown := [f for f in feats if f not in pos]:
            raise DataError(f"{source}: no feature column {_listing(unknown)}; columns are {_listing(names)}{hint}")
        if target in feats:
            raise DataError(f"{source}: column {target!r} is the target and cannot also be a feature")
        if len(set(feats)) != len(feats):
            raise DataError(f"{source}: a feature is listed twice in {_listing(feats)}")
    if not feats:
        raise DataError(f"{source}: no feature columns left besides the target {target!r}; "
                        "the data needs at least one more column")
    if len(frame) == 0:
        raise DataError(f"{source}: has no rows")

    X, target_values = np.empty((len(frame), len(feats)), dtype=np.float64), []

    def store(j, values):  # each column straight into X: no second copy of the data
        if j < len(feats):
            X[:, j] = values
        else:
            target_values.append(np.array(values))  # a copy: pandas may hand out a read-only view

    _checked_columns(frame, pos, feats + [target], source, store, label_column=target if labels else None,
                     first_row=first_row)
    y = target_values[0]
    classes = None
    if labels:
        y, classes = encode_labels(frame.iloc[:, pos[target]].to_numpy())
    return Dataset(X, y, feats, target, classes, source)


def select_features(frame, feature_names, source="<data>", first_row=0):
    """The columns a trained model reads, by name and in its order: float64 (n_rows, n_features).

    Other columns (the target, when there is one; anything else) are ignored, whatever they
    hold. DataError names a missing feature, or the file's first bad cell among the features.
    """
    names = [str(c) for c in frame.columns]
    _refuse_repeated_names(names, source)
    pos = {n: i for i, n in enumerate(names)}
    if missing := [f for f in feature_names if f not in pos]:
        raise DataError(f"{source}: no feature column {_listing(missing)}, which the model reads; "
                        f"columns are {_listing(names)}")
    if len(frame) == 0:
        raise DataError(f"{source}: has no rows")
    X = np.empty((len(frame), len(feature_names)), dtype=np.float64)

    def store(j, values):
        X[:, j] = values

    _checked_columns(frame, pos, list(feature_names), source, store, first_row=first_row)
    return X


def _checked_columns(frame, pos, columns, source, store, label_column=None, first_row=0):
    """Check every cell of the named columns; hand each column's float64 values (n_rows,) to ``store(j, values)``.

    ``label_column`` holds labels: any value but a missing one passes, and its values here are
    placeholders (0). DataError names the file's first bad cell: line (CSV) or row, column, value.
    """
    if source.lower().endswith(".csv"):
        where = lambda i: f"line {first_row + i + 2}"  # noqa: E731
    else:
        where = lambda i: f"row {first_row + i}"  # noqa: E731
    problems = []  # (row, column order, message): report the file's first bad cell
    for j, col_name in enumerate(columns):
        col = frame.iloc[:, pos[col_name]]
        if col_name == label_column:  # any label will do, but not a missing or infinite one
            values = (col.to_numpy(np.float64, na_value=np.nan) if col.dtype.kind == "f"
                      else np.where(col.isna().to_numpy(), np.nan, 0.0))
            text_bad, what_nan = np.zeros(len(col), bool), "missing label; fill it in or drop the row"
        else:
            values, text_bad = _floats(col)
            what_nan = "missing value (empty cell, NaN or a short row); fill it in or drop the row"
        bad = text_bad | ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            if text_bad[i]:
                what = f"{_show(col.iloc[i])} is not a number"
            else:
                what = what_nan if np.isnan(values[i]) else "infinite value; replace it with a finite number"
            problems.append((i, j, f"{source}: {where(i)}, column {col_name!r}: {what}"))
        elif not problems:
            store(j, values)
    if problems:
        raise DataError(min(problems)[2])


def fingerprint(dataset) -> str:
    """SHA-256 hex digest of a Dataset's content: names, shapes and the bytes of X and y.

    A checkpoint stores it, so a resumed run on other data (same shape, same path) is refused,
    and the same data under another spelling of its path is accepted.
    """
    digest = hashlib.sha256(json.dumps([dataset.feature_names, dataset.target_name, dataset.classes,
                                        list(dataset.X.shape), str(dataset.X.dtype), str(dataset.y.dtype)],
                                       default=str).encode("utf-8"))
    digest.update(np.ascontiguousarray(dataset.X).tobytes())
    digest.update(np.ascontiguousarray(dataset.y).tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------ labels

def _label(value):
    """A label as a JSON-friendly scalar: numpy scalar -> python, bytes -> str, 2.0 -> 2."""
    value = value.item() if isinstance(value, np.generic) else value
    value = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise DataError(f"missing or infinite label {value!r}; fill it in or drop the row")
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # a label column read as float (1.0) must match one read as int (1)
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def encode_labels(values, classes=None):
    """Map n labels (numbers, strings, bools) to class indices.

    ``classes``: the known classes (e.g. from a trained model), or None to use
    the sorted distinct labels. Returns (int64 indices (n,) in 0..k-1, classes).
    Labels match classes by ``str()`` of their normalised form (see ``_label``),
    so 1, 1.0, np.int64(1) and "1" are one class however a file stored them.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind in "biufU":  # fast path: numpy finds and sorts the distinct values
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            i = int(np.argmax(~np.isfinite(arr)))
            raise DataError(f"missing or infinite label {arr[i]} at row {i}; fill it in or drop the row")
        uniq, inverse = np.unique(arr, return_inverse=True)
        found = [_label(u) for u in uniq]
    else:  # object arrays: python scalars, possibly of mixed kinds
        labs = [_label(v) for v in arr]
        first = {}
        for v in labs:
            first.setdefault(str(v), v)
        try:
            found = sorted(first.values())
        except TypeError:  # e.g. int and str: order by text
            found = sorted(first.values(), key=str)
        position = {str(v): i for i, v in enumerate(found)}
        inverse = np.fromiter((position[str(v)] for v in labs), np.int64, len(labs))
    inverse = np.asarray(inverse, np.int64).reshape(-1)
    if classes is None:
        return inverse, found
    classes = list(classes)
    known = {str(_label(c)): i for i, c in enumerate(classes)}
    if len(known) != len(classes):
        raise DataError(f"classes {classes!r} contain duplicates")
    if unseen := [v for v in found if str(v) not in known]:
        raise DataError(f"label(s) {_listing(unseen)} not among the model's classes {_listing(classes)}; "
                        "retrain with these labels or drop those rows")
    return np.array([known[str(v)] for v in found], dtype=np.int64)[inverse], classes
