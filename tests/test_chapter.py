"""Tests for gradloop.chapter: the chapter's model, loss, gradients and train, and what a linear model lets us know exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradloop
from gradloop import DataError
from numerics import central_diff_of


def make_data(n=60, d=3, k=None, seed=0, scales=None, noise=0.1):
    """Well-conditioned regression data: X (n, d) standard normal, Y = X @ w + 0.7 + noise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if scales is not None:
        X = X * np.asarray(scales, dtype=float)
    shape = (d,) if k is None else (d, k)
    w = rng.standard_normal(shape)
    Y = X @ w + 0.7 + noise * rng.standard_normal((n,) if k is None else (n, k))
    return X, Y


def hessian_L(X, bias):
    A = np.hstack([X, np.ones((len(X), 1))]) if bias else X
    return np.linalg.eigvalsh(2 * A.T @ A / len(A))[-1]


def rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.linalg.norm(a - b) / np.linalg.norm(b)


# ------------------------------------------------------------ model and loss


def test_model_worked_example():
    out = gradloop.model(np.array([[0.5]]), np.array([[1.0]]))
    np.testing.assert_array_equal(out, [[0.5]])
    assert out.shape == (1, 1)


def test_model_with_bias_and_shapes():
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(gradloop.model(X, np.array([1.0, -1.0])), [-1.0, -1.0])
    np.testing.assert_array_equal(gradloop.model(X, np.array([[1.0], [-1.0]]), bias=2.0), [[1.0], [1.0]])
    W = np.array([[1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(gradloop.model(X, W, bias=np.array([1.0, -1.0])), [[2.0, 1.0], [4.0, 3.0]])


def test_loss_is_mse_float():
    Y = np.array([[1.0], [2.0], [3.0]])
    P = np.array([[1.5], [2.0], [1.0]])
    value = gradloop.loss(Y, P)
    assert isinstance(value, float)
    assert value == pytest.approx((0.25 + 0 + 4) / 3, rel=1e-15)
    # (n,) against (n, 1) either way round
    assert gradloop.loss(Y[:, 0], P) == value == gradloop.loss(Y, P[:, 0])
    assert gradloop.loss(Y, Y) == 0.0


def test_loss_shape_mismatch_is_data_error():
    with pytest.raises(DataError, match="shape"):
        gradloop.loss(np.zeros((3, 2)), np.zeros((3, 1)))


# ------------------------------------------------------------ gradients


@pytest.mark.parametrize("k", [None, 1, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_match_central_diff_of(k, seed):
    X, Y = make_data(n=40, d=4, k=k, seed=seed)
    rng = np.random.default_rng(100 + seed)
    W = rng.standard_normal((4,) if k is None else (4, k))
    b = rng.standard_normal(()) if k is None else rng.standard_normal(k)
    gW, gb = gradloop.gradients(X, Y, W, b)
    assert gW.shape == W.shape and np.shape(gb) == np.shape(b)
    fd_W = central_diff_of(lambda w: gradloop.loss(Y, gradloop.model(X, w, b)), W)
    fd_b = central_diff_of(lambda c: gradloop.loss(Y, gradloop.model(X, W, c)), np.asarray(b, dtype=float))
    assert rel(gW, fd_W) < 1e-7
    assert rel(gb, fd_b) < 1e-7
    # without a bias
    g = gradloop.gradients(X, Y, W)
    fd = central_diff_of(lambda w: gradloop.loss(Y, gradloop.model(X, w)), W)
    assert rel(g, fd) < 1e-7


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 12), d=st.integers(1, 4), k=st.integers(1, 3), seed=st.integers(0, 2**32 - 1),
       lr=st.floats(1e-4, 0.5))
def test_gradients_and_one_epoch_property(n, d, k, seed, lr):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((n, d)), rng.standard_normal((n, k))
    W, b = rng.standard_normal((d, k)), rng.standard_normal(k)
    gW, gb = gradloop.gradients(X, Y, W, b)
    fd_W = central_diff_of(lambda w: gradloop.loss(Y, gradloop.model(X, w, b)), W)
    fd_b = central_diff_of(lambda c: gradloop.loss(Y, gradloop.model(X, W, c)), b)
    scale = np.linalg.norm(np.concatenate([gW.ravel(), gb])) + 1e-3
    assert np.linalg.norm(gW - fd_W) / scale < 1e-7 and np.linalg.norm(gb - fd_b) / scale < 1e-7
    W1, b1 = gradloop.train(X, Y, W, lr, 1, bias=b)
    np.testing.assert_allclose(W1, W - lr * gW, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(b1, b - lr * gb, rtol=1e-13, atol=1e-15)


def test_gradients_are_the_chapter_formula():
    X, Y = make_data(n=30, d=3)
    Y = Y[:, None]
    W = np.array([[0.1], [-0.2], [0.3]])
    P = X @ W + 0.5
    gW, gb = gradloop.gradients(X, Y, W, np.array([0.5]))
    np.testing.assert_allclose(gW, -2 * X.T @ (Y - P) / len(X), rtol=1e-14, atol=0)
    np.testing.assert_allclose(gb, [-2 * np.mean(Y - P)], rtol=1e-14, atol=0)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("k", [None, 2])
def test_one_epoch_is_the_closed_form_update(bias, k):
    X, Y = make_data(n=50, d=4, k=k, seed=3)
    W = np.full((4,) if k is None else (4, k), 0.25)
    lr = 0.05
    if bias:
        b = np.zeros(1 if k is None else k)
        gW, gb = gradloop.gradients(X, Y, W, b)
        W1, b1 = gradloop.train(X, Y, W, lr, 1, bias=b)
        assert rel(b1, b - lr * gb) < 1e-15
    else:
        gW = gradloop.gradients(X, Y, W)
        W1 = gradloop.train(X, Y, W, lr, 1)
    assert W1.shape == W.shape
    assert rel(W1, W - lr * gW) < 1e-15


def test_train_docstring_example():
    out = gradloop.train(np.array([[0.5]]), np.array([[1.0]]), np.array([[1.0]]), lr=0.1, epochs=2)
    np.testing.assert_allclose(out, [[1.0975]], rtol=1e-15)


# ------------------------------------------------------------ convergence and L


# n=200 runs the plain layer pass, n=8000 (X.size >= 20000, epochs > d) the loop's Gram kernel.
@pytest.mark.parametrize("n", [200, 8000])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("k", [None, 2])
def test_train_converges_to_least_squares(bias, k, n):
    X, Y = make_data(n=n, d=5, k=k, seed=4)
    W0 = np.zeros((5,) if k is None else (5, k))
    A = np.hstack([X, np.ones((len(X), 1))]) if bias else X
    solution = np.linalg.lstsq(A, Y, rcond=None)[0]
    if bias:
        W, b = gradloop.train(X, Y, W0, "auto", 400, bias=np.zeros(1 if k is None else k))
        got = np.concatenate([np.ravel(W), np.ravel(b)])
        want = np.concatenate([np.ravel(solution[:-1]), np.ravel(solution[-1])])
    else:
        W = gradloop.train(X, Y, W0, "auto", 400)
        got, want = np.ravel(W), np.ravel(solution)
    assert W.shape == W0.shape
    assert rel(got, want) < 1e-8


def test_fit_linear_optimum_and_gap():
    X, Y = make_data(n=100, d=3, seed=5)
    run = gradloop.fit_linear(X, Y, np.zeros(3), "auto", 300, bias=0.0)
    A = np.hstack([X, np.ones((100, 1))])
    solution = np.linalg.lstsq(A, Y, rcond=None)[0]
    np.testing.assert_allclose(run.optimum.weights.ravel(), solution[:-1], rtol=1e-12)
    np.testing.assert_allclose(run.optimum.bias, [solution[-1]], rtol=1e-12)
    assert run.gap.relative_weight_distance < 1e-8
    assert run.gap.loss_ratio == pytest.approx(1.0, abs=1e-12)
    assert isinstance(run.bias, float)
    assert run.lr == pytest.approx(1 / hessian_L(X, True), rel=1e-8)
    assert run.stable_lr == pytest.approx(2 / hessian_L(X, True), rel=1e-8)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("n,d,scale", [(100, 1, 1.0), (80, 6, 3.0), (300, 20, 0.01), (40, 60, 1.0)])
def test_lipschitz_matches_eigvalsh(bias, n, d, scale):
    rng = np.random.default_rng(n + d)
    X = scale * rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + rng.uniform(-1, 1, d)
    assert gradloop.lipschitz(X, bias=bias) == pytest.approx(hessian_L(X, bias), rel=1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_lipschitz_is_exact_when_the_top_eigenvalues_nearly_coincide(dtype):
    # Isotropic features: the top eigenvalues of X^T X are close together, where power
    # iteration stalls (it was 4e-4 off on 2,000,000 x 64); the Gram path is exact.
    X = np.random.default_rng(5).standard_normal((20_000, 40)).astype(dtype)
    assert gradloop.lipschitz(X, bias=False) == pytest.approx(hessian_L(X.astype(np.float64), False), rel=1e-10)


@pytest.mark.parametrize("bias", [False, True])
def test_lipschitz_wide_data_uses_products(bias):
    # d > 2048 takes the matrix-free path; the nonzero eigenvalues of A^T A are those of A A^T.
    rng = np.random.default_rng(7)
    X = rng.standard_normal((50, 3000))
    A = np.hstack([X, np.ones((50, 1))]) if bias else X
    want = 2 * np.linalg.eigvalsh(A @ A.T)[-1] / 50
    assert gradloop.lipschitz(X, bias=bias) == pytest.approx(want, rel=1e-8)


def test_lipschitz_of_zero_features_is_data_error():
    with pytest.raises(DataError, match="all zero"):
        gradloop.lipschitz(np.zeros((5, 2)), bias=False)


def test_auto_lr_is_one_over_L():
    X, Y = make_data(n=50, d=3, seed=8)
    run = gradloop.fit_linear(X, Y, np.zeros(3), "auto", 1)
    assert run.lr == pytest.approx(1 / hessian_L(X, False), rel=1e-8)


# ------------------------------------------------------------ shapes, dtypes, copies


def test_epochs_zero_returns_a_copy_of_the_start():
    W0 = np.array([[0.3], [0.4]])
    out = gradloop.train(np.ones((3, 2)), np.ones((3, 1)), W0, 0.1, 0)
    np.testing.assert_array_equal(out, W0)
    assert out is not W0 and not np.shares_memory(out, W0)
    b0 = np.array([0.2])
    W, b = gradloop.train(np.ones((3, 2)), np.ones((3, 1)), W0, 0.1, 0, bias=b0)
    np.testing.assert_array_equal(b, b0)
    assert b is not b0 and not np.shares_memory(b, b0)


def test_caller_arrays_are_never_modified():
    X, Y = make_data(n=30, d=3, seed=14)
    W0, b0 = np.full((3, 1), 0.1), np.array([0.5])
    Y = Y[:, None]
    copies = [a.copy() for a in (X, Y, W0, b0)]
    W, b = gradloop.train(X, Y, W0, 0.05, 10, bias=b0)
    for a, c in zip((X, Y, W0, b0), copies):
        np.testing.assert_array_equal(a, c)
    assert not np.shares_memory(W, W0) and not np.shares_memory(b, b0)


def test_shapes_follow_the_weights():
    X, Y = make_data(n=30, d=3, seed=15)
    assert gradloop.train(X, Y, np.zeros(3), 0.1, 5).shape == (3,)
    assert gradloop.train(X, Y, np.zeros((3, 1)), 0.1, 5).shape == (3, 1)
    assert gradloop.train(X, Y[:, None], np.zeros(3), 0.1, 5).shape == (3,)
    np.testing.assert_array_equal(gradloop.train(X, Y, np.zeros(3), 0.1, 5),
                                  gradloop.train(X, Y[:, None], np.zeros((3, 1)), 0.1, 5)[:, 0])
    W, b = gradloop.train(X, Y, np.zeros(3), 0.1, 5, bias=0.0)
    assert W.shape == (3,) and isinstance(b, float)


def test_multi_output():
    X, Y = make_data(n=40, d=3, k=2, seed=16)
    W, b = gradloop.train(X, Y, np.zeros((3, 2)), "auto", 500, bias=np.zeros(2))
    assert W.shape == (3, 2) and b.shape == (2,)
    # each column is its own least-squares problem
    for j in range(2):
        wj, bj = gradloop.train(X, Y[:, j], np.zeros(3), "auto", 500, bias=0.0)
        np.testing.assert_allclose(W[:, j], wj, rtol=1e-8)
        assert b[j] == pytest.approx(bj, rel=1e-8)


def test_float32_in_float32_out():
    X, Y = make_data(n=30, d=3, seed=17)
    W = gradloop.train(X.astype(np.float32), Y, np.zeros(3), 0.1, 20)
    assert W.dtype == np.float32
    W64 = gradloop.train(X, Y, np.zeros(3), 0.1, 20)
    assert W64.dtype == np.float64
    np.testing.assert_allclose(W, W64, rtol=1e-4)
    W, b = gradloop.train(X.astype(np.float32), Y, np.zeros(3, dtype=np.float32), 0.1, 5,
                          bias=np.zeros(1, dtype=np.float32))
    assert W.dtype == np.float32 and b.dtype == np.float32


def test_integer_and_list_inputs_become_float64():
    W = gradloop.train([[1, 2], [3, 4], [5, 7]], [1, 2, 3], [0, 0], 0.01, 3)
    assert W.dtype == np.float64 and W.shape == (2,)


# ------------------------------------------------------------ history


def test_history_loss_and_new_loss():
    X, Y = make_data(n=30, d=3, seed=18)
    W0 = np.zeros(3)
    run = gradloop.fit_linear(X, Y, W0, 0.1, 6)
    h = run.history.history
    assert len(h["loss"]) == len(h["new_loss"]) == 6
    assert h["loss"][0] == gradloop.loss(Y, gradloop.model(X, W0))
    for k in range(5):
        assert h["new_loss"][k] == h["loss"][k + 1]
    W3 = gradloop.train(X, Y, W0, 0.1, 3)
    assert h["loss"][3] == pytest.approx(gradloop.loss(Y, gradloop.model(X, W3)), rel=1e-14)
    assert h["new_loss"][-1] == pytest.approx(gradloop.loss(Y, gradloop.model(X, run.weights)), rel=1e-14)
    assert run.history.records == []


def test_records_match_a_hand_computation_of_the_first_epoch():
    X, Y = make_data(n=8, d=2, seed=19)
    W0, b0, lr = np.array([0.2, -0.1]), 0.3, 0.05
    run = gradloop.fit_linear(X, Y, W0, lr, 3, bias=b0, keep_records=True)
    records = run.history.records
    assert [r.epoch for r in records] == [1, 2, 3]
    first = records[0]
    pred = X @ W0 + b0
    r = Y - pred
    gW, gb = -2 * X.T @ r / len(X), -2 * r.mean()
    W1, b1 = W0 - lr * gW, b0 - lr * gb
    new_pred = X @ W1 + b1
    np.testing.assert_allclose(first.pred_head[:, 0], pred[:5], rtol=1e-14)
    np.testing.assert_array_equal(first.target_head[:, 0], Y[:5])
    np.testing.assert_allclose(first.diff_head[:, 0], r[:5], rtol=1e-12)
    assert first.loss == pytest.approx(np.mean(r ** 2), rel=1e-14)
    assert first.names == ["0.W", "0.b"]
    np.testing.assert_allclose(first.gradients[0][:, 0], gW, rtol=1e-12)
    np.testing.assert_allclose(first.gradients[1], [gb], rtol=1e-12)
    np.testing.assert_allclose(first.weights[0][:, 0], W1, rtol=1e-14)
    np.testing.assert_allclose(first.weights[1], [b1], rtol=1e-14)
    np.testing.assert_allclose(first.new_pred_head[:, 0], new_pred[:5], rtol=1e-13)
    assert first.new_loss == pytest.approx(np.mean((Y - new_pred) ** 2), rel=1e-13)
    assert first.lr == lr
    # the new prediction of epoch k is the prediction of epoch k + 1
    for a, b in zip(records, records[1:]):
        np.testing.assert_array_equal(a.new_pred_head, b.pred_head)
        assert a.new_loss == b.loss
    # records are copies, not views of the live parameters
    assert not np.array_equal(records[0].weights[0], records[2].weights[0])


# ------------------------------------------------------------ one forward pass per epoch


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("epochs", [0, 1, 5])
def test_train_does_one_forward_pass_per_epoch(verbose, epochs, monkeypatch, capsys):
    # Every executor's evaluate() is one pass over X: forward, loss and gradient together.
    import gradloop.fast.kernels as kernels

    calls = []
    make = kernels.make_kernel

    def counting_make(*args, **kwargs):
        kernel = make(*args, **kwargs)
        evaluate = kernel.evaluate
        kernel.evaluate = lambda: calls.append(kernel.name) or evaluate()
        return kernel

    monkeypatch.setattr(kernels, "make_kernel", counting_make)
    X, Y = make_data(n=12, d=2, seed=20)
    gradloop.train(X, Y, np.zeros(2), 0.1, epochs, verbose=verbose, bias=0.0)
    assert len(calls) == epochs + 1
    printed = capsys.readouterr().out
    assert (f"Epoch {epochs}:" in printed) == (verbose and epochs > 0)


# ------------------------------------------------------------ the report


REPORT_LINES = [
    "Epoch {k}:",
    "Predicted output for the first 5 samples",
    "Actual output for the first 5 samples",
    "Difference between actual and predicted",
    "Current loss",
    "Gradients for this epoch",
    "Updated weights after this epoch",
    "New prediction for the first 5 samples after the update",
    "New loss after the update",
]


def test_verbose_prints_the_nine_items_in_order(capsys):
    X, Y = make_data(n=10, d=2, seed=21)
    run = gradloop.fit_linear(X, Y, np.zeros(2), 0.1, 2, verbose=True, keep_records=True)
    out = capsys.readouterr().out
    blocks = out.split("Epoch ")[1:]
    assert len(blocks) == 2
    for k, block in enumerate(blocks, start=1):
        block = "Epoch " + block
        positions = [block.find(item.format(k=k)) for item in REPORT_LINES]
        assert all(p >= 0 for p in positions), (positions, block)
        assert positions == sorted(positions)
    record = run.history.records[0]
    assert f"Current loss: {record.loss:.10g}" in out
    assert f"New loss after the update: {record.new_loss:.10g}" in out


def test_verbose_every(capsys):
    X, Y = make_data(n=10, d=2, seed=22)
    gradloop.train(X, Y, np.zeros(2), 0.1, 7, verbose=True, every=3)
    out = capsys.readouterr().out
    shown = [int(line.split()[1].rstrip(":")) for line in out.splitlines() if line.startswith("Epoch ")]
    assert shown == [1, 3, 6, 7]  # every third, plus the first and the last


def test_silent_by_default(capsys):
    X, Y = make_data(n=10, d=2, seed=23)
    gradloop.train(X, Y, np.zeros(2), 0.1, 3)
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------ evaluate


def test_evaluate_linear_and_model():
    X, Y = make_data(n=30, d=3, seed=24)
    W, b = gradloop.train(X, Y, np.zeros(3), "auto", 200, bias=0.0)
    m = gradloop.evaluate(X, Y, W, b)
    pred = X @ W + b
    assert set(m) == {"mse", "rmse", "mae", "r2"}
    assert m["mse"] == pytest.approx(np.mean((Y - pred) ** 2), rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(m["mse"]), rel=1e-15)
    assert m["mae"] == pytest.approx(np.mean(np.abs(Y - pred)), rel=1e-12)
    assert m["r2"] == pytest.approx(1 - np.sum((Y - pred) ** 2) / np.sum((Y - Y.mean()) ** 2), rel=1e-12)
    run = gradloop.fit_linear(X, Y, np.zeros(3), "auto", 200, bias=0.0)
    assert gradloop.evaluate(X, Y, run.model) == pytest.approx(m, rel=1e-12)


def test_least_squares_matches_lstsq():
    X, Y = make_data(n=40, d=3, k=2, seed=25)
    opt = gradloop.least_squares(X, Y, bias=False)
    np.testing.assert_allclose(opt.weights, np.linalg.lstsq(X, Y, rcond=None)[0], rtol=1e-12)
    assert opt.bias is None
    assert opt.loss == pytest.approx(gradloop.loss(Y, X @ opt.weights), rel=1e-12)
