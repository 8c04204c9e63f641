"""Tests of ``gradloop report`` and :mod:`gradloop.report`: reading logs, plots, the HTML page.

The logs are real: written by ``gradloop train --log`` on small CSV files. What the
report shows is checked against the logged numbers themselves (table cells, line
data, the final line's targets and predictions), and one test renders the page in
headless Chromium and looks at the screenshot's pixels.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import gradloop
from browser import needs_chromium, screenshot
from gradloop.cli import main
from gradloop.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- helpers
def run(capsys, *argv):
    """gradloop ARGV in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def inlined_pngs(page):
    """The bytes of every <img src="data:image/png;base64,..."> in the page."""
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def epoch_table(page):
    """{column: [cell text]} of the epoch records table."""
    table = page[page.index('id="epochs"'):]
    header = re.findall(r"<th>(.*?)</th>", table[:table.index("</thead>")])
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table[table.index("<tbody>"):])]
    assert all(len(row) == len(header) for row in rows)
    return {name: [row[i] for row in rows] for i, name in enumerate(header)}


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """Real training logs: a linear regression (chapter model, with validation rows: val_loss) and an MLP
    classifier on string labels (no validation rows: no val_loss)."""
    folder = tmp_path_factory.mktemp("logs")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    with open(folder / "lin.csv", "w") as fh:
        fh.write("a,b,y\n" + "".join(f"{a},{b},{3 * a - 2 * b + 1 + 0.1 * e}\n"
                                     for (a, b), e in zip(x, rng.normal(size=60))))
    labels = np.where(x[:, 0] + x[:, 1] > 0.5, "high", np.where(x[:, 0] > 0, "mid", "low"))
    with open(folder / "cls.csv", "w") as fh:
        fh.write("a,b,label\n" + "".join(f"{a},{b},{c}\n" for (a, b), c in zip(x, labels)))
    argv = {
        "regression": ["train", folder / "lin.csv", "--target", "y", "--test-size", "0.25", "--val-split", "0.2",
                       "--epochs", "12", "--log", folder / "reg.jsonl"],
        "multiclass": ["train", folder / "cls.csv", "--target", "label", "--model", "mlp", "--hidden", "6",
                       "--loss", "cross-entropy", "--optimizer", "adam", "--lr", "0.05", "--standardize",
                       "--test-size", "0.25", "--epochs", "15", "--log", folder / "cls.jsonl"],
    }
    for args in argv.values():
        assert main([str(a) for a in args]) == 0
    return {"regression": folder / "reg.jsonl", "multiclass": folder / "cls.jsonl", "folder": folder}


# ---------------------------------------------------------------- the log's final line
def test_train_log_ends_with_the_final_line_of_a_regression(logs):
    lines = read_jsonl(logs["regression"])
    *records, final = lines
    assert [r["epoch"] for r in records] == list(range(1, 13)) and not any("final" in r for r in records)
    assert final["final"] is True and final["task"] == "regression" and final["classes"] is None
    assert final["split"] == "test" and final["rows"] == 15 == len(final["y_true"]) == len(final["y_pred"])
    # The test rows' targets come from the data file; the metrics agree with the logged predictions.
    data = np.loadtxt(logs["folder"] / "lin.csv", delimiter=",", skiprows=1)
    assert set(final["y_true"]) <= set(data[:, 2].tolist())
    residual = np.array(final["y_true"]) - np.array(final["y_pred"])
    assert final["metrics"]["mse"] == pytest.approx(np.mean(residual ** 2), rel=1e-12)
    assert final["metrics"]["mae"] == pytest.approx(np.mean(np.abs(residual)), rel=1e-12)
    assert "confusion_matrix" not in final


def test_train_log_ends_with_the_final_line_of_a_classifier(logs):
    final = read_jsonl(logs["multiclass"])[-1]
    assert final["task"] == "multiclass" and final["classes"] == ["high", "low", "mid"]
    assert set(final["y_true"]) | set(final["y_pred"]) <= set(final["classes"])  # labels, not indices
    counts = np.zeros((3, 3), dtype=int)
    for t, p in zip(final["y_true"], final["y_pred"]):
        counts[final["classes"].index(t), final["classes"].index(p)] += 1
    assert final["confusion_matrix"] == counts.tolist()
    assert final["metrics"]["accuracy"] == pytest.approx(np.trace(counts) / counts.sum())


