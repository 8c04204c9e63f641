"""Data sources and the block kernels: every source trains to the in-memory run's weights.

In-memory runs are the reference; a source gives the same weights within 1e-12 relative
(float64), and the same bits when its blocks are the same (the block kernels' partial
sums are added in a fixed tree over the blocks, whoever computes them).
"""

import numpy as np
import pytest

import gradloop
from gradloop.data import ArraySource, CSVSource, ParquetSource, as_source, open_npy
from gradloop.errors import ConfigError, DataError
from gradloop.fast.blocksums import aligned, tree_sum
from gradloop.loop import fit
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD

N, D = 3000, 4
REL = 1e-12


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((N, D)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 1.0, -1.0, 2.0]
    y = X @ np.array([1.5, -2.0, 0.5, 1.0]) + 0.3 + 0.05 * rng.standard_normal(N)
    return X, y


def _close(a, b, rel=REL):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b).max() <= rel * max(1.0, np.abs(b).max())


def _reference(X, y, lr="auto", epochs=60, gradient="auto"):
    return gradloop.fit_linear(X, y, np.zeros(D), lr, epochs, bias=0.0, gradient=gradient)


def _write_csv(path, X, y, names=("a", "b", "c", "d")):
    import pandas as pd

    frame = pd.DataFrame(X, columns=list(names))
    frame["y"] = y
    frame.to_csv(path, index=False, float_format="%.17g")


def _write_parquet(path, X, y, row_group_size=500, names=("a", "b", "c", "d")):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame(X, columns=list(names))
    frame["y"] = y
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)


# ------------------------------------------------------------------ every source, same run

@pytest.mark.parametrize("gradient", ["stream", "gram"])
def test_array_source_trains_to_the_in_memory_weights_losses_and_optimum(data, gradient):
    X, y = data
    ref = _reference(X, y, gradient=gradient)
    run = gradloop.fit_linear(ArraySource(X, y, block_rows=512), None, np.zeros(D), "auto", 60, bias=0.0,
                              gradient=gradient)
    assert run.history.gradient_mode == gradient
    assert _close(run.lr, ref.lr)
    assert _close(run.weights, ref.weights) and _close(run.bias, ref.bias)
    assert _close(run.history.history["loss"], ref.history.history["loss"])
    assert _close(run.optimum.weights, ref.optimum.weights, 1e-10)
    assert _close(run.optimum.loss, ref.optimum.loss, 1e-10)
    assert _close(run.gap.excess_loss, ref.gap.excess_loss, 1e-8)
    assert _close(run.stable_lr, ref.stable_lr)


def test_one_block_is_bit_for_bit_the_in_memory_stream(data):
    X, y = data
    ref = _reference(X, y, lr=0.01, gradient="stream")
    run = gradloop.fit_linear(ArraySource(X, y, block_rows=N), None, np.zeros(D), 0.01, 60, bias=0.0,
                              gradient="stream")
    assert np.array_equal(run.weights, ref.weights)
    assert run.history.history["loss"] == ref.history.history["loss"]


def test_chapter_train_accepts_a_memory_mapped_array_and_a_source(data, tmp_path):
    X, y = data
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    ref = gradloop.train(X, y, np.zeros(D), 0.01, 40)
    assert np.array_equal(gradloop.train(Xm, y, np.zeros(D), 0.01, 40), ref)
    from_npy = gradloop.train(open_npy(tmp_path / "X.npy", y=tmp_path / "y.npy", block_rows=700), None,
                              np.zeros(D), 0.01, 40)
    assert _close(from_npy, ref)


def test_memory_mapped_x_and_y_stream_as_the_same_arrays_in_memory_bit_for_bit(data, tmp_path):
    X, y = data
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y.reshape(-1, 1))
    source = open_npy(tmp_path / "X.npy", y=tmp_path / "y.npy", block_rows=700)
    assert source.mapped_arrays() is not None and ArraySource(X, y).mapped_arrays() is None
    mapped = gradloop.fit_linear(source, None, np.zeros(D), 0.01, 30, bias=0.0, gradient="stream")
    memory = gradloop.fit_linear(X, y, np.zeros(D), 0.01, 30, bias=0.0, gradient="stream")
    assert np.array_equal(mapped.weights, memory.weights) and mapped.bias == memory.bias
    assert mapped.history.history["loss"] == memory.history.history["loss"]
    blocks = gradloop.fit_linear(ArraySource(X, y, block_rows=700), None, np.zeros(D), 0.01, 30, bias=0.0,
                                 gradient="stream")
    assert _close(blocks.weights, memory.weights)


