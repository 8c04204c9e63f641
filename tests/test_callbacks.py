"""Tests for gradloop.callbacks: the chapter's report printer, the JSON-lines logger, the progress printer."""

from __future__ import annotations

import ast
import io
import json
import math
import re

import numpy as np
import pytest

import gradloop
from gradloop import ConfigError, DivergenceError, fit
from gradloop.callbacks import JSONLinesLogger, ProgressPrinter, TracePrinter
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD


def make_data(n=30, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = X @ rng.standard_normal(d) + 0.3 + 0.1 * rng.standard_normal(n)
    return X, y


ITEMS = [
    "Epoch {k}:",
    "Predicted output for the first 5 samples",
    "Actual output for the first 5 samples",
    "Difference between actual and predicted",
    "Current loss",
    "Gradients for this epoch",
    "Updated weights after this epoch",
    "New prediction for the first 5 samples after the update",
    "New loss after the update",
]


def epochs_shown(text):
    return [int(line.split()[1].rstrip(":")) for line in text.splitlines() if line.startswith("Epoch ")]


def no_nan_constant(name):
    raise ValueError(f"not valid JSON: {name}")


# ------------------------------------------------------------ TracePrinter


def test_trace_printer_nine_items_in_order_from_the_record():
    X, y = make_data()
    out = io.StringIO()
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=3, callbacks=[TracePrinter(file=out)],
            keep_records=True)
    text = out.getvalue()
    assert epochs_shown(text) == [1, 2, 3]
    blocks = ["Epoch " + b for b in text.split("Epoch ")[1:]]
    for k, (block, record) in enumerate(zip(blocks, h.records), start=1):
        positions = [block.find(item.format(k=k)) for item in ITEMS]
        assert all(p >= 0 for p in positions) and positions == sorted(positions), block
        assert f"Current loss: {record.loss:.10g}" in block
        assert f"New loss after the update: {record.new_loss:.10g}" in block
        # the heads as printed are the record's numbers
        line = next(s for s in block.splitlines() if "Predicted output" in s)
        printed = np.array(ast.literal_eval(line.split(": ", 1)[1]))
        np.testing.assert_allclose(printed, record.pred_head[:, 0], atol=1e-6)
        line = next(s for s in block.splitlines() if "Difference" in s)
        printed = np.array(ast.literal_eval(line.split(": ", 1)[1]))
        np.testing.assert_allclose(printed, record.diff_head[:, 0], atol=1e-6)


def test_trace_printer_every_first_last_and_limit():
    X, y = make_data()
    out = io.StringIO()
    fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=10, callbacks=[TracePrinter(every=4, file=out)])
    assert epochs_shown(out.getvalue()) == [1, 4, 8, 10]
    out = io.StringIO()
    fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=10, callbacks=[TracePrinter(limit=2, file=out)])
    assert epochs_shown(out.getvalue()) == [1, 2]


def test_trace_printer_summarises_big_parameters_and_labels_batches():
    X, y = make_data(n=40)
    out = io.StringIO()
    fit(mlp([3, 6, 1], "tanh", seed=0), X, y, loss="mse", optimizer=SGD(0.05), epochs=1, batch_size=16,
        shuffle=False, validation_data=(X[:10], y[:10]), callbacks=[TracePrinter(file=out)])
    text = out.getvalue()
    assert "shape (3, 6), norm" in text  # 18 entries > PRINT_LIMIT
    assert "(first batch)" in text and "mean over the epoch's 3 batches" in text
    assert "New loss (final weights, whole training set)" in text
    assert "Validation loss:" in text


def test_trace_printer_multi_output_heads_are_rows():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((12, 2))
    Y = np.stack([X[:, 0], -X[:, 1]], axis=1)
    out = io.StringIO()
    fit(linear(2, 2), X, Y, loss="mse", optimizer=SGD(0.1), epochs=1, callbacks=[TracePrinter(file=out)])
    text = out.getvalue()

    def printed(label):  # the nested list after "label...: ", as numbers (it spans lines)
        return np.array(ast.literal_eval(re.search(label + r"[^:]*: (\[\[.*?\]\])", text, re.DOTALL)[1]))

    actual, predicted = printed("Actual output"), printed("Predicted output")
    assert actual.shape == predicted.shape == (5, 2)  # one row per sample, one column per output
    np.testing.assert_allclose(actual, Y[:5], atol=5e-7)  # printed to 6 decimals
    np.testing.assert_array_equal(predicted, np.zeros((5, 2)))  # the zero weights' predictions
    np.testing.assert_allclose(printed("Difference"), Y[:5], atol=5e-7)


def test_verbose_is_a_trace_printer_on_stdout(capsys):
    X, y = make_data()
    fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=2, verbose=True)
    via_verbose = capsys.readouterr().out
    out = io.StringIO()
    fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=2, callbacks=[TracePrinter(file=out)])
    assert epochs_shown(via_verbose) == epochs_shown(out.getvalue()) == [1, 2]
    assert len(via_verbose.splitlines()) == len(out.getvalue().splitlines())


# ------------------------------------------------------------ JSONLinesLogger


def read_jsonl(path):
    return [json.loads(line, parse_constant=no_nan_constant) for line in path.read_text().splitlines()]


