"""Optimizers, learning-rate schedules and gradient clipping.

An optimizer owns its state (momentum buffers, Adam moments) and updates
parameter arrays in place: ``step(params, grads)`` with two lists of arrays in
the same order (``model.parameters()``, ``model.gradients()``). The update rules
are PyTorch's for the same arguments; ``SGD(lr)`` alone is the chapter's
``weights -= lr * gradients``.
"""

from __future__ import annotations

import math

import numpy as np

from .constraints import check
from .errors import ConfigError
from .fast.jit import compiled

# Parameters of at least this many entries take their update in one compiled pass. For a
# 784 x 128 layer after a two-thread BLAS backward, NumPy's two passes of the plain SGD update
# (lr * g, then p -= ...) took ~150 us a step against ~45 us, and Adam's ten passes far more;
# on small arrays the NumPy calls cost a few microseconds.
COMPILED_UPDATE_MIN_SIZE = 16_384


def _check_lr(lr):
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating, np.integer)):
        raise ConfigError(f"Invalid learning rate: {lr!r} (must be a positive number)")
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"Invalid learning rate: {lr} (must be a positive finite number)")
    return lr


def _check_range(value, name, low, high, *, high_open=True):
    # A non-number (None, "0.9", True) is refused here, not left to float() to half-accept.
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"Invalid {name}: {value!r} (must be a number)")
    value = float(value)
    ok = low <= value < high if high_open else low <= value <= high
    if not ok or not math.isfinite(value):
        bracket = ")" if high_open else "]"
        raise ConfigError(f"Invalid {name}: {value} (must be in [{low}, {high}{bracket})")
    return value


class Optimizer:
    """Base: hyperparameters as attributes, per-parameter state in ``self.state``."""

    name = ""
    _state_keys: tuple[str, ...] = ()

    def __init__(self, lr):
        self.lr = _check_lr(lr)
        self.steps = 0
        self.state: dict[str, list[np.ndarray]] = {}

    def hyperparameters(self) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: hyperparameters, step count, state arrays (copies)."""
        return {"name": self.name, "hyperparameters": self.hyperparameters(), "steps": self.steps,
                "state": {k: [a.copy() for a in v] for k, v in self.state.items()}}

    def load_state_dict(self, state: dict):
        """Restore from ``state_dict()``; refuses a state of another optimizer or malformed arrays."""
        if not isinstance(state, dict) or state.get("name") != self.name:
            got = state.get("name") if isinstance(state, dict) else type(state).__name__
            raise ConfigError(f"optimizer state is for {got!r}, not {self.name!r}")
        arrays = state.get("state", {})
        if set(arrays) - set(self._state_keys):
            raise ConfigError(f"unexpected optimizer state {sorted(set(arrays) - set(self._state_keys))}")
        if not all(isinstance(v, list) and all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in v)
                   for v in arrays.values()):
            raise ConfigError("optimizer state must be lists of float arrays")
        lengths = {len(v) for v in arrays.values()}
        if len(lengths) > 1:
            raise ConfigError("optimizer state lists have different lengths")
        hyper = state.get("hyperparameters", {})
        if not isinstance(hyper, dict) or not set(hyper) <= set(self.hyperparameters()):
            raise ConfigError(f"optimizer hyperparameters must be among {sorted(self.hyperparameters())}")
        hyper = {key: tuple(value) if key == "betas" and isinstance(value, list) else value
                 for key, value in hyper.items()}
        type(self)(**{**self.hyperparameters(), **hyper})  # the constructor's checks, on the loaded values
        steps = state.get("steps", 0)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ConfigError(f"optimizer steps must be a non-negative integer, got {steps!r}")
        for key, value in hyper.items():
            setattr(self, key, value)
        self.steps = steps
        self.state = {k: [np.array(a, copy=True) for a in v] for k, v in arrays.items()}

    def _buffers(self, key, params):
        """The state list ``key``, created as zeros on first use, checked against the parameters."""
        buffers = self.state.get(key)
        if buffers is None:
            buffers = self.state[key] = [np.zeros_like(p) for p in params]
        elif len(buffers) != len(params) or any(b.shape != p.shape for b, p in zip(buffers, params)):
            raise ConfigError(f"{self.name} state does not match the model's parameters "
                              f"({[b.shape for b in buffers]} vs {[p.shape for p in params]})")
        return buffers

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and L2 weight decay.

    Per parameter p with gradient g (PyTorch's rule, dampening 0)::

        g = g + weight_decay * p
        buf = g                      (first step)
        buf = momentum * buf + g     (later steps)
        g = g + momentum * buf       (nesterov)   or   g = buf   (momentum)
        p -= lr * g
    """

    name = "sgd"
    _state_keys = ("momentum_buffer",)

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = _check_range(momentum, "momentum", 0.0, 1.0)
        self.weight_decay = _check_range(weight_decay, "weight_decay", 0.0, math.inf)
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ConfigError(f"Invalid nesterov=True with momentum: {self.momentum} "
                              "(Nesterov momentum needs momentum > 0)")

    def hyperparameters(self):
        return {"lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov,
                "weight_decay": self.weight_decay}

    def step(self, params, grads):
        lr, mu, wd = self.lr, self.momentum, self.weight_decay
        if mu == 0.0 and wd == 0.0:
            # The chapter's update. (The size test first: on the chapter's tiny arrays a call
            # to _compiles costs a tenth of the loop's own per-epoch work.)
            for p, g in zip(params, grads):
                if p.size >= COMPILED_UPDATE_MIN_SIZE and _compiles(p, g):
                    _subtract_scaled(p.reshape(-1), g.reshape(-1), p.dtype.type(lr))
                else:
                    p -= lr * g
            self.steps += 1
            return
        buffers = self._buffers("momentum_buffer", params) if mu else None
        first = self.steps == 0
        for i, (p, g) in enumerate(zip(params, grads)):
            buf = buffers[i] if mu else p  # without momentum the rule never changes buf
            if _compiles(p, g, buf):
                kind = p.dtype.type
                _sgd_step(p.reshape(-1), g.reshape(-1), buf.reshape(-1), kind(lr), kind(mu), kind(wd),
                          self.nesterov, first)
                continue
            new_p, new_buf = sgd_rule(p, g, buf, lr, mu, wd, self.nesterov, first)
            if mu:
                buf[...] = new_buf
            p[...] = new_p
        self.steps += 1


