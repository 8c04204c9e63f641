"""Fuzzing the readers of files from elsewhere with tampered files whose checksums are valid.

A checksum proves a file did not change since it was signed, not that what it says is sane. Whatever a
re-signed model file, checkpoint or run log says, its reader returns something usable or raises the
project's own error, never another exception, and never allocates beyond the file's own contents.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradloop import GradloopError, fit
from gradloop.files.bundle import ModelBundle
from gradloop.checkpoint import FILE_NAME, CheckpointWriter, load
from gradloop.data import Standardizer
from gradloop.errors import DataError, ModelFileError
from gradloop.files.modelfile import CHECKSUM_KEY, content_checksum, read_model_file, write_model_file
from gradloop.models import mlp
from gradloop.optimizers import Adam
from gradloop.report import read_log

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Any JSON value, with the numbers a forger would try: huge, negative, zero, fractional.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.sampled_from([0, 1, -1, 10**6, 10**12, 2**63])
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)


def _paths(value, prefix=()):
    """Every place in a JSON value: tuples of keys and indices."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, prefix + (index,))


def _replace(value, path, new):
    if not path:
        return new
    value = copy.deepcopy(value)
    target = value
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return value


def _tamper(path, choose, new):
    """Replace one place of the file's metadata by ``new`` and sign the file again."""
    tensors, meta = read_model_file(path)
    meta = {k: v for k, v in meta.items() if k not in ("format", "format_version")}
    places = [p for p in _paths(meta) if p and p[0] != CHECKSUM_KEY]
    meta = _replace(meta, places[choose % len(places)], new)
    meta[CHECKSUM_KEY] = content_checksum(tensors, meta)
    write_model_file(path, tensors, meta)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "model.safetensors"
    model = mlp([3, 4, 3], "tanh", task="multiclass")
    scaler = Standardizer().fit(np.random.default_rng(0).normal(size=(10, 3)))
    ModelBundle(model, ["a", "b", "c"], "kind", scaler, ["x", "y", "z"], "cross-entropy").save(path)
    return path.read_bytes()


@FUZZ
@given(choose=st.integers(0, 10**6), new=JSON)
def test_a_resigned_model_file_loads_or_is_refused(tmp_path, model_file, choose, new):
    path = tmp_path / "m.safetensors"
    path.write_bytes(model_file)
    _tamper(path, choose, new)
    try:
        bundle = ModelBundle.load(path)
    except ModelFileError:
        return
    try:  # what loads must work on data of the shape it declares
        bundle.predict(np.zeros((2, len(bundle.feature_names))))
    except DataError:
        pass


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzzck")
    X, y = _data()
    fit(mlp([3, 4, 1], "tanh"), X, y, loss="mse", optimizer=Adam(0.01), epochs=2, batch_size=4,
        callbacks=[CheckpointWriter(folder)])
    return (folder / FILE_NAME).read_bytes()


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(12, 3))
    return X, X.sum(axis=1)


@FUZZ
@given(choose=st.integers(0, 10**6), new=JSON)
def test_a_resigned_checkpoint_resumes_or_is_refused(tmp_path, checkpoint_file, choose, new):
    (tmp_path / FILE_NAME).write_bytes(checkpoint_file)
    _tamper(tmp_path / FILE_NAME, choose, new)
    X, y = _data()
    try:
        state = load(tmp_path)
        fit(mlp([3, 4, 1], "tanh"), X, y, loss="mse", optimizer=Adam(0.01), epochs=3, batch_size=4, resume=state)
    except GradloopError:  # refused (CheckpointError), or a forged but well-formed run that diverges
        pass


RECORD = st.fixed_dictionaries({"epoch": st.integers(-3, 10**6), "loss": JSON}, optional={
    "lr": JSON, "val_loss": JSON, "grad_norm": JSON, "weights": JSON, "gradients": JSON})
FINAL = st.fixed_dictionaries({"final": st.just(True), "task": st.sampled_from(["regression", "binary", "multiclass",
                                                                               "other"])},
                              optional={"y_true": JSON, "y_pred": JSON, "classes": JSON,
                                        "confusion_matrix": JSON, "metrics": JSON})


@FUZZ
@given(lines=st.lists(RECORD | FINAL, min_size=1, max_size=5), raw=st.sampled_from(["", "1e999", "NaN", "9" * 400]))
def test_any_log_is_read_or_refused_with_a_data_error(tmp_path, lines, raw):
    from gradloop.report.plots import _class_count

    text = "\n".join(json.dumps(line) for line in lines)
    if raw:
        text += "\n" + json.dumps({"epoch": 1}).replace("}", f', "loss": {raw}}}')
    path = tmp_path / "run.jsonl"
    path.write_text(text + "\n")
    try:
        records, final = read_log(path)
    except DataError:
        return
    assert raw == ""  # a non-finite or unrepresentable number never gets through
    assert all(isinstance(r["epoch"], int) and r["epoch"] >= 0 for r in records)
    if final is not None and final.get("y_true"):
        _class_count(final)  # bounded by the log's own size
