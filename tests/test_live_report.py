"""The live report (``train --report``, :class:`gradloop.callbacks.LiveReport`) and what the report says.

The pages are read as a browser has them: headless Chromium loads the live page in the
middle of a run and the final page after it, and lays the report out at a desktop's and a
phone's width. The final page is compared byte for byte with what ``gradloop report``
writes from the run's log.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import gradloop
from browser import dom, layout, needs_chromium
from gradloop.callbacks import Callback, LiveReport
from gradloop.callbacks import livereport as livereport_module
from gradloop.cli import main
from gradloop.optimizers import SGD

REFRESH = '<meta http-equiv="refresh"'


def run(capsys, *argv):
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A regression CSV (features a, b) and a 3-class CSV with text labels."""
    folder = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 2))
    (folder / "lin.csv").write_text("a,b,y\n" + "".join(
        f"{a},{b},{3 * a - 2 * b + 1 + 0.1 * e}\n" for (a, b), e in zip(x, rng.normal(size=80))))
    labels = np.where(x[:, 0] + x[:, 1] > 0.5, "high", np.where(x[:, 0] > 0, "mid", "low"))
    (folder / "cls.csv").write_text("a,b,label\n" + "".join(f"{a},{b},{c}\n" for (a, b), c in zip(x, labels)))
    return folder


def summary(page):
    """{row name: cell text} of the report's summary table."""
    table = page[page.index('<table class="summary">'):]
    table = table[:table.index("</table>")]
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table))


# ---------------------------------------------------------------- the command line
def test_final_report_is_the_page_gradloop_report_writes_from_the_log(data, tmp_path, capsys):
    log, page, again = tmp_path / "run.jsonl", tmp_path / "run.html", tmp_path / "again.html"
    status, out, err = run(capsys, "train", data / "lin.csv", "--target", "y", "--epochs", "20", "--val-split", "0.2",
                           "--log", log, "--report", page)
    assert status == 0 and err == ""
    assert run(capsys, "report", log, "-o", again)[0] == 0
    assert page.read_bytes() == again.read_bytes()
    html = page.read_text()
    assert REFRESH not in html and 'id="live"' not in html  # the final page is static
    rows = summary(html)
    assert rows["epochs logged"] == "20 (epoch 1 to 20)"
    assert rows["training stopped"] == "after its last epoch (20)"
    assert rows["weights kept"] == "epoch 20's (the last)"
    assert 'id="generalization_gap"' in html
    # The weights' legend names the features: the final line carries them to the report.
    records, final = gradloop.report.read_log(log)
    assert final["feature_names"] == ["a", "b"]
    legend = [line.get_label() for line in gradloop.report.figures(records, final)["weights"].axes[0].get_lines()]
    assert legend == ["weights[a]", "weights[b]", "bias"]


def test_report_says_why_training_stopped_and_whose_weights_were_kept(data, tmp_path, capsys):
    page = tmp_path / "run.html"
    status, out, _ = run(capsys, "train", data / "lin.csv", "--target", "y", "--epochs", "500", "--lr", "0.05",
                         "--val-split", "0.3", "--early-stopping", "2", "--report", page)
    assert status == 0
    stop = re.search(r"gradloop: (early stopping at epoch (\d+): .*best .* at epoch (\d+))", out)
    assert stop is not None, out
    rows = summary(page.read_text())
    assert rows["training stopped"] == stop[1]
    assert rows["weights kept"] == f"epoch {stop[3]}'s (the best; early stopping restored them)"
    # Without a --log the page still has the run's evaluation: the final line, built in memory.
    assert rows["task"] == "regression" and rows["rows evaluated"] == "test rows, 16"
    assert float(rows["r2"]) > 0.9


def test_classifier_report_shows_classification_measures_only(data, tmp_path, capsys):
    log, page = tmp_path / "cls.jsonl", tmp_path / "cls.html"
    assert run(capsys, "train", data / "cls.csv", "--target", "label", "--loss", "cross-entropy", "--model", "mlp",
               "--hidden", "8", "--optimizer", "adam", "--lr", "0.05", "--epochs", "10", "--log", log,
               "--report", page)[0] == 0
    rows = summary(page.read_text())
    final = gradloop.report.read_log(log)[1]
    assert rows["classes"] == "high, low, mid"
    for key in ("accuracy", "precision", "recall", "f1"):
        assert float(rows[key]) == pytest.approx(final["metrics"][key], rel=1e-5)
    # The log keeps the Brier-style regression numbers of the probabilities; the page does not show them.
    assert "mse" in final["metrics"] and not {"mse", "rmse", "mae", "r2"} & set(rows)
    assert not any("probabilities" in name for name in rows)


def test_resumed_run_report_holds_every_epoch(data, tmp_path, capsys):
    log, page, ckpt, again = tmp_path / "run.jsonl", tmp_path / "run.html", tmp_path / "ckpt", tmp_path / "b.html"
    assert run(capsys, "train", data / "lin.csv", "--target", "y", "--epochs", "4", "--checkpoint", ckpt,
               "--log", log, "--report", page)[0] == 0
    assert run(capsys, "train", "--resume", ckpt, "--epochs", "9", "--log", log, "--report", page)[0] == 0
    assert summary(page.read_text())["epochs logged"] == "9 (epoch 1 to 9)"
    assert run(capsys, "report", log, "-o", again)[0] == 0
    assert page.read_bytes() == again.read_bytes()


