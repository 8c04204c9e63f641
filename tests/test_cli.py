"""End-to-end tests of the ``gradloop`` command.

Most tests call :func:`gradloop.cli.main` in-process (fast, output captured by
capsys); a few go through a real subprocess to prove the console script exits
with the right status and never shows a traceback. Every number asserted here is
checked against an independent computation (numpy least squares, scikit-learn's
metrics, the chapter's gradient formula), not against gradloop itself.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gradloop.bundle import ModelBundle
from gradloop.cli import main
from gradloop.data import SKLEARN_DATASETS, read_table
from gradloop.errors import DataError

# The chapter's per-epoch report, in the chapter's order.
TRACE_LABELS = ["Epoch {k}:", "Predicted output", "Actual output", "Difference", "Current loss", "Gradients",
                "Updated weights", "New prediction", "New loss"]


# ---------------------------------------------------------------- helpers
def run(capsys, *argv):
    """gradloop ARGV in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def run_quiet(*argv):
    """Like :func:`run` without pytest's capsys (for hypothesis, whose examples share one test call)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def assert_one_line_error(err, *needles, status=None):
    """stderr is exactly one line, a gradloop message (no traceback) naming every needle."""
    assert err.endswith("\n") and err.count("\n") == 1, f"expected one stderr line, got {err!r}"
    assert err.startswith("gradloop: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"


def snapshot(folder):
    """{relative path: bytes} of every file under ``folder``: proves nothing was written or changed."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def linear_frame(n=200, seed=0):
    """y = 3a - 2b + 1 + small noise, features on different scales."""
    rng = np.random.default_rng(seed)
    a = rng.normal(5.0, 2.0, n)
    b = rng.uniform(-30.0, 30.0, n)
    y = 3 * a - 2 * b + 1 + rng.normal(0.0, 0.01, n)
    return pd.DataFrame({"a": a, "b": b, "y": y})


def lstsq(frame, features=("a", "b"), target="y"):
    """(coefficients (d,), intercept, predictions (n,)) of the least-squares fit with an intercept."""
    X = frame[list(features)].to_numpy()
    A = np.hstack([X, np.ones((len(X), 1))])
    w = np.linalg.lstsq(A, frame[target].to_numpy(), rcond=None)[0]
    return w[:-1], w[-1], A @ w


def regression_reference(y, pred):
    r = y - pred
    mse = float(np.mean(r ** 2))
    return {"mse": mse, "rmse": math.sqrt(mse), "mae": float(np.mean(np.abs(r))),
            "r2": 1 - float(np.sum(r ** 2)) / float(np.sum((y - y.mean()) ** 2))}


def blobs(n_per_class=60, labels=("cat", "dog", "eel"), seed=0, spread=1.0):
    """Gaussian blobs in 2-D, one per label, centres 6 apart."""
    rng = np.random.default_rng(seed)
    centres = [(0.0, 0.0), (6.0, 0.0), (3.0, 6.0)]
    parts = []
    for label, (cx, cy) in zip(labels, centres):
        parts.append(pd.DataFrame({"x1": rng.normal(cx, spread, n_per_class), "x2": rng.normal(cy, spread, n_per_class),
                                   "animal": label}))
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def parse_line(pattern, out):
    m = re.search(pattern, out)
    assert m, f"{pattern!r} not found in:\n{out}"
    return m


