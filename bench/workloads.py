"""Benchmark workloads: gradloop and its peers doing the same work on the same data.

Each workload is a function ``(quick: bool) -> Workload``: a dict of named
contenders (callables running ``units`` epochs each), the name of the limit
(the floor the hardware allows, measured the same way) and a note. Peers that
are not installed (torch, scikit-learn) are left out with a note.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

import gradloop
from gradloop.fast.kernels import StreamKernel
from gradloop.loop import fit
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD, Adam


@dataclass
class Workload:
    name: str
    unit: str  # what one timing covers, e.g. "epoch"
    units: int  # how many units one call runs (time is reported per unit)
    contenders: dict = field(default_factory=dict)  # name -> callable
    limit: str | None = None  # contender name that is the hardware floor
    baseline: str = "gradloop"
    notes: list = field(default_factory=list)
    input_bytes: int = 0  # size of X, for memory ratios
    close: object = None  # called once the workload is measured: remove its files, stop its cluster


def _jax():
    """JAX on the CPU, float64 enabled (the chapter's loops are float64), or None when not installed."""
    try:
        import jax
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax


def _jax_linear_loop(jax, X, Y, lr, epochs):
    """The chapter's loop compiled by XLA: every epoch (forward, loss, gradient, update) in one
    ``lax.fori_loop``, the loss of each epoch computed as gradloop computes it."""
    jnp = jax.numpy
    Xj, Yj = jnp.asarray(X), jnp.asarray(Y)
    scale = -2.0 / Y.size

    @jax.jit
    def run(w):
        def epoch(_, carry):
            w, _ = carry
            r = Yj - Xj @ w
            loss = jnp.vdot(r, r) / r.size
            return w - lr * scale * (Xj.T @ r), loss

        return jax.lax.fori_loop(0, epochs, epoch, (w, jnp.zeros(())))

    w0 = jnp.zeros((X.shape[1], Y.shape[1]))

    def jax_fori_loop():
        w, loss = run(w0)
        w.block_until_ready()
        return w

    return jax_fori_loop


def _python_loop(train):
    """gradloop's train with the compiled loop off: the Python loop's epoch (the fused kernel)."""

    def gradloop_python_loop():
        from gradloop.fast import silent

        saved = silent.worth_compiling
        silent.worth_compiling = lambda epochs: False
        try:
            return train()
        finally:
            silent.worth_compiling = saved

    return gradloop_python_loop


def _torch():
    try:
        import torch

        torch.set_num_threads(max(1, torch.get_num_threads()))
        return torch
    except ImportError:
        return None


# ---------------------------------------------------------------- the chapter's tiny loop
def chapter_small(quick):
    """The chapter's loop on 16 x 7: per-epoch overhead of ``train`` against a bare NumPy loop."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 7))
    Y = X @ rng.standard_normal((7, 1))
    w0 = np.zeros((7, 1))
    epochs = 3_000 if quick else 300_000
    lr = 0.05

    def bare_numpy():
        w = w0.copy()
        scale = -2.0 / len(X)
        for _ in range(epochs):
            pred = X @ w
            r = Y - pred
            float(np.vdot(r, r)) / r.size  # the loss, as train computes it every epoch
            g = X.T @ r
            g *= scale
            w -= lr * g
        return w

    def gradloop_train():
        return gradloop.train(X, Y, w0, lr, epochs)

    work = Workload("chapter loop, 16 x 7, full batch", "epoch", epochs,
                    {"gradloop": gradloop_train, "gradloop (Python loop)": _python_loop(gradloop_train),
                     "numpy (bare loop)": bare_numpy})
    _add_jax_linear(work, X, Y, lr, epochs)
    torch = _torch()
    if torch is not None:
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)

        def torch_no_grad():
            w = torch.zeros((7, 1), dtype=torch.float64)
            with torch.no_grad():
                for _ in range(epochs):
                    r = Yt - Xt @ w
                    float((r * r).mean())
                    w -= lr * (-2.0 / len(X)) * (Xt.T @ r)
            return w

        work.contenders["pytorch (no-grad loop)"] = torch_no_grad
    return work


def _add_jax_linear(work, X, Y, lr, epochs):
    jax = _jax()
    if jax is None:
        work.notes.append("JAX not installed (pip install '.[bench]'): its fori_loop was skipped")
        return
    work.contenders["jax (jit fori_loop)"] = _jax_linear_loop(jax, X, Y, lr, epochs)


# ---------------------------------------------------------------- linear, full batch, large
def _torch_linear_loop(torch, X, Y, lr, epochs):
    """PyTorch's idiomatic full-batch loop for the same linear model: nn.Linear, MSELoss, optim.SGD."""
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)

    def torch_loop():
        model = torch.nn.Linear(X.shape[1], 1, bias=False, dtype=Xt.dtype)
        torch.nn.init.zeros_(model.weight)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        for _ in range(epochs):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(Xt), Yt)
            loss.backward()
            opt.step()
            float(loss.detach())

    return torch_loop