def test_diverged_run_leaves_a_static_report_of_the_epochs_before(data, tmp_path, capsys):
    log, page = tmp_path / "run.jsonl", tmp_path / "run.html"
    status, _, err = run(capsys, "train", data / "lin.csv", "--target", "y", "--lr", "3", "--epochs", "50",
                         "--log", log, "--report", page)
    assert status == 3 and "diverged" in err
    epochs = len(gradloop.report.read_log(log)[0])
    html = page.read_text()
    assert REFRESH not in html and summary(html)["epochs logged"] == f"{epochs} (epoch 1 to {epochs})"


@pytest.mark.parametrize("where", ["log", "data", "folder", "target"])
def test_refused_runs_write_no_report(data, tmp_path, capsys, where):
    page = tmp_path / "run.html"
    argv = {"log": ["--log", page, "--report", page],
            "data": ["--report", tmp_path / "copy.csv"],
            "folder": ["--report", tmp_path / "missing" / "run.html"],
            "target": ["--report", page]}[where]
    (tmp_path / "copy.csv").write_bytes((data / "lin.csv").read_bytes())
    data_file = tmp_path / "copy.csv" if where == "data" else data / "lin.csv"
    target = "nope" if where == "target" else "y"
    status, _, err = run(capsys, "train", data_file, "--target", target, "--epochs", "3", *argv)
    assert status == 2 and err.startswith("gradloop: error: ") and err.count("\n") == 1
    assert {"log": "--report", "data": "DATA file", "folder": "missing", "target": "nope"}[where] in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.csv"]
    assert (tmp_path / "copy.csv").read_bytes() == (data / "lin.csv").read_bytes()


# ---------------------------------------------------------------- the callback
class _PageReader(Callback):
    """After each epoch (and after the live report has had its turn), keep the page as it is on disk."""

    def __init__(self, path):
        self.path, self.pages = path, []

    def on_epoch_end(self, record, trainer):
        self.pages.append(self.path.read_text())


def _linear_fit(callbacks, epochs=4):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    model = gradloop.models.linear(3, 1)
    return gradloop.fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=epochs, callbacks=callbacks,
                        validation_split=0.25)


def test_live_report_is_rewritten_while_training_and_static_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(livereport_module, "COST_FACTOR", 0.0)  # rewrite at every epoch (interval 0)
    page = tmp_path / "run.html"
    report, reader = LiveReport(page, interval=0), _PageReader(page)
    _linear_fit([report, reader], epochs=4)
    for epoch, html in enumerate(reader.pages[:-1], 1):
        assert REFRESH in html and f"Training: epoch {epoch} of 4 done" in html
        assert summary(html)["epochs logged"] == f"{epoch} (epoch 1 to {epoch})"
    # The last epoch is not written live: the final page follows at once.
    assert "epoch 3 of 4 done" in reader.pages[-1]
    final = page.read_text()
    assert REFRESH not in final and "Training:" not in final
    assert summary(final)["epochs logged"] == "4 (epoch 1 to 4)"
    assert report.writes == 1 + 3 + 1  # the start, epochs 1 to 3, the end


def test_live_report_writes_at_most_every_interval(tmp_path):
    page = tmp_path / "run.html"
    report = LiveReport(page, interval=3600)
    _linear_fit([report], epochs=30)
    assert report.writes == 2  # the start and the end
    assert "30 (epoch 1 to 30)" in page.read_text()


def test_live_report_before_the_first_epoch(tmp_path):
    page = tmp_path / "run.html"
    seen = []

    class Peek(Callback):
        def on_train_begin(self, trainer):
            seen.append(page.read_text())

    _linear_fit([LiveReport(page), Peek()], epochs=1)
    assert REFRESH in seen[0] and "Training: epoch 0 of 1 done" in seen[0]
    assert summary(seen[0]) == {"epochs logged": "none yet"}


# ---------------------------------------------------------------- in a real browser
@needs_chromium
def test_browser_shows_the_live_epoch_during_the_run_and_the_summary_after(tmp_path, monkeypatch):
    monkeypatch.setattr(livereport_module, "COST_FACTOR", 0.0)  # rewrite at every epoch (interval 0)
    page = tmp_path / "run.html"
    seen = {}

    class Browser(Callback):
        """At epoch 3, while training is paused in this callback, Chromium loads the live page."""

        def on_epoch_end(self, record, trainer):
            if trainer.epoch == 3:
                seen["live"] = dom(page, tmp_path / "profile")

    _linear_fit([LiveReport(page, interval=0), Browser()], epochs=8)
    live = seen["live"]
    assert re.search(r'<p class="live" id="live">Training: epoch 3 of 8 done', live), live[:2000]
    assert REFRESH in live and "3 (epoch 1 to 3)" in live
    final = dom(page, tmp_path / "profile")
    assert 'id="live"' not in final and REFRESH not in final
    assert "8 (epoch 1 to 8)" in final and final.count("<img ") >= 3


