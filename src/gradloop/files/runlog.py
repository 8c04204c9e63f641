"""Run logs, read back: what ``gradloop train --log`` wrote, checked line by line.

A log is one JSON object per epoch (:meth:`gradloop.records.EpochRecord.to_dict`) and,
last, one line ``{"final": true, ...}`` with the task, the held-out targets and
predictions, the classes, the confusion matrix and the metrics. A CSV file with one row
per epoch (at least ``epoch`` and ``loss`` columns, e.g. Keras' ``CSVLogger``) is read too.
A log is a file from elsewhere: every number must be finite and fit in a float, and
nothing the reader builds is larger than the log itself.

    >>> records, final = read_log("run.jsonl")
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..data.tables import _missing, _read_csv
from ..errors import DataError
from ..models import TASKS

# Numeric fields of an epoch record.
NUMERIC = ("loss", "new_loss", "val_loss", "lr", "grad_norm", "seconds")


def read_log(path):
    """Read a training log: ``(records, final)``.

    Args:
        path: a JSON-lines log (``gradloop train --log``) or a ``.csv`` file with
            one row per epoch and at least the columns ``epoch`` and ``loss``.

    Returns:
        records: one dict per epoch, in file order (keys as in
            ``EpochRecord.to_dict``; a missing or non-finite number is None).
        final: the ``{"final": true, ...}`` line (the last one, if several), or None. Its
            optional keys ``stopped`` (why training stopped), ``kept_epoch`` and ``restored``
            (whose weights the model kept) and ``feature_names`` are shown by the report.

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
    for key in NUMERIC:
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
    names = obj.get("feature_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise DataError(f"{where}: 'feature_names' must be a list of strings")
    if obj.get("stopped") is not None and not isinstance(obj["stopped"], str):
        raise DataError(f"{where}: 'stopped' must be a string (why training stopped)")
    kept = obj.get("kept_epoch")
    if kept is not None and not (isinstance(kept, int) and not isinstance(kept, bool) and kept >= 0):
        raise DataError(f"{where}: 'kept_epoch' must be a non-negative whole number")
    sweep = obj.get("lr_find")
    if sweep is not None and not _is_sweep(sweep):
        raise DataError(f"{where}: 'lr_find' must hold lists 'lrs' (positive) and 'losses' of equal length and "
                        "the numbers 'suggestion' (positive) and 'stable_lr' (or null)")
    return obj


def _is_sweep(sweep):
    """A --lr find sweep as the final line holds it, every number finite (the plot's axes need them)."""
    if not isinstance(sweep, dict):
        return False
    lrs, losses, stable = sweep.get("lrs"), sweep.get("losses"), sweep.get("stable_lr")
    return (isinstance(lrs, list) and isinstance(losses, list) and 2 <= len(lrs) == len(losses)
            and all(_is_number(v) and v > 0 for v in lrs) and all(_is_number(v) for v in losses)
            and _is_number(sweep.get("suggestion")) and sweep["suggestion"] > 0
            and (stable is None or (_is_number(stable) and stable > 0)))


def _read_csv_log(p, name):
    import pandas as pd  # lazy, on purpose: pandas is heavy and only CSV logs need it

    frame = _read_csv(p, name)  # the data reader's checks: text, header, field counts
    frame = frame.dropna(how="all")
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if missing := [c for c in ("epoch", "loss") if c not in columns]:
        raise DataError(f"{name}: no column {' and no column '.join(repr(c) for c in missing)}; a CSV log needs "
                        f"one row per epoch with at least 'epoch' and 'loss' (columns are {', '.join(columns)})")
    if frame.empty:
        raise DataError(f"{name}: holds no epoch records (the header has no rows under it)")
    for column in ("epoch",) + tuple(c for c in NUMERIC if c in columns):
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
