"""Plots and the HTML run report, drawn from a training log.

A log is what ``gradloop train --log RUN.jsonl`` writes: one JSON object per
epoch (:meth:`gradloop.loop.EpochRecord.to_dict`) and, last, one line
``{"final": true, ...}`` with the task, the held-out targets and predictions,
the classes, the confusion matrix and the metrics. A CSV file with one row per
epoch (at least ``epoch`` and ``loss`` columns, e.g. Keras' ``CSVLogger``) is
read too.

    >>> records, final = read_log("run.jsonl")
    >>> write_html("report.html", records, final)     # one page, images inlined
    >>> write_pngs("plots", figures(records, final))   # loss.png, learning_rate.png, ...

matplotlib is imported by the functions that draw, never by ``import gradloop``;
figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg
canvas, so writing a report touches no global pyplot state. Only
:func:`plot_history` without ``ax`` uses pyplot, so the plot shows in a notebook.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError
from .models import CHAPTER_NAMES, TASKS

# Weight trajectories are drawn when the model has at most this many scalar parameters.
WEIGHT_PLOT_LIMIT = 20
# A confusion matrix of more classes is not drawn: unreadable, and k x k counts from a small log
# (40,000 labels in 1 MB) would need gigabytes.
CONFUSION_LIMIT = 100
DPI = 100
# Every plot the report may draw; --png DIR writes them as NAME.png.
PLOT_NAMES = ("loss", "learning_rate", "gradient_norm", "weights", "predicted_vs_actual", "confusion_matrix")
PLOT_FILES = tuple(f"{name}.png" for name in PLOT_NAMES)
# Numeric columns of an epoch record, in the order the table shows them.
TABLE_COLUMNS = ("epoch", "loss", "new_loss", "val_loss", "lr", "grad_norm", "seconds")
_NUMERIC = ("loss", "new_loss", "val_loss", "lr", "grad_norm", "seconds")
_CURVES = (("loss", "loss"), ("new_loss", "new_loss (after the update)"), ("val_loss", "val_loss (validation)"))


# ---------------------------------------------------------------- reading
def read_log(path):
    """Read a training log: ``(records, final)``.

    Args:
        path: a JSON-lines log (``gradloop train --log``) or a ``.csv`` file with
            one row per epoch and at least the columns ``epoch`` and ``loss``.

    Returns:
        records: one dict per epoch, in file order (keys as in
            ``EpochRecord.to_dict``; a missing or non-finite number is None).
        final: the ``{"final": true, ...}`` line (the last one, if several), or None.

    Raises:
        DataError: a missing or empty file, a line that is not a JSON object, a
            record without ``epoch`` and ``loss`` or with a non-number in a numeric
            field (the message names the file and the line), or no epoch record.
    """
    name = str(path)
    p = Path(os.fspath(path))
    if not p.exists():
        raise DataError(f"{name}: no such file")
    if p.is_dir():
        raise DataError(f"{name}: is a folder, expected a log file (RUN.jsonl from gradloop train --log, or a CSV)")
    if p.suffix.lower() == ".csv":
        return _read_csv_log(p, name), None
    return _read_jsonl(p, name)


def _read_jsonl(p, name):
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{name}: is not UTF-8 text (byte {raw[exc.start:exc.start + 1]!r} at offset {exc.start}); "
                        "expected a JSON-lines log from gradloop train --log") from None
    if not text.strip():
        raise DataError(f"{name}: is empty; expected one JSON object per epoch (gradloop train --log RUN.jsonl)")
    records, final = [], None
    # Split on newlines only: str.splitlines would also split on characters JSON may hold raw.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line, parse_constant=_no_constant, parse_float=_finite_float, parse_int=_finite_int)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}: line {number}: not JSON ({exc.msg}, column {exc.colno}); "
                            "expected one JSON object per line") from None
        except (ValueError, RecursionError) as exc:  # a number out of range, or nesting too deep
            raise DataError(f"{name}: line {number}: {str(exc)[:80] or 'too deeply nested'}; "
                            "a log holds finite numbers that fit in a float") from None
        if not isinstance(obj, dict):
            raise DataError(f"{name}: line {number}: expected a JSON object, got {_json_type(obj)}")
        if obj.get("final") is True:
            final = _check_final(obj, f"{name}: line {number}")
        else:
            records.append(_check_record(obj, f"{name}: line {number}"))
    if not records:
        raise DataError(f"{name}: holds no epoch records (objects with 'epoch' and 'loss'); "
                        "was it written by gradloop train --log with at least one epoch?")
    return records, final


def _json_type(value):
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _no_constant(token):
    raise ValueError(f"{token} is not strict JSON (a log writes null for a non-finite number)")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} does not fit in a float")
    return value


def _finite_int(text):
    try:
        if len(text) > 400:  # far beyond float's range, and below Python's limit on digits
            raise OverflowError
        value = int(text)
        float(value)
    except OverflowError:
        raise ValueError(f"the number {text[:40]}... does not fit in a float") from None
    return value


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_record(obj, where):
    missing = [k for k in ("epoch", "loss") if k not in obj]
    if missing:
        raise DataError(f"{where}: no {' and no '.join(repr(k) for k in missing)}; expected an epoch record "
                        "(epoch, loss, ...) or the final line ({\"final\": true, ...})")
    epoch = obj["epoch"]
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0):
        raise DataError(f"{where}: 'epoch' must be a non-negative whole number, got {json.dumps(epoch)[:40]}")
    for key in _NUMERIC:
        value = obj.get(key)
        if value is not None and not _is_number(value):
            raise DataError(f"{where}: {key!r} must be a number or null, got {_json_type(value)}")
    return obj


def _check_final(obj, where):
    task = obj.get("task")
    if task not in TASKS:
        raise DataError(f"{where}: the final line's 'task' must be one of {', '.join(TASKS)}, got {task!r}")
    y_true, y_pred = obj.get("y_true"), obj.get("y_pred")
    if not (isinstance(y_true, list) and isinstance(y_pred, list) and len(y_true) == len(y_pred)):
        raise DataError(f"{where}: the final line needs lists 'y_true' and 'y_pred' of equal length")
    if task == "regression" and not all(v is None or _is_number(v) for v in y_true + y_pred):
        raise DataError(f"{where}: a regression's 'y_true' and 'y_pred' must hold numbers")
    cm = obj.get("confusion_matrix")
    if cm is not None and not (isinstance(cm, list) and cm and all(
            isinstance(row, list) and len(row) == len(cm) and all(_is_number(v) for v in row) for row in cm)):
        raise DataError(f"{where}: 'confusion_matrix' must be a square list of lists of counts")
    if not isinstance(obj.get("metrics", {}), dict):
        raise DataError(f"{where}: 'metrics' must be an object")
    return obj


def _read_csv_log(p, name):
    import pandas as pd

    from .data import _missing, _read_csv

    frame = _read_csv(p, name)  # the data reader's checks: text, header, field counts
    frame = frame.dropna(how="all")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if missing := [c for c in ("epoch", "loss") if c not in columns]:
        raise DataError(f"{name}: no column {' and no column '.join(repr(c) for c in missing)}; a CSV log needs "
                        f"one row per epoch with at least 'epoch' and 'loss' (columns are {', '.join(columns)})")
    if frame.empty:
        raise DataError(f"{name}: holds no epoch records (the header has no rows under it)")
    for column in ("epoch",) + tuple(c for c in _NUMERIC if c in columns):
        # "nan", "NA" (as Keras and pandas write a missing number) and empty cells are missing.
        frame[column] = frame[column].mask(frame[column].map(_missing))
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() & frame[column].notna()
        if column == "epoch":
            bad |= values.isna() | (values < 0) | (values != values.round())
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            line = int(frame.index[row]) + 2  # the header is line 1
            what = "a non-negative whole number" if column == "epoch" else "a number"
            raise DataError(f"{name}: line {line}, column {column!r}: {frame[column].iloc[row]!r} is not {what}")
        frame[column] = values.astype("int64") if column == "epoch" else values
    records = []
    for row in frame.to_dict("records"):
        records.append({k: (None if isinstance(v, float) and not math.isfinite(v) else
                            v.item() if isinstance(v, np.generic) else v) for k, v in row.items()})
    return records


# ---------------------------------------------------------------- plotting
def _num(value):
    return float(value) if _is_number(value) or isinstance(value, np.number) else math.nan


def _curves(source):
    """{key: (epochs, values)} of loss, new_loss, val_loss (and lr) from a History, dict of lists or records."""
    history = getattr(source, "history", source)
    if isinstance(history, dict):
        out = {}
        for key, values in history.items():
            if isinstance(values, (list, tuple, np.ndarray)) and len(values):
                out[key] = (np.arange(1, len(values) + 1), np.array([_num(v) for v in values]))
        return out
    if isinstance(source, (list, tuple)):
        records = [r.to_dict() if hasattr(r, "to_dict") else r for r in source]
        if all(isinstance(r, dict) and "epoch" in r for r in records):
            epochs = np.array([r["epoch"] for r in records])
            return {key: (epochs, np.array([_num(r.get(key)) for r in records]))
                    for key in _NUMERIC if any(_is_number(r.get(key)) for r in records)}
    raise ConfigError(f"plot_history: expected a gradloop History, a dict of per-epoch lists or a list of "
                      f"epoch records, got {type(source).__name__}")


def _log_scale_if_wide(ax, *arrays):
    """A log y axis when every value is positive and they span more than two decades."""
    values = np.concatenate([a[np.isfinite(a)] for a in arrays]) if arrays else np.array([])
    if values.size and values.min() > 0 and values.max() / values.min() > 100:
        ax.set_yscale("log")


def plot_history(history, ax=None):
    """Draw loss, new_loss and val_loss against the epoch; returns the axes.

    Args:
        history: a :class:`gradloop.History` (or anything with a ``.history`` dict
            of per-epoch lists, e.g. Keras'), such a dict itself, or a list of
            epoch records (dicts from :func:`read_log`, or EpochRecord objects).
        ax: matplotlib axes to draw on; None makes a new figure with pyplot (so it
            shows in a notebook).

    Example:
        >>> history = gradloop.fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=50)
        >>> plot_history(history)          # or history.plot()
    """
    curves = _curves(history)
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(6.4, 4), layout="constrained")
    drawn = []
    mean_over_batches = isinstance(history, (list, tuple)) and any(
        _is_number(r.get("batches")) and r["batches"] > 1 for r in history if isinstance(r, dict))
    for key, label in _CURVES:
        if key not in curves or not np.isfinite(curves[key][1]).any():
            continue
        epochs, values = curves[key]
        if key == "loss" and mean_over_batches:
            label = "loss (mean over the epoch's batches)"
        ax.plot(epochs, values, label=label, linewidth=1.6, marker="o" if len(values) <= 30 else None,
                markersize=3)
        drawn.append(values)
    _log_scale_if_wide(ax, *drawn)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("Loss per epoch")
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend()
    return ax


def _new_figure(width=5.6, height=3.8):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _line_figure(epochs, values, title, ylabel, color):
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(epochs, values, color=color, linewidth=1.6, marker="o" if len(values) <= 30 else None, markersize=3)
    _log_scale_if_wide(ax, values)
    finite = values[np.isfinite(values)]
    if finite.min() == finite.max() > 0:  # a constant (no schedule): show it against zero, not a 1e-9 band
        ax.set_ylim(0, 1.5 * finite.max())
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    return fig


def _weight_series(records):
    """{label: values per epoch} of every scalar parameter, or {} when too many or none are logged."""
    first = next((r["weights"] for r in records if isinstance(r.get("weights"), dict) and r["weights"]), None)
    if first is None:
        return {}
    try:
        shapes = {n: np.asarray(w, dtype=float).shape for n, w in first.items()}
    except (TypeError, ValueError):
        return {}
    if sum(int(np.prod(s)) for s in shapes.values()) > WEIGHT_PLOT_LIMIT:
        return {}
    rename = CHAPTER_NAMES if set(shapes) <= set(CHAPTER_NAMES) else {}
    series = {}
    for name, shape in shapes.items():
        rows = []
        for r in records:
            try:
                a = np.asarray((r.get("weights") or {}).get(name), dtype=float)
            except (TypeError, ValueError):
                a = np.array(math.nan)
            rows.append(a.reshape(-1) if a.shape == shape else np.full(int(np.prod(shape)), math.nan))
        rows = np.array(rows)
        shown = tuple(d for d in shape if d != 1)  # (d, 1) weights read as a vector
        for i, index in enumerate(np.ndindex(*shown) if shown else [()]):
            label = rename.get(name, name) + (f"[{','.join(map(str, index))}]" if index else "")
            series[label] = rows[:, i]
    return series


def _weights_figure(epochs, series):
    import matplotlib

    fig = _new_figure()
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10"].colors
    if len(series) > 10:  # tab20 pairs a dark and a light shade: all dark ones first
        colors = matplotlib.colormaps["tab20"].colors[::2] + matplotlib.colormaps["tab20"].colors[1::2]
    for i, (label, values) in enumerate(series.items()):
        ax.plot(epochs, values, label=label, color=colors[i % len(colors)], linewidth=1.4)
    ax.set(title="Weight trajectories", xlabel="epoch", ylabel="value")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    return fig


def _rows_label(final):
    split, rows = final.get("split"), final.get("rows", len(final["y_true"]))
    shown = len(final["y_true"])
    what = f"{split} rows" if split else "rows"
    return f"{what}, {shown} of {rows}" if isinstance(rows, int) and rows > shown else f"{what}, {shown}"


def _predicted_figure(final):
    fig = _new_figure()
    ax = fig.add_subplot()
    y_true = np.array([_num(v) for v in final["y_true"]])
    y_pred = np.array([_num(v) for v in final["y_pred"]])
    ax.scatter(y_true, y_pred, s=14, alpha=0.6, edgecolors="none")
    both = np.concatenate([y_true, y_pred])
    both = both[np.isfinite(both)]
    if both.size:
        lo, hi = float(both.min()), float(both.max())
        ax.plot([lo, hi], [lo, hi], color="0.4", linestyle="--", linewidth=1, label="predicted = actual")
        ax.legend(loc="upper left")
    r2 = (final.get("metrics") or {}).get("r2")
    title = "Predicted against actual" + (f" (R$^2$ {r2:.4f})" if _is_number(r2) else "")
    ax.set(title=title, xlabel=f"actual ({_rows_label(final)})", ylabel="predicted")
    ax.grid(True, alpha=0.3)
    return fig


def _confusion(final):
    """(counts (k, k), class names) from the final line."""
    classes = final.get("classes")
    cm = final.get("confusion_matrix")
    if cm is not None:
        counts = np.array(cm, dtype=np.int64)
        names = [str(c) for c in classes] if isinstance(classes, list) and len(classes) == len(counts) else \
            [str(i) for i in range(len(counts))]
        return counts, names
    labels = list(classes) if isinstance(classes, list) else sorted({str(v) for v in final["y_true"] + final["y_pred"]})
    index = {str(c): i for i, c in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(final["y_true"], final["y_pred"]):
        if str(t) in index and str(p) in index:
            counts[index[str(t)], index[str(p)]] += 1
    return counts, [str(c) for c in labels]


def _confusion_figure(final):
    counts, names = _confusion(final)
    k = len(names)
    side = min(9.0, 3.6 + 0.3 * k)
    fig = _new_figure(max(5.6, side + 1.0), side)
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8, label="rows")
    short = [n if len(n) <= 12 else n[:11] + "…" for n in names]
    ax.set_xticks(range(k), short, rotation=45 if max(map(len, short), default=0) > 3 else 0, ha="right"
                  if max(map(len, short), default=0) > 3 else "center")
    ax.set_yticks(range(k), short)
    if k <= 30:
        threshold = counts.max() / 2 if counts.size else 0
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize="small" if k > 10 else "medium",
                    color="white" if value > threshold else "black")
    accuracy = (final.get("metrics") or {}).get("accuracy")
    title = "Confusion matrix" + (f" (accuracy {accuracy:.4f})" if _is_number(accuracy) else "")
    ax.set(title=title, xlabel="predicted class", ylabel=f"true class ({_rows_label(final)})")
    return fig


def figures(records, final=None):
    """Every plot of the report: ``{name: matplotlib Figure}``, in page order.

    Names (also the PNG file names): ``loss``; ``learning_rate`` and
    ``gradient_norm`` where logged; ``weights`` for models with at most
    ``WEIGHT_PLOT_LIMIT`` scalar parameters; ``predicted_vs_actual`` (regression)
    or ``confusion_matrix`` (classifiers) when the log has its final line.
    """
    figs = {}
    fig = _new_figure()
    plot_history(records, fig.add_subplot())
    figs["loss"] = fig
    epochs = np.array([r["epoch"] for r in records])
    for key, name, title, ylabel, color in (("lr", "learning_rate", "Learning rate", "learning rate", "tab:green"),
                                            ("grad_norm", "gradient_norm", "Gradient norm", "norm of the gradient",
                                             "tab:red")):
        values = np.array([_num(r.get(key)) for r in records])
        if np.isfinite(values).any():
            figs[name] = _line_figure(epochs, values, title, ylabel, color)
    if series := _weight_series(records):
        figs["weights"] = _weights_figure(epochs, series)
    if final is not None and final["y_true"]:
        if final["task"] == "regression":
            figs["predicted_vs_actual"] = _predicted_figure(final)
        elif _class_count(final) <= CONFUSION_LIMIT:
            figs["confusion_matrix"] = _confusion_figure(final)
    return figs


def _class_count(final):
    """How many classes a confusion matrix of the final line would have, without building it."""
    if isinstance(final.get("confusion_matrix"), list):
        return len(final["confusion_matrix"])
    if isinstance(final.get("classes"), list):
        return len(final["classes"])
    return len({str(v) for v in final["y_true"] + final["y_pred"]})


def left_out(final):
    """Why a plot the log would call for is not drawn (one line), or None."""
    if final is not None and final["task"] != "regression" and final["y_true"] \
            and (k := _class_count(final)) > CONFUSION_LIMIT:
        return (f"the confusion matrix is left out: the log names {k:,} classes, "
                f"more than the {CONFUSION_LIMIT} a readable matrix can show")
    return None


def png_bytes(fig):
    """A figure rendered by the Agg canvas as PNG bytes (bytes pass through: rendered already)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if isinstance(fig, bytes):
        return fig
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_pngs(folder, figs):
    """Write each figure (or its PNG bytes) as ``folder/NAME.png``, creating the folder; returns the paths."""
    from .io import atomic_write_bytes

    folder = Path(os.fspath(folder))
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: is a file, expected a folder for the PNG files")
    payloads = {name: png_bytes(fig) for name, fig in figs.items()}  # render everything before writing
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, payload in payloads.items():
        path = folder / f"{name}.png"
        atomic_write_bytes(path, payload, "PNG file")
        paths.append(path)
    return paths


