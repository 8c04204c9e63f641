"""Benchmark workloads: gradloop and its peers doing the same work on the same data.

Each workload is a function ``(quick: bool) -> Workload``: a dict of named
contenders (callables running ``units`` epochs each), the name of the limit
(the floor the hardware allows, measured the same way) and a note. Peers that
are not installed (torch, scikit-learn) are left out with a note.
"""

from __future__ import annotations

import numpy as np

import gradloop
from gradloop.fast.kernels import StreamKernel
from gradloop.models import linear
from gradloop.optimizers import SGD

from .contenders import Workload, _jax, _torch
from .mlp import mlp_adam, mlp_minibatch


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


# ---------------------------------------------------------------- the chapter's tiny loop
def chapter_small(quick):
    """The chapter's loop on 16 x 7: per-epoch overhead of ``train`` against a bare NumPy loop."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 7))
    Y = X @ rng.standard_normal((7, 1))
    w0 = np.zeros((7, 1))
    epochs = 300 if quick else 300_000
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
    n, d = (20_000, 64) if quick else (2_000_000, 64)
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
    n, d = (20_000, 64) if quick else (2_000_000, 64)
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


# ---------------------------------------------------------------- linear, tiny
def linear_tiny(quick):
    """Linear MSE, 100 x 3, per-epoch cost: all Python overhead."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((100, 3))
    Y = X @ rng.standard_normal((3, 1))
    epochs = 200 if quick else 100_000
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
