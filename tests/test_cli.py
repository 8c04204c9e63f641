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
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradloop.files.bundle import ModelBundle
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
