"""Tests for gradloop.files.bundle: a trained model with its features, scaling and labels, and its file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradloop.files.bundle import CHECKSUM_KEY, ModelBundle
from gradloop.files.modelfile import content_checksum
from gradloop.data import Standardizer
from gradloop.errors import ConfigError, DataError, GradloopError, ModelFileError
from gradloop.files.modelfile import read_model_file, write_model_file
from gradloop.models import linear, mlp


def _linear_bundle(seed=0):
    """A linear model on standardized inputs with known weights: y = X_std @ [2, -1] + 0.5."""
    rng = np.random.default_rng(seed)
    X = rng.normal([10.0, -3.0], [2.0, 0.5], size=(40, 2))
    scaler = Standardizer().fit(X)
    model = linear(2)
    model.layers[0].params["W"][:] = [[2.0], [-1.0]]
    model.layers[0].params["b"][:] = [0.5]
    model.eval()
    bundle = ModelBundle(model, ["height", "weight"], "score", scaler, None, "mse", {"epochs": 3, "lr": 0.1})
    return bundle, X


def _classifier_bundle():
    model = mlp([2, 5, 3], "tanh", seed=1, task="multiclass")
    model.eval()
    return ModelBundle(model, ["x1", "x2"], "animal", None, ["cat", "dog", "eel"], "cross-entropy", {})


def test_predict_takes_raw_features_and_answers_in_target_units():
    bundle, X = _linear_bundle()
    expected = ((X - X.mean(0)) / X.std(0)) @ np.array([2.0, -1.0]) + 0.5
    np.testing.assert_allclose(bundle.predict(X), expected, rtol=1e-12)
    # The same model in the original units: W / scale and b - (mean / scale) @ W.
    W, b = bundle.linear_coefficients()
    np.testing.assert_allclose(W[:, 0], [2.0, -1.0] / X.std(0), rtol=1e-12)
    np.testing.assert_allclose(X @ W[:, 0] + b[0], expected, rtol=1e-12)


def test_save_and_load_round_trip(tmp_path):
    bundle, X = _linear_bundle()
    path = tmp_path / "m.safetensors"
    bundle.save(path)
    loaded = ModelBundle.load(path)
    np.testing.assert_array_equal(loaded.predict(X), bundle.predict(X))
    assert loaded.feature_names == ["height", "weight"] and loaded.target == "score"
    assert loaded.classes is None and loaded.loss == "mse" and loaded.info == {"epochs": 3, "lr": 0.1}
    np.testing.assert_array_equal(loaded.scaler.mean_, bundle.scaler.mean_)
    np.testing.assert_array_equal(loaded.scaler.scale_, bundle.scaler.scale_)
    _, meta = read_model_file(path)
    assert len(meta[CHECKSUM_KEY]) == 64  # a SHA-256 hex digest


def test_classifier_answers_in_its_original_labels(tmp_path):
    bundle = _classifier_bundle()
    path = tmp_path / "c.safetensors"
    bundle.save(path)
    loaded = ModelBundle.load(path)
    X = np.random.default_rng(0).normal(size=(30, 2)) * 3
    labels = loaded.predict(X)
    assert set(labels) <= {"cat", "dog", "eel"}
    proba = loaded.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(np.array(["cat", "dog", "eel"])[proba.argmax(axis=1)], labels)
    np.testing.assert_array_equal(labels, bundle.predict(X))


def test_wrong_number_of_features_names_them():
    bundle, X = _linear_bundle()
    with pytest.raises(DataError, match=r"reads 2 features \(height, weight\), got data of shape \(40, 3\)"):
        bundle.predict(np.hstack([X, X[:, :1]]))


def test_every_single_bit_flip_is_caught_or_harmless(tmp_path):
    """A damaged file never loads as a different model: each of its bits, flipped, fails or changes nothing."""
    bundle, X = _linear_bundle()
    path = tmp_path / "m.safetensors"
    bundle.save(path)
    good = path.read_bytes()
    expected = bundle.predict(X)
    damaged = tmp_path / "d.safetensors"
    harmless = 0
    for i in range(len(good)):
        for bit in range(8):
            data = bytearray(good)
            data[i] ^= 1 << bit
            damaged.write_bytes(bytes(data))
            try:
                loaded = ModelBundle.load(damaged)
            except ModelFileError:
                continue
            harmless += 1
            np.testing.assert_array_equal(loaded.predict(X), expected, err_msg=f"byte {i} bit {bit}")
            assert loaded.feature_names == bundle.feature_names and loaded.target == bundle.target
    assert harmless < len(good)  # almost every flip is detected


def test_flipped_weight_and_edited_metadata_are_reported_as_corrupted(tmp_path):
    bundle, _ = _linear_bundle()
    path = tmp_path / "m.safetensors"
    bundle.save(path)
    good = path.read_bytes()
    weights = bytearray(good)
    weights[-2] ^= 0x10  # inside the last tensor
    path.write_bytes(bytes(weights))
    with pytest.raises(ModelFileError, match="corrupted.*checksum"):
        ModelBundle.load(path)
    text = good.decode("latin-1")
    edited = text.replace('\\"score\\"', '\\"scorf\\"')  # the target's name, inside the JSON metadata
    assert edited != text
    path.write_bytes(edited.encode("latin-1"))
    with pytest.raises(ModelFileError, match="checksum"):
        ModelBundle.load(path)


def test_file_without_checksum_is_refused_like_a_wrong_one(tmp_path):
    """A file without a checksum could hold any weights: it is refused, not trusted."""
    bundle, X = _linear_bundle()
    path = tmp_path / "m.safetensors"
    bundle.save(path)
    tensors, meta = read_model_file(path)
    for key in (CHECKSUM_KEY, "format", "format_version"):
        del meta[key]
    write_model_file(path, tensors, meta)
    with pytest.raises(ModelFileError, match="corrupted .has no SHA-256 checksum"):
        ModelBundle.load(path)


def _dense(n_in, n_out, bias=True):
    return {"type": "Dense", "in_features": n_in, "out_features": n_out, "bias": bias}


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(feature_names=["only_one"]), "disagree in size"),
    (lambda m: m.pop("target"), "missing or malformed entry 'target'"),
    (lambda m: m.update(scaler={"mean": [0.0, 1.0], "scale": [1.0, -1.0]}), "scale finite and positive"),
    (lambda m: m.update(architecture={"layers": []}), "malformed"),
    # Declared sizes far beyond the stored tensors: refused before anything is allocated.
    (lambda m: m["architecture"].update(layers=[_dense(10**6, 10**6)]), "declares parameters"),
    (lambda m: m["architecture"].update(layers=[_dense(2, 1, bias=False)]), "first difference: 0.b"),
    (lambda m: m["architecture"].update(layers=[_dense(2, 1), {"type": "Conv2d"}]), "unknown type 'Conv2d'"),
    (lambda m: m["architecture"].update(layers=[_dense(2, 1), {"type": "Dropout", "p": 7}]), "Dropout"),
    (lambda m: m["architecture"].update(layers=[_dense(2, 1), _dense(3, 1)]), "reads 3 inputs"),
    (lambda m: m["architecture"].update(dtype="int8"), "dtype must be"),
    (lambda m: m.update(classes=["a", "b", "c"]), "regression model has no class list"),
    (lambda m: m.update(loss="cross-entropy"), "trains a multiclass model"),
    (lambda m: m.update(loss="hinge"), "unknown loss 'hinge'"),
    (lambda m: m.update(feature_names=[1, 2]), "feature_names must be a list of strings"),
])
def test_tampered_metadata_with_a_valid_checksum_is_refused(tmp_path, edit, message):
    """Files from elsewhere are checked whole: a valid checksum proves only that nothing changed since."""
    bundle, _ = _linear_bundle()
    path = tmp_path / "m.safetensors"
    bundle.save(path)
    tensors, meta = read_model_file(path)
    edit(meta)
    meta[CHECKSUM_KEY] = content_checksum(tensors, meta)  # re-signed, as a careful forger would
    write_model_file(path, tensors, meta)
    with pytest.raises(ModelFileError, match=message) as err:
        ModelBundle.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("classes, outputs, message", [
    (["a", "b", "c"], 2, "3 classes has 3 output"), (["a"], 1, "at least 2 class labels"),
    (["a", "a", "b"], 3, "a label twice"), ([["a"], "b", "c"], 3, "at least 2 class labels"),
])
def test_class_list_must_match_the_outputs(tmp_path, classes, outputs, message):
    from gradloop.models import mlp

    model = mlp([2, 4, outputs], "relu", task="multiclass")
    path = tmp_path / "c.safetensors"
    ModelBundle(model, ["x0", "x1"], "y", None, ["p", "q", "r"][:outputs] if outputs > 1 else ["p", "q"],
                "cross-entropy").save(path)
    tensors, meta = read_model_file(path)
    meta["classes"] = classes
    meta[CHECKSUM_KEY] = content_checksum(tensors, meta)
    write_model_file(path, tensors, meta)
    with pytest.raises(ModelFileError, match=message):
        ModelBundle.load(path)


def test_failed_save_keeps_the_previous_file(tmp_path):
    bundle, _ = _linear_bundle()
    path = tmp_path / "m.safetensors"
    bundle.save(path)
    old = path.read_bytes()
    bundle.info["final_loss"] = float("nan")  # not JSON: the save must fail before touching the file
    with pytest.raises(ConfigError, match="JSON"):
        bundle.save(path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_load_errors_are_gradloop_errors(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        ModelBundle.load(tmp_path / "nothing.safetensors")
    (tmp_path / "x.safetensors").write_text(json.dumps({"not": "a model"}))
    with pytest.raises(GradloopError):
        ModelBundle.load(tmp_path / "x.safetensors")
