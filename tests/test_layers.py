"""Tests for gradloop.layers: every backward against finite differences and PyTorch.

Each layer is checked three ways: its gradients against central differences of
a scalar objective ``sum(forward(x) * R)`` (float64), its forward values and
gradients against the same computation in PyTorch (float64, 1e-10), and the
same in float32 (dtypes kept, 1e-5 relative to PyTorch float32).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradloop.errors import ConfigError, GradloopError
from gradloop.layers import (
    ACTIVATIONS,
    LAYER_TYPES,
    Dense,
    Dropout,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Tanh,
    activation,
    layer_from_config,
    sigmoid,
)
from numerics import central_diff, rel_err

TOL = 1e-10  # float64 agreement with PyTorch
FD_TOL = 1e-7  # relative error of central differences
F32_RTOL = 1e-5  # float32 agreement with PyTorch


# ------------------------------------------------------------ helpers




def away_from_zero(rng, shape, low=0.1):
    """Random values with |x| >= low, so ReLU kinks are never within a finite-difference step."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, 2.0, size=shape)


def close(actual, expected, tol=TOL):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def close32(actual, expected):
    expected = np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=F32_RTOL, atol=F32_RTOL * max(1.0, np.abs(expected).max()))


def t(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def dense_with_bias(rng, n_in, n_out, dtype=np.float64, bias=True):
    layer = Dense(n_in, n_out, seed=rng, dtype=dtype, bias=bias)
    if bias:  # a zero bias would hide a wrong bias gradient in the forward value
        layer.params["b"][...] = rng.standard_normal(n_out)
    return layer


ACTIVATION_CASES = [
    (ReLU, lambda: torch.nn.ReLU()),
    (lambda: LeakyReLU(0.01), lambda: torch.nn.LeakyReLU(0.01)),
    (lambda: LeakyReLU(0.3), lambda: torch.nn.LeakyReLU(0.3)),
    (Tanh, lambda: torch.nn.Tanh()),
    (Sigmoid, lambda: torch.nn.Sigmoid()),
]
ACTIVATION_IDS = ["relu", "leaky-0.01", "leaky-0.3", "tanh", "sigmoid"]


# ------------------------------------------------------------ finite differences


@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradients_match_finite_differences(bias):
    rng = np.random.default_rng(0)
    layer = dense_with_bias(rng, 4, 3, bias=bias)
    x = rng.standard_normal((5, 4))
    R = rng.standard_normal((5, 3))

    def objective():
        return float(np.sum(layer.forward(x) * R))

    layer.forward(x)
    dx = layer.backward(R)
    analytic = {"x": dx, **{k: v.copy() for k, v in layer.grads.items()}}
    numeric = {"x": central_diff(objective, x)}
    for key, value in layer.params.items():
        numeric[key] = central_diff(objective, value)
    assert set(analytic) == ({"x", "W", "b"} if bias else {"x", "W"})
    for key in analytic:
        assert analytic[key].shape == numeric[key].shape
        assert rel_err(analytic[key], numeric[key]) < FD_TOL, key


@pytest.mark.parametrize("make", [ReLU, LeakyReLU, lambda: LeakyReLU(0.2), Tanh, Sigmoid],
                         ids=["relu", "leaky-relu", "leaky-0.2", "tanh", "sigmoid"])
def test_activation_gradients_match_finite_differences(make):
    rng = np.random.default_rng(1)
    layer = make()
    x = away_from_zero(rng, (6, 5))
    R = rng.standard_normal((6, 5))
    layer.forward(x)
    dx = layer.backward(R)
    numeric = central_diff(lambda: float(np.sum(layer.forward(x) * R)), x)
    assert rel_err(dx, numeric) < FD_TOL


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_gradient_matches_finite_differences_with_a_fixed_mask(p):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 6))
    R = rng.standard_normal((8, 6))
    layer = Dropout(p, seed=11)
    out = layer.forward(x)
    dx = layer.backward(R)
    dropped = out == 0
    assert dropped.any() and (~dropped).any()  # the mask is not trivial, so the test can fail
    # A fresh layer with the same seed draws the same mask on its first forward.
    numeric = central_diff(lambda: float(np.sum(Dropout(p, seed=11).forward(x) * R)), x)
    assert rel_err(dx, numeric) < FD_TOL


# ------------------------------------------------------------ PyTorch, float64


