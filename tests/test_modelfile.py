"""Tests for gradloop.files.modelfile: the safetensors + JSON model file."""

from __future__ import annotations

import json
import os
import pickletools

import numpy as np
import pytest

import gradloop.files.modelfile as gio
from gradloop.errors import ConfigError
from gradloop.files.modelfile import read_model_file, write_model_file

METADATA = {
    "architecture": {"kind": "mlp", "layers": [3, 8, 1], "activation": "relu"},
    "feature_names": ["température", "höhe", "名前", "emoji 🚀"],
    "scaling": {"mean": [0.5, -1.25, 3.0], "std": [1.0, 2.5, 0.125]},
    "target": "y",
    "versions": {"gradloop": "0.1.0", "numpy": np.__version__},
    "nested": [[1, 2, [3, {"deep": None}]], {"t": True, "f": False}],
    "empty": {},
}


def _tensors():
    rng = np.random.default_rng(0)
    return {
        "w0": rng.normal(size=(3, 8)),
        "b0": rng.normal(size=8).astype(np.float32),
        "w1": rng.normal(size=(8, 1, 2)).astype(np.float32),
        "counts": np.arange(-5, 7, dtype=np.int64).reshape(3, 4),
        "scalar": np.array(2.5),
        "empty": np.zeros((0, 3)),
    }


def _header(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n].decode("utf-8"))


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.safetensors"
    write_model_file(path, _tensors(), METADATA)
    return path


def _listing(directory):
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------
# round trip and format
# --------------------------------------------------------------------------


def test_round_trip_values_dtypes_shapes_and_metadata(model_path):
    tensors, metadata = read_model_file(model_path)
    expected = _tensors()
    assert sorted(tensors) == sorted(expected)
    for name, array in expected.items():
        got = tensors[name]
        assert got.dtype == array.dtype, name
        assert got.shape == array.shape, name
        np.testing.assert_array_equal(got, array)
    assert tensors["scalar"].shape == ()
    assert float(tensors["scalar"]) == 2.5
    assert tensors["counts"][2, 3] == 6
    assert metadata["format"] == "gradloop-model"
    assert metadata["format_version"] == 1
    for key, value in METADATA.items():
        assert metadata[key] == value
    assert metadata["feature_names"][2] == "名前"


def test_read_arrays_are_independent_and_writable(model_path):
    tensors, _ = read_model_file(model_path)
    tensors["w0"][0, 0] = 123.0
    again, _ = read_model_file(model_path)
    assert again["w0"][0, 0] != 123.0


def test_caller_metadata_and_arrays_not_mutated(tmp_path):
    meta = {"target": "y"}
    w = np.arange(12.0).reshape(3, 4)
    before = w.copy()
    write_model_file(tmp_path / "m.st", {"w": w}, meta)
    assert meta == {"target": "y"}
    np.testing.assert_array_equal(w, before)


def test_non_contiguous_and_big_endian_arrays(tmp_path):
    base = np.arange(24.0).reshape(4, 6)
    tensors = {
        "fortran": np.asfortranarray(base),
        "strided": base[::2, ::3],
        "transposed": base.T,
        "bigendian": np.arange(5, dtype=">f8"),
    }
    write_model_file(tmp_path / "m.st", tensors, {})
    got, _ = read_model_file(tmp_path / "m.st")
    for name, array in tensors.items():
        np.testing.assert_array_equal(got[name], array)
        assert got[name].flags.c_contiguous
    assert got["strided"].shape == (2, 2)
    assert got["strided"][1, 1] == 15.0
    assert got["bigendian"].dtype == np.dtype("float64")


def test_file_is_plain_safetensors_without_pickle(model_path):
    data = model_path.read_bytes()
    header = _header(data)
    n = int.from_bytes(data[:8], "little")
    assert 8 + n < len(data)
    assert header["w0"]["dtype"] == "F64"
    assert header["w0"]["shape"] == [3, 8]
    assert header["b0"]["dtype"] == "F32"
    assert header["counts"]["dtype"] == "I64"
    meta = json.loads(header["__metadata__"]["gradloop"])
    assert meta["format"] == "gradloop-model"
    assert meta["target"] == "y"
    assert set(header["__metadata__"]) == {"gradloop"}
    # no pickle: a pickle stream starts with PROTO (0x80) and pickle loaders
    # would find opcodes; the file starts with a little-endian length instead.
    assert data[0] != 0x80
    assert b"numpy.core.multiarray" not in data and b"_reconstruct" not in data
    with pytest.raises(Exception):
        list(pickletools.genops(data))


def test_loads_with_safetensors_library(model_path):
    from safetensors.numpy import load_file

    loaded = load_file(str(model_path))
    np.testing.assert_array_equal(loaded["w0"], _tensors()["w0"])


