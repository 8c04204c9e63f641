"""gradcheck: every shipped layer and loss passes; a custom layer with a wrong backward is caught."""

import re

import numpy as np
import pytest

import gradloop
from gradloop.errors import GradloopError
from gradloop.layers import Dense, Dropout, Layer, LeakyReLU, ReLU, Sigmoid, Tanh
from gradloop.loop import fit
from gradloop.models import Sequential, mlp
from gradloop.optimizers import SGD

rng = np.random.default_rng(0)
X = rng.standard_normal((40, 4))


class Square(Layer):
    """y = x**2, with a backward that forgets the factor 2 (or not)."""

    def __init__(self, correct):
        super().__init__()
        self.correct = correct

    def forward(self, x):
        self._x = x
        return x * x

    def backward(self, grad_out):
        return grad_out * self._x * (2.0 if self.correct else 1.0)


class Scale(Layer):
    """y = x * s, with s a learnable (features,) parameter; a wrong sign in its gradient (or not)."""

    def __init__(self, features, correct):
        super().__init__()
        self.params["s"] = np.full(features, 1.5)
        self.grads["s"] = np.zeros(features)
        self.correct = correct

    def forward(self, x):
        self._x = x
        return x * self.params["s"]

    def backward(self, grad_out):
        self.grads["s"][...] = (1.0 if self.correct else -1.0) * (grad_out * self._x).sum(axis=0)
        return grad_out * self.params["s"]


@pytest.mark.parametrize("activation", [ReLU, LeakyReLU, Tanh, Sigmoid])
@pytest.mark.parametrize("loss, outputs, y", [
    ("mse", 2, rng.standard_normal((40, 2))),
    ("mae", 1, rng.standard_normal(40)),
    ("huber", 1, 3 * rng.standard_normal(40)),
    ("bce", 1, rng.integers(0, 2, 40)),
    ("cross-entropy", 3, rng.integers(0, 3, 40)),
])
def test_every_shipped_layer_and_loss_passes(activation, loss, outputs, y):
    model = Sequential([Dense(4, 6, seed=1), activation(), Dropout(0.3, seed=2), Dense(6, outputs, seed=3)],
                       task={"bce": "binary", "cross-entropy": "multiclass"}.get(loss, "regression"))
    result = gradloop.gradcheck(model, loss, X, y)
    assert result.passed, str(result)
    assert [(c.layer, c.name) for c in result.parameters] == [
        (0, "W"), (0, "b"), (1, "input gradient"), (2, "input gradient"), (3, "W"), (3, "b"), (3, "input gradient")]
    assert all(c.max_relative_error < 1e-6 for c in result.parameters)


def test_a_large_parameter_is_checked_on_a_sample_and_a_direction():
    model = mlp([300, 2, 1], "tanh")
    result = gradloop.gradcheck(model, "mse", rng.standard_normal((30, 300)), rng.standard_normal(30),
                                max_entries=50)
    first = result.parameters[0]
    assert result.passed and first.entries == 50 and first.name == "W"


@pytest.mark.parametrize("wrong, where", [(Square(correct=False), "layer 1 (Square), its gradient for its input"),
                                          (Scale(5, correct=False), "layer 1 (Scale), parameter 's'")])
def test_a_custom_layer_with_a_wrong_backward_is_caught_before_any_update(wrong, where):
    model = Sequential([Dense(4, 5, seed=1), wrong, Dense(5, 1, seed=2)])
    result = gradloop.gradcheck(model, "mse", X, rng.standard_normal(40))
    assert not result.passed and "WRONG" in str(result)
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(GradloopError, match=re.escape(f"gradient check failed before any update: {where}")):
        fit(model, X, rng.standard_normal(40), loss="mse", optimizer=SGD(0.01), epochs=3, check_gradients=True)
    assert all(np.array_equal(a, b) for a, b in zip(model.parameters(), before))


def test_a_correct_custom_layer_passes_and_trains():
    model = Sequential([Dense(4, 5, seed=1), Scale(5, correct=True), Square(correct=True), Dense(5, 1, seed=2)])
    y = (X ** 2).sum(axis=1)
    assert gradloop.gradcheck(model, "mse", X, y).passed
    history = fit(model, X, y, loss="mse", optimizer=SGD(0.001), epochs=30, check_gradients=True)
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_the_check_leaves_the_model_as_it_was():
    model = mlp([4, 6, 1], "relu", dropout=0.2)
    state = [p.copy() for p in model.parameters()]
    gradloop.gradcheck(model, "mse", X, rng.standard_normal(40))
    assert all(np.array_equal(a, b) for a, b in zip(model.parameters(), state)) and model.training


def test_the_command_line_checks_gradients(cli, tmp_path):
    import pandas as pd

    frame = pd.DataFrame(X, columns=list("abcd")).assign(y=rng.standard_normal(40))
    frame.to_csv(tmp_path / "d.csv", index=False)
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--model", "mlp", "--hidden", "4",
                           "--epochs", "2", "--check-gradients")
    assert status == 0, err
