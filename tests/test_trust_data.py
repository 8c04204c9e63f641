"""Trust, the data side: predict never needs the target, data is read as written, output is strict JSON,
and the library refuses bad arguments and colliding files before anything trains or is written."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gradloop import ConfigError, fit
from gradloop.files.bundle import ModelBundle
from gradloop.callbacks import CSVLogger, JSONLinesLogger, ModelCheckpoint
from gradloop.checkpoint import CheckpointWriter
from gradloop.data import load_xy
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD


@pytest.fixture
def regression(tmp_path, cli):
    """A linear model trained on y = 2a - b + 1 (exact), and its data."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
    frame["y"] = 2 * frame.a - frame.b + 1
    frame.to_csv(tmp_path / "train.csv", index=False)
    status, _, _ = cli("train", tmp_path / "train.csv", "--target", "y", "--epochs", "400", "--test-size",
                       "0", "--out", tmp_path / "m.safetensors")
    assert status == 0
    return tmp_path, frame


def _predictions(cli, model, data):
    status, out, err = cli("predict", model, data)
    assert status == 0, err
    return pd.read_csv(pd.io.common.StringIO(out))["y"].to_numpy()


@pytest.mark.parametrize("target", ["empty", "missing", "text", "named like the placeholder"])
def test_predict_ignores_the_target_column_and_matches_features_by_name(regression, cli, target):
    tmp_path, frame = regression
    reference = 2 * frame.a.to_numpy() - frame.b.to_numpy() + 1
    new = frame[["b", "a"]].assign(extra="anything")  # other order, an extra column
    if target == "empty":
        new["y"] = ""
    elif target == "text":
        new["y"] = "unknown"
    elif target == "named like the placeholder":
        new["__no_target__"] = "x"
    new.to_csv(tmp_path / "new.csv", index=False)
    np.testing.assert_allclose(_predictions(cli, tmp_path / "m.safetensors", tmp_path / "new.csv"), reference,
                               rtol=1e-6, atol=1e-6)


def test_a_feature_named_like_the_old_placeholder_is_an_ordinary_feature(tmp_path, cli):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"__no_target__": rng.normal(size=30), "b": rng.normal(size=30)})
    frame["y"] = 3 * frame["__no_target__"] + frame.b
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert cli("train", tmp_path / "d.csv", "--target", "y", "--epochs", "500", "--test-size", "0",
               "--out", tmp_path / "m.st")[0] == 0
    frame.drop(columns="y").to_csv(tmp_path / "new.csv", index=False)
    pred = _predictions(cli, tmp_path / "m.st", tmp_path / "new.csv")
    np.testing.assert_allclose(pred, frame.y.to_numpy(), rtol=1e-6, atol=1e-6)


def test_predict_on_a_classifier_ignores_unseen_labels(tmp_path, cli):
    rows = [(i % 5 + (0 if k == "a" else 10), 1.0, k) for i in range(40) for k in ("a", "b")]
    pd.DataFrame(rows, columns=["x", "z", "y"]).to_csv(tmp_path / "d.csv", index=False)
    assert cli("train", tmp_path / "d.csv", "--target", "y", "--loss", "bce", "--lr", "0.1",
               "--standardize", "--epochs", "200", "--out", tmp_path / "c.st")[0] == 0
    pd.DataFrame({"x": [0.0, 12.0], "z": [1.0, 1.0], "y": ["zebra", ""]}).to_csv(tmp_path / "new.csv", index=False)
    status, out, err = cli("predict", tmp_path / "c.st", tmp_path / "new.csv")
    assert status == 0, err
    assert out.split() == ["y", "a", "b"]
    pd.DataFrame({"x": [0.0, 12.0], "z": [1.0, 1.0], "y": ["zebra", "a"]}).to_csv(tmp_path / "e.csv", index=False)
    status, _, err = cli("evaluate", tmp_path / "c.st", tmp_path / "e.csv")
    assert status == 2 and "'zebra'" in err  # evaluate needs known labels, and says which is not


def test_labels_are_taken_as_written(tmp_path):
    """'None', 'NA' and 'null' are labels like any other; only an empty cell is missing."""
    labels = ["None", "NA", "null", "nan"] * 5
    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate(labels)))
    data = load_xy(tmp_path / "d.csv", "y", labels=True)
    assert data.classes == sorted({"None", "NA", "null", "nan"})
    assert [data.classes[i] for i in data.y] == labels
    (tmp_path / "e.csv").write_text("x,y\n1,None\n2,\n")
    with pytest.raises(Exception, match="line 3, column 'y': missing label"):
        load_xy(tmp_path / "e.csv", "y", labels=True)


