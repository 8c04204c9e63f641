"""The fast paths are exact: same bits as the plain formulas, float32 kept float32, callers' arrays untouched.

Inside a Sequential the layers pass arrays along through ``_forward_chain`` /
``_backward_chain`` and activations work in place on arrays that no one else
holds; softmax cross-entropy takes its row maximum from a transposed copy and
its label entries by flat index; Dense calls np.dot. Each is checked here
against the straightforward NumPy formula written out in the test, with
``assert_array_equal`` (bit for bit, not a tolerance), in float32 and float64.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gradloop.layers import Dense, Dropout, LeakyReLU, ReLU, Sigmoid, Tanh
from gradloop.loop import fit
from gradloop.losses import MSE, SoftmaxCrossEntropy, row_max, softmax
from gradloop.models import Sequential, linear, mlp
from gradloop.optimizers import SGD, Adam, AdamW

DTYPES = [np.float32, np.float64]
same = np.testing.assert_array_equal


# ------------------------------------------------------------ the plain formulas


def plain_cross_entropy(z, y):
    """Softmax cross-entropy and its gradient as first written: fancy indexing, z.max(axis=1)."""
    n = len(z)
    rows = np.arange(n)
    shifted = z - z.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True)
    value = float(np.log(total).sum() - shifted[rows, y].sum()) / n
    grad = exp / total
    grad[rows, y] -= 1
    grad /= n
    return value, grad


def plain_mlp_step(params, x, y, lr):
    """One SGD step of Dense-ReLU-Dense + softmax cross-entropy, every line a textbook formula."""
    W1, b1, W2, b2 = (p.copy() for p in params)
    a = x @ W1 + b1
    h = np.maximum(a, 0)
    z = h @ W2 + b2
    value, G = plain_cross_entropy(z, y)
    dW2, db2 = h.T @ G, G.sum(axis=0)
    dh = G @ W2.T
    da = dh * (a > 0)
    dW1, db1 = x.T @ da, da.sum(axis=0)
    grads = [dW1, db1, dW2, db2]
    new = [p - lr * g for p, g in zip((W1, b1, W2, b2), grads)]
    return value, z, grads, new


def small_mlp(dtype, sizes=(12, 16, 5), seed=0):
    model = mlp(list(sizes), "relu", seed=seed, dtype=dtype, task="multiclass")
    rng = np.random.default_rng(seed + 1)
    for p in model.parameters():
        p[...] = rng.standard_normal(p.shape) * 0.5  # nonzero biases: a wrong bias path shows
    return model


def data(dtype, n=40, d=12, k=5, seed=3):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(dtype), rng.integers(0, k, n)


# ------------------------------------------------------------ bit for bit


@pytest.mark.parametrize("dtype", DTYPES)
def test_mlp_step_equals_the_plain_formulas_bit_for_bit(dtype):
    model = small_mlp(dtype)
    x, y = data(dtype)
    value_ref, z_ref, grads_ref, params_ref = plain_mlp_step(model.parameters(), x, y, lr=0.1)

    z = model.forward(x)
    value, G = SoftmaxCrossEntropy().value_and_grad(y, z)
    assert model.backward(G) is None
    SGD(0.1).step(model.parameters(), model.gradients())

    same(z, z_ref)
    assert value == value_ref
    for g, r in zip(model.gradients(), grads_ref):
        same(g, r)
    for p, r in zip(model.parameters(), params_ref):
        same(p, r)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sequential_chain_equals_the_public_layer_methods(dtype):
    # Every layer type, activations after Dense (worked in place) and after each other (not).
    rng = np.random.default_rng(5)
    layers = [Dense(6, 9, seed=rng, dtype=dtype), ReLU(), Tanh(), Dense(9, 8, seed=rng, dtype=dtype), ReLU(),
              Dropout(0.3, seed=2), Dense(8, 7, seed=rng, dtype=dtype), Sigmoid(),
              Dense(7, 5, seed=rng, dtype=dtype), LeakyReLU(0.1), ReLU(), Dense(5, 4, seed=rng, dtype=dtype)]
    model = Sequential(layers)
    x = rng.standard_normal((11, 6)).astype(dtype)
    G = rng.standard_normal((11, 4)).astype(dtype)

    # Twin run with the public methods, layer by layer (same Dropout seed: same mask).
    twin_layers = [Dense(6, 9, dtype=dtype), ReLU(), Tanh(), Dense(9, 8, dtype=dtype), ReLU(), Dropout(0.3, seed=2),
                   Dense(8, 7, dtype=dtype), Sigmoid(), Dense(7, 5, dtype=dtype), LeakyReLU(0.1), ReLU(),
                   Dense(5, 4, dtype=dtype)]
    for a, b in zip(layers, twin_layers):
        for k in a.params:
            b.params[k][...] = a.params[k]
    out_ref = x
    for layer in twin_layers:
        out_ref = layer.forward(out_ref)
    g_ref = G
    for layer in twin_layers[:0:-1]:
        g_ref = layer.backward(g_ref)
    twin_layers[0].backward(g_ref, input_grad=False)

    out = model.forward(x)
    assert model.backward(G) is None
    same(out, out_ref)
    for a, b in zip(layers, twin_layers):
        for k in a.grads:
            same(a.grads[k], b.grads[k])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(1, 1), (5, 3), (64, 2), (128, 10), (300, 32), (100, 33), (64, 1), (3000, 10)])
def test_cross_entropy_equals_the_plain_formula(dtype, n, k):
    rng = np.random.default_rng(n * 100 + k)
    z = (rng.standard_normal((n, k)) * 3).astype(dtype)
    y = rng.integers(0, k, n)
    loss = SoftmaxCrossEntropy()
    value_ref, grad_ref = plain_cross_entropy(z, y)
    z_before = z.copy()
    value, grad = loss.value_and_grad(y, z)
    assert value == value_ref and loss.value(y, z) == value_ref
    same(grad, grad_ref)
    assert grad.dtype == dtype
    same(z, z_before)  # the logits are not written


def test_cross_entropy_stays_stable_and_exact_for_huge_logits():
    z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4]] * 40)
    y = np.array([0, 2] * 40)
    value, grad = SoftmaxCrossEntropy().value_and_grad(y, z)
    value_ref, grad_ref = plain_cross_entropy(z, y)
    assert np.isfinite(value) and value == value_ref
    same(grad, grad_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k", [(63, 5), (64, 2), (128, 10), (2048, 16), (2049, 16), (5000, 7), (200, 32), (200, 40)])
def test_row_max_equals_max_over_axis_1(dtype, n, k):
    rng = np.random.default_rng(k)
    z = rng.standard_normal((n, k)).astype(dtype)
    z[3, 1] = np.nan  # a NaN row stays NaN
    z[7, :] = -np.inf
    z[9, 0] = np.inf
    ref = z.max(axis=1, keepdims=True)
    got = row_max(z)
    assert got.shape == (n, 1) and got.dtype == dtype
    same(got, ref)
    # Strided input (a view), as the loop never passes but a user might.
    same(row_max(z[::2]), z[::2].max(axis=1, keepdims=True))


def test_softmax_equals_the_plain_formula():
    z = np.random.default_rng(0).standard_normal((130, 6))
    e = np.exp(z - z.max(axis=1, keepdims=True))
    same(softmax(z), e / e.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_products_equal_matmul(dtype):
    rng = np.random.default_rng(1)
    for batch, n_in, n_out in [(1, 1, 1), (100, 3, 1), (16, 7, 1), (128, 784, 128), (33, 17, 10)]:
        layer = Dense(n_in, n_out, seed=rng, dtype=dtype)
        layer.params["b"][...] = rng.standard_normal(n_out)
        x = rng.standard_normal((batch, n_in)).astype(dtype)
        G = rng.standard_normal((batch, n_out)).astype(dtype)
        W, b = layer.params["W"], layer.params["b"]
        same(layer.forward(x), x @ W + b)
        dx = layer.backward(G)
        same(layer.grads["W"], x.T @ G)
        same(layer.grads["b"], G.sum(axis=0))
        same(dx, G @ W.T)


def test_dense_backward_still_takes_a_gradient_of_another_dtype():
    # np.dot's out= wants the exact dtype; the layer falls back to matmul, which casts as before.
    layer = Dense(3, 2, dtype=np.float32, seed=0)
    x = np.ones((4, 3), np.float32)
    layer.forward(x)
    layer.backward(np.ones((4, 2)))
    same(layer.grads["W"], np.full((3, 2), 4.0, np.float32))
    assert layer.grads["W"].dtype == np.float32


def test_relu_is_max_with_zero_at_the_edges():
    layer = ReLU()
    x = np.array([[-np.inf, -1.0, -0.0, 0.0, 2.0, np.inf, np.nan]])
    y = layer.forward(x)
    same(y, [[0.0, 0.0, 0.0, 0.0, 2.0, np.inf, np.nan]])  # ReLU(-inf) = 0, as torch
    same(layer.backward(np.ones_like(x)), [[0, 0, 0, 0, 1, 1, 0]])


# ------------------------------------------------------------ callers' arrays


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [
    lambda d: small_mlp(d),
    lambda d: Sequential([Dense(12, 5, dtype=d, seed=0), ReLU()]),  # output is the in-place activation
    lambda d: Sequential([ReLU(), Dense(12, 5, dtype=d, seed=0), Tanh()]),  # input goes to an activation first
    lambda d: Sequential([Dense(12, 8, dtype=d, seed=0), ReLU(), Dropout(0.5, seed=1), Dense(8, 5, dtype=d, seed=0)]),
], ids=["mlp", "ends-in-relu", "starts-with-relu", "dropout"])
def test_outputs_held_by_the_caller_are_never_overwritten(dtype, make):
    model = make(dtype)
    x1, _ = data(dtype, seed=1)
    x2, _ = data(dtype, seed=2)
    x1_before, x2_before = x1.copy(), x2.copy()
    out1 = model.forward(x1)
    kept = out1.copy()
    G = np.ones_like(out1)
    G_before = G.copy()
    dx = model.backward(G)
    dx_kept = None if dx is None else dx.copy()
    out2 = model.forward(x2)  # same shape: a reused buffer would be overwritten here
    model.backward(np.full_like(out2, 0.5))
    model.predict_raw(x2)
    same(out1, kept)
    assert not np.shares_memory(out1, out2)
    if dx is not None:
        same(dx, dx_kept)
    same(G, G_before)  # backward never writes the gradient it is given
    same(x1, x1_before)  # nor forward its input
    same(x2, x2_before)


@pytest.mark.parametrize("layer", [Dense(4, 4, seed=0), ReLU(), LeakyReLU(0.2), Tanh(), Sigmoid(), Dropout(0.5, seed=0)],
                         ids=["dense", "relu", "leaky", "tanh", "sigmoid", "dropout"])
def test_each_layer_hands_out_new_arrays(layer):
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    x1_before = x1.copy()
    y1 = layer.forward(x1)
    kept = y1.copy()
    layer.backward(np.ones((6, 4)))
    layer.forward(x2)
    layer.backward(np.ones((6, 4)))
    same(y1, kept)
    same(x1, x1_before)


# ------------------------------------------------------------ float32 end to end


def _float_arrays(obj):
    """(name, array) for every floating array among an object's attributes, dicts and lists one level down."""
    found = []
    for name, value in vars(obj).items():
        values = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else [("", value)]
        for key, v in values:
            if isinstance(v, list):
                found += [(f"{name}.{key}.{i}", a) for i, a in enumerate(v) if isinstance(a, np.ndarray)]
            elif isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
                found.append((f"{name}.{key}", v))
    return found


