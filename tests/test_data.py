"""Tests for gradloop.data: reading, validating, splitting and scaling tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

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