def test_npy_with_every_column_is_memory_mapped_and_split_by_name(data, tmp_path):
    X, y = data
    np.save(tmp_path / "all.npy", np.column_stack([X, y]))
    source = open_npy(tmp_path / "all.npy", target="4", block_rows=1000)
    assert isinstance(source.array, np.memmap) and source.feature_names == ["0", "1", "2", "3"]
    run = gradloop.fit_linear(source, None, np.zeros(D), "auto", 60, bias=0.0)
    assert _close(run.weights, _reference(X, y).weights)
    rec = np.zeros(N, dtype=[("a", "f8"), ("b", "f8"), ("y", "f8"), ("c", "f8"), ("d", "f8")])
    for name, col in zip("abcd", X.T):
        rec[name] = col
    rec["y"] = y
    np.save(tmp_path / "rec.npy", rec)
    source = open_npy(tmp_path / "rec.npy", target="y", block_rows=999)
    assert source.feature_names == ["a", "b", "c", "d"]
    assert _close(gradloop.fit_linear(source, None, np.zeros(D), "auto", 60, bias=0.0).weights,
                  _reference(X, y).weights)


@pytest.mark.parametrize("layout", ["file", "folder", "glob"])
def test_parquet_row_groups_train_to_the_in_memory_weights(data, tmp_path, layout):
    X, y = data
    if layout == "file":
        _write_parquet(tmp_path / "d.parquet", X, y)
        spec = tmp_path / "d.parquet"
    else:
        for i, lo in enumerate(range(0, N, 1000)):
            _write_parquet(tmp_path / f"part-{i}.parquet", X[lo:lo + 1000], y[lo:lo + 1000], row_group_size=400)
        spec = tmp_path if layout == "folder" else str(tmp_path / "part-*.parquet")
    source = ParquetSource(spec, "y")
    assert source.n_rows == N and source.feature_names == ["a", "b", "c", "d"]
    assert source.n_blocks == (6 if layout == "file" else 9)
    ref = _reference(X, y)
    run = gradloop.fit_linear(source, None, np.zeros(D), "auto", 60, bias=0.0)
    assert _close(run.weights, ref.weights) and _close(run.optimum.loss, ref.optimum.loss, 1e-10)


def test_parquet_reads_only_the_needed_columns(data, tmp_path):
    X, y = data
    import pandas as pd

    frame = pd.DataFrame(X, columns=list("abcd"))
    frame["y"], frame["notes"] = y, "free text that is never read"
    frame.to_parquet(tmp_path / "d.parquet", row_group_size=1000)
    source = ParquetSource(tmp_path / "d.parquet", "y", features=["a", "b", "c", "d"])
    Xb, Yb = source.block(1)
    assert np.array_equal(Xb, X[1000:2000]) and np.array_equal(Yb[:, 0], y[1000:2000])


def test_csv_chunks_train_to_the_in_memory_weights(data, tmp_path):
    X, y = data
    _write_csv(tmp_path / "d.csv", X, y)
    source = CSVSource(tmp_path / "d.csv", "y", chunk_rows=700)
    assert source.n_rows == N and source.n_blocks == 5 and not source.random_access
    run = gradloop.fit_linear(source, None, np.zeros(D), "auto", 60, bias=0.0)
    assert _close(run.weights, _reference(X, y).weights)


def test_a_network_trains_through_the_layers_kernel_over_blocks(data):
    X, y = data
    reference, blocked = mlp([D, 8, 1], "tanh"), mlp([D, 8, 1], "tanh")
    h1 = fit(reference, X, y, loss="mse", optimizer=SGD(0.05), epochs=15)
    h2 = fit(blocked, ArraySource(X, y, block_rows=256), None, loss="mse", optimizer=SGD(0.05), epochs=15)
    assert h2.gradient_mode == "layers"
    for a, b in zip(blocked.parameters(), reference.parameters()):
        assert _close(a, b, 1e-12)
    assert _close(h2.history["loss"], h1.history["loss"])


