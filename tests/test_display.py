"""Notebook display: compact HTML tables beside plain reprs, every value escaped."""

import numpy as np

import gradloop
from gradloop.bundle import ModelBundle
from gradloop.loop import fit
from gradloop.models import linear
from gradloop.optimizers import SGD

X = np.array([[0.5], [1.0], [1.5], [2.0]])
Y = 2 * X


def test_a_linear_run_and_its_history_show_their_numbers():
    run = gradloop.fit_linear(X, Y, np.array([[1.0]]), 0.1, 3, keep_records=True)
    page = run._repr_html_()
    assert "Linear run" in page and f"{run.weights[0, 0]:.7g}" in page and ">3<" in page
    history = run.history._repr_html_()
    assert "last epochs" in history and f"{run.history.history['loss'][-1]:.7g}" in history
    assert "LinearRun(weights=" in repr(run) and "History(epochs=3" in repr(run.history)
    record = run.history.records[0]
    assert "Epoch 1" in record._repr_html_() and repr(record).startswith("EpochRecord(epoch=1, loss=")


def test_a_saved_model_escapes_what_it_shows():
    model = linear(2, 1)
    fit(model, np.ones((3, 2)), np.ones(3), loss="mse", optimizer=SGD(0.1), epochs=1)
    bundle = ModelBundle(model, ["<b>x</b>", "y&z"], "t<", None, None, "mse", {"epochs": 1})
    page = bundle._repr_html_()
    assert "&lt;b&gt;x&lt;/b&gt;, y&amp;z" in page and "<b>x" not in page and "t&lt;" in page
