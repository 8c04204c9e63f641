"""One training step of any network, layer by layer, with the numbers of one sample.

The forward pass gives each layer's formula, its output shape and sample i's numbers
(pre-activations, the ReLU mask, the probabilities); the backward pass gives the loss
gradient's formula, then each layer's backward formula with sample i's numbers, each
parameter's gradient (a sum over the batch of every row's contribution, the 1/N of the
mean carried by the loss gradient) and its norm, and with a learning rate the size of the
update against the weights'. The numbers are the layers' own ``forward`` and ``backward``
run on the batch: nothing is computed a second way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError
from ..layers import Dense, Dropout, LeakyReLU, ReLU, Sigmoid, Tanh
from ..losses import fit_targets, get_loss, softmax

SHOWN = 8  # entries of a vector written out before "... (n more)"

FORWARD = {Dense: "z = x @ W + b", ReLU: "a = max(z, 0)", LeakyReLU: "a = z where z > 0, else alpha * z",
           Tanh: "a = tanh(z)", Sigmoid: "a = 1 / (1 + exp(-z))",
           Dropout: "a = z * mask / (1 - p) in training (the identity when evaluating)"}
BACKWARD = {Dense: "dW = x.T @ g, db = g summed over the batch, dx = g @ W.T",
            ReLU: "dz = g * (z > 0)", LeakyReLU: "dz = g * (1 where z > 0, else alpha)",
            Tanh: "dz = g * (1 - a**2)", Sigmoid: "dz = g * a * (1 - a)", Dropout: "dz = g * mask / (1 - p)"}
LOSS_GRADIENT = {"mse": "g = 2 * (y_pred - y) / (N * k)", "mae": "g = sign(y_pred - y) / (N * k)",
                 "huber": "g = clip(y_pred - y, -delta, delta) / (N * k)",
                 "bce": "g = (sigmoid(z) - y) / N", "cross-entropy": "g = (softmax(z) - onehot(y)) / N"}


def _vector(values):
    values = np.ravel(values)
    shown = ", ".join(f"{float(v) + 0.0:.7g}" for v in values[:SHOWN])  # + 0.0: no "-0"
    more = f", ... ({len(values) - SHOWN} more)" if len(values) > SHOWN else ""
    return f"[{shown}{more}]"


@dataclass
class NetworkExplanation:
    """A network's training step: ``print()`` it, or read ``loss``, ``gradients`` (name -> array),
    ``gradient_norms`` and ``update_ratios`` (||lr * g|| / ||W||, with a learning rate)."""

    loss: float
    gradients: dict
    gradient_norms: dict
    update_ratios: dict
    lines: list = field(default_factory=list)

    def __str__(self):
        return "\n".join(self.lines)

    def to_dict(self):
        return {"loss": self.loss, "gradients": {k: v.tolist() for k, v in self.gradients.items()},
                "gradient_norms": self.gradient_norms, "update_ratios": self.update_ratios, "text": str(self)}


def explain_network(model, X, y, *, loss, sample=0, lr=None) -> NetworkExplanation:
    """Explain one full-batch training step of ``model`` (a Sequential) on (X, y), showing sample ``sample``.

    Args:
        model: the network (left as it was: the step runs on its layers but nothing is updated).
        X: (N, n_features); y: targets as for :func:`gradloop.fit`; loss: a Loss or its name.
        sample: the row whose numbers are written out; lr: if given, each update's size is shown.
    """
    loss = get_loss(loss)
    X = np.asarray(X, dtype=model.dtype)
    if isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or not 0 <= sample < len(X):
        raise ConfigError(f"sample must be a row number in [0, {len(X)}), got {sample!r}")
    targets = fit_targets(model, loss, y)
    # Left as it was: its gradients, and the dropout generators the forward pass draws masks from.
    saved, generators = [g.copy() for g in model.gradients()], model.dropout_states()
    n = len(X)
    lines = [f"One training step of a {len(model.layers)}-layer network, {loss.name} loss, on {n} rows; "
             f"the numbers of sample {sample}", "", "Forward, layer by layer",
             f"  input x {X.shape[1:]}: {_vector(X[sample])}"]
    a = X
    for index, layer in enumerate(model.layers):
        a = layer.forward(a)
        formula = FORWARD.get(type(layer), f"{type(layer).__name__}.forward")
        lines.append(f"  layer {index} {_describe(layer)}: {formula}  -> (N, {a.shape[1]})")
        if isinstance(layer, ReLU):
            lines.append(f"      mask (z > 0): {_vector((a[sample] > 0).astype(int))}")
        lines.append(f"      sample {sample}: {_vector(a[sample])}")
    value, grad = loss.value_and_grad(targets, a)
    if loss.name == "cross-entropy":
        p = softmax(a[sample:sample + 1])[0]
        lines.append(f"  softmax probabilities of sample {sample}: {_vector(p)}; its class {int(targets[sample])}")
    lines.append(f"  loss over the batch: {value:.10g}")
    lines += ["", "Backward, layer by layer",
              f"  loss gradient: {LOSS_GRADIENT.get(loss.name, 'g = dloss / dy_pred')}",
              f"      sample {sample}: {_vector(grad[sample])}"]
    gradients, norms, ratios = {}, {}, {}
    for index in range(len(model.layers) - 1, -1, -1):
        layer = model.layers[index]
        grad = layer.backward(grad)
        lines.append(f"  layer {index} {_describe(layer)}: {BACKWARD.get(type(layer), 'its backward')}")
        for name, g in layer.grads.items():
            key = f"layer {index} {name}"
            gradients[key], norms[key] = g.copy(), float(np.linalg.norm(g))
            size = ""
            if lr is not None:
                weight = float(np.linalg.norm(layer.params[name]))
                ratios[key] = float(lr) * norms[key] / weight if weight > 0 else None
                size = (f", update lr * ||d{name}|| = {float(lr) * norms[key]:.7g}"
                        + (f" ({ratios[key]:.3g} of ||{name}||)" if ratios[key] is not None else ""))
            lines.append(f"      d{name} {g.shape}: the sum over the batch of each row's part; "
                         f"||d{name}|| = {norms[key]:.7g}{size}")
        if index > 0:
            lines.append(f"      passed down, sample {sample}: {_vector(grad[sample])}")
    for g, kept in zip(model.gradients(), saved):
        g[...] = kept
    model.set_dropout_states(generators)
    return NetworkExplanation(float(value), gradients, norms, ratios, lines)


def _describe(layer):
    if isinstance(layer, Dense):
        return f"Dense({layer.in_features} -> {layer.out_features})"
    return type(layer).__name__
