"""What the chapter knows exactly about a linear model with MSE, for arrays and sources alike: the
least-squares optimum, the gap to it, the step-size bound L, any weights' loss; and a source's
columns' means and spreads (for standardization).

:func:`linear_sums` gives the one interface for both: :class:`ArraySums` computes them from the
arrays (``lstsq``, the Gram matrix's eigenvalues), :class:`SourceSums` from ``S = [X, Y, 1]^T
[X, Y, 1]`` (d+k+1, d+k+1), formed once block by block (:func:`gradloop.fast.blockwise.source_gram`),
and from one streaming pass where a loss must be exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .fast.kernels import augmented_gram
from .fast.blocksums import linear_partial, merge_moments, moments_partial, tree_sum
from .fast.blockwise import source_gram
from .fast.executors import executor_for
from .data.sources import Source
from .preprocessing import Standardizer


@dataclass
class Optimum:
    """The closed-form least-squares solution: the best any linear model can do on this data."""

    weights: np.ndarray  # (n_features, n_outputs)
    bias: np.ndarray | None  # (n_outputs,)
    loss: float


@dataclass
class Gap:
    """How far the trained model is from the optimum."""

    loss: float
    optimal_loss: float
    loss_ratio: float  # loss / optimal loss (inf when the optimum is exact and we are not)
    excess_loss: float  # loss - optimal loss
    weight_distance: float  # ||w - w*|| (bias included)
    relative_weight_distance: float  # ||w - w*|| / ||w*||

    @classmethod
    def between(cls, loss, W, b, optimum):
        """The gap of weights (W, b) whose loss is ``loss`` to ``optimum``."""
        ours = np.ravel(W) if b is None else np.concatenate([np.ravel(W), np.ravel(b)])
        best = optimum.weights.ravel() if optimum.bias is None else np.concatenate(
            [optimum.weights.ravel(), optimum.bias.ravel()])
        distance = float(np.linalg.norm(ours - best))
        best_norm = float(np.linalg.norm(best))
        if optimum.loss > 0:
            ratio = loss / optimum.loss
        else:
            ratio = 1.0 if loss == 0 else math.inf
        # The optimum is the least loss there is: a loss below it is the rounding of the two sums.
        excess = max(loss - optimum.loss, 0.0)
        return cls(loss, optimum.loss, ratio, excess, distance, distance / best_norm if best_norm > 0 else distance)

    @property
    def at_optimum(self):
        """Whether the loss equals the optimum's to 1e-9 (relative): nothing left to gain."""
        return math.isclose(self.loss, self.optimal_loss, rel_tol=1e-9, abs_tol=1e-300)

    def summary(self):
        return (f"loss {self.loss:.6g} vs optimal {self.optimal_loss:.6g} "
                f"(ratio {self.loss_ratio:.6g}, excess {self.excess_loss:.3g}); "
                f"weights {self.relative_weight_distance:.3g} (relative) from the least-squares solution"
                + (": at the optimum" if self.at_optimum else ""))


def _with_ones(X):
    return np.hstack([X, np.ones((len(X), 1), dtype=X.dtype)])


def least_squares(X, Y, *, bias=True) -> Optimum:
    """Closed-form least squares (``np.linalg.lstsq``) of Y (N, k) on X (N, d), with an intercept if ``bias``."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Y = Y.reshape(len(Y), -1)
    A = _with_ones(X) if bias else X
    solution = np.linalg.lstsq(A, Y, rcond=None)[0]
    W, b = (solution[:-1], solution[-1]) if bias else (solution, None)
    r = A @ solution - Y
    return Optimum(W, b, float(np.vdot(r, r)) / r.size)


def gap_to_optimum(X, Y, W, b, optimum: Optimum) -> Gap:
    """Loss of (W, b) on (X, Y) next to the optimum's, and the distance between the two weight vectors."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64).reshape(len(X), -1)
    W = np.asarray(W, dtype=np.float64).reshape(optimum.weights.shape)
    pred = X @ W + (0 if b is None else np.asarray(b, dtype=np.float64))
    r = pred - Y
    value = float(np.vdot(r, r)) / r.size
    return Gap.between(value, W, b, optimum)


def lipschitz(X, *, bias=True, iterations=1000, tol=1e-10):
    """L, the largest eigenvalue of the MSE Hessian ``2 A^T A / N`` (A = X, with a ones column if ``bias``).

    Up to 2048 columns: one pass over X forms the Gram matrix ``A^T A`` (block
    by block, in float64, without copying X), and its largest eigenvalue is
    exact (``eigvalsh``, O(d^3), small next to the O(N d^2) pass). Wider X:
    power iteration on products with A (two passes per iteration, at most
    ``iterations``, stopping when the estimate moves less than ``tol``
    relative). Gradient descent is stable for ``lr < 2 / L`` and
    fastest-safe at ``lr = 1 / L``.
    """
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n, d = X.shape
    if d + bool(bias) <= 2048:
        G = augmented_gram(X, np.empty((n, 0), dtype=X.dtype))  # [X, 1]^T [X, 1]
        if not bias:
            G = G[:d, :d]
        top = float(np.linalg.eigvalsh(G)[-1])
    else:
        top = _power_iteration(_with_ones(X.astype(np.float64)) if bias else X.astype(np.float64, copy=False),
                               iterations, tol)
    if not top > 0:
        raise DataError("the features are all zero: there is nothing to learn a step size from")
    return 2.0 * top / n


