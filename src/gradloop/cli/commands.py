"""``gradloop evaluate``, ``predict`` and ``report``: a saved model or a run log in, numbers and pages out."""

from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np

from ..files.bundle import ModelBundle
from ..data.columns import _listing
from ..data.tables import _pandas, encode_labels, read_table, select_features, select_xy
from ..errors import ConfigError, DataError
from ..glass.network import explain_network
from ..files.modelfile import atomic_file, atomic_write_bytes, json_line
from ..files.paths import Place, check_places
from ..report.page import PLOT_FILES, drawn, figures, left_out, read_log, render_html, write_pngs
from .cluster import data_files, open_source, wants_source
from .results import metrics_of, source_metrics


def _load_for(model_path, data_path, *, need_target):
    """A saved bundle and the columns it reads from a data file: (bundle, X raw (n, d), y or None).

    Features are matched by name, in any order; other columns are ignored. ``need_target``
    (evaluate): the target column must be there, with labels the model knows. Without it
    (predict) the target column, whatever it holds, is never read.
    """

    bundle = ModelBundle.load(model_path)
    frame = read_table(data_path)
    if not need_target:
        return bundle, select_features(frame, bundle.feature_names, source=str(data_path)), None
    columns = [str(c) for c in frame.columns]
    if bundle.target not in columns:
        raise DataError(f"{data_path}: no target column {bundle.target!r}, which evaluate compares the "
                        f"predictions with; columns are {_listing(columns)} "
                        "(to predict without a target: gradloop predict)")
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


def _read_places(args):
    """What predict reads: the model file and the data file."""
    return [Place("MODEL file", args.model), Place("DATA file", args.data)]


def cmd_evaluate(args):
    if wants_source(args):
        return print_metrics(args, *evaluate_from_source(args))
    bundle, X, y = _load_for(args.model, args.data, need_target=True)
    X_scaled = bundle.scaler.transform(X) if bundle.scaler is not None else X
    return print_metrics(args, metrics_of(bundle, X_scaled.astype(bundle.model.dtype), y), len(X), bundle)


PROBABILITY_ERRORS = ("mse", "rmse", "mae", "r2")  # a classifier's: of its probabilities, not of its labels


def print_metrics(args, metrics, rows, bundle=None):
    """evaluate's output: one JSON object (--json) or a line per metric (and the confusion matrix)."""
    if args.json:
        print(json_line(_strict_metrics(metrics)))
        return 0
    print(f"{args.model} on {args.data} ({rows} rows):")
    classifier = "accuracy" in metrics
    for key, value in metrics.items():
        if key != "confusion_matrix" and not (classifier and key in PROBABILITY_ERRORS):
            print(f"  {key:10s} {value:.6g}")
    if classifier:  # the regression numbers of a classifier describe its probabilities: said as such
        print("  of the predicted probabilities against one-hot targets (the Brier score's terms): "
              + ", ".join(f"{key} {metrics[key]:.6g}" for key in PROBABILITY_ERRORS))
    if "confusion_matrix" in metrics:
        print("  confusion matrix (rows: true class, columns: predicted), classes "
              + ", ".join(map(str, bundle.classes)))
        for row in metrics["confusion_matrix"]:
            print("   ", " ".join(f"{v:5d}" for v in row))
    return 0


def _strict_metrics(metrics):
    """Metrics as strict JSON: an undefined R^2 (constant target, one row) is null, with the reason beside it."""
    out = dict(metrics)
    r2 = out.get("r2")
    if r2 is not None and not math.isfinite(r2):
        out["r2"] = None
        out["r2_undefined"] = ("the target is constant on these rows (or there is one row): "
                               "R^2 divides by its variance")
    return out


def cmd_predict(args):
    import pandas as pd

    if wants_source(args):
        return predict_from_source(args)
    check_places(_read_places(args), [Place("--out", args.out)])
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

    atomic_write_bytes(args.out, frame.to_csv(index=False).encode("utf-8"))
    print(f"Wrote {len(frame)} predictions to {args.out}")
    return 0


