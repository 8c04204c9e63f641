"""Tests for gradloop.chapter: divergence and the stable learning rate, the chapter's rounding, and bad inputs (also on large data, checked after the first pass)."""

from __future__ import annotations

import numpy as np
import pytest

import gradloop
from gradloop import ConfigError, DataError, DivergenceError, GradloopError
from gradloop.layers import Dense
from test_chapter import hessian_L, make_data, rel


# ------------------------------------------------------------ divergence


@pytest.mark.parametrize("bias", [None, 0.0])
def test_divergence_keeps_last_finite_weights(bias):
    X, Y = make_data(n=50, d=3, seed=9)
    L = hessian_L(X, bias is not None)
    lr = 3 * 2 / L
    W0 = np.full(3, 0.1)
    with pytest.raises(DivergenceError) as info:
        gradloop.train(X, Y, W0, lr, 1000, bias=bias)
    exc = info.value
    assert exc.epoch > 1
    assert exc.stable_lr == pytest.approx(2 / L, rel=1e-8)
    assert exc.lr == lr
    before = gradloop.train(X, Y, W0, lr, exc.epoch - 1, bias=bias)
    if bias is None:
        assert exc.weights.shape == W0.shape
        np.testing.assert_array_equal(exc.weights, before)
    else:
        np.testing.assert_array_equal(exc.weights, before[0])
        assert isinstance(exc.bias, float) and exc.bias == before[1]
    message = str(exc)
    assert f"epoch {exc.epoch}" in message
    assert f"{2 / L:.6g}" in message
    assert "standardize" not in message
    assert isinstance(exc, GradloopError) and isinstance(exc, ValueError)


@pytest.mark.parametrize("gradient", ["layers", "gram", "stream"])
def test_divergence_weights_bit_for_bit_on_large_data(gradient):
    # "auto" chooses the executor by cost (epochs vs columns), so bit-identity across
    # different epoch counts needs the executor pinned; each is then exact.
    X, Y = make_data(n=10000, d=3, seed=26)
    lr = 100 * 2 / hessian_L(X, False)  # diverges at epoch 2
    W0 = np.full(3, 0.1)
    with pytest.raises(DivergenceError) as info:
        gradloop.train(X, Y, W0, lr, 1000, gradient=gradient)
    np.testing.assert_array_equal(info.value.weights,
                                  gradloop.train(X, Y, W0, lr, info.value.epoch - 1, gradient=gradient))


def manual_gd(X, Y, W, lr, epochs, b=None):
    for _ in range(epochs):
        if b is None:
            W = W - lr * gradloop.gradients(X, Y, W)
        else:
            gW, gb = gradloop.gradients(X, Y, W, b)
            W, b = W - lr * gW, b - lr * gb
    return W if b is None else (W, b)


@pytest.mark.parametrize("n,d,epochs", [
    (8000, 3, 10),  # Gram kernel (epochs > d, X.size >= 20000)
    (450_000, 10, 3),  # streaming kernel (X >= 32 MiB, epochs <= d)
])
def test_large_data_kernels_follow_the_chapter_update(n, d, epochs):
    X, Y = make_data(n=n, d=d, seed=27)
    W0, b0, lr = np.zeros(d), np.array([0.0]), 0.05
    W, b = gradloop.train(X, Y, W0, lr, epochs, bias=b0)
    W_ref, b_ref = manual_gd(X, Y, W0, lr, epochs, b0)
    assert rel(W, W_ref) < 1e-12 and rel(b, b_ref) < 1e-12
    run = gradloop.fit_linear(X, Y, W0, lr, epochs, bias=0.0, keep_records=True)
    first, last = run.history.records[0], run.history.records[-1]
    gW, gb = gradloop.gradients(X, Y, W0, 0.0)
    np.testing.assert_allclose(first.gradients[0][:, 0], gW, rtol=1e-12)
    np.testing.assert_allclose(first.gradients[1], [gb], rtol=1e-12)
    np.testing.assert_array_equal(first.pred_head, 0.0)
    assert first.loss == pytest.approx(gradloop.loss(Y, np.zeros(n)), rel=1e-12)
    np.testing.assert_allclose(last.new_pred_head[:, 0], X[:5] @ run.weights + run.bias, rtol=1e-12)
    assert last.new_loss == pytest.approx(gradloop.loss(Y, X @ run.weights + run.bias), rel=1e-12)


