"""The chapter's report for classifiers (probabilities, predicted beside true class, the true class's
probability and loss) and for standardized inputs (which feature each weight is, in what units)."""

import io
import re

import numpy as np

from gradloop.callbacks import TracePrinter
from gradloop.loop import fit
from gradloop.models import mlp
from gradloop.optimizers import SGD

rng = np.random.default_rng(0)
X = rng.standard_normal((40, 3))
labels = rng.integers(0, 3, 40)


def test_a_classifier_report_reads_the_outputs_as_probabilities():
    out = io.StringIO()
    model = mlp([3, 5, 3], "relu", seed=0, task="multiclass")
    history = fit(model, X, labels, loss="cross-entropy", optimizer=SGD(0.1), epochs=1, keep_records=True,
                  callbacks=[TracePrinter(file=out, classes=["cat", "dog", "eel"])])
    text, record = out.getvalue(), history.records[0]
    assert "Difference between actual and predicted" not in text
    logits = record.pred_head
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    names = ["cat", "dog", "eel"]
    pairs = ", ".join(f"{names[a]!r}/{names[b]!r}" for a, b in zip(p.argmax(1), labels[:5]))
    assert f"predicted/true class: {pairs}" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("Probability of the true class"))
    shown = [float(v) for v in re.findall(r"\d+\.\d+", line.split(";")[0])]
    assert np.allclose(shown, p[np.arange(5), labels[:5]], atol=6e-5)
    losses = [float(v) for v in re.findall(r"\d+\.\d+", line.split("-log p:")[1])]
    assert np.allclose(losses, -np.log(p[np.arange(5), labels[:5]]), atol=6e-5)


def test_standardized_linear_weights_are_named_by_feature(cli, tmp_path):
    import pandas as pd

    frame = pd.DataFrame(X, columns=["age", "bmi", "bp"]).assign(y=X @ [1.0, 2.0, -1.0])
    frame.to_csv(tmp_path / "d.csv", index=False)
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--standardize", "--epochs", "1", "--trace")
    assert status == 0, err
    assert ("(in the order of the features age, bmi, bp; in standardized units: the inputs were scaled to "
            "mean 0, std 1)") in out
