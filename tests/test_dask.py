"""Training on Dask: the same weights and losses, bit for bit, whatever the number of workers.

Clusters start here on 127.0.0.1 and close at the end of each test; they are real
worker processes (``processes=True``), so chunks travel between processes as they
would between machines.
"""

import os
import signal

import numpy as np
import pytest

import gradloop
from gradloop.callbacks import Callback
from gradloop.data import ArraySource, DaskSource
from gradloop.loop import fit
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD

da = pytest.importorskip("dask.array", reason="Dask is the dask extra: pip install 'gradloop[dask]'")
distributed = pytest.importorskip("distributed", reason="distributed is the dask extra")

N, D, CHUNK = 12_000, 5, 1_500


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((N, D)) * np.arange(1, D + 1)
    y = X @ rng.standard_normal(D) + 0.5 + 0.1 * rng.standard_normal(N)
    return X, y


def _cluster(workers):
    return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                    dashboard_address="127.0.0.1:0", silence_logs=50)


def _dask(X, y):
    return da.from_array(X, chunks=(CHUNK, D)), da.from_array(y, chunks=CHUNK)


def _runs(X, y):
    """A linear run per kernel and a network's run: (weights, losses) each."""
    out = {}
    for gradient in ("stream", "gram"):
        run = gradloop.fit_linear(X, y, np.zeros(D), 0.02, 25, bias=0.0, gradient=gradient)
        out[gradient] = ([run.weights, run.bias], run.history.history["loss"])
    source = X if isinstance(X, ArraySource) else None
    for kind, dropout in (("layers", 0.0), ("dropout", 0.3)):
        net = mlp([D, 6, 6, 1], "tanh", dropout=dropout, seed=2)
        history = fit(net, X, None if source is not None else y, loss="mse", optimizer=SGD(0.02), epochs=8)
        out[kind] = ([p.copy() for p in net.parameters()], history.history["loss"])
    # Validation blocks held out by the seed: measured on the workers every epoch.
    net = mlp([D, 6, 1], "tanh", seed=3)
    history = fit(net, X, None if source is not None else y, loss="mse", optimizer=SGD(0.02), epochs=5,
                  validation_split=0.25, seed=7)
    out["validation"] = ([p.copy() for p in net.parameters()], history.history["loss"] + history.history["val_loss"])
    return out


def _same_bits(a, b):
    for kind in a:
        (wa, la), (wb, lb) = a[kind], b[kind]
        assert la == lb, kind
        assert all(np.array_equal(x, z) for x, z in zip(wa, wb)), kind


def test_one_two_and_four_workers_give_the_bits_of_the_local_block_run(data):
    X, y = data
    local = _runs(ArraySource(X, y, block_rows=CHUNK), None)
    Xd, yd = _dask(X, y)
    _same_bits(_runs(Xd, yd), local)  # no client: Dask's threaded scheduler
    for workers in (1, 2, 4):
        with _cluster(workers) as cluster, distributed.Client(cluster):
            _same_bits(_runs(Xd, yd), local)
    in_memory = gradloop.fit_linear(X, y, np.zeros(D), 0.02, 25, bias=0.0, gradient="stream")
    assert np.allclose(local["stream"][0][0], in_memory.weights, rtol=1e-12, atol=0)
    # Dropout's masks, drawn per chunk on the workers, are the in-memory run's masks (other masks
    # would move the weights far more than the order of the sums does).
    net = mlp([D, 6, 6, 1], "tanh", dropout=0.3, seed=2)
    fit(net, X, y, loss="mse", optimizer=SGD(0.02), epochs=8)
    for a, b in zip(net.parameters(), local["dropout"][0]):
        assert np.allclose(b, a, rtol=1e-10, atol=1e-13)


class _KillAWorker(Callback):
    """Kills one worker process (SIGKILL) when epoch ``at`` ends."""

    def __init__(self, client, at):
        self.client, self.at, self.killed = client, at, None

    def on_epoch_end(self, record, trainer):
        if trainer.epoch == self.at:
            pids = self.client.run(os.getpid)
            self.killed = sorted(pids.values())[0]
            os.kill(self.killed, signal.SIGKILL)


@pytest.mark.parametrize("weights_travel", ["inside each task", "as a task of their own"])
def test_a_worker_killed_mid_training_changes_no_bit(data, monkeypatch, weights_travel):
    if weights_travel == "as a task of their own":
        monkeypatch.setattr("gradloop.fast.executors.EMBED_BYTES", 0)
    X, y = data
    Xd, yd = _dask(X, y)
    with _cluster(2) as cluster, distributed.Client(cluster) as client:
        undisturbed = linear(D, 1)
        fit(undisturbed, Xd, yd, loss="mse", optimizer=SGD(0.02), epochs=8, gradient="stream")
        disturbed, killer = linear(D, 1), _KillAWorker(client, at=3)
        history = fit(disturbed, Xd, yd, loss="mse", optimizer=SGD(0.02), epochs=8, gradient="stream",
                      callbacks=[killer])
        assert killer.killed is not None and history.epochs_run == 8
    for a, b in zip(disturbed.parameters(), undisturbed.parameters()):
        assert np.array_equal(a, b)


