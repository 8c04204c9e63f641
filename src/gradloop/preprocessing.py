"""Splitting and scaling rows for training: a seeded train/test split, and per-column standardization.

Both are importable from :mod:`gradloop.data` too.
"""

from __future__ import annotations

import numbers

import numpy as np

from .errors import ConfigError, DataError, one_line

DEFAULT_TEST_SIZE = 0.2


# ------------------------------------------------------------------- split

def train_test_split(n_rows, test_size, seed, name="test_size", unit="row"):
    """Shuffle row indices 0..n_rows-1 with ``default_rng(seed)`` and split them.

    Returns (train_idx, test_idx), int64 arrays; the test set has
    round(test_size * n_rows) rows (Python's round, halves to even). When that is
    0, train_idx is 0..n-1 in order, keeping the file's (the chapter's) row order.
    ``name``: how messages call test_size (the command line says --test-size); ``unit``: what is
    split, as messages count it ("row", or "block" for a source's whole blocks).
    """
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real) or not 0 <= test_size < 1:
        shown = test_size if isinstance(test_size, numbers.Real) else repr(test_size)  # NaN fails 0 <= too
        raise ConfigError(f"{name} must be in [0, 1), got {shown}")
    n_rows = int(n_rows)
    if n_rows < 1:
        raise DataError("no rows to split; the data set is empty")
    n_test = int(round(float(test_size) * n_rows))
    if n_test >= n_rows:
        raise DataError(f"{name} {test_size} of {n_rows} {unit}{'s' * (n_rows != 1)} leaves no training {unit}; "
                        f"lower {name} or add data")
    if n_test == 0:
        return np.arange(n_rows, dtype=np.int64), np.empty(0, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(n_rows).astype(np.int64)
    return order[n_test:], order[:n_test]


# ----------------------------------------------------------------- scaling

class Standardizer:
    """Per-column centring and scaling, (X - mean_) / scale_, with mean_ and scale_ of shape (d,)."""

    def __init__(self):
        self.mean_ = self.scale_ = None

    def fit(self, X, names=None, source=None):
        """Learn the mean and population std (ddof=0) of each column of X (n, d), in float64.

        names, source: the columns' names and where X came from, for the message when a
        column holds NaN or infinity or its mean or spread overflows float64.
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0 or X.dtype.kind not in "biuf":
            raise DataError(f"Standardizer.fit needs a numeric 2-D array with rows, got {X.dtype} {X.shape}")
        with np.errstate(all="ignore"):  # NaN/inf input is reported just below
            mean, std = X.mean(axis=0, dtype=np.float64), X.std(axis=0, dtype=np.float64)
        if not (np.isfinite(mean).all() and np.isfinite(std).all()):
            j = int(np.argmax(~(np.isfinite(mean) & np.isfinite(std))))
            column = repr(names[j]) if names is not None else str(j)
            where = f"{source}: column {column}" if source is not None else f"X column {column}"
            raise DataError(f"{where}: holds NaN or infinite values, or values so large (up to "
                            f"{np.abs(X[:, j]).max():.3g}) that their mean or spread overflows float64 when "
                            "standardized; rescale the column")
        return self._set(mean, std, X[0])

    def _set(self, mean, std, first_row):
        """Keep finite statistics (d,); ``first_row`` (d,) centres the constant columns."""
        # A constant column has std 0 (or rounding noise): scale 1 avoids 0/0, and
        # centring on its first value makes it exactly 0 (the mean of n equal floats
        # can differ from them in the last bit).
        const = std <= 1e-12 * np.maximum(1.0, np.abs(mean))
        mean[const] = first_row[const]
        self.mean_, self.scale_ = mean, np.where(const, 1.0, std)
        return self

    @classmethod
    def from_moments(cls, mean, std, first_row):
        """A Standardizer from column statistics formed elsewhere (block by block over a source):
        finite mean (d,) and population std (d,); ``first_row`` (d,) centres the constant columns."""
        return cls()._set(np.array(mean, dtype=np.float64), np.asarray(std, dtype=np.float64),
                          np.asarray(first_row, dtype=np.float64))

    def _fitted(self):
        if self.mean_ is None:
            raise ConfigError("Standardizer is not fitted; call fit(X) first")
        return self.mean_, self.scale_

    def transform(self, X):
        """(X - mean_) / scale_ for X (n, d), as a new array: float32 stays float32, integers give float64."""
        mean, scale = self._fitted()
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(mean):
            raise DataError(f"Standardizer.transform: expected shape (n, {len(mean)}), got {X.shape}")
        dtype = X.dtype if X.dtype.kind == "f" else np.dtype(np.float64)
        return (X - mean.astype(dtype)) / scale.astype(dtype)

    def unscale_linear(self, W, b=None):
        """Turn weights learnt on standardized inputs into weights for raw inputs.

        W: (d, k) or (d,); b: (k,), a scalar, or None (zero). Returns float64
        (W / scale_[:, None], b - (mean_ / scale_) @ W), which make
        transform(X) @ W + b == X @ W_orig + b_orig.
        """
        mean, scale = self._fitted()
        W = np.asarray(W, dtype=np.float64)
        if W.ndim not in (1, 2) or len(W) != len(mean):
            raise DataError(f"unscale_linear: W has shape {W.shape}, expected ({len(mean)}, k)")
        b = np.zeros(W.shape[1:]) if b is None else np.asarray(b, dtype=np.float64)
        return W / (scale[:, None] if W.ndim == 2 else scale), b - (mean / scale) @ W

    def to_dict(self):
        mean, scale = self._fitted()
        return {"mean": mean.tolist(), "scale": scale.tolist()}

    @classmethod
    def from_dict(cls, d):
        """Rebuild from :meth:`to_dict` output; DataError unless mean and scale are equal-length finite lists."""
        try:
            mean, scale = np.asarray(d["mean"], dtype=np.float64), np.asarray(d["scale"], dtype=np.float64)
        except (TypeError, KeyError, ValueError, IndexError) as exc:
            raise DataError(f"scaling statistics must be {{'mean': [...], 'scale': [...]}} of numbers "
                            f"({one_line(exc)})") from exc
        if mean.ndim != 1 or mean.shape != scale.shape or len(mean) == 0:
            raise DataError(f"scaling statistics: mean {mean.shape} and scale {scale.shape} "
                            "must be non-empty lists of equal length")
        if not (np.isfinite(mean).all() and np.isfinite(scale).all() and (scale > 0).all()):
            raise DataError("scaling statistics: mean must be finite, scale finite and positive")
        self = cls()
        self.mean_, self.scale_ = mean, scale
        return self
