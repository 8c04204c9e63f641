"""Tests for gradloop.data's readers on bad input: every bad file is one DataError that names the place, fuzzed too."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradloop.data import load_xy, read_table, select_xy
from gradloop.errors import DataError, GradloopError


# ------------------------------------------------------------ round trips


# ---------------------------------------------------------- bad inputs


def _write(tmp_path, name, content):
    path = tmp_path / name
    if callable(content):
        content(path)
    elif content is not None:
        path.write_bytes(content)
    return path


def _npz_raw(**arrays):
    def write(path):  # through a buffer: np.savez would append ".npz" to "a.npy"
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path.write_bytes(buf.getvalue())
    return write


def _truncated_parquet(p):
    buf = io.BytesIO()
    pd.DataFrame({"a": np.arange(100.0)}).to_parquet(buf)
    p.write_bytes(buf.getvalue()[:200])


def _truncated_npy(p):
    buf = io.BytesIO()
    np.save(buf, np.arange(100.0).reshape(50, 2))
    p.write_bytes(buf.getvalue()[:300])


# (id, file name, content, select args, details the message must hold)
BAD_FILES = [
    ("missing", "nope.csv", None, None, ["nope.csv", "no such file"]),
    ("empty", "e.csv", b"", None, ["e.csv", "empty (0 bytes)"]),
    ("blank", "b.csv", b"\n\n", None, ["b.csv", "no header row"]),
    ("blank-header", "b.csv", b"  \n1\n", None, ["b.csv", "line 1 is blank"]),
    ("header-after-blank", "b.csv", b"\na,b\n1,2\n", None, ["b.csv", "line 1 is blank"]),
    ("header-only", "h.csv", b"a,b,c\n", None, ["h.csv", "header but no data rows"]),
    ("ragged", "r.csv", b"a,b,c\n1,2,3\n4,5,6\n7,8,9\n1,2,3,4\n", None,
     ["r.csv: line 5 has 4 fields, the header has 3"]),
    ("ragged-after-blank", "r.csv", b"a,b,c\n1,2,3\n\n1,2,3,4\n", None, ["line 4 has 4 fields, the header has 3"]),
    ("long-first-row", "l.csv", b"a,b\n1,2,3\n4,5,6\n", None, ["l.csv", "line 2 has more fields than the header"]),
    ("latin1", "u.csv", "a,b\ncafé,1\n".encode("latin-1"), None, ["u.csv", "not UTF-8", r"b'\xe9'"]),
    ("binary", "g.csv", b"\x89PNG\r\n\x1a\n\x00\x00\xff", None, ["g.csv", "not UTF-8"]),
    ("open-quote", "q.csv", b'a,b\n"1,2\n', None, ["q.csv", "cannot parse as CSV", "EOF inside string"]),
    ("extension", "d.txt", b"a,b\n1,2\n", None, ["d.txt", "unsupported file type '.txt'", ".csv, .parquet, .pq, .npy, .npz"]),
    ("no-extension", "data", b"a,b\n1,2\n", None, ["data", "(no extension)"]),
    ("parquet-garbage", "g.parquet", b"not a parquet file at all", None, ["g.parquet", "cannot read this .parquet file"]),
    ("parquet-truncated", "t.parquet", _truncated_parquet, None, ["t.parquet", "cannot read this .parquet file"]),
    ("npy-garbage", "g.npy", b"hello world, not numpy", None, ["g.npy", "cannot read this .npy file"]),
    ("npy-truncated", "t.npy", _truncated_npy, None, ["t.npy", "cannot read this .npy file"]),
    ("npy-object", "o.npy", lambda p: np.save(p, np.array([[{}, 1]], dtype=object)), None,
     ["o.npy", "cannot read this .npy file", "allow_pickle"]),
    ("npy-1d", "v.npy", lambda p: np.save(p, np.arange(3.0)), None, ["v.npy", "shape (3,)", "reshape"]),
    ("npy-3d", "c.npy", lambda p: np.save(p, np.zeros((2, 2, 2))), None, ["c.npy", "shape (2, 2, 2)"]),
    ("npy-text", "s.npy", lambda p: np.save(p, np.array([["a", "b"]])), None, ["s.npy", "<U1", "expected numbers"]),
    ("npy-no-rows", "z.npy", lambda p: np.save(p, np.zeros((0, 3))), None, ["z.npy", "no rows"]),
    ("npy-is-npz", "a.npy", _npz_raw(a=np.arange(2)), None, ["a.npy", "holds an .npz archive"]),
    ("npz-is-npy", "a.npz", lambda p: p.write_bytes(_npy_bytes(np.zeros((2, 2)))), None, ["a.npz", "holds an .npy array"]),
    ("npz-garbage", "g.npz", b"PK\x03\x04 broken zip", None, ["g.npz", "cannot read this .npz file"]),
    ("npz-2d-column", "m.npz", _npz_raw(a=np.zeros((3, 2)), b=np.zeros(3)), None, ["m.npz", "'a' has shape (3, 2)"]),
    ("npz-lengths", "n.npz", _npz_raw(a=np.zeros(3), b=np.zeros(4)), None, ["n.npz", "'b' has 4 rows, 'a' has 3"]),
    ("npz-scalar", "s.npz", _npz_raw(a=np.zeros(3), b=np.float64(1)), None, ["s.npz", "'b' has shape ()"]),
    ("npz-xy-lengths", "xy.npz", _npz_raw(X=np.zeros((3, 2)), y=np.zeros(4)), None, ["xy.npz", "y has shape (4,)"]),
    ("npz-empty", "e.npz", _npz_raw(), None, ["e.npz", "no arrays"]),
    # column selection and values, checked through load_xy
    ("no-target", "d.csv", b"a,b\n1,2\n", ("price",), ["d.csv", "no target column 'price'", "'a', 'b'"]),
    ("semicolons", "d.csv", b"a;b\n1;2\n", ("b",), ["d.csv", "'a;b'", "';'- or tab-separated"]),
    ("no-feature", "d.csv", b"a,b\n1,2\n", ("b", "a,zz"), ["d.csv", "no feature column 'zz'", "'a', 'b'"]),
    ("target-is-feature", "d.csv", b"a,b\n1,2\n", ("b", ["a", "b"]), ["d.csv", "'b' is the target"]),
    ("feature-twice", "d.csv", b"a,b,c\n1,2,3\n", ("c", "a,b,a"), ["d.csv", "listed twice"]),
    ("only-target", "d.csv", b"y\n1\n", ("y",), ["d.csv", "no feature columns left"]),
    ("not-a-number", "data.csv", b"age,bmi,y\n1,2,3\n1,2,3\n1,2,3\n1,2,3\n1,2,3\n4,abc,6\n", ("y",),
     ["data.csv: line 7, column 'bmi': 'abc' is not a number"]),
    ("target-text", "d.csv", b"a,y\n1,2\n3,high\n", ("y",), ["d.csv: line 3, column 'y': 'high' is not a number"]),
    ("empty-cell", "d.csv", b"a,b,y\n1,2,3\n4,,6\n", ("y",), ["d.csv: line 3, column 'b': missing value"]),
    ("nan-text", "d.csv", b"a,y\n1,2\n3,4\nnan,6\n", ("y",), ["d.csv: line 4, column 'a': missing value"]),
    ("short-row", "d.csv", b"a,b,y\n1,2,3\n4,5\n", ("y",), ["d.csv: line 3, column 'y': missing value"]),
    ("blank-line-inside", "d.csv", b"a,y\n1,2\n\n3,4\n", ("y",), ["d.csv: line 3, column 'a': missing value"]),
    ("inf", "d.csv", b"a,y\n1,2\ninf,4\n", ("y",), ["d.csv: line 3, column 'a': infinite value"]),
    ("minus-inf-target", "d.csv", b"a,y\n1,2\n3,-inf\n", ("y",), ["d.csv: line 3, column 'y': infinite value"]),
    ("overflow", "d.csv", b"a,y\n1,2\n1e999,x\n", ("y", None, False), ["d.csv: line 3, column 'a': infinite value"]),
    ("missing-label", "d.csv", b"a,y\n1,cat\n2,\n", ("y", None, True), ["d.csv: line 3, column 'y': missing label"]),
    ("npy-nan", "m.npy", lambda p: np.save(p, np.array([[1.0, 2.0], [np.nan, 3.0]])), ("1",),
     ["m.npy: row 1, column '0': missing value"]),
    ("parquet-text", "p.parquet", lambda p: pd.DataFrame({"a": ["1", "2", "x y"], "t": [1, 2, 3]}).to_parquet(p),
     ("t",), ["p.parquet: row 2, column 'a': 'x y' is not a number"]),
    ("parquet-dates", "p.parquet",
     lambda p: pd.DataFrame({"d": pd.to_datetime(["2024-01-02"]), "t": [1.0]}).to_parquet(p),
     ("t",), ["p.parquet: row 0, column 'd'", "'2024-01-02", "is not a number"]),
]


def _npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


@pytest.mark.parametrize("name,content,select,details", [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES])
def test_bad_files_raise_data_error(tmp_path, name, content, select, details):
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError) as err:
        if select is None:
            read_table(path)
        else:
            load_xy(path, **dict(zip(("target", "features", "labels"), select)))
    assert isinstance(err.value, GradloopError) and isinstance(err.value, ValueError)
    message = str(err.value)
    assert "\n" not in message
    for detail in details:
        assert detail in message, f"{detail!r} not in {message!r}"


def test_directory_is_rejected(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match=r"dir\.csv: is a directory"):
        read_table(tmp_path / "dir.csv")


def test_library_errors_are_chained(tmp_path):
    path = tmp_path / "g.parquet"
    path.write_bytes(b"garbage bytes")
    with pytest.raises(DataError) as err:
        read_table(path)
    assert err.value.__cause__ is not None


# ------------------------------------------------------- fuzzing: only DataError


def _read_and_select(path):
    """read_table + select_xy must succeed or raise DataError, never anything else."""
    try:
        frame = read_table(path)
    except DataError as exc:
        assert "\n" not in str(exc) and path.name in str(exc)
        return
    assert len(frame) > 0 and frame.shape[1] > 0
    for labels in (False, True):
        try:
            ds = select_xy(frame, frame.columns[-1], labels=labels, source=str(path))
        except DataError as exc:
            assert "\n" not in str(exc) and path.name in str(exc)
            continue
        assert ds.X.shape == (len(frame), frame.shape[1] - 1) and np.isfinite(ds.X).all()
        assert ds.y.shape == (len(frame),)


def _zip_with(member, payload):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(member, payload)
    return buf.getvalue()


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CSV_TEXT = st.text(alphabet=st.sampled_from(list('ab1.2,\n\r"\' -einfNa;\t\x00é')), max_size=80)


@FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".csv", ".npy", ".npz", ".parquet"]))
def test_random_bytes_only_data_error(tmp_path, data, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    _read_and_select(path)


@FUZZ
@given(text=CSV_TEXT)
def test_random_csv_text_only_data_error(tmp_path, text):
    path = tmp_path / "fuzz.csv"
    path.write_text(text, encoding="utf-8")
    _read_and_select(path)


@FUZZ
@given(body=st.binary(max_size=200), kind=st.sampled_from(["npy", "npz", "parquet"]))
def test_random_bytes_behind_valid_magic_only_data_error(tmp_path, body, kind):
    # A right magic number gets the bytes past the first check, deeper into the parsers.
    if kind == "npy":
        payload = b"\x93NUMPY\x01\x00" + body
    elif kind == "npz":
        payload = _zip_with("a.npy", b"\x93NUMPY\x01\x00" + body)
    else:
        payload = b"PAR1" + body + b"PAR1"
    path = tmp_path / f"fuzz.{kind}"
    path.write_bytes(payload)
    _read_and_select(path)


CELLS = ["1", "-2.5", "3e2", " 4 ", "", "nan", "inf", "-inf", "abc", "1e999"]


def _cell_value(cell):
    if not cell:
        return "missing"  # an empty cell
    try:
        v = float(cell)
    except ValueError:
        return "text"
    return "missing" if math.isnan(v) else ("infinite" if math.isinf(v) else v)


@FUZZ
@given(rows=st.lists(st.lists(st.sampled_from(CELLS), min_size=3, max_size=3), min_size=1, max_size=6))
def test_csv_grid_reports_the_first_bad_cell(tmp_path, rows):
    path = tmp_path / "grid.csv"
    path.write_text("a,b,y\n" + "".join(",".join(r) + "\n" for r in rows))
    while rows and all(c in ("", "nan") for c in rows[-1]):  # trailing blank rows are cut
        rows = rows[:-1]
    values = [[_cell_value(c) for c in r] for r in rows]
    bad = [(i, j) for i, r in enumerate(values) for j, v in enumerate(r) if isinstance(v, str)]
    if not rows:
        with pytest.raises(DataError, match="header but no data rows"):
            load_xy(path, "y")
    elif not bad:
        ds = load_xy(path, "y")
        np.testing.assert_array_equal(ds.X, [r[:2] for r in values])
        np.testing.assert_array_equal(ds.y, [r[2] for r in values])
    else:
        i, j = bad[0]
        word = {"text": "is not a number", "missing": "missing value", "infinite": "infinite value"}[values[i][j]]
        with pytest.raises(DataError) as err:
            load_xy(path, "y")
        assert f"line {i + 2}, column '{'aby'[j]}'" in str(err.value) and word in str(err.value)
