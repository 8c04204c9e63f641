"""One-pass statistics of a data source: what the chapter knows exactly about a linear model
(from the Gram sums) and the columns' means and spreads (for standardization).

For data read block by block (:mod:`gradloop.data.sources`) the least-squares optimum, the
step-size bound L and any weights' loss come from ``S = [X, Y, 1]^T [X, Y, 1]``
(d+k+1, d+k+1), formed once block by block (:func:`gradloop.fast.blockwise.source_gram`),
and from one streaming pass where a loss must be exact. In memory the same
quantities come from the arrays (:mod:`gradloop.chapter`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .fast.blocksums import linear_partial, merge_moments, moments_partial, tree_sum
from .fast.blockwise import source_gram
from .fast.executors import executor_for
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
                self._S = source_gram(blocks)
            finally:
                blocks.close()
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
