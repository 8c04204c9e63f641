"""gradloop.defaults: every default learning rate and epoch count, in one place, for the command line
and the estimators; each table entry checked against what the two actually do."""

import numpy as np
import pytest

from gradloop.defaults import (COMMAND_LINE_EPOCHS, ESTIMATOR_EPOCHS, SMOOTHNESS, command_line_lr,
                               command_line_takes_auto, estimator_lr)
from gradloop.losses import get_loss
from gradloop.sums import lipschitz


@pytest.mark.parametrize("lr,linear_mse,optimizer,auto", [
    (None, True, "sgd", True), ("auto", True, "adam", True), (None, True, "adam", False),
    (None, False, "sgd", False), (0.1, True, "sgd", False), (None, True, "momentum", False),
])
def test_the_command_line_takes_one_over_l_only_for_sgd_on_the_linear_mse_or_when_asked(lr, linear_mse, optimizer,
                                                                                      auto):
    assert command_line_takes_auto(lr, linear_mse, optimizer) is auto


def test_the_command_line_defaults_otherwise():
    assert [command_line_lr(o) for o in ("sgd", "momentum", "nesterov", "adam", "adamw")] == \
        [0.01, 0.01, 0.01, 0.001, 0.001]


def test_the_estimators_table():
    X = np.random.default_rng(0).standard_normal((50, 3))
    L = lipschitz(X, bias=True)
    mse, ce = get_loss("mse"), get_loss("cross-entropy")
    assert estimator_lr("linear", "adam", mse, 1, lambda: L) == 1e-2
    assert estimator_lr("mlp", "adam", mse, 1, lambda: L) == 1e-3
    assert estimator_lr("mlp", "sgd", mse, 1, lambda: L) == 1e-2
    assert estimator_lr("mlp", "momentum", mse, 1, lambda: L) == 1e-3
    assert estimator_lr("linear", "sgd", mse, 2, lambda: L) == pytest.approx(2 / L)  # the loss averages k outputs
    assert estimator_lr("linear", "nesterov", ce, 3, lambda: L) == pytest.approx(1 / (L * SMOOTHNESS["cross-entropy"]))


def test_what_the_command_line_and_the_estimators_actually_use(cli, tmp_path):
    from gradloop.cli.options import DEFAULTS
    from gradloop.sklearn import GradloopRegressor

    assert DEFAULTS["epochs"] == COMMAND_LINE_EPOCHS and GradloopRegressor().epochs == ESTIMATOR_EPOCHS
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 2))
    y = X @ [1.0, 2.0]
    model = GradloopRegressor(epochs=1).fit(X, y)
    Xs = (X - X.mean(axis=0)) / X.std(axis=0)  # the estimator standardizes by default
    assert model.lr_ == pytest.approx(1.0 / lipschitz(Xs, bias=True), rel=1e-12)
    import pandas as pd

    pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": y}).to_csv(tmp_path / "d.csv", index=False)
    out = cli("train", tmp_path / "d.csv", "--target", "y", "--model", "mlp", "--hidden", "3", "--epochs", "1")[1]
    assert "lr 0.01," in out
    out = cli("train", tmp_path / "d.csv", "--target", "y", "--optimizer", "adam", "--epochs", "1")[1]
    assert "lr 0.001," in out
