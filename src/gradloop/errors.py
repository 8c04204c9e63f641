"""The one exception family of gradloop.

Every error a user can cause derives from :class:`GradloopError`, itself a
``ValueError``, so ``except ValueError`` keeps working for code that does not
know gradloop. Messages say what was wrong, where, and what to do.
"""

from __future__ import annotations


def one_line(text, limit=200) -> str:
    """A message from elsewhere (a library's, often multi-line; or an exception) as one short line."""
    line = " ".join(str(text).split()) or (type(text).__name__ if isinstance(text, BaseException) else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


class GradloopError(ValueError):
    """Root of every error gradloop raises for bad input or a failed run."""


class DataError(GradloopError):
    """A data file or array is missing, malformed, or holds values we cannot use."""


class ConfigError(GradloopError):
    """An argument or option is out of range or of the wrong kind."""


class ModelFileError(GradloopError):
    """A model file is not a gradloop model, or is truncated or corrupted."""


class DivergenceError(GradloopError):
    """Training diverged: the loss stopped being finite or exploded.

    Attributes:
        epoch: the epoch (1-based) at which the loss went bad.
        weights: the last parameters whose loss was finite (a list of arrays,
            or, from :func:`gradloop.train`, the weights in the caller's shape).
        bias: the matching bias, or None.
        stable_lr: the largest learning rate that is stable for this problem
            (2/L for linear least squares), or None where unknown.
        lr: the learning rate that diverged.
    """

    def __init__(self, message, *, epoch, weights, stable_lr=None, lr=None, bias=None):
        super().__init__(message)
        self.epoch = epoch
        self.weights = weights
        self.bias = bias
        self.stable_lr = stable_lr
        self.lr = lr


class CheckpointError(GradloopError):
    """A checkpoint is missing, damaged, or belongs to another model or run."""
