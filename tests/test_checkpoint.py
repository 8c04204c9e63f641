"""Checkpoints: exact resume, checkpoint cadence, refusals, damaged files and crashes during a save.

"Exact" is bit for bit: a run of k + m epochs and a run of k epochs resumed on a fresh model and
optimizer for the remaining m end with np.array_equal weights and equal History lists.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from gradloop import CheckpointError, DivergenceError, GradloopError, fit
from gradloop.callbacks import EarlyStopping, ModelCheckpoint, TerminateOnNaN
from gradloop.checkpoint import FILE_NAME, KIND, CheckpointWriter, load, save
from gradloop.files.modelfile import CHECKSUM_KEY, content_checksum, read_model_file, write_model_file
from gradloop.loop import Callback
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD, Adam, StepLR

overflows = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def make_data(n=50, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    return X, np.sin(X[:, 0]) + X[:, 1] * X[:, 2] + 0.1 * rng.standard_normal(n)


OPTIMIZERS = {
    "sgd-momentum": lambda: SGD(0.05, momentum=0.9),
    "adam": lambda: Adam(0.01),
}


def same_weights(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def same_state(a, b):
    """Two TrainingStates hold the same run, bit for bit."""
    assert a.epoch == b.epoch
    assert a.parameters.keys() == b.parameters.keys()
    assert all(np.array_equal(a.parameters[k], b.parameters[k]) for k in a.parameters)
    oa, ob = dict(a.optimizer), dict(b.optimizer)
    sa, sb = oa.pop("state"), ob.pop("state")
    assert oa == ob and sa.keys() == sb.keys()
    assert all(np.array_equal(x, z) for k in sa for x, z in zip(sa[k], sb[k], strict=True))
    assert a.rng_state == b.rng_state and a.dropout_states == b.dropout_states
    assert a.history == b.history and a.start_loss == b.start_loss
    assert (a.lr_factor, a.base_lr) == (b.lr_factor, b.base_lr)
    return True


# ------------------------------------------------------------ exact resume


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("batch_size, dropout", [(None, 0.0), (8, 0.0), (8, 0.3), (None, 0.3)])
def test_resume_is_bit_for_bit(tmp_path, opt, batch_size, dropout):
    X, y = make_data()
    val = make_data(n=10, seed=1)
    run = dict(loss="mse", batch_size=batch_size, shuffle=True, seed=5, validation_data=val)
    whole = mlp([3, 12, 1], "tanh", seed=3, dropout=dropout)
    reference = fit(whole, X, y, optimizer=OPTIMIZERS[opt](), epochs=9, **run)

    fit(mlp([3, 12, 1], "tanh", seed=3, dropout=dropout), X, y, optimizer=OPTIMIZERS[opt](), epochs=4,
        callbacks=[CheckpointWriter(tmp_path)], **run)
    fresh = mlp([3, 12, 1], "tanh", seed=99, dropout=dropout)  # other weights: the checkpoint must replace them
    resumed = fit(fresh, X, y, optimizer=OPTIMIZERS[opt](), epochs=9, resume=load(tmp_path), **run)

    assert same_weights(whole, fresh)
    assert resumed.history == reference.history and resumed.epochs_run == 9
    assert len(resumed.history["val_loss"]) == 9


def test_resume_twice_and_from_epoch_zero(tmp_path):
    X, y = make_data()
    whole = mlp([3, 8, 1], "relu", seed=1)
    reference = fit(whole, X, y, loss="mse", optimizer=Adam(0.01), epochs=6, batch_size=16)
    model = mlp([3, 8, 1], "relu", seed=1)
    fit(model, X, y, loss="mse", optimizer=Adam(0.01), epochs=0, batch_size=16, callbacks=[CheckpointWriter(tmp_path)])
    assert load(tmp_path).epoch == 0
    for total in (2, 5, 6):
        model, opt = mlp([3, 8, 1], "relu", seed=7), Adam(0.01)
        history = fit(model, X, y, loss="mse", optimizer=opt, epochs=total, batch_size=16, resume=load(tmp_path),
                      callbacks=[CheckpointWriter(tmp_path)])
    assert same_weights(whole, model) and history.history == reference.history


@pytest.mark.parametrize("gradient", ["layers", "gram", "stream"])
def test_resume_is_bit_for_bit_for_the_linear_model_with_a_pinned_kernel(tmp_path, gradient):
    # gradient="auto" chooses the executor from each call's epochs (gram when epochs > columns),
    # so a 10-epoch leg and a 30-epoch run may use different (equally exact, ~1e-14) arithmetic;
    # with the executor pinned, a resumed run is the uninterrupted one, bit for bit.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((2000, 20))
    y = X @ rng.standard_normal(20)
    whole = linear(20)
    reference = fit(whole, X, y, loss="mse", optimizer=SGD(0.01), epochs=30, gradient=gradient)
    fit(linear(20), X, y, loss="mse", optimizer=SGD(0.01), epochs=10, callbacks=[CheckpointWriter(tmp_path)],
        gradient=gradient)
    fresh = linear(20)
    resumed = fit(fresh, X, y, loss="mse", optimizer=SGD(0.01), epochs=30, resume=load(tmp_path), gradient=gradient)
    assert same_weights(whole, fresh) and resumed.history == reference.history


# ------------------------------------------------------------ when checkpoints are written


class SeenOnDisk(Callback):
    """After each epoch (placed after the writer): the epoch of the checkpoint on disk, or None."""

    wants_records = False

    def __init__(self, directory):
        self.directory, self.seen = directory, []

    def on_epoch_end(self, record, trainer):
        path = os.path.join(self.directory, FILE_NAME)
        self.seen.append(load(self.directory).epoch if os.path.exists(path) else None)


@pytest.mark.parametrize("batch_size", [None, 8])
def test_checkpoint_every_n_epochs_and_at_the_end(tmp_path, batch_size):
    X, y = make_data()
    spy = SeenOnDisk(tmp_path)
    fit(mlp([3, 4, 1], seed=0), X, y, loss="mse", optimizer=SGD(0.01), epochs=7, batch_size=batch_size,
        callbacks=[CheckpointWriter(tmp_path, every=3), spy])
    assert spy.seen == [None, None, 3, 3, 3, 6, 6]
    assert load(tmp_path).epoch == 7
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]  # no temporary files left behind


def test_checkpoint_writer_every_must_be_positive():
    with pytest.raises(GradloopError, match="every"):
        CheckpointWriter("somewhere", every=0)


def clean_state(tmp_path, epochs, **run):
    """The checkpoint of a run stopped cleanly after ``epochs``."""
    folder = tmp_path / f"clean{epochs}"
    fit(**run, epochs=epochs, callbacks=[CheckpointWriter(folder)])
    return load(folder)


# Column 3 is zero except in row 9, where it is 1e200: epoch 1 sees it with a zero weight (finite),
# epoch 2's batch holding it overflows the loss to inf.
def overflow_data():
    X, y = make_data(n=20)
    X = np.hstack([X, np.zeros((20, 1))])
    X[9, 3] = 1e200
    return X, y


@overflows
@pytest.mark.parametrize("case", ["nan-full-batch", "diverged-full-batch", "nan-mini-batch", "diverged-mini-batch"])
def test_checkpoint_at_the_end_of_a_failed_run_is_the_last_complete_epoch(tmp_path, case):
    # A failed epoch moves the optimizer (and the batch order) on before it is undone: the checkpoint
    # written when training ends must be the state at the end of the last complete epoch.
    if case.endswith("full-batch"):
        X, y = make_data()
        run = lambda: dict(model=linear(3), X=X, y=y, loss="mse", optimizer=SGD(0.05, momentum=0.9),  # noqa: E731
                           schedule=StepLR(3, 1e201))  # epoch 4's update overflows
        kept = 3
    else:
        X, y = overflow_data()
        run = lambda: dict(model=linear(4), X=X, y=y, loss="mse", optimizer=SGD(0.05, momentum=0.9),  # noqa: E731
                           batch_size=4, shuffle=True, seed=2)
        kept = 1
    callbacks = [CheckpointWriter(tmp_path / "run", every=5)]
    if case.startswith("nan"):
        history = fit(**run(), epochs=8, callbacks=[*callbacks, TerminateOnNaN()])
        assert history.epochs_run == kept and history.stop_message
    else:
        with pytest.raises(DivergenceError):
            fit(**run(), epochs=8, callbacks=callbacks)
    assert same_state(load(tmp_path / "run"), clean_state(tmp_path, kept, **run()))


def test_checkpoint_at_the_end_holds_the_last_epoch_not_early_stoppings_restored_weights(tmp_path):
    # One weight, x = 1, training target 1, validation target 0.3: the validation loss is best at
    # epoch 2 and worse after; patience 3 stops at epoch 5 and puts epoch 2's weights back.
    run = lambda: dict(model=linear(1, bias=False), X=np.ones((4, 1)), y=np.ones(4), loss="mse",  # noqa: E731
                       optimizer=SGD(0.1), validation_data=(np.ones((1, 1)), np.array([0.3])))
    history = fit(**run(), epochs=20, callbacks=[EarlyStopping(patience=3), CheckpointWriter(tmp_path / "run", 4)])
    assert history.epochs_run == 5
    assert same_state(load(tmp_path / "run"), clean_state(tmp_path, 5, **run()))


# ------------------------------------------------------------ refusals


def checkpoint_of(tmp_path, model, X, y, batch_size=None, epochs=3):
    fit(model, X, y, loss="mse", optimizer=SGD(0.01, momentum=0.9), epochs=epochs, batch_size=batch_size,
        callbacks=[CheckpointWriter(tmp_path)])
    return load(tmp_path)


def assert_refused_and_untouched(model, optimizer, X, y, state, fragments, **kwargs):
    before = model.state_dict()
    with pytest.raises(CheckpointError) as info:
        fit(model, X, y, loss="mse", optimizer=optimizer, resume=state, **kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)
    # A refused checkpoint changes nothing: the model and the optimizer are as they were.
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    assert optimizer.steps == 0 and optimizer.state == {}
    return str(info.value)


def test_checkpoint_of_another_hidden_size_is_refused_naming_both(tmp_path):
    X, y = make_data()
    state = checkpoint_of(tmp_path, mlp([3, 8, 1], "tanh"), X, y)
    assert_refused_and_untouched(mlp([3, 16, 1], "tanh"), SGD(0.01, momentum=0.9), X, y, state,
                                 ["Dense(3, 8)", "Dense(3, 16)", "different model"], epochs=6)


def test_checkpoint_of_another_dtype_is_refused_naming_both(tmp_path):
    X, y = make_data()
    state = checkpoint_of(tmp_path, mlp([3, 8, 1], "tanh"), X, y)
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    assert_refused_and_untouched(mlp([3, 8, 1], "tanh", dtype=np.float32), SGD(0.01, momentum=0.9), X32, y32,
                                 state, ["(float64)", "(float32)", "Dense(3, 8)"], epochs=6)


def test_mini_batch_checkpoint_resumed_full_batch_is_refused(tmp_path):
    X, y = make_data()
    state = checkpoint_of(tmp_path, mlp([3, 8, 1], "tanh"), X, y, batch_size=8)
    assert_refused_and_untouched(mlp([3, 8, 1], "tanh", seed=5), SGD(0.01, momentum=0.9), X, y, state,
                                 ["mini-batch run", "batch size"], epochs=6)
    # batch_size >= the number of rows is full batch too
    assert_refused_and_untouched(mlp([3, 8, 1], "tanh", seed=5), SGD(0.01, momentum=0.9), X, y, state,
                                 ["mini-batch run"], epochs=6, batch_size=len(X))


def test_full_batch_checkpoint_resumed_with_mini_batches_is_refused(tmp_path):
    X, y = make_data()
    state = checkpoint_of(tmp_path, mlp([3, 8, 1], "tanh"), X, y)
    assert_refused_and_untouched(mlp([3, 8, 1], "tanh", seed=5), SGD(0.01, momentum=0.9), X, y, state,
                                 ["full-batch run", "without a batch size"], epochs=6, batch_size=8)


def test_resume_with_fewer_epochs_than_the_checkpoint_is_refused(tmp_path):
    X, y = make_data()
    state = checkpoint_of(tmp_path, mlp([3, 8, 1], "tanh"), X, y, epochs=5)
    message = assert_refused_and_untouched(mlp([3, 8, 1], "tanh", seed=5), SGD(0.01, momentum=0.9), X, y, state,
                                           ["epoch 5", "3 epochs"], epochs=3)
    assert "total" in message


def test_checkpoint_of_another_optimizer_is_refused_and_the_model_kept(tmp_path):
    X, y = make_data()
    state = checkpoint_of(tmp_path, mlp([3, 8, 1], "tanh"), X, y)
    model = mlp([3, 8, 1], "tanh", seed=5)
    before = model.state_dict()
    with pytest.raises(CheckpointError, match="'sgd'.*'adam'"):
        fit(model, X, y, loss="mse", optimizer=Adam(0.01), epochs=6, resume=state)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------ damaged or foreign files


@pytest.fixture
def good_checkpoint(tmp_path):
    X, y = make_data()
    fit(mlp([3, 8, 1], "tanh"), X, y, loss="mse", optimizer=Adam(0.01), epochs=2, batch_size=8,
        callbacks=[CheckpointWriter(tmp_path / "good")])
    return tmp_path / "good" / FILE_NAME


def test_load_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in .*nowhere"):
        load(tmp_path / "nowhere")


def test_load_empty_folder(tmp_path):
    with pytest.raises(CheckpointError, match=f"no checkpoint in .*expected {FILE_NAME}"):
        load(tmp_path)


def test_load_a_model_file_is_refused(tmp_path):
    X, y = make_data()
    path = tmp_path / "model.safetensors"
    fit(mlp([3, 4, 1]), X, y, loss="mse", optimizer=SGD(0.01), epochs=1,
        callbacks=[ModelCheckpoint(path, save_best_only=False)])
    with pytest.raises(CheckpointError, match="not a gradloop checkpoint .*model file"):
        load(path)
    os.replace(path, tmp_path / FILE_NAME)  # a model file under the checkpoint's name
    with pytest.raises(CheckpointError, match="not a gradloop checkpoint .*model file"):
        load(tmp_path)


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -1])
def test_load_truncated_checkpoint(good_checkpoint, keep):
    data = good_checkpoint.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    good_checkpoint.write_bytes(data[:size])
    with pytest.raises(CheckpointError) as info:
        load(good_checkpoint.parent)
    assert isinstance(info.value, GradloopError) and str(good_checkpoint) in str(info.value)
    assert any(word in str(info.value) for word in ("truncated", "empty", "corrupted"))


def test_load_garbage_file(tmp_path):
    (tmp_path / FILE_NAME).write_bytes(os.urandom(300))
    with pytest.raises(CheckpointError):
        load(tmp_path)


@pytest.mark.parametrize("broken", [
    {"history": [1, 2]},  # not a dict of lists
    {"optimizer": [1]},
    {"epoch": "three"},
    {"dropout_states": None},
])
def test_load_malformed_metadata(tmp_path, broken):
    meta = {"kind": KIND, "epoch": 1, "architecture": {}, "optimizer": {"name": "sgd"}, "rng_state": None,
            "dropout_states": [], "history": {"loss": [1.0]}, "start_loss": 1.0, "lr_factor": 1.0,
            "base_lr": 0.1, **broken}
    tensors = {"model.0.W": np.zeros((1, 1))}
    meta[CHECKSUM_KEY] = content_checksum(tensors, meta)  # well signed, badly formed
    write_model_file(tmp_path / FILE_NAME, tensors, meta)
    with pytest.raises(CheckpointError, match="metadata is incomplete or malformed"):
        load(tmp_path)


def _inside(meta, tensors, epoch=3, blocks=2, weights=True):
    meta["position"] = {"epoch": epoch, "blocks": blocks, "total": 1.5, "batches": 4, "head": None,
                        "epoch_rng": meta["rng_state"]}
    if weights:
        for i, name in enumerate(["model.0.W", "model.0.b", "model.2.W", "model.2.b"]):
            tensors[f"position.start.{i}"] = tensors[name].copy()


def _layers(meta, layers):
    meta["architecture"]["layers"] = layers


@pytest.mark.parametrize("tamper, message", [
    # Declared sizes beyond the stored tensors: refused before anything is allocated.
    (lambda m, t: _layers(m, [{"type": "Dense", "in_features": 10**6, "out_features": 10**6, "bias": True}]),
     "parameters do not match its architecture"),
    (lambda m, t: _layers(m, m["architecture"]["layers"] + [{"type": "Softplus"}]), "unknown type 'Softplus'"),
    (lambda m, t: t.update({"optimizer.exp_avg.0": np.zeros(7)}), "'exp_avg' arrays do not match"),
    (lambda m, t: m.update(rng_state={"bit_generator": "MT19937", "state": 5}), "not a PCG64 state"),
    (lambda m, t: m.update(rng_state={"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}), "PCG64"),
    (lambda m, t: m.update(epoch=5), "History has 2 epochs, its epoch is 5"),
    (lambda m, t: m["history"].update(loss=["a", "b"]), "lists of numbers"),
    (lambda m, t: m.update(lr_factor=-1.0), "factor positive"),
    (lambda m, t: m["optimizer"].update(steps=-3), "steps must be a non-negative integer"),
    (lambda m, t: m["optimizer"]["hyperparameters"].update(lr="fast"), "learning rate"),
    (lambda m, t: m["optimizer"]["hyperparameters"].update(evil=1), "hyperparameters must be among"),
    (lambda m, t: m.pop(CHECKSUM_KEY), "checksum is missing"),
    # A position inside an epoch (a run from a source stopped between blocks) that cannot be the next epoch's,
    # or without the epoch's starting weights.
    (lambda m, t: _inside(m, t, epoch=5), "its position inside epoch 3 is malformed"),
    (lambda m, t: _inside(m, t, weights=False), "its position inside epoch 3 is malformed"),
    (lambda m, t: _inside(m, t, blocks=0), "its position inside epoch 3 is malformed"),
])
def test_tampered_checkpoint_with_a_valid_checksum_is_refused(good_checkpoint, tamper, message):
    tensors, meta = read_model_file(good_checkpoint)
    tamper(meta, tensors)
    if CHECKSUM_KEY in meta:
        meta[CHECKSUM_KEY] = content_checksum(tensors, meta)
    write_model_file(good_checkpoint, tensors, meta)
    model, X, y = mlp([3, 8, 1], "tanh"), *make_data()
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(CheckpointError, match=message) as info:
        fit(model, X, y, loss="mse", optimizer=Adam(0.01), epochs=4, batch_size=8, resume=load(good_checkpoint.parent))
    assert str(good_checkpoint) in str(info.value) or "checkpoint" in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.parameters()))  # nothing was loaded


# ------------------------------------------------------------ crashes during a save


@pytest.mark.parametrize("what, error", [
    ("replace", OSError(28, "No space left on device")),
    ("replace", KeyboardInterrupt()),  # the process told to stop at the worst moment
    ("fsync", OSError(5, "Input/output error")),
])
def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch, what, error):
    X, y = make_data()
    run = dict(loss="mse", batch_size=8)
    fit(mlp([3, 8, 1], "tanh"), X, y, optimizer=Adam(0.01), epochs=3, callbacks=[CheckpointWriter(tmp_path)], **run)
    before = load(tmp_path)

    def crash(*args, **kwargs):  # the temporary file's fsync comes first, then the rename
        raise error

    monkeypatch.setattr(os, what, crash)
    expected = KeyboardInterrupt if isinstance(error, KeyboardInterrupt) else GradloopError
    with pytest.raises(expected) as info:
        fit(mlp([3, 8, 1], "tanh"), X, y, optimizer=Adam(0.01), epochs=6, resume=load(tmp_path),
            callbacks=[CheckpointWriter(tmp_path)], **run)
    if expected is GradloopError:
        assert FILE_NAME in str(info.value) and "previous file is unchanged" in str(info.value)
    monkeypatch.undo()
    after = load(tmp_path)
    assert after.epoch == 3 and same_state(after, before)
    assert sorted(os.listdir(tmp_path)) == [FILE_NAME]


def test_save_into_a_missing_folder_is_refused(tmp_path, good_checkpoint):
    with pytest.raises(CheckpointError, match="does not exist"):
        save(tmp_path / "missing", load(good_checkpoint.parent))


KILLED_RUN = textwrap.dedent("""
    import sys
    import numpy as np
    from gradloop import fit
    from gradloop.checkpoint import CheckpointWriter
    from gradloop.models import mlp
    from gradloop.optimizers import Adam

    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 64))
    y = np.sin(X[:, 0]) + X[:, 1]
    fit(mlp([64, 1024, 1], "tanh", seed=0), X, y, loss="mse", optimizer=Adam(1e-3), epochs=int(sys.argv[2]),
        batch_size=16, seed=1, callbacks=[CheckpointWriter(sys.argv[1], every=1)])
