"""gradloop evaluate and report (gradloop.cli.commands): what they say of a classifier and of a log they
cannot draw whole."""

import json

import pytest


@pytest.fixture
def two_classes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open("two.csv", "w") as fh:
        fh.write("a,b,y\n1,2,cat\n2,1,dog\n3,4,cat\n4,4,dog\n5,5,cat\n6,1,dog\n")
    return tmp_path


def test_a_classifiers_evaluate_says_its_errors_are_of_probabilities(cli, two_classes):
    assert cli("train", "two.csv", "--target", "y", "--loss", "cross-entropy", "--test-size", "0", "--epochs", "5",
               "--out", "m.safetensors")[0] == 0
    for flags in ([], ["--out-of-core"]):
        status, out, err = cli("evaluate", "m.safetensors", "two.csv", *flags)
        assert status == 0, err
        lines = out.splitlines()
        assert lines[1].split()[0] == "accuracy"  # the classification metrics first
        assert not any(line.split()[0] in ("mse", "rmse", "mae", "r2") for line in lines[1:])
        assert "of the predicted probabilities against one-hot targets" in out and " mse " in out
    status, out, err = cli("evaluate", "m.safetensors", "two.csv", "--json")
    assert {"mse", "accuracy", "confusion_matrix"} <= set(json.loads(out))  # the JSON keys stay as they were


def test_a_log_whose_losses_span_float64_gives_a_page_and_one_line(cli, tmp_path):
    log = tmp_path / "wide.jsonl"
    log.write_text('{"epoch": 1, "loss": -1e308, "lr": 0.1}\n{"epoch": 2, "loss": 1e308, "lr": 0.1}\n')
    status, out, err = cli("report", log, "-o", tmp_path / "wide.html")
    assert status == 0 and err == "" and "Traceback" not in out, err
    assert "the loss plot is left out: its values span more than a plot's axis can hold" in out
    page = (tmp_path / "wide.html").read_text()
    assert "the loss plot is left out" in page and "<h2>Epoch records</h2>" in page