def cmd_explain(args):
    """``gradloop explain MODEL DATA [--sample I]``: one full-batch training step at the model's weights."""
    bundle, X, y = _load_for(args.model, args.data, need_target=True)
    if args.sample >= len(X):
        raise ConfigError(f"--sample {args.sample}: {args.data} has {len(X)} rows (numbered from 0)")
    X_scaled = bundle.scaler.transform(X) if bundle.scaler is not None else X
    lr = bundle.info.get("lr") if isinstance(bundle.info.get("lr"), (int, float)) else None
    print(explain_network(bundle.model, X_scaled.astype(bundle.model.dtype), y, loss=bundle.loss,
                          sample=args.sample, lr=lr))
    return 0


def cmd_report(args):
    out = args.out
    if out is None and args.png is None:
        out = os.path.splitext(args.log)[0] + ".html"
    plots = Place("--png", args.png, folder=True, writes=PLOT_FILES, parents=True)
    check_places([Place("log", args.log)], [Place("-o", out), plots])
    records, final = read_log(args.log)
    if note := left_out(final):
        print(f"gradloop: {note}")
    # Everything is rendered before the first file is written.
    pngs, undrawn = drawn(figures(records, final))
    for note in undrawn:
        print(f"gradloop: {note}")
    page = render_html(records, final, pngs, title=os.path.basename(args.log), undrawn=undrawn) \
        if out is not None else None
    if args.png is not None:
        paths = write_pngs(args.png, pngs)
        print(f"Wrote {len(paths)} plot{'s' * (len(paths) != 1)} to {args.png}: {', '.join(p.name for p in paths)}")
    if page is not None:
        atomic_write_bytes(out, page.encode("utf-8"), "report")
        print(f"Wrote the report of {len(records)} epoch{'s' * (len(records) != 1)} "
              f"({len(pngs)} plot{'s' * (len(pngs) != 1)}) to {out}")
    return 0


# ---------------------------------------------------------------- block by block
def predict_from_source(args):
    """``gradloop predict`` block by block: the model's features by name, predictions written as each
    block is read (a temporary file renamed at the end, or stdout), never the whole data in memory."""
    check_places([Place("MODEL file", args.model), *(Place("DATA file", f) for f in data_files(args))],
                 [Place("--out", args.out)])
    bundle = ModelBundle.load(args.model)
    if args.proba and bundle.classes is None:
        raise ConfigError("--proba needs a classifier; this model does regression")
    source = open_source(args.data, None, bundle.feature_names, np.float64)
    columns = [f"p_{c}" for c in bundle.classes] if args.proba else [bundle.target]
    with (atomic_file(args.out, "predictions") if args.out else contextlib.nullcontext(sys.stdout.buffer)) as out:
        for i, (X, _) in enumerate(source):
            values = bundle.predict_proba(X) if args.proba else bundle.predict(X)
            block = _pandas().DataFrame(np.asarray(values).reshape(len(X), -1), columns=columns)
            out.write(block.to_csv(index=False, header=i == 0).encode("utf-8"))
    if args.out:
        print(f"Wrote {source.n_rows} predictions to {args.out}")
    return 0


def evaluate_from_source(args):
    """``gradloop evaluate`` block by block: (the model's metrics in one streaming pass, rows, the model)."""
    check_places([Place("MODEL file", args.model), *(Place("DATA file", f) for f in data_files(args))], [])
    bundle = ModelBundle.load(args.model)
    classifier = bundle.classes is not None
    source = open_source(args.data, bundle.target, bundle.feature_names, bundle.model.dtype, labels=classifier,
                         classes=bundle.classes)
    if bundle.scaler is not None:
        source = source.scaled(bundle.scaler)
    return source_metrics(bundle.model, source), source.n_rows, bundle
