"""Tests for gradloop.data.sources: mini-batches over a source (block order, reproducibility, resume between blocks) and its threads."""

import numpy as np
import pytest

from gradloop.data import ArraySource, CSVSource
from gradloop.loop import fit
from gradloop.models import mlp
from gradloop.optimizers import SGD
from test_sources import D, N, _write_csv
from test_sources import data  # noqa: F401 (the module's data set, a fixture)


# ------------------------------------------------------------------ mini-batches over a source

def test_source_batches_without_shuffle_are_the_in_memory_batches_bit_for_bit(data):
    X, y = data
    reference, blocked = mlp([D, 8, 1], "tanh"), mlp([D, 8, 1], "tanh")
    h1 = fit(reference, X, y, loss="mse", optimizer=SGD(0.01), epochs=3, batch_size=32, shuffle=False)
    h2 = fit(blocked, ArraySource(X, y, block_rows=256), None, loss="mse", optimizer=SGD(0.01), epochs=3,
             batch_size=32, shuffle=False)
    assert h2.history["loss"] == h1.history["loss"]
    for a, b in zip(blocked.parameters(), reference.parameters()):
        assert np.array_equal(a, b)


def test_source_batches_are_reproducible_by_seed_and_differ_across_seeds(data):
    X, y = data

    def run(seed):
        model = mlp([D, 8, 1], "relu", seed=0)
        history = fit(model, ArraySource(X, y, block_rows=500), None, loss="mse", optimizer=SGD(0.01), epochs=2,
                      batch_size=64, seed=seed, keep_records=True)
        return history, [p.copy() for p in model.parameters()]

    (h1, p1), (h2, p2), (h3, p3) = run(1), run(1), run(2)
    assert h1.history["loss"] == h2.history["loss"] and all(np.array_equal(a, b) for a, b in zip(p1, p2))
    assert h1.history["loss"] != h3.history["loss"] and not np.array_equal(p1[0], p3[0])
    record = h1.records[-1]
    assert record.batches == (N // 500) * -(-500 // 64)  # a batch never spans two blocks
    assert np.isfinite(h1.history["new_loss"]).all()


def test_block_order_trains_digits_as_well_as_a_global_shuffle():
    """Blocks in random order with rows shuffled inside them (not a global shuffle) reach the
    accuracy of the in-memory run on held-out digits, within noise."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = (digits.data - digits.data.mean(0)) / (digits.data.std(0) + 1e-9)
    y = digits.target
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1400], order[1400:]
    accuracy = {}
    for kind in ("in memory", "blocks"):
        model = mlp([64, 32, 10], "relu", seed=0)
        data = (X[train], y[train]) if kind == "in memory" else (ArraySource(X[train], y[train], block_rows=100), None)
        fit(model, *data, loss="cross-entropy", optimizer=SGD(0.05), epochs=15, batch_size=32, seed=3)
        accuracy[kind] = float((model.predict_raw(X[test]).argmax(axis=1) == y[test]).mean())
    assert accuracy["in memory"] > 0.9 and abs(accuracy["blocks"] - accuracy["in memory"]) <= 0.03, accuracy


@pytest.mark.parametrize("batch_size", [None, 64])
def test_a_run_from_a_source_resumes_bit_for_bit(data, tmp_path, batch_size):
    from gradloop.checkpoint import CheckpointWriter, load

    X, y = data
    source = ArraySource(X, y, block_rows=500)
    run = dict(loss="mse", batch_size=batch_size, seed=4)
    whole = mlp([D, 8, 1], "tanh", seed=1)
    reference = fit(whole, source, None, optimizer=SGD(0.01), epochs=7, **run)
    fit(mlp([D, 8, 1], "tanh", seed=1), source, None, optimizer=SGD(0.01), epochs=3,
        callbacks=[CheckpointWriter(tmp_path)], **run)
    fresh = mlp([D, 8, 1], "tanh", seed=50)
    resumed = fit(fresh, source, None, optimizer=SGD(0.01), epochs=7, resume=load(tmp_path), **run)
    assert resumed.history == reference.history
    for a, b in zip(fresh.parameters(), whole.parameters()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", ["array", "csv"])
def test_a_source_run_stopped_between_two_blocks_resumes_there_bit_for_bit(data, tmp_path, kind):
    from gradloop.callbacks import Callback
    from gradloop.checkpoint import CheckpointWriter, load
    from gradloop.optimizers import Adam

    X, y = data
    if kind == "csv":  # read in file order only: the blocks before the position are read and passed over
        _write_csv(tmp_path / "d.csv", X, y)
        source = CSVSource(tmp_path / "d.csv", "y", chunk_rows=250)
    else:
        source = ArraySource(X, y, block_rows=250)
    assert source.n_blocks == 12

    class StopInEpochTwo(Callback):  # as Ctrl-C would: during a batch of epoch 2's fifth block
        wants_batches, wants_records = True, False

        def on_batch_end(self, batch, trainer):
            if batch.epoch == 2 and batch.batch == 18:
                trainer.stop_training = True

    class Written(Callback):  # after the writer at each block end: what the checkpoint on disk holds
        wants_records = False

        def __init__(self):
            self.seen = []

        def on_block_end(self, position, trainer):
            on_disk = load(tmp_path / "ck").position if (tmp_path / "ck" / "checkpoint.safetensors").exists() else None
            self.seen.append((position["epoch"], position["blocks"], on_disk))

    def model():
        return mlp([D, 6, 1], "tanh", seed=1, dropout=0.2)

    run = dict(loss="mse", batch_size=64, seed=4, epochs=3)
    whole = model()
    reference = fit(whole, source, None, optimizer=Adam(0.01), **run)
    written = Written()
    stopped = fit(model(), source, None, optimizer=Adam(0.01), **run,
                  callbacks=[StopInEpochTwo(), CheckpointWriter(tmp_path / "ck", every_blocks=3), written])
    assert stopped.epochs_run == 1 and stopped.stopped_inside["epoch"] == 2
    assert stopped.stopped_inside["blocks"] == 5  # 4 batches a block: batch 18 is in the fifth
    # Every third block's end is on disk at once; a stop writes where it stopped.
    assert [(e, b) for e, b, p in written.seen if p is not None and (p["epoch"], p["blocks"]) == (e, b)] == \
        [(e, b) for e, b, _ in written.seen if b % 3 == 0]
    state = load(tmp_path / "ck")
    assert (state.epoch, state.position["epoch"], state.position["blocks"]) == (1, 2, 5)
    fresh = model()
    resumed = fit(fresh, source, None, optimizer=Adam(0.01), resume=state, **run)
    assert resumed.history == reference.history
    for a, b in zip(fresh.parameters(), whole.parameters()):
        assert np.array_equal(a, b)


def test_block_threads_leave_the_process_blas_threads_as_they_were():
    """The one-BLAS-thread limit is process-wide: threads entering and leaving it at once must not leave
    the process on one thread (its later products would differ in the last bits)."""
    import threading

    from threadpoolctl import threadpool_info

    from gradloop.fast.executors import _ONE_BLAS_THREAD, _one_blas_thread

    with _one_blas_thread():  # the libraries it limits: those loaded at its first use, NumPy's BLAS among them
        pass
    limited = {lib["filepath"] for lib in _ONE_BLAS_THREAD._controller.info() if lib["user_api"] == "blas"}

    def blas_threads():
        return [p["num_threads"] for p in threadpool_info() if p["filepath"] in limited]

    before = blas_threads()
    with _one_blas_thread():
        assert set(blas_threads()) == {1}

    def work():
        for _ in range(300):
            with _one_blas_thread():
                np.ones((20, 20)) @ np.ones((20, 20))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limited and blas_threads() == before


def test_the_excess_over_the_optimum_is_never_negative_and_the_optimum_is_named():
    from gradloop.sums import Gap, Optimum

    optimum = Optimum(np.array([[1.0]]), None, 0.5)
    below = Gap.between(0.5 - 1e-17, np.array([[1.0]]), None, optimum)  # rounding under the optimum
    assert below.excess_loss == 0.0 and below.summary().endswith(": at the optimum")
    above = Gap.between(0.6, np.array([[1.1]]), None, optimum)
    assert above.excess_loss == pytest.approx(0.1) and "at the optimum" not in above.summary()
