"""Benchmark workloads of the MLP: mini-batch epochs with SGD and with Adam, beside PyTorch, JAX and
scikit-learn on the same data, and the floor of the matrix products alone."""

from __future__ import annotations

import warnings

import numpy as np

from gradloop.loop import fit
from gradloop.models import mlp
from gradloop.optimizers import SGD, Adam

from .contenders import Workload, _jax, _torch


def _matmul_floor(X, batch):
    """The five matrix products of one step of the 784-128-10 network (2 forward, 3 backward) over an
    epoch of X, nothing else: the floor any implementation of the epoch stands on."""
    n = len(X)

    def matmul_floor():
        W1 = np.zeros((784, 128), np.float32)
        W2 = np.zeros((128, 10), np.float32)
        h = np.empty((batch, 128), np.float32)
        o = np.empty((batch, 10), np.float32)
        for start in range(0, n - batch + 1, batch):
            xb = X[start:start + batch]
            np.matmul(xb, W1, out=h)
            np.matmul(h, W2, out=o)
            np.matmul(h.T, o, out=W2)
            np.matmul(o, W2.T, out=h)
            np.matmul(xb.T, h, out=W1)

    return matmul_floor


def _mlp_data(quick):
    """(n, X (n, 784) float32 in [0, 1), y (n,) labels 0-9): the MLP workloads' data, MNIST's shape."""
    n = 1_000 if quick else 60_000
    rng = np.random.default_rng(0)
    return n, rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)


def mlp_minibatch(quick):
    """MLP 784-128-10, ReLU, softmax cross-entropy, SGD, batch 128, float32: one epoch."""
    n, X, y = _mlp_data(quick)
    lr, batch = 0.01, 128

    def gradloop_fit():
        model = mlp([784, 128, 10], "relu", seed=0, dtype=np.float32, task="multiclass")
        fit(model, X, y, loss="cross-entropy", optimizer=SGD(lr), epochs=1, batch_size=batch, seed=0)

    matmul_floor = _matmul_floor(X, batch)

    def numpy_loop():
        # The same epoch written by hand in NumPy, in place where it helps: the shuffled
        # gather, the five products and the elementwise work, no layers, no loop bookkeeping.
        model = mlp([784, 128, 10], "relu", seed=0, dtype=np.float32, task="multiclass")
        W1, b1, W2, b2 = model.parameters()
        gW1, gb1, gW2, gb2 = model.gradients()
        order = np.random.default_rng(0).permutation(n)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            xb, yb, rows = X[idx], y[idx], np.arange(len(idx))
            h = xb @ W1
            h += b1
            np.maximum(h, 0, out=h)
            z = h @ W2
            z += b2
            z -= z.max(axis=1, keepdims=True)
            picked = z[rows, yb].sum()
            np.exp(z, out=z)
            total = z.sum(axis=1, keepdims=True)
            float(np.log(total).sum() - picked) / len(idx)  # the loss
            z /= total
            z[rows, yb] -= 1
            z /= len(idx)
            np.matmul(h.T, z, out=gW2)
            np.sum(z, axis=0, out=gb2)
            dh = z @ W2.T
            dh *= h > 0
            np.matmul(xb.T, dh, out=gW1)
            np.sum(dh, axis=0, out=gb1)
            for p, g in ((W1, gW1), (b1, gb1), (W2, gW2), (b2, gb2)):
                p -= lr * g

    work = Workload(f"MLP 784-128-10 ReLU, softmax CE, SGD, batch {batch}, {n:,} rows float32", "epoch", 1,
                    {"gradloop": gradloop_fit, "numpy (hand-written loop)": numpy_loop,
                     "limit: matrix products only": matmul_floor},
                    limit="limit: matrix products only")
    _add_mlp_peers(work, X, y, lr, batch, "sgd", sklearn_dtypes=(np.float32, np.float64))
    return work


def mlp_adam(quick):
    """The same MLP epoch with Adam (lr 1e-3): the optimizer's update is a larger share of the step."""
    n, X, y = _mlp_data(quick)
    lr, batch = 1e-3, 128

    def gradloop_fit():
        model = mlp([784, 128, 10], "relu", seed=0, dtype=np.float32, task="multiclass")
        fit(model, X, y, loss="cross-entropy", optimizer=Adam(lr), epochs=1, batch_size=batch, seed=0)

    def gradloop_numpy_update():
        # The same run with every parameter on NumPy's update (the compiled one-pass update off).
        from gradloop import optimizers

        saved = optimizers.COMPILED_UPDATE_MIN_SIZE
        optimizers.COMPILED_UPDATE_MIN_SIZE = 1 << 62
        try:
            gradloop_fit()
        finally:
            optimizers.COMPILED_UPDATE_MIN_SIZE = saved

    work = Workload(f"MLP 784-128-10 ReLU, softmax CE, Adam, batch {batch}, {n:,} rows float32", "epoch", 1,
                    {"gradloop": gradloop_fit, "gradloop, NumPy's update": gradloop_numpy_update,
                     "limit: matrix products only": _matmul_floor(X, batch)},
                    limit="limit: matrix products only")
    _add_mlp_peers(work, X, y, lr, batch, "adam", sklearn_dtypes=(np.float32,))
    return work