def linear_large(quick, dtype=np.float64):
    """Full-batch linear MSE on a tall X: memory-bound; the limit is one streaming read of X.

    A ``train`` call reads X E + 1 times for E epochs: one pass per epoch and
    the loss after the last update (the report's "new loss"); on X this large
    the check for NaN and infinity rides on the first pass. Ten epochs (fewer
    than the 64 columns, so auto streams rather than forms X^T X) spread the
    extra read as a real run would; the plain NumPy loop reads X twice per
    epoch. The baseline is what one epoch costs inside a run: the streaming
    kernel's pass and the SGD step; the whole call is the next row.
    """
    n, d = (200_000, 64) if quick else (2_000_000, 64)
    epochs = 10
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(dtype)
    Y = (X @ rng.standard_normal((d, 1))).astype(dtype)
    lr = 0.1

    def gradloop_train():
        return gradloop.train(X, Y, np.zeros((d, 1), dtype=dtype), lr, epochs)

    def gradloop_epochs():
        model = linear(d, 1, bias=False, dtype=dtype)
        kernel, optimizer = StreamKernel(model, X, Y), SGD(lr)
        for _ in range(epochs):
            kernel.evaluate()
            optimizer.step(model.parameters(), model.gradients())
        kernel.close()

    def numpy_plain():
        w = np.zeros((d, 1), dtype=dtype)
        for _ in range(epochs):
            r = Y - X @ w
            float(np.vdot(r, r)) / r.size
            w -= lr * (-2.0 / n) * (X.T @ r)
        return w

    ones = np.ones(d, dtype=dtype)

    def streaming_read():
        # One matrix-vector product reads every byte of X exactly once, at BLAS speed.
        for _ in range(epochs):
            X @ ones

    name = np.dtype(dtype).name
    work = Workload(f"linear MSE full batch, {n:,} x {d} {name}", "epoch", epochs,
                    {"gradloop (epoch pass)": gradloop_epochs, "gradloop (train call)": gradloop_train,
                     "numpy (plain)": numpy_plain, "limit: one read of X": streaming_read},
                    limit="limit: one read of X", baseline="gradloop (epoch pass)")
    work.input_bytes = X.nbytes
    torch = _torch()
    if torch is not None:
        work.contenders["pytorch (nn + optim)"] = _torch_linear_loop(torch, X, Y, lr, epochs)
    return work


def linear_large_float32(quick):
    return linear_large(quick, np.float32)


def linear_gram(quick):
    """100 full-batch epochs on a tall X: Gram mode (X^T X once, then O(d^2) per epoch) against loops over X."""
    n, d = (200_000, 64) if quick else (2_000_000, 64)
    epochs = 100
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d))
    # Noisy targets, as real regression data: an exact fit would drive the loss to ~0, where
    # Gram sums cancel and gradloop (correctly) measures each epoch with a streaming pass instead.
    Y = X @ rng.standard_normal((d, 1)) + rng.standard_normal((n, 1))
    lr = 0.1

    def gradloop_train():
        return gradloop.train(X, Y, np.zeros((d, 1)), lr, epochs)  # auto: gram (epochs > d)

    def numpy_plain():
        w = np.zeros((d, 1))
        for _ in range(epochs):
            r = Y - X @ w
            float(np.vdot(r, r)) / r.size
            w -= lr * (-2.0 / n) * (X.T @ r)

    work = Workload(f"linear MSE, {epochs} epochs, {n:,} x {d} float64 (gram)", "epoch", epochs,
                    {"gradloop": gradloop_train, "numpy (plain)": numpy_plain})
    work.input_bytes = X.nbytes
    torch = _torch()
    if torch is not None:
        work.contenders["pytorch (nn + optim)"] = _torch_linear_loop(torch, X, Y, lr, epochs)
    return work


# ---------------------------------------------------------------- MLP, mini-batches
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
    n = 6_000 if quick else 60_000
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


# ---------------------------------------------------------------- linear, tiny
def linear_tiny(quick):
    """Linear MSE, 100 x 3, per-epoch cost: all Python overhead."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100, 3))
    Y = X @ rng.standard_normal((3, 1))
    epochs = 2_000 if quick else 100_000
    lr = 0.1

    def gradloop_train():
        return gradloop.train(X, Y, np.zeros((3, 1)), lr, epochs)

    def numpy_plain():
        w = np.zeros((3, 1))
        for _ in range(epochs):
            r = Y - X @ w
            float(np.vdot(r, r)) / r.size
            w -= lr * (-2.0 / 100) * (X.T @ r)

    def numpy_out():
        w = np.zeros((3, 1))
        pred = np.empty((100, 1))
        g = np.empty((3, 1))
        scale = -2.0 / 100
        for _ in range(epochs):
            np.matmul(X, w, out=pred)
            np.subtract(Y, pred, out=pred)
            float(np.vdot(pred, pred))
            np.matmul(X.T, pred, out=g)
            g *= lr * scale
            w -= g

    work = Workload("linear MSE, 100 x 3, full batch", "epoch", epochs,
                    {"gradloop": gradloop_train, "gradloop (Python loop)": _python_loop(gradloop_train),
                     "numpy (plain)": numpy_plain, "numpy with out=": numpy_out})
    _add_jax_linear(work, X, Y, lr, epochs)
    torch = _torch()
    if torch is not None:
        Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)

        def torch_no_grad():
            w = torch.zeros((3, 1), dtype=torch.float64)
            with torch.no_grad():
                for _ in range(epochs):
                    r = Yt - Xt @ w
                    float((r * r).mean())
                    w -= lr * (-2.0 / 100) * (Xt.T @ r)

        work.contenders["pytorch (no-grad loop)"] = torch_no_grad
    return work


WORKLOADS = {
    "chapter-small": chapter_small,
    "linear-large-f64": linear_large,
    "linear-large-f32": linear_large_float32,
    "linear-gram": linear_gram,
    "mlp-minibatch": mlp_minibatch,
    "mlp-adam": mlp_adam,
    "linear-tiny": linear_tiny,
}