def sgd_rule(p, g, buf, lr, mu, wd, nesterov, first):
    """:class:`SGD`'s update, written once for numbers and for arrays: returns (new p, new buf).

    NumPy runs it on whole arrays; the compiled pass (:func:`_sgd_step`) on each entry,
    with the scalars in the arrays' dtype, as NumPy casts them: the same bits (tested).
    """
    if wd != 0:
        g = g + wd * p
    if mu != 0:
        buf = g if first else buf * mu + g
        g = g + mu * buf if nesterov else buf
    return p - lr * g, buf


def _compiles(p, *others):
    """Whether a parameter takes its update in one compiled pass: large, and every array like it."""
    return p.size >= COMPILED_UPDATE_MIN_SIZE and p.flags.c_contiguous and all(
        a.dtype == p.dtype and a.shape == p.shape and a.flags.c_contiguous for a in others)


# The compiled passes below run without fastmath: each multiply and add is rounded where NumPy
# rounds it, in NumPy's order, with the scalars in the arrays' dtype as NumPy casts them. So
# they give NumPy's bits (tested), in one pass over the arrays instead of one per operation.
@compiled()
def _subtract_scaled(p, g, lr):
    """``p -= lr * g`` over 1-D arrays: :func:`sgd_rule` without momentum or decay, the chapter's update."""
    for i in range(p.size):
        p[i] -= lr * g[i]


@compiled(uses=(sgd_rule,))
def _sgd_step(p, g, buf, lr, mu, wd, nesterov, first):
    """:func:`sgd_rule` over 1-D arrays; ``buf`` is the momentum buffer (unused when mu is 0)."""
    for i in range(p.size):
        new_p, new_buf = sgd_rule(p[i], g[i], buf[i], lr, mu, wd, nesterov, first)
        if mu != 0:
            buf[i] = new_buf
        p[i] = new_p


class Adam(Optimizer):
    """Adam (Kingma & Ba) with PyTorch's bias correction; ``weight_decay`` is L2 added to the gradient.

    Per parameter, at step t (1-based)::

        g = g + weight_decay * p                      (Adam only)
        p = p * (1 - lr * weight_decay)               (AdamW only: decoupled)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        p -= lr / (1 - b1**t) * m / (sqrt(v) / sqrt(1 - b2**t) + eps)
    """

    name = "adam"
    _state_keys = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr)
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ConfigError(f"Invalid betas: {betas!r} (must be two numbers in [0, 1))")
        self.betas = (_check_range(betas[0], "beta1", 0.0, 1.0), _check_range(betas[1], "beta2", 0.0, 1.0))
        self.eps = _check_range(eps, "eps", 0.0, math.inf)
        self.weight_decay = _check_range(weight_decay, "weight_decay", 0.0, math.inf)

    def hyperparameters(self):
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps, "weight_decay": self.weight_decay}

    def step(self, params, grads):
        b1, b2 = self.betas
        lr, wd = self.lr, self.weight_decay
        m_list = self._buffers("exp_avg", params)
        v_list = self._buffers("exp_avg_sq", params)
        self.steps += 1
        t = self.steps
        step_size = lr / (1 - b1**t)
        root_correction2 = math.sqrt(1 - b2**t)
        for p, g, m, v in zip(params, grads, m_list, v_list):
            if _compiles(p, g, m, v):
                kind = p.dtype.type
                _adam_step(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), kind(b1), kind(1 - b1),
                           kind(b2), kind(1 - b2), kind(step_size), kind(root_correction2), kind(self.eps),
                           kind(wd), kind(1 - lr * wd), self.decoupled)
                continue
            new_p, new_m, new_v = adam_rule(p, g, m, v, b1, 1 - b1, b2, 1 - b2, step_size, root_correction2,
                                            self.eps, wd, 1 - lr * wd, self.decoupled)
            m[...], v[...], p[...] = new_m, new_v, new_p