def test_divergence_to_infinity_at_first_epoch_keeps_start_weights():
    X, Y = make_data(n=20, d=2, seed=10)
    W0 = np.array([[0.5], [-0.5]])
    with pytest.raises(DivergenceError) as info:
        gradloop.train(X, Y[:, None], W0, 1e200, 5)
    assert info.value.epoch == 1
    np.testing.assert_array_equal(info.value.weights, W0)
    assert info.value.weights.shape == (2, 1)


def test_divergence_message_suggests_standardizing_uneven_scales():
    X, Y = make_data(n=50, d=3, seed=11, scales=[1000.0, 1.0, 0.5])
    lr = 5 * 2 / hessian_L(X, False)
    with pytest.raises(DivergenceError, match=r"standardize them \(gradloop.data.Standardizer\)") as info:
        gradloop.train(X, Y, np.zeros(3), lr, 500)
    assert "--" not in str(info.value)  # the library speaks of arguments, not command-line options
    assert info.value.stable_lr == pytest.approx(2 / hessian_L(X, False), rel=1e-8)


def test_multi_output_stable_lr_is_stable():
    # The loss averages over the k outputs, so its L is lipschitz(X) / k: 2 / that is the real limit.
    X, Y = make_data(n=60, d=3, k=2, seed=12)
    L = hessian_L(X, False) / 2
    W = gradloop.train(X, Y, np.zeros((3, 2)), 0.95 * 2 / L, 3000)
    best = np.linalg.lstsq(X, Y, rcond=None)[0]
    assert rel(W, best) < 1e-6
    with pytest.raises(DivergenceError) as info:
        gradloop.train(X, Y, np.zeros((3, 2)), 1.5 * 2 / L, 3000)
    assert info.value.stable_lr == pytest.approx(2 / L, rel=1e-8)


