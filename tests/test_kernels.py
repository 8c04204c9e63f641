"""The full-batch kernels (layers, stream, gram) against the plain formula.

For the linear model with MSE, one epoch from the same start must give the
same weights as ``W - lr * 2 X^T (X W + b - Y) / (N k)`` within 1e-12 relative
in float64 (1e-5 in float32), and every epoch's loss must agree with the direct
computation within 1e-9 relative in float64, including where the Gram sums
would cancel.
"""

import numpy as np
import pytest

import gradloop
from gradloop.errors import ConfigError
from gradloop.fast.kernels import StreamKernel, make_kernel
from gradloop.loop import fit
from gradloop.losses import MSE
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD


def data(n=3000, d=7, k=1, seed=0, dtype=np.float64, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 3, d) + rng.uniform(-2, 2, d)
    Y = X @ rng.standard_normal((d, k)) + 1.5 + noise * rng.standard_normal((n, k))
    return X.astype(dtype), Y.astype(dtype)


def plain_epoch(X, Y, W, b, lr):
    X, Y, W, b = (a.astype(np.float64) for a in (X, Y, W, b))
    R = X @ W + b - Y
    scale = 2.0 / R.size
    return W - lr * scale * (X.T @ R), b - lr * scale * R.sum(axis=0), float(np.vdot(R, R)) / R.size


def one_epoch(X, Y, mode, lr=0.01, seed=1):
    d, k = X.shape[1], Y.shape[1]
    model = linear(d, k, dtype=X.dtype)
    rng = np.random.default_rng(seed)
    model.layers[0].params["W"][...] = rng.standard_normal((d, k))
    model.layers[0].params["b"][...] = rng.standard_normal(k)
    W0, b0 = model.layers[0].params["W"].copy(), model.layers[0].params["b"].copy()
    history = fit(model, X, Y, loss="mse", optimizer=SGD(lr), epochs=1, gradient=mode)
    assert history.gradient_mode == mode
    return model.layers[0].params["W"], model.layers[0].params["b"], history, (W0, b0)


@pytest.mark.parametrize("mode", ["layers", "fused", "stream", "gram"])
@pytest.mark.parametrize("k", [1, 3])
def test_one_epoch_equals_the_plain_formula_float64(mode, k):
    X, Y = data(k=k)
    W, b, history, (W0, b0) = one_epoch(X, Y, mode)
    W_ref, b_ref, loss_ref = plain_epoch(X, Y, W0, b0, 0.01)
    np.testing.assert_allclose(W, W_ref, rtol=1e-12, atol=1e-12 * np.abs(W_ref).max())
    np.testing.assert_allclose(b, b_ref, rtol=1e-12)
    assert history.history["loss"][0] == pytest.approx(loss_ref, rel=1e-12)


@pytest.mark.parametrize("mode", ["layers", "fused", "stream", "gram"])
def test_one_epoch_equals_the_plain_formula_float32(mode):
    X, Y = data(dtype=np.float32)
    W, b, history, (W0, b0) = one_epoch(X, Y, mode)
    assert W.dtype == np.float32 and b.dtype == np.float32
    W_ref, b_ref, loss_ref = plain_epoch(X, Y, W0, b0, 0.01)
    np.testing.assert_allclose(W, W_ref, rtol=1e-5, atol=1e-5 * np.abs(W_ref).max())
    assert history.history["loss"][0] == pytest.approx(loss_ref, rel=1e-5)


def test_stream_blocks_and_threads_cover_every_row_once():
    X, Y = data(n=1001, d=5, k=2)
    model = linear(5, 2)
    model.layers[0].params["W"][...] = 0.3
    reference = StreamKernel(model, X, Y, threads=1, block_rows=10_000)
    value = reference.evaluate()
    grads = [g.copy() for g in model.gradients()]
    for threads, block in [(1, 7), (2, 64), (3, 1000)]:
        kernel = StreamKernel(model, X, Y, threads=threads, block_rows=block)
        assert kernel.evaluate() == pytest.approx(value, rel=1e-13)
        for g, ref in zip(model.gradients(), grads):
            np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-14)
        kernel.close()


