"""``gradloop train`` is one pipeline: the same command gives the same kind of run, report and model
file whether its data is read whole, block by block or on Dask (:mod:`gradloop.cli.train`)."""

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
from safetensors import safe_open

from gradloop.files.bundle import ModelBundle
from gradloop.files.runlog import read_log

N = 1000


@pytest.fixture
def files(tmp_path, monkeypatch):
    """One CSV of N rows (a single block out of core) and the same rows as 4 Parquet row groups."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((N, 3))
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["y"] = X @ [1.0, -2.0, 0.5] + 1.0 + 0.1 * rng.standard_normal(N)
    frame.to_csv(tmp_path / "d.csv", index=False, float_format="%.17g")
    frame.to_parquet(tmp_path / "d.parquet", row_group_size=N // 4)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _metadata(path):
    with safe_open(str(path), "np") as f:
        return json.loads(f.metadata()["gradloop"]) if "gradloop" in f.metadata() else f.metadata()


def test_the_model_file_records_the_same_fields_in_memory_and_out_of_core(cli, files):
    common = ["--target", "y", "--batch-size", "50", "--lr", "0.01", "--epochs", "3"]
    assert cli("train", "d.csv", *common, "--out", "memory.safetensors")[0] == 0
    assert cli("train", "d.parquet", *common, "--out-of-core", "--out", "blocks.safetensors")[0] == 0
    memory, blocks = ModelBundle.load("memory.safetensors"), ModelBundle.load("blocks.safetensors")
    assert blocks.info["batch_size"] == memory.info["batch_size"] == 50  # out of core recorded None
    assert set(blocks.info) == set(memory.info)
    assert set(_metadata("blocks.safetensors")) == set(_metadata("memory.safetensors"))


def test_the_default_test_size_holds_out_rows_of_a_single_block_as_in_memory(cli, files):
    # d.csv is one block out of core: the default --test-size 0.2 held out no row there, silently.
    status, memory, err = cli("train", "d.csv", "--target", "y", "--epochs", "50")
    assert status == 0, err
    status, blocks, err = cli("train", "d.csv", "--target", "y", "--epochs", "50", "--out-of-core")
    assert status == 0, err
    assert f"{N - N // 5} training rows (200 test" in memory
    assert f"{N - N // 5} training rows in 1 block(s) (200 test rows), out of core" in blocks
    test_line = [line for line in memory.splitlines() if "test rows" in line and "MSE" in line]
    assert test_line and test_line == [line for line in blocks.splitlines() if "test rows" in line and "MSE" in line]


def test_a_test_size_that_rounds_to_no_block_still_holds_one_out(cli, files):
    # 4 blocks at 0.1: round(0.4) is 0 blocks; one is held out, and the line counts its rows.
    status, out, err = cli("train", "d.parquet", "--target", "y", "--epochs", "5", "--out-of-core",
                           "--test-size", "0.1")
    assert status == 0, err
    assert f"{N - N // 4} training rows in 3 block(s) ({N // 4} test rows), out of core" in out
    assert any(line.strip().startswith("test rows") for line in out.splitlines())


def test_the_log_ends_with_the_same_final_line_out_of_core(cli, files):
    common = ["--target", "y", "--epochs", "20", "--test-size", "0.25", "--gradient", "stream"]
    assert cli("train", "d.parquet", *common, "--log", "memory.jsonl")[0] == 0
    assert cli("train", "d.parquet", *common, "--out-of-core", "--log", "blocks.jsonl")[0] == 0
    (_, memory), (_, blocks) = read_log("memory.jsonl"), read_log("blocks.jsonl")
    assert blocks is not None and set(blocks) == set(memory)
    assert blocks["rows"] == N // 4 and blocks["split"] == "test" and len(blocks["y_true"]) == N // 4


def test_explain_out_of_core_is_refused_in_one_line_and_writes_nothing(cli, files):
    before = {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in os.listdir(".")}
    status, out, err = cli("train", "d.parquet", "--target", "y", "--out-of-core", "--explain", "1",
                           "--out", "m.safetensors", "--log", "run.jsonl")
    assert status == 2 and err.count("\n") == 1
    assert "--explain writes out an epoch's step from the training rows in memory" in err
    assert {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in os.listdir(".")} == before


def test_diagnostics_run_out_of_core_too(cli, files):
    # Features whose sizes differ 1000-fold: the in-memory run's finding, now also block by block.
    frame = pd.read_csv("d.csv")
    frame["c"] *= 1000.0
    frame.to_parquet("wide.parquet", row_group_size=N // 4)
    frame.to_csv("wide.csv", index=False, float_format="%.17g")
    common = ["--target", "y", "--epochs", "5", "--test-size", "0"]
    memory = cli("train", "wide.csv", *common)[1]
    blocks = cli("train", "wide.parquet", *common, "--out-of-core")[1]
    assert "feature scales" in memory and "feature scales" in blocks


@pytest.mark.parametrize("data,rows", [("d.csv", "800 training rows in 1 block(s) (200 test rows)"),
                                       ("two.parquet", "500 training rows in 1 block(s) (500 test rows)")])
def test_dask_holds_out_the_test_rows_as_out_of_core_and_gives_its_bits(cli, files, data, rows):
    # One block split row by row, and two blocks of which the test set takes one: both also on Dask.
    pd.read_csv("d.csv").to_parquet("two.parquet", row_group_size=N // 2)
    common = ["--target", "y", "--epochs", "5", "--gradient", "stream"]
    status, blocks, err = cli("train", data, *common, "--out-of-core", "--out", "blocks.safetensors")
    assert status == 0, err
    status, dask, err = cli("train", data, *common, "--dask", "local:1", "--out", "dask.safetensors")
    assert status == 0, err
    assert rows in blocks and rows in dask
    for a, b in zip(ModelBundle.load("blocks.safetensors").model.parameters(),
                    ModelBundle.load("dask.safetensors").model.parameters()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("row", [3, 2])  # with --seed 0 row 2 is held out for testing, row 3 trained on
def test_a_non_finite_value_out_of_core_is_named_before_anything_is_written(cli, files, row):
    X = pd.read_csv("d.csv").to_numpy()
    X[row, 1] = np.nan
    np.save("bad.npy", X)
    assert cli("train", "d.csv", "--target", "y", "--epochs", "3", "--checkpoint", "ck", "--log", "run.jsonl",
               "--out", "m.safetensors")[0] == 0
    before = {p: hashlib.sha256(open(p, "rb").read()).hexdigest()
              for p in ("ck/checkpoint.safetensors", "run.jsonl", "m.safetensors")}
    # The default learning rate (1/L) reads the Gram sums first: they were NaN, then LinAlgError.
    status, out, err = cli("train", "bad.npy", "--target", "3", "--epochs", "3", "--out-of-core", "--checkpoint", "ck",
                           "--log", "run.jsonl", "--out", "m.safetensors")
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"bad.npy: row {row}, column '1' (X): non-finite value nan" in err
    assert {p: hashlib.sha256(open(p, "rb").read()).hexdigest() for p in before} == before


def test_a_subset_names_a_bad_value_by_its_row_in_the_data():
    from gradloop.data import ArraySource
    from gradloop.errors import DataError
    from gradloop.sums import SourceSums

    X, Y = np.ones((40, 2)), np.ones(40)
    X[27, 1] = np.inf
    source = ArraySource(X, Y, block_rows=10)
    with pytest.raises(DataError, match=r"row 27, column '1' \(X\): non-finite value inf"):
        source.subset([2, 0]).find_bad_value()
    with pytest.raises(DataError, match=r"row 27, column '1' \(X\): non-finite value inf"):
        SourceSums(source.subset([0, 2])).lipschitz()


def test_a_bad_value_in_a_held_out_block_is_named_before_anything_is_written(cli, files):
    frame = pd.read_csv("d.csv")
    common = ["--target", "y", "--epochs", "3", "--out-of-core", "--log", "run.jsonl", "--seed", "12"]
    assert cli("train", "d.parquet", *common)[0] == 0
    before = hashlib.sha256(open("run.jsonl", "rb").read()).hexdigest()
    # --seed 12 holds out block 1 of four, which the fingerprint (blocks 0, 2 and 3) does not read.
    assert int(np.random.default_rng(12).permutation(4)[0]) == 1
    frame.loc[N // 4 + 7, "a"] = np.nan
    frame.to_parquet("d.parquet", row_group_size=N // 4)
    status, out, err = cli("train", "d.parquet", *common)
    assert status == 2 and err.count("\n") == 1 and "column 'a'" in err and "Trained" not in out
    assert hashlib.sha256(open("run.jsonl", "rb").read()).hexdigest() == before


def test_a_float32_npy_is_read_out_of_core_as_in_memory_and_by_predict_and_evaluate(cli, files):
    # It was refused with "give --dtype float32", an option predict and evaluate do not have.
    np.save("f32.npy", pd.read_csv("d.csv").to_numpy(np.float32))
    common = ["--target", "3", "--epochs", "30", "--test-size", "0"]
    assert cli("train", "f32.npy", *common, "--out", "memory.safetensors")[0] == 0
    status, out, err = cli("train", "f32.npy", *common, "--out-of-core", "--out", "blocks.safetensors")
    assert status == 0, err
    memory, blocks = ModelBundle.load("memory.safetensors"), ModelBundle.load("blocks.safetensors")
    assert memory.model.dtype == blocks.model.dtype == np.float64
    for a, b in zip(memory.model.parameters(), blocks.model.parameters()):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    for command in (["evaluate", "blocks.safetensors", "f32.npy", "--json"], ["predict", "blocks.safetensors",
                                                                              "f32.npy", "--out", "p.csv"]):
        status, out, err = cli(*command, "--out-of-core")
        assert status == 0, err
    predicted = pd.read_csv("p.csv").to_numpy()[:, 0]
    np.testing.assert_allclose(predicted, blocks.predict(pd.read_csv("d.csv")[["a", "b", "c"]].to_numpy(np.float32)
                                                         .astype(np.float64)), rtol=1e-12)
