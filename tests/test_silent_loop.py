"""The compiled silent loop (gradloop.fast.silent) against the Python loop it stands in for.

A silent full-batch linear-MSE run with plain SGD runs every epoch in one compiled call.
Its sums add their terms in another order than NumPy's BLAS, so it is checked within
1e-14 relative in float64 (1e-5 in float32) against the Python loop on the same problem:
weights, bias, every epoch's loss and new loss, and the learning rates; with and without
a bias, one and two outputs, the chapter's rounding, a divergence (same epoch, same last
finite weights, same message), and a resumed run.
"""

from __future__ import annotations

import numpy as np
import pytest

import gradloop
from gradloop.checkpoint import CheckpointWriter, load
from gradloop.fast import silent
from gradloop.loop import fit
from gradloop.models import linear
from gradloop.optimizers import SGD

TOLERANCE = {np.float64: 1e-14, np.float32: 1e-5}
WORTH_COMPILING = silent.worth_compiling  # conftest turns it off for tests that do not ask for it


def data(n=100, d=3, k=1, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * np.linspace(0.5, 2.0, d)
    Y = X @ rng.normal(size=(d, k)) + 0.7 + 0.1 * rng.normal(size=(n, k))
    return X.astype(dtype), Y.astype(dtype)


def close(a, b, tolerance):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(a), np.abs(b))
    assert np.all(np.abs(a - b) <= tolerance * np.maximum(scale, 1e-300)), np.max(np.abs(a - b) / scale)


def both(monkeypatch, run):
    """``run()`` with the compiled loop and with the Python loop: (compiled, python)."""
    with monkeypatch.context() as patch:
        patch.setattr(silent, "worth_compiling", WORTH_COMPILING)
        patch.setattr(silent, "PYTHON_EPOCHS_BEFORE_LOADING", 0)
        fast = run()
    with monkeypatch.context() as patch:
        patch.setattr(silent, "worth_compiling", lambda epochs: False)
        slow = run()
    return fast, slow


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [None, 0.0])
@pytest.mark.parametrize("k", [1, 2])
def test_fit_linear_equals_the_python_loop(monkeypatch, dtype, bias, k):
    X, Y = data(k=k, dtype=dtype)
    W0 = np.zeros((3, k), dtype=dtype)
    b0 = None if bias is None else np.zeros(k)
    fast, slow = both(monkeypatch, lambda: gradloop.fit_linear(X, Y, W0, 0.05, 3000, bias=b0))
    assert fast.history.gradient_mode == "compiled" and slow.history.gradient_mode == "fused"
    tolerance = TOLERANCE[dtype]
    close(fast.weights, slow.weights, tolerance)
    assert fast.weights.dtype == slow.weights.dtype == dtype
    if bias is not None:
        close(fast.bias, slow.bias, tolerance)
    for key in ("loss", "new_loss", "lr"):
        assert len(fast.history.history[key]) == len(slow.history.history[key]) == 3000
        close(fast.history.history[key], slow.history.history[key], tolerance)
    assert all(type(v) is float for v in fast.history.history["loss"])
    assert fast.history.epochs_run == 3000 and not fast.history.stopped_early


def test_the_chapter_example_and_its_rounding(monkeypatch):
    X = np.array([[0.5], [1.0], [1.5], [2.0], [2.5], [3.0]])
    for round_to in (None, 3):
        fast, slow = both(monkeypatch, lambda: gradloop.fit_linear(X, 2 * X, np.array([[1.0]]), 0.0001, 1000,
                                                                   round_to=round_to))
        assert fast.history.gradient_mode == "compiled"
        close(fast.weights, slow.weights, 1e-14)
        close(fast.history.history["loss"], slow.history.history["loss"], 1e-14)
    # The rounded run stalls where the README says: the update rounds back to the same weights.
    assert fast.weights[0, 0] == 1.341


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("round_to", [2, 4])
def test_rounding_on_random_data(monkeypatch, round_to, dtype):
    X, Y = data(n=40, d=4, seed=3, dtype=dtype)
    fast, slow = both(monkeypatch, lambda: gradloop.fit_linear(X, Y, np.zeros((4, 1), dtype), 0.02, 500, bias=0.0,
                                                               round_to=round_to))
    # Rounded in the data's dtype, as np.round rounds: the weights land on the same decimals.
    close(fast.weights, slow.weights, TOLERANCE[dtype])
    close(fast.bias, slow.bias, TOLERANCE[dtype])
    close(fast.history.history["new_loss"], slow.history.history["new_loss"], TOLERANCE[dtype])