def test_a_classifier_trains_over_blocks_with_integer_labels():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((900, 3))
    labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5).astype(int)
    reference, blocked = mlp([3, 6, 3], "relu"), mlp([3, 6, 3], "relu")
    h1 = fit(reference, X, labels, loss="cross-entropy", optimizer=SGD(0.1), epochs=10)
    h2 = fit(blocked, ArraySource(X, labels, block_rows=128), None, loss="cross-entropy", optimizer=SGD(0.1),
             epochs=10)
    assert _close(h2.history["loss"], h1.history["loss"])


@pytest.mark.parametrize("kind", ["parquet", "csv"])
def test_labelled_sources_list_the_classes_and_index_them_as_the_whole_column(data, tmp_path, kind):
    import pandas as pd

    from gradloop.data import encode_labels

    X, _ = data
    labels = np.array(["b", "a", "c\nd", "7"], dtype=object)[(X[:, 0] > 0) + 2 * (X[:, 1] > 1)]
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(y=labels)
    if kind == "parquet":
        frame.to_parquet(tmp_path / "d.parquet", row_group_size=700)
        source = ParquetSource(tmp_path / "d.parquet", "y", labels=True).labelled()
    else:  # a label with a line break inside quotes: records, not lines, make the chunks
        frame.to_csv(tmp_path / "d.csv", index=False, float_format="%.17g")
        source = CSVSource(tmp_path / "d.csv", "y", chunk_rows=700, labels=True).labelled()
    indices, classes = encode_labels(labels)
    assert source.classes == classes == ["7", "a", "b", "c\nd"] and source.y_dtype == np.int64
    blocks = list(source)
    assert len(blocks) == 5 and np.array_equal(np.concatenate([Y for _, Y in blocks])[:, 0], indices)
    assert np.array_equal(np.concatenate([X for X, _ in blocks]), X)
    for i in (3, 1):  # a block read alone (a Dask task's read) is the block read in order
        X_i, Y_i = source.block(i)
        assert np.array_equal(X_i, blocks[i][0]) and np.array_equal(Y_i, blocks[i][1])
    given = (CSVSource(tmp_path / "d.csv", "y", chunk_rows=700, labels=True) if kind == "csv" else
             ParquetSource(tmp_path / "d.parquet", "y", labels=True)).labelled(["7", "a", "b", "c\nd", "z"])
    assert given.classes[-1] == "z" and np.array_equal(np.concatenate([Y for _, Y in given])[:, 0], indices)


def test_a_missing_label_deep_in_a_source_names_file_row_and_column(data, tmp_path):
    import pandas as pd

    X, _ = data
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(y=np.where(X[:, 0] > 0, "yes", "no"))
    frame.loc[2222, "y"] = None
    frame.to_parquet(tmp_path / "d.parquet", row_group_size=500)
    with pytest.raises(DataError, match=r"d\.parquet: row 2222, column 'y': missing label"):
        ParquetSource(tmp_path / "d.parquet", "y", labels=True).labelled()
    frame.to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataError, match=r"d\.csv: line 2224, column 'y': missing label"):
        CSVSource(tmp_path / "d.csv", "y", chunk_rows=500, labels=True).labelled()


# ------------------------------------------------------------------ errors name the place

def test_a_bad_value_deep_in_a_csv_names_the_line_and_column(data, tmp_path):
    X, y = data
    _write_csv(tmp_path / "d.csv", X, y)
    lines = (tmp_path / "d.csv").read_text().splitlines()
    cells = lines[2901].split(",")  # data row 2900, in the last of 30 chunks
    cells[2] = "oops"
    lines[2901] = ",".join(cells)
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    source = CSVSource(tmp_path / "d.csv", "y", chunk_rows=100)
    with pytest.raises(DataError, match=r"d\.csv: line 2902, column 'c': 'oops' is not a number"):
        gradloop.fit_linear(source, None, np.zeros(D), 0.01, 5)


def test_a_bad_value_in_a_late_parquet_row_group_names_the_file_row_and_column(data, tmp_path):
    X, y = data
    X = X.copy()
    X[2950, 3] = np.nan
    _write_parquet(tmp_path / "d.parquet", X, y, row_group_size=100)
    with pytest.raises(DataError, match=r"d\.parquet: row 2950, column 'd': missing value"):
        gradloop.fit_linear(ParquetSource(tmp_path / "d.parquet", "y"), None, np.zeros(D), 0.01, 5)