# ---------------------------------------------------------------- 1. train, evaluate, predict
def test_linear_end_to_end_matches_least_squares(tmp_path, capsys):
    frame = linear_frame()
    data, model = tmp_path / "lin.csv", tmp_path / "m.safetensors"
    frame.to_csv(data, index=False)
    coef, intercept, pred_opt = lstsq(frame)

    status, out, err = run(capsys, "train", data, "--target", "y", "--standardize", "--test-size", "0",
                           "--lr", "auto", "--epochs", "2000", "--out", model)
    assert status == 0 and err == ""
    assert "(auto: 1/L)" in out and f"Saved the model to {model}" in out
    gap = parse_line(r"Gap to the least-squares optimum \(training rows\): loss (\S+) vs optimal (\S+) "
                     r"\(ratio (\S+), excess (\S+)\); weights (\S+) \(relative\)", out)
    assert float(gap[3]) == pytest.approx(1.0, abs=1e-9)
    assert float(gap[5]) < 1e-6
    assert float(gap[2]) == pytest.approx(np.mean((frame.y - pred_opt) ** 2), rel=1e-5)
    # Coefficients printed in the original (unstandardized) units: 6 significant digits.
    printed = parse_line(r"Coefficients in the original units: a (\S+), b (\S+); intercept (\S+)", out)
    assert [float(printed[i]) for i in (1, 2, 3)] == pytest.approx([*coef, intercept], rel=1e-5)
    assert [float(printed[i]) for i in (1, 2, 3)] == pytest.approx([3.0, -2.0, 1.0], abs=0.02)

    status, out, err = run(capsys, "evaluate", model, data, "--json")
    assert status == 0 and err == ""
    metrics = json.loads(out)
    assert set(metrics) == {"mse", "rmse", "mae", "r2"}
    assert metrics["r2"] > 0.99
    # The saved model's own predictions on the raw columns give the same numbers...
    bundle = ModelBundle.load(model)
    direct = regression_reference(frame.y.to_numpy(), bundle.predict(frame[["a", "b"]].to_numpy()))
    for key in direct:
        assert metrics[key] == pytest.approx(direct[key], rel=1e-12, abs=1e-15)
    # ... and training reached the least-squares optimum.
    optimum = regression_reference(frame.y.to_numpy(), pred_opt)
    for key in optimum:
        assert metrics[key] == pytest.approx(optimum[key], rel=1e-9, abs=1e-9)

    status, out, err = run(capsys, "predict", model, data)
    assert status == 0 and err == ""
    predicted = pd.read_csv(io.StringIO(out))
    assert list(predicted.columns) == ["y"] and len(predicted) == len(frame)
    np.testing.assert_allclose(predicted.y, pred_opt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(predicted.y, 3 * frame.a - 2 * frame.b + 1, rtol=0, atol=0.05)

    csv = tmp_path / "pred.csv"
    status, out, err = run(capsys, "predict", model, data, "--out", csv)
    assert status == 0 and err == "" and f"Wrote {len(frame)} predictions to {csv}" in out
    np.testing.assert_array_equal(pd.read_csv(csv).y, predicted.y)

    # A file without the target column can still be predicted.
    features_only = tmp_path / "x.csv"
    frame[["b", "a"]].to_csv(features_only, index=False)  # columns by name, not position
    status, out, _ = run(capsys, "predict", model, features_only)
    assert status == 0
    np.testing.assert_array_equal(pd.read_csv(io.StringIO(out)).y, predicted.y)

    # The human-readable evaluation shows the same numbers.
    status, out, _ = run(capsys, "evaluate", model, data)
    assert status == 0 and f"({len(frame)} rows)" in out
    assert float(parse_line(r"r2\s+(\S+)", out)[1]) == pytest.approx(metrics["r2"], rel=1e-5)


# ---------------------------------------------------------------- 2. trace and log
def test_trace_prints_the_chapters_nine_items_in_order(tmp_path, capsys):
    frame = linear_frame(n=30)
    data = tmp_path / "lin.csv"
    frame.to_csv(data, index=False)
    status, out, err = run(capsys, "train", data, "--target", "y", "--standardize", "--test-size", "0",
                           "--epochs", "6", "--trace", "2")
    assert status == 0 and err == ""
    epochs = [int(k) for k in re.findall(r"^Epoch (\d+):$", out, flags=re.M)]
    assert epochs == [1, 2, 4, 6]  # every 2nd epoch, the first and the last
    blocks = re.split(r"^(?=Epoch \d+:$)", out, flags=re.M)[1:]
    assert len(blocks) == 4
    for k, block in zip(epochs, blocks):
        positions = [block.find(label.format(k=k)) for label in TRACE_LABELS]
        assert -1 not in positions, block
        assert positions == sorted(positions), block
    # Epoch 1 starts from zero weights; its numbers are the chapter's, computed by hand.
    X = frame[["a", "b"]].to_numpy()
    Xs = (X - X.mean(0)) / X.std(0)
    y = frame.y.to_numpy()
    first = blocks[0]
    assert float(parse_line(r"Current loss: (\S+)", first)[1]) == pytest.approx(np.mean(y ** 2), rel=1e-9)
    grad_w = -2 * Xs.T @ y / len(y)
    printed = parse_line(r"Gradients for this epoch:\n\s+weights: \[([^\]]+)\]\n\s+bias: \[([^\]]+)\]", first)
    assert [float(v) for v in printed[1].split(",")] == pytest.approx(grad_w, rel=1e-5)
    assert float(printed[2]) == pytest.approx(-2 * y.mean(), rel=1e-5)
    # "New loss after the update" of epoch 1 is the "Current loss" of epoch 2.
    new_loss_1 = parse_line(r"New loss after the update: (\S+)", blocks[0])[1]
    assert parse_line(r"Current loss: (\S+)", blocks[1])[1] == new_loss_1


def test_log_writes_one_json_object_per_epoch(tmp_path, capsys):
    frame = linear_frame(n=40)
    data, log, model = tmp_path / "lin.csv", tmp_path / "run.jsonl", tmp_path / "m.safetensors"
    frame.to_csv(data, index=False)
    status, _, err = run(capsys, "train", data, "--target", "y", "--standardize", "--test-size", "0",
                         "--epochs", "7", "--log", log, "--out", model)
    assert status == 0 and err == ""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    records = [r for r in lines if not r.get("final")]  # the last line summarizes the result
    assert [r["epoch"] for r in records] == list(range(1, 8))
    for r in records:
        assert {"epoch", "loss", "new_loss", "gradients", "weights"} <= set(r)
        assert set(r["weights"]) == set(r["gradients"]) == {"0.W", "0.b"}
    for before, after in zip(records, records[1:]):
        assert before["new_loss"] == after["loss"]  # the same forward pass, not recomputed
        assert after["loss"] <= before["loss"]  # lr 1/L: gradient descent never goes up
    # The last record's weights are the saved model's (standardized space).
    layer = ModelBundle.load(model).model.layers[0]
    np.testing.assert_array_equal(np.array(records[-1]["weights"]["0.W"]), layer.params["W"])
    np.testing.assert_array_equal(np.array(records[-1]["weights"]["0.b"]), layer.params["b"])


# ---------------------------------------------------------------- 3. input formats
def _write_format(frame, folder, fmt):
    """(path, target) of ``frame`` written as ``fmt``."""
    if fmt == "csv":
        path = folder / "d.csv"
        frame.to_csv(path, index=False)
        return path, "y", "a,b"
    if fmt == "parquet":
        path = folder / "d.parquet"
        frame.to_parquet(path)
        return path, "y", "a,b"
    if fmt == "npy":
        path = folder / "d.npy"
        np.save(path, frame[["a", "b", "y"]].to_numpy())
        return path, "2", "0,1"
    path = folder / "d.npz"
    np.savez(path, X=frame[["a", "b"]].to_numpy(), y=frame.y.to_numpy())
    return path, "y", "x0,x1"


@pytest.mark.parametrize("fmt", ["csv", "parquet", "npy", "npz"])
def test_every_input_format_trains_to_the_optimum(tmp_path, capsys, fmt):
    frame = linear_frame(n=120, seed=1)
    path, target, features = _write_format(frame, tmp_path, fmt)
    model = tmp_path / "m.safetensors"
    status, out, err = run(capsys, "train", path, "--target", target, "--features", features, "--standardize",
                           "--test-size", "0", "--epochs", "1000", "--out", model)
    assert status == 0 and err == ""
    assert "on 120 training rows (0 test)" in out
    status, out, err = run(capsys, "evaluate", model, path, "--json")
    assert status == 0 and err == ""
    optimum = regression_reference(frame.y.to_numpy(), lstsq(frame)[2])
    assert json.loads(out)["mse"] == pytest.approx(optimum["mse"], rel=1e-9)
    status, out, _ = run(capsys, "predict", model, path)
    assert status == 0
    np.testing.assert_allclose(pd.read_csv(io.StringIO(out))[target], lstsq(frame)[2], atol=1e-6)


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


# ---------------------------------------------------------------- 6. networks and classification
def test_mlp_cross_entropy_on_string_labels(tmp_path, capsys):
    from sklearn.metrics import precision_recall_fscore_support

    frame = blobs()
    data, model = tmp_path / "animals.csv", tmp_path / "clf.safetensors"
    frame.to_csv(data, index=False)
    status, out, err = run(capsys, "train", data, "--target", "animal", "--model", "mlp", "--hidden", "16,8",
                           "--activation", "tanh", "--loss", "cross-entropy", "--optimizer", "adam", "--lr", "0.02",
                           "--epochs", "150", "--standardize", "--test-size", "0.25", "--out", model)
    assert status == 0 and err == ""
    assert "MLP 2-16-8-3, cross-entropy loss" in out
    assert float(parse_line(r"test rows\s+accuracy (\S+)", out)[1]) >= 0.95

    status, out, err = run(capsys, "evaluate", model, data, "--json")
    assert status == 0 and err == ""
    metrics = json.loads(out)
    assert {"mse", "rmse", "mae", "r2", "accuracy", "precision", "recall", "f1"} <= set(metrics)
    assert np.sum(metrics["confusion_matrix"]) == len(frame)

    status, out, err = run(capsys, "predict", model, data)
    assert status == 0 and err == ""
    predicted = pd.read_csv(io.StringIO(out))
    assert list(predicted.columns) == ["animal"]
    assert set(predicted.animal) <= {"cat", "dog", "eel"}
    truth = frame.animal.to_numpy()
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted.animal.to_numpy() == truth), abs=1e-12)
    assert metrics["accuracy"] >= 0.95
    p, r, f, _ = precision_recall_fscore_support(truth, predicted.animal, average="macro", zero_division=0)
    assert [metrics["precision"], metrics["recall"], metrics["f1"]] == pytest.approx([p, r, f], abs=1e-12)

    status, out, err = run(capsys, "predict", model, data, "--proba")
    assert status == 0 and err == ""
    proba = pd.read_csv(io.StringIO(out))
    assert list(proba.columns) == ["p_cat", "p_dog", "p_eel"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    assert (proba.to_numpy() >= 0).all()
    best = np.array(["cat", "dog", "eel"])[proba.to_numpy().argmax(axis=1)]
    np.testing.assert_array_equal(best, predicted.animal)

    # Human-readable evaluation shows the confusion matrix with the class names.
    status, out, _ = run(capsys, "evaluate", model, data)
    assert status == 0 and "classes cat, dog, eel" in out


def test_bce_on_two_string_classes(tmp_path, capsys):
    from sklearn.metrics import precision_recall_fscore_support

    frame = blobs(n_per_class=80, labels=("no", "yes"), seed=2)
    data, model = tmp_path / "two.csv", tmp_path / "bce.safetensors"
    frame.to_csv(data, index=False)
    status, out, err = run(capsys, "train", data, "--target", "animal", "--loss", "bce", "--lr", "0.5",
                           "--epochs", "200", "--standardize", "--test-size", "0", "--out", model)
    assert status == 0 and err == ""
    status, out, _ = run(capsys, "evaluate", model, data, "--json")
    metrics = json.loads(out)
    status, out, _ = run(capsys, "predict", model, data)
    predicted = pd.read_csv(io.StringIO(out)).animal.to_numpy()
    assert set(predicted) <= {"no", "yes"}
    truth = frame.animal.to_numpy()
    assert metrics["accuracy"] == pytest.approx(np.mean(predicted == truth), abs=1e-12) and metrics["accuracy"] > 0.97
    # Two classes: precision, recall and F1 of the positive class (the second label, "yes").
    p, r, f, _ = precision_recall_fscore_support(truth, predicted, average="binary", pos_label="yes")
    assert [metrics["precision"], metrics["recall"], metrics["f1"]] == pytest.approx([p, r, f], abs=1e-12)
    status, out, _ = run(capsys, "predict", model, data, "--proba")
    proba = pd.read_csv(io.StringIO(out))
    assert list(proba.columns) == ["p_no", "p_yes"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(np.where(proba.p_yes > 0.5, "yes", "no"), predicted)


# ---------------------------------------------------------------- sklearn: data sets (read_table)
@pytest.mark.parametrize("name, shape", [("diabetes", (442, 11)), ("digits", (1797, 65)), ("iris", (150, 5)),
                                         ("wine", (178, 14)), ("breast_cancer", (569, 31))])
def test_sklearn_data_sets_are_read_by_name(name, shape):
    assert name in SKLEARN_DATASETS
    frame = read_table(f"sklearn:{name}")
    assert frame.shape == shape
    assert frame.columns[-1] == "target"
    assert all(isinstance(c, str) for c in frame.columns)
    assert list(frame.index) == list(range(shape[0]))


def test_unknown_sklearn_data_set_lists_the_known_ones(capsys):
    with pytest.raises(DataError, match="unknown scikit-learn data set 'mnist'; known: sklearn:diabetes, "
                                        "sklearn:digits, sklearn:iris, sklearn:wine, sklearn:breast_cancer"):
        read_table("sklearn:mnist")
    status, _, err = run(capsys, "train", "sklearn:mnist", "--target", "target")
    assert status == 2
    assert_one_line_error(err, "sklearn:mnist", "sklearn:digits")


def test_sklearn_data_sets_without_scikit_learn_say_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(DataError, match="pip install scikit-learn"):
        read_table("sklearn:iris")
    status, _, err = run(capsys, "train", "sklearn:iris", "--target", "target")
    assert status == 2
    assert_one_line_error(err, "sklearn:iris", "pip install scikit-learn")


def test_iris_classifier_from_the_command_line(tmp_path, capsys):
    model = tmp_path / "iris.safetensors"
    status, out, err = run(capsys, "train", "sklearn:iris", "--target", "target", "--loss", "cross-entropy",
                           "--standardize", "--lr", "0.5", "--epochs", "300", "--out", model)
    assert status == 0 and err == ""
    assert float(parse_line(r"test rows\s+accuracy (\S+)", out)[1]) >= 0.9
    status, out, _ = run(capsys, "predict", model, "sklearn:iris")
    assert status == 0 and set(pd.read_csv(io.StringIO(out)).target) <= {0, 1, 2}


# ---------------------------------------------------------------- 7. real data
# The configuration: one hidden layer of 64, Adam, a held-out quarter (seed 0).
DIGITS = ["train", "sklearn:digits", "--target", "target", "--model", "mlp", "--hidden", "64",
          "--optimizer", "adam", "--weight-decay", "0.002", "--lr", "0.002", "--batch-size", "32",
          "--epochs", "60", "--schedule", "cosine", "--loss", "cross-entropy", "--standardize",
          "--test-size", "0.25", "--seed", "0"]


def test_digits_mlp_reaches_97_percent_held_out(tmp_path, capsys):
    model = tmp_path / "digits.safetensors"
    status, out, err = run(capsys, *DIGITS, "--out", model)
    assert status == 0 and err == ""
    assert "on 1348 training rows (449 test)" in out
    assert not re.search(r"\bnan\b", out, flags=re.I)
    accuracy = float(parse_line(r"test rows\s+accuracy (\S+)", out)[1])
    assert accuracy >= 0.97
    # Digits has constant pixels (pixel_0_0 is always 0): standardizing them must give 0, not 0/0.
    bundle = ModelBundle.load(model)
    scale = bundle.scaler.scale_
    assert np.isfinite(scale).all() and (scale > 0).all()
    assert scale[bundle.feature_names.index("pixel_0_0")] == 1.0
    status, out, _ = run(capsys, "evaluate", model, "sklearn:digits", "--json")
    metrics = json.loads(out)
    assert status == 0 and all(math.isfinite(v) for k, v in metrics.items() if k != "confusion_matrix")
    # On all 1797 rows (1348 seen in training): at least the held-out accuracy.
    assert metrics["accuracy"] >= accuracy


def test_diabetes_linear_reaches_r2_045_held_out(capsys):
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import LinearRegression

    from gradloop.data import train_test_split

    status, out, err = run(capsys, "train", "sklearn:diabetes", "--target", "target", "--standardize",
                           "--test-size", "0.25")
    assert status == 0 and err == ""
    r2 = float(parse_line(r"test rows\s+MSE \S+\s+RMSE \S+\s+MAE \S+\s+R\^2 (\S+)", out)[1])
    assert r2 >= 0.45
    # The same split (seed 0) with scikit-learn's exact least squares: gradient descent is as good.
    X, y = load_diabetes(return_X_y=True)
    train, test = train_test_split(len(X), 0.25, 0)
    exact = LinearRegression().fit(X[train], y[train]).score(X[test], y[test])
    assert r2 == pytest.approx(exact, abs=0.005)


# ---------------------------------------------------------------- 8. demo
def test_demo_shows_the_first_epochs_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "demo")
    assert status == 0 and err == ""
    assert re.findall(r"^Epoch (\d+):$", out, flags=re.M) == ["1", "2"]
    for label in TRACE_LABELS[1:]:
        assert label in out
    assert "test rows" in out and "R^2" in out
    assert "Gap to the least-squares optimum" in out and "Coefficients in the original units" in out
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- through a real process
def _console_script():
    name = "gradloop.exe" if os.name == "nt" else "gradloop"
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which(name, path=folder)
        if found:
            return found
    return shutil.which(name)


def _no_traceback(result):
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


@pytest.mark.parametrize("csv, argv, status, needles", [
    pytest.param(None, ["train", "missing.csv", "--target", "y"], 2, ["missing.csv", "no such file"], id="missing"),
    # Overflow inside the network: NumPy's RuntimeWarnings must not add lines to stderr.
    pytest.param("a,b,y\n1e300,1,1\n2,3,0\n", ["train", "d.csv", "--target", "y", "--loss", "bce", "--lr", "0.1",
                                             "--test-size", "0"], 3, ["diverged at epoch 1"], id="overflow"),
])
def test_subprocess_error_is_one_line(tmp_path, csv, argv, status, needles):
    if csv is not None:
        (tmp_path / "d.csv").write_text(csv)
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, "-m", "gradloop.cli", *argv, "--out", "m.safetensors"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == status
    _no_traceback(result)
    assert_one_line_error(result.stderr, *needles)
    assert snapshot(tmp_path) == before


def test_console_script_trains_evaluates_and_diverges(tmp_path):
    script = _console_script()
    if script is None:
        pytest.skip("the gradloop console script is not installed")
    frame = linear_frame(n=50)
    frame.to_csv(tmp_path / "lin.csv", index=False)
    result = subprocess.run([script, "train", "lin.csv", "--target", "y", "--standardize", "--test-size", "0",
                             "--out", "m.safetensors"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    result = subprocess.run([script, "evaluate", "m.safetensors", "lin.csv", "--json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and json.loads(result.stdout)["r2"] > 0.99
    result = subprocess.run([script, "train", "lin.csv", "--target", "y", "--lr", "10", "--out", "d.safetensors"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    _no_traceback(result)
    assert_one_line_error(result.stderr, "diverged at epoch", "stable learning rate")
    assert not (tmp_path / "d.safetensors").exists()


def test_subprocess_closed_pipe_exits_quietly(tmp_path):
    """`gradloop predict ... | head -1`: no traceback and no error message when the reader leaves."""
    frame = linear_frame(n=20000)
    frame.to_csv(tmp_path / "big.csv", index=False)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(tmp_path / "big.csv"), "--target", "y", "--epochs", "1",
                     "--out", str(tmp_path / "m.safetensors")]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "gradloop.cli", "predict", "m.safetensors", "big.csv"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"y\n"
    proc.stdout.close()  # more than a pipe buffer of predictions is still to come
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert stderr == ""


# ---------------------------------------------------------------- 9. fuzzing
def _safetensors_like(body):
    return len(body).to_bytes(8, "little") + body


model_bytes = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=300).map(_safetensors_like),  # gets past the header-length check
    st.sampled_from([b"{}", b"[]", b'{"__metadata__": {"gradloop": "{}"}}', b'{"__metadata__": 1}',
                     b'{"__metadata__": {"gradloop": "{\\"format\\": \\"gradloop-model\\", '
                     b'\\"format_version\\": 1}"}}']).map(_safetensors_like),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=model_bytes)
def test_random_bytes_as_a_model_file(content):
    with tempfile.TemporaryDirectory() as folder:
        model, data = Path(folder) / "m.safetensors", Path(folder) / "d.csv"
        model.write_bytes(content)
        data.write_text("a,b,y\n1,2,3\n")
        status, out, err = run_quiet("evaluate", model, data, "--json")
        assert status == 2 and out == ""
        assert_one_line_error(err, str(model))
        status, out, err = run_quiet("predict", model, data, "--out", Path(folder) / "p.csv")
        assert status == 2
        assert_one_line_error(err, str(model))
        assert sorted(p.name for p in Path(folder).iterdir()) == ["d.csv", "m.safetensors"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=400))
def test_random_bytes_as_a_csv_file(content):
    assume(b"y" not in content)  # without a column named y the run must fail (the target is y)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "d.csv"
        data.write_bytes(content)
        status, out, err = run_quiet("train", data, "--target", "y", "--out", Path(folder) / "m.safetensors",
                                     "--log", Path(folder) / "run.jsonl")
        assert status == 2
        assert_one_line_error(err)
        assert [p.name for p in Path(folder).iterdir()] == ["d.csv"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.text(alphabet="0123456789.,-+e\n nainf", max_size=120),
       options=st.sampled_from([[], ["--standardize"], ["--model", "mlp", "--hidden", "3", "--lr", "0.1"],
                                ["--dtype", "float32"], ["--loss", "huber", "--lr", "0.1"]]))
def test_random_text_under_a_valid_header(body, options):
    """Numbers of any size, blanks and junk: success, or one line with exit 2 (bad data) or 3 (divergence)."""
    with tempfile.TemporaryDirectory() as folder:
        data, model = Path(folder) / "d.csv", Path(folder) / "m.safetensors"
        data.write_text("a,b,y\n" + body)
        status, out, err = run_quiet("train", data, "--target", "y", "--epochs", "20", "--test-size", "0",
                                     "--out", model, *options)
        assert status in (0, 2, 3)
        if status == 0:
            assert err == "" and model.exists()
            status, out, err = run_quiet("evaluate", model, data, "--json")
            assert status == 0, err
        else:
            assert_one_line_error(err)
            assert not model.exists()
