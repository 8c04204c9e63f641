"""Tests for validation_split and the loggers: the held-out rows (stratified for classifiers) and the JSON-lines and CSV logs."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import gradloop.inputs
import gradloop.loop
from gradloop import ConfigError, fit
from gradloop.callbacks import CSVLogger, JSONLinesLogger
from gradloop.loop import split_validation
from gradloop.losses import get_loss
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD, Adam
from test_training_callbacks import Snapshots, line_data, overflows


# ------------------------------------------------------------ validation_split


def indexed_data(n=60, seed=0):
    """Column 0 is the row's index: a split's rows say where they came from."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.arange(n, dtype=float), rng.standard_normal((n, 2))])
    return X, X[:, 1] - 2 * X[:, 2] + 0.1 * rng.standard_normal(n)


def held_rows(X, y, fraction, seed, stratify=False):
    _, _, (X_val, _) = split_validation(X, y, fraction, seed, stratify)
    return X_val[:, 0].astype(int)


def test_validation_split_is_drawn_by_the_seed_not_the_tail():
    X, y = indexed_data()
    held = held_rows(X, y, 0.25, seed=5)
    assert len(held) == 15 and list(held) != list(range(45, 60))
    assert held.min() < 40  # a random quarter of 60 rows, not the last ones
    assert np.array_equal(held, held_rows(X, y, 0.25, seed=5))
    assert not np.array_equal(held, held_rows(X, y, 0.25, seed=6))


@pytest.mark.parametrize("batch_size", [None, 8])
def test_validation_split_val_loss_is_the_loss_on_the_held_out_rows(batch_size):
    X, y = indexed_data()
    X_fit, y_fit, (X_val, y_val) = split_validation(X, y, 0.25, 3, False)
    model, snaps, mse = mlp([3, 8, 1], "tanh", seed=2), Snapshots(), get_loss("mse")
    history = fit(model, X, y, loss="mse", optimizer=SGD(0.01), epochs=4, batch_size=batch_size, seed=3,
                  validation_split=0.25, callbacks=[snaps])
    probe = mlp([3, 8, 1], "tanh")
    for epoch in (1, 2, 3, 4):
        probe.load_state_dict(snaps.epochs[epoch])
        assert history.history["val_loss"][epoch - 1] == pytest.approx(
            mse.value(y_val, probe.predict_raw(X_val)), rel=1e-12)
    if batch_size is None:  # full batch: epoch 1's loss is the starting weights' loss on the kept rows only
        probe.load_state_dict(snaps.epochs[0])
        assert history.history["loss"][0] == pytest.approx(mse.value(y_fit, probe.predict_raw(X_fit)), rel=1e-12)


def spy_split(monkeypatch):
    calls = []
    real = gradloop.inputs.split_validation  # where fit takes it from

    def spy(X, y, fraction, seed, stratify):
        out = real(X, y, fraction, seed, stratify)
        calls.append(out)
        return out

    monkeypatch.setattr(gradloop.inputs, "split_validation", spy)
    return calls


def assert_stratified(y, y_val, fraction):
    labels = np.asarray(y).reshape(-1)
    held = np.asarray(y_val).reshape(-1)
    for c in np.unique(labels):
        assert abs(np.sum(held == c) - fraction * np.sum(labels == c)) <= 1, (c, np.sum(held == c))


def imbalanced_classes(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    labels = np.zeros(n, dtype=int)
    labels[rng.permutation(n)[:20]] = 1
    labels[rng.permutation(n)[:50]] = 2  # some 1s become 2s: uneven classes
    return X, labels


@pytest.mark.parametrize("seed", range(6))
def test_validation_split_is_stratified_for_multiclass(monkeypatch, seed):
    X, labels = imbalanced_classes(seed=seed)
    calls = spy_split(monkeypatch)
    fit(mlp([3, 4, 3], "relu", task="multiclass"), X, labels, loss="cross-entropy", optimizer=SGD(0.1), epochs=1,
        validation_split=0.3, seed=seed)
    (_, _, (_, y_val)), = calls
    assert_stratified(labels, y_val, 0.3)


def test_validation_split_is_stratified_for_binary_classifiers(monkeypatch):
    for seed in range(8):
        X, labels = imbalanced_classes(seed=seed)
        labels = (labels == 1).astype(int)  # about 10% positives
        calls = spy_split(monkeypatch)
        fit(mlp([3, 4, 1], "relu", task="binary"), X, labels, loss="bce", optimizer=SGD(0.1), epochs=1,
            validation_split=0.3, seed=seed)
        (_, _, (_, y_val)), = calls
        assert_stratified(labels, y_val, 0.3)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5, "a", "0.2", True, [0.2], float("nan"), 0.001])
def test_validation_split_bad_fractions_are_config_errors(fraction):
    X, y = indexed_data()
    with pytest.raises(ConfigError, match="validation_split"):
        fit(linear(3), X, y, loss="mse", optimizer=SGD(0.01), epochs=1, validation_split=fraction)


def test_validation_split_and_validation_data_together_is_a_config_error():
    X, y = indexed_data()
    with pytest.raises(ConfigError, match="validation_data or validation_split"):
        fit(linear(3), X, y, loss="mse", optimizer=SGD(0.01), epochs=1, validation_split=0.2,
            validation_data=(X[:5], y[:5]))


