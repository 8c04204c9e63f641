"""Every backward checked against central differences of its forward, in float64.

``gradcheck(model, loss, X, y)`` runs the model's forward, the loss and the backward
once, then moves parameter entries by +-eps and measures the loss again: the
difference quotient ``(L(p + eps) - L(p - eps)) / (2 eps)`` must match the gradient the
backward wrote. Small parameters are checked entry by entry; large ones on a seeded
random subset of entries plus one random direction (which mixes every entry).

The check runs on a float64 copy of the model in evaluation mode (dropout off, so the
loss is a fixed function of the parameters); the model itself is not touched.

Why the threshold is what it is: with eps = 1e-6 in float64 the central difference's
truncation error is ~eps^2 (1e-12) and its rounding error ~1e-16 |L| / eps (1e-10 |L|),
so a correct backward agrees to ~1e-7 relative or better, while a wrong formula (a
missing factor, a transposed product, a wrong sign) is off by O(1). The relative error
of an entry is ``|analytic - numeric| / max(|analytic|, |numeric|, floor)``, where the
floor is the rounding noise (100 float64 epsilons of max(1, |L|), over eps) divided by
the threshold: a gradient that is 0 by symmetry (MAE's bias with as many residuals
above as below) then compares its ~1e-11 of noise absolutely instead of dividing by
it. A parameter passes when its largest error is at most ``THRESHOLD`` = 1e-5. A ReLU
input within eps of 0 (a kink) can fail a correct layer: the data then sits on the
kink, not the formula.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, GradloopError
from ..losses import fit_targets, get_loss

EPS = 1e-6
THRESHOLD = 1e-5
NOISE = 100 * np.finfo(np.float64).eps  # rounding of a loss difference, relative to max(1, |L|)
MAX_ENTRIES = 256  # entries checked one by one per parameter; larger ones: a random subset and a direction


@dataclass
class ParameterCheck:
    """One parameter's check: where it is, how far the backward is from the differences, pass or fail."""

    layer: int  # the layer's position in the model, from 0
    layer_type: str  # its class name
    name: str  # the parameter's key ("W", "b", ...), or "input gradient" (the gradient it passes down)
    max_relative_error: float
    threshold: float
    entries: int  # entries checked one by one (a random direction is checked besides for large ones)
    passed: bool

    def __str__(self):
        verdict = "ok" if self.passed else "WRONG"
        return (f"layer {self.layer} ({self.layer_type}) {self.name}: max relative error "
                f"{self.max_relative_error:.2e} (threshold {self.threshold:.0e}, {self.entries} entries) {verdict}")


@dataclass
class GradCheck:
    """The whole check: one :class:`ParameterCheck` per parameter; ``passed`` when every one passed."""

    parameters: list
    passed: bool

    def failures(self):
        return [p for p in self.parameters if not p.passed]

    def __str__(self):
        return "\n".join(str(p) for p in self.parameters)


