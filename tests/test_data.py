"""Tests for gradloop.data: reading, validating, splitting and scaling tables."""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradloop.data import (
    DEFAULT_TEST_SIZE,
    Dataset,
    Standardizer,
    encode_labels,
    load_xy,
    read_table,
    select_xy,
    train_test_split,
)
from gradloop.errors import ConfigError, DataError, GradloopError

# ------------------------------------------------------------ round trips


def test_csv_round_trip(tmp_path):
    path = tmp_path / "houses.csv"
    path.write_text("area,rooms,price\n50.5,2,100\n80,3,150.25\n-1e2,1,7\n\n\n")  # trailing blank lines ignored
    ds = load_xy(path, "price")
    assert isinstance(ds, Dataset)
    np.testing.assert_array_equal(ds.X, [[50.5, 2], [80, 3], [-100, 1]])
    np.testing.assert_array_equal(ds.y, [100, 150.25, 7])
    assert ds.X.dtype == np.float64 and ds.y.dtype == np.float64
    assert ds.X.flags.c_contiguous and ds.X.flags.writeable and ds.y.flags.writeable
    assert ds.feature_names == ["area", "rooms"] and ds.target_name == "price"
    assert ds.classes is None and ds.source == str(path)


def test_csv_feature_selection_and_order(tmp_path):
    path = tmp_path / "d.CSV"  # extension matched case-insensitively
    path.write_text("a,b,c,y\n1,2,3,4\n5,6,7,8\n")
    ds = load_xy(path, "y", " c, a ")
    assert ds.feature_names == ["c", "a"]
    np.testing.assert_array_equal(ds.X, [[3, 1], [7, 5]])
    assert load_xy(path, "y", ["b"]).feature_names == ["b"]


def test_parquet_round_trip_with_labels(tmp_path):
    frame = pd.DataFrame({"x1": [0.5, 1.5, 2.5, 3.5], "x2": [1, 2, 3, 4], "kind": ["dog", "cat", "dog", "emu"]})
    for name in ("d.parquet", "d.pq"):
        path = tmp_path / name
        frame.to_parquet(path)
        pd.testing.assert_frame_equal(read_table(path), frame, check_dtype=False)
        ds = load_xy(path, "kind", labels=True)
        assert ds.classes == ["cat", "dog", "emu"]
        np.testing.assert_array_equal(ds.y, [1, 0, 1, 2])
        assert ds.y.dtype == np.int64
        np.testing.assert_array_equal(ds.X, frame[["x1", "x2"]].to_numpy(float))


def test_npy_2d_round_trip(tmp_path):
    path = tmp_path / "m.npy"
    arr = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(path, arr)
    assert list(read_table(path).columns) == ["0", "1", "2"]
    ds = load_xy(path, 2)  # names compare as strings
    np.testing.assert_array_equal(ds.X, arr[:, :2])
    np.testing.assert_array_equal(ds.y, arr[:, 2])
    assert ds.feature_names == ["0", "1"] and ds.target_name == "2"


def test_npy_structured_round_trip(tmp_path):
    path = tmp_path / "s.npy"
    arr = np.array([(1, 2.5, b"no"), (3, 4.5, b"yes"), (5, 6.5, b"no")],
                   dtype=[("age", "i4"), ("bmi", "f8"), ("sick", "S3")])
    np.save(path, arr)
    assert list(read_table(path).columns) == ["age", "bmi", "sick"]
    ds = load_xy(path, "sick", labels=True)
    np.testing.assert_array_equal(ds.X, [[1, 2.5], [3, 4.5], [5, 6.5]])
    assert ds.classes == ["no", "yes"]
    np.testing.assert_array_equal(ds.y, [0, 1, 0])


def test_npz_columns_round_trip(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, height=np.array([1.0, 2.0]), width=np.array([3, 4]), label=np.array([1.0, 0.0]))
    assert sorted(read_table(path).columns) == ["height", "label", "width"]
    ds = load_xy(path, "label", "height,width", labels=True)
    np.testing.assert_array_equal(ds.X, [[1, 3], [2, 4]])
    assert ds.classes == [0, 1] and all(type(c) is int for c in ds.classes)  # 1.0 -> 1
    np.testing.assert_array_equal(ds.y, [1, 0])
    json.dumps(ds.classes)


def test_npz_x_y_round_trip(tmp_path):
    path = tmp_path / "xy.npz"
    X = np.arange(10.0).reshape(5, 2)
    y = np.array([1.5, 2.5, 3.5, 4.5, 5.5])
    np.savez(path, X=X, y=y)
    assert list(read_table(path).columns) == ["x0", "x1", "y"]
    ds = load_xy(path, "y")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)