def test_gram_losses_match_direct_losses_over_a_run():
    X, Y = data(n=5000, d=6)
    lr = 1.0 / gradloop.lipschitz(X)
    runs = {}
    for mode in ("gram", "layers"):
        model = linear(6, 1)
        runs[mode] = fit(model, X, Y, loss="mse", optimizer=SGD(lr), epochs=300, gradient=mode).history
    np.testing.assert_allclose(runs["gram"]["new_loss"], runs["layers"]["new_loss"], rtol=1e-9)


class DirectLoss(gradloop.Callback):
    """After every epoch, the loss of the current weights computed directly from the rows."""

    wants_records = False

    def __init__(self, X, Y):
        self.X, self.Y, self.pairs = X, Y, []

    def on_epoch_end(self, record, trainer):
        layer = trainer.model.layers[0]
        R = self.X @ layer.params["W"] + layer.params["b"] - self.Y
        self.pairs.append((trainer.history.history["new_loss"][-1], float(np.vdot(R, R)) / R.size))


def test_gram_losses_agree_with_direct_ones_through_the_cancellation_zone():
    # An exact linear relation: the loss falls from ~10 to ~1e-24 while Y^T Y / N stays ~10.
    # Below ~1e-6 of that, the difference of sums is rounding noise, so those epochs are
    # measured by a streaming pass; reported and direct losses agree within 1e-9 throughout
    # (until the loss itself is at the rounding floor of the residuals, ~1e-20).
    X, Y = data(n=4000, d=4, noise=0.0)
    model = linear(4, 1)
    check = DirectLoss(X, Y)
    fit(model, X, Y, loss="mse", optimizer=SGD(1.0 / gradloop.lipschitz(X)), epochs=6000, gradient="gram",
        callbacks=[check])
    compared = [(ours, direct) for ours, direct in check.pairs if direct > 1e-20]
    assert min(direct for _, direct in compared) < 1e-15  # the run did reach the cancellation zone
    for ours, direct in compared:
        assert ours == pytest.approx(direct, rel=1e-9, abs=0)


def test_gram_counts_its_fallbacks():
    X, Y = data(n=2000, d=3, noise=0.0)
    model = linear(3, 1)
    W_true = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), Y, rcond=None)[0]
    model.layers[0].params["W"][...] = W_true[:-1]
    model.layers[0].params["b"][...] = W_true[-1]
    kernel = make_kernel(model, MSE(), X, Y, "gram")
    assert kernel.evaluate() < 1e-24
    assert kernel.fallbacks == 1


def test_auto_picks_by_cost():
    X, Y = data(n=5000, d=8)
    assert fit(linear(8), X, Y, loss="mse", optimizer=SGD(0.01), epochs=50).gradient_mode == "gram"
    assert fit(linear(8), X, Y, loss="mse", optimizer=SGD(0.01), epochs=5).gradient_mode == "fused"
    Xs, Ys = data(n=16, d=7)  # tiny: plain pass is cheaper than the Gram algebra
    assert fit(linear(7), Xs, Ys, loss="mse", optimizer=SGD(0.01), epochs=500).gradient_mode == "fused"
    assert fit(mlp([7, 4, 1]), Xs, Ys, loss="mse", optimizer=SGD(0.01), epochs=3).gradient_mode == "layers"


def test_train_accepts_gradient_and_all_modes_reach_least_squares():
    X, Y = data(n=4000, d=5)
    optimum = gradloop.least_squares(X, Y)
    for mode in ("layers", "fused", "stream", "gram"):
        W, b = gradloop.train(X, Y, np.zeros((5, 1)), "auto", 3000, bias=0.0, gradient=mode)
        np.testing.assert_allclose(W, optimum.weights, rtol=1e-8)