# ------------------------------------------------------------ JSON-lines and CSV logs

LOG_KEYS = ("epoch", "loss", "val_loss", "lr", "grad_norm", "update_ratio", "seconds")


def strict_json(line):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def norm(state):
    return math.sqrt(sum(float(np.vdot(a, a)) for a in state.values()))


def ratio(after, before):
    return math.sqrt(sum(float(np.vdot(after[k] - before[k], after[k] - before[k])) for k in after)) / norm(before)


def logged_run(tmp_path, batch_size, validation=True):
    """A run with both loggers; the linear model starts at zero weights."""
    X, y = line_data(n=20)
    snaps = Snapshots()
    jsonl, csv = tmp_path / "run.jsonl", tmp_path / "run.csv"
    history = fit(linear(2), X, y, loss="mse", optimizer=SGD(0.05), epochs=4, batch_size=batch_size,
                  validation_data=(X[:6] + 0.5, y[:6]) if validation else None,
                  callbacks=[snaps, JSONLinesLogger(jsonl), CSVLogger(csv)])
    lines = jsonl.read_text().splitlines()
    return X, y, history, snaps, [strict_json(line) for line in lines], pd.read_csv(csv)


@pytest.mark.parametrize("batch_size", [None, 6])
def test_jsonl_one_line_per_epoch_with_the_epochs_numbers(tmp_path, batch_size):
    X, y, history, snaps, rows, _ = logged_run(tmp_path, batch_size)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert set(LOG_KEYS) <= set(r)
        assert isinstance(r["seconds"], float) and r["seconds"] >= 0
    for key in ("loss", "val_loss", "lr"):
        assert [r[key] for r in rows] == history.history[key]
    # All-zero starting weights: no relative update on epoch 1; then ||w_after - w_before|| / ||w_before||.
    assert rows[0]["update_ratio"] is None
    for r in rows[1:]:
        e = r["epoch"]
        assert r["update_ratio"] == pytest.approx(ratio(snaps.epochs[e], snaps.epochs[e - 1]), rel=1e-12)
    if batch_size is None:  # the epoch's gradient, by hand: 2 X^T (Xw + b - y) / n and its sum for b
        for r in rows:
            w = snaps.epochs[r["epoch"] - 1]
            residual = X @ w["0.W"][:, 0] + w["0.b"][0] - y
            gW, gb = 2 * X.T @ residual / len(y), 2 * residual.sum() / len(y)
            assert r["grad_norm"] == pytest.approx(math.sqrt(gW @ gW + gb * gb), rel=1e-10)


def test_jsonl_update_ratio_on_a_network_from_its_first_epoch(tmp_path):
    X, y = line_data(n=20)
    snaps, path = Snapshots(), tmp_path / "net.jsonl"
    fit(mlp([2, 5, 1], "tanh", seed=1), X, y, loss="mse", optimizer=Adam(0.01), epochs=3, batch_size=7,
        callbacks=[snaps, JSONLinesLogger(path)])
    rows = [strict_json(line) for line in path.read_text().splitlines()]
    for r in rows:
        e = r["epoch"]
        assert r["update_ratio"] == pytest.approx(ratio(snaps.epochs[e], snaps.epochs[e - 1]), rel=1e-12)


@pytest.mark.parametrize("batch_size", [None, 6])
def test_csv_log_is_readable_by_pandas_with_the_columns(tmp_path, batch_size):
    _, _, history, _, rows, frame = logged_run(tmp_path, batch_size)
    assert set(LOG_KEYS) <= set(frame.columns) and len(frame) == 4
    assert frame["epoch"].tolist() == [1, 2, 3, 4]
    assert math.isnan(frame["update_ratio"][0])  # written empty
    for key in ("loss", "val_loss", "lr", "update_ratio", "grad_norm"):
        assert frame[key][1:].tolist() == pytest.approx([r[key] for r in rows[1:]], rel=1e-12)
    assert (frame["seconds"] >= 0).all()


def test_logs_without_validation_leave_val_loss_empty(tmp_path):
    _, _, history, _, rows, frame = logged_run(tmp_path, None, validation=False)
    assert "val_loss" not in history.history
    assert all(r["val_loss"] is None for r in rows) and frame["val_loss"].isna().all()


@overflows
def test_jsonl_is_strict_json_when_a_loss_is_infinite(tmp_path):
    # One validation row at 1e200: its squared error overflows, the validation loss is inf.
    X, y = line_data(n=20)
    X_val = X[:3].copy()
    X_val[0, 0] = 1e200
    path = tmp_path / "inf.jsonl"
    history = fit(linear(2), X, y, loss="mse", optimizer=SGD(0.05), epochs=3, validation_data=(X_val, y[:3]),
                  callbacks=[JSONLinesLogger(path)])
    assert math.isinf(history.history["val_loss"][-1])
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    rows = [strict_json(line) for line in text.splitlines()]
    assert rows[-1]["val_loss"] is None and rows[-1]["loss"] == history.history["loss"][-1]
