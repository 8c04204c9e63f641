"""Trust, the run side: resume continues the run (options, data, log, final loss), checkpoint folders are locked.

Real processes are killed with SIGKILL at random moments and resumed; the log they leave must equal an
unbroken run's, epoch for epoch (every field but the wall-clock seconds), and the weights bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from gradloop.checkpoint import LOCK_NAME, load
from gradloop.files.modelfile import read_model_file

COMMAND = [sys.executable, "-m", "gradloop.cli"]


@pytest.fixture
def blobs(tmp_path):
    """Three labelled blobs, 600 rows: a classification problem with some seconds of epochs in it."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0, 0], [2, 2, 0, 0], [0, 2, 2, 0]])
    X = np.vstack([c + rng.standard_normal((200, 4)) for c in centres])
    frame = pd.DataFrame(X, columns=list("abcd")).assign(kind=np.repeat(["cat", "dog", "eel"], 200))
    path = tmp_path / "blobs.csv"
    frame.to_csv(path, index=False)
    return path


MLP = ["--target", "kind", "--model", "mlp", "--hidden", "32", "--loss", "cross-entropy", "--optimizer", "adam",
       "--lr", "0.003", "--batch-size", "8", "--standardize", "--seed", "1", "--val-split", "0.2",
       "--early-stopping", "1000"]


def epochs_of(log):
    """The log's lines as dicts, wall-clock seconds left out (the one field two runs never share)."""
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for line in lines:
        line.pop("seconds", None)
    return lines


def same_model(a, b):
    ta, tb = read_model_file(a)[0], read_model_file(b)[0]
    return ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def final_loss(out):
    return float(re.search(r"final training loss (\S+)", out)[1])


def test_resume_takes_every_option_from_the_checkpoint(blobs, tmp_path, cli):
    whole, ck = tmp_path / "whole", tmp_path / "ck"
    whole.mkdir()
    status, out_whole, _ = cli("train", blobs, *MLP, "--epochs", "12", "--log", whole / "run.jsonl",
                               "--out", whole / "m.st")
    assert status == 0
    assert cli("train", blobs, *MLP, "--epochs", "5", "--log", tmp_path / "run.jsonl", "--checkpoint", ck,
               "--out", tmp_path / "m.st")[0] == 0
    status, out, err = cli("train", "--resume", ck, "--epochs", "12")  # nothing else: the run's own
    assert status == 0, err
    assert same_model(whole / "m.st", tmp_path / "m.st")
    assert epochs_of(tmp_path / "run.jsonl") == epochs_of(whole / "run.jsonl")
    assert final_loss(out) == final_loss(out_whole)


@pytest.mark.parametrize("spelling", ["relative", "absolute", "symlink"])
def test_the_same_data_under_another_spelling_is_accepted(blobs, tmp_path, cli, monkeypatch, spelling):
    ck = tmp_path / "ck"
    assert cli("train", blobs, *MLP, "--epochs", "2", "--checkpoint", ck)[0] == 0
    monkeypatch.chdir(tmp_path)
    os.symlink(blobs, tmp_path / "link.csv")
    data = {"relative": "./blobs.csv", "absolute": str(blobs), "symlink": "link.csv"}[spelling]
    status, out, err = cli("train", data, "--resume", "ck", "--epochs", "3")
    assert status == 0, err
    assert load(ck).epoch == 3


def test_other_data_of_the_same_shape_under_the_same_path_is_refused(blobs, tmp_path, cli):
    ck = tmp_path / "ck"
    assert cli("train", blobs, *MLP, "--epochs", "2", "--checkpoint", ck)[0] == 0
    frame = pd.read_csv(blobs)
    frame["a"] = frame["a"] + 1e-9  # the same shape, the same path, other numbers
    frame.to_csv(blobs, index=False)
    before = (ck / "checkpoint.safetensors").read_bytes()
    status, _, err = cli("train", "--resume", ck, "--epochs", "4")
    assert status == 2 and "not the data the checkpoint was trained on" in err and err.count("\n") == 1
    assert (ck / "checkpoint.safetensors").read_bytes() == before


