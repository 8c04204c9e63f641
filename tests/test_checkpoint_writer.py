"""gradloop.checkpoint.CheckpointWriter: what it writes, in one form, and what it leaves alone."""

import hashlib

import numpy as np
import pytest

from gradloop import DivergenceError, fit
from gradloop.checkpoint import FILE_NAME, CheckpointWriter, load
from gradloop.models import linear
from gradloop.optimizers import SGD


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 2))
    return X, X @ [1.0, -1.0]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the point of the test
def test_a_run_that_fails_before_its_first_epoch_leaves_the_earlier_checkpoint(tmp_path):
    X, y = _data()
    fit(linear(2), X, y, loss="mse", optimizer=SGD(0.1), epochs=5, callbacks=[CheckpointWriter(tmp_path)])
    before = _digest(tmp_path / FILE_NAME)
    model = linear(2)
    model.layers[0].params["W"][...] = 1e200  # the starting loss overflows: the run fails at its start
    with pytest.raises(DivergenceError, match="the loss of the starting weights is inf"):
        fit(model, X * 1e200, y, loss="mse", optimizer=SGD(0.1), epochs=5, callbacks=[CheckpointWriter(tmp_path)])
    assert _digest(tmp_path / FILE_NAME) == before and load(tmp_path).epoch == 5


def test_a_run_of_no_epochs_checkpoints_its_start(tmp_path):
    X, y = _data()
    fit(linear(2), X, y, loss="mse", optimizer=SGD(0.1), epochs=0, callbacks=[CheckpointWriter(tmp_path)])
    assert load(tmp_path).epoch == 0


@pytest.mark.parametrize("every", [1, 3])  # written at each epoch, or kept and written at train end
def test_the_history_a_checkpoint_holds_is_lists_cut_at_its_epoch(tmp_path, every):
    X, y = _data()
    history = fit(linear(2), X, y, loss="mse", optimizer=SGD(0.1), epochs=5,
                  callbacks=[CheckpointWriter(tmp_path, every=every)])
    state = load(tmp_path)
    assert state.epoch == 5 and isinstance(state.history, dict)
    assert state.history["loss"] == history.history["loss"] and state.history["lr"] == history.history["lr"]
