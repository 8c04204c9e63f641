"""The command line for whole training runs: validation, early stopping, logs, checkpoints, resume, signals."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from gradloop.checkpoint import load
from gradloop.cli import main
from gradloop.files.modelfile import read_model_file


def run(capsys, *argv):
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def blobs(tmp_path):
    """Three labelled Gaussian blobs in a CSV: a small classification problem."""
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0, 0], [3, 3, 0, 0], [0, 3, 3, 0]])
    labels = np.repeat(["cat", "dog", "eel"], 60)
    X = np.vstack([c + rng.standard_normal((60, 4)) for c in centres])
    frame = pd.DataFrame(X, columns=list("abcd")).assign(kind=labels)
    path = tmp_path / "blobs.csv"
    frame.to_csv(path, index=False)
    return path


MLP = ["--target", "kind", "--model", "mlp", "--hidden", "16", "--loss", "cross-entropy", "--optimizer", "adam",
       "--lr", "0.01", "--batch-size", "16", "--standardize", "--seed", "3"]


def test_validation_split_reports_val_loss_in_progress_and_log(blobs, tmp_path, capsys):
    log = tmp_path / "run.jsonl"
    status, out, err = run(capsys, "train", blobs, *MLP, "--epochs", "5", "--val-split", "0.25", "--log", log)
    assert status == 0 and err == ""
    assert "(36 test; 36 of the training rows held out for validation)" in out
    epochs = [json.loads(line) for line in log.read_text().splitlines() if '"final"' not in line]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4, 5]
    assert all(r["val_loss"] > 0 for r in epochs)
    for r in epochs:
        assert f"val loss {r['val_loss']:.6g}" in out


def test_csv_log_has_one_row_per_epoch(blobs, tmp_path, capsys):
    log = tmp_path / "run.csv"
    status, _, _ = run(capsys, "train", blobs, *MLP, "--epochs", "4", "--val-split", "0.2", "--log", log)
    assert status == 0
    rows = list(csv.DictReader(log.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert {"loss", "new_loss", "val_loss", "lr", "grad_norm", "update_ratio", "seconds"} <= set(rows[0])
    assert all(float(r["val_loss"]) > 0 and float(r["update_ratio"]) > 0 for r in rows)


def test_early_stopping_stops_and_says_so(tmp_path, capsys):
    # Pure noise: the validation loss cannot keep improving, so patience 2 ends the run early.
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.standard_normal((120, 6)), columns=list("abcdef")).assign(
        y=rng.standard_normal(120))
    data = tmp_path / "noise.csv"
    frame.to_csv(data, index=False)
    status, out, _ = run(capsys, "train", data, "--target", "y", "--model", "mlp", "--hidden", "64",
                         "--optimizer", "adam", "--lr", "0.01", "--batch-size", "8", "--epochs", "200",
                         "--val-split", "0.3", "--early-stopping", "2")
    assert status == 0
    assert "early stopping at epoch" in out and "val_loss has not improved for 2 epochs" in out
    trained = int(out.split("Trained ")[1].split()[0])
    assert trained < 200


def _tensors(path):
    return read_model_file(path)[0]


def test_resumed_run_equals_an_uninterrupted_one_bit_for_bit(blobs, tmp_path, capsys):
    straight, resumed, ckpt = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "ck"
    assert run(capsys, "train", blobs, *MLP, "--epochs", "9", "--val-split", "0.2", "--out", straight)[0] == 0
    assert run(capsys, "train", blobs, *MLP, "--epochs", "4", "--val-split", "0.2", "--checkpoint", ckpt)[0] == 0
    assert load(ckpt).epoch == 4
    status, out, _ = run(capsys, "train", blobs, *MLP, "--epochs", "9", "--val-split", "0.2", "--resume", ckpt,
                         "--out", resumed)
    assert status == 0 and "resuming at epoch 4" in out
    a, b = _tensors(straight), _tensors(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name


def test_checkpoint_every_n_epochs(blobs, tmp_path, capsys):
    ckpt = tmp_path / "ck"
    assert run(capsys, "train", blobs, *MLP, "--epochs", "5", "--checkpoint", ckpt, "--checkpoint-every", "2")[0] == 0
    assert load(ckpt).epoch == 5  # every 2 epochs, and always at the end
    assert len(load(ckpt).history["loss"]) == 5


@pytest.mark.parametrize("change, option", [(["--hidden", "32"], "--hidden"), (["--batch-size", "8"], "--batch-size"),
                                            (["--optimizer", "sgd"], "--optimizer")])
def test_resume_refuses_other_options(blobs, tmp_path, capsys, change, option):
    ckpt = tmp_path / "ck"
    assert run(capsys, "train", blobs, *MLP, "--epochs", "2", "--checkpoint", ckpt)[0] == 0
    before = (ckpt / "checkpoint.safetensors").read_bytes()
    args = list(MLP)
    i = args.index(change[0])
    args[i + 1] = change[1]
    status, _, err = run(capsys, "train", blobs, *args, "--epochs", "4", "--resume", ckpt, "--checkpoint", ckpt)
    assert status == 2 and err.count("\n") == 1
    assert f"the checkpoint was trained with {option}" in err
    assert (ckpt / "checkpoint.safetensors").read_bytes() == before


@pytest.mark.parametrize("what, make, message", [
    ("missing folder", lambda d: None, "no checkpoint in"),
    ("empty folder", lambda d: d.mkdir(), "no checkpoint in"),
    ("garbage", lambda d: (d.mkdir(), (d / "checkpoint.safetensors").write_bytes(b"\x00garbage" * 10)), "ck"),
])
def test_resume_from_a_bad_checkpoint_is_one_line(blobs, tmp_path, capsys, what, make, message):
    ckpt = tmp_path / "ck"
    make(ckpt)
    status, _, err = run(capsys, "train", blobs, *MLP, "--epochs", "2", "--resume", ckpt)
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert message in err


def test_resume_refuses_a_model_file(blobs, tmp_path, capsys):
    model = tmp_path / "m.safetensors"
    assert run(capsys, "train", blobs, *MLP, "--epochs", "1", "--out", model)[0] == 0
    status, _, err = run(capsys, "train", blobs, *MLP, "--epochs", "2", "--resume", model)
    assert status == 2 and "is not a gradloop checkpoint" in err


def test_quiet_prints_nothing(blobs, tmp_path, capsys):
    status, out, err = run(capsys, "train", blobs, *MLP, "--epochs", "2", "--quiet", "--out", tmp_path / "m.st")
    assert status == 0 and out == "" and err == ""
    assert (tmp_path / "m.st").exists()


# ---------------------------------------------------------------- signals, through a real process
def _start_long_run(blobs, ckpt, out):
    command = [sys.executable, "-m", "gradloop.cli", "train", str(blobs), *MLP, "--hidden", "256",
               "--batch-size", "2", "--epochs", "100000", "--checkpoint", str(ckpt), "--out", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_for(path, deadline_s=60):
    deadline = time.monotonic() + deadline_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_leaves_a_complete_checkpoint_and_exits(blobs, tmp_path, sig, status):
    ckpt, out = tmp_path / "ck", tmp_path / "m.safetensors"
    process = _start_long_run(blobs, ckpt, out)
    _wait_for(ckpt / "checkpoint.safetensors")
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"interrupted by {signal.Signals(sig).name}" in lines[0]
    assert f"--resume {ckpt}" in lines[0]
    state = load(ckpt)
    assert state.epoch >= 1 and len(state.history["loss"]) == state.epoch
    assert not out.exists()  # an interrupted run saves no model
    assert [p.name for p in ckpt.iterdir()] == ["checkpoint.safetensors"]  # no temporary files left


def test_sigkill_at_any_moment_leaves_the_last_complete_checkpoint(blobs, tmp_path):
    ckpt = tmp_path / "ck"
    process = _start_long_run(blobs, ckpt, tmp_path / "m.st")
    _wait_for(ckpt / "checkpoint.safetensors")
    first = load(ckpt).epoch
    rng = np.random.default_rng(0)
    time.sleep(float(rng.uniform(0.05, 0.4)))
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    state = load(ckpt)  # complete, never half-written
    assert state.epoch >= first
    # At most the temporary file of a killed write, and the dead run's lock (the next run takes it over).
    leftovers = [p.name for p in ckpt.iterdir() if p.name not in ("checkpoint.safetensors", ".gradloop.lock")]
    assert all(name.endswith(".tmp") for name in leftovers)


def test_checkpoint_after_early_stopping_holds_the_last_epoch_not_the_restored_best(tmp_path, capsys):
    # EarlyStopping restores the best weights when training ends; the checkpoint written then
    # must still be the last epoch's state, or a resumed run would continue from the wrong weights.
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.standard_normal((120, 6)), columns=list("abcdef")).assign(y=rng.standard_normal(120))
    data, ckpt, model = tmp_path / "noise.csv", tmp_path / "ck", tmp_path / "m.safetensors"
    frame.to_csv(data, index=False)
    status, out, _ = run(capsys, "train", data, "--target", "y", "--model", "mlp", "--hidden", "64",
                         "--optimizer", "adam", "--lr", "0.01", "--batch-size", "8", "--epochs", "200",
                         "--val-split", "0.3", "--early-stopping", "2", "--checkpoint", ckpt,
                         "--checkpoint-every", "1000", "--out", model)
    assert status == 0 and "keeps epoch" in out
    trained = int(out.split("Trained ")[1].split()[0])
    state = load(ckpt)
    assert state.epoch == trained and len(state.history["loss"]) == trained
    best = _tensors(model)
    assert any(not np.array_equal(state.parameters[name], best[name]) for name in best)


def test_resumed_run_with_early_stopping_stops_where_an_unbroken_one_does(tmp_path, capsys):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.standard_normal((120, 6)), columns=list("abcdef")).assign(y=rng.standard_normal(120))
    data, ckpt = tmp_path / "noise.csv", tmp_path / "ck"
    frame.to_csv(data, index=False)
    common = ["train", data, "--target", "y", "--model", "mlp", "--hidden", "64", "--optimizer", "adam",
              "--lr", "0.01", "--batch-size", "8", "--val-split", "0.3", "--early-stopping", "4"]
    status, out, _ = run(capsys, *common, "--epochs", "200", "--out", tmp_path / "a.st")
    unbroken = int(out.split("Trained ")[1].split()[0])
    best = int(out.split("keeps epoch ")[1].split("'")[0])
    assert status == 0 and best + 2 < unbroken
    # Checkpoint between the best epoch and the stop: the resumed run must remember that best.
    assert run(capsys, *common, "--epochs", str(best + 2), "--checkpoint", ckpt)[0] == 0
    status, out, _ = run(capsys, *common, "--epochs", "200", "--resume", ckpt, "--out", tmp_path / "b.st")
    assert status == 0 and int(out.split("Trained ")[1].split()[0]) == unbroken
    a, b = _tensors(tmp_path / "a.st"), _tensors(tmp_path / "b.st")
    assert all(np.array_equal(a[name], b[name]) for name in a)


def test_a_new_run_clears_temporary_files_left_by_a_killed_write(blobs, tmp_path, capsys):
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    stale = ckpt / ".checkpoint.safetensors.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert run(capsys, "train", blobs, *MLP, "--epochs", "1", "--checkpoint", ckpt)[0] == 0
    assert [p.name for p in ckpt.iterdir()] == ["checkpoint.safetensors"]
