"""The ``gradloop`` command: the parser, the dispatch to each command, and the one-line errors.

Every user error becomes one line on stderr and exit status 2 (divergence: 3),
with no traceback, and no file written or overwritten: inputs are validated and
training finishes before anything is saved, and saving is atomic. One exception:
a run that diverges after its first epoch leaves its ``--log`` with the epochs
before the divergence (the message says so), the evidence of what went wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys

import numpy as np

from .. import datasets
from ..constraints import option_type
from ..errors import ConfigError, DivergenceError, GradloopError
from ..fast.kernels import GRADIENT_MODES
from ..layers import ACTIVATIONS
from ..losses import LOSSES
from ..optimizers import OPTIMIZERS, SCHEDULES
from ..version import __version__
from .commands import cmd_evaluate, cmd_explain, cmd_predict, cmd_report
from .options import resolve
from .train import train_command

EXIT_ERROR, EXIT_DIVERGED = 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the project's error format), exit 2.

    The line has one ``gradloop: error:`` prefix (added where errors are printed), names the
    help to read, and suggests the closest name for a mistyped command or option.
    """

    def error(self, message):
        # argparse says "invalid choice: 'x' (choose from 'a', 'b')"; gradloop says what it says for
        # every unknown name: "unknown 'x'; known: a, b", and the closest one.
        choice = re.fullmatch(r"(argument [^:]+): invalid choice: (.*?) \(choose from (.*)\)", message)
        if choice:
            known = [name.strip(" '\"") for name in choice[3].split(",")]
            message = f"{choice[1]}: unknown {choice[2]}{_closest(choice[2].strip(chr(39)), known)}; " \
                      f"known: {', '.join(known)}"
        elif message.startswith("unrecognized arguments: "):
            commands = getattr(self, "commands", {})
            takes = {name: {o for a in p._actions for o in a.option_strings} for name, p in commands.items()}
            options = sorted({o for a in self._actions for o in a.option_strings}.union(*takes.values()))
            guesses = [f"{word}{_taken_by(word, takes) or _closest(word, options)}"
                       for word in message.split(": ", 1)[1].split() if word.startswith("--")]
            message = "unrecognized arguments: " + (", ".join(guesses) or message.split(": ", 1)[1])
        raise ConfigError(f"{message} (see {self.prog} --help)")


def _taken_by(option, takes):
    """`` (an option of gradloop train)`` for an option that other commands take (never a "did you mean"
    of the option itself), or nothing; ``takes``: {command: its options}."""
    names = [name for name, options in takes.items() if option.split("=", 1)[0] in options]
    return f" (an option of {' and '.join(f'gradloop {n}' for n in names)})" if names else ""


def _closest(word, names):
    """`` (did you mean 'x'?)`` for the known name nearest to a mistyped one, or nothing."""
    match = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _model_and_data(command, data_help):
    """The MODEL and DATA arguments of the commands that read a saved model."""
    command.add_argument("model", help="a model file saved by gradloop train --out")
    command.add_argument("data", help=data_help)


