"""The command line as people type it: help when called bare, the closest name for a typo, help
text for every option, one error prefix."""

import subprocess
import sys

import pytest

from gradloop.cli.main import build_parser


def test_gradloop_alone_prints_the_help(cli):
    status, out, err = cli()
    assert status == 0 and out.startswith("usage: gradloop") and "train" in out and err == ""


@pytest.mark.parametrize("argv, suggestion", [
    (["trian", "data.csv"], "unknown 'trian' (did you mean 'train'?); known: train, evaluate, predict, report, explain, demo"),
    (["train", "data.csv", "--target", "y", "--standarize"], "--standarize (did you mean '--standardize'?)"),
    (["train", "data.csv", "--target", "y", "--loss", "cross-entropi"],
     "unknown 'cross-entropi' (did you mean 'cross-entropy'?)"),
])
def test_a_typo_gets_the_closest_name_in_one_line_with_one_prefix(cli, argv, suggestion):
    status, out, err = cli(*argv)
    assert status == 2 and suggestion in err
    assert err.count("\n") == 1 and err.startswith("gradloop: error: ") and err.count("gradloop:") == 1


def test_every_option_and_argument_has_help_text():
    parser = build_parser()
    missing = [(name, action.dest) for name, command in [("gradloop", parser), *parser.commands.items()]
               for action in command._actions if not action.help and action.dest != "command"]
    assert missing == []


def test_the_estimators_without_scikit_learn_say_how_to_install_it():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "try:\n    import gradloop.sklearn\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "gradloop.sklearn needs scikit-learn: pip install 'gradloop[sklearn]'" in out.stdout, out.stderr


def test_logs_keep_heads_of_large_tensors_unless_asked_and_the_report_reads_both(cli, tmp_path):
    import json

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 20))
    pd.DataFrame(X, columns=[f"x{j}" for j in range(20)]).assign(y=X[:, 0] > 0).to_csv(tmp_path / "d.csv",
                                                                                          index=False)
    common = ["train", tmp_path / "d.csv", "--target", "y", "--model", "mlp", "--hidden", "32", "--loss",
              "cross-entropy", "--epochs", "2", "--quiet"]
    assert cli(*common, "--log", tmp_path / "heads.jsonl")[0] == 0
    assert cli(*common, "--log", tmp_path / "whole.jsonl", "--log-tensors")[0] == 0
    heads, whole = (json.loads(open(tmp_path / f"{n}.jsonl").readline()) for n in ("heads", "whole"))
    W = np.array(whole["weights"]["0.W"])
    assert W.shape == (20, 32)
    summary = heads["weights"]["0.W"]
    assert summary["shape"] == [20, 32] and summary["norm"] == np.linalg.norm(W)
    assert summary["head"] == W.reshape(-1)[:5].tolist()
    assert heads["weights"]["2.b"] == whole["weights"]["2.b"]  # small arrays stay whole
    assert len(open(tmp_path / "heads.jsonl").readline()) < len(open(tmp_path / "whole.jsonl").readline()) / 5
    for name in ("heads", "whole"):
        assert cli("report", tmp_path / f"{name}.jsonl", "-o", tmp_path / f"{name}.html")[0] == 0