def test_select_xy_on_frame_uses_row_wording():
    frame = pd.DataFrame({0: [1.0, 2.0], "t": [3.0, np.nan]})
    assert select_xy(frame.iloc[:1], "t").feature_names == ["0"]
    with pytest.raises(DataError, match=r"^<data>: row 1, column 't': missing value"):
        select_xy(frame, "t")


def test_first_offending_line_wins_across_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n1,2,3\n4,5,x\n7,zz,9\n")
    with pytest.raises(DataError) as err:
        load_xy(path, "y")
    assert str(err.value) == f"{path}: line 3, column 'y': 'x' is not a number"


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


# ----------------------------------------------------------------- labels


def test_encode_labels_sorted_and_json_friendly():
    idx, classes = encode_labels(np.array(["b", "a", "c", "a"]))
    assert classes == ["a", "b", "c"] and idx.dtype == np.int64
    np.testing.assert_array_equal(idx, [1, 0, 2, 0])
    idx, classes = encode_labels(np.array([3, 1, 3], dtype=np.int32))
    assert classes == [1, 3] and all(type(c) is int for c in classes)
    np.testing.assert_array_equal(idx, [1, 0, 1])
    assert encode_labels([2.0, 0.0])[1] == [0, 2]  # integral floats become ints
    assert encode_labels([0.5, -1.5])[1] == [-1.5, 0.5]
    assert json.dumps(encode_labels(np.array([True, False]))[1]) == "[false, true]"


def test_encode_labels_with_known_classes_matches_by_string():
    idx, classes = encode_labels(np.array([1, 0, 1]), classes=["0", "1"])  # numeric file, string model
    np.testing.assert_array_equal(idx, [1, 0, 1])
    assert classes == ["0", "1"]
    idx, _ = encode_labels(["cat", "dog"], classes=["dog", "cat", "emu"])  # model order kept
    np.testing.assert_array_equal(idx, [1, 0])
    idx, _ = encode_labels(np.array([2.0, 1.0]), classes=[1, 2])
    np.testing.assert_array_equal(idx, [1, 0])


def test_encode_labels_unseen_and_missing():
    with pytest.raises(DataError) as err:
        encode_labels(["cat", "yak", "gnu"], classes=["cat", "dog"])
    assert "'gnu', 'yak'" in str(err.value) and "'cat', 'dog'" in str(err.value)
    with pytest.raises(DataError, match="missing or infinite label nan at row 1"):
        encode_labels([1.0, float("nan")])
    with pytest.raises(DataError, match="missing or infinite label inf"):
        encode_labels(np.array(["a", np.inf], dtype=object))
    with pytest.raises(DataError, match="missing or infinite label None"):
        encode_labels(["a", None])
    with pytest.raises(DataError, match="duplicates"):
        encode_labels([1], classes=[1, 1.0])


def test_csv_numeric_labels_keep_ints(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("x,y\n0.1,2\n0.2,0\n0.3,2\n")
    ds = load_xy(path, "y", labels=True)
    assert ds.classes == [0, 2] and ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.y, [1, 0, 1])


# ------------------------------------------------------------------ split


def test_split_deterministic_disjoint_covering():
    assert DEFAULT_TEST_SIZE == 0.2
    train, test = train_test_split(103, 0.2, seed=7)
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert len(test) == round(0.2 * 103) == 21 and len(train) == 82
    assert not set(train) & set(test)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(103))
    again = train_test_split(103, 0.2, seed=7)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(test, again[1])
    other = train_test_split(103, 0.2, seed=8)
    assert not np.array_equal(test, other[1])
    perm = np.random.default_rng(7).permutation(103)
    assert set(test) | set(train) == set(perm) and set(test) == set(perm[:21])


def test_split_zero_keeps_row_order():
    train, test = train_test_split(5, 0, seed=3)
    np.testing.assert_array_equal(train, np.arange(5))
    assert test.shape == (0,) and test.dtype == np.int64


@pytest.mark.parametrize("size,shown", [(1.5, "1.5"), (np.float64(1.0), "1.0"), (-0.1, "-0.1"),
                                        (float("nan"), "nan"), ("0.2", "'0.2'"), (True, "True")])
