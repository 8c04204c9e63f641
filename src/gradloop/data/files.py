"""Data sources read from files block by block: Parquet row groups and CSV chunks.

Both check every cell as its block is read, through the table reader's checks
(:mod:`gradloop.data.tables`): a bad value is named by file, row (Parquet) or line (CSV) and
column, in whatever block it is. A source without a target (``target=None`` and the feature
columns named) reads the rows a model predicts.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np

from ..errors import DataError, one_line
from ..finite import all_finite
from .labels import check_labels
from .sources import Source, _pick_columns, _row_bounds
from .columns import text_feature_hint
from .tables import _pandas, select_features, select_xy

__all__ = ["CSVSource", "ParquetSource", "parquet_files"]

CSV_CHUNK_ROWS = 100_000


def is_pattern(path):
    """Whether ``path`` is a glob: it holds ``*``, ``?`` or ``[`` and nothing of that name exists. A path
    that exists is read as that path (brackets, stars and question marks are legal in names)."""
    text = str(path)
    return any(ch in text for ch in "*?[") and not os.path.lexists(text)


def parquet_files(spec):
    """The Parquet files a path names: a file, a folder (its ``*.parquet`` and ``*.pq``, sorted) or a glob
    (only where nothing of that name exists: :func:`is_pattern`)."""
    text = str(spec)
    if is_pattern(text):
        files = sorted(glob.glob(text))
    elif os.path.isdir(text):
        files = sorted(str(p) for p in Path(text).iterdir() if p.suffix.lower() in (".parquet", ".pq"))
    else:
        files = [text]
    if not files:
        raise DataError(f"{text}: names no Parquet files; give a file, a folder of .parquet files or a glob")
    return files


class ParquetSource(Source):
    """Parquet files (a file, a folder or a glob), one block per row group, only the needed columns read.

    ``labels``: the target holds a classifier's labels, returned as stored (see ``labelled()``).
    """

    def __init__(self, path, target, features=None, *, dtype=np.float64, labels=False):
        import pyarrow.parquet as pq  # lazy: only out-of-core Parquet needs pyarrow's reader

        self.name, self.files = str(path), parquet_files(path)
        self.dtype, self.labels = np.dtype(dtype), bool(labels)
        self.y_dtype = np.dtype(object) if self.labels else self.dtype
        self.bounds, self._groups, self._footers = [], [], {}
        self._float64_files = set()  # files whose needed columns are all stored as float64
        columns = None
        for file in self.files:
            try:
                meta = pq.ParquetFile(file)
            except Exception as exc:
                raise DataError(f"{file}: cannot read as Parquet ({one_line(exc)})") from exc
            self._footers[file] = meta.metadata
            names = [str(n) for n in meta.schema_arrow.names if not str(n).startswith("__index_level_")]
            if columns is None:
                columns = names
                feature_idx, target_idx = _pick_columns(columns, target, features, file)
                self.feature_names = [columns[j] for j in feature_idx]
                self.target_names = [columns[j] for j in target_idx]
            else:
                _pick_columns(names, self.target_names, self.feature_names, file)  # every file has them
            schema = meta.schema_arrow
            if all(str(schema.field(n).type) == "double" for n in self.feature_names + self.target_names):
                self._float64_files.add(file)
            first = 0
            for g in range(meta.num_row_groups):
                rows = meta.metadata.row_group(g).num_rows
                if rows:
                    start = self.n_rows
                    self.bounds.append((start, start + rows))
                    self._groups.append((file, g, first))
                first += rows
        if self.n_rows == 0:
            raise DataError(f"{self.name}: has no rows")

    def _row_group(self, i, columns):
        import pyarrow as pa
        import pyarrow.parquet as pq

        file, group, _ = self._groups[i]
        try:
            footer = self._footers.get(file)
            if footer is None:  # a copy sent to a Dask worker reads each footer once there
                footer = self._footers[file] = pq.read_metadata(file)
            # A memory map of its own for each read, released with the table: pyarrow decompresses
            # straight from the page cache, no read() copy first (a pass over 2,000,000 x 33 took
            # 172 ms against 234 ms), and the file's pages leave this process's resident memory with
            # the block (one map kept open held every page read: 1.4 GB after that pass). A reader
            # per call also lets threads read at once (a ParquetFile is not safe to share), and
            # pre_buffer stays off: with it, a reader kept every row group it had read.
            try:
                handle = pa.memory_map(file)
            except OSError:  # a file system that cannot map files: pyarrow reads it instead
                handle = pa.OSFile(file)
            with handle:
                return pq.ParquetFile(handle, metadata=footer, pre_buffer=False).read_row_group(group, columns=columns)
        except Exception as exc:
            raise DataError(f"{file}: cannot read row group {group} ({one_line(exc)})") from exc

    def _read(self, i, rows=None):
        file, _, first = self._groups[i]
        table = self._row_group(i, self.feature_names + self.target_names)
        if rows is not None:
            table = table.slice(0, rows)  # only these rows are converted and checked
        X = _numeric_columns(table, self.feature_names, self.dtype)
        Y = self._labels(i, table) if self.labels else _numeric_columns(table, self.target_names, self.dtype)
        if X is not None and Y is not None and all_finite(X) and (self.labels or all_finite(Y)):
            return X, np.ascontiguousarray(Y)
        # Text, missing cells or a non-finite value somewhere: the table reader's cell-by-cell check
        # finds the first and names it (row, column, value).
        return _checked_block(table.to_pandas(), self, file, first)

    def block_head(self, i, rows):
        """The first ``rows`` rows of block i, (X, Y): the row group is read whole (a Parquet page
        holds a whole column here), but only those rows are converted and checked."""
        return self._read(i, rows)

    def block_gram(self, i, scaler=None):
        """Block i's ``[X, Y, 1]^T [X, Y, 1]`` (float64), summed straight from the row group's Arrow
        buffers, no array built: 6 ms for a 125,000 x 33 row group, where building the block took 5 ms
        and its product 12 ms. ``scaler`` (a fitted Standardizer): of X scaled by it, a tile of rows at
        a time, never a scaled copy (8 ms, where scaling the block took 15 ms more). The same bits as
        the product of :meth:`block` (a column-ordered block), scaled or not.

        None where the general path must run: a column not float64 (or in several chunks, or with
        missing cells), a float32 source, labels, more columns than the loop beats BLAS at, or a
        non-finite sum (the block's cell-by-cell check then names the bad value: a NaN or infinity
        anywhere makes its column's sum of squares one).
        """
        from ..fast.columns import MAX_WIDTH, column_gram  # lazy: numba, only for the Gram pass

        if self.labels or self.dtype != np.float64 or not self.target_names:
            return None
        if self._groups[i][0] not in self._float64_files or self.n_features + self.n_outputs + 1 > MAX_WIDTH:
            return None  # decided from the schema: such a row group is read once, by the general path
        if scaler is not None and getattr(scaler, "mean_", None) is None:
            return None  # not a fitted Standardizer: the general path applies it

        table = self._row_group(i, self.feature_names + self.target_names)
        columns = []
        for name in self.feature_names + self.target_names:
            column = table.column(name)
            if column.num_chunks != 1 or column.null_count:
                return None
            columns.append(column.chunk(0).to_numpy(zero_copy_only=True))
        shifts, scales = (None, None) if scaler is None else (scaler.mean_, scaler.scale_)  # X's; Y as stored
        gram = column_gram(columns, table.num_rows, shifts, scales)
        return gram if np.isfinite(np.diagonal(gram)).all() else None

    def _labels(self, i, table):
        """Block i's labels as they are stored (rows, 1), a missing one named by file, row and column."""
        file, _, first = self._groups[i]
        target = self.target_names[0]
        values = table.column(target).to_numpy(zero_copy_only=False)
        check_labels(values, file, target, lambda row: f"row {first + row}")
        return values.reshape(-1, 1)

    def label_blocks(self):
        """Each row group's labels, reading the target column only."""
        for i in range(self.n_blocks):
            yield self._labels(i, self._row_group(i, self.target_names))[:, 0]

    def __getstate__(self):  # sent to Dask workers: the footers stay behind, each worker reads its own
        return {**self.__dict__, "_footers": {}}


def _checked_block(frame, source, where, first_row):
    """A block's DataFrame, every cell checked (a bad one named by file, row or line, and column), as
    (X (rows, n_features), Y (rows, n_outputs)) in the source's dtype (a source of labels: Y holds them
    as stored); a source without targets (the rows a model predicts) has an empty Y."""
    try:
        return _block_arrays(frame, source, where, first_row)
    except DataError as exc:
        target = source.target_names[0] if source.target_names else None
        raise text_feature_hint(exc, target) from None


def _block_arrays(frame, source, where, first_row):
    labels = source.labels
    Y = np.empty((len(frame), source.n_outputs), dtype=source.y_dtype)
    if not source.target_names:
        X = select_features(frame, source.feature_names, source=where, first_row=first_row)
    for j, target in enumerate(source.target_names):
        data = select_xy(frame, target, source.feature_names, labels=labels, source=where, first_row=first_row)
        X = data.X if j == 0 else X
        Y[:, j] = np.asarray(data.classes, dtype=object)[data.y] if labels else data.y  # labels as stored
    return np.ascontiguousarray(X, dtype=source.dtype), Y


def _numeric_columns(table, names, dtype):
    """Arrow columns ``names`` as one (rows, len(names)) array in column order (Fortran), or None when
    one of them is not plain numbers (text, dates, missing cells): those take the cell-by-cell check.

    Column order because Parquet stores columns: each is one contiguous copy (4.7 ms for 125,000 x 32
    here, where filling a row-ordered array column by column took 46 ms). The Gram pass reads it as
    it is; the row loop makes its own row-ordered copy.
    """
    import pyarrow as pa

    out = np.empty((len(names), table.num_rows), dtype=dtype)
    for j, name in enumerate(names):
        column = table.column(name)
        if column.null_count or not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
            return None
        out[j] = column.to_numpy()
    return out.T


class CSVSource(Source):
    """A CSV file read ``chunk_rows`` rows at a time (default :data:`CSV_CHUNK_ROWS`) with pandas.

    The row count is known from one pass over the file when the source is opened. Blocks are
    read in file order; ``block(i)`` alone (a Dask task's read) skips the rows before it.
    ``labels``: the target holds a classifier's labels, returned as stored (see ``labelled()``).
    """

    random_access = False

    def __init__(self, path, target, features=None, *, chunk_rows=None, dtype=np.float64, labels=False):
        pd = _pandas()
        self.name, self.path, self.chunk_rows = str(path), Path(path), int(chunk_rows or CSV_CHUNK_ROWS)
        self.dtype, self.labels = np.dtype(dtype), bool(labels)
        self.y_dtype = np.dtype(object) if self.labels else self.dtype
        if not self.path.is_file():
            raise DataError(f"{self.name}: no such file; check the path")
        try:  # the header as written (pandas would rename a repeated name)
            header = pd.read_csv(self.path, header=None, nrows=1, dtype=str, keep_default_na=False, encoding="utf-8")
            self.columns = columns = [str(c) for c in header.iloc[0]]
            feature_idx, target_idx = _pick_columns(columns, target, features, self.name)
            self.feature_names = [columns[j] for j in feature_idx]
            self.target_names = [columns[j] for j in target_idx]
            rows = sum(len(chunk) for chunk in self._chunks(usecols=(self.target_names or self.feature_names)[:1]))
        except DataError:
            raise
        except Exception as exc:  # not text, no header, a broken quote: one line
            raise DataError(f"{self.name}: cannot read as CSV ({one_line(exc)})") from exc
        if rows == 0:
            raise DataError(f"{self.name}: has a header but no data rows; add data to it")
        self.bounds = _row_bounds(rows, self.chunk_rows)

    def _chunks(self, usecols, **options):
        # As the whole-file reader: only an empty cell is missing ("NA" may be a label).
        return _pandas().read_csv(self.path, index_col=False, encoding="utf-8", keep_default_na=False,
                                  na_values=[""], usecols=usecols, **{"chunksize": self.chunk_rows, **options})

    def __iter__(self):
        first = 0
        try:
            for chunk in self._chunks(self.feature_names + self.target_names):
                block = _checked_block(chunk, self, self.name, first)
                first += len(chunk)
                yield block
        except DataError:
            raise
        except Exception as exc:  # a parser error deep in the file: one line, with pandas' words
            raise DataError(f"{self.name}: cannot read the rows after line {first + 1} ({one_line(exc)})") from exc

    def label_blocks(self):
        """Each chunk's labels, reading the target column only."""
        target, first = self.target_names[0], 0
        for chunk in self._chunks([target]):
            values = chunk[target].to_numpy()
            check_labels(values, self.name, target, lambda row: f"line {first + row + 2}")
            first += len(chunk)
            yield values

    def _read(self, i):
        """Chunk i alone (a Dask task's read): the rows before it are skipped, not kept, so reading
        chunk i costs a scan of the file up to it; in order, iterate the source instead."""
        first, end = self.bounds[i]
        names = self.feature_names + self.target_names
        try:
            # skiprows counts records (a quoted field over two lines is one): the header and ``first`` rows;
            # the columns are then named from the header read when the source was opened.
            chunk = self._chunks(names, chunksize=None, header=None, names=self.columns, skiprows=first + 1,
                                 nrows=end - first)
        except Exception as exc:
            raise DataError(f"{self.name}: cannot read the rows after line {first + 1} ({one_line(exc)})") from exc
        return _checked_block(chunk, self, self.name, first)
