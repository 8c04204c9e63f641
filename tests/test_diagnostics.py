"""Diagnostics: runs built to go wrong are diagnosed (with the layer, the epoch, the number and a
remedy); a healthy run says nothing."""

import json

import numpy as np
import pandas as pd
import pytest

from gradloop.callbacks import Diagnostics
from gradloop.errors import DivergenceError
from gradloop.loop import fit
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD

rng = np.random.default_rng(0)
X = rng.standard_normal((200, 4))
y = X @ [1.0, 2.0, 3.0, 4.0]


def _kinds(diagnostics):
    return {f.kind: f for f in diagnostics.findings}


@pytest.mark.parametrize("batch_size", [None, 16])
def test_dead_relu_units_are_found_and_counted(batch_size):
    model = mlp([4, 16, 1], "relu", seed=0)
    model.layers[0].params["b"][:8] = -100.0  # these 8 units can never fire on this data
    diagnostics = Diagnostics()
    fit(model, X, y, loss="mse", optimizer=SGD(0.001), epochs=3, batch_size=batch_size, callbacks=[diagnostics])
    dead = _kinds(diagnostics)["dead ReLU"]
    assert dead.where == "layer 1 (ReLU)" and dead.epoch == 1 and dead.value == pytest.approx(0.5)
    assert "8 of 16 units (50%)" in dead.message and "leaky-relu" in dead.remedy


def test_saturated_tanh_units_are_found():
    model = mlp([4, 16, 1], "tanh", seed=0)
    model.layers[0].params["W"] *= 100.0
    diagnostics = Diagnostics()
    fit(model, X, y, loss="mse", optimizer=SGD(1e-4), epochs=2, callbacks=[diagnostics])
    saturated = _kinds(diagnostics)["saturation"]
    assert saturated.where == "layer 1 (Tanh)" and saturated.value > 0.9


def test_a_learning_rate_above_the_stable_bound_is_said_before_the_run_diverges():
    stable = 2.0 / (2 * np.linalg.eigvalsh(X.T @ X / len(X))[-1])
    diagnostics = Diagnostics(stable_lr=stable)
    with pytest.raises(DivergenceError):
        fit(linear(4, 1, bias=False), X, y, loss="mse", optimizer=SGD(1.5 * stable), epochs=500,
            callbacks=[diagnostics])
    finding = _kinds(diagnostics)["learning rate"]
    assert finding.epoch == 0 and finding.value == pytest.approx(1.5 * stable) and "2/L" in finding.message


def test_a_stalled_loss_and_an_oscillating_one():
    stalled = Diagnostics()
    fit(linear(4, 1), X, y, loss="mse", optimizer=SGD(1e-9), epochs=25, callbacks=[stalled])
    assert _kinds(stalled)["plateau"].epoch == 21
    shaking = Diagnostics()
    fit(mlp([4, 16, 1], "relu", seed=0), X, y + 3 * rng.standard_normal(200), loss="mse", optimizer=SGD(0.05),
        epochs=40, batch_size=8, callbacks=[shaking])
    assert "oscillation" in _kinds(shaking)


def test_a_healthy_run_says_nothing():
    diagnostics = Diagnostics()
    fit(mlp([4, 16, 1], "relu", seed=0), X, y, loss="mse", optimizer=SGD(0.01), epochs=30, callbacks=[diagnostics])
    assert diagnostics.findings == [] and diagnostics.summary() == ""


def test_the_command_line_diagnoses_unscaled_features_and_logs_the_finding(cli, tmp_path):
    frame = pd.DataFrame(X * [1.0, 1.0, 1.0, 100.0], columns=list("abcd")).assign(y=y)
    frame.to_csv(tmp_path / "d.csv", index=False)
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--epochs", "5",
                           "--log", tmp_path / "run.jsonl")
    assert status == 0, err
    assert "gradloop: diagnosis: 2 finding(s): feature scales (features 'd' and " in out
    first = json.loads(open(tmp_path / "run.jsonl").readline())
    assert first["findings"][0]["kind"] == "feature scales" and first["findings"][0]["value"] > 10
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--epochs", "5", "--diagnose")
    assert "standardize the features (--standardize)" in out
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--epochs", "5", "--standardize")
    assert status == 0 and "diagnosis" not in out