def _hidden(text):
    units = option_type("units")
    try:
        return [units(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None


def build_parser():
    parser = _Parser(prog="gradloop", description="A glass-box training loop: every number, every epoch.")
    parser.add_argument("-V", "--version", action="version", version=f"gradloop {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parser.commands = sub.choices  # a mistyped option is compared with every command's options

    train = sub.add_parser("train", help="train a model on a data file")
    _run_options(train)
    _model_options(train)
    _other_commands(sub)
    return parser


def _run_options(train):
    """train's options for the data, the run, its files and its resumption."""
    train.add_argument("data", nargs="?", help="CSV (with a header), Parquet, .npy or .npz file, or sklearn:NAME for "
                                    "scikit-learn's bundled diabetes, digits, iris, wine, breast_cancer")
    train.add_argument("--target", help="name of the target column (required unless --resume)")
    train.add_argument("--features", help="comma-separated feature columns (default: every other column)")
    train.add_argument("--lr", type=option_type("lr"),
                       help="learning rate, 'auto' (linear model with MSE: 1/L) or 'find' (a short sweep "
                            "suggests one; the run then starts from the untouched model); default auto for the "
                            "linear model with sgd, else 0.01 (sgd) or 0.001 (adam)")
    train.add_argument("--epochs", type=option_type("epochs"), help="number of epochs in all (default 100)")
    train.add_argument("--standardize", action="store_true", default=None,
                       help="scale features to mean 0, std 1 (fitted on the training rows)")
    train.add_argument("--test-size", type=option_type("test_size"),
                       help="fraction of rows held out for testing (default 0.2; 0 trains on every row)")
    train.add_argument("--seed", type=option_type("seed"), help="seed of the split, initial weights and batches")
    train.add_argument("--trace", nargs="?", type=option_type("every"), const=1, metavar="EVERY",
                       help="print the chapter's per-epoch report, every EVERY epochs (default 1)")
    train.add_argument("--round-to", type=option_type("round_to"), metavar="N",
                       help="round gradients and weights to N decimals each epoch, as the chapter does")
    train.add_argument("--log", metavar="RUN.jsonl",
                       help="write every epoch's record as a JSON line (or a CSV row, for a .csv name)")
    train.add_argument("--report", metavar="RUN.html",
                       help="write the HTML report when training starts and rewrite it every few seconds while "
                            "it runs (open it in a browser: it reloads itself); the final page is the one "
                            "gradloop report draws from the --log")
    train.add_argument("--log-tensors", action="store_true", default=None,
                       help="write every gradient and weight whole in the --log JSON lines (without it, arrays "
                            "of more than 64 entries are written as their shape, norm and first entries)")
    train.add_argument("--val-split", type=option_type("validation_split"), metavar="F",
                       help="hold out this fraction of the training rows for validation (by --seed; "
                            "stratified for classifiers): val loss every epoch")
    train.add_argument("--early-stopping", type=option_type("patience"), metavar="PATIENCE",
                       help="stop when the validation loss (training loss without --val-split) has not "
                            "improved for PATIENCE epochs, and keep the best epoch's weights")
    train.add_argument("--checkpoint", metavar="DIR",
                       help="save the whole run (model, optimizer, generator, history) in DIR for --resume")
    train.add_argument("--checkpoint-every", type=option_type("checkpoint_every"), metavar="N",
                       help="checkpoint every N epochs (default 1), and always at the end")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run checkpointed in DIR with its own options and data; only "
                            "--epochs (the total), --early-stopping, output paths and verbosity may change")
    train.add_argument("--quiet", action="store_true", default=None, help="print nothing but errors")
    train.add_argument("--out", metavar="MODEL", help="save the trained model (safetensors + JSON metadata)")


def _model_options(train):
    """train's options for the model, its optimization, the glass box and where the arithmetic runs."""
    train.add_argument("--model", choices=("linear", "mlp"),
                       help="linear (the chapter's model, default) or mlp (a network of --hidden layers)")
    train.add_argument("--hidden", type=_hidden, help="hidden layer sizes of the MLP, e.g. 64,32")
    train.add_argument("--activation", choices=list(ACTIVATIONS), help=f"MLP activation: {', '.join(ACTIVATIONS)}")
    train.add_argument("--loss", choices=list(LOSSES),
                       help=f"loss: {', '.join(LOSSES)} (bce and cross-entropy classify)")
    train.add_argument("--optimizer", choices=list(OPTIMIZERS), help=f"optimizer: {', '.join(OPTIMIZERS)}")
    train.add_argument("--batch-size", type=option_type("batch_size"),
                       help="rows per step (default: the full batch, the chapter's mode)")
    train.add_argument("--weight-decay", type=option_type("weight_decay"),
                       help="L2 weight decay of the optimizer (AdamW: decoupled); default 0")
    train.add_argument("--schedule", choices=list(SCHEDULES), help=f"learning-rate schedule: {', '.join(SCHEDULES)}")
    train.add_argument("--clip-norm", type=option_type("clip_norm"), help="clip the global gradient norm")
    train.add_argument("--dtype", choices=("float64", "float32"),
                       help="precision of the arithmetic: float64 (default, the chapter's numbers) or float32")
    train.add_argument("--explain", type=option_type("epochs"), metavar="EPOCH",
                       help="print the explanation of that epoch's step, line by line with its numbers (the "
                            "chapter's for the linear model; layer by layer, on the epoch's first batch, for a "
                            "network)")
    train.add_argument("--diagnose", action="store_true", default=None,
                       help="print each diagnostic finding (dead units, saturation, a stalled or oscillating "
                            "loss, a learning rate above the stable bound, unscaled features) with its remedy "
                            "when it appears; without it, one summary line at the end if there is any")
    train.add_argument("--check-gradients", action="store_true", default=None,
                       help="before the first update, check every layer's backward against central "
                            "differences of its forward (on up to 256 training rows) and stop if one is wrong")
    train.add_argument("--out-of-core", action="store_true", default=None,
                       help="read DATA block by block from disk, never whole (Parquet row groups, CSV chunks, "
                            "memory-mapped .npy); automatic for a folder or glob of Parquet files and for files "
                            "larger than a quarter of the memory")
    train.add_argument("--dask", metavar="local[:WORKERS]|tcp://HOST:PORT",
                       help="train on a Dask cluster: start one on this machine (127.0.0.1) with WORKERS worker "
                            "processes, or connect to a running scheduler (needs pip install 'gradloop[dask]')")
    train.add_argument("--gradient", choices=list(GRADIENT_MODES),
                       help="full-batch gradient executor for the linear model with MSE: gram (X^T X once, "
                            "then O(d^2) per epoch), stream (one compiled pass over X per epoch), fused or "
                            "layers (the layers' arithmetic, with or without the layer calls), "
                            "or auto (default: by cost)")


def _other_commands(sub):
    """evaluate, predict, report, explain and demo, beside train."""
    evaluate = sub.add_parser("evaluate", help="metrics of a saved model on a data file")
    _model_and_data(evaluate, "a data file as for train, with the target column")
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")
    evaluate.add_argument("--out-of-core", action="store_true",
                          help="read DATA block by block (automatic for a Parquet folder or glob, or a file "
                               "larger than a quarter of the memory); a classifier's confusion matrix too")

    predict = sub.add_parser("predict", help="one prediction per row of a data file")
    _model_and_data(predict, "a data file as for train (the target column is not needed)")
    predict.add_argument("--out", metavar="CSV", help="write a CSV file instead of printing")
    predict.add_argument("--proba", action="store_true", help="class probabilities (classifiers)")
    predict.add_argument("--out-of-core", action="store_true",
                         help="read DATA and write the predictions block by block (automatic for a Parquet "
                              "folder or glob, or a file larger than a quarter of the memory)")

    report = sub.add_parser("report", help="an HTML page (and PNG plots) of a training log")
    report.add_argument("log", help="a JSON-lines log from train --log, or a CSV with epoch and loss columns")
    report.add_argument("-o", "--out", metavar="HTML",
                        help="the HTML report to write (default: the log's name with .html, unless --png is given)")
    report.add_argument("--png", metavar="DIR", help="write every plot as a PNG file into DIR (created if missing)")

    explain = sub.add_parser("explain", help="one training step of a saved model, layer by layer, with the "
                                             "numbers of one row")
    _model_and_data(explain, "a data file as for train, with the target column")
    explain.add_argument("--sample", type=option_type("seed"), default=0, metavar="I",
                         help="the row (from 0) whose numbers are written out (default 0)")

    sub.add_parser("demo", help="train on the bundled diabetes data and show every number")


def main(argv=None):
    """Entry point of the ``gradloop`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # `gradloop` alone: what it can do
        build_parser().print_help()
        return 0
    try:
        args = build_parser().parse_args(argv)
        # NumPy's overflow/invalid warnings would add lines to stderr: the loop and the checks
        # below detect non-finite numbers themselves and say so in one line.
        with np.errstate(all="ignore"):
            status = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "demo": cmd_demo,
                      "report": cmd_report, "explain": cmd_explain}[
                args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return status
    except BrokenPipeError:
        # `gradloop predict ... | head`: the reader left. Not an error of ours; exit quietly
        # (128 + SIGPIPE, as a shell reports it), and keep Python from complaining at exit.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (tests)
            pass
        return 141
    except DivergenceError as exc:
        _say(f"gradloop: {exc}")
        return EXIT_DIVERGED
    except GradloopError as exc:
        _say(f"gradloop: error: {exc}")
        return EXIT_ERROR
    except OSError as exc:  # e.g. permission denied on an output file
        where = f"{exc.filename}: " if exc.filename else ""
        _say(f"gradloop: error: {where}{exc.strerror or exc}")
        return EXIT_ERROR
    except MemoryError:
        _say("gradloop: error: out of memory; use a smaller model, batch or data set")
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("gradloop: interrupted", file=sys.stderr)
        return 130


def _say(message):
    """An error as exactly one line on stderr: a newline or other control character (a file name may
    hold one) is written escaped, as repr() would."""
    line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
    print(line, file=sys.stderr)


def cmd_train(args, *, trace_first=None, progress=True):
    """``gradloop train``: in memory, or block by block (--out-of-core, --dask, data beyond memory);
    with --quiet everything but errors (stderr) is silenced."""
    resume = resolve(args)  # the options, from the command and a checkpoint to resume
    if not args.quiet:
        return train_command(args, resume, trace_first, progress)
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return train_command(args, resume, trace_first, progress)


# ---------------------------------------------------------------- demo
def cmd_demo(args):
    print("gradloop demo: the chapter's loop on real data (442 diabetes patients, 10 measurements;\n"
          "target: disease progression after one year). Linear model, MSE, full-batch gradient descent,\n"
          "standardized features, learning rate 1/L. The report of the first 2 epochs, then a summary.\n")
    train_args = build_parser().parse_args(
        ["train", datasets.path("diabetes"), "--target", "progression", "--standardize", "--epochs", "3000"])
    return cmd_train(train_args, trace_first=2)
