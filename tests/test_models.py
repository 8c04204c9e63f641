"""Tests for gradloop.models: a stack of layers against PyTorch autograd, and its round trips.

The deep model mixes every activation so that one comparison with torch
checks the chain rule through all of them at once.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gradloop.errors import ConfigError, GradloopError, ModelFileError
from gradloop.layers import ACTIVATIONS, Dense, Dropout, LeakyReLU, ReLU, Sigmoid, Tanh
from gradloop.losses import BinaryCrossEntropy, SoftmaxCrossEntropy
from gradloop.models import TASKS, Sequential, linear, mlp
from gradloop.optimizers import SGD, Adam
from numerics import central_diff

TOL = 1e-10


# ------------------------------------------------------------ helpers


def close(actual, expected, tol=TOL):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def t(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def randomize_biases(model, seed=0):
    """Nonzero biases, so that a wrong bias path shows in the outputs."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if "b" in layer.params:
            layer.params["b"][...] = rng.standard_normal(layer.params["b"].shape) * 0.5


def deep_mixed_model(seed=0, dtype=np.float64, first=None):
    """Dense-ReLU-Dense-Tanh-Dense-Sigmoid-Dense-LeakyReLU-Dense, 6 inputs, 4 classes."""
    rng = np.random.default_rng(seed)
    layers = [] if first is None else [first]
    layers += [
        Dense(6, 9, seed=rng, dtype=dtype), ReLU(),
        Dense(9, 8, init="xavier", seed=rng, dtype=dtype), Tanh(),
        Dense(8, 7, init="xavier", seed=rng, dtype=dtype), Sigmoid(),
        Dense(7, 5, seed=rng, dtype=dtype), LeakyReLU(0.1),
        Dense(5, 4, init="xavier", seed=rng, dtype=dtype),
    ]
    model = Sequential(layers, task="multiclass")
    randomize_biases(model, seed)
    return model


def torch_twin(model, dtype=torch.float64):
    """The same network in torch.nn, with copied parameters."""
    modules = []
    for layer in model.layers:
        if isinstance(layer, Dense):
            lin = torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.has_bias, dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(t(layer.params["W"].T))
                if layer.has_bias:
                    lin.bias.copy_(t(layer.params["b"]))
            modules.append(lin)
        elif isinstance(layer, LeakyReLU):
            modules.append(torch.nn.LeakyReLU(layer.alpha))
        else:
            modules.append({ReLU: torch.nn.ReLU, Tanh: torch.nn.Tanh, Sigmoid: torch.nn.Sigmoid}[type(layer)]())
    return torch.nn.Sequential(*modules)


def torch_gradients(net):
    """Gradients in gradloop's order and layout: W (in, out) then b, layer by layer."""
    out = []
    for module in net:
        if isinstance(module, torch.nn.Linear):
            out.append(module.weight.grad.numpy().T)
            if module.bias is not None:
                out.append(module.bias.grad.numpy())
    return out


def data(seed=1, n=12, d=6, classes=4, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, classes, size=n)


# ------------------------------------------------------------ against torch autograd


def test_deep_mixed_mlp_loss_and_every_gradient_match_torch():
    model = deep_mixed_model()
    x, y = data()
    loss = SoftmaxCrossEntropy()
    value, grad = loss.value_and_grad(y, model.forward(x))
    returned = model.backward(grad)
    assert returned is None  # the first Dense layer skips its unused input gradient, by design

    net = torch_twin(model)
    logits = net(t(x))
    ref = torch.nn.functional.cross_entropy(logits, t(y))
    ref.backward()
    close(value, ref.item())
    ours, theirs = model.gradients(), torch_gradients(net)
    assert len(ours) == len(theirs) == 10
    for g, r in zip(ours, theirs):
        assert g.shape == r.shape
        assert np.abs(r).max() > 0  # every layer gets a gradient, so the comparison can fail
        close(g, r)


