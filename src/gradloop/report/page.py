"""The HTML run report, drawn from a training log: one self-contained page.

    >>> records, final = read_log("run.jsonl")
    >>> write_html("report.html", records, final)     # one page, images inlined

The log is read by :mod:`gradloop.files.runlog` and drawn by :mod:`gradloop.report.plots`; their
public names are importable from here too.
"""

from __future__ import annotations

import base64
import html
import math

from ..files.modelfile import atomic_write_bytes
from .plots import (CONFUSION_LIMIT, PLOT_FILES, PLOT_NAMES, drawn, figures, left_out, plot_history, png_bytes,
                    rows_label, write_pngs)
from ..files.runlog import _is_number, read_log

__all__ = ["CONFUSION_LIMIT", "PLOT_FILES", "PLOT_NAMES", "TABLE_COLUMNS", "figures", "left_out", "plot_history",
           "png_bytes", "read_log", "render_html", "write_html", "write_pngs"]

# Numeric columns of an epoch record, in the order the table shows them.
TABLE_COLUMNS = ("epoch", "loss", "new_loss", "val_loss", "lr", "grad_norm", "seconds")


# ---------------------------------------------------------------- HTML
_CAPTIONS = {
    "loss": "The loss before each epoch's update; new_loss is the loss of the updated weights, "
            "val_loss the loss on validation rows (where logged).",
    "generalization_gap": "The validation loss minus the training loss of the same weights: how much worse the "
                          "model does on rows it did not train on. Rising while the training loss falls: "
                          "it starts to overfit.",
    "learning_rate": "The learning rate each epoch used (after the schedule).",
    "gradient_norm": "The norm of the gradient over all parameters: large means a steep slope, "
                     "near zero a flat one (a minimum, or a plateau).",
    "weights": "Every parameter after each epoch's update.",
    "lr_find": "The learning-rate sweep before training: the loss falls fastest at the suggestion; past the "
               "stable bound 2/L (the linear model) the steps blow it up.",
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
.scroll { max-height: 36em; max-width: 100%; overflow: auto; border: 1px solid #e3e7ec; display: inline-block; }
/* Two plots across on a wide page, one on a narrow one (a phone): each image scales to its column. */
.plots { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 0 1.5em; }
.plots figure { display: block; margin: 1.2em 0; } .plots figure img { width: 100%; }
.plots figcaption { display: block; }
@media (max-width: 760px) { .plots { grid-template-columns: minmax(0, 1fr); } body { padding: 0 0.8em; } }
.live { background: #fff6d6; border: 1px solid #e8d48a; padding: 0.5em 0.8em; }
"""


def _fmt(value, digits=8):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "" if value is None else str(value)
    if isinstance(value, bool) or not _is_number(value):
        return html.escape(str(value))
    return str(value) if isinstance(value, int) else f"{value:.{digits}g}"


def _summary_rows(records, final):
    if not records:  # a live page before the first epoch ends
        return [("epochs logged", "none yet")]
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
        rows += _final_rows(final)
    return rows


# What a classifier's summary shows: its own measures, not the regression ones the log also holds
# for its probabilities (an MSE of probabilities against one-hot targets reads as a mistake there).
CLASSIFIER_METRICS = ("accuracy", "precision", "recall", "f1")


def _final_rows(final):
    """The summary rows of the log's final line: why training stopped, the weights kept, the metrics."""
    rows = []
    if isinstance(final.get("stopped"), str):
        rows.append(("training stopped", html.escape(final["stopped"])))
    if _is_number(final.get("kept_epoch")):
        rows.append(("weights kept", f"epoch {final['kept_epoch']}'s" + (
            " (the best; early stopping restored them)" if final.get("restored") else " (the last)")))
    rows.append(("task", html.escape(final["task"])))
    rows.append(("rows evaluated", html.escape(rows_label(final))))
    if isinstance(final.get("classes"), list):
        rows.append(("classes", html.escape(", ".join(map(str, final["classes"])))))
    metrics = final.get("metrics") or {}
    keys = list(metrics) if final["task"] == "regression" else [k for k in CLASSIFIER_METRICS if k in metrics]
    for key in keys:
        if _is_number(metrics[key]) or metrics[key] is None:
            rows.append((html.escape(key), _fmt(metrics[key], 6)))
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


def render_html(records, final=None, figs=None, title=None, live=None, undrawn=(), ended=None):
    """The report page as a string: summary, every plot as an inlined PNG, the table of epoch records.

    ``figs``: {name: Figure or PNG bytes} (default: :func:`figures` of the records); ``undrawn``: lines
    for plots already left out (:func:`~gradloop.report.plots.drawn`), said on the page.
    ``live``: for a page of a run still training, ``{"epochs": N, "refresh": SECONDS}``: the page
    says how far the run is and reloads itself every SECONDS; None (default): a static page.
    ``ended``: how a run that did not finish ended (it diverged, was interrupted), said at the top.
    """
    figs = (figures(records, final) if records else {}) if figs is None else figs
    pngs, left = drawn(figs)
    undrawn = [*undrawn, *left]
    title = html.escape(title or "training run")
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        # Nothing may load from anywhere: the page is the whole report.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        *([] if live is None else [f'<meta http-equiv="refresh" content="{int(live["refresh"])}">']),
        f"<title>gradloop report: {title}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
        "<h1>gradloop run report</h1>", f'<p class="source">{title}</p>',
        *([] if live is None else [_live_banner(records, live)]),
        *([] if ended is None else [f'<p class="live" id="ended">This run did not finish: {html.escape(ended)}</p>']),
        "<h2>Summary</h2>", _table(None, _summary_rows(records, final)),
        *_health(records),
        "<h2>Plots</h2>", '<div class="plots">',
    ]
    parts += [f"<p>{html.escape(note)}</p>" for note in undrawn]
    for name, png in pngs.items():
        data = base64.b64encode(png).decode("ascii")
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


def _live_banner(records, live):
    """The line a live page opens with: the epoch reached, and that the page reloads itself."""
    done = records[-1]["epoch"] if records else 0
    return (f'<p class="live" id="live">Training: epoch {done} of {int(live["epochs"])} done; this page '
            f'reloads itself every {int(live["refresh"])} s until the run ends.</p>')


def _health(records):
    """The "Health" section: the diagnostics' findings in the log (none: no section). A log is read
    from a file: only the text fields of well-formed findings are shown, escaped."""
    rows = []
    for record in records:
        for finding in record.get("findings") or []:
            if isinstance(finding, dict) and all(isinstance(finding.get(k), str) for k in ("where", "message",
                                                                                          "remedy")):
                rows.append([str(record.get("epoch")), html.escape(finding["where"]), html.escape(finding["message"]),
                             html.escape(finding["remedy"])])
    if not rows:
        return []
    findings = _table(["epoch", "where", "finding", "remedy"], rows)
    return ["<h2>Health</h2>", f'<div class="scroll" id="health">{findings}</div>']


def write_html(path, records, final=None, figs=None, title=None):
    """Write the report page to ``path``, atomically: one self-contained HTML file, no network needed.

    Args:
        path: the HTML file; its folder must exist.
        records, final: as returned by :func:`read_log`.
        figs: {name: Figure or PNG bytes} to inline (default: :func:`figures` of the records).
        title: a line under the heading (e.g. the log's file name).
    """
    atomic_write_bytes(path, render_html(records, final, figs, title).encode("utf-8"), "report")
