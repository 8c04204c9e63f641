"""Tests for gradloop.metrics against hand formulas and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradloop.errors import DataError, GradloopError
from gradloop.metrics import classification_metrics, confusion_matrix, regression_metrics

skm = pytest.importorskip("sklearn.metrics")


# ------------------------------------------------------------ regression


def test_regression_by_hand():
    y = np.array([3.0, -0.5, 2.0, 7.0])
    p = np.array([2.5, 0.0, 2.0, 8.0])
    m = regression_metrics(y, p)
    assert m["mse"] == pytest.approx((0.25 + 0.25 + 0 + 1) / 4, rel=1e-15)
    assert m["rmse"] == pytest.approx(math.sqrt(0.375), rel=1e-15)
    assert m["mae"] == pytest.approx((0.5 + 0.5 + 0 + 1) / 4, rel=1e-15)
    ss_tot = np.sum((y - y.mean()) ** 2)
    assert m["r2"] == pytest.approx(1 - 1.5 / ss_tot, rel=1e-14)
    assert all(isinstance(v, float) for v in m.values())


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape_true,shape_pred", [((50,), (50,)), ((50,), (50, 1)), ((50, 1), (50,)),
                                                   ((50, 1), (50, 1))])
def test_regression_against_sklearn(seed, shape_true, shape_pred):
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(50) * 3 + 1
    p = y + rng.standard_normal(50)
    m = regression_metrics(y.reshape(shape_true), p.reshape(shape_pred))
    assert m["mse"] == pytest.approx(skm.mean_squared_error(y, p), rel=1e-12)
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)), rel=1e-12)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert m["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-12)


def test_regression_multi_output_against_sklearn():
    rng = np.random.default_rng(7)
    Y = rng.standard_normal((40, 3)) * [1.0, 5.0, 0.2]
    P = Y + rng.standard_normal((40, 3))
    m = regression_metrics(Y, P)
    assert m["mse"] == pytest.approx(skm.mean_squared_error(Y, P), rel=1e-12)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(Y, P), rel=1e-12)
    # 1 - sum SS_res / sum SS_tot over outputs is scikit-learn's variance-weighted R^2
    assert m["r2"] == pytest.approx(skm.r2_score(Y, P, multioutput="variance_weighted"), rel=1e-12)


def test_regression_perfect_and_constant():
    y = np.array([1.0, 2.0, 3.0])
    assert regression_metrics(y, y) == {"mse": 0.0, "rmse": 0.0, "mae": 0.0, "r2": 1.0}
    assert math.isnan(regression_metrics(np.ones(3), np.array([1.0, 2.0, 0.0]))["r2"])


def test_regression_size_mismatch_is_data_error():
    # (n, 1) against (n, 2) used to broadcast into wrong numbers.
    with pytest.raises(DataError, match="y_pred has 8 values but y_true has 4"):
        regression_metrics(np.ones((4, 1)), np.ones((4, 2)))
    with pytest.raises(GradloopError):
        regression_metrics(np.ones(4), np.ones(3))


# ------------------------------------------------------------ classification


def sk_classification(y, p, n_classes):
    average = "binary" if n_classes == 2 else "macro"
    labels = list(range(n_classes))
    kw = {"labels": labels, "average": average, "zero_division": 0}
    return {
        "accuracy": skm.accuracy_score(y, p),
        "precision": skm.precision_score(y, p, **kw),
        "recall": skm.recall_score(y, p, **kw),
        "f1": skm.f1_score(y, p, **kw),
        "confusion_matrix": skm.confusion_matrix(y, p, labels=labels).tolist(),
    }


def assert_same(m, want):
    assert m["confusion_matrix"] == want["confusion_matrix"]
    for key in ("accuracy", "precision", "recall", "f1"):
        assert m[key] == pytest.approx(want[key], rel=1e-12, abs=1e-15), key


def test_classification_binary_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([1, 0, 1, 1, 0, 0, 0, 1])
    m = classification_metrics(y, p, 2)
    # tp = 3, fp = 1, fn = 1, tn = 3
    assert m["confusion_matrix"] == [[3, 1], [1, 3]]
    assert m["accuracy"] == 6 / 8
    assert m["precision"] == 3 / 4 and m["recall"] == 3 / 4
    assert m["f1"] == pytest.approx(0.75, rel=1e-15)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
@pytest.mark.parametrize("seed", range(6))
def test_classification_against_sklearn(n_classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, 80)
    p = np.where(rng.random(80) < 0.6, y, rng.integers(0, n_classes, 80))
    assert_same(classification_metrics(y, p, n_classes), sk_classification(y, p, n_classes))


def test_classification_never_predicted_class_scores_zero():
    y = np.array([0, 1, 2, 2, 1, 0])
    p = np.array([0, 1, 1, 1, 1, 0])  # class 2 never predicted
    m = classification_metrics(y, p, 3)
    assert_same(m, sk_classification(y, p, 3))
    # a class in neither list still counts in the macro average over n_classes (sklearn with labels=range(n))
    y, p = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    m = classification_metrics(y, p, 3)
    assert_same(m, sk_classification(y, p, 3))
    assert m["confusion_matrix"][2] == [0, 0, 0]


def test_classification_binary_without_positives():
    y, p = np.zeros(4, dtype=int), np.zeros(4, dtype=int)
    m = classification_metrics(y, p, 2)
    assert m["accuracy"] == 1.0 and m["precision"] == m["recall"] == m["f1"] == 0.0
    assert_same(m, sk_classification(y, p, 2))


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix([0, 0, 1, 2], [1, 0, 2, 2], 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 0, 1], [0, 0, 1]])
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(confusion_matrix(np.array([1.0, 0.0]), np.array([1.0, 1.0]), 2),
                                  [[0, 1], [0, 1]])


@pytest.mark.parametrize("y_true,y_pred,fragment", [
    ([0, 1, -1], [0, 1, 2], "y_true holds labels outside [0, 3)"),  # used to count as class 2
    ([0, 1, 2], [0, 3, 2], "y_pred holds labels outside [0, 3)"),
    ([0, 1.5, 2], [0, 1, 2], "y_true must hold class indices"),  # used to count as class 1
    (["a", "b", "c"], [0, 1, 2], "y_true must hold class indices"),
    ([0, 1, 2], [0, 1], "y_true has 3 labels but y_pred has 2"),
    ([0, 1, 2], [1], "y_true has 3 labels but y_pred has 1"),  # used to broadcast
])
def test_bad_labels_are_data_errors(y_true, y_pred, fragment):
    with pytest.raises(DataError) as info:
        classification_metrics(y_true, y_pred, 3)
    assert fragment in str(info.value)