def test_a_dask_dataframe_trains_by_column_name(data):
    import dask.dataframe as dd
    import pandas as pd

    X, y = data
    frame = pd.DataFrame(X, columns=[f"f{j}" for j in range(D)]).assign(target=y)
    source = DaskSource.from_dataframe(dd.from_pandas(frame, npartitions=4), "target")
    assert source.feature_names == [f"f{j}" for j in range(D)] and source.n_rows == N
    run = gradloop.fit_linear(source, None, np.zeros(D), "auto", 40, bias=0.0)
    ref = gradloop.fit_linear(X, y, np.zeros(D), "auto", 40, bias=0.0)
    assert np.allclose(run.weights, ref.weights, rtol=1e-12, atol=1e-14)
    assert np.isclose(run.optimum.loss, ref.optimum.loss, rtol=1e-10)


def test_the_gram_mode_runs_its_epochs_with_no_tasks(data):
    X, y = data
    Xd, yd = _dask(X, y)
    chunks = N // CHUNK
    with _cluster(1) as cluster, distributed.Client(cluster) as client:
        counts = []
        for epochs in (3, 300):
            with distributed.get_task_stream(client) as tasks:
                gradloop.fit_linear(Xd, yd, np.zeros(D), 0.02, epochs, bias=0.0, gradient="gram")
            counts.append(sum(_task_name(t["key"]) == "_run_block" for t in tasks.data))
    # One pass of per-chunk Gram matrices, whatever the epochs: every epoch runs on the client.
    assert counts == [chunks, chunks]


def _task_name(key):
    return (key[0] if isinstance(key, tuple) else key).split("-", 1)[0]


def test_a_lost_scheduler_ends_the_run_in_one_line_and_its_checkpoint_resumes(cli, tmp_path, monkeypatch):
    """The scheduler closes after epoch 3: one line, exit 2, the checkpoint of epoch 3 kept; resuming it
    out of core (the same row groups, so the same bits) gives the unbroken run's model."""
    import dask
    import pandas as pd

    import gradloop.cli.train as train_module
    from gradloop.files.bundle import ModelBundle

    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.standard_normal((3000, 3)), columns=["a", "b", "c"])
    frame["y"] = frame.to_numpy() @ [1.0, -2.0, 0.5] + 0.1 * rng.standard_normal(3000)
    frame.to_parquet(tmp_path / "d.parquet", row_group_size=500)
    monkeypatch.chdir(tmp_path)
    common = ["d.parquet", "--target", "y", "--epochs", "8", "--gradient", "stream", "--test-size", "0"]
    assert cli("train", *common, "--out-of-core", "--out", "whole.safetensors")[0] == 0

    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}), _cluster(1) as cluster:
        class CloseTheScheduler(Callback):
            wants_records = False

            def on_train_begin(self, trainer):
                pass

            def on_epoch_end(self, record, trainer):
                if trainer.epoch == 3:
                    cluster.sync(cluster.scheduler.close)

            def on_train_end(self, history, trainer):
                pass

        callbacks = train_module.run_callbacks
        monkeypatch.setattr(train_module, "run_callbacks", lambda *a: callbacks(*a) + [CloseTheScheduler()])
        status, out, err = cli("train", *common, "--dask", cluster.scheduler_address, "--checkpoint", "ck",
                               "--out", "never.safetensors")
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "the Dask scheduler or a worker could not be reached" in err and "continue with --resume ck" in err
    assert not (tmp_path / "never.safetensors").exists()
    monkeypatch.setattr(train_module, "run_callbacks", callbacks)
    status, out, err = cli("train", "--resume", "ck", "--out-of-core", "--out", "resumed.safetensors")
    assert status == 0, err
    assert "resuming at epoch 3" in out
    whole, resumed = ModelBundle.load("whole.safetensors"), ModelBundle.load("resumed.safetensors")
    for a, b in zip(whole.model.parameters(), resumed.model.parameters()):
        assert np.array_equal(a, b)


def test_ctrl_c_during_a_dask_run_closes_the_cluster_it_started(tmp_path):
    """SIGINT to `gradloop train --dask local:1`: the epoch ends, the run exits 130, and every worker
    process the command started is gone."""
    import subprocess
    import sys
    import time

    import pandas as pd
    import psutil

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.standard_normal((2000, 3)), columns=["a", "b", "c"]).assign(y=rng.standard_normal(2000))
    frame.to_parquet(tmp_path / "d.parquet", row_group_size=500)
    command = [sys.executable, "-m", "gradloop.cli", "train", "d.parquet", "--target", "y", "--epochs", "100000",
               "--gradient", "stream", "--dask", "local:1", "--trace", "1"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:  # training has started once the report prints an epoch
            if line.startswith("Epoch 2:"):
                break
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "the cluster's worker processes"
        process.send_signal(signal.SIGINT)
        process.stdout.read()
        status = process.wait(timeout=60)
        err = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
    assert status == 130 and "interrupted by SIGINT" in err, err
    deadline = time.time() + 20
    while any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children) and time.time() < deadline:
        time.sleep(0.2)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