@pytest.mark.parametrize("shape", [(7, 4, 3), (1, 5, 1), (16, 1, 8)])
def test_dense_matches_torch_linear(shape):
    batch, n_in, n_out = shape
    rng = np.random.default_rng(3)
    layer = dense_with_bias(rng, n_in, n_out)
    x = rng.standard_normal((batch, n_in))
    G = rng.standard_normal((batch, n_out))

    lin = torch.nn.Linear(n_in, n_out, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(t(layer.params["W"].T))  # torch keeps weight as (out, in)
        lin.bias.copy_(t(layer.params["b"]))
    xt = t(x, requires_grad=True)
    yt = lin(xt)
    yt.backward(t(G))

    y = layer.forward(x)
    dx = layer.backward(G)
    close(y, yt.detach().numpy())
    close(dx, xt.grad.numpy())
    close(layer.grads["W"], lin.weight.grad.numpy().T)
    close(layer.grads["b"], lin.bias.grad.numpy())


def test_dense_without_bias_matches_torch():
    rng = np.random.default_rng(4)
    layer = Dense(3, 2, seed=rng, bias=False)
    assert set(layer.params) == {"W"} and set(layer.grads) == {"W"} and not layer.has_bias
    x, G = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    Wt = t(layer.params["W"], requires_grad=True)
    xt = t(x, requires_grad=True)
    (xt @ Wt).backward(t(G))
    close(layer.forward(x), x @ layer.params["W"])
    close(layer.backward(G), xt.grad.numpy())
    close(layer.grads["W"], Wt.grad.numpy())


def test_dense_backward_can_skip_the_input_gradient():
    rng = np.random.default_rng(5)
    layer = dense_with_bias(rng, 3, 2)
    x, G = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    layer.forward(x)
    assert layer.backward(G, input_grad=False) is None
    close(layer.grads["W"], x.T @ G)
    close(layer.grads["b"], G.sum(axis=0))


def test_dense_backward_writes_into_the_same_gradient_arrays():
    # Optimizers hold model.gradients() across steps: the arrays must keep their identity.
    rng = np.random.default_rng(6)
    layer = dense_with_bias(rng, 3, 2)
    gW, gb = layer.grads["W"], layer.grads["b"]
    for _ in range(2):
        x, G = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
        layer.forward(x)
        layer.backward(G)
        assert layer.grads["W"] is gW and layer.grads["b"] is gb
        close(gW, x.T @ G)


def test_dense_forward_does_not_modify_its_parameters():
    rng = np.random.default_rng(7)
    layer = dense_with_bias(rng, 3, 2)
    before = {k: v.copy() for k, v in layer.params.items()}
    layer.forward(rng.standard_normal((4, 3)))
    for k in before:
        np.testing.assert_array_equal(layer.params[k], before[k])


@pytest.mark.parametrize(("make", "make_torch"), ACTIVATION_CASES, ids=ACTIVATION_IDS)
def test_activation_matches_torch(make, make_torch):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((9, 4)) * 3
    G = rng.standard_normal((9, 4))
    layer = make()
    y = layer.forward(x)
    dx = layer.backward(G)
    xt = t(x, requires_grad=True)
    yt = make_torch()(xt)
    yt.backward(t(G))
    close(y, yt.detach().numpy())
    close(dx, xt.grad.numpy())


@pytest.mark.parametrize(("make", "make_torch"), ACTIVATION_CASES, ids=ACTIVATION_IDS)
def test_activation_matches_torch_at_extreme_inputs(make, make_torch):
    x = np.array([[-1e4, -745.0, -40.0, -1e-300, 0.0, 1e-300, 40.0, 745.0, 1e4]])
    G = np.linspace(-1, 1, x.size).reshape(x.shape)
    layer = make()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = layer.forward(x)
        dx = layer.backward(G)
    xt = t(x, requires_grad=True)
    yt = make_torch()(xt)
    yt.backward(t(G))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    close(y, yt.detach().numpy())
    close(dx, xt.grad.numpy())


def test_dropout_matches_torch_for_the_same_mask():
    # torch draws its own mask; given ours, its autograd of x * keep / (1 - p) must agree.
    rng = np.random.default_rng(9)
    p = 0.3
    x, G = rng.standard_normal((50, 20)), rng.standard_normal((50, 20))
    layer = Dropout(p, seed=1)
    y = layer.forward(x)
    dx = layer.backward(G)
    keep = y != 0
    xt = t(x, requires_grad=True)
    yt = xt * t(keep.astype(np.float64)) / (1 - p)
    yt.backward(t(G))
    close(y, yt.detach().numpy())
    close(dx, xt.grad.numpy())


# ------------------------------------------------------------ float32


def test_dense_float32_keeps_dtype_and_matches_torch():
    rng = np.random.default_rng(10)
    layer = dense_with_bias(rng, 6, 4, dtype=np.float32)
    assert layer.params["W"].dtype == np.float32 and layer.params["b"].dtype == np.float32
    x = rng.standard_normal((8, 6)).astype(np.float32)
    G = rng.standard_normal((8, 4)).astype(np.float32)
    y = layer.forward(x)
    dx = layer.backward(G)
    assert y.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layer.grads.values())

    lin = torch.nn.Linear(6, 4, dtype=torch.float32)
    with torch.no_grad():
        lin.weight.copy_(t(layer.params["W"].T))
        lin.bias.copy_(t(layer.params["b"]))
    xt = t(x, requires_grad=True)
    yt = lin(xt)
    yt.backward(t(G))
    close32(y, yt.detach().numpy())
    close32(dx, xt.grad.numpy())
    close32(layer.grads["W"], lin.weight.grad.numpy().T)
    close32(layer.grads["b"], lin.bias.grad.numpy())


