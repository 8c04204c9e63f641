"""The ``gradloop`` command: train, evaluate, predict, report, demo.

Every user error becomes one line on stderr and exit status 2 (divergence: 3),
with no traceback, and no file written or overwritten: inputs are validated and
training finishes before anything is saved, and saving is atomic. One exception:
a run that diverges after its first epoch leaves its ``--log`` with the epochs
before the divergence (the message says so), the evidence of what went wrong.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from .cli_train import check_output_path, cmd_train, metrics_of
from .errors import ConfigError, DataError, DivergenceError, GradloopError

EXIT_ERROR, EXIT_DIVERGED = 2, 3


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the project's error format), exit 2."""

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message} (see {self.prog} --help)")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _lr(text):
    if text == "auto":
        return text
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number or 'auto', got {text!r}")
    return value


def _hidden(text):
    sizes = []
    for part in text.split(","):
        try:
            size = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
        if size < 1:
            raise argparse.ArgumentTypeError(f"every hidden size must be at least 1, got {text!r}")
        sizes.append(size)
    return sizes


def build_parser():
    from .layers import ACTIVATIONS
    from .losses import LOSSES
    from .optimizers import OPTIMIZERS, SCHEDULES

    parser = _Parser(prog="gradloop", description="A glass-box training loop: every number, every epoch.")
    parser.add_argument("--version", action="version", version=f"gradloop {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train a model on a data file")
    train.add_argument("data", help="CSV (with a header), Parquet, .npy or .npz file, or sklearn:NAME for "
                                    "scikit-learn's bundled diabetes, digits, iris, wine, breast_cancer")
    train.add_argument("--target", required=True, help="name of the target column")
    train.add_argument("--features", help="comma-separated feature columns (default: every other column)")
    train.add_argument("--lr", type=_lr, default=None,
                       help="learning rate, or 'auto' (linear model with MSE: 1/L); "
                            "default auto for the linear model with sgd, else 0.01 (sgd) or 0.001 (adam)")
    train.add_argument("--epochs", type=_non_negative_int, default=100, help="number of epochs (default 100)")
    train.add_argument("--standardize", action="store_true",
                       help="scale features to mean 0, std 1 (fitted on the training rows)")
    train.add_argument("--test-size", type=_float, default=None,
                       help="fraction of rows held out for testing (default 0.2; 0 trains on every row)")
    train.add_argument("--seed", type=int, default=0, help="seed of the split, initial weights and batches")
    train.add_argument("--trace", nargs="?", type=_positive_int, const=1, default=None, metavar="EVERY",
                       help="print the chapter's per-epoch report, every EVERY epochs (default 1)")
    train.add_argument("--round-to", type=_non_negative_int, default=None, metavar="N",
                       help="round gradients and weights to N decimals each epoch, as the chapter does")
    train.add_argument("--log", metavar="RUN.jsonl",
                       help="write every epoch's record as a JSON line (or a CSV row, for a .csv name)")
    train.add_argument("--val-split", type=_float, default=None, metavar="F",
                       help="hold out this fraction of the training rows for validation (by --seed; "
                            "stratified for classifiers): val loss every epoch")
    train.add_argument("--early-stopping", type=_non_negative_int, default=None, metavar="PATIENCE",
                       help="stop when the validation loss (training loss without --val-split) has not "
                            "improved for PATIENCE epochs, and keep the best epoch's weights")
    train.add_argument("--checkpoint", metavar="DIR",
                       help="save the whole run (model, optimizer, generator, history) in DIR for --resume")
    train.add_argument("--checkpoint-every", type=_positive_int, default=1, metavar="N",
                       help="checkpoint every N epochs (default 1), and always at the end")
    train.add_argument("--resume", metavar="DIR",
                       help="continue the run checkpointed in DIR; --epochs is the total, not a count")
    train.add_argument("--quiet", action="store_true", help="print nothing but errors")
    train.add_argument("--out", metavar="MODEL", help="save the trained model (safetensors + JSON metadata)")
    train.add_argument("--model", choices=("linear", "mlp"), default="linear")
    train.add_argument("--hidden", type=_hidden, default=[64], help="hidden layer sizes of the MLP, e.g. 64,32")
    train.add_argument("--activation", default="relu", help=f"MLP activation: {', '.join(ACTIVATIONS)}")
    train.add_argument("--loss", default="mse", help=f"loss: {', '.join(LOSSES)} (bce and cross-entropy classify)")
    train.add_argument("--optimizer", default="sgd", help=f"optimizer: {', '.join(OPTIMIZERS)}")
    train.add_argument("--batch-size", type=_positive_int, default=None,
                       help="rows per step (default: the full batch, the chapter's mode)")
    train.add_argument("--weight-decay", type=_float, default=0.0)
    train.add_argument("--schedule", default=None, help=f"learning-rate schedule: {', '.join(SCHEDULES)}")
    train.add_argument("--clip-norm", type=_float, default=None, help="clip the global gradient norm")
    train.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    train.add_argument("--gradient", choices=("auto", "gram", "stream", "fused", "layers"), default="auto",
                       help="full-batch gradient executor for the linear model with MSE: gram (X^T X once, "
                            "then O(d^2) per epoch), stream (one compiled pass over X per epoch), fused or "
                            "layers (the layers' arithmetic, with or without the layer calls), "
                            "or auto (default: by cost)")

    evaluate = sub.add_parser("evaluate", help="metrics of a saved model on a data file")
    evaluate.add_argument("model")
    evaluate.add_argument("data", help="a data file as for train, with the target column")
    evaluate.add_argument("--json", action="store_true", help="one JSON object on stdout")

    predict = sub.add_parser("predict", help="one prediction per row of a data file")
    predict.add_argument("model")
    predict.add_argument("data", help="a data file as for train (the target column is not needed)")
    predict.add_argument("--out", metavar="CSV", help="write a CSV file instead of printing")
    predict.add_argument("--proba", action="store_true", help="class probabilities (classifiers)")

    report = sub.add_parser("report", help="an HTML page (and PNG plots) of a training log")
    report.add_argument("log", help="a JSON-lines log from train --log, or a CSV with epoch and loss columns")
    report.add_argument("-o", "--out", metavar="HTML",
                        help="the HTML report to write (default: the log's name with .html, unless --png is given)")
    report.add_argument("--png", metavar="DIR", help="write every plot as a PNG file into DIR (created if missing)")

    sub.add_parser("demo", help="train on the bundled diabetes data and show every number")
    return parser


