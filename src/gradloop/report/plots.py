"""The run's plots: loss curves, learning rate, gradient norm, weights, predictions, confusion matrix.

matplotlib is imported by the functions that draw, never by ``import gradloop`` (it is
heavy); figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg
canvas, so drawing touches no global pyplot state. Only :func:`plot_history` without
``ax`` uses pyplot, so the plot shows in a notebook.

    >>> write_pngs("plots", figures(records, final))   # loss.png, learning_rate.png, ...
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..files.modelfile import atomic_write_bytes
from ..models import CHAPTER_NAMES
from ..files.runlog import NUMERIC, _is_number

# Weight trajectories are drawn when the model has at most this many scalar parameters.
WEIGHT_PLOT_LIMIT = 20
# A confusion matrix of more classes is not drawn: unreadable, and k x k counts from a small log
# (40,000 labels in 1 MB) would need gigabytes.
CONFUSION_LIMIT = 100
DPI = 100
# Every plot the report may draw; --png DIR writes them as NAME.png.
PLOT_NAMES = ("loss", "generalization_gap", "learning_rate", "gradient_norm", "weights", "predicted_vs_actual",
              "confusion_matrix", "lr_find")
PLOT_FILES = tuple(f"{name}.png" for name in PLOT_NAMES)
_CURVES = (("loss", "loss"), ("new_loss", "new_loss (after the update)"), ("val_loss", "val_loss (validation)"))


def _num(value):
    return float(value) if _is_number(value) or isinstance(value, np.number) else math.nan


def _curves(run):
    """{key: (epochs, values)} of loss, new_loss, val_loss (and lr) from a History, dict of lists or records."""
    history = getattr(run, "history", run)  # a History's dict of lists (records imports plots: no isinstance)
    if isinstance(history, dict):
        out = {}
        for key, values in history.items():
            if isinstance(values, (list, tuple, np.ndarray)) and len(values):
                out[key] = (np.arange(1, len(values) + 1), np.array([_num(v) for v in values]))
        return out
    if isinstance(run, (list, tuple)):
        records = [r.to_dict() if hasattr(r, "to_dict") else r for r in run]
        if all(isinstance(r, dict) and "epoch" in r for r in records):
            epochs = np.array([r["epoch"] for r in records])
            return {key: (epochs, np.array([_num(r.get(key)) for r in records]))
                    for key in NUMERIC if any(_is_number(r.get(key)) for r in records)}
    raise ConfigError(f"plot_history: expected a gradloop History, a dict of per-epoch lists or a list of "
                      f"epoch records, got {type(run).__name__}")


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
        import matplotlib.pyplot as plt  # lazy, as all of matplotlib here: heavy, and only for drawing

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
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is heavy
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


def _lr_find_figure(sweep):
    """The learning-rate sweep: the smoothed loss against lr (log scale), the suggestion and 2/L."""
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(sweep["lrs"], sweep["losses"], color="tab:blue", linewidth=1.6)
    ax.set_xscale("log")
    _log_scale_if_wide(ax, np.asarray(sweep["losses"], dtype=float))
    ax.axvline(sweep["suggestion"], color="tab:green", linestyle="--", label=f"suggestion {sweep['suggestion']:.3g}")
    if sweep.get("stable_lr") is not None:
        ax.axvline(sweep["stable_lr"], color="tab:red", linestyle=":",
                   label=f"stable bound 2/L {sweep['stable_lr']:.3g}")
    ax.set(title="Learning-rate sweep (--lr find)", xlabel="learning rate", ylabel="loss (smoothed)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    return fig


def _weight_series(records, feature_names=None):
    """{label: values per epoch} of every scalar parameter, or {} when too many or none are logged.

    With ``feature_names`` (one per input), a first layer's weight is labelled by its feature:
    ``weights[bmi]``, or ``weights[bmi,1]`` for the second output."""
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
        named = name == "0.W" and feature_names is not None and len(shape) == 2 and shape[0] == len(feature_names)
        shown = tuple(d for i, d in enumerate(shape) if d != 1 or (named and i == 0))  # (d, 1) reads as a vector
        for i, index in enumerate(np.ndindex(*shown) if shown else [()]):
            parts = [str(feature_names[index[0]]), *map(str, index[1:])] if named else list(map(str, index))
            label = rename.get(name, name) + (f"[{','.join(parts)}]" if parts else "")
            series[label] = rows[:, i]
    return series


def _gap_figure(epochs, train, val, train_label):
    """The validation loss minus the training loss of the same weights, per epoch: how far the model
    does worse on rows it did not train on (rising: it starts to overfit)."""
    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(epochs, val - train, color="tab:purple", linewidth=1.6, marker="o" if len(epochs) <= 30 else None,
            markersize=3)
    ax.axhline(0.0, color="0.5", linewidth=0.8)
    ax.set(title="Generalization gap", xlabel="epoch", ylabel=f"val_loss - {train_label}")
    ax.grid(True, alpha=0.3)
    return fig


def _weights_figure(epochs, series):
    import matplotlib  # lazy: matplotlib is heavy

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


def rows_label(final):
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
    ax.set(title=title, xlabel=f"actual ({rows_label(final)})", ylabel="predicted")
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
    ax.set(title=title, xlabel="predicted class", ylabel=f"true class ({rows_label(final)})")
    return fig


def figures(records, final=None, feature_names=None):
    """Every plot of the report: ``{name: matplotlib Figure}``, in page order.

    Names (also the PNG file names): ``loss``; ``generalization_gap`` where a
    validation loss is logged; ``learning_rate`` and ``gradient_norm`` where logged;
    ``weights`` for models with at most ``WEIGHT_PLOT_LIMIT`` scalar parameters
    (labelled by ``feature_names``, default the final line's); ``predicted_vs_actual``
    (regression) or ``confusion_matrix`` (classifiers) when the log has its final line;
    ``lr_find`` when the run's learning rate came from ``--lr find``.
    """
    if feature_names is None and final is not None and isinstance(final.get("feature_names"), list):
        feature_names = final["feature_names"]
    figs = {}
    fig = _new_figure()
    plot_history(records, fig.add_subplot())
    figs["loss"] = fig
    epochs = np.array([r["epoch"] for r in records])
    val = np.array([_num(r.get("val_loss")) for r in records])
    if np.isfinite(val).any():
        # new_loss is the training loss of the weights val_loss was measured on; a mini-batch run
        # without it has the mean loss over the epoch's batches.
        new = np.array([_num(r.get("new_loss")) for r in records])
        key = "new_loss" if np.isfinite(new).any() else "loss"
        train = new if key == "new_loss" else np.array([_num(r.get("loss")) for r in records])
        figs["generalization_gap"] = _gap_figure(epochs, train, val, key)
    for key, name, title, ylabel, color in (("lr", "learning_rate", "Learning rate", "learning rate", "tab:green"),
                                            ("grad_norm", "gradient_norm", "Gradient norm", "norm of the gradient",
                                             "tab:red")):
        values = np.array([_num(r.get(key)) for r in records])
        if np.isfinite(values).any():
            figs[name] = _line_figure(epochs, values, title, ylabel, color)
    if series := _weight_series(records, feature_names):
        figs["weights"] = _weights_figure(epochs, series)
    if final is not None and final.get("lr_find"):
        figs["lr_find"] = _lr_find_figure(final["lr_find"])
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


def drawn(figs):
    """({name: PNG bytes} of the figures that can be drawn, [a line for each that cannot]). Values that
    span more than float64 holds between two ticks (-1e308 to 1e308) leave matplotlib no axis to draw."""
    pngs, notes = {}, []
    for name, fig in figs.items():
        try:
            pngs[name] = png_bytes(fig)
        except (ValueError, OverflowError):
            notes.append(f"the {name.replace('_', ' ')} plot is left out: its values span more than a plot's "
                         "axis can hold")
    return pngs, notes


def png_bytes(fig):
    """A figure rendered by the Agg canvas as PNG bytes (bytes pass through: rendered already)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: matplotlib is heavy

    if isinstance(fig, bytes):
        return fig
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def write_pngs(folder, figs):
    """Write each figure (or its PNG bytes) as ``folder/NAME.png``, creating the folder; returns the paths."""
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
