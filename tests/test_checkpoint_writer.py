"""gradloop.checkpoint.CheckpointWriter: what it writes, in one form, and what it leaves alone."""

import hashlib

import numpy as np
import pytest

from gradloop import CheckpointError, DivergenceError, fit
from gradloop.callbacks import Callback
from gradloop.checkpoint import FILE_NAME, CheckpointWriter, load
from gradloop.data import ArraySource
from gradloop.files.modelfile import CHECKSUM_KEY, content_checksum, read_model_file, write_model_file
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


class _StopAfterBlock(Callback):
    """Stops the run after block 2 of epoch 2, as Ctrl-C does on the command line."""

    wants_records, wants_blocks = False, True

    def on_block_end(self, position, trainer):
        if position["epoch"] == 2 and position["blocks"] == 2:
            trainer.stop_training = True


def _stopped_inside(tmp_path):
    X, y = _data()
    source = ArraySource(X, y, block_rows=10)  # four blocks
    fit(linear(2), source, None, loss="mse", optimizer=SGD(0.1), epochs=3, batch_size=5,
        callbacks=[_StopAfterBlock(), CheckpointWriter(tmp_path)])
    return source


def _tamper(tmp_path, change):
    tensors, meta = read_model_file(tmp_path / FILE_NAME)
    change(meta["position"])
    meta[CHECKSUM_KEY] = content_checksum(tensors, meta)
    write_model_file(tmp_path / FILE_NAME, tensors, meta)


@pytest.mark.parametrize("head", [[[1.0], [2.0, 3.0]], [["a"]], [[1.0]] * 6, [], {"x": 1}])
def test_a_tampered_head_inside_an_epoch_is_refused(tmp_path, head):
    _stopped_inside(tmp_path)
    _tamper(tmp_path, lambda position: position.update(head=head))
    with pytest.raises(CheckpointError, match="its position inside epoch 2 is malformed"):
        load(tmp_path)


def test_a_position_beyond_the_sources_blocks_is_refused(tmp_path):
    source = _stopped_inside(tmp_path)
    assert load(tmp_path).position["blocks"] == 2
    _tamper(tmp_path, lambda position: position.update(blocks=99))
    with pytest.raises(CheckpointError, match="says 99 blocks of its epoch are done, but X has 4"):
        fit(linear(2), source, None, loss="mse", optimizer=SGD(0.1), epochs=3, batch_size=5, resume=load(tmp_path))