def test_bad_gradient_modes_are_refused():
    X, Y = data(n=50, d=3)
    with pytest.raises(ConfigError, match="unknown gradient mode 'fast'; known: auto, gram, stream, fused, layers"):
        fit(linear(3), X, Y, loss="mse", optimizer=SGD(0.01), epochs=1, gradient="fast")
    with pytest.raises(ConfigError, match="gradient='gram' needs the linear model with MSE"):
        fit(mlp([3, 4, 1]), X, Y, loss="mse", optimizer=SGD(0.01), epochs=1, gradient="gram")
    with pytest.raises(ConfigError, match="needs the linear model with MSE"):
        fit(linear(3), X, Y, loss="mae", optimizer=SGD(0.01), epochs=1, gradient="stream")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_is_the_layer_path_bit_for_bit(dtype, bias):
    X, Y = data(n=100, d=3, k=2, dtype=dtype)
    weights = {}
    for mode in ("layers", "fused"):
        model = linear(3, 2, bias=bias, dtype=dtype)
        model.layers[0].params["W"][...] = 0.1
        history = fit(model, X, Y, loss="mse", optimizer=SGD(0.01), epochs=50, gradient=mode, keep_records=True)
        weights[mode] = ([p.copy() for p in model.parameters()], history.history, history.records[-1].pred_head)
    for a, b in zip(weights["layers"][0], weights["fused"][0]):
        assert np.array_equal(a, b)
    assert weights["layers"][1] == weights["fused"][1]
    assert np.array_equal(weights["layers"][2], weights["fused"][2])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gram_sums_of_blocks_and_threads_equal_the_whole_product(dtype):
    from gradloop.fast.kernels import augmented_gram

    X, Y = data(n=1001, d=5, k=2, dtype=dtype)
    A = np.hstack([X, Y, np.ones((len(X), 1))]).astype(np.float64)
    reference = A.T @ A
    for threads, block in [(1, 4096), (2, 7), (3, 100)]:
        S = augmented_gram(X, Y, threads=threads, block_rows=block)
        assert S.dtype == np.float64  # float32 data is widened block by block, never copied whole
        np.testing.assert_allclose(S, reference, rtol=1e-13, atol=1e-13 * np.abs(reference).max())


def test_auto_streams_large_row_major_data_and_leaves_column_major_data_to_blas(monkeypatch):
    import gradloop.fast.kernels as kernels

    monkeypatch.setattr(kernels, "STREAM_MIN_BYTES", 1 << 10)
    X, Y = data(n=2000, d=4)
    model = linear(4, 1)
    assert make_kernel(model, MSE(), X, Y, "auto", epochs=2).name == "stream"
    assert make_kernel(model, MSE(), np.asfortranarray(X), Y, "auto", epochs=2).name == "fused"


def test_stream_on_column_major_and_strided_arrays_equals_the_plain_formula():
    # Forced "stream" on arrays the row loop walks with strides: slower, still the same sums.
    X, Y = data(n=1500, d=5, k=2)
    wide = np.hstack([Y, Y])  # Y as a strided view: every other column of a wider array
    for X_in, Y_in in [(np.asfortranarray(X), Y), (X, wide[:, ::2][:, :2])]:
        W, b, history, (W0, b0) = one_epoch(X_in, np.asarray(Y_in), "stream")
        W_ref, b_ref, loss_ref = plain_epoch(X, np.asarray(Y_in), W0, b0, 0.01)
        np.testing.assert_allclose(W, W_ref, rtol=1e-12, atol=1e-12 * np.abs(W_ref).max())
        assert history.history["loss"][0] == pytest.approx(loss_ref, rel=1e-12)


def test_stream_reads_a_read_only_memory_mapped_file(tmp_path):
    # Data too large for memory arrives memory-mapped and read-only: the compiled loop only reads it.
    X, Y = data(n=1200, d=4)
    np.save(tmp_path / "X.npy", X)
    mapped = np.load(tmp_path / "X.npy", mmap_mode="r")
    assert not mapped.flags.writeable
    ours = gradloop.train(mapped, Y, np.zeros((4, 1)), 0.01, 3, gradient="stream")
    reference = gradloop.train(X, Y, np.zeros((4, 1)), 0.01, 3, gradient="layers")
    np.testing.assert_allclose(ours, reference, rtol=1e-12)