# ---------------------------------------------------------------- HTML
_CAPTIONS = {
    "loss": "The loss before each epoch's update; new_loss is the loss of the updated weights, "
            "val_loss the loss on validation rows (where logged).",
    "learning_rate": "The learning rate each epoch used (after the schedule).",
    "gradient_norm": "The norm of the gradient over all parameters: large means a steep slope, "
                     "near zero a flat one (a minimum, or a plateau).",
    "weights": "Every parameter after each epoch's update.",
    "predicted_vs_actual": "Each point is a row: on the dashed line the prediction is exact.",
    "confusion_matrix": "Rows are the true classes, columns the predicted ones: the diagonal is right.",
}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d232b; background: #fff;
       max-width: 1200px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.8em;
     border-bottom: 1px solid #d5dbe2; padding-bottom: 0.2em; }
.source { color: #5a6572; margin-top: 0; }
/* display: table lets the caption wrap at the width of its image */
figure { margin: 1.2em 0; display: table; } figure img { max-width: 100%; height: auto; border: 1px solid #e3e7ec; }
figcaption { color: #5a6572; font-size: 0.9em; display: table-caption; caption-side: bottom; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; font-size: 0.9em; }
th, td { padding: 0.25em 0.8em; text-align: right; border-bottom: 1px solid #e8ebef; }
th { background: #f3f5f8; position: sticky; top: 0; } td:first-child, th:first-child { text-align: left; }
table.summary th { background: none; font-weight: normal; color: #5a6572; position: static; }
.scroll { max-height: 36em; overflow: auto; border: 1px solid #e3e7ec; display: inline-block; }
.plots { display: flex; flex-wrap: wrap; gap: 0 1.5em; } .plots figure { flex: 0 1 auto; }
"""


def _fmt(value, digits=8):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "" if value is None else str(value)
    if isinstance(value, bool) or not _is_number(value):
        return html.escape(str(value))
    return str(value) if isinstance(value, int) else f"{value:.{digits}g}"


def _summary_rows(records, final):
    rows = [("epochs logged", f"{len(records)} (epoch {records[0]['epoch']} to {records[-1]['epoch']})"),
            ("loss, first epoch", _fmt(records[0].get("loss")))]
    last = records[-1]
    for key, label in (("loss", "loss, last epoch"), ("new_loss", "loss after the last update"),
                       ("val_loss", "validation loss, last epoch"), ("lr", "learning rate, last epoch")):
        if last.get(key) is not None:
            rows.append((label, _fmt(last[key])))
    seconds = [r["seconds"] for r in records if _is_number(r.get("seconds"))]
    if seconds:
        rows.append(("training time", f"{sum(seconds):.4g} s"))
    if final is not None:
        rows.append(("task", html.escape(final["task"])))
        rows.append(("rows evaluated", html.escape(_rows_label(final))))
        if isinstance(final.get("classes"), list):
            rows.append(("classes", html.escape(", ".join(map(str, final["classes"])))))
        metrics = final.get("metrics") or {}
        order = ["accuracy", "precision", "recall", "f1"] if final["task"] != "regression" else []
        for key in order + [k for k in metrics if k not in order]:
            if key in metrics and (_is_number(metrics[key]) or metrics[key] is None):
                label = key if final["task"] == "regression" or key in order else f"{key} (probabilities)"
                rows.append((html.escape(label), _fmt(metrics[key], 6)))
    return rows


def _table(header, rows):
    """An HTML table of already escaped cells; without a header the first column names the rows."""
    if header is None:
        body = "\n".join(f"<tr><th>{row[0]}</th>" + "".join(f"<td>{c}</td>" for c in row[1:]) + "</tr>"
                         for row in rows)
        return f'<table class="summary">\n<tbody>\n{body}\n</tbody>\n</table>'
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def render_html(records, final=None, figs=None, title=None):
    """The report page as a string: summary, every plot as an inlined PNG, the table of epoch records.

    ``figs``: {name: Figure or PNG bytes} (default: :func:`figures` of the records).
    """
    figs = figures(records, final) if figs is None else figs
    title = html.escape(title or "training run")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        # Nothing may load from anywhere: the page is the whole report.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gradloop report: {title}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        "<h1>gradloop run report</h1>", f'<p class="source">{title}</p>',
        "<h2>Summary</h2>", _table(None, _summary_rows(records, final)),
        "<h2>Plots</h2>", '<div class="plots">',
    ]
    for name, fig in figs.items():
        data = base64.b64encode(png_bytes(fig)).decode("ascii")
        alt = html.escape(name.replace("_", " "))
        caption = html.escape(_CAPTIONS.get(name, ""))
        parts.append(f'<figure id="{html.escape(name)}"><img src="data:image/png;base64,{data}" alt="{alt}">'
                     f"<figcaption>{caption}</figcaption></figure>")
    parts.append("</div>")
    columns = [c for c in TABLE_COLUMNS if c in ("epoch", "loss") or any(r.get(c) is not None for r in records)]
    digits = {"lr": 6, "grad_norm": 6, "seconds": 3}
    rows = [[_fmt(r.get(c), digits.get(c, 10)) for c in columns] for r in records]
    parts += ["<h2>Epoch records</h2>", f'<div class="scroll" id="epochs">{_table(columns, rows)}</div>',
              "</body>", "</html>", ""]
    return "\n".join(parts)


def write_html(path, records, final=None, figs=None, title=None):
    """Write the report page to ``path``, atomically: one self-contained HTML file, no network needed.

    Args:
        path: the HTML file; its folder must exist.
        records, final: as returned by :func:`read_log`.
        figs: {name: Figure or PNG bytes} to inline (default: :func:`figures` of the records).
        title: a line under the heading (e.g. the log's file name).
    """
    from .io import atomic_write_bytes

    atomic_write_bytes(path, render_html(records, final, figs, title).encode("utf-8"), "report")