@pytest.mark.parametrize("where", ["X", "Y", "weights", "bias"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_rejected_before_training(where, bad, monkeypatch):
    calls = []
    monkeypatch.setattr(Dense, "forward", lambda self, x: calls.append(1))
    args = {"X": np.ones((4, 2)), "Y": np.ones(4), "weights": np.zeros(2), "bias": np.zeros(1)}
    args[where] = args[where].copy()
    args[where].flat[-1] = bad
    with pytest.raises(DataError, match=f"{where} holds a non-finite value"):
        gradloop.train(args["X"], args["Y"], args["weights"], 0.1, 3, bias=args["bias"])
    assert calls == []


# ------------------------------------------------------------ rounding


def test_round_to_stalls_where_unrounded_keeps_improving():
    X, Y, W0 = np.array([[1.0]]), np.array([[1.0]]), np.array([[0.99]])
    # Each step moves w by lr * 2 * (1 - w); once that is below 0.0005, rounding to 3 decimals undoes it.
    stalled = gradloop.train(X, Y, W0, 0.1, 40, round_to=3)
    np.testing.assert_array_equal(stalled, [[0.998]])
    np.testing.assert_array_equal(gradloop.train(X, Y, W0, 0.1, 80, round_to=3), stalled)
    run = gradloop.fit_linear(X, Y, W0, 0.1, 40, round_to=3)
    losses = run.history.history["new_loss"]
    assert losses[-1] == losses[-10] > 0  # stuck
    free = gradloop.train(X, Y, W0, 0.1, 40)
    assert abs(free[0, 0] - 1) < abs(stalled[0, 0] - 1) / 100
    free_losses = gradloop.fit_linear(X, Y, W0, 0.1, 40).history.history["new_loss"]
    assert free_losses[-1] < free_losses[-10]


def test_round_to_rounds_gradients_and_weights_and_is_off_by_default():
    X, Y = make_data(n=20, d=2, seed=13)
    run = gradloop.fit_linear(X, Y, np.zeros(2), 0.1234, 3, round_to=3, keep_records=True)
    for record in run.history.records:
        for a in record.gradients + record.weights:
            np.testing.assert_array_equal(a, np.round(a, 3))
    plain = gradloop.train(X, Y, np.zeros(2), 0.1234, 3)
    assert not np.array_equal(plain, np.round(plain, 3))


# ------------------------------------------------------------ bad inputs

GOOD = {"X": np.ones((4, 2)), "Y": np.ones(4), "weights": np.zeros(2), "lr": 0.1, "epochs": 3}

BAD_INPUTS = [
    # (label, overrides, keyword args, exception, message fragment)
    ("X 1-D", {"X": np.ones(4)}, {}, DataError, "X must be 2-D"),
    ("X 3-D", {"X": np.ones((4, 2, 1))}, {}, DataError, "X must be 2-D"),
    ("X empty rows", {"X": np.ones((0, 2)), "Y": np.ones(0)}, {}, DataError, "X has no rows"),
    ("X empty cols", {"X": np.ones((4, 0)), "weights": np.zeros(0)}, {}, DataError, "X has no columns"),
    ("row counts", {"Y": np.ones(3)}, {}, DataError, "X has 4 rows but Y has 3"),
    ("Y 3-D", {"Y": np.ones((4, 1, 1))}, {}, DataError, "Y must be"),
    ("weights length", {"weights": np.zeros(3)}, {}, DataError, "weights have shape (3,)"),
    ("weights outputs", {"weights": np.zeros((2, 2))}, {}, DataError, "weights have shape (2, 2)"),
    ("weights 1-D for k outputs", {"Y": np.ones((4, 2))}, {}, DataError, "weights of shape (2,)"),
    ("bias size", {}, {"bias": np.zeros(2)}, DataError, "bias has 2 values"),
    ("X nan", {"X": np.array([[1.0, np.nan]] * 4)}, {}, DataError, "X holds a non-finite value"),
    ("Y inf", {"Y": np.array([1.0, 2.0, np.inf, 0.0])}, {}, DataError, "Y holds a non-finite value"),
    ("weights nan", {"weights": np.array([0.0, np.nan])}, {}, DataError, "weights holds a non-finite value"),
    ("bias nan", {}, {"bias": np.nan}, DataError, "bias holds a non-finite value"),
    ("X strings", {"X": np.array([["a", "b"]] * 4)}, {}, DataError, "X must hold numbers"),
    ("Y strings", {"Y": ["a", "b", "c", "d"]}, {}, DataError, "Y must hold numbers"),
    ("X object", {"X": np.array([[1, None]] * 4, dtype=object)}, {}, DataError, "X must hold numbers"),
    ("X ragged", {"X": [[1.0, 2.0], [3.0]]}, {}, DataError, "X is not an array of numbers"),
    ("weights strings", {"weights": ["a", "b"]}, {}, DataError, "weights must hold numbers"),
    ("X complex", {"X": np.ones((4, 2), dtype=complex)}, {}, DataError, "X must hold real numbers"),
    ("lr zero", {"lr": 0}, {}, ConfigError, "lr must be a positive finite number"),
    ("lr negative", {"lr": -0.1}, {}, ConfigError, "lr must be a positive finite number, got -0.1"),
    ("lr nan", {"lr": float("nan")}, {}, ConfigError, "lr must be a positive finite number, got nan"),
    ("lr inf", {"lr": float("inf")}, {}, ConfigError, "lr must be a positive finite number, got inf"),
    ("lr string", {"lr": "fast"}, {}, ConfigError, "lr must be a positive number or 'auto', got 'fast'"),
    ("lr None", {"lr": None}, {}, ConfigError, "lr must be a positive number or 'auto', got None"),
    ("lr bool", {"lr": True}, {}, ConfigError, "lr must be a positive number or 'auto', got True"),
    ("epochs negative", {"epochs": -1}, {}, ConfigError, "epochs must be a non-negative integer, got -1"),
    ("epochs float", {"epochs": 2.0}, {}, ConfigError, "epochs must be a non-negative integer, got 2.0"),
    ("epochs string", {"epochs": "3"}, {}, ConfigError, "epochs must be a non-negative integer, got '3'"),
    ("epochs bool", {"epochs": True}, {}, ConfigError, "epochs must be a non-negative integer, got True"),
    ("every zero", {}, {"every": 0}, ConfigError, "every must be a positive integer, got 0"),
    ("every float", {}, {"every": 1.5}, ConfigError, "every must be a positive integer, got 1.5"),
    ("every None", {}, {"every": None}, ConfigError, "every must be a positive integer, got None"),
    ("round_to negative", {}, {"round_to": -1}, ConfigError, "round_to must be an integer in [0, 15]"),
    ("round_to float", {}, {"round_to": 3.0}, ConfigError, "round_to must be an integer in [0, 15]"),
    ("round_to bool", {}, {"round_to": True}, ConfigError, "round_to must be an integer in [0, 15]"),
    ("round_to big", {}, {"round_to": 16}, ConfigError, "round_to must be an integer in [0, 15]"),
]


@pytest.mark.parametrize("label,overrides,kwargs,error,fragment", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_inputs(label, overrides, kwargs, error, fragment):
    args = {**GOOD, **overrides}
    with pytest.raises(error) as info:
        gradloop.train(args["X"], args["Y"], args["weights"], args["lr"], args["epochs"], **kwargs)
    assert fragment in str(info.value)
    assert isinstance(info.value, GradloopError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("fn", ["gradients", "evaluate"])
def test_gradients_and_evaluate_validate_too(fn):
    with pytest.raises(DataError, match="X must be 2-D"):
        getattr(gradloop, fn)(np.ones(3), np.ones(3), np.zeros(1))
    with pytest.raises(DataError, match="weights have shape"):
        getattr(gradloop, fn)(np.ones((3, 2)), np.ones(3), np.zeros(3))


@pytest.mark.parametrize("gradient,epochs", [("auto", 2), ("auto", 200), ("stream", 2), ("gram", 2)])
@pytest.mark.parametrize("where,value", [("X", np.nan), ("X", np.inf), ("Y", -np.inf)])
def test_a_non_finite_value_in_large_data_is_named_after_the_first_pass(gradient, epochs, where, value,
                                                                         monkeypatch):
    # Large X skips the separate finiteness pass: the streaming or Gram pass carries the
    # value into the starting loss, and only then is the data searched. Same DataError.
    import gradloop.chapter as chapter
    import gradloop.fast.kernels as kernels

    for module in (chapter, kernels):  # "large" from 1 KiB: auto picks stream, or gram for 200 epochs
        monkeypatch.setattr(module, "STREAM_MIN_BYTES", 1 << 10)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((6000, 4)), rng.standard_normal((6000, 1))
    clean = gradloop.fit_linear(X, Y, np.zeros((4, 1)), 0.01, epochs, gradient=gradient)
    assert clean.history.gradient_mode == ("gram" if gradient == "gram" or epochs > 4 else "stream")
    (X if where == "X" else Y)[1234, 0] = value
    with pytest.raises(DataError, match=rf"{where} holds a non-finite value \({value}\) at index \(1234, 0\)"):
        gradloop.train(X, Y, np.zeros((4, 1)), 0.01, epochs, gradient=gradient)


def test_large_data_whose_start_overflows_still_reports_divergence(monkeypatch):
    # Finite data whose squares overflow: the data search finds nothing, the DivergenceError stands.
    import gradloop.chapter as chapter
    import gradloop.fast.kernels as kernels

    for module in (chapter, kernels):
        monkeypatch.setattr(module, "STREAM_MIN_BYTES", 1 << 10)
    X = np.full((2000, 2), 1e200)
    with pytest.raises(DivergenceError, match="starting weights"):
        gradloop.train(X, np.ones(2000), np.ones(2), 0.01, 2)