def test_backward_returns_the_input_gradient_when_the_first_layer_is_not_dense():
    model = deep_mixed_model(first=Tanh())
    x, y = data(seed=2)
    _, grad = SoftmaxCrossEntropy().value_and_grad(y, model.forward(x))
    dx = model.backward(grad)

    net = torch_twin(model)
    xt = t(x, requires_grad=True)
    torch.nn.functional.cross_entropy(net(xt), t(y)).backward()
    assert dx is not None and dx.shape == x.shape
    close(dx, xt.grad.numpy())
    for g, r in zip(model.gradients(), torch_gradients(net)):
        close(g, r)


def test_mlp_gradients_match_finite_differences():
    model = mlp([3, 5, 4, 2], "tanh", seed=4, task="multiclass")
    randomize_biases(model, 4)
    x, y = data(seed=3, n=7, d=3, classes=2)
    loss = SoftmaxCrossEntropy()
    _, grad = loss.value_and_grad(y, model.forward(x))
    model.backward(grad)
    for p, g in zip(model.parameters(), model.gradients()):
        numeric = central_diff(lambda: loss.value(y, model.forward(x)), p)
        assert np.linalg.norm(g - numeric) / np.linalg.norm(numeric) < 1e-7


def test_training_steps_follow_torch():
    model = deep_mixed_model(seed=5)
    net = torch_twin(model)
    x, y = data(seed=5, n=20)
    opt = SGD(0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    topt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    loss = SoftmaxCrossEntropy()
    for _ in range(20):
        value, grad = loss.value_and_grad(y, model.forward(x))
        model.backward(grad)
        opt.step(model.parameters(), model.gradients())
        topt.zero_grad()
        ref = torch.nn.functional.cross_entropy(net(t(x)), t(y))
        ref.backward()
        topt.step()
        close(value, ref.item())
    twin_params = [p for m in net if isinstance(m, torch.nn.Linear)
                   for p in (m.weight.detach().numpy().T, m.bias.detach().numpy())]
    for p, r in zip(model.parameters(), twin_params):
        close(p, r)


def test_binary_mlp_with_bce_matches_torch():
    model = mlp([4, 6, 1], "sigmoid", seed=6, task="binary")
    randomize_biases(model, 6)
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((10, 4)), rng.integers(0, 2, size=10).astype(np.float64)
    value, grad = BinaryCrossEntropy().value_and_grad(y, model.forward(x))
    model.backward(grad)
    net = torch_twin(model)
    ref = torch.nn.functional.binary_cross_entropy_with_logits(net(t(x))[:, 0], t(y))
    ref.backward()
    close(value, ref.item())
    for g, r in zip(model.gradients(), torch_gradients(net)):
        close(g, r)


# ------------------------------------------------------------ float32


def test_float32_mlp_keeps_dtype_end_to_end_and_matches_torch():
    model = deep_mixed_model(seed=7, dtype=np.float32)
    assert model.dtype == np.float32
    x, y = data(seed=7, dtype=np.float32)
    out = model.forward(x)
    value, grad = SoftmaxCrossEntropy().value_and_grad(y, out)
    model.backward(grad)
    assert out.dtype == grad.dtype == np.float32
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert all(g.dtype == np.float32 for g in model.gradients())

    net = torch_twin(model, dtype=torch.float32)
    ref = torch.nn.functional.cross_entropy(net(t(x)), t(y))
    ref.backward()
    np.testing.assert_allclose(value, ref.item(), rtol=1e-5)
    for g, r in zip(model.gradients(), torch_gradients(net)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5 * np.abs(r).max())

    opt = Adam(1e-2)
    opt.step(model.parameters(), model.gradients())
    topt = torch.optim.Adam(net.parameters(), lr=1e-2)
    topt.step()
    assert all(p.dtype == np.float32 for p in model.parameters())
    twin = [p for m in net if isinstance(m, torch.nn.Linear)
            for p in (m.weight.detach().numpy().T, m.bias.detach().numpy())]
    for p, r in zip(model.parameters(), twin):
        np.testing.assert_allclose(p, r, rtol=1e-5, atol=1e-6)
    assert model.predict_proba(x).dtype == np.float32


# ------------------------------------------------------------ construction and determinism


def test_mlp_is_deterministic_for_a_seed():
    a = mlp([5, 16, 8, 3], "relu", seed=42, dropout=0.2)
    b = mlp([5, 16, 8, 3], "relu", seed=42, dropout=0.2)
    c = mlp([5, 16, 8, 3], "relu", seed=43, dropout=0.2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert list(sa) == ["0.W", "0.b", "3.W", "3.b", "6.W", "6.b"]
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name])
        if name.endswith("W"):
            assert not np.any(sa[name] == sc[name])
    x = np.random.default_rng(0).standard_normal((30, 5))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))  # dropout masks too
    assert not np.array_equal(a.forward(x), c.forward(x))