def test_final_line_keeps_at_most_5000_rows_and_uses_training_rows_without_a_test_set(tmp_path, capsys):
    data, log = tmp_path / "big.csv", tmp_path / "run.jsonl"
    x = np.arange(6000) / 6000
    data.write_text("x,y\n" + "".join(f"{v},{2 * v}\n" for v in x))
    status, _, err = run(capsys, "train", data, "--target", "y", "--test-size", "0", "--epochs", "2", "--log", log)
    assert status == 0 and err == ""
    final = read_jsonl(log)[-1]
    assert final["split"] == "training" and final["rows"] == 6000
    assert len(final["y_true"]) == len(final["y_pred"]) == 5000
    assert final["y_true"] == pytest.approx((2 * x[:5000]).tolist())  # --test-size 0 keeps file order


# ---------------------------------------------------------------- the HTML page
@pytest.mark.parametrize("task, plots", [
    ("regression", ["loss", "generalization_gap", "learning_rate", "gradient_norm", "weights", "predicted_vs_actual"]),
    ("multiclass", ["loss", "learning_rate", "gradient_norm", "confusion_matrix"]),
])
def test_report_writes_one_self_contained_page(logs, tmp_path, capsys, task, plots):
    out = tmp_path / "r.html"
    status, stdout, err = run(capsys, "report", logs[task], "-o", out)
    assert status == 0 and err == ""
    assert str(out) in stdout
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    # Every plot inlined as a PNG, nothing to fetch: no URL, no script, no external stylesheet or font.
    images = inlined_pngs(page)
    assert len(images) == page.count("<img ") == len(plots)
    assert all(png.startswith(PNG_SIGNATURE) and len(png) > 5000 for png in images)
    assert [f'id="{name}"' in page for name in plots] == [True] * len(plots)
    for needle in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert needle not in page
    # The table: one row per epoch, the logged losses.
    records = read_jsonl(logs[task])[:-1]
    table = epoch_table(page)
    assert [int(e) for e in table["epoch"]] == [r["epoch"] for r in records]
    columns = ["loss", "new_loss"] + (["val_loss"] if task == "regression" else [])
    for column in columns:
        assert [float(v) for v in table[column]] == pytest.approx([r[column] for r in records], rel=1e-9)
    if task == "multiclass":
        assert "val_loss" not in table and all(r["val_loss"] is None for r in records)  # no empty column
    metric = "accuracy" if task == "multiclass" else "r2"
    assert f"{read_jsonl(logs[task])[-1]['metrics'][metric]:.6g}" in page