def _jax_mlp(jax, X, y, lr, batch, optimizer):
    """JAX's epoch of the 784-128-10 network: (a jit-compiled step called per batch, the whole epoch
    as one ``lax.scan`` over the batches). The scan needs equal batches: it drops the last partial one."""
    jnp = jax.numpy
    n = len(X)
    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def init():
        k1, k2 = jax.random.split(jax.random.PRNGKey(0))
        he = lambda key, a, b: jax.random.normal(key, (a, b), jnp.float32) * jnp.sqrt(2.0 / a)  # noqa: E731
        return (he(k1, 784, 128), jnp.zeros(128, jnp.float32), he(k2, 128, 10), jnp.zeros(10, jnp.float32))

    def loss(params, xb, yb):
        W1, b1, W2, b2 = params
        z = jax.nn.relu(xb @ W1 + b1) @ W2 + b2
        return jnp.mean(jax.nn.logsumexp(z, axis=1) - jnp.take_along_axis(z, yb[:, None], axis=1)[:, 0])

    grad = jax.value_and_grad(loss)

    def update(params, state, grads):
        if optimizer == "sgd":
            return tuple(p - lr * g for p, g in zip(params, grads)), state
        m, v, t = state  # Adam, PyTorch's defaults
        t = t + 1
        m = tuple(0.9 * a + 0.1 * g for a, g in zip(m, grads))
        v = tuple(0.999 * a + 0.001 * g * g for a, g in zip(v, grads))
        step = lr * jnp.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        return tuple(p - step * a / (jnp.sqrt(b) + 1e-8 * jnp.sqrt(1 - 0.999 ** t))
                     for p, a, b in zip(params, m, v)), (m, v, t)

    def fresh_state(params):
        zeros = tuple(jnp.zeros_like(p) for p in params)
        return (zeros, zeros, jnp.zeros((), jnp.float32)) if optimizer == "adam" else ()

    @jax.jit
    def step(params, state, xb, yb):
        value, grads = grad(params, xb, yb)
        params, state = update(params, state, grads)
        return params, state, value

    steps = n // batch

    @jax.jit
    def scanned_epoch(params, state, order):
        xs = Xj[order[:steps * batch]].reshape(steps, batch, -1)
        ys = yj[order[:steps * batch]].reshape(steps, batch)

        def body(carry, data):
            params, state = carry
            params, state, value = step(params, state, *data)
            return (params, state), value

        (params, state), values = jax.lax.scan(body, (params, state), (xs, ys))
        return params, values

    order = np.random.default_rng(0).permutation(n)
    order_j = jnp.asarray(order)

    def jax_step():
        params = init()
        state = fresh_state(params)
        for start in range(0, n, batch):
            idx = order_j[start:start + batch]
            params, state, value = step(params, state, Xj[idx], yj[idx])
        params[0].block_until_ready()

    def jax_scan():
        params = init()
        params, values = scanned_epoch(params, fresh_state(params), order_j)
        values.block_until_ready()

    return jax_step, jax_scan


def _add_mlp_peers(work, X, y, lr, batch, optimizer, sklearn_dtypes):
    """PyTorch's, JAX's and scikit-learn's MLPClassifier's epoch of the same 784-128-10 network
    ("sgd" or "adam")."""
    n = len(X)
    jax = _jax()
    if jax is not None:
        work.contenders["jax (jit step)"], work.contenders["jax (lax.scan epoch)"] = _jax_mlp(
            jax, X, y, lr, batch, optimizer)
    else:
        work.notes.append("JAX not installed (pip install '.[bench]'): it was skipped")
    torch = _torch()
    if torch is not None:
        Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
        make_optimizer = torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam

        def torch_fit():
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
            opt = make_optimizer(model.parameters(), lr=lr)
            order = torch.randperm(n)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()

        work.contenders["pytorch"] = torch_fit
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier
    except ImportError:
        work.notes.append("scikit-learn not installed: its MLPClassifier was skipped")
        return
    extra = {"momentum": 0.0} if optimizer == "sgd" else {}

    def sklearn_fit(X_in):
        def run():
            clf = MLPClassifier(hidden_layer_sizes=(128,), solver=optimizer, batch_size=batch, learning_rate_init=lr,
                                max_iter=1, shuffle=True, random_state=0, alpha=0.0, **extra)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(X_in, y)
        return run

    for dtype in sklearn_dtypes:
        name = np.dtype(dtype).name
        work.contenders[f"scikit-learn MLPClassifier ({name})"] = sklearn_fit(X.astype(dtype, copy=False))
