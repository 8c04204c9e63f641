"""Tests for gradloop.files.modelfile on bad files: every corrupt, truncated or foreign file is one ModelFileError, fuzzed too."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradloop.errors import GradloopError, ModelFileError
from gradloop.files.modelfile import read_model_file, write_model_file
from test_modelfile import METADATA, _header, _tensors


# --------------------------------------------------------------------------
# bad files
# --------------------------------------------------------------------------


def _valid_bytes(tmp_path) -> bytes:
    path = tmp_path / "valid.safetensors"
    write_model_file(path, _tensors(), METADATA)
    data = path.read_bytes()
    path.unlink()
    return data


def _with_metadata(meta_value) -> bytes:
    from safetensors.numpy import save

    return save({"w": np.ones(2)}, metadata={"gradloop": meta_value})


def _make_missing(tmp_path, path):
    pass


def _make_directory(tmp_path, path):
    path.mkdir()


def _write(data):
    def make(tmp_path, path):
        path.write_bytes(data(tmp_path) if callable(data) else data)

    return make


def _truncate(fraction=None, keep=None, header_only=False):
    def data(tmp_path):
        valid = _valid_bytes(tmp_path)
        if header_only:
            return valid[: 8 + int.from_bytes(valid[:8], "little")]
        if keep is not None:
            return valid[:keep]
        return valid[: int(len(valid) * fraction)]

    return _write(data)


def _flip_header_byte(offset_in_header):
    def data(tmp_path):
        valid = bytearray(_valid_bytes(tmp_path))
        valid[8 + offset_in_header] ^= 0xFF
        return bytes(valid)

    return _write(data)


def _plain_safetensors(tmp_path, path):
    from safetensors.numpy import save_file

    save_file({"w": np.ones((2, 2))}, str(path))


def _plain_safetensors_other_metadata(tmp_path, path):
    from safetensors.numpy import save_file

    save_file({"w": np.ones((2, 2))}, str(path), metadata={"framework": "np"})


BAD_FILES = [
    ("missing", _make_missing, "does not exist"),
    ("directory", _make_directory, "is a directory"),
    ("empty", _write(b""), "is empty"),
    ("first 4 bytes", _truncate(keep=4), "truncated"),
    ("first 8 bytes", _truncate(keep=8), "truncated"),
    ("first 20 bytes", _truncate(keep=20), "truncated"),
    ("half", _truncate(fraction=0.5), "truncated"),
    ("header only", _truncate(header_only=True), "corrupted"),
    ("all but last byte", _truncate(fraction=None, keep=-1), "corrupted"),
    ("flipped header byte 0", _flip_header_byte(0), "header"),
    ("flipped header byte 10", _flip_header_byte(10), "corrupted"),
    ("huge header length", _write(b"\xff" * 8 + b"{}"), "truncated"),
    ("header length zero", _write(b"\x00" * 8 + b"abc"), "not valid JSON"),
    ("header is a list", _write(len(b"[1,2]").to_bytes(8, "little") + b"[1,2]"), "not a JSON object"),
    ("plain safetensors", _plain_safetensors, "not a gradloop model file (no gradloop metadata)"),
    ("other metadata", _plain_safetensors_other_metadata, "no gradloop metadata"),
    ("wrong format", _write(_with_metadata(json.dumps({"format": "other", "format_version": 1}))), "'other'"),
    ("no format", _write(_with_metadata(json.dumps({"format_version": 1}))), "not a gradloop model file"),
    (
        "format_version 999",
        _write(_with_metadata(json.dumps({"format": "gradloop-model", "format_version": 999}))),
        "upgrade gradloop",
    ),
    (
        "format_version string",
        _write(_with_metadata(json.dumps({"format": "gradloop-model", "format_version": "1"}))),
        "invalid format_version",
    ),
    (
        "format_version 0",
        _write(_with_metadata(json.dumps({"format": "gradloop-model", "format_version": 0}))),
        "invalid format_version",
    ),
    ("metadata not JSON", _write(_with_metadata("{not json")), "not valid JSON"),
    ("metadata a JSON list", _write(_with_metadata("[1, 2]")), "not a JSON object"),
    ("random text", _write(b"hello, this is not a model at all\n" * 10), "truncated"),
    ("a pickle", _write(b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.\n"), "truncated"),
]


@pytest.mark.parametrize("label, make, words", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_raise_model_file_error(tmp_path, label, make, words):
    path = tmp_path / "model.safetensors"
    make(tmp_path, path)
    with pytest.raises(ModelFileError) as info:
        read_model_file(path)
    err = info.value
    assert isinstance(err, GradloopError)
    assert isinstance(err, ValueError)
    message = str(err)
    assert str(path) in message
    assert "\n" not in message
    assert words in message, message


def test_not_gradloop_message_says_what_to_do(tmp_path):
    path = tmp_path / "model.safetensors"
    _plain_safetensors(tmp_path, path)
    with pytest.raises(ModelFileError) as info:
        read_model_file(path)
    assert "gradloop train" in str(info.value)
    assert "--out" in str(info.value)


def test_corrupted_tensor_table_is_model_file_error(tmp_path):
    """A header whose offsets point outside the data must not escape as SafetensorError."""
    valid = _valid_bytes(tmp_path)
    header = _header(valid)
    header["w0"]["data_offsets"] = [0, 10**12]
    raw = json.dumps(header).encode()
    data = len(raw).to_bytes(8, "little") + raw + valid[8 + int.from_bytes(valid[:8], "little") :]
    path = tmp_path / "m.st"
    path.write_bytes(data)
    with pytest.raises(ModelFileError, match="corrupted"):
        read_model_file(path)


def test_unsupported_dtype_in_file_is_model_file_error(tmp_path):
    from safetensors.numpy import save

    meta = json.dumps({"format": "gradloop-model", "format_version": 1})
    path = tmp_path / "m.st"
    path.write_bytes(save({"c": np.ones(2, dtype=np.complex64)}, metadata={"gradloop": meta}))
    with pytest.raises(ModelFileError, match="dtype"):
        read_model_file(path)


# --------------------------------------------------------------------------
# fuzzing: nothing but ModelFileError comes out
# --------------------------------------------------------------------------


def _read_or_model_file_error(path):
    try:
        tensors, metadata = read_model_file(path)
    except ModelFileError as err:
        assert str(path) in str(err)
        assert "\n" not in str(err)
        return None
    assert isinstance(metadata, dict)
    assert metadata["format"] == "gradloop-model"
    assert all(isinstance(v, np.ndarray) for v in tensors.values())
    return tensors


FUZZ = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.binary(max_size=512))
def test_fuzz_random_bytes(tmp_path, data):
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    assert _read_or_model_file_error(path) is None  # random bytes are never a model


@FUZZ
@given(header=st.text(max_size=200), tail=st.binary(max_size=64))
def test_fuzz_random_header_text(tmp_path, header, tail):
    raw = header.encode("utf-8")
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + tail)
    assert _read_or_model_file_error(path) is None


@pytest.fixture(scope="module")
def valid_model_bytes(tmp_path_factory):
    return _valid_bytes(tmp_path_factory.mktemp("valid"))


@FUZZ
@given(cut=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_fuzz_truncated_model(tmp_path, valid_model_bytes, cut):
    data = valid_model_bytes[: int(len(valid_model_bytes) * cut)]
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(data)
    assert _read_or_model_file_error(path) is None  # every proper prefix is rejected


@FUZZ
@given(edits=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
       header_bias=st.booleans())
def test_fuzz_overwritten_bytes(tmp_path, valid_model_bytes, edits, header_bias):
    data = bytearray(valid_model_bytes)
    span = 8 + int.from_bytes(valid_model_bytes[:8], "little") if header_bias else len(data)
    for where, value in edits:
        data[int(where * span)] = value
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(bytes(data))
    tensors = _read_or_model_file_error(path)
    if tensors is not None:  # survived: names and shapes are whatever the header says, but arrays are real
        for array in tensors.values():
            assert array.dtype.kind in "biuf"


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"dtype": "BF16", "shape": [8], "data_offsets": [0, 16]}, "unsupported dtype 'BF16'"),
        ({"dtype": "F64", "shape": [2**62, 2**62], "data_offsets": [0, 16]}, "corrupted"),
        ({"dtype": "F64", "shape": [-1], "data_offsets": [0, 16]}, "corrupted"),
        ({"dtype": "F64", "shape": [2], "data_offsets": [16, 0]}, "corrupted"),
        ({"dtype": "XX", "shape": [2], "data_offsets": [0, 16]}, "corrupted"),
        ("not a tensor entry", "corrupted"),
    ],
)
def test_hand_built_bad_tensor_entries(tmp_path, entry, words):
    meta = json.dumps({"format": "gradloop-model", "format_version": 1})
    raw = json.dumps({"__metadata__": {"gradloop": meta}, "w": entry}).encode()
    path = tmp_path / "m.st"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + b"\0" * 16)
    with pytest.raises(ModelFileError) as info:
        read_model_file(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)
