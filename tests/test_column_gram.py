"""The Gram sums of column-ordered data: the compiled loop against the formula, Parquet row
groups summed from Arrow's buffers in place (standardized a tile at a time, or not) with the
bits of their blocks, and the memory a Parquet pass holds (each row group through a map of
its own)."""

import subprocess
import sys

import numpy as np
import pytest

import gradloop
from gradloop.data import ParquetSource
from gradloop.errors import DataError
from gradloop.fast.blocksums import gram_partial
from gradloop.fast.columns import MAX_WIDTH, TILE_ROWS, _upper_gram, column_gram
from gradloop.fast.kernels import augmented_gram
from gradloop.preprocessing import Standardizer

pq = pytest.importorskip("pyarrow.parquet", reason="Parquet sources need pyarrow")


def _formula(X, Y=None):
    """A^T A for A = [X, Y, 1], straight from the definition (float64)."""
    A = np.column_stack([X] + ([] if Y is None else [Y]) + [np.ones(len(X))])
    return A.T @ A


def _close(a, b, rel=1e-13):
    return np.abs(a - b).max() <= rel * max(1.0, np.abs(b).max())


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 7, 8, 9])
@pytest.mark.parametrize("rows", [0, 1, TILE_ROWS - 1, TILE_ROWS, TILE_ROWS + 1, 1001])
def test_column_gram_is_the_augmented_product_for_every_width_and_tile_edge(width, rows):
    rng = np.random.default_rng(width * 1000 + rows)
    X = np.asfortranarray(rng.standard_normal((rows, width)) * np.arange(1, width + 1) + 3.0)
    gram = column_gram([X[:, j] for j in range(width)], rows)
    assert gram.shape == (width + 1, width + 1)
    assert np.array_equal(gram, gram.T)
    assert _close(gram, _formula(X))
    assert gram[-1, -1] == rows  # the ones column counts the rows


@pytest.mark.parametrize("scaled", [False, True])
def test_the_compiled_loop_sums_what_its_plain_python_source_sums(scaled):
    rng = np.random.default_rng(1)
    columns = [rng.standard_normal(TILE_ROWS + 37) + 2.0 for _ in range(8)]
    addresses = np.array([c.ctypes.data for c in columns], dtype=np.intp)
    shift, scale = rng.standard_normal(8), rng.uniform(0.5, 2.0, 8)
    buffer = np.empty((8, TILE_ROWS))
    compiled, plain = np.zeros((8, 8)), np.zeros((8, 8))
    _upper_gram(addresses, shift, scale, scaled, len(columns[0]), buffer, compiled)
    _upper_gram.python(addresses, shift, scale, scaled, len(columns[0]), buffer, plain)
    assert _close(compiled, plain, 1e-14) and np.count_nonzero(np.triu(plain)) == 36
    A = np.column_stack(columns)
    expected = ((A - shift) / scale if scaled else A).T @ ((A - shift) / scale if scaled else A)
    assert _close(np.triu(plain), np.triu(expected))


def test_a_nan_or_an_infinity_reaches_its_columns_diagonal():
    X = np.asfortranarray(np.random.default_rng(2).standard_normal((600, 5)))
    for bad in (np.nan, np.inf, -np.inf):
        Xb = X.copy(order="F")
        Xb[450, 3] = bad
        diagonal = np.diagonal(column_gram([Xb[:, j] for j in range(5)], 600))
        assert not np.isfinite(diagonal[3]) and np.isfinite(np.delete(diagonal, 3)).all()


def test_column_gram_refuses_columns_it_cannot_read_in_place():
    X = np.random.default_rng(3).standard_normal((50, 3))  # row order: its columns are strided
    for columns in ([X[:, 0], X[:, 1]], [X[:, 0].copy(), X[:, 1].astype(np.float32).copy()],
                    [X[:, 0].copy(), X[:40, 1].copy()]):
        with pytest.raises(ValueError, match="every column must be contiguous float64 of 50 values"):
            column_gram(columns, 50)


def test_a_column_ordered_block_sums_to_the_row_ordered_blocks_gram():
    rng = np.random.default_rng(4)
    X, Y = rng.standard_normal((5000, 6)) + 2.0, rng.standard_normal((5000, 2))
    by_columns = gram_partial(np.asfortranarray(X), Y)
    by_rows = gram_partial(np.ascontiguousarray(X), Y)
    assert _close(by_columns, by_rows) and _close(by_columns, _formula(X, Y))
    assert np.array_equal(by_rows, augmented_gram(X, Y, threads=1))