def test_missing_spellings_in_features_are_missing_values(tmp_path):
    (tmp_path / "d.csv").write_text("x,y\n1,2\nNA,3\n")
    with pytest.raises(Exception, match="line 3, column 'x': missing value"):
        load_xy(tmp_path / "d.csv", "y")


@pytest.mark.parametrize("rows", [["1,5", "2,5", "3,5"], ["1,5"]], ids=["constant target", "one row"])
def test_evaluate_json_is_strict_when_r2_is_undefined(tmp_path, cli, rows):
    (tmp_path / "t.csv").write_text("a,y\n" + "\n".join(f"{i},{2 * i + 1}" for i in range(20)) + "\n")
    assert cli("train", tmp_path / "t.csv", "--target", "y", "--epochs", "50", "--out", tmp_path / "m.st")[0] == 0
    (tmp_path / "e.csv").write_text("a,y\n" + "\n".join(rows) + "\n")
    status, out, _ = cli("evaluate", tmp_path / "m.st", tmp_path / "e.csv", "--json")
    assert status == 0
    metrics = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    assert metrics["r2"] is None and "constant" in metrics["r2_undefined"]
    assert math.isfinite(metrics["mse"])


# ---------------------------------------------------------------- the library refuses before training
def _data(n=20):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2))
    return X, X @ np.array([1.0, -2.0])


@pytest.mark.parametrize("kwargs, message", [
    ({"clip_norm": -1}, "clip_norm must be a positive finite number or None, got -1"),
    ({"clip_norm": 0}, "clip_norm must be a positive finite number"),
    ({"round_to": -1}, "round_to must be an integer in [0, 15]"),
    ({"every": 0}, "every must be a positive integer, got 0"),
    ({"seed": -1}, "seed must be a non-negative integer, got -1"),
    ({"epochs": 10**12}, "epochs must be at most 1,000,000,000"),
    ({"batch_size": 0}, "batch_size must be a positive integer or None, got 0"),
    ({"validation_split": 1.0}, "validation_split must be a fraction in (0, 1) or None, got 1.0"),
])
def test_fit_refuses_bad_arguments_before_training(kwargs, message):
    X, y = _data()
    model = linear(2)
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(ConfigError) as info:
        fit(model, X, y, loss="mse", optimizer=SGD(0.1), **{"epochs": 3, **kwargs})
    assert str(info.value) == message or str(info.value).startswith(message)
    assert "--" not in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.parameters()))


def test_mlp_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(ConfigError, match=r"sizes: a network of sizes \[2, 1000000000000, 1\].*GiB"):
        mlp([2, 10**12, 1])


@pytest.mark.parametrize("make, message", [
    (lambda p: [JSONLinesLogger(p / "a.jsonl"), CSVLogger(p / "a.jsonl")], "CSVLogger path .*is also JSONLinesLogger"),
    (lambda p: [JSONLinesLogger(p / "sub")], "JSONLinesLogger path .*is a folder"),
    (lambda p: [CSVLogger("/dev/null")], "CSVLogger path /dev/null: is not a regular file"),
    (lambda p: [ModelCheckpoint(p / "m.st", monitor="loss"), JSONLinesLogger(p / "m.st")], "is also ModelCheckpoint"),
    (lambda p: [CheckpointWriter(p / "ck"), JSONLinesLogger(p / "ck" / "run.jsonl")],
     "lies inside the CheckpointWriter"),
    (lambda p: [CheckpointWriter(p / "file.txt")], "CheckpointWriter directory .*is a file, expected a folder"),
])
def test_callbacks_aimed_at_colliding_or_wrong_files_are_refused_when_fit_starts(tmp_path, make, message):
    (tmp_path / "sub").mkdir()
    (tmp_path / "file.txt").write_text("keep me")
    callbacks = make(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    X, y = _data()
    with pytest.raises(ConfigError, match=message):
        fit(linear(2), X, y, loss="mse", optimizer=SGD(0.1), epochs=3, callbacks=callbacks)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "file.txt").read_text() == "keep me"


def test_saving_a_model_onto_a_device_is_refused(tmp_path):
    bundle = ModelBundle(linear(2), ["a", "b"], "y")
    with pytest.raises(ConfigError, match="not a regular file"):
        bundle.save("/dev/null")
