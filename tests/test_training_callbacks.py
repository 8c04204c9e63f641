"""Training callbacks at the API level: hooks, EarlyStopping, ReduceLROnPlateau, TerminateOnNaN,
validation_split and the per-epoch logs (JSON lines, CSV).

The problems are built so the expected numbers are known: a one-weight least-squares fit whose
validation loss provably falls for two epochs and then rises for ever, data whose one huge
entry makes a known batch overflow, and weights copied at every epoch and batch end to compare
with, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradloop import ConfigError, DivergenceError, fit
from gradloop.callbacks import EarlyStopping, ReduceLROnPlateau, TerminateOnNaN
from gradloop.loop import BatchRecord, Callback
from gradloop.losses import get_loss
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD, Adam, ExponentialLR, StepLR


# ------------------------------------------------------------ helpers

# Runs built to overflow: NumPy's warning is expected there.
overflows = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


class Snapshots(Callback):
    """Copies of the weights at train begin, after every batch and at every epoch end; the hook order."""

    wants_records = False
    wants_batches = True

    def __init__(self):
        self.epochs, self.batches, self.batch_records, self.events = {}, {}, [], []

    def on_train_begin(self, trainer):
        self.events.append("begin")
        self.epochs[trainer.epoch] = trainer.model.state_dict()

    def on_batch_end(self, batch, trainer):
        assert isinstance(batch, BatchRecord)
        self.events.append(("batch", batch.epoch, batch.batch, batch.size))
        self.batch_records.append(batch)
        self.batches[(batch.epoch, batch.batch)] = trainer.model.state_dict()

    def on_epoch_end(self, record, trainer):
        self.events.append(("epoch", trainer.epoch))
        self.epochs[trainer.epoch] = trainer.model.state_dict()

    def on_train_end(self, history, trainer):
        self.events.append("end")


def assert_same_weights(model, state):
    """The model's parameters equal ``state`` (a state_dict) bit for bit."""
    now = model.state_dict()
    assert now.keys() == state.keys()
    for name in now:
        assert np.array_equal(now[name], state[name]), name


def line_data(n=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 2))
    return X, X @ np.array([1.0, 2.0]) + 0.5 + 0.1 * rng.standard_normal(n)


# One weight, no bias, x = 1 everywhere: gradient descent from w = 0 towards the training target 1 gives
# w_k = 1 - (1 - 2 lr)^k, rising monotonically. The validation target is 0.3: its loss (w_k - 0.3)^2
# falls until epoch 2 (w_2 = 0.36) and rises at every epoch after that, whatever lr < 0.5.
ONE_X, ONE_Y = np.ones((4, 1)), np.ones(4)
ONE_VAL = (np.ones((1, 1)), np.array([0.3]))


def one_weight_fit(epochs, callbacks, **kwargs):
    model = linear(1, bias=False)
    snaps = Snapshots()
    history = fit(model, ONE_X, ONE_Y, loss="mse", optimizer=SGD(0.1), epochs=epochs,
                  validation_data=ONE_VAL, callbacks=[snaps, *callbacks], **kwargs)
    return model, history, snaps


def reference_stop(values, patience, min_delta):
    """Where EarlyStopping must stop on this validation curve: (stop epoch or None, best epoch)."""
    best, best_epoch = math.inf, 0
    for epoch, value in enumerate(values, 1):
        if value < best - min_delta:
            best, best_epoch = value, epoch
        elif epoch - best_epoch >= patience:
            return epoch, best_epoch
    return None, best_epoch


# ------------------------------------------------------------ hooks


def test_hook_order_and_counts_mini_batch():
    X, y = line_data(n=10)
    snaps = Snapshots()
    fit(linear(2), X, y, loss="mse", optimizer=SGD(0.05), epochs=2, batch_size=4, callbacks=[snaps])
    batches = lambda e: [("batch", e, 1, 4), ("batch", e, 2, 4), ("batch", e, 3, 2)]  # noqa: E731
    assert snaps.events == ["begin", *batches(1), ("epoch", 1), *batches(2), ("epoch", 2), "end"]