class _LocalsDtypes:
    """Profile hook: every floating array held in a local of a gradloop layer/loss/optimizer/model call."""

    MODULES = ("gradloop.layers", "gradloop.losses", "gradloop.optimizers", "gradloop.models")

    def __init__(self):
        self.seen = []

    def __call__(self, frame, event, arg):
        if event == "return" and frame.f_globals.get("__name__") in self.MODULES:
            where = f"{frame.f_code.co_name}"
            for name, value in list(frame.f_locals.items()) + [("<returned>", arg)]:
                for v in value if isinstance(value, tuple) else (value,):
                    if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating):
                        self.seen.append((where, name, v.dtype))


@pytest.mark.parametrize("optimizer", [lambda: SGD(0.05), lambda: SGD(0.05, momentum=0.9, nesterov=True,
                                                                      weight_decay=1e-3), lambda: Adam(1e-3)],
                         ids=["sgd", "nesterov", "adam"])
def test_float32_stays_float32_everywhere(optimizer):
    model = mlp([12, 16, 8, 5], "relu", seed=0, dtype=np.float32, dropout=0.2, task="multiclass")
    x, y = data(np.float32, n=64)
    opt = optimizer()
    hook = _LocalsDtypes()
    sys.setprofile(hook)
    try:
        fit(model, x, y, loss="cross-entropy", optimizer=opt, epochs=2, batch_size=16, seed=0)
        z = model.forward(x)
        value, G = SoftmaxCrossEntropy().value_and_grad(y, z)
        model.backward(G)
        opt.step(model.parameters(), model.gradients())
    finally:
        sys.setprofile(None)
    assert len(hook.seen) > 50  # the hook saw the work, so the check can fail
    wrong = [s for s in hook.seen if s[2] != np.float32]
    assert not wrong, wrong[:10]
    for layer in model.layers:
        for name, a in _float_arrays(layer):
            assert a.dtype == np.float32, (layer, name)
    for name, a in _float_arrays(opt):
        assert a.dtype == np.float32, name