@pytest.mark.parametrize(("make", "make_torch"), ACTIVATION_CASES, ids=ACTIVATION_IDS)
def test_activation_float32_keeps_dtype_and_matches_torch(make, make_torch):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((9, 4)) * 3).astype(np.float32)
    G = rng.standard_normal((9, 4)).astype(np.float32)
    layer = make()
    y = layer.forward(x)
    dx = layer.backward(G)
    assert y.dtype == np.float32 and dx.dtype == np.float32
    xt = t(x, requires_grad=True)
    yt = make_torch()(xt)
    yt.backward(t(G))
    close32(y, yt.detach().numpy())
    close32(dx, xt.grad.numpy())


def test_dropout_float32_keeps_dtype():
    x = np.ones((40, 30), dtype=np.float32)
    layer = Dropout(0.25, seed=0)
    y = layer.forward(x)
    dx = layer.backward(np.ones_like(x))
    assert y.dtype == np.float32 and dx.dtype == np.float32
    assert set(np.unique(y).tolist()) == {0.0, np.float32(1 / 0.75)}


# ------------------------------------------------------------ sigmoid helper


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e300, 1e300, allow_nan=False), min_size=1, max_size=20))
def test_sigmoid_is_finite_in_range_and_matches_torch(values):
    x = np.array(values)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = sigmoid(x)
    assert np.all((y >= 0) & (y <= 1))
    close(y, torch.sigmoid(t(x)).numpy(), tol=1e-15)


# ------------------------------------------------------------ modes, configs, validation


def test_dropout_is_identity_when_not_training_and_for_p_zero():
    x = np.random.default_rng(12).standard_normal((10, 10))
    layer = Dropout(0.5, seed=0)
    layer.training = False
    assert layer.forward(x) is x
    G = np.ones_like(x)
    assert layer.backward(G) is G
    layer0 = Dropout(0.0, seed=0)
    np.testing.assert_array_equal(layer0.forward(x), x)


@pytest.mark.parametrize("layer", [
    Dense(3, 2, bias=False), Dense(4, 1), ReLU(), LeakyReLU(0.25), Tanh(), Sigmoid(), Dropout(0.3, seed=5),
], ids=repr)
def test_layer_config_round_trips_through_json(layer):
    config = json.loads(json.dumps(layer.config()))
    rebuilt = layer_from_config(config)
    assert type(rebuilt) is type(layer)
    assert rebuilt.config() == layer.config()
    assert {k: v.shape for k, v in rebuilt.params.items()} == {k: v.shape for k, v in layer.params.items()}


def test_layer_from_config_keeps_the_dtype():
    layer = layer_from_config(Dense(3, 2).config(), dtype=np.float32)
    assert layer.params["W"].dtype == np.float32 and layer.params["b"].dtype == np.float32


@pytest.mark.parametrize("config", [{"type": "Conv2D"}, {}, "Dense", None])
def test_unknown_layer_type_lists_the_known_ones(config):
    with pytest.raises(ConfigError) as info:
        layer_from_config(config)
    for name in LAYER_TYPES:
        assert name in str(info.value)


def test_unknown_activation_lists_the_known_ones():
    with pytest.raises(ConfigError, match="'swish'") as info:
        activation("swish")
    for name in ACTIVATIONS:
        assert name in str(info.value)
    assert isinstance(activation("leaky-relu"), LeakyReLU)


def test_unknown_init_lists_the_known_ones():
    with pytest.raises(ConfigError, match="'uniform'.*he, xavier, glorot, zeros"):
        Dense(3, 2, init="uniform")


@pytest.mark.parametrize(("build", "pattern"), [
    (lambda: Dense(0, 3), r"in_features.*0"),
    (lambda: Dense(3, -1), r"out_features.*-1"),
    (lambda: Dense(2.5, 3), r"in_features.*2\.5"),
    (lambda: Dense(True, 3), r"in_features.*True"),
    (lambda: Dense("3", 3), r"in_features.*'3'"),
    (lambda: Dense(3, 3, dtype=np.int32), r"dtype.*int32"),
    (lambda: Dense(3, 3, dtype=np.float16), r"dtype.*float16"),
    (lambda: Dropout(1.0), r"p.*1\.0"),
    (lambda: Dropout(-0.1), r"p.*-0\.1"),
    (lambda: Dropout(float("nan")), r"p.*nan"),
])
def test_bad_layer_arguments_raise_config_error(build, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        build()
    assert isinstance(info.value, GradloopError) and isinstance(info.value, ValueError)