def test_batch_records_hold_each_batch_loss_before_its_update():
    X, y = line_data(n=11)
    model, snaps, mse = mlp([2, 6, 1], "tanh", seed=4), Snapshots(), get_loss("mse")
    history = fit(model, X, y, loss="mse", optimizer=SGD(0.05, momentum=0.9), epochs=3, batch_size=4,
                  shuffle=True, seed=7, callbacks=[snaps])
    rng, probe = np.random.default_rng(7), mlp([2, 6, 1], "tanh")  # the loop's batch order, from the seed
    for epoch in (1, 2, 3):
        order = rng.permutation(11)
        before, total = snaps.epochs[epoch - 1], 0.0
        records = [r for r in snaps.batch_records if r.epoch == epoch]
        assert [(r.batch, r.size) for r in records] == [(1, 4), (2, 4), (3, 3)]
        for r in records:
            rows = order[(r.batch - 1) * 4:r.batch * 4]
            probe.load_state_dict(before)
            assert r.loss == pytest.approx(mse.value(y[rows], probe.predict_raw(X[rows])), rel=1e-12)
            before = snaps.batches[(epoch, r.batch)]
            total += r.loss * r.size
        assert history.history["loss"][epoch - 1] == pytest.approx(total / 11, rel=1e-12)
        assert all(np.array_equal(before[k], snaps.epochs[epoch][k]) for k in before)  # last batch = epoch end


def test_a_batch_hook_can_stop_training_after_the_current_epoch():
    class StopAt(Snapshots):
        def on_batch_end(self, batch, trainer):
            super().on_batch_end(batch, trainer)
            if (batch.epoch, batch.batch) == (2, 1):
                trainer.stop_training = True

    X, y = line_data(n=10)
    stopper = StopAt()
    history = fit(linear(2), X, y, loss="mse", optimizer=SGD(0.05), epochs=5, batch_size=4, callbacks=[stopper])
    assert history.epochs_run == 2 and len(history.history["loss"]) == 2 and history.stopped_early
    assert [e for e in stopper.events if e[0] == "batch"][-1] == ("batch", 2, 3, 2)  # epoch 2 ran whole
    assert stopper.events[-2:] == [("epoch", 2), "end"]


# ------------------------------------------------------------ EarlyStopping


def test_one_weight_problem_validation_loss_falls_then_rises():
    _, history, _ = one_weight_fit(12, [])
    val = history.history["val_loss"]
    assert val[1] < val[0] and all(b > a for a, b in zip(val[1:], val[2:]))


@pytest.mark.parametrize("patience", [0, 1, 3])
def test_early_stopping_stops_after_patience_epochs_and_restores_the_best(patience):
    model, history, snaps = one_weight_fit(20, [EarlyStopping(patience=patience)])
    stop = 2 + max(patience, 1)  # best at epoch 2; patience 0 stops at the first worse epoch
    assert history.epochs_run == stop and len(history.history["val_loss"]) == stop
    assert history.stopped_early is True
    assert f"early stopping at epoch {stop}" in history.stop_message
    assert "val_loss" in history.stop_message and "at epoch 2" in history.stop_message
    assert_same_weights(model, snaps.epochs[2])


def test_early_stopping_min_delta_small_gains_do_not_count():
    # The training loss falls at every epoch, by far less than min_delta: only epoch 1 improves (on inf).
    X, y = line_data()
    history = fit(linear(2), X, y, loss="mse", optimizer=SGD(0.01), epochs=30,
                  callbacks=[EarlyStopping("loss", patience=4, min_delta=1e3)])
    assert all(b < a for a, b in zip(history.history["loss"], history.history["loss"][1:]))
    assert history.epochs_run == 5


def test_early_stopping_on_an_overfitting_network_stops_where_the_validation_curve_says():
    # Twelve noisy points, a wide network and validation rows from another distribution: the
    # validation loss goes down and up. The unstopped run gives the curve and every epoch's weights.
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((12, 2)), rng.standard_normal(12)
    val = (rng.standard_normal((40, 2)) * 1.5, np.zeros(40))
    run = dict(loss="mse", epochs=60, batch_size=5, shuffle=True, seed=3, validation_data=val)
    free, free_snaps = mlp([2, 64, 64, 1], "tanh", seed=1), Snapshots()
    curve = fit(free, X, y, optimizer=Adam(0.01), callbacks=[free_snaps], **run).history["val_loss"]
    stop, best = reference_stop(curve, patience=4, min_delta=1e-3)
    assert stop is not None and stop < 60 and curve[stop - 1] > curve[best - 1]

    model = mlp([2, 64, 64, 1], "tanh", seed=1)
    stopper = EarlyStopping(patience=4, min_delta=1e-3)
    history = fit(model, X, y, optimizer=Adam(0.01), callbacks=[stopper], **run)
    assert history.epochs_run == stop and history.stopped_early
    assert history.history["val_loss"] == curve[:stop]
    assert stopper.best_epoch == best and stopper.stopped_epoch == stop
    assert_same_weights(model, free_snaps.epochs[best])