def _version():
    from . import __version__

    return __version__


def main(argv=None):
    """Entry point of the ``gradloop`` console script; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        # NumPy's overflow/invalid warnings would add lines to stderr: the loop and the checks
        # below detect non-finite numbers themselves and say so in one line.
        with np.errstate(all="ignore"):
            status = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "demo": cmd_demo,
                      "report": cmd_report}[
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
        print(f"gradloop: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except GradloopError as exc:
        print(f"gradloop: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:  # e.g. permission denied on an output file
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"gradloop: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("gradloop: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- evaluate / predict
def _load_for(model_path, data_path, *, need_target):
    """Load a saved bundle and the data columns it reads (target too when ``need_target``)."""
    from .bundle import ModelBundle
    from .data import _listing, encode_labels, read_table, select_xy

    bundle = ModelBundle.load(model_path)
    frame = read_table(data_path)
    has_target = bundle.target in [str(c) for c in frame.columns]
    if need_target or has_target:
        data = select_xy(frame, bundle.target, bundle.feature_names, labels=bundle.classes is not None,
                         source=str(data_path))
        y = data.y
        if bundle.classes is not None:
            originals = np.asarray(data.classes, dtype=object)[data.y]
            try:
                y, _ = encode_labels(originals, bundle.classes)
            except DataError as exc:  # say where the unseen labels are
                raise DataError(f"{data_path}: column {bundle.target!r}: {exc}") from None
        return bundle, data.X, y
    # Predicting on rows without a target: borrow a dummy target for the checks; name missing
    # features here so the message does not list the dummy column.
    columns = [str(c) for c in frame.columns]
    if missing := [f for f in bundle.feature_names if f not in columns]:
        raise DataError(f"{data_path}: no feature column {_listing(missing)}, which the model reads; "
                        f"columns are {_listing(columns)}")
    data = select_xy(frame.assign(__no_target__=0.0), "__no_target__", bundle.feature_names, source=str(data_path))
    return bundle, data.X, None


def cmd_evaluate(args):
    bundle, X, y = _load_for(args.model, args.data, need_target=True)
    X_scaled = bundle.scaler.transform(X) if bundle.scaler is not None else X
    metrics = metrics_of(bundle, X_scaled.astype(bundle.model.dtype), y)
    if args.json:
        print(json.dumps({k: v for k, v in metrics.items()}))
        return 0
    print(f"{args.model} on {args.data} ({len(X)} rows):")
    for key, value in metrics.items():
        if key != "confusion_matrix":
            print(f"  {key:10s} {value:.6g}")
    if "confusion_matrix" in metrics:
        print("  confusion matrix (rows: true class, columns: predicted), classes "
              + ", ".join(map(str, bundle.classes)))
        for row in metrics["confusion_matrix"]:
            print("   ", " ".join(f"{v:5d}" for v in row))
    return 0


def cmd_predict(args):
    import pandas as pd

    check_output_path(args.out, "--out")
    bundle, X, _ = _load_for(args.model, args.data, need_target=False)
    if args.proba:
        if bundle.classes is None:
            raise ConfigError("--proba needs a classifier; this model does regression")
        frame = pd.DataFrame(bundle.predict_proba(X), columns=[f"p_{c}" for c in bundle.classes])
    else:
        frame = pd.DataFrame({bundle.target: bundle.predict(X)})
    if args.out is None:
        frame.to_csv(sys.stdout, index=False)
        return 0
    from .io import atomic_write_bytes

    atomic_write_bytes(args.out, frame.to_csv(index=False).encode("utf-8"))
    print(f"Wrote {len(frame)} predictions to {args.out}")
    return 0


def cmd_report(args):
    from .io import atomic_write_bytes
    from .report import figures, png_bytes, read_log, render_html, write_pngs

    out = args.out
    if out is None and args.png is None:
        out = os.path.splitext(args.log)[0] + ".html"
    records, final = read_log(args.log)
    check_output_path(out, "-o")
    if out is not None and os.path.abspath(out) == os.path.abspath(args.log):
        raise ConfigError(f"-o {out}: is the log itself; give the report another name")
    if args.png is not None and os.path.exists(args.png) and not os.path.isdir(args.png):
        raise ConfigError(f"--png {args.png}: is a file, expected a folder for the PNG files")
    # Everything is rendered before the first file is written.
    pngs = {name: png_bytes(fig) for name, fig in figures(records, final).items()}
    page = render_html(records, final, pngs, title=os.path.basename(args.log)) if out is not None else None
    if args.png is not None:
        paths = write_pngs(args.png, pngs)
        print(f"Wrote {len(paths)} plot{'s' * (len(paths) != 1)} to {args.png}: {', '.join(p.name for p in paths)}")
    if page is not None:
        atomic_write_bytes(out, page.encode("utf-8"), "report")
        print(f"Wrote the report of {len(records)} epoch{'s' * (len(records) != 1)} "
              f"({len(pngs)} plot{'s' * (len(pngs) != 1)}) to {out}")
    return 0


# ---------------------------------------------------------------- demo
def cmd_demo(args):
    from . import datasets

    print("gradloop demo: the chapter's loop on real data (442 diabetes patients, 10 measurements;\n"
          "target: disease progression after one year). Linear model, MSE, full-batch gradient descent,\n"
          "standardized features, learning rate 1/L. The report of the first 2 epochs, then a summary.\n")
    train_args = build_parser().parse_args(
        ["train", datasets.path("diabetes"), "--target", "progression", "--standardize", "--epochs", "3000"])
    return cmd_train(train_args, trace_first=2)


if __name__ == "__main__":
    sys.exit(main())
