"""The compiled row loop of the streaming kernel: the same sums as its plain Python source and as NumPy."""

import numpy as np
import pytest

from gradloop.fast import rowloop


def sums(fn, X, W, b, Y, block=rowloop.BLOCK_ROWS, start=0, stop=None):
    WT = np.ascontiguousarray(W.T)
    gWT, gb = np.zeros(WT.shape), np.zeros(WT.shape[0])
    sse = fn(X, WT, b, Y, start, len(X) if stop is None else stop, block, gWT, gb)
    return sse, gWT.T, gb


def problem(n=301, d=6, k=2, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)).astype(dtype), rng.standard_normal((d, k)).astype(dtype),
            rng.standard_normal(k).astype(dtype), rng.standard_normal((n, k)).astype(dtype))


def numpy_sums(X, W, b, Y):
    X, W, b, Y = (a.astype(np.float64) for a in (X, W, b, Y))
    R = X @ W + b - Y
    return float(np.vdot(R, R)), X.T @ R, R.sum(axis=0)


@pytest.mark.parametrize("block", [1, 7, 512])
def test_compiled_loop_equals_its_python_source_and_numpy(block):
    X, W, b, Y = problem()
    compiled = sums(rowloop.row_sums, X, W, b, Y, block)
    python = sums(rowloop.row_sums.python, X, W, b, Y, block)
    reference = numpy_sums(X, W, b, Y)
    for ours, theirs, ref in zip(compiled, python, reference):
        np.testing.assert_allclose(ours, theirs, rtol=1e-13)
        np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_a_row_range_sums_only_those_rows():
    X, W, b, Y = problem()
    sse, G, s = sums(rowloop.row_sums, X, W, b, Y, start=50, stop=120)
    ref = numpy_sums(X[50:120], W, b, Y[50:120])
    np.testing.assert_allclose(sse, ref[0], rtol=1e-12)
    np.testing.assert_allclose(G, ref[1], rtol=1e-12)
    np.testing.assert_allclose(s, ref[2], rtol=1e-12)


def test_float32_sums_stay_accurate_over_many_rows():
    # Sums in float32 within a block of rows, float64 across blocks: 1e-5 relative over 200,000 rows.
    X, W, b, Y = problem(n=200_000, d=8, k=1, dtype=np.float32)
    sse, G, s = sums(rowloop.row_sums, X, W, b, Y)
    ref = numpy_sums(X, W, b, Y)
    assert sse == pytest.approx(ref[0], rel=1e-5)
    np.testing.assert_allclose(G, ref[1], rtol=1e-5, atol=1e-5 * np.abs(ref[1]).max())
    np.testing.assert_allclose(s, ref[2], rtol=1e-5, atol=1e-5 * np.abs(ref[2]).max())


@pytest.mark.parametrize("where", ["X", "Y"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_input_reaches_the_loss(where, value):
    # fastmath may reassociate, but must not assume finite values: with zero weights an
    # infinity in X contributes inf * 0 = NaN, which has to show up in the loss.
    X, W, b, Y = problem()
    W[...] = 0.0
    (X if where == "X" else Y)[123, 1] = value
    sse, G, _ = sums(rowloop.row_sums, X, W, b, Y)
    assert not np.isfinite(sse)
    assert not np.isfinite(G).all()
