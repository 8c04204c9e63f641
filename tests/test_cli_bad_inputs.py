"""The command line's bad inputs: one line, exit status 2, nothing written; and divergence named with its epoch and stable learning rate."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from gradloop.files.bundle import ModelBundle
from gradloop.cli import main

# The chapter's per-epoch report, in the chapter's order.
from test_cli import assert_one_line_error, parse_line, run, snapshot


# ---------------------------------------------------------------- 4. bad inputs
@pytest.fixture(scope="module")
def workspace_template(tmp_path_factory):
    """A folder of good and bad data and model files, built once and copied for each test."""
    root = tmp_path_factory.mktemp("template")
    files = {
        "ok.csv": "a,b,y\n1,2,3\n2,1,4\n3,5,1\n4,4,2\n5,0,9\n6,3,2\n",
        "empty.csv": "",
        "header.csv": "a,b,y\n",
        "text.csv": "a,b,y\n1,2,3\n2,1,4\n3,x,1\n",
        "nan.csv": "a,b,y\n1,2,3\nnan,1,4\n",
        "inf.csv": "a,b,y\n1,2,3\n2,1,4\n3,5,1\n4,4,inf\n",
        "ragged.csv": "a,b,y\n1,2,3\n2,1,4\n3,5,1,7\n",
        "labels.csv": "a,b,y\n" + "".join(f"{i},{i % 3},{('cat', 'dog', 'eel')[i % 3]}\n" for i in range(12)),
        "unseen.csv": "a,b,y\n1,1,dog\n2,2,fox\n",
        "missing_b.csv": "a,y\n1,2\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "garbage.csv").write_bytes(bytes(range(256)) * 4)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(root / "ok.csv"), "--target", "y", "--test-size", "0", "--standardize",
                     "--out", str(root / "model.safetensors")]) == 0
        assert main(["train", str(root / "labels.csv"), "--target", "y", "--test-size", "0", "--model", "mlp",
                     "--hidden", "4", "--loss", "cross-entropy", "--lr", "0.1", "--epochs", "5",
                     "--out", str(root / "clf.safetensors")]) == 0
    good = (root / "model.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    header = bytearray(good)
    header[20:30] = b"\xff" * 10  # inside the JSON header
    (root / "corrupt_header.safetensors").write_bytes(bytes(header))
    data = bytearray(good)
    data[-1] ^= 0x01  # one bit of one weight
    (root / "corrupt_weights.safetensors").write_bytes(bytes(data))
    (root / "text.safetensors").write_text("this is not a model\n")
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3)}, str(root / "foreign.safetensors"))
    return root


@pytest.fixture
def workspace(workspace_template, tmp_path, monkeypatch):
    folder = tmp_path / "ws"
    shutil.copytree(workspace_template, folder)
    monkeypatch.chdir(folder)
    return folder


TRAIN = ["train", "ok.csv", "--target", "y"]
# (id, argv, what the one stderr line must name). Train runs get --out new.safetensors --log run.jsonl,
# predict runs --out pred.csv: none of them may appear, and no existing file may change.
BAD_INPUTS = [
    ("missing file", ["train", "nofile.csv", "--target", "y"], ["nofile.csv", "no such file"]),
    ("empty file", ["train", "empty.csv", "--target", "y"], ["empty.csv", "empty"]),
    ("header only", ["train", "header.csv", "--target", "y"], ["header.csv", "no data rows"]),
    ("unknown target", ["train", "ok.csv", "--target", "z"], ["ok.csv", "no target column 'z'", "'a', 'b', 'y'"]),
    ("unknown feature", TRAIN + ["--features", "a,q"], ["ok.csv", "no feature column 'q'", "'a', 'b', 'y'"]),
    ("non-numeric", ["train", "text.csv", "--target", "y"], ["text.csv", "line 4", "column 'b'", "'x'"]),
    ("NaN", ["train", "nan.csv", "--target", "y"], ["nan.csv", "line 3", "column 'a'", "missing value"]),
    ("infinity", ["train", "inf.csv", "--target", "y"], ["inf.csv", "line 5", "column 'y'", "infinite"]),
    ("ragged rows", ["train", "ragged.csv", "--target", "y"], ["ragged.csv", "line 4", "4 fields", "header has 3"]),
    ("binary garbage", ["train", "garbage.csv", "--target", "y"], ["garbage.csv", "binary", "not UTF-8"]),
    ("lr 0", TRAIN + ["--lr", "0"], ["--lr", "'0'", "positive"]),
    ("lr -1", TRAIN + ["--lr", "-1"], ["--lr", "'-1'", "positive"]),
    ("lr nan", TRAIN + ["--lr", "nan"], ["--lr", "'nan'", "finite"]),
    ("lr abc", TRAIN + ["--lr", "abc"], ["--lr", "'abc'", "number"]),
    ("epochs -1", TRAIN + ["--epochs", "-1"], ["--epochs", "'-1'", "non-negative integer"]),
    ("epochs 2.5", TRAIN + ["--epochs", "2.5"], ["--epochs", "'2.5'", "integer"]),
    ("epochs abc", TRAIN + ["--epochs", "abc"], ["--epochs", "'abc'", "integer"]),
    ("out in a missing folder", TRAIN + ["--out", "nodir/m.safetensors"], ["--out", "nodir", "does not exist"]),
    ("log in a missing folder", TRAIN + ["--log", "nodir/run.jsonl"], ["--log", "nodir", "does not exist"]),
    ("out is a folder", TRAIN + ["--out", "."], ["--out", "folder"]),
    ("unknown activation", TRAIN + ["--model", "mlp", "--activation", "swish"],
     ["--activation", "'swish'", "relu, leaky-relu, tanh, sigmoid"]),
    ("unknown loss", TRAIN + ["--loss", "hinge"], ["--loss", "'hinge'", "mse, mae, huber, bce, cross-entropy"]),
    ("unknown optimizer", TRAIN + ["--optimizer", "lbfgs"],
     ["--optimizer", "'lbfgs'", "sgd, momentum, nesterov, adam, adamw"]),
    ("unknown schedule", TRAIN + ["--schedule", "linear"], ["--schedule", "'linear'", "step, exponential, cosine"]),
    ("unknown model", TRAIN + ["--model", "cnn"], ["--model", "'cnn'", "linear", "mlp"]),
    ("hidden 0", TRAIN + ["--model", "mlp", "--hidden", "0"], ["--hidden", "'0'"]),
    ("hidden a,b", TRAIN + ["--model", "mlp", "--hidden", "a,b"], ["--hidden", "'a,b'"]),
    ("batch size 0", TRAIN + ["--batch-size", "0"], ["--batch-size", "'0'"]),
    ("test size 1", TRAIN + ["--test-size", "1"], ["--test-size", "[0, 1)"]),
    ("clip norm 0", TRAIN + ["--clip-norm", "0"], ["--clip-norm"]),
    ("negative weight decay", TRAIN + ["--weight-decay", "-1"], ["--weight-decay"]),
    ("lr auto for an mlp", TRAIN + ["--model", "mlp", "--lr", "auto"], ["--lr auto", "linear"]),
    ("no target option", ["train", "ok.csv"], ["--target", "required"]),
    ("unknown command", ["fit", "ok.csv"], ["'fit'", "train", "demo"]),
    ("regression loss on labels", ["train", "labels.csv", "--target", "y", "--loss", "mse"],
     ["labels.csv", "line 2", "column 'y'", "'cat'", "--loss cross-entropy"]),
    ("bce with 3 classes", ["train", "labels.csv", "--target", "y", "--loss", "bce", "--lr", "0.1"],
     ["--loss bce", "2 classes", "'y'", "found 3", "cross-entropy"]),
    ("float32 overflow", ["train", "ok.csv", "--target", "y", "--dtype", "float32"], []),  # replaced below
    ("huge values for 1/L", ["train", "huge.csv", "--target", "y"], ["huge.csv", "too large", "--standardize"]),
    ("evaluate: unseen label", ["evaluate", "clf.safetensors", "unseen.csv"], ["unseen.csv", "column 'y'", "'fox'"]),
    ("evaluate: missing feature", ["evaluate", "model.safetensors", "missing_b.csv"], ["missing_b.csv", "'b'"]),
    ("predict: missing feature", ["predict", "model.safetensors", "missing_b.csv"],
     ["missing_b.csv", "'b'", "columns are 'a', 'y'"]),
    ("predict: proba of a regression model", ["predict", "model.safetensors", "ok.csv", "--proba"],
     ["--proba", "classifier"]),
    ("predict: out in a missing folder", ["predict", "model.safetensors", "ok.csv", "--out", "nodir/p.csv"],
     ["--out", "nodir"]),
]
MODEL_FILES = [
    ("text.safetensors", ["text.safetensors", "not a safetensors file"]),
    ("foreign.safetensors", ["foreign.safetensors", "not a gradloop model"]),
    ("truncated.safetensors", ["truncated.safetensors", "truncated"]),
    ("corrupt_header.safetensors", ["corrupt_header.safetensors", "corrupted"]),
    ("corrupt_weights.safetensors", ["corrupt_weights.safetensors", "corrupted", "checksum"]),
    ("nomodel.safetensors", ["nomodel.safetensors", "does not exist"]),
    (".", ["is a directory"]),
]
for command in ("evaluate", "predict"):
    for model_file, names in MODEL_FILES:
        BAD_INPUTS.append((f"{command}: model {model_file}", [command, model_file, "ok.csv"], names))


def _bad_cases():
    for name, argv, needles in BAD_INPUTS:
        if name == "float32 overflow":
            argv = ["train", "big.csv", "--target", "y", "--dtype", "float32"]
            needles = ["--dtype float32", "big.csv", "too large", "float64"]
        yield pytest.param(argv, needles, id=name)


@pytest.mark.parametrize("argv, needles", list(_bad_cases()))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(workspace, capsys, argv, needles):
    (workspace / "big.csv").write_text("a,b,y\n1e300,1,2\n3,4,5\n")
    (workspace / "huge.csv").write_text("a,b,y\n1e300,1,2\n3,4,5\n")
    argv = list(argv)
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", "new.safetensors"]
    if argv[0] == "train" and "--log" not in argv:
        argv += ["--log", "run.jsonl"]
    if argv[0] == "predict" and "--out" not in argv:
        argv += ["--out", "pred.csv"]
    before = snapshot(workspace)
    status, out, err = run(capsys, *argv)
    assert status == 2, (out, err)
    assert_one_line_error(err, *needles)
    assert err.startswith("gradloop: error: ")
    for name in ("new.safetensors", "run.jsonl", "pred.csv"):
        assert not (workspace / name).exists()
    assert snapshot(workspace) == before  # nothing written, nothing changed, no temporary file left


@pytest.mark.parametrize("argv, expected_status", [
    pytest.param(["train", "text.csv", "--target", "y"], 2, id="bad data"),
    pytest.param(["train", "labels.csv", "--target", "y", "--loss", "bce"], 2, id="bce with 3 classes"),
    pytest.param(["train", "ok.csv", "--target", "y", "--optimizer", "lbfgs"], 2, id="unknown optimizer"),
    pytest.param(["train", "ok.csv", "--target", "y", "--lr", "5", "--test-size", "0"], 3, id="divergence"),
])
def test_a_failed_train_keeps_the_existing_model_file(workspace, capsys, argv, expected_status):
    old = (workspace / "model.safetensors").read_bytes()
    status, _, err = run(capsys, *argv, "--out", "model.safetensors")
    assert status == expected_status
    assert_one_line_error(err)
    assert (workspace / "model.safetensors").read_bytes() == old
    assert [p.name for p in workspace.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    # ... and the old model still works.
    status, out, _ = run(capsys, "evaluate", "model.safetensors", "ok.csv", "--json")
    assert status == 0 and "r2" in json.loads(out)


# ---------------------------------------------------------------- 5. divergence
def test_divergence_names_the_epoch_and_the_stable_learning_rate(tmp_path, capsys):
    rng = np.random.default_rng(3)
    n = 50
    a, b = rng.uniform(100, 200, n), rng.uniform(0, 5000, n)
    frame = pd.DataFrame({"a": a, "b": b, "y": 3 * a - 2 * b + 1})
    data, model, log = tmp_path / "raw.csv", tmp_path / "m.safetensors", tmp_path / "run.jsonl"
    frame.to_csv(data, index=False)
    A = np.column_stack([a, b, np.ones(n)])
    stable = n / np.linalg.eigvalsh(A.T @ A).max()  # 2/L for the mean squared error

    status, out, err = run(capsys, "train", data, "--target", "y", "--lr", "1", "--test-size", "0",
                           "--out", model)
    assert status == 3
    assert_one_line_error(err, "diverged at epoch 1", "learning rate 1", "largest stable learning rate",
                          "--standardize", f"not saved to {model}")
    assert "error:" not in err
    assert float(parse_line(r"largest stable learning rate for this problem is (\S+?);", err)[1]) == \
        pytest.approx(stable, rel=1e-5)
    assert not model.exists()

    # The printed rate is the real boundary: 1.5x above it diverges (epoch > 1), 0.9x below converges.
    status, _, err = run(capsys, "train", data, "--target", "y", "--lr", f"{1.5 * stable:.17g}", "--test-size", "0",
                         "--epochs", "500", "--out", model, "--log", log)
    assert status == 3
    epoch = int(parse_line(r"diverged at epoch (\d+)", err)[1])
    assert epoch > 1
    assert not model.exists()
    assert len(log.read_text().splitlines()) == epoch - 1  # the record up to the divergence
    assert f"{log} holds epochs 1 to {epoch - 1}" in err
    status, _, err = run(capsys, "train", data, "--target", "y", "--lr", f"{0.9 * stable:.17g}", "--test-size", "0",
                         "--epochs", "500", "--out", model)
    assert status == 0 and err == "" and model.exists()


def test_non_finite_starting_loss_touches_no_file(tmp_path, capsys):
    """Diverged before epoch 1: exit 3, and neither --out nor an existing --log is touched."""
    data, log, model = tmp_path / "d.csv", tmp_path / "run.jsonl", tmp_path / "m.safetensors"
    data.write_text("a,b,y\n1,1,1e308\n2,3,-1e308\n")
    log.write_text("the previous run\n")
    status, _, err = run(capsys, "train", data, "--target", "y", "--test-size", "0", "--log", log, "--out", model)
    assert status == 3
    assert_one_line_error(err, "starting weights", "inf")
    assert log.read_text() == "the previous run\n" and not model.exists()


@pytest.mark.parametrize("options", [[], ["--batch-size", "2"], ["--model", "mlp", "--lr", "0.1"],
                                     ["--loss", "cross-entropy", "--lr", "0.1"]])
def test_zero_epochs_saves_the_starting_model(tmp_path, capsys, options):
    data, log, model = tmp_path / "d.csv", tmp_path / "run.jsonl", tmp_path / "m.safetensors"
    data.write_text("a,b,y\n1,2,3\n2,1,4\n3,5,1\n4,4,2\n5,0,9\n")
    status, out, err = run(capsys, "train", data, "--target", "y", "--epochs", "0", "--log", log, "--out", model,
                           *options)
    assert status == 0 and err == ""
    assert "Trained 0 epochs; final training loss none" in out
    assert log.read_text() == ""  # asked for, created, nothing to log
    assert ModelBundle.load(model).info["epochs"] == 0