def test_float32_mse_regression_stays_float32():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 3)).astype(np.float32)
    y = rng.standard_normal(32).astype(np.float32)
    model = linear(3, dtype=np.float32)
    hook = _LocalsDtypes()
    sys.setprofile(hook)
    try:
        fit(model, x, y, loss="mse", optimizer=SGD(0.1), epochs=3)
        fit(model, x, y, loss="mse", optimizer=SGD(0.1), epochs=1, batch_size=8)
        MSE().value_and_grad(y, model.forward(x))
    finally:
        sys.setprofile(None)
    assert hook.seen and all(s[2] == np.float32 for s in hook.seen), [s for s in hook.seen if s[2] != np.float32]


# ------------------------------------------------------------ a whole run


@pytest.mark.parametrize("dtype", DTYPES)
def test_fit_minibatch_equals_the_plain_formulas_bit_for_bit(dtype):
    model = small_mlp(dtype, seed=4)
    x, y = data(dtype, n=50, seed=9)
    params = [p.copy() for p in model.parameters()]
    history = fit(model, x, y, loss="cross-entropy", optimizer=SGD(0.1), epochs=2, batch_size=16, shuffle=False)
    losses = []
    for _ in range(2):
        total = 0.0
        for start in range(0, len(x), 16):
            xb, yb = x[start:start + 16], y[start:start + 16]
            value, _, _, params = plain_mlp_step(params, xb, yb, lr=0.1)
            total += value * len(xb)
        losses.append(total / len(x))
    for p, r in zip(model.parameters(), params):
        same(p, r)
        assert p.dtype == dtype
    assert history.history["loss"] == losses


