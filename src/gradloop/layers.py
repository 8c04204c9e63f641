"""Layers: each forward next to its backward, every gradient a formula you can read.

The contract (one per concept):

- ``forward(x)`` computes the output and keeps what ``backward`` needs.
- ``backward(grad_out)`` takes dLoss/dOutput, fills ``grads`` (same keys as
  ``params``) and returns dLoss/dInput.
- ``params`` and ``grads`` are dicts of arrays; optimizers update ``params``
  in place, so the arrays keep their identity for the whole run.

Shapes: ``x`` is (batch, in_features); outputs are (batch, out_features).

Arrays handed out: ``forward`` never writes into its input and never reuses
an output buffer across calls, so a caller may keep what it returns. Inside a
:class:`gradloop.models.Sequential` the layers also pass arrays along through
``_forward_chain`` / ``_backward_chain``: there an activation may work in
place on an array that the layer before has just made and does not keep (a
Dense layer's output, a Dense layer's input gradient), which saves one
array and one pass over memory per activation and step. The arithmetic is
the same as ``forward`` / ``backward``, bit for bit (tests/test_speed_paths.py).
"""

from __future__ import annotations

import copy

import numpy as np

from .constraints import check_memory
from .errors import ConfigError

INITIALIZERS = ("he", "xavier", "glorot", "zeros")


# What a layer keeps from its last forward pass for its backward (a block's size, not the model's).
PASS_CACHES = ("_x", "_y", "_slope", "_mask")


class Layer:
    """Base of all layers: no parameters, training mode on."""

    _y = None  # an activation's output of its last forward pass (its backward reads it)

    @property
    def output(self):
        """An activation's output of the last forward pass (what the diagnostics watch), else None."""
        return self._y

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True

    def light_copy(self):
        """This layer as a block's pass needs it: the same parameters (shared, read only), gradients of
        its own, and none of the arrays its last forward pass kept for its backward."""
        light = copy.copy(self)
        for name in PASS_CACHES:
            if name in light.__dict__:
                light.__dict__[name] = None
        light.grads = {name: np.zeros_like(g) for name, g in self.grads.items()}
        return light

    def config(self) -> dict:
        """JSON-friendly description from which ``layer_from_config`` rebuilds the layer."""
        return {"type": type(self).__name__}

    # Sequential's path. ``free`` says that no one else holds the array (the layer
    # before made it and does not keep it), so it may be overwritten; the flag
    # returned says the same of the result. The default is the public method.
    def _forward_chain(self, x, free):
        return self.forward(x), False

    def _backward_chain(self, grad_out, free):
        return self.backward(grad_out), False

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"


class Dense(Layer):
    """Fully connected layer: ``y = x @ W + b``.

    Args:
        in_features, out_features: sizes; ``W`` is (in_features, out_features),
            ``b`` is (out_features,).
        init: "he" (normal, std sqrt(2/in), for ReLU), "xavier"/"glorot"
            (uniform, limit sqrt(6/(in+out)), for tanh/sigmoid) or "zeros".
        seed: int or numpy Generator for the initial weights.
        dtype: float64 (default) or float32.
        bias: whether the layer has ``b`` (the chapter's model has none).

    Backward, for ``grad_out`` G of shape (batch, out):
        dW = x.T @ G,   db = G.sum(axis=0),   dx = G @ W.T
    """

    def __init__(self, in_features, out_features, *, init="he", seed=None, dtype=np.float64, bias=True):
        super().__init__()
        in_features = _positive_int(in_features, "in_features")
        out_features = _positive_int(out_features, "out_features")
        dtype = _float_dtype(dtype)
        check_memory([in_features, out_features], dtype.itemsize, f"Dense({in_features}, {out_features})")
        if init not in INITIALIZERS:
            raise ConfigError(f"unknown init {init!r}; known: {', '.join(INITIALIZERS)}")
        rng = np.random.default_rng(seed)
        if init == "he":
            W = rng.standard_normal((in_features, out_features)) * np.sqrt(2.0 / in_features)
        elif init in ("xavier", "glorot"):
            limit = np.sqrt(6.0 / (in_features + out_features))
            W = rng.uniform(-limit, limit, (in_features, out_features))
        else:
            W = np.zeros((in_features, out_features))
        self.in_features, self.out_features, self.init = in_features, out_features, init
        self.params["W"] = np.ascontiguousarray(W, dtype=dtype)
        self.grads["W"] = np.zeros_like(self.params["W"])
        if bias:
            self.params["b"] = np.zeros(out_features, dtype=dtype)
            self.grads["b"] = np.zeros_like(self.params["b"])
        self._x = None

    @property
    def has_bias(self):
        return "b" in self.params

    def forward(self, x):
        self._x = x
        # np.dot is x @ W by the same BLAS call, with less dispatch work than the
        # matmul ufunc (0.15 us of a 0.6 us product on the chapter's tiny problems).
        out = np.dot(x, self.params["W"])
        if "b" in self.params:
            out += self.params["b"]
        return out

    def backward(self, grad_out, *, input_grad=True):
        """Fill dW, db; return dx (or None when ``input_grad`` is False: the first layer's is unused)."""
        gW = self.grads["W"]
        try:  # dW = x.T @ G, written in place
            np.dot(self._x.T, grad_out, out=gW)
        except ValueError:  # np.dot's out= takes only the exact dtype; matmul casts (float64 G, float32 W)
            np.matmul(self._x.T, grad_out, out=gW)
        if "b" in self.grads:
            np.sum(grad_out, axis=0, out=self.grads["b"])
        return np.dot(grad_out, self.params["W"].T) if input_grad else None

    # The output (and input gradient) is a new array the layer does not keep: the next layer may reuse it.
    def _forward_chain(self, x, free):
        return self.forward(x), True

    def _backward_chain(self, grad_out, free):
        return self.backward(grad_out), True

    def config(self):
        return {"type": "Dense", "in_features": self.in_features, "out_features": self.out_features,
                "bias": self.has_bias}