def test_divergence_stops_at_the_same_epoch_with_the_same_weights(monkeypatch):
    X = np.array([[0.5], [1.0], [1.5], [2.0], [2.5], [3.0]])

    def run():
        with pytest.raises(gradloop.DivergenceError) as exc:
            gradloop.train(X, 2 * X, np.array([[1.0]]), lr=1.0, epochs=100)
        return exc.value

    fast, slow = both(monkeypatch, run)
    assert str(fast) == str(slow)
    assert fast.epoch == slow.epoch == 4 and fast.stable_lr == slow.stable_lr
    close(fast.weights, slow.weights, 1e-14)


def test_a_nan_in_the_data_is_found_as_in_the_python_loop(compiled):
    X, Y = data()
    Y[5, 0] = np.nan
    with pytest.raises(gradloop.DataError, match="Y"):
        gradloop.train(X, Y, np.zeros((3, 1)), 0.05, 100)


def test_resumed_run_continues_compiled(monkeypatch, tmp_path):
    X, Y = data(n=50, d=3)

    def run():
        model = linear(3, 1)
        fit(model, X, Y, loss="mse", optimizer=SGD(0.05), epochs=5, callbacks=[CheckpointWriter(tmp_path / "c")])
        optimizer = SGD(0.05)
        history = fit(model, X, Y, loss="mse", optimizer=optimizer, epochs=400, resume=load(tmp_path / "c"))
        return model, history, optimizer

    (fast_model, fast, fast_opt), (slow_model, slow, slow_opt) = both(monkeypatch, run)
    assert fast.gradient_mode == "compiled" and fast_opt.steps == slow_opt.steps == 400
    assert len(fast.history["loss"]) == len(slow.history["loss"]) == 400
    for a, b in zip(fast_model.parameters(), slow_model.parameters()):
        close(a, b, 1e-14)


@pytest.mark.parametrize("what", ["records", "callback", "validation", "momentum", "clip", "fused", "few epochs"])
def test_runs_that_need_the_python_loop_keep_it(compiled, what):
    X, Y = data()
    kwargs = {"records": {"keep_records": True}, "callback": {"callbacks": [gradloop.Callback()]},
              "validation": {"validation_split": 0.2}, "clip": {"clip_norm": 1.0},
              "fused": {"gradient": "fused"}}.get(what, {})
    optimizer = SGD(0.05, momentum=0.9) if what == "momentum" else SGD(0.05)
    epochs = silent.MIN_EPOCHS - 1 if what == "few epochs" else 200
    history = fit(linear(3, 1), X, Y, loss="mse", optimizer=optimizer, epochs=epochs, **kwargs)
    assert history.gradient_mode == "fused"


def test_the_estimators_and_train_use_it(compiled):
    from gradloop.sklearn import GradloopRegressor

    X, Y = data()
    run = gradloop.fit_linear(X, Y, np.zeros((3, 1)), "auto", 500, bias=0.0)
    assert run.history.gradient_mode == "compiled"
    estimator = GradloopRegressor(epochs=500).fit(X, Y[:, 0])
    assert estimator.history_.gradient_mode == "compiled"


def test_the_loop_is_loaded_once_the_process_has_spent_long_in_python_epochs(monkeypatch):
    monkeypatch.setattr(silent, "worth_compiling", WORTH_COMPILING)
    monkeypatch.setattr(silent, "_python_epochs", 0)
    monkeypatch.setattr(silent, "PYTHON_EPOCHS_BEFORE_LOADING", 1000)
    monkeypatch.setattr(silent.linear_epochs, "loaded", lambda: False)
    assert not silent.worth_compiling(silent.MIN_EPOCHS - 1) and silent._python_epochs == 0
    assert not silent.worth_compiling(600) and silent._python_epochs == 600
    assert silent.worth_compiling(400)  # 600 + 400: the loop is worth loading now
    monkeypatch.setattr(silent.linear_epochs, "loaded", lambda: True)
    monkeypatch.setattr(silent, "_python_epochs", 0)
    assert silent.worth_compiling(silent.MIN_EPOCHS)  # loaded: every silent run of a few epochs takes it