OPTIMIZERS = {
    "sgd": lambda: SGD(0.037),
    "sgd-weight-decay": lambda: SGD(0.037, weight_decay=0.01),
    "momentum": lambda: SGD(0.037, momentum=0.9),
    "nesterov-weight-decay": lambda: SGD(0.037, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: Adam(0.01),
    "adam-l2": lambda: Adam(0.01, weight_decay=0.01),
    "adamw": lambda: AdamW(0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_compiled_updates_have_numpys_bits(name, dtype, monkeypatch):
    # Large parameters take the compiled one-pass update, small ones NumPy's; with the
    # threshold out of reach every parameter takes NumPy's. Five steps each: same bits.
    from gradloop import optimizers

    rng = np.random.default_rng(3)
    shapes = [(optimizers.COMPILED_UPDATE_MIN_SIZE // 64 + 1, 64), (10,)]
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    steps = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(5)]

    def run():
        params, optimizer = [p.copy() for p in start], OPTIMIZERS[name]()
        for grads in steps:
            optimizer.step(params, [g.copy() for g in grads])
        return params, optimizer.state

    calls = []
    for kernel in ("_subtract_scaled", "_sgd_step", "_adam_step"):
        original = getattr(optimizers, kernel)
        monkeypatch.setattr(optimizers, kernel,
                            lambda *args, _original=original, _name=kernel: calls.append(_name) or _original(*args))
    compiled, compiled_state = run()
    assert len(calls) == len(steps)  # one compiled call per step: the large parameter's
    monkeypatch.setattr(optimizers, "COMPILED_UPDATE_MIN_SIZE", 10**12)
    plain, plain_state = run()
    for ours, theirs in zip(compiled, plain):
        assert ours.dtype == dtype
        same(ours, theirs)
    for key in plain_state:
        for ours, theirs in zip(compiled_state[key], plain_state[key]):
            same(ours, theirs)
    assert not np.array_equal(compiled[0], start[0])  # the steps did move the weights