def test_final_training_loss_is_the_kept_weights_loss_with_or_without_log_resumed_or_not(blobs, tmp_path, cli):
    common = ["train", blobs, *MLP, "--epochs", "6"]
    plain = final_loss(cli(*common)[1])
    logged = final_loss(cli(*common, "--log", tmp_path / "a.jsonl")[1])
    assert cli("train", blobs, *MLP, "--epochs", "3", "--checkpoint", tmp_path / "ck")[0] == 0
    resumed = final_loss(cli("train", "--resume", tmp_path / "ck", "--epochs", "6")[1])
    assert plain == logged == resumed


def test_an_early_stopped_runs_final_loss_is_its_best_epochs_on_the_training_rows(tmp_path, cli):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.standard_normal((80, 3)), columns=list("abc")).assign(y=rng.standard_normal(80))
    frame.to_csv(tmp_path / "noise.csv", index=False)
    status, out, _ = cli("train", tmp_path / "noise.csv", "--target", "y", "--model", "mlp", "--hidden", "64",
                         "--optimizer", "adam", "--lr", "0.05", "--batch-size", "4", "--epochs", "60",
                         "--early-stopping", "3", "--test-size", "0", "--out", tmp_path / "m.st")
    assert status == 0 and "keeps epoch" in out
    _, evaluated, _ = cli("evaluate", tmp_path / "m.st", tmp_path / "noise.csv", "--json")
    assert final_loss(out) == pytest.approx(json.loads(evaluated)["mse"], rel=1e-5)  # printed to 6 digits