def test_mlp_layout_and_initialisers():
    relu = mlp([3, 4, 2], "relu")
    assert [type(layer) for layer in relu.layers] == [Dense, ReLU, Dense]
    assert relu.n_inputs == 3 and relu.n_outputs == 2 and relu.task == "regression"
    tanh = mlp([30, 40, 2], "tanh", seed=1, dropout=0.1, task="multiclass")
    assert [type(layer) for layer in tanh.layers] == [Dense, Tanh, Dropout, Dense]
    for layer in (tanh.layers[0], tanh.layers[3]):
        limit = np.sqrt(6 / (layer.in_features + layer.out_features))
        assert np.abs(layer.params["W"]).max() <= limit
    assert isinstance(mlp([2, 3, 1], "leaky-relu").layers[1], LeakyReLU)
    assert mlp([2, 3, 1], "sigmoid", dtype=np.float32).dtype == np.float32


def test_he_init_has_the_right_spread():
    layer = Dense(500, 400, init="he", seed=0)
    W = layer.params["W"]
    assert abs(W.std() / np.sqrt(2 / 500) - 1) < 0.02
    assert abs(W.mean()) < 0.01 * np.sqrt(2 / 500)
    assert not layer.params["b"].any()


@pytest.mark.parametrize("init", ["xavier", "glorot"])
def test_xavier_init_stays_within_its_limit(init):
    layer = Dense(300, 200, init=init, seed=0)
    W, limit = layer.params["W"], np.sqrt(6 / 500)
    assert np.abs(W).max() <= limit
    assert np.abs(W).max() > 0.99 * limit  # uniform over the whole range, not a narrower one
    assert abs(W.std() / (limit / np.sqrt(3)) - 1) < 0.02
    np.testing.assert_array_equal(W, Dense(300, 200, init="xavier", seed=0).params["W"])


def test_zeros_init_and_linear_model():
    layer = Dense(4, 3, init="zeros", seed=0)
    assert not layer.params["W"].any() and not layer.params["b"].any()
    model = linear(3, bias=False)
    assert [p.shape for p in model.parameters()] == [(3, 1)]
    model.parameters()[0][...] = [[1.0], [2.0], [3.0]]
    np.testing.assert_array_equal(model.forward(np.array([[1.0, 1.0, 1.0]])), [[6.0]])


@pytest.mark.parametrize(("build", "exc", "names"), [
    (lambda: mlp([3, 4, 2], "swish"), ConfigError, list(ACTIVATIONS)),
    (lambda: Dense(3, 4, init="orthogonal"), ConfigError, ["he", "xavier", "glorot", "zeros"]),
    (lambda: Sequential([Dense(2, 2)], task="ranking"), ConfigError, list(TASKS)),
    (lambda: mlp([3, 2], task="ranking"), ConfigError, list(TASKS)),
    (lambda: Sequential.from_config({"dtype": "float64", "layers": [{"type": "Conv2D"}]}), ModelFileError,
     ["Dense", "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Dropout"]),
])
def test_unknown_names_are_refused_with_the_known_ones(build, exc, names):
    with pytest.raises(exc) as info:
        build()
    for name in names:
        assert name in str(info.value)


@pytest.mark.parametrize("build", [
    lambda: Sequential([]), lambda: mlp([3]), lambda: mlp([3, 0, 1]), lambda: mlp([3, 4, 2], dropout=1.0),
])
def test_bad_architectures_raise_config_error(build):
    with pytest.raises(ConfigError):
        build()


