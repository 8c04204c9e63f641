"""What gradloop promises: no output destroys an input, bad input is one line, files from elsewhere are checked.

The table drives the command line with hostile and odd inputs. Each case must exit 2 with exactly one
stderr line (no traceback) naming what is wrong, and leave every file of the working folder as it was:
the SHA-256 of each file, and the list of files and folders, before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradloop.cli import main
from gradloop.files.modelfile import CHECKSUM_KEY, content_checksum, read_model_file, write_model_file


def tree_digest(folder):
    """{relative path: SHA-256 of the file, or 'folder'} for everything under ``folder`` (links as links)."""
    folder = Path(folder)
    digest = {}
    for path in sorted(folder.rglob("*")):
        name = str(path.relative_to(folder))
        if path.is_symlink():
            digest[name] = "link -> " + os.readlink(path)
        elif path.is_dir():
            digest[name] = "folder"
        else:
            digest[name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def _resign(path, edit):
    """Edit a model file's metadata and give it a valid checksum again (a careful forger's file)."""
    tensors, meta = read_model_file(path)
    edit(meta, tensors)
    meta[CHECKSUM_KEY] = content_checksum(tensors, meta)
    write_model_file(path, tensors, meta)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A working folder with data, models, a log and a checkpoint; copied fresh for every case."""
    root = tmp_path_factory.mktemp("trust")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    frame = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "y": 3 * X[:, 0] - X[:, 1] + 0.5})
    frame.to_csv(root / "ok.csv", index=False)
    frame.assign(y=frame.y[::-1].to_numpy()).to_csv(root / "other.csv", index=False)  # same shape, other rows
    (root / "labels.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 3},{'cat dog eel'.split()[i % 3]}\n"
                                                        for i in range(30)))
    (root / "dup_target.csv").write_text("a,y,y\n1,2,3\n4,5,6\n")
    (root / "dup_feature.csv").write_text("a,a,y\n1,2,3\n4,5,6\n")
    (root / "overflow.csv").write_text("a,b,y\n1e308,1,2\n-1.7e308,2,3\n1.5e308,3,1\n")
    (root / "bad\nname.csv").write_text("a,b,y\n1,x,2\n")
    (root / "no_target.csv").write_text("a,b\n1,2\n3,4\n")
    (root / "sub").mkdir()
    os.symlink("ok.csv", root / "link.csv")
    os.link(root / "ok.csv", root / "hard.csv")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["train", "ok.csv", "--target", "y", "--epochs", "30", "--quiet", "--out", "model.safetensors",
                     "--log", "run.jsonl", "--checkpoint", "ck"]) == 0
        assert main(["train", "labels.csv", "--target", "y", "--model", "mlp", "--hidden", "4", "--loss",
                     "cross-entropy", "--lr", "0.1", "--epochs", "3", "--quiet", "--out", "clf.safetensors"]) == 0
    finally:
        os.chdir(cwd)
    shutil.copy(root / "model.safetensors", root / "huge_layer.safetensors")
    _resign(root / "huge_layer.safetensors", lambda m, t: m["architecture"]["layers"][0].update(
        in_features=10**6, out_features=10**6))
    shutil.copy(root / "model.safetensors", root / "unsigned.safetensors")
    tensors, meta = read_model_file(root / "unsigned.safetensors")
    del meta[CHECKSUM_KEY]
    write_model_file(root / "unsigned.safetensors", tensors, meta)
    shutil.copy(root / "clf.safetensors", root / "classes.safetensors")
    _resign(root / "classes.safetensors", lambda m, t: m.update(classes=["cat", "dog"]))
    lines = (root / "run.jsonl").read_text().splitlines()
    (root / "inf.jsonl").write_text(lines[0].replace('"loss": ', '"loss": 1e999, "x": ', 1) + "\n")
    (root / "nan.jsonl").write_text(lines[0].replace('"loss": ', '"loss": NaN, "x": ', 1) + "\n")
    (root / "bigint.jsonl").write_text(lines[0].replace('"epoch": 1', '"epoch": 1' + "0" * 400, 1) + "\n")
    return root


@pytest.fixture
def ws(template, tmp_path, monkeypatch):
    folder = tmp_path / "ws"
    shutil.copytree(template, folder, symlinks=True)
    (folder / "hard.csv").unlink()  # copytree copies a hard link as a file of its own
    os.link(folder / "ok.csv", folder / "hard.csv")
    monkeypatch.chdir(folder)
    return folder