@pytest.mark.parametrize("restore", [True, False])
def test_restore_best_when_training_runs_all_its_epochs(restore):
    model, history, snaps = one_weight_fit(8, [EarlyStopping(patience=100, restore_best=restore)])
    assert history.epochs_run == 8 and history.stopped_early is False and history.stop_message is None
    assert_same_weights(model, snaps.epochs[2] if restore else snaps.epochs[8])


@overflows
def test_restore_best_when_training_diverges():
    # Epoch 5's learning rate is 1e200: its update sends the loss to inf.
    model = linear(1, bias=False)
    snaps = Snapshots()
    with pytest.raises(DivergenceError) as info:
        fit(model, ONE_X, ONE_Y, loss="mse", optimizer=SGD(0.1), epochs=10, validation_data=ONE_VAL,
            schedule=StepLR(step_size=4, gamma=1e201), callbacks=[snaps, EarlyStopping(patience=100)])
    assert info.value.epoch == 5
    assert_same_weights(model, snaps.epochs[2])


@pytest.mark.parametrize("batch_size", [None, 5])
def test_early_stopping_on_val_loss_without_validation_is_a_config_error(batch_size):
    X, y = line_data()
    with pytest.raises(ConfigError) as info:
        fit(linear(2), X, y, loss="mse", optimizer=SGD(0.01), epochs=5, batch_size=batch_size,
            callbacks=[EarlyStopping(patience=2)])
    assert "'val_loss'" in str(info.value) and "validation_data or validation_split" in str(info.value)


# ------------------------------------------------------------ ReduceLROnPlateau


def test_plateau_drops_lr_by_factor_after_patience_stalled_epochs_never_below_min_lr():
    # Validation loss stalls from epoch 3 on: reductions decided at epochs 4, 6 (down to min_lr), 8 (no-op).
    _, history, _ = one_weight_fit(10, [ReduceLROnPlateau(factor=0.5, patience=2, min_lr=0.03)])
    lr = history.history["lr"]
    assert lr == pytest.approx([0.1] * 4 + [0.05] * 2 + [0.03] * 4, rel=1e-12)
    assert min(lr) >= 0.03


@pytest.mark.parametrize("factor, min_lr", [(0.1, 0.007), (0.5, 0.013), (0.7, 0.001)])
def test_plateau_min_lr_floor_holds_exactly(factor, min_lr):
    # Every epoch after the first stalls. base_lr * factor used to round one ulp below min_lr
    # (0.1 -> 0.01 -> 0.006999999999999999 for factor 0.1, min_lr 0.007).
    X, y = line_data()
    history = fit(linear(2), X, y, loss="mse", optimizer=SGD(0.1), epochs=40,
                  callbacks=[ReduceLROnPlateau("loss", factor=factor, patience=1, min_delta=1e9, min_lr=min_lr)])
    lr = history.history["lr"]
    assert lr[:3] == pytest.approx([0.1, 0.1, max(0.1 * factor, min_lr)], rel=1e-12)
    assert lr[-1] == pytest.approx(min_lr, rel=1e-12) and min(lr) >= min_lr


def test_plateau_scales_the_schedules_value():
    # min_delta 1e9: only epoch 1 improves; patience 2 -> reductions at epochs 3, 5, 7.
    X, y = line_data()
    schedule = ExponentialLR(gamma=0.8)
    history = fit(linear(2), X, y, loss="mse", optimizer=SGD(0.1), epochs=8, schedule=schedule,
                  callbacks=[ReduceLROnPlateau("loss", factor=0.5, patience=2, min_delta=1e9)])
    factors = [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.125]
    expected = [schedule.lr(0.1, e) * f for e, f in enumerate(factors)]
    assert history.history["lr"] == pytest.approx(expected, rel=1e-12)