def test_parameters_and_gradients_line_up():
    model = mlp([3, 4, 2], "relu", seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    model.forward(x)
    model.backward(np.ones((5, 2)))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.W", "0.b", "2.W", "2.b"]
    layers = [model.layers[0], model.layers[0], model.layers[2], model.layers[2]]
    keys = ["W", "b", "W", "b"]
    for p, g, layer, k in zip(model.parameters(), model.gradients(), layers, keys):
        assert p is layer.params[k] and g is layer.grads[k] and p.shape == g.shape


# ------------------------------------------------------------ saving and loading


@pytest.mark.parametrize(("sizes", "act", "task", "dtype", "dropout"), [
    ([4, 10, 6, 3], "leaky-relu", "multiclass", np.float64, 0.2),
    ([4, 8, 1], "tanh", "binary", np.float32, 0.0),
    ([4, 5, 2], "sigmoid", "regression", np.float64, 0.0),
])
def test_config_and_state_dict_round_trip_reproduces_predictions(sizes, act, task, dtype, dropout):
    model = mlp(sizes, act, seed=3, dtype=dtype, dropout=dropout, task=task)
    randomize_biases(model, 3)
    config = json.loads(json.dumps(model.config()))  # JSON-friendly
    rebuilt = Sequential.from_config(config)
    x = np.random.default_rng(3).standard_normal((25, sizes[0])).astype(dtype)
    assert not np.array_equal(rebuilt.predict_raw(x), model.predict_raw(x))  # parameters not copied yet
    rebuilt.load_state_dict(json_free_copy(model.state_dict()))
    assert rebuilt.config() == model.config() and rebuilt.task == task and rebuilt.dtype == dtype
    np.testing.assert_array_equal(rebuilt.predict(x), model.predict(x))
    np.testing.assert_array_equal(rebuilt.predict_raw(x), model.predict_raw(x))
    if task != "regression":
        np.testing.assert_array_equal(rebuilt.predict_proba(x), model.predict_proba(x))


def json_free_copy(state):
    return {k: np.array(v, copy=True) for k, v in state.items()}


def test_state_dict_is_a_copy():
    model = mlp([3, 4, 2], seed=0)
    state = model.state_dict()
    state["0.W"][...] = 7.0
    assert not np.any(model.parameters()[0] == 7.0)


def test_load_state_dict_copies_into_the_same_arrays():
    model = mlp([3, 4, 2], seed=0)
    arrays = model.parameters()
    model.load_state_dict(mlp([3, 4, 2], seed=1).state_dict())
    assert all(a is b for a, b in zip(arrays, model.parameters()))
    np.testing.assert_array_equal(arrays[0], mlp([3, 4, 2], seed=1).parameters()[0])


def _bad_states():
    good = mlp([3, 4, 2], seed=1).state_dict()
    cases = {}
    s = dict(good)
    s["2.W"] = s["2.W"].T.copy()
    cases["shape"] = (s, r"2\.W.*\(2, 4\).*\(4, 2\)")
    s = dict(good)
    s["2.b"] = s["2.b"].astype(np.float32)
    cases["dtype"] = (s, r"2\.b.*float32.*float64")
    s = dict(good)
    s["2.bias"] = s.pop("2.b")
    cases["name"] = (s, r"2\.bias")
    s = dict(good)
    del s["2.b"]
    cases["missing"] = (s, r"2\.b")
    s = dict(good, extra=np.zeros(1))
    cases["extra"] = (s, r"extra")
    s = dict(good)
    s["2.W"] = s["2.W"].copy()
    s["2.W"][0, 0] = np.nan
    cases["nan"] = (s, r"2\.W.*non-finite")
    return cases


@pytest.mark.parametrize("case", list(_bad_states()))
def test_load_state_dict_refuses_mismatches_and_leaves_the_model_alone(case):
    state, pattern = _bad_states()[case]
    model = mlp([3, 4, 2], seed=0)
    before = model.state_dict()
    with pytest.raises(ModelFileError, match=pattern) as info:
        model.load_state_dict(state)
    assert isinstance(info.value, GradloopError)
    for name, p in model.named_parameters():  # nothing half-loaded
        np.testing.assert_array_equal(p, before[name])


def test_from_config_refuses_malformed_configs():
    for config in ({}, {"dtype": "float64"}, {"dtype": "float64", "layers": [{"type": "Dense"}]},
                   {"dtype": "float64", "layers": []}):
        with pytest.raises(ModelFileError):
            Sequential.from_config(config)


# ------------------------------------------------------------ predictions


def test_binary_predict_and_predict_proba():
    model = mlp([3, 6, 1], "tanh", seed=2, task="binary")
    randomize_biases(model, 2)
    x = np.random.default_rng(2).standard_normal((200, 3)) * 3
    proba = model.predict_proba(x)
    logits = model.predict_raw(x)[:, 0]
    assert proba.shape == (200, 2)
    close(proba.sum(axis=1), 1.0, tol=1e-15)
    close(proba[:, 1], torch.sigmoid(t(logits)).numpy(), tol=1e-15)
    pred = model.predict(x)
    assert pred.dtype == np.int64 and set(np.unique(pred)) == {0, 1}
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    np.testing.assert_array_equal(pred, (logits > 0).astype(np.int64))


def test_multiclass_predict_and_predict_proba():
    model = mlp([3, 8, 4], "relu", seed=3, task="multiclass")
    randomize_biases(model, 3)
    x = np.random.default_rng(3).standard_normal((300, 3)) * 3
    proba = model.predict_proba(x)
    assert proba.shape == (300, 4)
    close(proba.sum(axis=1), 1.0, tol=1e-14)
    close(proba, torch.softmax(t(model.predict_raw(x)), dim=1).numpy(), tol=1e-14)
    pred = model.predict(x)
    np.testing.assert_array_equal(pred, proba.argmax(axis=1))
    assert len(np.unique(pred)) > 1


def test_regression_predict_and_no_predict_proba():
    model = mlp([3, 4, 2], seed=0)
    x = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_array_equal(model.predict(x), model.forward(x))
    with pytest.raises(ConfigError, match="regression"):
        model.predict_proba(x)


# ------------------------------------------------------------ dropout and modes


def test_dropout_is_identity_in_eval_and_predict_restores_the_mode():
    with_dropout = mlp([4, 50, 3], "relu", seed=8, dropout=0.5, task="multiclass")
    without = Sequential([layer for layer in with_dropout.layers if not isinstance(layer, Dropout)],
                         task="multiclass")
    x = np.random.default_rng(8).standard_normal((40, 4))
    assert with_dropout.training
    train_out = with_dropout.forward(x)
    assert not np.allclose(train_out, without.forward(x))  # dropout is active while training
    expected = without.forward(x)
    np.testing.assert_array_equal(with_dropout.predict_raw(x), expected)
    np.testing.assert_array_equal(with_dropout.predict(x), expected.argmax(axis=1))
    assert with_dropout.training  # predict switched to eval and back
    with_dropout.eval()
    np.testing.assert_array_equal(with_dropout.forward(x), expected)
    with_dropout.predict(x)
    assert not with_dropout.training and all(not layer.training for layer in with_dropout.layers)
    with_dropout.train()
    assert all(layer.training for layer in with_dropout.layers)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_scales_kept_units_and_keeps_the_expected_fraction(p):
    layer = Dropout(p, seed=0)
    x = np.full((400, 250), 2.0)
    y = layer.forward(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], 2.0 / (1 - p), rtol=1e-15)
    n = x.size
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    assert abs(y.mean() - 2.0) < 5 * 2.0 / (1 - p) * sigma  # inverted dropout keeps the mean
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), kept / (1 - p))
    assert not np.array_equal(layer.forward(x) != 0, kept)  # a new mask every forward


def test_training_reduces_the_loss():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((64, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR-like: needs the hidden layer
    model = mlp([2, 16, 2], "tanh", seed=9, task="multiclass")
    opt = Adam(0.05)
    loss = SoftmaxCrossEntropy()
    first = loss.value(y, model.forward(x))
    for _ in range(200):
        _, grad = loss.value_and_grad(y, model.forward(x))
        model.backward(grad)
        opt.step(model.parameters(), model.gradients())
    assert loss.value(y, model.forward(x)) < 0.3 * first
    assert (model.predict(x) == y).mean() > 0.9