def test_split_bad_test_size_is_config_error(size, shown):
    with pytest.raises(ConfigError) as err:
        train_test_split(10, size, seed=0)
    assert isinstance(err.value, GradloopError) and isinstance(err.value, ValueError)
    assert str(err.value) == f"test_size must be in [0, 1), got {shown}"


def test_split_without_training_rows_is_data_error():
    with pytest.raises(DataError, match="leaves no training row"):
        train_test_split(2, 0.75, seed=0)  # round(1.5) == 2 test rows
    with pytest.raises(DataError, match="no rows"):
        train_test_split(0, 0.2, seed=0)


# --------------------------------------------------------------- scaling


def test_standardizer_statistics_and_constant_column():
    X = np.array([[1.0, 0.1, 5.0], [2.0, 0.1, 7.0], [3.0, 0.1, 9.0], [6.0, 0.1, 3.0]])
    s = Standardizer().fit(X)
    np.testing.assert_allclose(s.mean_, X.mean(axis=0))
    assert s.scale_[1] == 1.0
    np.testing.assert_allclose(s.scale_[[0, 2]], X[:, [0, 2]].std(axis=0))
    Z = s.transform(X)
    assert np.isfinite(Z).all() and Z is not X
    np.testing.assert_array_equal(Z[:, 1], 0.0)
    np.testing.assert_allclose(Z[:, [0, 2]].mean(axis=0), 0.0, atol=1e-15)
    np.testing.assert_allclose(Z[:, [0, 2]].std(axis=0), 1.0)
    tenths = np.full((3, 1), 0.1)
    assert tenths.mean() != 0.1  # the float mean of equal values can miss them by an ulp...
    assert not Standardizer().fit(tenths).transform(tenths).any()  # ...yet the column becomes exactly 0
    big = Standardizer().fit(np.full((5, 1), 1e9))  # tiny std relative to |mean| counts as constant
    assert big.scale_[0] == 1.0 and not big.transform(np.full((5, 1), 1e9)).any()


def test_standardizer_keeps_float32():
    X = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    X[:, 3] = 1.5
    Z = Standardizer().fit(X).transform(X)
    assert Z.dtype == np.float32
    np.testing.assert_array_equal(Z[:, 3], 0.0)
    assert Standardizer().fit(X).transform(np.ones((2, 4), dtype=np.int64)).dtype == np.float64


def test_unscale_linear_matches_predictions():
    rng = np.random.default_rng(1)
    X = rng.normal([10.0, -3.0, 0.0], [5.0, 0.01, 100.0], size=(40, 3))
    X[:, 2] = 4.0  # constant column too
    s = Standardizer().fit(X)
    W, b = rng.normal(size=(3, 2)), rng.normal(size=2)
    W_orig, b_orig = s.unscale_linear(W, b)
    assert W_orig.shape == (3, 2) and b_orig.shape == (2,)
    np.testing.assert_allclose(s.transform(X) @ W + b, X @ W_orig + b_orig, rtol=1e-12, atol=1e-12)
    w1, b1 = s.unscale_linear(W[:, 0], b[0])
    np.testing.assert_allclose(s.transform(X) @ W[:, 0] + b[0], X @ w1 + b1, rtol=1e-12, atol=1e-12)


def test_standardizer_dict_round_trip_and_validation():
    s = Standardizer().fit(np.array([[1.0, 2.0], [3.0, 6.0]]))
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == {"mean": [2.0, 4.0], "scale": [1.0, 2.0]}
    t = Standardizer.from_dict(d)
    np.testing.assert_array_equal(t.mean_, s.mean_)
    np.testing.assert_array_equal(t.scale_, s.scale_)
    for bad in ({"mean": [1.0]}, {"mean": [1.0, 2.0], "scale": [1.0]}, {"mean": [1.0], "scale": [0.0]},
                {"mean": [float("nan")], "scale": [1.0]}, {"mean": ["x"], "scale": [1.0]}, [], {"mean": [], "scale": []}):
        with pytest.raises(DataError):
            Standardizer.from_dict(bad)


def test_standardizer_errors():
    with pytest.raises(ConfigError, match="not fitted"):
        Standardizer().transform(np.ones((2, 2)))
    s = Standardizer().fit(np.ones((3, 2)))
    with pytest.raises(DataError, match=r"expected shape \(n, 2\)"):
        s.transform(np.ones((3, 3)))
    with pytest.raises(DataError, match="NaN or infinite"):
        Standardizer().fit(np.array([[1.0], [np.inf]]))
    with pytest.raises(DataError, match="2-D"):
        Standardizer().fit(np.ones(3))