def gradcheck(model, loss, X, y, *, eps=None, max_entries=None, seed=0) -> GradCheck:
    """Compare every parameter's backward gradient with central differences, in float64.

    Args:
        model: a :class:`gradloop.models.Sequential` (its own layers included).
        loss: a Loss or its name.
        X: (n_samples, n_features); y: targets as for :func:`gradloop.fit`.
        eps: the step (default 1e-6); max_entries: entries checked one by one per parameter
            (default 256; larger parameters: a random subset of that many, drawn from ``seed``,
            and one random direction).

    Returns:
        a :class:`GradCheck`; ``str()`` of it is a line per parameter.
    """
    loss = get_loss(loss)
    eps = EPS if eps is None else float(eps)
    max_entries = MAX_ENTRIES if max_entries is None else int(max_entries)
    if not (eps > 0 and np.isfinite(eps)) or max_entries < 1:
        raise ConfigError(f"eps must be a positive number and max_entries a positive integer, got {eps}, "
                          f"{max_entries}")
    twin = _float64_twin(model)
    layers = twin.layers
    y = fit_targets(twin, loss, y)
    # Each layer's input, kept: a layer's input gradient is checked by moving its input and running
    # the layers above it, so a layer without parameters (an activation) is checked too.
    inputs = [np.asarray(X, dtype=np.float64)]
    for layer in layers[:-1]:
        inputs.append(layer.forward(inputs[-1]))
    base, grad = loss.value_and_grad(y, layers[-1].forward(inputs[-1]))
    input_grads = [None] * len(layers)
    for index in range(len(layers) - 1, -1, -1):
        grad = layers[index].backward(grad)
        input_grads[index] = np.array(grad, dtype=np.float64)
    floor = NOISE * max(1.0, abs(base)) / eps / THRESHOLD
    rng = np.random.default_rng(seed)

    def check(index, name, array, analytic, value):
        errors, entries = _compare(array.reshape(-1), analytic.reshape(-1), value, eps, floor, max_entries, rng)
        worst = max(errors)
        return ParameterCheck(index, type(model.layers[index]).__name__, name, worst, THRESHOLD, entries,
                              bool(worst <= THRESHOLD))

    checks = []
    for index, layer in enumerate(layers):
        def loss_from(a, index=index):  # the loss as a function of layer ``index``'s input
            for upper in layers[index:]:
                a = upper.forward(a)
            return loss.value(y, a)

        for name, p in layer.params.items():
            checks.append(check(index, name, p, layer.grads[name].copy(), lambda: loss_from(inputs[index])))
        if index > 0:  # the first layer's input gradient (the data's) is never used
            x = inputs[index].copy()
            checks.append(check(index, "input gradient", x, input_grads[index], lambda: loss_from(x)))
    return GradCheck(checks, all(c.passed for c in checks))


def _compare(flat, analytic, value, eps, floor, max_entries, rng):
    """Relative errors of ``analytic`` (the backward's gradient of ``flat``) against central
    differences of ``value()`` as ``flat`` moves: each entry, or a sample and one direction."""
    entries = np.arange(flat.size) if flat.size <= max_entries else np.sort(
        rng.choice(flat.size, max_entries, replace=False))
    errors = [_relative(analytic[i], _difference(flat, [i], [1.0], eps, value), floor) for i in entries]
    if flat.size > max_entries:  # one direction through every entry
        direction = rng.standard_normal(flat.size)
        direction /= np.linalg.norm(direction)
        numeric = _difference(flat, np.arange(flat.size), direction, eps, value)
        errors.append(_relative(float(analytic @ direction), numeric, floor))
    return errors, len(entries)


def check_before_training(model, loss, X, y):
    """:func:`gradcheck` on some rows; GradloopError naming the layer and parameter if one is wrong."""
    result = gradcheck(model, loss, X, y)
    if not result.passed:
        # A wrong input gradient spoils every check below its layer, never one above: the failing
        # check nearest the output is the layer to fix.
        bad = max(result.failures(), key=lambda c: c.layer)
        what = "its gradient for its input" if bad.name == "input gradient" else f"parameter {bad.name!r}"
        raise GradloopError(
            f"gradient check failed before any update: layer {bad.layer} ({bad.layer_type}), {what}: its "
            f"backward is {bad.max_relative_error:.3g} (relative) from the central differences of its forward "
            f"(threshold {bad.threshold:.0e}); fix that layer's backward")
    return result


def _float64_twin(model):
    """A float64 copy of the model in evaluation mode: the check never touches the model itself."""
    twin = copy.deepcopy(model)
    for layer in twin.layers:
        for name in list(layer.params):
            layer.params[name] = layer.params[name].astype(np.float64)
            layer.grads[name] = np.zeros_like(layer.params[name])
    twin.eval()
    return twin


def _difference(flat, entries, direction, eps, value):
    """(L(p + eps d) - L(p - eps d)) / (2 eps), moving ``entries`` of ``flat`` along ``direction``."""
    saved = flat[entries].copy()
    flat[entries] = saved + eps * np.asarray(direction)
    up = value()
    flat[entries] = saved - eps * np.asarray(direction)
    down = value()
    flat[entries] = saved
    return (up - down) / (2 * eps)


def _relative(analytic, numeric, floor):
    return abs(analytic - numeric) / max(abs(analytic), abs(numeric), floor)