def test_png_dir_gets_one_png_per_plot(logs, tmp_path, capsys):
    from matplotlib.image import imread

    folder = tmp_path / "plots" / "run1"  # created, parents too
    status, _, err = run(capsys, "report", logs["regression"], "--png", folder)
    assert status == 0 and err == ""
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(f"{n}.png" for n in ["loss", "generalization_gap", "learning_rate", "gradient_norm",
                                                "weights", "predicted_vs_actual"])
    for path in folder.iterdir():
        assert path.read_bytes().startswith(PNG_SIGNATURE)
        height, width, channels = imread(path).shape
        assert 250 <= height <= 1000 and 300 <= width <= 1200 and channels in (3, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plots"]  # --png alone writes no HTML


def test_report_without_o_writes_the_html_beside_the_log(logs, tmp_path, capsys):
    log = tmp_path / "run.jsonl"
    log.write_bytes(logs["multiclass"].read_bytes())
    status, _, err = run(capsys, "report", log)
    assert status == 0 and err == ""
    assert (tmp_path / "run.html").read_text().count("data:image/png;base64,") == 4


def test_csv_log_with_a_validation_column(tmp_path, capsys):
    log, out = tmp_path / "keras.csv", tmp_path / "r.html"
    log.write_text("epoch,loss,val_loss,lr\n0,2.5,2.7,0.1\n1,1.25,1.5,0.1\n2,0.625,,0.05\n3,0.3125,0.5,0.05\n")
    status, _, err = run(capsys, "report", log, "-o", out)
    assert status == 0 and err == ""
    page = out.read_text()
    table = epoch_table(page)
    assert table["epoch"] == ["0", "1", "2", "3"] and table["val_loss"] == ["2.7", "1.5", "", "0.5"]
    assert len(inlined_pngs(page)) == 3  # loss (with val_loss), the generalization gap and learning rate
    from gradloop.report import figures, read_log

    # No new_loss in a Keras log: the gap is val_loss minus the epoch's (mean) loss; none where val_loss is missing.
    gap = figures(*read_log(log))["generalization_gap"].axes[0]
    assert gap.get_ylabel() == "val_loss - loss"
    assert np.array_equal(gap.get_lines()[0].get_ydata(), [2.7 - 2.5, 1.5 - 1.25, np.nan, 0.5 - 0.3125],
                          equal_nan=True)


# ---------------------------------------------------------------- the Python API
def test_plot_history_draws_the_history_of_fit():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradloop.models import linear
    from gradloop.optimizers import SGD
    from gradloop.report import plot_history

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    history = gradloop.fit(linear(3), X[:30], y[:30], loss="mse", optimizer=SGD(0.05), epochs=25,
                           validation_data=(X[30:], y[30:]))
    ax = plot_history(history)  # no axes: a new pyplot figure, as in a notebook
    try:
        lines = {line.get_label().split(" ")[0]: line for line in ax.get_lines()}
        assert set(lines) == {"loss", "new_loss", "val_loss"}
        for key, line in lines.items():
            assert line.get_xdata().tolist() == list(range(1, 26))
            assert line.get_ydata().tolist() == history.history[key]
        assert ax.get_xlabel() == "epoch"
    finally:
        plt.close(ax.figure)
    # The same curves from records on given axes, and from a plain dict of lists.
    from matplotlib.figure import Figure

    given = Figure().add_subplot()
    assert plot_history({"loss": [3.0, 2.0, 1.0]}, given) is given
    assert given.get_lines()[0].get_ydata().tolist() == [3.0, 2.0, 1.0]
    with pytest.raises(gradloop.ConfigError, match="plot_history: expected a gradloop History"):
        plot_history(42, given)


def test_figures_show_weight_trajectories_only_for_small_models(logs):
    from gradloop.report import figures, read_log

    records, final = read_log(logs["regression"])
    figs = figures(records, final)
    val = next(line for line in figs["loss"].axes[0].get_lines() if line.get_label().startswith("val_loss"))
    assert val.get_ydata().tolist() == [r["val_loss"] for r in records]
    lines = {line.get_label(): line for line in figs["weights"].axes[0].get_lines()}
    # The chapter's names for a linear model, each weight labelled by its feature (from the final line).
    assert final["feature_names"] == ["a", "b"]
    assert list(lines) == ["weights[a]", "weights[b]", "bias"]
    assert lines["weights[b]"].get_ydata().tolist() == [r["weights"]["0.W"][1][0] for r in records]
    # Without names (a log from elsewhere), by index.
    unnamed = {line.get_label() for line in figures(records, None)["weights"].axes[0].get_lines()}
    assert unnamed == {"weights[0]", "weights[1]", "bias"}
    # The generalization gap: validation loss minus the training loss of the same (updated) weights.
    gap = figs["generalization_gap"].axes[0].get_lines()[0].get_ydata()
    assert gap.tolist() == [r["val_loss"] - r["new_loss"] for r in records]
    assert lines["bias"].get_ydata().tolist() == [r["weights"]["0.b"][0] for r in records]
    assert "weights" not in figures(*read_log(logs["multiclass"]))  # an MLP of 39 parameters


def test_read_log_returns_records_and_final(logs, tmp_path):
    from gradloop.report import read_log

    log = tmp_path / "blank-lines.jsonl"
    log.write_text("\n" + logs["regression"].read_text().replace("\n", "\n\n"))
    records, final = read_log(log)
    assert [r["epoch"] for r in records] == list(range(1, 13)) and final["task"] == "regression"
    assert records == read_jsonl(logs["regression"])[:-1]


def test_import_gradloop_does_not_load_matplotlib():
    code = "import sys, gradloop, gradloop.report, gradloop.cli; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- bad inputs
GOOD_RECORD = json.dumps({"epoch": 1, "loss": 1.0})
# (id, log file content or None for no file, extra arguments, what the one stderr line names)
BAD = [
    ("missing file", None, [], ["run.jsonl", "no such file"]),
    ("empty file", "", [], ["run.jsonl", "is empty"]),
    ("only blank lines", "\n \n", [], ["is empty"]),
    ("a line that is not JSON", GOOD_RECORD + "\n{epoch: 2}\n", [], ["run.jsonl: line 2", "not JSON"]),
    ("a truncated line", GOOD_RECORD + '\n{"epoch": 2, "lo', [], ["line 2", "not JSON"]),
    ("a JSON array", "[1, 2]\n", [], ["line 1", "expected a JSON object, got an array"]),
    ("a record without loss", '{"epoch": 1}\n', [], ["line 1", "no 'loss'"]),
    ("a text loss", '{"epoch": 1, "loss": "low"}\n', [], ["line 1", "'loss' must be a number"]),
    ("a fractional epoch", '{"epoch": 1.5, "loss": 1}\n', [], ["line 1", "'epoch'"]),
    ("no epoch records", json.dumps({"final": True, "task": "regression", "y_true": [], "y_pred": []}) + "\n",
     [], ["holds no epoch records"]),
    ("a bad final line", GOOD_RECORD + '\n{"final": true, "task": "ranking"}\n', [], ["line 2", "'task'"]),
    ("not UTF-8", b"\xff\xfe\x00", [], ["not UTF-8"]),
    ("output into a missing folder", GOOD_RECORD + "\n", ["-o", "nodir/r.html"], ["-o", "nodir", "does not exist"]),
    ("output is a folder", GOOD_RECORD + "\n", ["-o", "."], ["-o", "is a folder"]),
    ("output is the log", GOOD_RECORD + "\n", ["-o", "run.jsonl"], ["is the log itself"]),
    ("png dir is a file", GOOD_RECORD + "\n", ["--png", "run.jsonl"], ["--png", "is a file"]),
]


@pytest.mark.parametrize("content, extra, needles", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, content, extra, needles):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "run.jsonl").write_bytes(content if isinstance(content, bytes) else content.encode())
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    status, out, err = run(capsys, "report", "run.jsonl", *extra)
    assert status == 2 and out == ""
    assert err.startswith("gradloop: error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, (needle, err)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


BAD_CSV = [
    ("no loss column", "epoch,val_loss\n1,2\n", ["no column 'loss'"]),
    ("text in loss", "epoch,loss\n1,2.0\n2,low\n", ["line 3, column 'loss'", "'low' is not a number"]),
    ("no rows", "epoch,loss\n", ["holds no epoch records"]),
    ("empty", "", ["has no header row"]),
]


@pytest.mark.parametrize("content, needles", [b[1:] for b in BAD_CSV], ids=[b[0] for b in BAD_CSV])
def test_bad_csv_log(tmp_path, capsys, content, needles):
    log = tmp_path / "log.csv"
    log.write_text(content)
    status, _, err = run(capsys, "report", log, "-o", tmp_path / "r.html")
    assert status == 2 and err.count("\n") == 1
    assert all(needle in err for needle in needles), err
    assert [p.name for p in tmp_path.iterdir()] == ["log.csv"]


def test_read_log_raises_data_error_naming_file_and_line(tmp_path):
    from gradloop.report import read_log

    log = tmp_path / "run.jsonl"
    log.write_text(GOOD_RECORD + "\n" + GOOD_RECORD + "\nnot json\n")
    with pytest.raises(DataError, match=r"run\.jsonl: line 3: not JSON"):
        read_log(log)


# ---------------------------------------------------------------- in a real browser
@needs_chromium
def test_report_renders_in_headless_chromium(logs, tmp_path, capsys):
    from matplotlib.image import imread

    out, shot = tmp_path / "report.html", tmp_path / "shot.png"
    assert run(capsys, "report", logs["regression"], "-o", out)[0] == 0
    screenshot(out, shot, tmp_path / "profile", 1280, 2000)
    assert shot.exists(), "Chromium wrote no screenshot"
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not a blank page
    # The plots are there: the loss curve's blue (matplotlib's C0) and colours beyond grey text.
    assert (np.abs(rgb - np.array([0.12, 0.47, 0.71])).max(axis=-1) < 0.08).sum() > 200