class ReLU(Layer):
    """``y = max(x, 0)``; backward ``dx = G * (x > 0)``, read from the output as ``G * (y > 0)``.

    y > 0 exactly where x > 0 (NaN stays NaN and gets no gradient), so the layer
    keeps y and makes the mask only in backward: evaluation never pays for it.
    ReLU(-inf) is 0, as in PyTorch.
    """

    def forward(self, x):
        self._y = np.maximum(x, 0)
        return self._y

    def backward(self, grad_out):
        return grad_out * (self._y > 0)

    def _forward_chain(self, x, free):
        if not free:
            return self.forward(x), False
        self._y = np.maximum(x, 0, out=x)  # x is the Dense output no one else holds
        return x, False  # kept as y for backward

    def _backward_chain(self, grad_out, free):
        if not free:
            return self.backward(grad_out), False
        return np.multiply(grad_out, self._y > 0, out=grad_out), True


class LeakyReLU(Layer):
    """``y = x`` where x > 0, else ``alpha * x``; backward ``dx = G * (1 or alpha)``."""

    def __init__(self, alpha=0.01):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x):
        self._slope = np.where(x > 0, x.dtype.type(1), x.dtype.type(self.alpha))
        return x * self._slope

    def backward(self, grad_out):
        return grad_out * self._slope

    def config(self):
        return {"type": "LeakyReLU", "alpha": self.alpha}


class Tanh(Layer):
    """``y = tanh(x)``; backward ``dx = G * (1 - y**2)``."""

    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, grad_out):
        return grad_out * (1 - self._y * self._y)


class Sigmoid(Layer):
    """``y = 1 / (1 + exp(-x))``, computed without overflow; backward ``dx = G * y * (1 - y)``."""

    def forward(self, x):
        self._y = sigmoid(x)
        return self._y

    def backward(self, grad_out):
        return grad_out * self._y * (1 - self._y)


class Dropout(Layer):
    """Inverted dropout: in training, zero each unit with probability ``p`` and scale the rest by 1/(1-p).

    At evaluation (``training`` False) it is the identity. Backward applies the same mask.
    """

    def __init__(self, p, seed=None):
        super().__init__()
        p = float(p)
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"Dropout p must be in [0, 1), got {p}")
        self.p = p
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            self._mask = None
            return x
        keep = self._rng.random(x.shape) >= self.p
        self._mask = keep.astype(x.dtype) / x.dtype.type(1.0 - self.p)
        return x * self._mask

    def backward(self, grad_out):
        return grad_out if self._mask is None else grad_out * self._mask

    # The mask generator: its state is what the next masks are drawn from. Checkpoints keep it, and
    # a block of a pass run apart (on Dask) draws its own part of the pass's stream from it.
    def generator_state(self):
        return self._rng.bit_generator.state

    def set_generator_state(self, state):
        """Draw the next masks from ``state`` (this generator, set in place)."""
        self._rng.bit_generator.state = state

    def draw_from(self, state, skip=0):
        """Draw the next masks from a generator of its own at ``state``, ``skip`` draws on (one 64-bit
        draw per mask entry: ``Generator.random`` in float64)."""
        bits = type(self._rng.bit_generator)()
        bits.state = state
        bits.advance(skip)
        self._rng = np.random.Generator(bits)

    def skip(self, draws):
        """Move this generator past ``draws`` draws, as drawing that many mask entries would."""
        self._rng.bit_generator.advance(draws)

    def _forward_chain(self, x, free):
        out = self.forward(x)  # the layer keeps its mask, not its output
        return out, free if out is x else True

    def _backward_chain(self, grad_out, free):
        out = self.backward(grad_out)
        return out, free if out is grad_out else True

    def config(self):
        return {"type": "Dropout", "p": self.p, "seed": self.seed if isinstance(self.seed, int) else None}


def sigmoid(x):
    """Logistic function, stable for any finite x: exp is only taken of -|x|."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


# Names users type (command line, configs) -> activation classes.
ACTIVATIONS = {"relu": ReLU, "leaky-relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid}

LAYER_TYPES = {cls.__name__: cls for cls in (Dense, ReLU, LeakyReLU, Tanh, Sigmoid, Dropout)}


def activation(name):
    """Build an activation layer from its name ("relu", "leaky-relu", "tanh", "sigmoid")."""
    if name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def layer_from_config(config, dtype=np.float64):
    """Rebuild a layer (with fresh parameters) from ``Layer.config()``."""
    kind = config.get("type") if isinstance(config, dict) else None
    if kind not in LAYER_TYPES:
        raise ConfigError(f"unknown layer type {kind!r}; known: {', '.join(LAYER_TYPES)}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    if kind == "Dense":
        return Dense(kwargs["in_features"], kwargs["out_features"], init="zeros", dtype=dtype,
                     bias=kwargs.get("bias", True))
    return LAYER_TYPES[kind](**kwargs)


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
    return dtype