# ------------------------------------------------------------------ Parquet row groups in place

def _parquet(path, X, y, row_group_size, dtypes=None):
    import pandas as pd

    frame = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])]).assign(y=y)
    if dtypes:
        frame = frame.astype(dtypes)
    frame.to_parquet(path, row_group_size=row_group_size)
    return path


@pytest.fixture()
def table(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((2500, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, -2, 0, 1]
    y = X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(2500)
    return X, y, _parquet(tmp_path / "d.parquet", X, y, 700)


def test_a_row_group_summed_in_arrows_buffers_is_its_blocks_gram_bit_for_bit(table):
    X, y, path = table
    source = ParquetSource(path, "y")
    for i in range(source.n_blocks):  # the last row group is short: 400 rows
        Xb, Yb = source.block(i)
        assert Xb.flags.f_contiguous  # Parquet blocks are column-ordered: their product is the column loop's
        assert np.array_equal(source.block_gram(i), gram_partial(Xb, Yb))
        a, b = source.bounds[i]
        assert _close(source.block_gram(i), _formula(X[a:b], y[a:b]))
    subset = source.subset([3, 1])
    assert np.array_equal(subset.block_gram(0), source.block_gram(3))


def test_a_row_group_scaled_a_tile_at_a_time_is_its_scaled_blocks_gram_bit_for_bit(table):
    X, y, path = table
    scaler = Standardizer().fit(X)
    source = ParquetSource(path, "y")
    for scaled in (source.scaled(scaler), source.subset([3, 0]).scaled(scaler), source.scaled(scaler).subset([2])):
        for i in range(scaled.n_blocks):
            Xb, Yb = scaled.block(i)  # Standardizer.transform of the block
            assert Xb.flags.f_contiguous
            assert np.array_equal(scaled.block_gram(i), gram_partial(Xb, Yb))
    a, b = source.bounds[1]
    assert _close(source.scaled(scaler).block_gram(1), _formula(scaler.transform(X[a:b]), y[a:b]))


def test_column_gram_scales_each_value_as_the_standardizer_does():
    rng = np.random.default_rng(8)
    X = np.asfortranarray(rng.standard_normal((3 * TILE_ROWS + 5, 6)) * [1, 1e3, 1e-3, 5, 7, 0.5] + 40.0)
    scaler = Standardizer().fit(X)
    scaled = np.asfortranarray(scaler.transform(X))
    by_tiles = column_gram([X[:, j] for j in range(6)], len(X), scaler.mean_, scaler.scale_)
    assert np.array_equal(by_tiles, column_gram([scaled[:, j] for j in range(6)], len(X)))
    assert _close(by_tiles, _formula(scaled))


def test_a_gram_run_from_parquet_is_the_in_memory_run(table):
    X, y, path = table
    ref = gradloop.fit_linear(X, y, np.zeros(5), "auto", 80, bias=0.0, gradient="gram")
    run = gradloop.fit_linear(ParquetSource(path, "y"), None, np.zeros(5), "auto", 80, bias=0.0, gradient="gram")
    assert _close(run.weights, ref.weights, 1e-12) and _close(run.optimum.weights, ref.optimum.weights, 1e-10)
    assert _close(np.array(run.history.history["loss"]), np.array(ref.history.history["loss"]), 1e-12)


def test_blocks_wider_than_the_loop_beats_blas_at_take_blas(tmp_path):
    rng = np.random.default_rng(9)
    d = MAX_WIDTH - 1  # [X, y, 1] one column wider than the loop takes
    X, y = rng.standard_normal((600, d)), rng.standard_normal(600)
    Xf = np.asfortranarray(X)
    assert np.array_equal(gram_partial(Xf, y), augmented_gram(Xf, y.reshape(-1, 1), threads=1))
    narrow = np.asfortranarray(X[:, :-1])
    assert np.array_equal(gram_partial(narrow, y), column_gram([narrow[:, j] for j in range(d - 1)] + [y], 600))
    source = ParquetSource(_parquet(tmp_path / "wide.parquet", X, y, 200), "y")
    assert source.block_gram(0) is None
    run = gradloop.fit_linear(source, None, np.zeros(d), "auto", 20, bias=0.0, gradient="gram")
    ref = gradloop.fit_linear(X, y, np.zeros(d), "auto", 20, bias=0.0, gradient="gram")
    assert _close(run.weights, ref.weights, 1e-12)


def test_a_file_system_without_memory_maps_is_read_instead(table, monkeypatch):
    import pyarrow as pa

    X, y, path = table
    mapped = ParquetSource(path, "y")
    expected = [mapped.block_gram(i) for i in range(mapped.n_blocks)], mapped.block(2)

    def no_maps(*args, **kwargs):
        raise OSError("memory maps are not supported on this file system")

    monkeypatch.setattr(pa, "memory_map", no_maps)
    read = ParquetSource(path, "y")
    assert all(np.array_equal(read.block_gram(i), g) for i, g in enumerate(expected[0]))
    assert all(np.array_equal(a, b) for a, b in zip(read.block(2), expected[1]))


def test_columns_not_float64_take_the_general_path_with_the_same_sums(table, tmp_path):
    X, y, _ = table
    path = _parquet(tmp_path / "ints.parquet", np.round(X * 100), y, 700, dtypes={"x1": "int64"})
    source = ParquetSource(path, "y")
    assert source.block_gram(0) is None
    assert ParquetSource(path, "y", dtype=np.float32).block_gram(0) is None
    run = gradloop.fit_linear(source, None, np.zeros(5), "auto", 20, bias=0.0, gradient="gram")
    ref = gradloop.fit_linear(np.round(X * 100), y, np.zeros(5), "auto", 20, bias=0.0, gradient="gram")
    assert _close(run.weights, ref.weights, 1e-12)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_value_in_a_gram_pass_is_named_by_file_row_and_column(table, tmp_path, bad):
    X, y, _ = table
    X = X.copy()
    X[2222, 2] = bad
    source = ParquetSource(_parquet(tmp_path / "bad.parquet", X, y, 700), "y")
    assert source.block_gram(3) is None
    what = "missing value" if np.isnan(bad) else "infinite value"
    with pytest.raises(DataError, match=rf"bad\.parquet: row 2222, column 'x2'.*{what}"):
        gradloop.fit_linear(source, None, np.zeros(5), 0.01, 50, bias=0.0, gradient="gram")


def test_the_head_converts_only_its_rows_and_equals_the_blocks_first_rows(table):
    X, y, path = table
    source = ParquetSource(path, "y")
    X5, Y5 = source.head(5)
    assert np.array_equal(X5, X[:5]) and np.array_equal(Y5[:, 0], y[:5])
    X300, _ = source.head(300)  # more rows than were kept: read again
    assert np.array_equal(X300, X[:300])
    assert len(source.head(5000)[0]) == 700  # no more than the first block holds
    assert np.array_equal(source.subset([2]).head(3)[0], X[1400:1403])


PARQUET_MEMORY_PROBE = r"""
import sys, numpy as np, gradloop
from gradloop.data import ParquetSource
path, small = sys.argv[1], sys.argv[2]
def runs(file):
    for gradient in ("gram", "stream"):
        gradloop.fit_linear(ParquetSource(file, "y"), None, np.zeros(8), "auto", 3, bias=0.0, gradient=gradient)
def status(field):  # kB
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
runs(small)  # the same runs on a small file first: every loop compiled or loaded, every pool started
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak resident size starts again from the resident size now
before = status("VmHWM")
runs(path)
print(before * 1024, status("VmHWM") * 1024)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resets and reads the peak resident size in /proc")
def test_a_parquet_pass_holds_a_few_row_groups_not_the_file(tmp_path):
    """Peak resident memory (Arrow's buffers and mapped file pages included, which tracemalloc does not
    see) while Gram and stream runs read 3,000,000 x 9 float64 (216 MB) in row groups of 25,000 rows
    (1.8 MB): it grows by a few row groups in flight on each thread, not by the file (27 MB measured,
    where one map kept open per file grew with every row group read)."""
    rng = np.random.default_rng(6)
    X = rng.standard_normal((3_000_000, 8))
    y = X @ rng.standard_normal(8) + rng.standard_normal(3_000_000)
    path = _parquet(tmp_path / "big.parquet", X, y, 25_000)
    small = _parquet(tmp_path / "small.parquet", X[:2000], y[:2000], 500)
    data = X.nbytes + y.nbytes
    del X, y
    out = subprocess.run([sys.executable, "-c", PARQUET_MEMORY_PROBE, str(path), str(small)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    before, peak = (int(v) for v in out.stdout.split()[-2:])
    assert peak - before < data / 4, (peak - before, data)
