"""Notebook display: compact HTML tables beside plain reprs, every value escaped."""

import numpy as np

import gradloop
from gradloop.files.bundle import ModelBundle
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


# ---------------------------------------------------------------- LivePlot
class _FakeHandle:
    """What IPython's display(..., display_id=True) returns: a handle whose update() replaces the output."""

    def __init__(self):
        self.updates = []

    def update(self, obj):
        self.updates.append(obj)


class _FakeDisplay:
    def __init__(self):
        self.calls, self.handle = [], _FakeHandle()

    def __call__(self, obj, display_id=None):
        self.calls.append((obj, display_id))
        return self.handle


def _mlp_fit(callbacks, epochs):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3))
    y = np.sin(X.sum(axis=1))
    model = gradloop.models.mlp([3, 8, 1], seed=0)
    return model, fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=epochs, batch_size=16, seed=0,
                      callbacks=callbacks)


def test_liveplot_shows_one_figure_and_updates_it_in_place():
    from gradloop.callbacks import LivePlot

    display = _FakeDisplay()
    plot = LivePlot(interval=0, display=display)
    _mlp_fit([plot], epochs=5)
    # One output, asked for with a display id; then every epoch and the end update that same output.
    assert len(display.calls) == 1 and display.calls[0][1] is True
    images = [display.calls[0][0], *display.handle.updates]
    assert len(images) == 1 + 5 + 1 == plot.shown
    assert all(image.data.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    assert images[0].data != images[-1].data  # the curves grew


def test_liveplot_redraws_at_most_every_interval():
    from gradloop.callbacks import LivePlot

    display = _FakeDisplay()
    plot = LivePlot(interval=3600, display=display)
    _mlp_fit([plot], epochs=20)
    assert len(display.calls) == 1 and len(display.handle.updates) == 1 and plot.shown == 2  # begin and end


def test_liveplot_outside_a_notebook_draws_nothing_and_changes_nothing():
    from gradloop.callbacks import LivePlot

    plot = LivePlot()
    model, history = _mlp_fit([plot], epochs=3)
    plain_model, plain = _mlp_fit([], epochs=3)
    assert plot.shown == 0
    assert history.history == plain.history and history.records == []  # no records asked for: fast paths kept
    for a, b in zip(model.parameters(), plain_model.parameters()):
        assert np.array_equal(a, b)