def adam_rule(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, step_size, root_correction2, eps, wd, shrink,
              decoupled):
    """:class:`Adam`'s (or, ``decoupled``, AdamW's) update, written once for numbers and for arrays.

    Returns (new p, new m, new v); ``shrink`` is 1 - lr * wd. NumPy runs it on whole arrays,
    the compiled pass (:func:`_adam_step`) on each entry: the same bits (tested).
    """
    if wd != 0:
        if decoupled:
            p = p * shrink
        else:
            g = g + wd * p
    m = m * b1 + one_minus_b1 * g
    v = v * b2 + one_minus_b2 * (g * g)
    return p - step_size * (m / (np.sqrt(v) / root_correction2 + eps)), m, v


@compiled(uses=(adam_rule,))
def _adam_step(p, g, m, v, b1, one_minus_b1, b2, one_minus_b2, step_size, root_correction2, eps, wd, shrink,
               decoupled):
    """:func:`adam_rule` over 1-D arrays."""
    for i in range(p.size):
        p[i], m[i], v[i] = adam_rule(p[i], g[i], m[i], v[i], b1, one_minus_b1, b2, one_minus_b2, step_size,
                                     root_correction2, eps, wd, shrink, decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): see :class:`Adam` for the rule."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)


# Names on the command line -> how to build the optimizer from lr and weight decay.
OPTIMIZERS = {
    "sgd": lambda lr, wd: SGD(lr, weight_decay=wd),
    "momentum": lambda lr, wd: SGD(lr, momentum=0.9, weight_decay=wd),
    "nesterov": lambda lr, wd: SGD(lr, momentum=0.9, nesterov=True, weight_decay=wd),
    "adam": lambda lr, wd: Adam(lr, weight_decay=wd),
    "adamw": lambda lr, wd: AdamW(lr, weight_decay=wd),
}
OPTIMIZER_TYPES = {cls.name: cls for cls in (SGD, Adam, AdamW)}


def get_optimizer(name, lr, weight_decay=0.0):
    """Build an optimizer from a command-line name (sgd, momentum, nesterov, adam, adamw)."""
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr, weight_decay)


# ---------------------------------------------------------------- schedules
class Schedule:
    """Learning rate as a function of the epoch: ``lr(base_lr, epoch)``, epoch counted from 0."""

    name = ""

    def config(self):
        return {"name": self.name, **vars(self)}


class StepLR(Schedule):
    """Multiply by ``gamma`` every ``step_size`` epochs (PyTorch's StepLR)."""

    name = "step"

    def __init__(self, step_size=10, gamma=0.1):
        self.step_size = int(check("step_size", step_size, "StepLR"))
        self.gamma = float(check("gamma", gamma, "StepLR"))

    def lr(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialLR(Schedule):
    """Multiply by ``gamma`` every epoch (PyTorch's ExponentialLR)."""

    name = "exponential"

    def __init__(self, gamma=0.95):
        self.gamma = float(check("gamma", gamma, "ExponentialLR"))

    def lr(self, base_lr, epoch):
        return base_lr * self.gamma**epoch


class CosineLR(Schedule):
    """Cosine annealing from ``base_lr`` to ``min_lr`` over ``total_epochs`` (PyTorch's CosineAnnealingLR)."""

    name = "cosine"

    def __init__(self, total_epochs, min_lr=0.0):
        self.total_epochs = int(check("total_epochs", total_epochs, "CosineLR"))
        self.min_lr = float(check("min_lr", min_lr, "CosineLR"))

    def lr(self, base_lr, epoch):
        cos = (1 + math.cos(math.pi * min(epoch, self.total_epochs) / self.total_epochs)) / 2
        return self.min_lr + (base_lr - self.min_lr) * cos


SCHEDULES = {cls.name: cls for cls in (StepLR, ExponentialLR, CosineLR)}


def clip_grad_norm(grads, max_norm):
    """Scale all gradients in place so their global L2 norm is at most ``max_norm``; return the norm before.

    As ``torch.nn.utils.clip_grad_norm_``: factor ``min(1, max_norm / (norm + 1e-6))``.
    """
    total = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    factor = max_norm / (total + 1e-6)
    if factor < 1.0:
        for g in grads:
            g *= factor
    return total