def _power_iteration(A, iterations, tol):
    """Largest eigenvalue of ``A^T A`` by power iteration from a fixed start (same data, same value)."""
    v = np.random.default_rng(0).standard_normal(A.shape[1])
    v /= np.linalg.norm(v)
    estimate = 0.0
    for _ in range(iterations):
        w = A.T @ (A @ v)
        new = float(v @ w)
        norm = np.linalg.norm(w)
        if norm == 0:
            break
        v = w / norm
        if abs(new - estimate) <= tol * abs(new):
            return new
        estimate = new
    return estimate


def linear_sums(X, Y=None):
    """The linear model's exact numbers for (X, Y) arrays (:class:`ArraySums`) or a source (:class:`SourceSums`)."""
    return SourceSums(X) if isinstance(X, Source) else ArraySums(X, Y)


class ArraySums:
    """The linear model's exact numbers from arrays in memory: X (N, d), Y (N, k)."""

    def __init__(self, X, Y):
        self.X, self.Y = X, Y

    def lipschitz(self, bias=True):
        """L of the MSE with one output, ``2 lambda_max(A^T A) / N`` (:func:`lipschitz`)."""
        return lipschitz(self.X, bias=bias)

    def optimum(self, bias=True):
        return least_squares(self.X, self.Y, bias=bias)

    def gap(self, W, b, optimum):
        return gap_to_optimum(self.X, self.Y, W, b, optimum)


class SourceSums:
    """The Gram sums of a source, formed on first use and kept: ``S`` (float64), ``n``, ``d``, ``k``."""

    def __init__(self, source, client=None):
        self.source, self.client = source, client
        self.n, self.d, self.k = source.n_rows, source.n_features, source.n_outputs
        self._S = None

    @property
    def S(self):
        if self._S is None:
            blocks = executor_for(self.source, self.client)
            try:
                S = source_gram(blocks)
            finally:
                blocks.close()
            if not np.isfinite(S).all():  # a NaN or infinity in the data, or values whose squares overflow
                self.source.find_bad_value()
                raise DataError(f"{self.source.name}: values so large that their squares overflow float64; "
                                "rescale the columns (or --standardize them)")
            self._S = S
        return self._S

    def gap(self, W, b, optimum):
        """How far (W, b) is from ``optimum``: its loss by a streaming pass, the weights' distance."""
        W = np.asarray(W, dtype=np.float64).reshape(self.d, self.k)
        return Gap.between(self.loss(W, b), W, None if b is None else np.asarray(b, np.float64), optimum)

    def _design(self, bias):
        """Indices of A = [X, 1] (or X) within S."""
        return list(range(self.d)) + ([self.d + self.k] if bias else [])

    def lipschitz(self, bias=True):
        """L of the MSE with one output, ``2 lambda_max(A^T A) / N``, as :func:`gradloop.lipschitz`."""
        idx = self._design(bias)
        top = float(np.linalg.eigvalsh(self.S[np.ix_(idx, idx)])[-1])
        if not top > 0:
            raise DataError("the features are all zero: there is nothing to learn a step size from")
        return 2.0 * top / self.n

    def optimum(self, bias=True):
        """The least-squares weights (d, k), bias (k,) or None, and their loss, from the normal equations.

        ``lstsq`` on ``A^T A x = A^T Y`` (the minimum-norm solution when A is rank-deficient);
        the loss is measured by a streaming pass, not from the sums, which lose small losses
        to cancellation.
        """
        idx = self._design(bias)
        AtA = self.S[np.ix_(idx, idx)]
        AtY = self.S[np.ix_(idx, list(range(self.d, self.d + self.k)))]
        solution = np.linalg.lstsq(AtA, AtY, rcond=None)[0]
        W, b = (solution[:-1], solution[-1]) if bias else (solution, None)
        return Optimum(W, b, self.loss(W, b))

    def loss(self, W, b=None):
        """The MSE of (W (d, k), b (k,) or None) over the whole source, by one streaming pass."""
        W = np.asarray(W, dtype=np.float64).reshape(self.d, self.k)
        b = np.zeros(self.k) if b is None else np.asarray(b, dtype=np.float64).reshape(self.k)
        blocks = executor_for(self.source, self.client)
        try:
            sse = tree_sum(blocks.map(linear_partial, np.ascontiguousarray(W.T), b))[0]
        finally:
            blocks.close()
        return sse / (self.n * self.k)


def fit_standardizer(source, client=None):
    """A :class:`~gradloop.preprocessing.Standardizer` of a source's columns, in one streaming pass.

    Each block gives its rows, means and squared deviations; they merge pairwise in a fixed
    tree (:func:`gradloop.fast.blocksums.merge_moments`), so the statistics never depend on
    how many threads or workers computed them. Constant columns as in ``Standardizer.fit``.
    """
    blocks = executor_for(source, client)
    try:
        n, mean, squares = tree_sum(blocks.map(moments_partial), merge_moments)
    finally:
        blocks.close()
    with np.errstate(all="ignore"):
        std = np.sqrt(squares / n)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        j = int(np.argmax(~(np.isfinite(mean) & np.isfinite(std))))
        raise DataError(f"{source.name}: column {source.feature_names[j]!r}: holds NaN or infinite values, or "
                        "values so large that their mean or spread overflows float64 when standardized; "
                        "rescale the column")
    return Standardizer.from_moments(mean, std, source.head(1)[0][0])