# ---------------------------------------------------------------- kill and resume
def _start(argv, tmp_path):
    return subprocess.Popen(COMMAND + [str(a) for a in argv], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait_for_epoch(ck, epoch, process, timeout=60.0):
    """Wait until the checkpoint in ``ck`` is at ``epoch`` or later (or the process ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if load(ck).epoch >= epoch:
                return True
        except Exception:  # not written yet
            pass
        time.sleep(0.01)
    return False


def test_kill_and_resume_leaves_the_log_of_an_unbroken_run(blobs, tmp_path, cli):
    epochs = "150"
    whole = tmp_path / "whole"
    whole.mkdir()
    assert cli("train", blobs, *MLP, "--epochs", epochs, "--log", whole / "run.jsonl",
               "--out", whole / "m.st")[0] == 0
    log, model, ck = tmp_path / "run.jsonl", tmp_path / "m.st", tmp_path / "ck"
    rng = np.random.default_rng(7)
    # Checkpoints every 3 epochs: a killed run has usually logged epochs its checkpoint does not hold.
    process = _start(["train", blobs, *MLP, "--epochs", epochs, "--log", log, "--out", model, "--checkpoint", ck,
                      "--checkpoint-every", "3"], tmp_path)
    kills = 0
    while kills < 3:  # three SIGKILLs at random moments, each followed by a resume
        reached = load(ck).epoch if (ck / "checkpoint.safetensors").exists() else 0
        if not _wait_for_epoch(ck, reached + 3, process):
            break  # the run finished first (a fast machine): the kills so far are checked below
        time.sleep(float(rng.uniform(0.0, 0.05)))
        process.kill()
        process.wait(timeout=30)
        kills += 1
        process = _start(["train", "--resume", ck], tmp_path)  # everything else from the checkpoint
    assert kills >= 2
    assert process.wait(timeout=120) == 0, process.stderr.read()
    assert epochs_of(log) == epochs_of(whole / "run.jsonl")
    assert same_model(model, whole / "m.st")
    assert not (ck / LOCK_NAME).exists()


@pytest.mark.parametrize("logger", ["jsonl", "csv"])
def test_a_resumed_logger_cuts_the_epochs_after_the_checkpoint_and_appends(tmp_path, logger):
    from gradloop import fit
    from gradloop.callbacks import CSVLogger, JSONLinesLogger
    from gradloop.checkpoint import CheckpointWriter
    from gradloop.models import linear
    from gradloop.optimizers import SGD

    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    y = X @ np.array([1.0, 2.0])
    path = tmp_path / f"run.{logger}"
    make = JSONLinesLogger if logger == "jsonl" else CSVLogger

    def train(epochs, callbacks, resume=None):
        model = linear(2)
        fit(model, X, y, loss="mse", optimizer=SGD(0.05), epochs=epochs, callbacks=callbacks, resume=resume)

    train(8, [make(tmp_path / f"whole.{logger}")])
    train(3, [make(path), CheckpointWriter(tmp_path / "ck")])
    with open(path, "a") as fh:  # a killed run's epochs 4 and 5, written after its last checkpoint
        fh.write(path.read_text().splitlines(keepends=True)[-1].replace("3", "4", 1))
        if logger == "jsonl":
            fh.write('{"final": true, "task": "regression"}\n')
    train(8, [make(path)], resume=load(tmp_path / "ck"))

    def rows(p):
        if logger == "jsonl":
            lines = [json.loads(line) for line in p.read_text().splitlines()]
            return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]
        return [line.split(",")[:-1] for line in p.read_text().splitlines()]  # seconds is the last column

    assert rows(path) == rows(tmp_path / f"whole.{logger}")


# ---------------------------------------------------------------- one run per checkpoint folder
def test_a_second_run_on_a_locked_folder_is_refused_and_disturbs_nothing(blobs, tmp_path, cli):
    ck = tmp_path / "ck"
    first = _start(["train", blobs, *MLP, "--epochs", "400", "--checkpoint", ck], tmp_path)
    try:
        assert _wait_for_epoch(ck, 1, first), first.stderr.read()
        stale = ck / ".checkpoint.safetensors.live.tmp"  # stands for the first run's write in progress
        stale.write_bytes(b"being written")
        status, _, err = cli("train", blobs, *MLP, "--epochs", "3", "--checkpoint", ck)
        assert status == 2 and err.count("\n") == 1
        assert f"in use by another gradloop run (process {first.pid})" in err
        assert stale.read_bytes() == b"being written"  # never cleaned from under a live run
        status, _, err = cli("train", "--resume", ck, "--epochs", "500")
        assert status == 2 and "in use by another gradloop run" in err
        assert first.poll() is None  # undisturbed
    finally:
        first.send_signal(signal.SIGTERM)  # finishes the epoch, checkpoints, exits 143
        assert first.wait(timeout=60) == 143
    assert load(ck).epoch >= 1 and not (ck / LOCK_NAME).exists()


def test_the_lock_of_a_dead_run_is_taken_over(blobs, tmp_path, cli):
    ck = tmp_path / "ck"
    first = _start(["train", blobs, *MLP, "--epochs", "400", "--checkpoint", ck], tmp_path)
    assert _wait_for_epoch(ck, 1, first), first.stderr.read()
    first.kill()
    first.wait(timeout=30)
    assert (ck / LOCK_NAME).exists()  # left behind by the killed process
    reached = load(ck).epoch
    status, _, err = cli("train", "--resume", ck, "--epochs", str(reached + 2))
    assert status == 0, err
    assert load(ck).epoch == reached + 2 and not (ck / LOCK_NAME).exists()


def test_a_checkpoint_written_from_python_needs_data_and_target_on_the_command_line(blobs, tmp_path, cli):
    from gradloop import fit
    from gradloop.checkpoint import CheckpointWriter
    from gradloop.models import linear
    from gradloop.optimizers import SGD

    X = pd.read_csv(blobs)[list("abcd")].to_numpy()
    fit(linear(4), X, X.sum(axis=1), loss="mse", optimizer=SGD(0.01), epochs=2,
        callbacks=[CheckpointWriter(tmp_path / "ck")])
    status, _, err = cli("train", "--resume", tmp_path / "ck", "--epochs", "3")
    assert status == 2 and "give DATA and --target" in err and err.count("\n") == 1