def test_a_non_finite_value_in_a_memory_mapped_block_names_the_row_and_column(data, tmp_path):
    X, y = data
    bad = np.column_stack([X, y])
    bad[2999, 1] = np.inf
    np.save(tmp_path / "all.npy", bad)
    source = open_npy(tmp_path / "all.npy", target="4", block_rows=100)
    with pytest.raises(DataError, match=r"all\.npy: row 2999, column '1' \(X\): non-finite value inf"):
        gradloop.fit_linear(source, None, np.zeros(D), 0.01, 5)


@pytest.mark.parametrize("make, message", [
    (lambda p: CSVSource(p / "none.csv", "y"), r"none\.csv: no such file"),
    (lambda p: ParquetSource(p / "*.parquet", "y"), r"names no Parquet files"),
    (lambda p: open_npy(p / "none.npy", target="0"), r"none\.npy: no such file"),
])
def test_missing_files_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(DataError, match=message):
        make(tmp_path)


def test_unknown_and_repeated_columns_are_refused_by_name(tmp_path):
    (tmp_path / "d.csv").write_text("a,a,y\n1,2,3\n")
    with pytest.raises(DataError, match=r"column name 'a' appears twice \(columns 1 and 2\)"):
        CSVSource(tmp_path / "d.csv", "y")
    (tmp_path / "e.csv").write_text("a,b,y\n1,2,3\n")
    with pytest.raises(DataError, match=r"no target column 'z'; columns are 'a', 'b', 'y'"):
        CSVSource(tmp_path / "e.csv", "z")


@pytest.mark.parametrize("batch_size", [None, 50])
def test_validation_blocks_of_a_source_give_the_in_memory_validation_loss(data, batch_size):
    from gradloop.validation import split_source_validation

    X, y = data
    source = ArraySource(X, y, block_rows=300)  # 10 blocks: 2 held out for validation
    kept, held = split_source_validation(source, 0.2, 4)
    assert (kept.n_blocks, held.n_blocks, kept.n_rows + held.n_rows) == (8, 2, N)
    rows = lambda part: np.concatenate([np.arange(*source.bounds[i]) for i in part.picks])  # noqa: E731
    assert not set(rows(kept)) & set(rows(held))
    options = dict(loss="mse", optimizer=SGD(0.05), epochs=6, batch_size=batch_size, seed=4, shuffle=False)
    blocks_model, memory_model = mlp([D, 5, 1], "tanh", seed=1), mlp([D, 5, 1], "tanh", seed=1)
    h1 = fit(blocks_model, source, None, validation_split=0.2, **options)
    h2 = fit(memory_model, X[rows(kept)], y[rows(kept)], validation_data=(X[rows(held)], y[rows(held)]), **options)
    assert len(h1.history["val_loss"]) == 6 and _close(h1.history["val_loss"], h2.history["val_loss"], 1e-10)
    assert _close(h1.history["loss"], h2.history["loss"], 1e-10)
    h3 = fit(mlp([D, 5, 1], "tanh", seed=1), kept, None, validation_data=held, **options)  # a source given as such
    assert h3.history["val_loss"] == h1.history["val_loss"]


def test_what_sources_refuse_is_refused_before_training(data):
    X, y = data
    model = linear(D, 1)
    before = model.layers[0].params["W"].copy()
    with pytest.raises(ConfigError, match=r"validation_split 0.01 holds out whole blocks: of 10 block\(s\) it "
                                          r"leaves none for validation; give a fraction of at least 1/10"):
        fit(model, ArraySource(X, y, block_rows=300), None, loss="mse", optimizer=SGD(0.01), epochs=3,
            validation_split=0.01)
    assert np.array_equal(model.layers[0].params["W"], before)
    with pytest.raises(ConfigError, match="the source's data is float64 but the model is float32"):
        fit(linear(D, 1, dtype=np.float32), ArraySource(X, y), None, loss="mse", optimizer=SGD(0.01), epochs=1)


