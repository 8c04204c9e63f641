"""When a run stops by itself: the divergence rule and its message, and the quiet stop on a NaN.

Small functions of numbers, shared by every path of the loop (full batch, mini-batches, the
compiled silent loop): the limit a loss may not pass, what a DivergenceError says (the stable
learning rate, and a hint to standardize uneven features), what TerminateOnNaN leaves in the
History's stop message.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import DivergenceError

# A loss this many times the starting loss counts as divergence: gradient descent on a convex
# problem never goes up, and a healthy network run does not climb six orders of magnitude.
DIVERGENCE_FACTOR = 1e6
# The library's advice names the class; the command line says its option instead.
STANDARDIZE_ADVICE = "standardize them (gradloop.data.Standardizer)"


def divergence_limit(start_loss):
    """The loss above which (or NaN) a run has diverged, from the very first weights' loss."""
    return DIVERGENCE_FACTOR * max(start_loss, 1e-8)


def non_finite_start(value, epoch, weights, lr):
    """The error for starting weights whose loss is not finite: there is nothing to train from."""
    return DivergenceError(f"the loss of the starting weights is {value}: check the data and the initial weights",
                           epoch=epoch, weights=weights, stable_lr=None, lr=lr)


def divergence_error(epoch, value, where, lr, stable_lr, X, weights):
    """The error for a loss that stopped being finite or exploded at ``epoch`` (``where``: " (batch k)" or
    ""): it names the stable learning rate when known (``stable_lr``: a number, a function computing
    it, or None) and suggests standardizing features of uneven size (``X``: the training rows or None)."""
    stable = stable_lr() if callable(stable_lr) else stable_lr
    what = "is not finite" if not math.isfinite(value) else f"exploded to {value:.3g}"
    if stable is not None:
        advice = f"the largest stable learning rate for this problem is {stable:.6g}"
    else:
        advice = f"try a smaller learning rate, e.g. {lr / 10:.3g}"
    kept = f"the last finite weights (epoch {epoch - 1}) are kept"
    return DivergenceError(
        f"training diverged at epoch {epoch}{where}: the loss {what} with learning rate {lr:.6g}; "
        f"{advice}; {kept}{scale_hint(X) if X is not None else ''}",
        epoch=epoch, weights=weights, stable_lr=stable, lr=lr)


def nan_stop_message(epoch, value, batch=None):
    """What TerminateOnNaN leaves in ``history.stop_message``: full batch, the epoch's update is taken
    back; mini-batches, the batch's update never happened."""
    if batch is None:
        return f"stopped at epoch {epoch}: its update made the loss {value}; the weights of epoch {epoch - 1} are kept"
    return (f"stopped at epoch {epoch}, batch {batch}: the loss is {value}; "
            f"the weights are those before that batch's update")


def scale_hint(X):
    """Advice to standardize when the features' sizes (root mean square) differ more than 10-fold.

    Uneven (or uncentred) features stretch the loss surface: the stable step
    is set by the largest feature while the small ones barely move.
    """
    X = np.asarray(X)
    scales = np.sqrt(np.einsum("ij,ij->j", X, X) / len(X))
    scales = scales[scales > 0]
    if len(scales) > 1 and scales.max() / scales.min() > 10:
        return f"; the features' scales differ widely: {STANDARDIZE_ADVICE}"
    return ""