""")


def test_sigkill_during_training_leaves_a_loadable_checkpoint_that_resumes_exactly(tmp_path):
    # Each epoch is mostly the checkpoint's write (about 1.5 MB with Adam's moments): a kill at a
    # random moment often lands inside a save.
    epochs, folder = 400, tmp_path / "ckpt"
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    child = subprocess.Popen([sys.executable, str(script), str(folder), str(epochs)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    path, versions, last = folder / FILE_NAME, 0, None
    try:
        deadline = time.monotonic() + 60
        while versions < 3 and child.poll() is None and time.monotonic() < deadline:
            try:
                stat = os.stat(path)
                now = (stat.st_ino, stat.st_mtime_ns)  # os.replace gives a new inode each time
                if now != last:
                    versions, last = versions + 1, now
            except FileNotFoundError:
                pass
            time.sleep(0.001)
        assert versions >= 3, child.stderr.read().decode() if child.poll() is not None else "no checkpoint in 60 s"
        time.sleep(random.uniform(0, 0.4))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(30)
        child.stderr.close()

    state = load(folder)  # whatever the moment, a complete checkpoint
    assert 1 <= state.epoch <= epochs

    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 64))
    y = np.sin(X[:, 0]) + X[:, 1]
    run = dict(loss="mse", epochs=epochs, batch_size=16, seed=1)
    whole = mlp([64, 1024, 1], "tanh", seed=0)
    reference = fit(whole, X, y, optimizer=Adam(1e-3), **run)
    fresh = mlp([64, 1024, 1], "tanh", seed=9)
    resumed = fit(fresh, X, y, optimizer=Adam(1e-3), resume=state, **run)
    assert same_weights(whole, fresh) and resumed.history == reference.history


def test_a_position_inside_an_epoch_is_read_back_with_its_starting_weights(good_checkpoint):
    tensors, meta = read_model_file(good_checkpoint)
    _inside(meta, tensors)
    meta[CHECKSUM_KEY] = content_checksum(tensors, meta)
    write_model_file(good_checkpoint, tensors, meta)
    state = load(good_checkpoint.parent)
    assert (state.epoch, state.position["epoch"], state.position["blocks"]) == (2, 3, 2)
    assert np.array_equal(state.position["start_weights"][2], tensors["model.2.W"])
    assert state.position["epoch_rng"] == state.rng_state