def test_overwrite_replaces_previous_file(model_path):
    write_model_file(model_path, {"only": np.ones(2, dtype=np.float32)}, {"target": "z"})
    tensors, metadata = read_model_file(model_path)
    assert list(tensors) == ["only"]
    assert metadata["target"] == "z"
    assert _listing(model_path.parent) == ["model.safetensors"]


def test_path_given_as_str(tmp_path):
    path = str(tmp_path / "m.safetensors")
    write_model_file(path, {"w": np.ones(3)}, {"a": 1})
    tensors, meta = read_model_file(path)
    assert meta["a"] == 1
    np.testing.assert_array_equal(tensors["w"], np.ones(3))


def test_new_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_model_file(tmp_path / "m.st", {"w": np.ones(1)}, {})
    finally:
        os.umask(old)
    if os.name == "posix":
        assert (tmp_path / "m.st").stat().st_mode & 0o777 == 0o644


# --------------------------------------------------------------------------
# write validation
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tensors, metadata, words",
    [
        ({1: np.ones(2)}, {}, "names"),
        ({"": np.ones(2)}, {}, "names"),
        ({"__metadata__": np.ones(2)}, {}, "reserved"),
        ({"w": [1.0, 2.0]}, {}, "numpy array"),
        ({"w": np.float64(1.0)}, {}, "numpy array"),
        ({"w": np.array(["a", "b"])}, {}, "dtype"),
        ({"w": np.array([object()])}, {}, "dtype"),
        ({"w": np.ones(2, dtype=np.complex128)}, {}, "dtype"),
        ([np.ones(2)], {}, "dict"),
        ({"w": np.ones(2)}, [1, 2], "metadata"),
        ({"w": np.ones(2)}, {"x": object()}, "JSON"),
        ({"w": np.ones(2)}, {"x": float("nan")}, "JSON"),
        ({"w": np.ones(2)}, {"x": np.int64(1)}, "JSON"),
        ({"w": np.ones(2)}, {"x": {1, 2}}, "JSON"),
    ],
)
def test_bad_inputs_raise_config_error(tmp_path, tensors, metadata, words):
    path = tmp_path / "m.st"
    with pytest.raises(ConfigError) as info:
        write_model_file(path, tensors, metadata)
    assert isinstance(info.value, ValueError)
    assert words in str(info.value)
    assert str(path) in str(info.value)
    assert _listing(tmp_path) == []


def test_missing_directory_is_config_error(tmp_path):
    missing = tmp_path / "nope" / "deeper"
    with pytest.raises(ConfigError, match="does not exist") as info:
        write_model_file(missing / "m.st", {"w": np.ones(1)}, {})
    assert str(missing) in str(info.value)
    assert not missing.exists()
    assert _listing(tmp_path) == []


def test_destination_is_directory_is_config_error(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        write_model_file(tmp_path / "adir", {"w": np.ones(1)}, {})
    assert _listing(tmp_path) == ["adir"]
    assert _listing(tmp_path / "adir") == []


# --------------------------------------------------------------------------
# atomicity
# --------------------------------------------------------------------------


def test_serialization_failure_leaves_old_file(model_path):
    before = model_path.read_bytes()
    with pytest.raises(ConfigError, match="not JSON-serializable"):
        write_model_file(model_path, {"w": np.ones(3)}, {"bad": object()})
    assert model_path.read_bytes() == before
    assert _listing(model_path.parent) == ["model.safetensors"]


@pytest.mark.parametrize("target", ["replace", "fsync"])
def test_crash_during_write_leaves_old_file(model_path, monkeypatch, target):
    before = model_path.read_bytes()
    calls = []

    def crash(*args, **kwargs):
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gio.os, target, crash)
    with pytest.raises(ConfigError, match="No space left on device") as info:
        write_model_file(model_path, {"w": np.ones(3)}, {"new": True})
    monkeypatch.undo()
    assert calls, "the patched function was never reached"
    assert str(model_path) in str(info.value)
    assert model_path.read_bytes() == before
    assert _listing(model_path.parent) == ["model.safetensors"]
    _, meta = read_model_file(model_path)
    assert "new" not in meta


def test_non_os_error_during_write_propagates_and_cleans_up(model_path, monkeypatch):
    before = model_path.read_bytes()

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gio.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_model_file(model_path, {"w": np.ones(3)}, {})
    monkeypatch.undo()
    assert model_path.read_bytes() == before
    assert _listing(model_path.parent) == ["model.safetensors"]


def test_temp_file_lives_beside_destination(model_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(gio.os, "replace", spy)
    write_model_file(model_path, {"w": np.ones(3)}, {})
    (src, dst), = seen
    assert os.path.dirname(src) == str(model_path.parent)
    assert os.path.basename(src).startswith(".model.safetensors.")
    assert src.endswith(".tmp")
    assert dst == str(model_path)
