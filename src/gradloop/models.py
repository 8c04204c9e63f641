"""Models: a stack of layers run forward and backward in order.

The chapter's linear model is ``linear(d)``: one Dense layer, no activation.
"""

from __future__ import annotations

import numpy as np

from .constraints import check_memory
from .errors import ConfigError, ModelFileError
from .layers import ACTIVATIONS, Dense, Dropout, activation, layer_from_config
from .losses import sigmoid, softmax

TASKS = ("regression", "binary", "multiclass")
# The chapter's names for a one-layer model's parameters, as its report says them.
CHAPTER_NAMES = {"0.W": "weights", "0.b": "bias"}


class Sequential:
    """Layers applied in order. ``task`` says how outputs become answers.

    Args:
        layers: list of layers; parameters live in each layer's ``params``.
        task: "regression" (outputs are predictions), "binary" (one logit per
            row) or "multiclass" (one logit per class); ``fit`` sets it from the loss.

    Shapes: ``forward(x)`` maps (batch, in_features) to (batch, outputs).
    """

    def __init__(self, layers, task="regression"):
        if task not in TASKS:
            raise ConfigError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        self.layers = list(layers)
        if not self.layers:
            raise ConfigError("a model needs at least one layer")
        self.task = task
        # The first layer's input gradient is never used: skip that matmul.
        self._first_skips_input_grad = isinstance(self.layers[0], Dense)
        self._reversed_rest = self.layers[:0:-1]

    # ------------------------------------------------------------ passes
    def forward(self, x):
        """Outputs (batch, outputs) for inputs (batch, in_features); layers keep what backward needs.

        ``x`` is never written and no buffer is reused across calls, so a caller
        may keep what it gets. Between layers, an activation works in place on
        the array the Dense layer before it has just made and does not keep
        (see :mod:`gradloop.layers`).
        """
        layers = self.layers
        if len(layers) == 1:  # the linear model: nothing to pass along
            return layers[0].forward(x)
        free = False  # the caller's array: never overwritten
        for layer in layers:
            x, free = layer._forward_chain(x, free)
        return x

    def backward(self, grad_out):
        """Backpropagate dLoss/dOutput; fills every layer's ``grads``; returns dLoss/dInput (or None).

        ``grad_out`` is not written; the gradients between layers may be reused in place.
        """
        free = False
        for layer in self._reversed_rest:
            grad_out, free = layer._backward_chain(grad_out, free)
        if self._first_skips_input_grad:
            return self.layers[0].backward(grad_out, input_grad=False)
        return self.layers[0].backward(grad_out)

    def predict(self, x):
        """Answers in evaluation mode: values (regression), 0/1 (binary), class indices (multiclass)."""
        out = self.predict_raw(x)
        if self.task == "binary":
            return (out[:, 0] > 0).astype(np.int64)
        if self.task == "multiclass":
            return out.argmax(axis=1)
        return out

    def predict_proba(self, x):
        """Class probabilities (batch, classes) for classifiers (binary gives two columns)."""
        if self.task == "regression":
            raise ConfigError("predict_proba needs a classifier; this model does regression")
        out = self.predict_raw(x)
        if self.task == "binary":
            p = sigmoid(out[:, :1])
            return np.hstack([1 - p, p])
        return softmax(out)

    def predict_raw(self, x):
        """Forward pass in evaluation mode (dropout off), restoring the mode after."""
        was_training = self.training
        self.eval()
        try:
            return self.forward(x)
        finally:
            if was_training:
                self.train()

    # ------------------------------------------------------------ modes
    @property
    def training(self):
        return self.layers[0].training

    # ------------------------------------------------------------ dropout generators
    @property
    def dropouts(self):
        """The Dropout layers, in order."""
        return [layer for layer in self.layers if isinstance(layer, Dropout)]

    def dropout_states(self):
        """Each Dropout layer's generator state, in order: what its next masks are drawn from."""
        return [layer.generator_state() for layer in self.dropouts]

    def set_dropout_states(self, states):
        """Put back states from :meth:`dropout_states` (one per Dropout layer, in order)."""
        for layer, state in zip(self.dropouts, states):
            layer.set_generator_state(state)

    def train(self):
        for layer in self.layers:
            layer.training = True
        return self

    def eval(self):
        for layer in self.layers:
            layer.training = False
        return self

    # ------------------------------------------------------------ parameters
    def parameters(self):
        """Parameter arrays in a fixed order (updated in place by optimizers)."""
        return [p for layer in self.layers for p in layer.params.values()]

    def gradients(self):
        """Gradient arrays matching ``parameters()``, filled by ``backward``."""
        return [layer.grads[k] for layer in self.layers for k in layer.params]

    def named_parameters(self):
        """(name, array) pairs, names like "0.W", "0.b", "2.W" (layer index and key)."""
        return [(f"{i}.{k}", p) for i, layer in enumerate(self.layers) for k, p in layer.params.items()]

    @property
    def dtype(self):
        return self.parameters()[0].dtype

    @property
    def n_inputs(self):
        return next(layer for layer in self.layers if isinstance(layer, Dense)).in_features

    @property
    def n_outputs(self):
        dense = [layer for layer in self.layers if isinstance(layer, Dense)]
        return dense[-1].out_features

    # ------------------------------------------------------------ saving
    def config(self):
        """JSON-friendly architecture: enough to rebuild the model without its parameters."""
        return {"task": self.task, "dtype": str(self.dtype), "layers": [layer.config() for layer in self.layers]}

    def state_dict(self):
        """Copies of the parameters by name."""
        return {name: p.copy() for name, p in self.named_parameters()}

    def load_state_dict(self, tensors):
        """Copy parameters in; every name, shape and dtype must match (no silent casts)."""
        expected = dict(self.named_parameters())
        if set(tensors) != set(expected):
            raise ModelFileError(f"parameters {sorted(tensors)} do not match the architecture's {sorted(expected)}")
        for name, p in expected.items():
            t = tensors[name]
            if t.shape != p.shape or t.dtype != p.dtype:
                raise ModelFileError(f"parameter {name} has shape {t.shape} {t.dtype}, "
                                     f"the architecture needs {p.shape} {p.dtype}")
            if not np.all(np.isfinite(t)):
                raise ModelFileError(f"parameter {name} holds non-finite values")
        # Copy only once every tensor passed: a refused file leaves the model as it was.
        for name, p in expected.items():
            p[...] = tensors[name]

    @classmethod
    def from_file(cls, config, tensors):
        """The model a file describes: ``config`` checked whole against the file's ``tensors`` first.

        Every layer must be of a known type with well-formed options, the Dense layers must
        chain (each reads what the one before writes), and the parameters they declare must be
        exactly the stored tensors, by name, shape and dtype: so nothing is allocated beyond the
        file's own arrays. Raises ModelFileError naming what disagrees.
        """
        expected = parameter_shapes(config)
        stored = {name: (tuple(t.shape), str(t.dtype)) for name, t in tensors.items()}
        if stored != expected:
            odd = sorted(set(stored) ^ set(expected)) or sorted(k for k in expected if stored[k] != expected[k])
            raise ModelFileError(f"the architecture declares parameters {_shapes(expected)}, the file holds "
                                 f"{_shapes(stored)} (first difference: {odd[0]})")
        model = cls.from_config(config)
        model.load_state_dict(tensors)
        return model

    @classmethod
    def from_config(cls, config):
        """Rebuild the architecture (parameters zero) from ``config()``."""
        try:
            dtype = np.dtype(config["dtype"])
            layers = [layer_from_config(c, dtype) for c in config["layers"]]
            return cls(layers, task=config.get("task", "regression"))
        except (KeyError, TypeError, ConfigError) as exc:
            raise ModelFileError(f"model architecture is malformed: {exc}") from exc

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential([{inner}], task={self.task!r})"


