"""explain(model, X, y, loss=..., sample=i): a network's step layer by layer, its numbers the layers' own."""

import re

import numpy as np
import pytest

import gradloop
from gradloop.errors import ConfigError
from gradloop.losses import get_loss
from gradloop.models import mlp

rng = np.random.default_rng(4)
X = rng.standard_normal((30, 4))
labels = rng.integers(0, 3, 30)


def _numbers(line):
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", line.split(":", 1)[1])]


def test_the_numbers_are_the_layers_own_and_the_gradients_those_of_a_backward_pass():
    model = mlp([4, 6, 3], "relu", seed=0, task="multiclass")
    explanation = gradloop.explain(model, X, labels, loss="cross-entropy", sample=2, lr=0.1)
    text = str(explanation).splitlines()
    z = X @ model.layers[0].params["W"] + model.layers[0].params["b"]
    a = np.maximum(z, 0)
    logits = a @ model.layers[2].params["W"] + model.layers[2].params["b"]
    samples = [line for line in text if line.strip().startswith("sample 2:")]
    assert np.allclose(_numbers(samples[0]), z[2], rtol=1e-6)
    assert np.allclose(_numbers(samples[1]), a[2], rtol=1e-6, atol=1e-12)
    assert np.allclose(_numbers(samples[2]), logits[2], rtol=1e-6)
    mask = next(line for line in text if "mask (z > 0)" in line)
    assert _numbers(":" + mask.split("):", 1)[1]) == list((z[2] > 0).astype(float))
    p = np.exp(logits[2] - logits[2].max())
    p /= p.sum()
    probabilities = next(line for line in text if "softmax probabilities" in line)
    assert np.allclose(_numbers(probabilities.split(";")[0]), p, rtol=1e-6)
    loss = get_loss("cross-entropy")
    assert explanation.loss == pytest.approx(loss.value(labels, logits), rel=1e-12)
    # The gradients: a forward and backward pass through the model itself.
    value, grad = loss.value_and_grad(labels, model.forward(X))
    model.backward(grad)
    for (key, g), reference in zip(explanation.gradients.items(), [model.layers[2].grads["W"],
                                                                  model.layers[2].grads["b"],
                                                                  model.layers[0].grads["W"],
                                                                  model.layers[0].grads["b"]]):
        assert np.allclose(g, reference, rtol=1e-12), key
        assert explanation.gradient_norms[key] == pytest.approx(np.linalg.norm(reference))
    ratio = explanation.update_ratios["layer 0 W"]
    assert ratio == pytest.approx(0.1 * np.linalg.norm(model.layers[0].grads["W"])
                                  / np.linalg.norm(model.layers[0].params["W"]))


def test_the_model_is_left_as_it_was():
    model = mlp([4, 6, 1], "tanh", seed=1, dropout=0.3)
    params = [p.copy() for p in model.parameters()]
    grads = [g.copy() for g in model.gradients()]
    state = model.layers[2]._rng.bit_generator.state
    text = str(gradloop.explain(model, X, X[:, 0], loss="mse", sample=0))
    assert "Dropout" in text and "g = 2 * (y_pred - y) / (N * k)" in text and "dz = g * (1 - a**2)" in text
    assert all(np.array_equal(a, b) for a, b in zip(model.parameters(), params))
    assert all(np.array_equal(a, b) for a, b in zip(model.gradients(), grads))
    assert model.layers[2]._rng.bit_generator.state == state


@pytest.mark.parametrize("kwargs, message", [(dict(loss="mse", sample=30), r"sample must be a row number in \[0, 30\)"),
                                             (dict(sample=0), "name the loss the network is trained with")])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        gradloop.explain(mlp([4, 3, 1], "relu"), X, X[:, 0], **kwargs)


def test_train_explain_writes_out_the_step_the_run_takes(cli, tmp_path):
    import pandas as pd

    from gradloop.files.bundle import ModelBundle

    frame = pd.DataFrame(X, columns=list("abcd")).assign(y=X @ [1.0, -2.0, 0.5, 3.0] + 1.0)
    frame.to_csv(tmp_path / "d.csv", index=False)
    common = ["train", tmp_path / "d.csv", "--target", "y", "--standardize", "--test-size", "0"]
    status, out, err = cli(*common, "--epochs", "5", "--explain", "3")
    assert status == 0, err
    assert "Epoch 3 of the chapter's loop" in out
    assert cli(*common, "--epochs", "3", "--out", tmp_path / "three.safetensors")[0] == 0
    after_three = ModelBundle.load(tmp_path / "three.safetensors").model.layers[0].params["W"][:, 0]
    updates = [float(m[1]) for m in re.finditer(r"w\[\d\]: \S+ - \S+ \* \S+ = (\S+)", out)]
    assert np.allclose(updates, after_three, rtol=1e-9)


def test_train_explain_of_a_network_leaves_no_trace_on_the_run(cli, tmp_path):
    import pandas as pd

    from gradloop.files.bundle import ModelBundle

    frame = pd.DataFrame(X, columns=list("abcd")).assign(y=X[:, 0] ** 2)
    frame.to_csv(tmp_path / "d.csv", index=False)
    common = ["train", tmp_path / "d.csv", "--target", "y", "--model", "mlp", "--hidden", "5", "--batch-size", "8",
              "--epochs", "3"]
    assert cli(*common, "--out", tmp_path / "plain.safetensors")[0] == 0
    status, out, err = cli(*common, "--explain", "2", "--out", tmp_path / "explained.safetensors")
    assert status == 0, err
    assert "Epoch 2, its first batch:" in out and "on 8 rows" in out
    plain, explained = (ModelBundle.load(tmp_path / f"{name}.safetensors").model for name in ("plain", "explained"))
    assert all(np.array_equal(a, b) for a, b in zip(plain.parameters(), explained.parameters()))
    status, out, err = cli("explain", tmp_path / "plain.safetensors", tmp_path / "d.csv", "--sample", "3")
    assert status == 0 and "the numbers of sample 3" in out and "Backward, layer by layer" in out
    status, out, err = cli("explain", tmp_path / "plain.safetensors", tmp_path / "d.csv", "--sample", "30")
    assert status == 2 and "--sample 30: " in err and err.count("\n") == 1