def test_jsonl_one_valid_object_per_epoch(tmp_path):
    X, y = make_data()
    path = tmp_path / "run.jsonl"
    logger = JSONLinesLogger(path)
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=4, callbacks=[logger], keep_records=True)
    lines = read_jsonl(path)
    assert [d["epoch"] for d in lines] == [1, 2, 3, 4]
    for d, record in zip(lines, h.records):
        for key in ("epoch", "loss", "new_loss", "gradients", "weights", "pred_head", "target_head",
                    "diff_head", "new_pred_head", "lr", "grad_norm", "seconds"):
            assert key in d
        assert d == json.loads(json.dumps(record.to_dict()))
        assert d["loss"] == record.loss and d["new_loss"] == record.new_loss
        np.testing.assert_array_equal(np.array(d["weights"]["0.W"]), record.weights[0])
        np.testing.assert_array_equal(np.array(d["gradients"]["0.b"]), record.gradients[1])
    assert logger._file is None  # closed


def test_jsonl_every(tmp_path):
    X, y = make_data()
    path = tmp_path / "run.jsonl"
    fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=7, callbacks=[JSONLinesLogger(path, every=3)])
    assert [d["epoch"] for d in read_jsonl(path)] == [1, 3, 6, 7]


def test_jsonl_same_record_as_the_report(tmp_path):
    X, y = make_data()
    path = tmp_path / "run.jsonl"
    out = io.StringIO()
    fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=2,
        callbacks=[TracePrinter(file=out), JSONLinesLogger(path)])
    for d in read_jsonl(path):
        assert f"Current loss: {d['loss']:.10g}" in out.getvalue()
        assert f"New loss after the update: {d['new_loss']:.10g}" in out.getvalue()


def test_jsonl_closes_the_file_when_training_diverges(tmp_path):
    X, y = make_data()
    path = tmp_path / "run.jsonl"
    logger = JSONLinesLogger(path)
    with pytest.raises(DivergenceError) as info:
        fit(linear(3), X, y, loss="mse", optimizer=SGD(30.0), epochs=100, callbacks=[logger])
    assert logger._file is None
    lines = read_jsonl(path)  # every line whole and valid
    assert [d["epoch"] for d in lines] == list(range(1, info.value.epoch))
    assert all(math.isfinite(d["new_loss"]) for d in lines)


def test_jsonl_closes_the_file_when_train_diverges(tmp_path):
    X, y = make_data()
    path = tmp_path / "run.jsonl"
    logger = JSONLinesLogger(path)
    L = gradloop.lipschitz(X, bias=False)
    with pytest.raises(DivergenceError):
        gradloop.fit_linear(X, y, np.zeros(3), 4 / L, 500, callbacks=[logger])
    assert logger._file is None
    assert len(read_jsonl(path)) > 0


def test_jsonl_no_file_for_bad_input(tmp_path):
    X, y = make_data()
    path = tmp_path / "run.jsonl"
    with pytest.raises(gradloop.ConfigError):
        gradloop.fit_linear(X, y, np.zeros(3), -1.0, 5, callbacks=[JSONLinesLogger(path)])
    with pytest.raises(gradloop.ConfigError):
        fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=5, batch_size=0,
            callbacks=[JSONLinesLogger(path)])
    assert not path.exists()


# ------------------------------------------------------------ ProgressPrinter


def test_progress_printer_reads_history_only():
    X, y = make_data()
    out = io.StringIO()
    h = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.1), epochs=10, callbacks=[ProgressPrinter(lines=5, file=out)])
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("epoch  1/10") and lines[-1].startswith("epoch 10/10")
    assert f"loss {h.history['loss'][-1]:.6g}" in lines[-1]
    assert f"after update {h.history['new_loss'][-1]:.6g}" in lines[-1]
    assert h.records == []


def test_rich_progress_draws_a_bar_with_the_losses():
    from rich.console import Console

    from gradloop.callbacks import RichProgress

    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system=None)
    history = fit(linear(3), X, y, loss="mse", optimizer=SGD(0.05), epochs=6, validation_split=0.25,
                  callbacks=[RichProgress(console=console)])
    drawn = screen.getvalue()
    assert "6/6" in drawn
    assert f"loss {history.history['loss'][-1]:.5g}" in drawn
    assert f"val loss {history.history['val_loss'][-1]:.5g}" in drawn


def test_a_callback_must_be_a_callback_and_declares_what_the_loop_asks():
    from gradloop.callbacks import Callback

    class DuckTyped:  # hooks, but not a Callback: what it declares would be guessed
        wants_records = False

        def on_train_begin(self, trainer):
            pass

    X, y = np.ones((4, 1)), np.ones(4)
    model = linear(1)
    before = [p.copy() for p in model.parameters()]
    with pytest.raises(ConfigError, match=r"callbacks\[0\] is a DuckTyped, not a gradloop.callbacks.Callback"):
        fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=2, callbacks=[DuckTyped()])
    assert all(np.array_equal(a, b) for a, b in zip(before, model.parameters()))
    plain = Callback()
    assert (plain.wants_records, plain.wants_batches, plain.wants_blocks, plain.terminates_on_nan) == \
        (True, False, False, False)
    assert plain.output_places() == () and plain.state_dict() is None