def parameter_shapes(config):
    """{parameter name: (shape, dtype name)} that ``config`` declares, computed without allocating.

    Raises ModelFileError for a config that is not a well-formed architecture.
    """
    def bad(why):
        return ModelFileError(f"model architecture is malformed: {why}")

    if not isinstance(config, dict) or not isinstance(config.get("layers"), list) or not config["layers"]:
        raise bad("expected {'dtype': ..., 'task': ..., 'layers': [...]} with at least one layer")
    if config.get("dtype") not in ("float32", "float64"):
        raise bad(f"dtype must be 'float32' or 'float64', got {config.get('dtype')!r}")
    if config.get("task", "regression") not in TASKS:
        raise bad(f"task must be one of {', '.join(TASKS)}, got {config.get('task')!r}")
    shapes, width = {}, None
    for i, layer in enumerate(config["layers"]):
        kind = layer.get("type") if isinstance(layer, dict) else None
        if kind not in LAYER_OPTIONS:
            raise bad(f"layer {i}: unknown type {kind!r}; known: {', '.join(LAYER_OPTIONS)}")
        if set(layer) - {"type"} - set(LAYER_OPTIONS[kind]):
            raise bad(f"layer {i} ({kind}): unknown options {sorted(set(layer) - {'type'} - set(LAYER_OPTIONS[kind]))}")
        if kind == "LeakyReLU" and not _finite_number(layer.get("alpha", 0.01)):
            raise bad(f"layer {i} (LeakyReLU): alpha must be a finite number")
        if kind == "Dropout" and not (_finite_number(layer.get("p")) and 0 <= layer["p"] < 1
                                      and (layer.get("seed") is None or _finite_number(layer["seed"]))):
            raise bad(f"layer {i} (Dropout): p must be a number in [0, 1), seed an integer or null")
        if kind != "Dense":
            continue
        n_in, n_out, bias = layer.get("in_features"), layer.get("out_features"), layer.get("bias", True)
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in (n_in, n_out)) \
                or not isinstance(bias, bool):
            raise bad(f"layer {i} (Dense): in_features and out_features must be positive integers, bias a boolean")
        if width is not None and n_in != width:
            raise bad(f"layer {i} (Dense) reads {n_in} inputs, the layer before gives {width}")
        width = n_out
        shapes[f"{i}.W"] = ((n_in, n_out), config["dtype"])
        if bias:
            shapes[f"{i}.b"] = ((n_out,), config["dtype"])
    if not shapes:
        raise bad("no Dense layer")
    return shapes


