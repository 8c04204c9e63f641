"""``gradloop train --out-of-core`` and ``--dask``: the same model as in memory, errors in one line."""

import hashlib
import os
import re

import numpy as np
import pandas as pd
import pytest

from gradloop.files.bundle import ModelBundle

N = 4000


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A data set as one CSV and as a folder of four Parquet files (one row group each)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((N, 3)) * [1.0, 10.0, 100.0] + [0.0, 5.0, -50.0]
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame["y"] = X @ [1.0, 0.2, 0.03] + 2.0 + 0.1 * rng.standard_normal(N)
    frame.to_csv(tmp_path / "d.csv", index=False, float_format="%.17g")
    (tmp_path / "pq").mkdir()
    for i in range(4):
        frame.iloc[i * 1000:(i + 1) * 1000].to_parquet(tmp_path / "pq" / f"part{i}.parquet", row_group_size=1000)
    # The same rows with a classifier's labels (text), as CSV and as a folder of Parquet files.
    labels = frame.assign(y=np.where(frame["a"] > 0.5, "high", np.where(frame["a"] < -0.5, "low", "mid")))
    labels.to_csv(tmp_path / "labels.csv", index=False, float_format="%.17g")
    (tmp_path / "labels").mkdir()
    for i in range(4):
        labels.iloc[i * 1000:(i + 1) * 1000].to_parquet(tmp_path / "labels" / f"part{i}.parquet",
                                                        row_group_size=500)
    labels.assign(y=labels["y"].where(labels.index != 2500, "")).to_csv(tmp_path / "holes.csv", index=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _hashes(root):
    return {p: hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in (os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)}


def _coefficients(path):
    return ModelBundle.load(path).linear_coefficients()


@pytest.mark.parametrize("data", ["pq", "pq/*.parquet", "d.csv"])
def test_out_of_core_trains_the_in_memory_model(cli, folder, data):
    common = ["--target", "y", "--standardize", "--epochs", "300", "--test-size", "0"]
    status, out, err = cli("train", "d.csv", *common, "--out", "memory.safetensors", "--quiet")
    assert status == 0, err
    status, out, err = cli("train", data, *common, "--out", "blocks.safetensors", "--out-of-core")
    assert status == 0, err
    assert "out of core" in out and "training rows in" in out
    (W1, b1), (W2, b2) = _coefficients("memory.safetensors"), _coefficients("blocks.safetensors")
    assert np.allclose(W2, W1, rtol=1e-10, atol=0) and np.allclose(b2, b1, rtol=1e-10, atol=0)
    assert "Gap to the least-squares optimum" in out and "R^2 0.99" in out


@pytest.mark.parametrize("options", [["--round-to", "3"], ["--schedule", "step"], ["--schedule", "cosine"]])
def test_rounding_and_schedules_train_the_in_memory_model_block_by_block(cli, folder, options):
    common = ["--target", "y", "--standardize", "--epochs", "60", "--test-size", "0", "--log", "{}.jsonl", *options]
    runs = {}
    for name, data, extra in (("memory", "d.csv", []), ("blocks", "pq", ["--out-of-core"])):
        argv = [a.format(name) for a in common]
        status, out, err = cli("train", data, *argv, *extra, "--out", f"{name}.safetensors", "--quiet")
        assert status == 0, err
        runs[name] = _coefficients(f"{name}.safetensors")
    (W1, b1), (W2, b2) = runs["memory"], runs["blocks"]
    assert np.allclose(W2, W1, rtol=1e-9, atol=0) and np.allclose(b2, b1, rtol=1e-9, atol=0)
    # The same learning rate every epoch (the schedule's; 1/L from the block sums, to the last bits)
    # and the same losses.
    memory, blocks = (pd.read_json(f"{name}.jsonl", lines=True) for name in ("memory", "blocks"))
    blocks, memory = blocks[blocks["epoch"].notna()], memory[memory["epoch"].notna()]
    assert len(memory) == len(blocks) == 60
    assert np.allclose(memory["lr"], blocks["lr"], rtol=1e-13, atol=0)
    assert (memory["lr"].nunique() == 1) == ("--round-to" in options)  # a schedule moves it
    assert np.allclose(memory["loss"], blocks["loss"], rtol=1e-9, atol=0)
    if "--round-to" in options:  # the weights on the chapter's grid of 3 decimals, out of core too
        weights = ModelBundle.load("blocks.safetensors").model.layers[0].params["W"]
        assert np.array_equal(np.round(weights, 3), weights)


def test_a_folder_of_parquet_files_is_read_block_by_block_without_the_option(cli, folder):
    status, out, err = cli("train", "pq", "--target", "y", "--epochs", "5", "--test-size", "0.25")
    assert status == 0, err
    assert "3000 training rows in 3 block(s) (1000 test rows), out of core" in out


def test_mini_batches_from_parquet_blocks_train_a_network(cli, folder):
    status, out, err = cli("train", "pq", "--target", "y", "--standardize", "--model", "mlp", "--hidden", "8",
                           "--batch-size", "50", "--epochs", "10", "--lr", "0.02", "--out-of-core")
    assert status == 0, err
    assert "batches of 50 (blocks in random order)" in out
    metrics = next(line for line in out.splitlines() if line.strip().startswith("training rows"))
    r2 = float(metrics.split("R^2")[1])
    assert r2 > 0.9


@pytest.mark.parametrize("options", [["--gradient", "stream", "--standardize"], ["--gradient", "gram"],
                                     ["--gradient", "gram", "--standardize"]])
def test_dask_local_cluster_gives_the_bits_of_the_out_of_core_run(cli, folder, options):
    """Gram: the local pass sums each row group in Arrow's buffers (scaled a tile at a time), the
    workers sum the (scaled) chunks built from them; the same bits."""
    pytest.importorskip("distributed", reason="Dask is the dask extra")
    common = ["--target", "y", "--epochs", "50", "--test-size", "0", *options]
    assert cli("train", "pq", *common, "--out", "local.safetensors", "--out-of-core")[0] == 0
    status, out, err = cli("train", "pq", *common, "--out", "dask.safetensors", "--dask", "local:2")
    assert status == 0, err
    assert "Dask (2 workers)" in out
    local, dask = ModelBundle.load("local.safetensors"), ModelBundle.load("dask.safetensors")
    for a, b in zip(local.model.parameters(), dask.model.parameters()):
        assert np.array_equal(a, b)
    if "--standardize" in options:
        assert np.array_equal(local.scaler.mean_, dask.scaler.mean_)


CLASSIFIER = ["--target", "y", "--loss", "cross-entropy", "--model", "mlp", "--hidden", "6", "--standardize",
              "--epochs", "20", "--lr", "0.5", "--seed", "3"]


@pytest.mark.parametrize("data", ["labels", "labels.csv"])
def test_a_classifier_of_text_labels_trains_out_of_core_as_in_memory(cli, folder, data):
    status, memory_out, err = cli("train", "labels.csv", *CLASSIFIER, "--test-size", "0", "--out", "memory.json")
    assert status == 0, err
    status, out, err = cli("train", data, *CLASSIFIER, "--test-size", "0", "--out", "blocks.json", "--out-of-core")
    assert status == 0, err
    assert "out of core" in out and "4000 training rows" in out
    memory, blocks = ModelBundle.load("memory.json"), ModelBundle.load("blocks.json")
    assert memory.classes == blocks.classes == ["high", "low", "mid"]  # listed in a first pass, sorted
    assert blocks.model.layers[-1].params["W"].shape == (6, 3)
    for a, b in zip(memory.model.parameters(), blocks.model.parameters()):  # full batch: the same gradient sums
        assert np.allclose(b, a, rtol=1e-9, atol=1e-12)
    metrics = [line for line in out.splitlines() if "accuracy" in line]
    assert metrics == [line for line in memory_out.splitlines() if "accuracy" in line] and len(metrics) == 1
    assert float(metrics[0].split("accuracy")[1].split()[0]) > 0.9


def test_a_validation_block_is_held_out_and_measured_every_epoch(cli, folder):
    status, out, err = cli("train", "pq", "--target", "y", "--standardize", "--model", "mlp", "--hidden", "4",
                           "--epochs", "12", "--lr", "0.05", "--test-size", "0", "--val-split", "0.25",
                           "--log", "run.jsonl", "--out", "m.json", "--out-of-core")
    assert status == 0, err
    assert "3000 training rows in 3 block(s) (0 test rows; 1000 rows in 1 block(s) for validation)" in out
    log = pd.read_json("run.jsonl", lines=True)
    val_loss = log[log["epoch"].notna()]["val_loss"]
    assert len(val_loss) == 12 and val_loss.notna().all() and val_loss.iloc[-1] < val_loss.iloc[0]
    # The validation rows' MSE of the saved model is the last epoch's val_loss: the same held-out block.
    line = next(line for line in out.splitlines() if line.strip().startswith("validation rows"))
    assert float(line.split("MSE")[1].split()[0]) == pytest.approx(val_loss.iloc[-1], rel=1e-5)
    training = next(line for line in out.splitlines() if line.strip().startswith("training rows"))
    assert line.split("MSE")[1] != training.split("MSE")[1]


def test_lr_find_of_the_linear_model_is_the_in_memory_sweeps_exact_answer(cli, folder):
    common = ["--target", "y", "--standardize", "--epochs", "5", "--test-size", "0", "--lr", "find"]
    status, memory_out, err = cli("train", "d.csv", *common, "--out", "memory.json")
    assert status == 0, err
    status, out, err = cli("train", "pq", *common, "--out", "blocks.json", "--out-of-core")
    assert status == 0, err
    assert "lr_find: exact for the linear model with MSE: 1/L" in out and "(from the block sums)" in out
    memory, blocks = ModelBundle.load("memory.json"), ModelBundle.load("blocks.json")
    assert blocks.info["lr"] == pytest.approx(memory.info["lr"], rel=1e-12)


def test_lr_find_on_a_source_sweeps_a_sample_and_leaves_no_trace(cli, folder):
    common = [*CLASSIFIER[:-4], "--epochs", "3", "--batch-size", "100", "--seed", "3", "--out-of-core"]
    status, out, err = cli("train", "labels", *common, "--lr", "find", "--out", "found.json")
    assert status == 0, err
    assert "lr_find: sweeping on 3000 training rows (100000 at most, whole blocks drawn by --seed)" in out
    assert re.search(r"lr_find: \d+ steps from 1e-07 to [0-9.e+-]+; suggestion", out)
    lr = ModelBundle.load("found.json").info["lr"]
    assert 1e-7 <= lr <= 10
    # Training after the sweep is training with its suggestion given: the sweep changed nothing else.
    status, out, err = cli("train", "labels", *common, "--lr", repr(lr), "--out", "given.json")
    assert status == 0, err
    found, given = ModelBundle.load("found.json"), ModelBundle.load("given.json")
    for a, b in zip(found.model.parameters(), given.model.parameters()):
        assert np.array_equal(a, b)


def test_csv_on_dask_reads_the_out_of_core_chunks_and_gives_their_bits(cli, folder, monkeypatch):
    pytest.importorskip("distributed", reason="Dask is the dask extra")
    monkeypatch.setattr("gradloop.data.files.CSV_CHUNK_ROWS", 700)  # 6 chunks, the last one short
    common = [*CLASSIFIER, "--test-size", "0.3", "--epochs", "5", "--val-split", "0.25"]
    status, local_out, err = cli("train", "labels.csv", *common, "--out", "local.json", "--out-of-core")
    assert status == 0, err
    status, out, err = cli("train", "labels.csv", *common, "--out", "dask.json", "--dask", "local:2")
    assert status == 0, err
    assert "Dask (2 workers)" in out and "in 3 block(s) (1200 test rows; 700 rows in 1 block(s) for validation)" in out
    local, dask = ModelBundle.load("local.json"), ModelBundle.load("dask.json")
    assert local.classes == dask.classes
    for a, b in zip(local.model.parameters(), dask.model.parameters()):
        assert np.array_equal(a, b)
    lines = [line for line in out.splitlines() if "accuracy" in line]  # training, validation and test rows
    assert lines == [line for line in local_out.splitlines() if "accuracy" in line] and len(lines) == 3


def test_a_classifier_evaluates_block_by_block_as_in_memory(cli, folder):
    import json

    assert cli("train", "labels.csv", *CLASSIFIER, "--out", "m.json", "--quiet")[0] == 0
    memory = json.loads(cli("evaluate", "m.json", "labels.csv", "--json")[1])
    blocks = json.loads(cli("evaluate", "m.json", "labels", "--json")[1])
    assert blocks.keys() == memory.keys() and blocks["confusion_matrix"] == memory["confusion_matrix"]
    assert sum(map(sum, blocks["confusion_matrix"])) == N
    for key in memory.keys() - {"confusion_matrix"}:
        assert np.isclose(blocks[key], memory[key], rtol=1e-12), key
    status, out, err = cli("evaluate", "m.json", "labels", "--out-of-core")
    assert status == 0 and "confusion matrix (rows: true class, columns: predicted), classes high, low, mid" in out
    for proba in ([], ["--proba"]):  # predictions written block by block: the labels, and their probabilities
        assert cli("predict", "m.json", "labels.csv", *proba, "--out", "memory.csv")[0] == 0
        assert cli("predict", "m.json", "labels", *proba, "--out", "blocks.csv")[0] == 0
        memory, blocks = pd.read_csv("memory.csv"), pd.read_csv("blocks.csv")
        assert list(blocks.columns) == list(memory.columns) == (["p_high", "p_low", "p_mid"] if proba else ["y"])
        if proba:
            assert np.allclose(blocks, memory, rtol=1e-12, atol=1e-15)
        else:
            assert blocks["y"].tolist() == memory["y"].tolist() and set(blocks["y"]) == {"high", "low", "mid"}
    frame = pd.read_parquet(folder / "labels" / "part2.parquet")
    frame.loc[frame.index[600], "y"] = "unheard"
    frame.to_parquet(folder / "labels" / "part2.parquet", row_group_size=500)
    status, out, err = cli("evaluate", "m.json", "labels", "--out-of-core")
    assert status == 2 and err.count("\n") == 1
    assert "column 'y' (rows 2500 to 2999): label(s) 'unheard' not among the model's classes" in err


@pytest.mark.parametrize("argv, message", [
    (["pq", "--target", "y", "--val-split", "0.1"], "--val-split 0.1 holds out whole blocks: of 3 block(s) it "
                                                     "leaves none for validation"),
    (["labels.csv", "--target", "y", "--loss", "bce", "--out-of-core"], "--loss bce needs exactly 2 classes in "
                                                                        "'y', found 3"),
    (["holes.csv", "--target", "y", "--loss", "cross-entropy", "--out-of-core"], "holes.csv: line 2502, column "
                                                                                 "'y': missing label"),
    (["d.csv", "--target", "y", "--dask", "lokal"], "--dask 'lokal': expected local, local:WORKERS or tcp://"),
    (["d.csv", "--target", "y", "--dask", "local:0"], "--dask local:0: the number of workers must be a positive"),
    (["pq", "--target", "z", "--out-of-core"], "no target column 'z'"),
    (["nothing/*.parquet", "--target", "y"], "names no Parquet files"),
    (["d.csv", "--target", "y", "--out-of-core", "--out", "d.csv"], "--out d.csv: is the DATA file itself"),
])
def test_bad_block_by_block_commands_are_one_line_and_write_nothing(cli, folder, argv, message):
    before = _hashes(folder)
    status, out, err = cli("train", *argv, "--out", "m.safetensors") if "--out" not in argv else cli("train", *argv)
    assert status == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert _hashes(folder) == before


def test_a_bad_value_in_the_last_parquet_file_names_file_row_and_column(cli, folder):
    frame = pd.read_parquet(folder / "pq" / "part3.parquet")
    frame.loc[frame.index[700], "b"] = np.inf
    frame.to_parquet(folder / "pq" / "part3.parquet", row_group_size=250)
    before = _hashes(folder)
    status, out, err = cli("train", "pq", "--target", "y", "--test-size", "0", "--out", "m.safetensors")
    assert status == 2
    assert "part3.parquet: row 700, column 'b': infinite value" in err and err.count("\n") == 1
    assert _hashes(folder) == before


def test_an_out_of_core_run_resumes_from_its_checkpoint_bit_for_bit(cli, folder):
    common = ["--target", "y", "--standardize", "--model", "mlp", "--hidden", "6", "--batch-size", "100",
              "--lr", "0.01", "--test-size", "0", "--out-of-core"]
    assert cli("train", "pq", *common, "--epochs", "6", "--out", "whole.safetensors")[0] == 0
    assert cli("train", "pq", *common, "--epochs", "2", "--checkpoint", "ck", "--log", "run.jsonl")[0] == 0
    status, out, err = cli("train", "--resume", "ck", "--epochs", "6", "--out", "resumed.safetensors")
    assert status == 0, err
    assert "resuming at epoch 2" in out and "out of core" in out
    whole, resumed = ModelBundle.load("whole.safetensors"), ModelBundle.load("resumed.safetensors")
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert np.array_equal(a, b)
    epochs = [line for line in open("run.jsonl") if '"epoch"' in line and '"final"' not in line]
    assert len(epochs) == 6


def test_ctrl_c_inside_an_epoch_stops_at_the_block_end_and_resumes_there_bit_for_bit(cli, folder, monkeypatch):
    import json
    import signal

    import gradloop.cli.train as train_module
    from gradloop.callbacks import Callback

    common = ["--target", "y", "--standardize", "--model", "mlp", "--hidden", "6", "--batch-size", "100",
              "--lr", "0.01", "--test-size", "0", "--out-of-core", "--epochs", "3"]
    assert cli("train", "pq", *common, "--log", "whole.jsonl", "--out", "whole.json")[0] == 0
    real, sent = train_module.run_callbacks, []

    class CtrlCInEpochTwo(Callback):  # at the end of epoch 2's second block, before the checkpoint sees it
        wants_records, wants_blocks = False, True

        def on_block_end(self, position, trainer):
            if position["epoch"] == 2 and position["blocks"] == 2 and not sent:
                sent.append(os.kill(os.getpid(), signal.SIGINT))

    monkeypatch.setattr(train_module, "run_callbacks", lambda *a: [CtrlCInEpochTwo(), *real(*a)])
    status, out, err = cli("train", "pq", *common, "--checkpoint", "ck", "--log", "run.jsonl")
    assert status == 130 and sent
    assert "interrupted by SIGINT; the run up to block 2 of epoch 2 is checkpointed in ck" in err
    monkeypatch.setattr(train_module, "run_callbacks", real)  # (undo() would also undo the chdir)
    status, out, err = cli("train", "--resume", "ck", "--out", "resumed.json")
    assert status == 0, err
    whole, resumed = ModelBundle.load("whole.json"), ModelBundle.load("resumed.json")
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert np.array_equal(a, b)
    # The log goes on as the whole run's: every epoch's loss and heads, epoch 2's too.
    def epochs(path):
        lines = [json.loads(line) for line in open(path)]
        return [{k: v for k, v in line.items() if k not in ("seconds", "time")} for line in lines
                if "epoch" in line and not line.get("final")]

    assert epochs("run.jsonl") == epochs("whole.jsonl") and len(epochs("run.jsonl")) == 3


def test_resuming_on_other_data_of_the_same_layout_is_refused(cli, folder):
    common = ["--target", "y", "--test-size", "0", "--out-of-core", "--gradient", "stream"]
    assert cli("train", "pq", *common, "--epochs", "2", "--checkpoint", "ck")[0] == 0
    frame = pd.read_parquet(folder / "pq" / "part3.parquet")
    frame.loc[frame.index[-1], "a"] += 1.0  # the last block is sampled by the fingerprint
    frame.to_parquet(folder / "pq" / "part3.parquet", row_group_size=1000)
    status, out, err = cli("train", "--resume", "ck", "--epochs", "4")
    assert status == 2 and "is not the data the checkpoint was trained on" in err


def test_predict_and_evaluate_stream_and_agree_with_the_in_memory_commands(cli, folder):
    import json

    assert cli("train", "d.csv", "--target", "y", "--standardize", "--epochs", "200", "--out", "m.safetensors",
               "--quiet")[0] == 0
    assert cli("predict", "m.safetensors", "d.csv", "--out", "memory.csv")[0] == 0
    status, out, err = cli("predict", "m.safetensors", "pq", "--out", "blocks.csv")  # a folder: block by block
    assert status == 0, err
    # Blocks of 1,000 rows: the BLAS may sum a product of another size in another order (last bits).
    blocks, memory = pd.read_csv("blocks.csv"), pd.read_csv("memory.csv")
    assert list(blocks.columns) == ["y"] and np.allclose(blocks["y"], memory["y"], rtol=1e-12, atol=1e-12)
    pd.read_csv("d.csv").drop(columns="y")[["c", "a", "b"]].to_csv("features.csv", index=False)
    status, out, err = cli("predict", "m.safetensors", "features.csv", "--out-of-core")  # no target, any order
    assert status == 0, err
    assert out == (folder / "memory.csv").read_text()  # one chunk of the same rows: the same bytes
    memory = json.loads(cli("evaluate", "m.safetensors", "d.csv", "--json")[1])
    blocks = json.loads(cli("evaluate", "m.safetensors", "pq", "--json")[1])
    assert blocks.keys() == memory.keys()
    for key in memory:
        assert np.isclose(blocks[key], memory[key], rtol=1e-12), key


def test_a_bad_value_in_the_last_block_leaves_no_prediction_file(cli, folder):
    assert cli("train", "pq", "--target", "y", "--epochs", "5", "--out", "m.safetensors", "--quiet")[0] == 0
    frame = pd.read_parquet(folder / "pq" / "part3.parquet")
    frame.loc[frame.index[999], "c"] = np.nan
    frame.to_parquet(folder / "pq" / "part3.parquet", row_group_size=1000)
    before = _hashes(folder)
    status, out, err = cli("predict", "m.safetensors", "pq", "--out", "p.csv")
    assert status == 2 and "part3.parquet: row 999, column 'c': missing value" in err and err.count("\n") == 1
    assert _hashes(folder) == before
    status, out, err = cli("predict", "m.safetensors", "pq", "--out", "pq/part0.parquet")
    assert status == 2 and "is the DATA file itself" in err

