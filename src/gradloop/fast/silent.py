"""The silent chapter loop, compiled: every epoch of a full-batch linear-MSE run in one call.

When nothing reads an epoch's record (no report, no callbacks, no validation, no schedule)
and the step is the chapter's (plain SGD, nothing clipped), an epoch of a small linear
model is a few hundred multiply-adds: on 100 x 3 about 0.2 us of arithmetic, against ~4 us
for the Python loop's calls around it. :func:`linear_epochs` is that loop compiled (numba),
with the Python loop's steps in its order (:class:`~gradloop.fast.kernels.FusedKernel`,
:meth:`gradloop.loop._Run.step`):

    start:  loss and gradient at the starting weights
    epoch:  [round the gradient]  W -= lr * gW, b -= lr * gb  [round W and b]
            loss and gradient at the new weights; stop if that loss is NaN or above ``limit``

where a loss and gradient are ``P = X W + b``, ``R = (P - Y) * (2 / (N k))``,
``loss = sum((P - Y)**2) / (N k)``, ``gW = X^T R``, ``gb = sum(R)``. Each product and sum
adds its terms in another order than NumPy's BLAS (along the rows, with SIMD lanes), so
weights and losses agree with the Python loop's to ~1e-15 relative, not bit for bit
(tested within 1e-14 in float64). The data is kept transposed, (d, N) and (k, N), so that
every sum runs along a contiguous row.
"""

from __future__ import annotations

import numpy as np

from ..optimizers import SGD
from .jit import compiled


def _evaluate(XT, YT, W, b, residual, gW, gb, scale):
    """The loss at W, b and its gradients into gW (d, k), gb (k,); ``residual`` (N,) is scratch."""
    d, n = XT.shape
    k = YT.shape[0]
    zero = scale * 0  # 0 in the data's dtype: float32 sums stay float32, as NumPy's do
    sse = zero
    for j in range(k):
        w = W[0, j]
        for i in range(n):
            residual[i] = XT[0, i] * w  # (0 + x w is x w: the same bits as a sum started at 0)
        for c in range(1, d):
            w = W[c, j]
            for i in range(n):
                residual[i] += XT[c, i] * w
        total = zero
        for i in range(n):
            r = residual[i] + b[j] - YT[j, i]
            sse += r * r
            r = r * scale
            residual[i] = r
            total += r
        gb[j] = total
        for c in range(d):
            acc = zero
            for i in range(n):
                acc += XT[c, i] * residual[i]
            gW[c, j] = acc
    return float(sse) / (n * k)


def _round(a, factor):
    """np.round(a, decimals) in place, as NumPy computes it: rint(a * 10**decimals) / 10**decimals."""
    flat = a.reshape(-1)
    for i in range(flat.size):
        flat[i] = np.rint(flat[i] * factor) / factor


# Reassociation only: SIMD lanes in the sums; no fused multiply-adds, so each update and rounding
# is NumPy's own arithmetic.
@compiled(uses=(_evaluate, _round), fastmath={"reassoc"})
def linear_epochs(XT, YT, W, b, has_bias, lr, scale, epochs, round_to, factor, limit, losses, new_losses, keep_W,
                  keep_b):
    """Train W (d, k) and b (k,) in place, up to ``epochs`` epochs: ``(epochs completed, loss that stopped it)``.

    XT (d, N) and YT (k, N): the data transposed. W, b, lr, ``scale`` = 2 / (N k) and ``factor`` =
    10**round_to are in its dtype, as NumPy computes ``r *= 2 / r.size`` and ``np.round`` in the
    array's dtype. Without a bias, ``has_bias`` is False and b zeros, left alone. ``round_to``
    < 0: no rounding. ``losses[e]`` and
    ``new_losses[e]`` get epoch e+1's loss before and after its update. An update whose loss is
    NaN or above ``limit`` is taken back (``keep_W``, ``keep_b`` hold the weights before it) and
    ends the loop: it returns the epochs completed before it and that loss (NaN when all ran).
    """
    d, n = XT.shape
    k = YT.shape[0]
    residual = np.empty(n, dtype=XT.dtype)
    gW = np.empty((d, k), dtype=XT.dtype)
    gb = np.empty(k, dtype=XT.dtype)
    value = _evaluate(XT, YT, W, b, residual, gW, gb, scale)
    for epoch in range(epochs):
        if round_to >= 0:  # the chapter's rounding: the gradient before the step, the weights after
            _round(gW, factor)
            _round(gb, factor)
        for c in range(d):
            for j in range(k):
                keep_W[c, j] = W[c, j]
                W[c, j] -= lr * gW[c, j]
        for j in range(k):
            keep_b[j] = b[j]
            if has_bias:
                b[j] -= lr * gb[j]
        if round_to >= 0:
            _round(W, factor)
            _round(b, factor)
        new_value = _evaluate(XT, YT, W, b, residual, gW, gb, scale)
        if not new_value <= limit:  # also true for NaN
            W[...] = keep_W
            b[...] = keep_b
            return epoch, new_value
        losses[epoch] = value
        new_losses[epoch] = new_value
        value = new_value
    return epochs, np.nan