T = ["train", "ok.csv", "--target", "y", "--epochs", "2"]
P = ["predict", "model.safetensors", "ok.csv"]
R = ["report", "run.jsonl"]
MLP = ["--model", "mlp"]
# (id, argv, what the one stderr line must name). "{ws}" is the working folder's absolute path.
CASES = [
    # 1. No output ever destroys an input or another output.
    ("out is the data", T + ["--out", "ok.csv"], ["--out ok.csv", "DATA file itself"]),
    ("out is ./data", T + ["--out", "./ok.csv"], ["--out ./ok.csv", "DATA file"]),
    ("out is the data, absolute", T + ["--out", "{ws}/ok.csv"], ["DATA file"]),
    ("out is the data, via ..", T + ["--out", "sub/../ok.csv"], ["DATA file"]),
    ("out is a symlink to the data", T + ["--out", "link.csv"], ["--out link.csv", "DATA file"]),
    ("out is a hard link to the data", T + ["--out", "hard.csv"], ["--out hard.csv", "DATA file"]),
    ("data is a symlink, out the target", ["train", "link.csv", "--target", "y", "--out", "ok.csv"], ["DATA file"]),
    ("log is the data", T + ["--log", "ok.csv"], ["--log ok.csv", "DATA file"]),
    ("log is a symlink to the data", T + ["--log", "link.csv"], ["--log", "DATA file"]),
    ("out and log the same", T + ["--out", "m.st", "--log", "m.st"], ["--log m.st", "--out m.st"]),
    ("out and log the same, spelled apart", T + ["--out", "m.st", "--log", "./m.st"], ["--log", "--out"]),
    ("checkpoint is the data", T + ["--checkpoint", "ok.csv"], ["--checkpoint ok.csv", "is a file"]),
    ("checkpoint is the out", T + ["--checkpoint", "ckx", "--out", "ckx"], ["--checkpoint", "--out"]),
    ("log inside the checkpoint folder", T + ["--checkpoint", "ck", "--log", "ck/run.jsonl"],
     ["--log ck/run.jsonl", "inside", "--checkpoint"]),
    ("out inside the checkpoint folder", T + ["--checkpoint", "ck", "--out", "ck/m.safetensors"],
     ["--out", "inside", "--checkpoint"]),
    ("log inside a new checkpoint folder", T + ["--checkpoint", "new", "--log", "new/run.jsonl"], ["inside"]),
    ("log is a folder", T + ["--log", "sub"], ["--log sub", "folder"]),
    ("out is a folder", T + ["--out", "sub"], ["--out sub", "folder"]),
    ("out is /dev/null", T + ["--out", "/dev/null"], ["--out /dev/null", "not a regular file"]),
    ("log is /dev/null", T + ["--log", "/dev/null"], ["--log /dev/null", "not a regular file"]),
    ("out is empty", T + ["--out", ""], ["--out", "empty path"]),
    ("out in a missing folder", T + ["--out", "nowhere/m.st"], ["--out", "nowhere", "does not exist"]),
    ("resume: out is the checkpoint file", ["train", "--resume", "ck", "--checkpoint", "ck2", "--out",
                                             "ck/checkpoint.safetensors"], ["--out", "--resume checkpoint itself"]),
    ("resume: log is the checkpoint file", ["train", "--resume", "ck", "--log", "ck/checkpoint.safetensors"],
     ["--log", "inside", "--checkpoint"]),
    ("resume: log is the checkpoint folder", ["train", "--resume", "ck", "--log", "ck"], ["--log ck", "folder"]),
    ("resume: out is the data", ["train", "--resume", "ck", "--out", "ok.csv"], ["--out ok.csv", "DATA file"]),
    ("predict: out is the data", P + ["--out", "ok.csv"], ["--out ok.csv", "DATA file"]),
    ("predict: out is the model", P + ["--out", "model.safetensors"], ["--out", "MODEL file itself"]),
    ("predict: out is a symlink to the data", P + ["--out", "link.csv"], ["DATA file"]),
    ("predict: out is /dev/null", P + ["--out", "/dev/null"], ["not a regular file"]),
    ("predict: out is a folder", P + ["--out", "sub"], ["folder"]),
    ("report: out is the log", R + ["-o", "run.jsonl"], ["-o run.jsonl", "log itself"]),
    ("report: out is /dev/null", R + ["-o", "/dev/null"], ["not a regular file"]),
    ("report: png is a file", R + ["--png", "ok.csv"], ["--png ok.csv", "is a file"]),
    ("report: out inside the png folder", R + ["-o", "plots/r.html", "--png", "plots"], ["-o", "inside", "--png"]),
    ("report: out is the png folder", R + ["-o", "r.html", "--png", "r.html"], ["--png", "-o"]),
    # 2. predict never needs the target; evaluate does, and says so.
    ("evaluate without a target column", ["evaluate", "model.safetensors", "no_target.csv"],
     ["no_target.csv", "no target column 'y'", "gradloop predict"]),
    ("predict: a repeated column name", ["predict", "model.safetensors", "dup_target.csv"], ["'y' appears twice"]),
    # 3. Data is read as written.
    ("repeated target name", ["train", "dup_target.csv", "--target", "y"],
     ["dup_target.csv", "'y' appears twice", "columns 2 and 3"]),
    ("repeated feature name", ["train", "dup_feature.csv", "--target", "y"], ["'a' appears twice", "columns 1 and 2"]),
    ("overflow under --standardize", ["train", "overflow.csv", "--target", "y", "--standardize"],
     ["overflow.csv", "column 'a'", "overflows"]),
    ("overflow without --standardize", ["train", "overflow.csv", "--target", "y"],
     ["overflow.csv", "column 'a'", "too large"]),
    ("a file name with a newline", ["train", "bad\nname.csv", "--target", "y"], ["bad\\nname.csv", "'x'"]),
    # 5. Every option checked once, at the boundary.
    ("seed -1", T + ["--seed", "-1"], ["--seed", "'-1'", "non-negative integer"]),
    ("seed 10**20", T + ["--seed", str(10**20)], ["--seed", "at most"]),
    ("round-to 10**20", T + ["--round-to", str(10**20)], ["--round-to", "[0, 15]"]),
    ("round-to -1", T + ["--round-to", "-1"], ["--round-to", "'-1'"]),
    ("hidden 10**12", T + MLP + ["--hidden", str(10**12)], ["--hidden", "GiB", "more than this machine"]),
    ("hidden 10**5,10**5", T + MLP + ["--hidden", "100000,100000"], ["--hidden", "GiB"]),
    ("hidden 0", T + MLP + ["--hidden", "4,0"], ["--hidden", "'4,0'"]),
    ("epochs 10**10", T + ["--epochs", str(10**10)], ["--epochs", "at most 1,000,000,000"]),
    ("trace 0", T + ["--trace", "0"], ["--trace", "'0'", "positive integer"]),
    ("checkpoint-every 0", T + ["--checkpoint-every", "0"], ["--checkpoint-every", "'0'"]),
    ("early-stopping -1", T + ["--early-stopping", "-1"], ["--early-stopping", "'-1'"]),
    ("val-split 1", T + ["--val-split", "1"], ["--val-split", "(0, 1)"]),
    ("val-split 0", T + ["--val-split", "0"], ["--val-split", "(0, 1)"]),
    ("val-split nan", T + ["--val-split", "nan"], ["--val-split", "'nan'"]),
    ("weight-decay inf", T + ["--weight-decay", "inf"], ["--weight-decay", "'inf'"]),
    ("clip-norm -1", T + ["--clip-norm", "-1"], ["--clip-norm", "'-1'", "positive"]),
    ("test-size -0.1", T + ["--test-size", "-0.1"], ["--test-size", "[0, 1)"]),
    ("batch-size -5", T + ["--batch-size", "-5"], ["--batch-size", "'-5'"]),
    ("lr inf", T + ["--lr", "inf"], ["--lr", "'inf'"]),
    ("no data and no resume", ["train", "--target", "y"], ["DATA", "required", "--resume"]),
    # 4. Resume continues the run: what would change its arithmetic is refused.
    ("resume: another architecture", ["train", "--resume", "ck", "--model", "mlp"], ["trained with --model"]),
    ("resume: another loss", ["train", "--resume", "ck", "--loss", "mae"], ["trained with --loss 'mse'"]),
    ("resume: another seed", ["train", "--resume", "ck", "--seed", "5"], ["trained with --seed 0"]),
    ("resume: another lr", ["train", "--resume", "ck", "--lr", "0.5"], ["--lr"]),
    ("resume: other data of the same shape", ["train", "other.csv", "--resume", "ck"],
     ["other.csv", "not the data the checkpoint was trained on"]),
    ("resume: no checkpoint", ["train", "--resume", "nothing"], ["no checkpoint in nothing"]),
    ("resume: a data file as checkpoint", ["train", "--resume", "ok.csv"], ["ok.csv"]),
    ("resume: a model file as checkpoint", ["train", "--resume", "model.safetensors"], ["not a gradloop checkpoint"]),
    # 6. Files from elsewhere are validated whole.
    ("model declares a huge layer", ["evaluate", "huge_layer.safetensors", "ok.csv"],
     ["huge_layer.safetensors", "declares parameters"]),
    ("model without a checksum", ["predict", "unsigned.safetensors", "ok.csv"], ["no SHA-256 checksum"]),
    ("classifier with too few classes", ["predict", "classes.safetensors", "labels.csv"],
     ["2 classes", "the architecture has 3"]),
    ("log with 1e999", ["report", "inf.jsonl"], ["inf.jsonl", "line 1", "does not fit in a float"]),
    ("log with NaN", ["report", "nan.jsonl"], ["nan.jsonl", "NaN is not strict JSON"]),
    ("log with a 400-digit number", ["report", "bigint.jsonl"], ["bigint.jsonl", "does not fit"]),
]


@pytest.mark.parametrize("argv, needles", [pytest.param(a, n, id=i) for i, a, n in CASES])
def test_hostile_input_is_one_line_exit_2_and_changes_no_file(ws, cli, argv, needles):
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    if "--resume" in argv:  # a checkpoint of this folder's run (the template's names the template's files)
        shutil.rmtree(ws / "ck")
        assert cli("train", "ok.csv", "--target", "y", "--epochs", "5", "--quiet", "--log", "run.jsonl",
                   "--checkpoint", "ck")[0] == 0
    before = tree_digest(ws)
    status, _, err = cli(*argv)
    assert status == 2, err
    assert err.startswith("gradloop: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert tree_digest(ws) == before


def test_the_table_has_at_least_sixty_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