def test_a_resumed_run_does_not_report_again_what_it_reported(cli, tmp_path):
    frame = pd.DataFrame(X * [1.0, 1.0, 1.0, 100.0], columns=list("abcd")).assign(y=y)
    frame.to_csv(tmp_path / "d.csv", index=False)
    common = ["train", tmp_path / "d.csv", "--target", "y", "--lr", "1e-6", "--test-size", "0"]
    assert cli(*common, "--epochs", "8", "--log", tmp_path / "whole.jsonl")[0] == 0
    assert cli(*common, "--epochs", "4", "--log", tmp_path / "run.jsonl", "--checkpoint", tmp_path / "ck")[0] == 0
    status, out, err = cli("train", "--resume", tmp_path / "ck", "--epochs", "8")
    assert status == 0, err

    def findings(path):
        return [(line["epoch"], f["kind"]) for line in map(json.loads, open(path)) if "epoch" in line
                for f in line.get("findings", [])]

    assert findings(tmp_path / "run.jsonl") == findings(tmp_path / "whole.jsonl") == [(1, "feature scales")]


def test_a_continuous_target_trained_as_classes_is_said(cli, tmp_path):
    frame = pd.DataFrame(X, columns=list("abcd")).assign(y=np.round(y, 2))
    frame.to_csv(tmp_path / "d.csv", index=False)
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--loss", "cross-entropy", "--model",
                           "mlp", "--hidden", "4", "--epochs", "1", "--diagnose", "--test-size", "0")
    assert status == 0, err
    assert "classes, and labels like" in out and "the target looks continuous" in out
    assert "train a regression (--loss mse) instead of a classifier" in out


def test_the_report_has_a_health_section_with_the_findings(cli, tmp_path):
    frame = pd.DataFrame(X * [1.0, 1.0, 1.0, 100.0], columns=list("abcd")).assign(y=y)
    frame.to_csv(tmp_path / "d.csv", index=False)
    assert cli("train", tmp_path / "d.csv", "--target", "y", "--epochs", "3", "--log", tmp_path / "run.jsonl")[0] == 0
    assert cli("report", tmp_path / "run.jsonl", "-o", tmp_path / "r.html")[0] == 0
    page = (tmp_path / "r.html").read_text()
    assert "<h2>Health</h2>" in page and "standardize the features (--standardize)" in page
    frame.assign(d=X[:, 3]).to_csv(tmp_path / "ok.csv", index=False)
    assert cli("train", tmp_path / "ok.csv", "--target", "y", "--epochs", "3", "--log", tmp_path / "ok.jsonl")[0] == 0
    assert cli("report", tmp_path / "ok.jsonl", "-o", tmp_path / "ok.html")[0] == 0
    assert "Health" not in (tmp_path / "ok.html").read_text()


def test_the_command_line_compares_an_unscaled_run_with_the_optimum_and_checks_any_lr(cli, tmp_path):
    from gradloop.chapter import least_squares

    scaled = X * [1.0, 1.0, 1.0, 100.0]
    frame = pd.DataFrame(scaled, columns=list("abcd")).assign(y=y + 0.1 * rng.standard_normal(200))
    frame.to_csv(tmp_path / "d.csv", index=False)
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--epochs", "20", "--test-size", "0",
                           "--diagnose")
    assert status == 0, err
    best = least_squares(scaled, frame.y.to_numpy()).loss
    assert f"against the least-squares optimum {best:.6g}" in out
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--standardize", "--lr", "1.5",
                           "--epochs", "40", "--diagnose")
    assert "lr 1.5 is at or above the stable bound 2/L" in out and status == 3


def test_a_run_converged_to_a_high_loss_is_not_a_plateau():
    """Noise for a target: the least-squares loss is almost the starting loss; a run that reaches it has
    converged (its gradient has vanished), which is not a stall to report."""
    noise = rng.standard_normal(200)
    L = 2 * np.linalg.eigvalsh(np.c_[X, np.ones(200)].T @ np.c_[X, np.ones(200)] / 200)[-1]
    diagnostics = Diagnostics()
    fit(linear(4, 1), X, noise, loss="mse", optimizer=SGD(1 / L), epochs=200, callbacks=[diagnostics])
    assert diagnostics.findings == []
