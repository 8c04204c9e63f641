"""The train command's options (gradloop.cli.options): what is refused before anything runs, in one line
with nothing written, and what a resumed run takes from its checkpoint."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest


@pytest.fixture
def folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.standard_normal((90, 2)), columns=["a", "b"])
    frame["y"] = frame.a - 2 * frame.b
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_parquet(tmp_path / "d.parquet", row_group_size=10)  # 9 blocks out of core
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _hashes():
    return {p: hashlib.sha256(open(p, "rb").read()).hexdigest()
            for p in (os.path.join(d, f) for d, _, fs in os.walk(".") for f in fs)}


@pytest.mark.parametrize("argv,message", [
    (["d.csv", "--hidden", "8"], "--hidden and --activation describe a network's hidden layers"),
    (["d.csv", "--activation", "tanh"], "add --model mlp"),
    (["d.csv", "--explain", "0"], "--explain 0: this run trains epochs 1 to 100; explain one of them"),
    (["d.csv", "--epochs", "5", "--explain", "6"], "--explain 6: this run trains epochs 1 to 5"),
    (["d.parquet", "--out-of-core", "--test-size", "0.95"],
     "--test-size 0.95 of 9 blocks leaves no training block; lower --test-size or add data"),
    (["--features", "a"], "train: the following arguments are required: DATA (or --resume DIR to continue a "),
])
def test_refused_in_one_line_before_anything_is_written(cli, folder, argv, message):
    before = _hashes()
    status, out, err = cli("train", *argv, "--target", "y", "--out", "m.safetensors", "--log", "run.jsonl",
                           "--checkpoint", "ck")
    assert status == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert err.count("gradloop: error:") == 1 and "gradloop train:" not in err
    assert _hashes() == before and not os.path.exists("ck")


def test_a_resumed_run_prints_again_after_a_quiet_first_leg(cli, folder):
    status, out, err = cli("train", "d.csv", "--target", "y", "--epochs", "3", "--checkpoint", "ck", "--quiet")
    assert status == 0 and out == ""
    status, out, err = cli("train", "--resume", "ck", "--epochs", "5")
    assert status == 0, err
    assert "resuming at epoch 3" in out and "Trained 5 epochs" in out
    status, out, err = cli("train", "--resume", "ck", "--epochs", "6", "--explain", "3")
    assert status == 2 and "--explain 3: this run trains epochs 6 to 6" in err  # epoch 3 ran before the checkpoint


def test_version_and_python_dash_m(cli):
    with pytest.raises(SystemExit) as exit_:
        cli("-V")
    assert exit_.value.code == 0
    result = subprocess.run([sys.executable, "-m", "gradloop", "--version"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("gradloop ")


@pytest.mark.parametrize("flags", [["--out-of-core"], []])
def test_a_path_that_exists_is_read_as_named_never_as_a_pattern(cli, folder, flags):
    # 'd[1].parquet' as a glob would match 'd1.parquet', another file: it must be read itself.
    frame = pd.read_csv("d.csv")
    frame.iloc[:30].to_parquet("d[1].parquet", row_group_size=10)
    frame.iloc[30:].to_parquet("d1.parquet", row_group_size=10)
    os.mkdir("runs[a]")
    frame.iloc[:40].to_parquet(os.path.join("runs[a]", "part.parquet"))
    status, out, err = cli("train", "d[1].parquet", "--target", "y", "--epochs", "2", "--test-size", "0", *flags)
    assert status == 0, err
    assert "30 training rows" in out
    status, out, err = cli("train", "runs[a]", "--target", "y", "--epochs", "2", "--test-size", "0")
    assert status == 0, err
    assert "40 training rows" in out
    status, out, err = cli("train", "d?.parquet", "--target", "y", "--epochs", "2", "--test-size", "0")
    assert status == 0 and "60 training rows" in out  # nothing of that name: a glob, matching d1.parquet


@pytest.mark.parametrize("flags", [[], ["--out-of-core"]])
@pytest.mark.parametrize("content,argv,message", [
    ("a,y\n1,cat\n2,cat\n3,cat\n", ["--loss", "cross-entropy"],
     "--loss cross-entropy: 'y' holds one class ('cat'); a classifier needs at least two"),
    ("a,name,y\n1,x,3\n2,y,4\n3,z,1\n", [],
     "column 'name': 'x' is not a number; to leave that column out, name the features with --features"),
    (",a,y\n0,1,2\n1,2,4\n2,3,6\n", [], "has no name in the header: most likely the index pandas wrote"),
])
def test_data_a_model_cannot_use_is_refused_with_its_remedy(cli, folder, flags, content, argv, message):
    with open("odd.csv", "w") as fh:
        fh.write(content)
    before = _hashes()
    status, out, err = cli("train", "odd.csv", "--target", "y", "--test-size", "0", "--out", "m.safetensors",
                           *argv, *flags)
    assert status == 2 and err.count("\n") == 1 and message in err, err
    assert _hashes() == before


def test_an_option_of_another_command_is_named_as_such(cli, folder):
    assert cli("train", "d.csv", "--target", "y", "--epochs", "1", "--out", "m.safetensors")[0] == 0
    status, out, err = cli("evaluate", "m.safetensors", "d.csv", "--epochs", "3")
    assert status == 2 and "--epochs (an option of gradloop train)" in err and "did you mean '--epochs'" not in err


@pytest.mark.parametrize("spec,message", [
    ("tcp://", "expected tcp://HOST:PORT (a host and a port, nothing after them)"),
    ("tcp://[::1", "not an address (Invalid IPv6 URL)"),
    ("tcp://127.0.0.1:8786/path", "nothing after them"),
    ("tcp://127.0.0.1", "a host and a port"),
    ("tcp://127.0.0.1:port", "not an address"),
    ("local:two", "the number of workers must be a positive integer"),
    ("udp://127.0.0.1:1", "expected local, local:WORKERS or tcp://HOST:PORT"),
])
def test_a_malformed_dask_address_is_refused_before_anything_starts(cli, folder, spec, message):
    os.mkdir("ck")
    before = _hashes()
    status, out, err = cli("train", "d.csv", "--target", "y", "--dask", spec, "--checkpoint", "ck", "--out", "m.json")
    assert status == 2 and err.count("\n") == 1 and message in err and "Traceback" not in err, err
    assert _hashes() == before and os.listdir("ck") == []


def test_more_local_workers_than_cores_are_capped_in_a_line(monkeypatch):
    from gradloop.cli import cluster

    monkeypatch.setattr(cluster.os, "cpu_count", lambda: 2)
    assert cluster.parse_dask("local:64") == ("local", 2) and cluster.parse_dask("local:1") == ("local", 1)


def test_resuming_inside_an_epoch_with_epochs_that_would_not_finish_it_is_refused(cli, folder, monkeypatch):
    import gradloop.cli.train as train_module
    from gradloop.callbacks import Callback

    class StopInEpochTwo(Callback):  # as Ctrl-C between two blocks does
        wants_records, wants_blocks = False, True

        def on_block_end(self, position, trainer):
            trainer.stop_training = trainer.stop_training or position["epoch"] == 2

    monkeypatch.setattr("gradloop.data.files.CSV_CHUNK_ROWS", 30)  # 3 blocks
    real = train_module.run_callbacks
    monkeypatch.setattr(train_module, "run_callbacks", lambda *a: [StopInEpochTwo(), *real(*a)])
    common = ["--target", "y", "--out-of-core", "--batch-size", "10", "--lr", "0.01", "--test-size", "0"]
    assert cli("train", "d.csv", *common, "--epochs", "3", "--checkpoint", "ck")[0] == 0
    monkeypatch.setattr(train_module, "run_callbacks", real)
    before = _hashes()
    status, out, err = cli("train", "--resume", "ck", "--epochs", "1", "--out", "m.safetensors")
    assert status == 2 and err.count("\n") == 1
    assert "--epochs 1: the checkpoint stopped inside epoch 2; give --epochs 2 or more to finish it" in err
    assert _hashes() == before
    status, out, err = cli("train", "--resume", "ck", "--epochs", "2", "--out", "m.safetensors")
    assert status == 0 and "Trained 2 epochs" in out, err