# The options each layer type's config may hold (see Layer.config()).
LAYER_OPTIONS = {"Dense": ("in_features", "out_features", "bias"), "ReLU": (), "LeakyReLU": ("alpha",),
                 "Tanh": (), "Sigmoid": (), "Dropout": ("p", "seed")}


def _finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def _shapes(shapes):
    return ", ".join(f"{name} {tuple(shape)}" for name, (shape, _) in sorted(shapes.items())) or "none"


def linear(n_features, n_outputs=1, *, bias=True, dtype=np.float64):
    """The chapter's model: one Dense layer, weights (n_features, n_outputs), starting at zero."""
    return Sequential([Dense(n_features, n_outputs, init="zeros", bias=bias, dtype=dtype)])


def mlp(sizes, activation_name="relu", *, seed=0, dtype=np.float64, dropout=0.0, task="regression"):
    """A multi-layer perceptron from layer sizes, e.g. ``mlp([64, 32, 10], "relu")``.

    Hidden layers get the activation (and dropout when > 0); the last layer is
    linear (logits for classifiers). He initialisation for (leaky) ReLU, Xavier
    for tanh and sigmoid, every layer drawn from one Generator built from ``seed``.
    """
    if activation_name not in ACTIVATIONS:
        raise ConfigError(f"unknown activation {activation_name!r}; known: {', '.join(ACTIVATIONS)}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ConfigError(f"an MLP needs at least input and output sizes, got {sizes}")
    if all(isinstance(n, (int, np.integer)) and n >= 1 for n in sizes):  # else Dense names the bad size
        check_memory(sizes, np.dtype(dtype).itemsize, "sizes")
    init = "he" if activation_name in ("relu", "leaky-relu") else "xavier"
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(n_in, n_out, init=init, seed=rng, dtype=dtype))
        if i < len(sizes) - 2:
            layers.append(activation(activation_name))
            if dropout:
                layers.append(Dropout(dropout, seed=int(rng.integers(2**31))))
    return Sequential(layers, task=task)