# ------------------------------------------------------------ TerminateOnNaN

# Column 2 is zero except in row 9 (the third batch of 4 without shuffling), where it is 1e200.
# Epoch 1 sees that row with w_2 = 0: a finite loss, but its gradient makes w_2 about -1e199;
# epoch 2's third batch then predicts about 1e399: the loss overflows to inf before any update.
def overflow_data():
    X, y = line_data(n=20)
    X = np.hstack([X, np.zeros((20, 1))])
    X[9, 2] = 1e200
    return X, y


@overflows
def test_terminate_on_nan_mini_batch_stops_before_the_bad_batchs_update():
    X, y = overflow_data()
    model, snaps = linear(3), Snapshots()
    history = fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=5, batch_size=4, shuffle=False,
                  callbacks=[snaps, TerminateOnNaN()])
    assert "epoch 2, batch 3" in history.stop_message
    assert history.stopped_early and history.epochs_run == 1 and len(history.history["loss"]) == 1
    assert (2, 3) not in snaps.batches
    assert_same_weights(model, snaps.batches[(2, 2)])
    assert all(np.all(np.isfinite(p)) for p in model.parameters())


@overflows
def test_without_terminate_on_nan_the_same_run_raises_and_keeps_the_previous_epoch():
    X, y = overflow_data()
    model, snaps = linear(3), Snapshots()
    with pytest.raises(DivergenceError) as info:
        fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=5, batch_size=4, shuffle=False, callbacks=[snaps])
    assert info.value.epoch == 2 and "epoch 2 (batch 3)" in str(info.value)
    assert_same_weights(model, snaps.epochs[1])


@pytest.mark.parametrize("terminate", [True, False])
def test_nan_in_one_row_stops_at_its_batch(terminate):
    X, y = line_data(n=20)
    X[9, 0] = np.nan  # row 9: the third batch of 4
    model, snaps = linear(2), Snapshots()
    callbacks = [snaps, TerminateOnNaN()] if terminate else [snaps]
    if terminate:
        history = fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=3, batch_size=4, shuffle=False,
                      callbacks=callbacks)
        assert "epoch 1, batch 3" in history.stop_message
        assert_same_weights(model, snaps.batches[(1, 2)])
    else:
        with pytest.raises(DivergenceError, match=r"epoch 1 \(batch 3\)"):
            fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=3, batch_size=4, shuffle=False,
                callbacks=callbacks)


@overflows
def test_terminate_on_nan_full_batch_keeps_the_previous_epochs_weights():
    # Epoch 4's learning rate is 5e199: its update overflows the loss to inf.
    X, y = line_data()
    model, snaps = linear(2), Snapshots()
    history = fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=8, schedule=StepLR(3, 1e201),
                  callbacks=[snaps, TerminateOnNaN()])
    assert history.epochs_run == 3 and history.stopped_early and len(history.history["loss"]) == 3
    assert "epoch 4" in history.stop_message and "epoch 3 are kept" in history.stop_message
    assert_same_weights(model, snaps.epochs[3])

    quiet = linear(2)
    with pytest.raises(DivergenceError) as info:
        fit(quiet, X, y, loss="mse", optimizer=SGD(0.05), epochs=8, schedule=StepLR(3, 1e201))
    assert info.value.epoch == 4
    assert_same_weights(quiet, snaps.epochs[3])


@pytest.mark.parametrize("batch_size", [None, 4])
@overflows
def test_history_lists_have_one_entry_per_completed_epoch_after_terminate_on_nan(batch_size):
    if batch_size is None:
        X, y = line_data()
        history = fit(linear(2), X, y, loss="mse", optimizer=SGD(0.05), epochs=8, schedule=StepLR(3, 1e201),
                      callbacks=[TerminateOnNaN()])
    else:
        X, y = overflow_data()
        history = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.05), epochs=5, batch_size=4, shuffle=False,
                      callbacks=[TerminateOnNaN()])
    assert {k: len(v) for k, v in history.history.items()} == dict.fromkeys(history.history, history.epochs_run)
