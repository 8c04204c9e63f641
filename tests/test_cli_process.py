"""The command line through a real process (its console script) and fuzzed inputs: one line, no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gradloop.cli import main

# The chapter's per-epoch report, in the chapter's order.
from test_cli import assert_one_line_error, linear_frame, run_quiet, snapshot


# ---------------------------------------------------------------- through a real process
def _console_script():
    name = "gradloop.exe" if os.name == "nt" else "gradloop"
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        found = shutil.which(name, path=folder)
        if found:
            return found
    return shutil.which(name)


def _no_traceback(result):
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout


@pytest.mark.parametrize("csv, argv, status, needles", [
    pytest.param(None, ["train", "missing.csv", "--target", "y"], 2, ["missing.csv", "no such file"], id="missing"),
    # Overflow inside the network: NumPy's RuntimeWarnings must not add lines to stderr.
    pytest.param("a,b,y\n1e300,1,1\n2,3,0\n", ["train", "d.csv", "--target", "y", "--loss", "bce", "--lr", "0.1",
                                             "--test-size", "0"], 3, ["diverged at epoch 1"], id="overflow"),
])
def test_subprocess_error_is_one_line(tmp_path, csv, argv, status, needles):
    if csv is not None:
        (tmp_path / "d.csv").write_text(csv)
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, "-m", "gradloop.cli", *argv, "--out", "m.safetensors"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == status
    _no_traceback(result)
    assert_one_line_error(result.stderr, *needles)
    assert snapshot(tmp_path) == before


def test_console_script_trains_evaluates_and_diverges(tmp_path):
    script = _console_script()
    if script is None:
        pytest.skip("the gradloop console script is not installed")
    frame = linear_frame(n=50)
    frame.to_csv(tmp_path / "lin.csv", index=False)
    result = subprocess.run([script, "train", "lin.csv", "--target", "y", "--standardize", "--test-size", "0",
                             "--out", "m.safetensors"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stderr == ""
    result = subprocess.run([script, "evaluate", "m.safetensors", "lin.csv", "--json"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and json.loads(result.stdout)["r2"] > 0.99
    result = subprocess.run([script, "train", "lin.csv", "--target", "y", "--lr", "10", "--out", "d.safetensors"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    _no_traceback(result)
    assert_one_line_error(result.stderr, "diverged at epoch", "stable learning rate")
    assert not (tmp_path / "d.safetensors").exists()


def test_subprocess_closed_pipe_exits_quietly(tmp_path):
    """`gradloop predict ... | head -1`: no traceback and no error message when the reader leaves."""
    frame = linear_frame(n=20000)
    frame.to_csv(tmp_path / "big.csv", index=False)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(tmp_path / "big.csv"), "--target", "y", "--epochs", "1",
                     "--out", str(tmp_path / "m.safetensors")]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "gradloop.cli", "predict", "m.safetensors", "big.csv"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"y\n"
    proc.stdout.close()  # more than a pipe buffer of predictions is still to come
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert stderr == ""


# ---------------------------------------------------------------- 9. fuzzing
def _safetensors_like(body):
    return len(body).to_bytes(8, "little") + body


model_bytes = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=300).map(_safetensors_like),  # gets past the header-length check
    st.sampled_from([b"{}", b"[]", b'{"__metadata__": {"gradloop": "{}"}}', b'{"__metadata__": 1}',
                     b'{"__metadata__": {"gradloop": "{\\"format\\": \\"gradloop-model\\", '
                     b'\\"format_version\\": 1}"}}']).map(_safetensors_like),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=model_bytes)
def test_random_bytes_as_a_model_file(content):
    with tempfile.TemporaryDirectory() as folder:
        model, data = Path(folder) / "m.safetensors", Path(folder) / "d.csv"
        model.write_bytes(content)
        data.write_text("a,b,y\n1,2,3\n")
        status, out, err = run_quiet("evaluate", model, data, "--json")
        assert status == 2 and out == ""
        assert_one_line_error(err, str(model))
        status, out, err = run_quiet("predict", model, data, "--out", Path(folder) / "p.csv")
        assert status == 2
        assert_one_line_error(err, str(model))
        assert sorted(p.name for p in Path(folder).iterdir()) == ["d.csv", "m.safetensors"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=400))
def test_random_bytes_as_a_csv_file(content):
    assume(b"y" not in content)  # without a column named y the run must fail (the target is y)
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "d.csv"
        data.write_bytes(content)
        status, out, err = run_quiet("train", data, "--target", "y", "--out", Path(folder) / "m.safetensors",
                                     "--log", Path(folder) / "run.jsonl")
        assert status == 2
        assert_one_line_error(err)
        assert [p.name for p in Path(folder).iterdir()] == ["d.csv"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.text(alphabet="0123456789.,-+e\n nainf", max_size=120),
       options=st.sampled_from([[], ["--standardize"], ["--model", "mlp", "--hidden", "3", "--lr", "0.1"],
                                ["--dtype", "float32"], ["--loss", "huber", "--lr", "0.1"]]))
def test_random_text_under_a_valid_header(body, options):
    """Numbers of any size, blanks and junk: success, or one line with exit 2 (bad data) or 3 (divergence)."""
    with tempfile.TemporaryDirectory() as folder:
        data, model = Path(folder) / "d.csv", Path(folder) / "m.safetensors"
        data.write_text("a,b,y\n" + body)
        status, out, err = run_quiet("train", data, "--target", "y", "--epochs", "20", "--test-size", "0",
                                     "--out", model, *options)
        assert status in (0, 2, 3)
        if status == 0:
            assert err == "" and model.exists()
            status, out, err = run_quiet("evaluate", model, data, "--json")
            assert status == 0, err
        else:
            assert_one_line_error(err)
            assert not model.exists()
