"""Tests for gradloop.loop: fit, History, EpochRecord, one forward pass per epoch, mini-batches."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

import gradloop
from gradloop import Callback, ConfigError, DivergenceError, EpochRecord, History, fit
from gradloop.losses import SoftmaxCrossEntropy
from gradloop.callbacks import TracePrinter
from gradloop.layers import Dense
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD, Adam, StepLR


def make_data(n=64, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.5 + 0.1 * rng.standard_normal(n)
    return X, y


def mse(y, pred):
    return float(np.mean((np.reshape(y, (len(y), -1)) - pred) ** 2))


def W_of(model):
    return [p.copy() for p in model.parameters()]


@pytest.fixture
def forward_calls(monkeypatch):
    """Count Dense.forward calls (rows per call)."""
    calls = []
    original = Dense.forward

    def counting(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(Dense, "forward", counting)
    return calls


# ------------------------------------------------------------ one forward pass per epoch


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("epochs", [0, 1, 4])
def test_full_batch_does_epochs_plus_one_forward_passes(verbose, epochs, forward_calls, capsys):
    X, y = make_data(n=16)
    fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=epochs, verbose=verbose, gradient="layers")
    assert len(forward_calls) == epochs + 1
    assert all(n == 16 for n in forward_calls)
    assert ("Epoch 1:" in capsys.readouterr().out) == (verbose and epochs > 0)


def test_full_batch_forward_count_with_records_and_a_hidden_layer(monkeypatch):
    calls = []
    X, y = make_data(n=16)
    model = mlp([3, 4, 1], "tanh", seed=1)
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda x: calls.append(1) or original(x))
    fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=5, keep_records=True,
        callbacks=[TracePrinter(file=io.StringIO())])
    assert len(calls) == 6


# ------------------------------------------------------------ full batch = train


def test_full_batch_fit_equals_train_bit_for_bit():
    X, y = make_data(n=50)
    W0 = np.array([0.1, -0.2, 0.3])
    model = linear(3, bias=False)
    model.layers[0].params["W"][:, 0] = W0
    fit(model, X, y, loss="mse", optimizer=SGD(0.07), epochs=25)
    np.testing.assert_array_equal(model.layers[0].params["W"][:, 0], gradloop.train(X, y, W0, 0.07, 25))


@pytest.mark.parametrize("batch_size", [None, 50, 1000])
def test_batch_size_none_or_at_least_n_is_full_batch(batch_size):
    X, y = make_data(n=50)
    model = linear(3)
    h = fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=10, batch_size=batch_size, seed=3)
    W, b = gradloop.train(X, y, np.zeros(3), 0.05, 10, bias=0.0)
    np.testing.assert_array_equal(model.layers[0].params["W"][:, 0], W)
    assert model.layers[0].params["b"][0] == b
    assert len(h.history["new_loss"]) == 10


# ------------------------------------------------------------ mini-batches


def run_minibatch(seed, shuffle=True, epochs=5, **kw):
    X, y = make_data(n=70, seed=2)
    model = mlp([3, 8, 1], "relu", seed=0)
    history = fit(model, X, y, loss="mse", optimizer=SGD(0.05, momentum=0.9), epochs=epochs,
                  batch_size=16, shuffle=shuffle, seed=seed, **kw)
    return model, history


def test_minibatch_same_seed_is_bit_identical():
    a, ha = run_minibatch(seed=5)
    b, hb = run_minibatch(seed=5)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)
    assert ha.history["loss"] == hb.history["loss"]


def test_minibatch_different_seed_differs():
    a, _ = run_minibatch(seed=5)
    b, _ = run_minibatch(seed=6)
    assert any(not np.array_equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_minibatch_without_shuffle_ignores_seed():
    a, _ = run_minibatch(seed=5, shuffle=False)
    b, _ = run_minibatch(seed=6, shuffle=False)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p, q)


def test_minibatch_loss_is_mean_over_batches_and_updates_per_batch():
    # Plain SGD on a linear model, no shuffle: replay by hand, 3 batches of 4, 4 and 2 rows.
    X, y = make_data(n=10, seed=4)
    model = linear(3, bias=False)
    h = fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=2, batch_size=4, shuffle=False)
    W = np.zeros((3, 1))
    Y = y[:, None]
    for epoch in range(2):
        total = 0.0
        for s in range(0, 10, 4):
            xb, yb = X[s:s + 4], Y[s:s + 4]
            r = xb @ W - yb
            total += float(np.mean(r ** 2)) * len(xb)
            W = W - 0.1 * (2 * xb.T @ r / len(xb))
        assert h.history["loss"][epoch] == pytest.approx(total / 10, rel=1e-12)
    np.testing.assert_allclose(model.layers[0].params["W"], W, rtol=1e-12)
    assert "new_loss" not in h.history  # no records asked for


def test_minibatch_unshuffled_pred_head_is_the_start_of_epoch_prediction():
    X, y = make_data(n=20, seed=7)
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=3, batch_size=8, shuffle=False,
            keep_records=True)
    np.testing.assert_array_equal(h.records[0].pred_head, 0.0)
    for before, after in zip(h.records, h.records[1:]):
        np.testing.assert_allclose(after.pred_head, before.new_pred_head, rtol=1e-14)
        assert not np.allclose(after.pred_head, after.new_pred_head)


def test_minibatch_shuffled_pred_head_is_before_the_update():
    X, y = make_data(n=20, seed=7)
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=3, batch_size=8, shuffle=True,
            keep_records=True)
    for record in h.records:
        assert not np.allclose(record.pred_head, record.new_pred_head)


def test_minibatch_validation_loss_is_a_direct_computation():
    X, y = make_data(n=60, seed=5)
    Xv, yv = make_data(n=13, seed=6)
    model = linear(3)
    h = fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=4, batch_size=8,
            validation_data=(Xv, yv), keep_records=True)
    assert len(h.history["val_loss"]) == 4
    for record, val in zip(h.records, h.history["val_loss"]):
        W, b = record.weights
        assert val == pytest.approx(mse(yv, Xv @ W + b), rel=1e-12)
        assert record.val_loss == val
    assert h.history["val_loss"][-1] == pytest.approx(mse(yv, model.predict(Xv)), rel=1e-12)


def test_full_batch_validation_loss_same_size_is_a_direct_computation():
    X, y = make_data(n=60, seed=5)
    Xv, yv = make_data(n=60, seed=6)
    model = linear(3)
    h = fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=3, validation_data=(Xv, yv))
    assert h.history["val_loss"][-1] == pytest.approx(mse(yv, model.predict(Xv)), rel=1e-12)


# Regression test: an earlier loop.py ran the validation forward pass between an epoch's forward
# and the next backward, so Dense kept X_val for the backward (crash, or wrong gradients).
@pytest.mark.parametrize("n_val", [13, 60])
def test_full_batch_validation_does_not_change_training(n_val):
    X, y = make_data(n=60, seed=5)
    Xv, yv = make_data(n=n_val, seed=6)
    with_val, without = linear(3), linear(3)
    h = fit(with_val, X, y, loss="mse", optimizer=SGD(0.05), epochs=3, validation_data=(Xv, yv))
    fit(without, X, y, loss="mse", optimizer=SGD(0.05), epochs=3)
    for p, q in zip(with_val.parameters(), without.parameters()):
        np.testing.assert_array_equal(p, q)
    assert h.history["val_loss"][-1] == pytest.approx(mse(yv, with_val.predict(Xv)), rel=1e-12)


# ------------------------------------------------------------ callbacks and stopping


class StopAfter(Callback):
    wants_records = False

    def __init__(self, epoch):
        self.epoch = epoch
        self.seen = []

    def on_epoch_end(self, record, trainer):
        self.seen.append(trainer.history.epochs_run)
        if trainer.history.epochs_run >= self.epoch:
            trainer.stop_training = True


@pytest.mark.parametrize("batch_size", [None, 8])
def test_callback_stop_training_stops_early(batch_size):
    X, y = make_data(n=40)
    stopper = StopAfter(3)
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.05), epochs=50, batch_size=batch_size,
            callbacks=[stopper])
    assert h.epochs_run == 3 and len(h.history["loss"]) == 3
    assert stopper.seen == [1, 2, 3]


def test_history_says_it_stopped_early():
    X, y = make_data(n=40)
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.05), epochs=50, callbacks=[StopAfter(3)])
    assert h.stopped_early is True


class Hooks(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, trainer):
        self.events.append("begin")

    def on_epoch_end(self, record, trainer):
        assert isinstance(record, EpochRecord)
        self.events.append(record.epoch)

    def on_train_end(self, history, trainer):
        assert isinstance(history, History)
        self.events.append("end")


def test_callback_hooks_order():
    X, y = make_data(n=20)
    hooks = Hooks()
    fit(linear(3), X, y, loss="mse", optimizer=SGD(0.05), epochs=3, callbacks=[hooks])
    assert hooks.events == ["begin", 1, 2, 3, "end"]


def test_callback_train_end_runs_on_divergence():
    X, y = make_data(n=20)
    hooks = Hooks()
    with pytest.raises(DivergenceError):
        fit(linear(3), X, y, loss="mse", optimizer=SGD(100.0), epochs=50, callbacks=[hooks])
    assert hooks.events[0] == "begin" and hooks.events[-1] == "end"


# ------------------------------------------------------------ records and history


def test_epoch_record_to_dict_is_json():
    X, y = make_data(n=20)
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.05), epochs=2, keep_records=True)
    d = h.records[0].to_dict()
    text = json.dumps(d, allow_nan=False)
    back = json.loads(text)
    for key in ("epoch", "loss", "new_loss", "gradients", "weights", "pred_head", "target_head",
                "diff_head", "new_pred_head", "lr", "grad_norm", "seconds"):
        assert key in back
    assert back["epoch"] == 1 and back["loss"] == h.history["loss"][0]
    assert set(back["weights"]) == {"0.W", "0.b"}
    np.testing.assert_array_equal(np.array(back["weights"]["0.W"]), h.records[0].weights[0])
    assert back["grad_norm"] == pytest.approx(
        math.sqrt(sum(float(np.sum(g ** 2)) for g in h.records[0].gradients)), rel=1e-12)


def test_history_layout_and_epochs_zero():
    X, y = make_data(n=20)
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.05), epochs=0)
    assert h.epochs_run == 0 and h.history["loss"] == [] and h.final_loss is None
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.05), epochs=3)
    assert h.history["lr"] == [0.05] * 3
    assert h.final_loss == h.history["new_loss"][-1]
    assert "epochs=3" in repr(h)


def test_schedule_sets_lr_per_epoch():
    X, y = make_data(n=20)
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=4, schedule=StepLR(2, 0.5))
    assert h.history["lr"] == [0.1, 0.1, 0.05, 0.05]


# ------------------------------------------------------------ divergence


def test_fit_divergence_restores_last_finite_parameters():
    X, y = make_data(n=30)
    with pytest.raises(DivergenceError) as info:
        fit(linear(3), X, y, loss="mse", optimizer=SGD(50.0), epochs=100, stable_lr=0.25)
    exc = info.value
    before = linear(3)
    fit(before, X, y, loss="mse", optimizer=SGD(50.0), epochs=exc.epoch - 1)
    for p, q in zip(exc.weights, before.parameters()):
        np.testing.assert_array_equal(p, q)
    assert exc.stable_lr == 0.25 and "0.25" in str(exc) and f"epoch {exc.epoch}" in str(exc)


def test_minibatch_divergence_is_caught_inside_the_epoch():
    X, y = make_data(n=32)
    model = linear(3)
    with pytest.raises(DivergenceError) as info:
        fit(model, X, y, loss="mse", optimizer=SGD(1e150), epochs=5, batch_size=8, shuffle=False)
    assert info.value.epoch == 1 and "batch" in str(info.value)
    for p in model.parameters():  # the start, restored
        np.testing.assert_array_equal(p, 0.0)


def test_non_finite_start_loss_is_divergence_at_epoch_zero():
    X, y = make_data(n=10)
    model = linear(3)
    model.layers[0].params["W"][0, 0] = np.nan
    with pytest.raises(DivergenceError) as info:
        fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=3)
    assert info.value.epoch == 0


# ------------------------------------------------------------ other losses and optimizers run


def test_classifier_trains():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 0] > 1).astype(int)
    model = mlp([2, 8, 3], "tanh", seed=0)
    h = fit(model, X, y, loss="cross-entropy", optimizer=Adam(0.05), epochs=60, keep_records=True)
    assert (model.predict_raw(X).argmax(axis=1) == y).mean() >= 0.9  # it learnt the three regions
    assert h.history["loss"][-1] < h.history["loss"][0] / 2
    last = json.loads(json.dumps(h.records[-1].to_dict()))  # the record is JSON, and holds the epoch's numbers
    assert last["epoch"] == 60 and last["loss"] == h.history["loss"][-1]
    assert last["new_loss"] == pytest.approx(SoftmaxCrossEntropy().value(y, model.predict_raw(X)), rel=1e-12)


# ------------------------------------------------------------ bad arguments


@pytest.mark.parametrize("kwargs,fragment", [
    ({"epochs": -1}, "epochs must be a non-negative integer"),
    ({"epochs": 1.5}, "epochs must be a non-negative integer"),
    ({"batch_size": 0}, "batch_size must be a positive integer or None"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer or None"),
    ({"batch_size": True}, "batch_size must be a positive integer or None"),
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
])
def test_fit_bad_arguments(kwargs, fragment):
    X, y = make_data(n=10)
    args = {"loss": "mse", "optimizer": SGD(0.1), "epochs": 2, **kwargs}
    with pytest.raises(ConfigError) as info:
        fit(linear(3), X, y, **args)
    assert fragment in str(info.value)