@needs_chromium
def test_report_layout_two_plots_across_on_a_wide_page_one_on_a_phone(data, tmp_path, capsys):
    log, page = tmp_path / "run.jsonl", tmp_path / "run.html"
    assert run(capsys, "train", data / "lin.csv", "--target", "y", "--epochs", "5", "--val-split", "0.2",
               "--log", log, "--report", page)[0] == 0
    wide = layout(page, tmp_path / "probe.html", tmp_path / "profile", 1200)
    narrow = layout(page, tmp_path / "probe.html", tmp_path / "profile", 400)
    for shape in (wide, narrow):
        assert len(shape["figures"]) == 6
        assert shape["width"] <= shape["viewport"]  # nothing wider than the window: no sideways scrolling
    # Wide: in pairs, side by side (same top, the second to the right of the first).
    (l0, t0, w0), (l1, t1, w1) = wide["figures"][:2]
    assert t0 == t1 and l1 >= l0 + w0 and w0 >= 450
    # Narrow (Chromium's headless window is at least 500 px): one column, each plot below the last.
    lefts = {round(left) for left, _, _ in narrow["figures"]}
    tops = [top for _, top, _ in narrow["figures"]]
    assert len(lefts) == 1 and tops == sorted(tops) and len(set(tops)) == 6
    assert all(width <= narrow["viewport"] for _, _, width in narrow["figures"])


def test_a_run_that_fails_on_its_input_keeps_the_last_report(data, tmp_path, capsys):
    page = tmp_path / "run.html"
    assert run(capsys, "train", data / "lin.csv", "--target", "y", "--epochs", "3", "--report", page)[0] == 0
    before = page.read_bytes()
    # A starting loss that is not finite (the weights overflow it): no epoch runs, the old page stays.
    bad = tmp_path / "huge.csv"
    bad.write_text("a,y\n1e200,1\n2e200,2\n3e200,3\n4e200,4\n5e200,5\n")
    status, _, err = run(capsys, "train", bad, "--target", "y", "--lr", "0.1", "--test-size", "0", "--report", page)
    assert status in (2, 3) and err.count("\n") == 1
    assert page.read_bytes() == before
    # The same failure with no page there before leaves none.
    fresh = tmp_path / "fresh.html"
    status, _, _ = run(capsys, "train", bad, "--target", "y", "--lr", "0.1", "--test-size", "0", "--report", fresh)
    assert status in (2, 3) and not fresh.exists()


def test_zero_epochs_write_no_report(data, tmp_path, capsys):
    page, log = tmp_path / "run.html", tmp_path / "run.jsonl"
    assert run(capsys, "train", data / "lin.csv", "--target", "y", "--epochs", "0", "--log", log,
               "--report", page)[0] == 0
    assert not page.exists()


def test_out_of_core_run_report_is_the_page_of_its_log(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(2)
    folder = tmp_path / "data"
    folder.mkdir()
    for part in range(2):
        x = rng.normal(size=(300, 2))
        pq.write_table(pa.table({"a": x[:, 0], "b": x[:, 1], "y": x @ [1.5, -2.0] + 0.5}),
                       folder / f"part-{part}.parquet", row_group_size=100)
    log, page, again = tmp_path / "run.jsonl", tmp_path / "run.html", tmp_path / "again.html"
    assert run(capsys, "train", folder, "--target", "y", "--epochs", "6", "--log", log, "--report", page)[0] == 0
    assert run(capsys, "report", log, "-o", again)[0] == 0
    assert page.read_bytes() == again.read_bytes()


def test_the_final_page_of_a_run_that_did_not_finish_says_how_it_ended(capsys, data, tmp_path, monkeypatch):
    import os
    import signal

    import gradloop.cli.train as train_module

    page = tmp_path / "diverged.html"
    status, out, err = run(capsys, "train", data / "lin.csv", "--target", "y", "--lr", "5", "--epochs", "50",
                           "--report", page, "--log", tmp_path / "diverged.jsonl")
    assert status == 3 and "This run did not finish: it diverged at epoch " in page.read_text()

    class CtrlCAtEpochTwo(Callback):
        wants_records = False

        def on_epoch_end(self, record, trainer):
            if trainer.epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)

    real = train_module.run_callbacks
    monkeypatch.setattr(train_module, "run_callbacks", lambda *a: [*real(*a), CtrlCAtEpochTwo()])
    page = tmp_path / "interrupted.html"
    status, out, err = run(capsys, "train", data / "lin.csv", "--target", "y", "--epochs", "50", "--report", page)
    assert status == 130
    assert "This run did not finish: it was interrupted by SIGINT after epoch 2" in page.read_text()
    monkeypatch.setattr(train_module, "run_callbacks", real)
    status, out, err = run(capsys, "train", data / "lin.csv", "--target", "y", "--epochs", "5", "--report", page)
    assert status == 0 and "did not finish" not in page.read_text()  # a finished run says nothing of the kind
