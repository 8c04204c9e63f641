"""The chapter's API: ``model``, ``loss``, ``train``, and what a linear model lets us know exactly.

``train`` is the one training loop (:func:`gradloop.loop.fit`) run with a
linear model (one Dense layer), mean squared error and plain SGD, which is the
chapter's update ``weights -= lr * gradients``. :func:`fit_linear` is the same
run returning a :class:`LinearRun` (weights, bias, history, the least-squares
optimum and the gap to it); ``train`` unwraps it to the weights.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .constraints import check_all, check_lr
from .data.convert import as_source, is_source_input
from .display import table
from .errors import DataError, DivergenceError
from .fast.kernels import STREAM_MIN_BYTES
from .finite import first_non_finite
from .loop import check_epochs, fit
from .metrics import regression_metrics
from .models import linear
from .optimizers import SGD
from .sums import Gap, Optimum, gap_to_optimum, least_squares, linear_sums, lipschitz

# The optimum, the gap to it and L live in sums.py, for arrays and sources alike; they are the
# chapter's API too.
__all__ = ["LinearRun", "evaluate", "fit_linear", "gap_to_optimum", "gradients", "least_squares", "lipschitz",
           "loss", "model", "train"]


def model(X, weights, bias=None):
    """The chapter's linear model: ``X @ weights (+ bias)``.

    Args:
        X: (n_samples, n_features).
        weights: (n_features,) or (n_features, n_outputs).
        bias: optional scalar or (n_outputs,).

    Returns:
        (n_samples,) or (n_samples, n_outputs), following the weights' shape.

    Example:
        >>> model(np.array([[0.5]]), np.array([[1.0]]))
        array([[0.5]])
    """
    X, weights = np.asarray(X, dtype=float), np.asarray(weights, dtype=float)
    out = X @ weights
    return out if bias is None else out + np.asarray(bias, dtype=float)


def loss(Y, Y_pred):
    """Mean squared error ``mean((Y - Y_pred)**2)`` as a float; lower is better.

    ``Y`` and ``Y_pred`` may be (n,) or (n, 1) each.
    """
    Y, Y_pred = np.asarray(Y, dtype=float), np.asarray(Y_pred, dtype=float)
    if Y.ndim == 1 and Y_pred.ndim == 2 and Y_pred.shape[1] == 1:
        Y = Y[:, None]
    elif Y_pred.ndim == 1 and Y.ndim == 2 and Y.shape[1] == 1:
        Y_pred = Y_pred[:, None]
    if Y.shape != Y_pred.shape:
        raise DataError(f"Y has shape {Y.shape} but Y_pred has shape {Y_pred.shape}")
    r = Y - Y_pred
    return float(np.vdot(r, r)) / r.size


def gradients(X, Y, weights, bias=None):
    """The chapter's gradient of the MSE: ``-2 X.T @ (Y - Y_pred) / N`` (and ``-2 mean(Y - Y_pred)`` for the bias).

    Shapes as :func:`model`; returns the weights' gradient (shape of ``weights``)
    and, when a bias is given, the bias gradient. With k outputs both are
    divided by k: :func:`loss` averages over all N*k entries.
    """
    X, Y, W, b, _ = _validate(X, Y, weights, bias, None)
    r = Y - (X @ W + (0 if b is None else b))
    # loss() (and train) average over all N*k entries, so with k outputs the
    # gradient of that mean carries a further 1/k; for one output (the
    # chapter's case) k == 1 and this is exactly -2 X.T @ r / N.
    k = r.shape[1]
    gW = -2 * X.T @ r / len(X)
    if k != 1:
        gW /= k
    gW = gW.reshape(np.shape(weights))
    if b is None:
        return gW
    gb = -2 * r.mean(axis=0)
    if k != 1:
        gb /= k
    return gW, gb.reshape(np.shape(bias))


class LinearRun:
    """Result of :func:`fit_linear`: trained weights in the caller's shape, history and the optimum.

    Attributes: ``weights``, ``bias`` (None without one), ``history``
    (:class:`gradloop.loop.History`), ``lr`` (the learning rate used),
    ``model`` (the trained :class:`Sequential`). ``optimum``, ``gap`` and
    ``stable_lr`` are computed on first access, from the data's
    :func:`~gradloop.sums.linear_sums` (the arrays, or a source's Gram sums).
    """

    def __init__(self, model, history, sums, weights_shape, bias_shape, lr):
        self.model, self.history, self.lr = model, history, lr
        self._sums = sums
        W = model.layers[0].params["W"]
        self.weights = W.reshape(weights_shape).copy()
        self.bias = None
        if bias_shape is not None:
            b = model.layers[0].params["b"]
            self.bias = float(b[0]) if bias_shape == () else b.reshape(bias_shape).copy()
        self._optimum = None

    def __repr__(self):
        return (f"LinearRun(weights={np.asarray(self.weights).tolist()}, bias={self.bias!r}, lr={self.lr:.7g}, "
                f"epochs={self.history.epochs_run}, final_loss={self.history.final_loss})")

    def _repr_html_(self):
        return table("Linear run", [("weights", np.asarray(self.weights)), ("bias", self.bias), ("lr", self.lr),
                                    ("epochs", self.history.epochs_run), ("final loss", self.history.final_loss),
                                    ("gradient mode", self.history.gradient_mode)])

    @property
    def optimum(self) -> Optimum:
        if self._optimum is None:
            self._optimum = self._sums.optimum(self.bias is not None)
        return self._optimum

    @property
    def gap(self) -> Gap:
        layer = self.model.layers[0]
        return self._sums.gap(layer.params["W"], layer.params.get("b"), self.optimum)

    @property
    def stable_lr(self):
        return 2.0 / _loss_lipschitz(self._sums, self.bias is not None, self.model.n_outputs)


def train(X, Y, weights, lr, epochs, *, bias=None, verbose=False, every=1, round_to=None, gradient="auto"):
    """Full-batch gradient descent on the linear model with MSE: the chapter's ``train``.

    Each epoch: predictions and loss, the gradient ``-2 X.T @ (Y - Y_pred) / N``,
    ``weights -= lr * gradients``, then the new prediction and loss (which are the
    next epoch's forward pass: one forward pass per epoch, report or not).

    Args:
        X: (N, d) inputs.
        Y: (N,) or (N, 1) targets (or (N, k) for k outputs).
        weights: (d,) or (d, 1) (or (d, k)) starting weights; never modified.
        lr: learning rate > 0, or "auto" for 1/L (L the largest eigenvalue of
            the Hessian 2 X^T X / N, divided by k for k outputs since the loss
            averages over them): the largest step that is safe for every
            direction.
        epochs: number of epochs, an integer >= 0.
        bias: optional starting bias (scalar or (k,)); when given it is trained too.
        verbose: print the chapter's per-epoch report.
        every: report every ``every`` epochs (and the first and last).
        round_to: the chapter rounds gradients and weights to 3 decimals each
            epoch; off by default because it stalls learning once
            ``lr * gradient`` is below half the last digit (0.0005 for 3).
        gradient: how each epoch's gradient is computed: "layers" (forward and
            backward through the Dense layer), "fused" (the same arithmetic
            without the layer calls, same bits), "stream" (a compiled loop over
            the rows, one read of X per epoch), "gram" (X^T X once, then O(d^2)
            per epoch, independent of N), or "auto" (gram when there are more
            epochs than columns and X is not tiny; stream for large X; else fused). All
            agree to ~1e-14 relative; pin one for bit-identical reruns with a
            different number of epochs.

    Returns:
        The trained weights in the shape passed in; ``(weights, bias)`` when a bias was given.

    Raises:
        GradloopError subclasses for bad input; DivergenceError if the loss
        explodes (it carries the epoch, last finite weights and a stable lr).

    Example:
        >>> train(np.array([[0.5]]), np.array([[1.0]]), np.array([[1.0]]), lr=0.1, epochs=2)
        array([[1.0975]])
    """
    run = fit_linear(X, Y, weights, lr, epochs, bias=bias, verbose=verbose, every=every, round_to=round_to,
                     gradient=gradient)
    return run.weights if run.bias is None else (run.weights, run.bias)


def fit_linear(X, Y, weights, lr, epochs, *, bias=None, verbose=False, every=1, round_to=None,
               callbacks=(), keep_records=False, gradient="auto") -> LinearRun:
    """:func:`train`, returning the whole run: weights, bias, history, optimum and gap.

    ``keep_records=True`` keeps every epoch's record (the report as data) in
    ``run.history.records``; ``run.history.history["loss"]`` always has the
    loss per epoch.
    """
    data, W, b, check_later = _linear_inputs(X, Y, weights, bias, lr, gradient)
    epochs = check_epochs(epochs)
    check_all(every=every, round_to=round_to)
    sums, k, has_bias = linear_sums(*data), W.shape[1], b is not None
    lr_value = 1.0 / _loss_lipschitz(sums, has_bias, k) if isinstance(lr, str) else float(lr)
    net = linear(W.shape[0], k, bias=has_bias, dtype=W.dtype)
    net.layers[0].params["W"][...] = W
    if has_bias:
        net.layers[0].params["b"][...] = b
    # Unchecked data may hold a NaN or infinity until the first pass finds it: no warnings on the way.
    quiet = np.errstate(invalid="ignore", over="ignore") if check_later else contextlib.nullcontext()
    try:
        with quiet:
            history = fit(net, *data, loss="mse", optimizer=SGD(lr_value), epochs=epochs, verbose=verbose,
                          every=every, round_to=round_to, callbacks=callbacks, keep_records=keep_records,
                          gradient=gradient, stable_lr=lambda: _stable_lr(sums, has_bias, k))
    except DivergenceError as exc:
        if check_later and exc.epoch == 0:  # the starting loss is not finite: is it the data?
            try:
                _check_finite(("X", data[0]), ("Y", data[1]))
            except DataError as bad_data:
                raise bad_data from None  # the data's fault, not a divergence
        _caller_shaped(exc, np.shape(weights), None if b is None else np.shape(bias))
        raise
    return LinearRun(net, history, sums, np.shape(weights), None if bias is None else np.shape(bias), lr_value)


def _linear_inputs(X, Y, weights, bias, lr, gradient):
    """The chapter's arguments checked once: (data for :func:`gradloop.fit`: (X, Y) arrays or (source,
    None); W (d, k); b (k,) or None; whether the finiteness check of large arrays waits for the first
    pass)."""
    if is_source_input(X, Y):  # a source is checked block by block as it is read
        source = as_source(X, Y)
        W, b = _validate_weights(weights, bias, source.n_features, source.n_outputs, source.dtype)
        check_lr(lr)
        return (source, None), W, b, False
    X, Y, W, b, _ = _validate(X, Y, weights, bias, lr, check_data=False)
    # _validate skips the lr check when lr is None (its "not given" for gradients/evaluate); for
    # training None is a bad value.
    check_lr(lr)
    # On large X the finiteness check is a pass of its own, as long as an epoch. The streaming
    # and Gram kernels, which auto picks there, carry any NaN or infinity of X or Y into the
    # starting loss (tested), so the check can wait until that loss is not finite.
    check_later = (X.nbytes >= STREAM_MIN_BYTES and gradient in ("auto", "stream", "gram")
                   and not isinstance(lr, str))  # lr="auto" reads X before training
    if not check_later:
        _check_finite(("X", X), ("Y", Y))
    return (X, Y), W, b, check_later



def evaluate(X, Y, weights, bias=None):
    """Regression metrics of a linear model (weights and bias) or any trained model on (X, Y).

    ``weights`` may be an array (the chapter's) or a :class:`gradloop.models.Sequential`.

    Returns:
        dict with "mse", "rmse", "mae" and "r2".
    """
    if hasattr(weights, "predict"):
        return regression_metrics(np.asarray(Y, dtype=float), weights.predict(np.asarray(X, dtype=float)))
    X, Y, W, b, _ = _validate(X, Y, weights, bias, None)
    return regression_metrics(Y, X @ W + (0 if b is None else b))


def _loss_lipschitz(sums, has_bias, n_outputs):
    """L of the training loss itself: ``lipschitz(X)`` for one output.

    The loss averages over all N*k entries, so with k outputs its Hessian is
    ``2 A^T A / (N k)`` (per output): L is k times smaller, and 1/L, 2/L k
    times larger. ``sums``: the data's :func:`~gradloop.sums.linear_sums`.
    """
    return sums.lipschitz(has_bias) / n_outputs


# ---------------------------------------------------------------- validation
def _stable_lr(sums, has_bias, n_outputs):
    """2/L for the linear MSE problem, or None when the features carry no signal to measure L."""
    try:
        return 2.0 / _loss_lipschitz(sums, has_bias, n_outputs)
    except DataError:
        return None



def _caller_shaped(exc, weights_shape, bias_shape):
    """Give a DivergenceError from the loop the weights (and bias) in the shapes the caller passed."""
    W, *rest = exc.weights
    exc.weights = W.reshape(weights_shape)
    exc.bias = None
    if bias_shape is not None:
        b = rest[0]
        exc.bias = float(b[0]) if bias_shape == () else b.reshape(bias_shape)


def _as_matrix(name, value, dtype=None):
    try:
        a = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{name} is not an array of numbers: {exc}") from exc
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{name} must hold numbers, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{name} must hold real numbers, got complex")
    return a if dtype is None else a.astype(dtype, copy=False)  # read only after this: no copy needed


def _validate(X, Y, weights, bias, lr, check_data=True):
    """Check the chapter's arguments once, at the boundary; return float arrays (X, Y 2-D, W 2-D, b, dtype).

    ``check_data=False`` leaves out the finiteness check of X and Y (a pass over X): the caller does it.
    """
    X = _as_matrix("X", X)
    if X.ndim != 2:
        raise DataError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"X has no {'rows' if X.shape[0] == 0 else 'columns'} (shape {X.shape})")
    # float32 only when X is float32 (on request); otherwise everything float64.
    dtype = np.float32 if X.dtype == np.float32 else np.float64
    X = np.ascontiguousarray(X, dtype=dtype)
    Y = _as_matrix("Y", Y, dtype)
    if Y.ndim not in (1, 2):
        raise DataError(f"Y must be (n_samples,) or (n_samples, n_outputs), got shape {Y.shape}")
    if len(Y) != len(X):
        raise DataError(f"X has {len(X)} rows but Y has {len(Y)}: they must match")
    Y = Y.reshape(len(Y), -1)
    W, b = _validate_weights(weights, bias, X.shape[1], Y.shape[1], dtype)
    if check_data:
        _check_finite(("X", X), ("Y", Y))
    if lr is not None:
        check_lr(lr)
    return X, Y, W, b, dtype


def _validate_weights(weights, bias, d, k, dtype):
    """Weights (d,) or (d, k) and an optional bias (k,) for X with d columns and k outputs: (W (d, k), b)."""
    W = _as_matrix("weights", weights, dtype)
    if W.ndim not in (1, 2) or W.shape[0] != d or (W.ndim == 2 and W.shape[1] != k):
        raise DataError(f"weights have shape {W.shape}; for X with {d} columns and "
                        f"{k} output(s) they must be ({d},) or ({d}, {k})")
    if W.ndim == 1 and k != 1:
        raise DataError(f"weights of shape {W.shape} give one output but Y has {k} columns")
    W = W.reshape(d, -1)
    b = None
    if bias is not None:
        b = _as_matrix("bias", bias, dtype).reshape(-1)
        if b.size != W.shape[1]:
            raise DataError(f"bias has {b.size} values but the model has {W.shape[1]} output(s)")
    _check_finite(("weights", W), ("bias", b))
    return W, b


def _check_finite(*named):
    """DataError naming the first non-finite entry of the first (name, array) that has one."""
    for name, a in named:
        if a is not None and (bad := first_non_finite(a)) is not None:
            raise DataError(f"{name} holds a non-finite value ({a[bad]}) at index {bad}")