# Loading the compiled loop costs about half a second in a fresh process (numba's import and its
# cache); a silent Python epoch of a small problem costs ~5 us. The loop is loaded once the
# process has run this many silent epochs in Python (about as long as loading takes), so a
# short run never pays for it, and a search of many runs pays it once, early.
PYTHON_EPOCHS_BEFORE_LOADING = 100_000
# Below this many epochs even a loaded loop does not pay for its call and its arrays (~30 us).
MIN_EPOCHS = 8
_python_epochs = 0


def worth_compiling(epochs):
    """Whether a silent run of ``epochs`` epochs should run compiled; counts the Python epochs."""
    global _python_epochs
    if epochs < MIN_EPOCHS:
        return False
    if linear_epochs.loaded() or _python_epochs + epochs >= PYTHON_EPOCHS_BEFORE_LOADING:
        return True
    _python_epochs += epochs
    return False


def loop_for(kernel, optimizer, options, done):
    """The compiled loop for a silent full-batch run (nothing reads its epochs: the caller checks) that it
    computes as the Python loop does, its sums in another order: the kernel "auto" chose is the fused
    one, the step is plain SGD and nothing is clipped; ``options``: the run's FitOptions, ``done``: the
    epochs already run. None otherwise, and while loading the compiled loop would not pay
    (:func:`worth_compiling`)."""
    if not (kernel.name == "fused" and options.clip_norm is None and type(optimizer) is SGD
            and optimizer.momentum == 0 and optimizer.weight_decay == 0):
        return None
    W, b = kernel.layer.params["W"], kernel.layer.params.get("b")
    if not (kernel.X.dtype == kernel.Y.dtype == W.dtype and W.dtype in (np.float32, np.float64)):
        return None
    if not worth_compiling(options.epochs - done):
        return None
    return LinearLoop(kernel.X, kernel.Y, W, b, optimizer.lr, options.round_to)


class LinearLoop:
    """:func:`linear_epochs` bound to a run: its data (kept transposed) and the layer's W (d, k) and b.

    Calling it trains the layer's arrays in place and returns ``(losses, new_losses, stopped)``:
    the completed epochs' losses before and after their updates (float64 arrays), and None,
    or ``(epoch, loss, weights before that epoch's update)`` for an update that made the loss NaN
    or exceeded ``limit`` (the weights are put back to those).
    """

    def __init__(self, X, Y, W, b, lr, round_to):
        self.XT, self.YT = np.ascontiguousarray(X.T), np.ascontiguousarray(Y.T)
        self.W, self.b, self.has_bias = W, (b if b is not None else np.zeros(W.shape[1], W.dtype)), b is not None
        kind = X.dtype.type
        self.lr, self.scale = kind(lr), kind(2.0 / Y.size)
        self.round_to = -1 if round_to is None else int(round_to)
        self.factor = kind(10.0 ** max(self.round_to, 0))

    def __call__(self, first, epochs, limit):
        """Epochs ``first`` to ``epochs`` (numbered as the run numbers them)."""
        count = epochs - first + 1
        losses, new_losses = np.empty(count), np.empty(count)
        keep_W, keep_b = np.empty_like(self.W), np.empty_like(self.b)
        done, value = linear_epochs(self.XT, self.YT, self.W, self.b, self.has_bias, self.lr, self.scale, count,
                                    self.round_to, self.factor, float(limit), losses, new_losses, keep_W, keep_b)
        stopped = None
        if done < count:
            stopped = (first + done, float(value), [keep_W, keep_b] if self.has_bias else [keep_W])
        return losses[:done], new_losses[:done], stopped
