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
