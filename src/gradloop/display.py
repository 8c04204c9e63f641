"""Compact tables for notebooks: the ``_repr_html_`` of a History, an EpochRecord, a LinearRun and a
saved model. Every value is escaped; arrays show their first entries."""

from __future__ import annotations

import html

import numpy as np

SHOWN = 6  # entries of an array shown in a cell


def cell(value):
    """A value as escaped text: numbers to 7 significant digits, arrays by their first entries."""
    if value is None:
        return "&mdash;"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.7g}"
    if isinstance(value, np.ndarray) or isinstance(value, list) and value and not isinstance(value[0], str):
        a = np.asarray(value, dtype=float).reshape(-1)
        more = f", ... ({a.size - SHOWN} more)" if a.size > SHOWN else ""
        return html.escape("[" + ", ".join(f"{v:.7g}" for v in a[:SHOWN]) + more + "]")
    return html.escape(str(value))


def table(title, rows, header=None):
    """An HTML table under a caption: ``rows`` of (name, value) pairs, or of values under ``header``."""
    caption = f"<caption style=\"text-align:left;font-weight:bold\">{html.escape(title)}</caption>"
    head = "" if header is None else "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"
    if header is None:
        body = "".join(f"<tr><th style=\"text-align:left\">{html.escape(str(k))}</th><td>{cell(v)}</td></tr>"
                       for k, v in rows)
    else:
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{caption}{head}{body}</table>"