def test_sources_fingerprint_their_content_not_their_path(data, tmp_path):
    X, y = data
    np.save(tmp_path / "all.npy", np.column_stack([X, y]))
    a = open_npy(tmp_path / "all.npy", target="4", block_rows=500).fingerprint()
    b = open_npy(str(tmp_path / "." / "all.npy"), target="4", block_rows=500).fingerprint()
    other = np.column_stack([X, y])
    other[-1, 0] += 1.0  # the last block is sampled
    np.save(tmp_path / "all.npy", other)
    c = open_npy(tmp_path / "all.npy", target="4", block_rows=500).fingerprint()
    assert a == b != c


# ------------------------------------------------------------------ the block arithmetic

def test_tree_sum_adds_in_a_fixed_pairwise_order():
    parts = [1e16, 1.0, -1e16, 1.0, 3.0]
    assert tree_sum(parts) == ((1e16 + 1.0) + (-1e16 + 1.0)) + 3.0
    pairs = [(1.0, np.ones(2)), (2.0, np.ones(2)), (4.0, np.ones(2))]
    total, vec = tree_sum(pairs)
    assert total == 7.0 and np.array_equal(vec, [3.0, 3.0])


def test_aligned_copies_only_unaligned_arrays():
    raw = np.zeros(8 * 100 + 8, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64 + 8  # 8 bytes past a 64-byte boundary
    unaligned = raw[start:start + 8 * 90].view(np.float64).reshape(30, 3)
    unaligned[...] = np.arange(90).reshape(30, 3)
    fixed = aligned(unaligned)
    assert fixed.ctypes.data % 64 == 0 and np.array_equal(fixed, unaligned)
    assert aligned(fixed) is fixed


def test_as_source_refuses_targets_beside_a_source(data):
    X, y = data
    with pytest.raises(ConfigError, match="Y must be None when X is a source"):
        as_source(ArraySource(X, y), y)


def test_the_row_loop_gives_the_same_bits_at_every_address():
    """Chunks arrive at any address on Dask workers: the stream's per-block sums must not depend on it."""
    from gradloop.fast.blocksums import linear_partial

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((3001, 65)), rng.standard_normal((3001, 2))
    WT, b = rng.standard_normal((2, 65)), rng.standard_normal(2)
    results = set()
    for offset in range(0, 64, 8):
        raw = np.empty(X.nbytes + 128, dtype=np.uint8)
        start = (-raw.ctypes.data) % 64 + offset
        moved = raw[start:start + X.nbytes].view(np.float64).reshape(X.shape)
        moved[...] = X
        sse, gWT, gb = linear_partial(moved, Y, WT, b)
        results.add((sse, gWT.tobytes(), gb.tobytes()))
    assert len(results) == 1


MEMORY_PROBE = r"""
import sys, tracemalloc, numpy as np, gradloop
from gradloop.data import CSVSource, open_npy
kind, folder = sys.argv[1], sys.argv[2]
source = (open_npy(f"{folder}/X.npy", y=f"{folder}/y.npy", block_rows=20_000) if kind == "npy"
          else CSVSource(f"{folder}/d.csv", "y", chunk_rows=20_000))
gradloop.fit_linear(source, None, np.zeros(8), 0.05, 1, bias=0.0, gradient="stream")  # compile, warm up
tracemalloc.start()
run = gradloop.fit_linear(source, None, np.zeros(8), "auto", 3, bias=0.0, gradient="stream")
run.gap
print(tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.parametrize("kind", ["npy", "csv"])
def test_training_from_a_source_holds_a_few_blocks_not_the_data(tmp_path, kind):
    """Peak memory NumPy allocates while training (3 epochs, lr auto, the gap): bounded by the block
    size (20,000 rows, 1.3 MB of X), not the data (400,000 rows, 26 MB), measured in a subprocess."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    X = rng.standard_normal((400_000, 8))
    y = X @ rng.standard_normal(8) + rng.standard_normal(400_000)
    if kind == "npy":
        np.save(tmp_path / "X.npy", X)
        np.save(tmp_path / "y.npy", y)
    else:
        _write_csv(tmp_path / "d.csv", X, y, names=[f"x{j}" for j in range(8)])
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, kind, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    peak, block, data = int(out.stdout.split()[-1]), 20_000 * 9 * 8, X.nbytes + y.nbytes
    assert peak < 6 * block < data / 3, (peak, block, data)
