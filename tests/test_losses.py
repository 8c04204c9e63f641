"""Tests for gradloop.losses: values and gradients against finite differences and PyTorch.

Every loss is the mean over the batch, as PyTorch's ``reduction="mean"``, and
its ``grad`` is the gradient of that mean with respect to the predictions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradloop.errors import ConfigError
from gradloop.losses import (
    LOSSES,
    MAE,
    MSE,
    BinaryCrossEntropy,
    Huber,
    SoftmaxCrossEntropy,
    get_loss,
    softmax,
)
from numerics import central_diff, rel_err

TOL = 1e-10
FD_TOL = 1e-7
F32_RTOL = 1e-5


# ------------------------------------------------------------ helpers




def close(actual, expected, tol=TOL):
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol)


def t(a, requires_grad=False):
    return torch.tensor(np.asarray(a), requires_grad=requires_grad)


def torch_value_and_grad(torch_loss, y_true, y_pred):
    """The torch loss value and d value / d y_pred."""
    pt = t(y_pred, requires_grad=True)
    value = torch_loss(pt, t(y_true))
    value.backward()
    return value.item(), pt.grad.numpy()


def regression_pair(rng, shape, delta=None, dtype=np.float64):
    """Targets and predictions whose residuals stay away from the kinks (0 and +-delta)."""
    y = rng.standard_normal(shape)
    r = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.05, 2.5, size=shape)
    if delta is not None:  # keep |r| at least 0.05 from delta
        near = np.abs(np.abs(r) - delta) < 0.05
        r[near] *= 1.2
    return y.astype(dtype), (y + r).astype(dtype)


# ------------------------------------------------------------ finite differences

REGRESSION_LOSSES = [MSE(), MAE(), Huber(), Huber(delta=0.5), Huber(delta=2.0)]


@pytest.mark.parametrize("loss", REGRESSION_LOSSES, ids=repr)
@pytest.mark.parametrize("shape", [(7, 3), (6, 1)])
def test_regression_loss_gradient_matches_finite_differences(loss, shape):
    rng = np.random.default_rng(0)
    y, p = regression_pair(rng, shape, delta=getattr(loss, "delta", None))
    numeric = central_diff(lambda: loss.value(y, p), p)
    analytic = loss.grad(y, p)
    assert analytic.shape == p.shape
    assert rel_err(analytic, numeric) < FD_TOL


def test_bce_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((9, 1)) * 3
    y = rng.integers(0, 2, size=9).astype(np.float64)  # (batch,) targets for one logit column
    loss = BinaryCrossEntropy()
    numeric = central_diff(lambda: loss.value(y, z), z)
    assert rel_err(loss.grad(y, z), numeric) < FD_TOL


def test_softmax_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    Z = rng.standard_normal((8, 5)) * 2
    labels = rng.integers(0, 5, size=8)
    loss = SoftmaxCrossEntropy()
    numeric = central_diff(lambda: loss.value(labels, Z), Z)
    assert rel_err(loss.grad(labels, Z), numeric) < FD_TOL


# ------------------------------------------------------------ PyTorch, float64


@pytest.mark.parametrize(("loss", "torch_loss"), [
    (MSE(), torch.nn.MSELoss()),
    (MAE(), torch.nn.L1Loss()),
    (Huber(), torch.nn.HuberLoss()),
    (Huber(delta=0.3), torch.nn.HuberLoss(delta=0.3)),
    (Huber(delta=2.5), torch.nn.HuberLoss(delta=2.5)),
], ids=["mse", "mae", "huber", "huber-0.3", "huber-2.5"])
@pytest.mark.parametrize("shape", [(10, 3), (12, 1)])
def test_regression_loss_matches_torch(loss, torch_loss, shape):
    rng = np.random.default_rng(3)
    y = rng.standard_normal(shape)
    p = y + rng.standard_normal(shape) * 2
    value, grad = loss.value_and_grad(y, p)
    ref_value, ref_grad = torch_value_and_grad(torch_loss, y, p)
    assert isinstance(value, float)
    close(value, ref_value)
    close(grad, ref_grad)
    close(loss.value(y, p), ref_value)
    close(loss.grad(y, p), ref_grad)


@pytest.mark.parametrize("loss", [MSE(), MAE(), Huber(0.7)], ids=repr)
def test_one_dimensional_targets_match_a_single_output_column(loss):
    rng = np.random.default_rng(4)
    y = rng.standard_normal(6)
    p = rng.standard_normal((6, 1))
    value, grad = loss.value_and_grad(y, p)
    ref_value, ref_grad = loss.value_and_grad(y.reshape(-1, 1), p)
    assert grad.shape == (6, 1)
    assert value == ref_value
    np.testing.assert_array_equal(grad, ref_grad)


def test_mae_gradient_is_zero_where_prediction_equals_target_as_torch():
    y = np.array([[1.0], [2.0], [3.0], [4.0]])
    p = np.array([[1.0], [2.5], [3.0], [3.0]])
    value, grad = MAE().value_and_grad(y, p)
    ref_value, ref_grad = torch_value_and_grad(torch.nn.L1Loss(), y, p)
    close(value, ref_value)
    np.testing.assert_array_equal(grad, ref_grad)
    np.testing.assert_array_equal(grad.ravel(), [0.0, 0.25, 0.0, -0.25])


def test_huber_at_exactly_delta_matches_torch():
    y = np.zeros((4, 1))
    p = np.array([[1.0], [-1.0], [0.5], [3.0]])
    value, grad = Huber(1.0).value_and_grad(y, p)
    ref_value, ref_grad = torch_value_and_grad(torch.nn.HuberLoss(delta=1.0), y, p)
    close(value, ref_value)
    close(grad, ref_grad)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_bce_matches_torch_including_huge_logits(scale):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((20, 1)) * scale
    if scale == 1e4:
        z[:4, 0] = [1e4, -1e4, 1e4, -1e4]
    y = rng.integers(0, 2, size=(20, 1)).astype(np.float64)
    if scale == 1e4:
        y[:4, 0] = [1, 1, 0, 0]  # right and wrong answers at both extremes
    loss = BinaryCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grad = loss.value_and_grad(y, z)
    ref_value, ref_grad = torch_value_and_grad(torch.nn.BCEWithLogitsLoss(), y, z)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    close(value, ref_value)
    close(grad, ref_grad)


def test_bce_with_one_dimensional_targets_and_several_outputs():
    rng = np.random.default_rng(6)
    z = rng.standard_normal((10, 3))
    y = rng.integers(0, 2, size=(10, 3)).astype(np.float64)
    value, grad = BinaryCrossEntropy().value_and_grad(y, z)
    ref_value, ref_grad = torch_value_and_grad(torch.nn.BCEWithLogitsLoss(), y, z)
    close(value, ref_value)
    close(grad, ref_grad)
    value1, grad1 = BinaryCrossEntropy().value_and_grad(y[:, 0], z[:, :1])
    ref_value1, ref_grad1 = torch_value_and_grad(torch.nn.BCEWithLogitsLoss(), y[:, :1], z[:, :1])
    close(value1, ref_value1)
    close(grad1, ref_grad1)


@pytest.mark.parametrize("scale", [1.0, 50.0, 1e4])
def test_softmax_cross_entropy_matches_torch_including_huge_logits(scale):
    rng = np.random.default_rng(7)
    Z = rng.standard_normal((15, 4)) * scale
    labels = rng.integers(0, 4, size=15)
    if scale == 1e4:
        Z[0] = [1e4, -1e4, 0.0, 1e4]  # ties at the top
        Z[1] = [-1e4, -1e4, -1e4, -1e4]
        Z[2] = [1e4, -1e4, -1e4, -1e4]
        labels[:3] = [1, 2, 1]
    loss = SoftmaxCrossEntropy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grad = loss.value_and_grad(labels, Z)
    ref_value, ref_grad = torch_value_and_grad(torch.nn.CrossEntropyLoss(), labels, Z)
    assert np.isfinite(value) and np.all(np.isfinite(grad))
    close(value, ref_value)
    close(grad, ref_grad)
    close(grad.sum(axis=1), 0.0, tol=1e-12)  # softmax rows sum to 1, one-hot rows to 1


def test_softmax_cross_entropy_accepts_labels_as_a_column_or_floats():
    rng = np.random.default_rng(8)
    Z = rng.standard_normal((6, 3))
    labels = rng.integers(0, 3, size=6)
    value, grad = SoftmaxCrossEntropy().value_and_grad(labels, Z)
    for other in (labels.reshape(-1, 1), labels.astype(np.float64), labels.tolist()):
        v, g = SoftmaxCrossEntropy().value_and_grad(other, Z)
        assert v == value
        np.testing.assert_array_equal(g, grad)


@pytest.mark.parametrize("loss", [MSE(), MAE(), Huber(), BinaryCrossEntropy()], ids=repr)
def test_losses_leave_their_inputs_alone(loss):
    rng = np.random.default_rng(9)
    y = rng.integers(0, 2, size=(5, 2)).astype(np.float64)
    p = rng.standard_normal((5, 2))
    y0, p0 = y.copy(), p.copy()
    loss.value_and_grad(y, p)
    loss.value(y, p)
    loss.grad(y, p)
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(p, p0)


def test_softmax_cross_entropy_leaves_logits_alone():
    Z = np.random.default_rng(10).standard_normal((4, 3))
    Z0 = Z.copy()
    SoftmaxCrossEntropy().value_and_grad(np.array([0, 1, 2, 0]), Z)
    np.testing.assert_array_equal(Z, Z0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=6),
       st.integers(0, 5))
def test_softmax_cross_entropy_is_finite_for_any_finite_logits(row, label):
    Z = np.array([row])
    labels = np.array([label % len(row)])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        value, grad = SoftmaxCrossEntropy().value_and_grad(labels, Z)
    ref_value, ref_grad = torch_value_and_grad(torch.nn.CrossEntropyLoss(), labels, Z)
    assert value >= 0 and np.isfinite(value)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-15)


def test_softmax_rows_sum_to_one_and_match_torch():
    Z = np.array([[1e4, 0.0, -1e4], [1.0, 2.0, 3.0], [-1e4, -1e4, -1e4]])
    P = softmax(Z)
    close(P, torch.softmax(t(Z), dim=1).numpy())
    close(P.sum(axis=1), 1.0)


# ------------------------------------------------------------ float32


@pytest.mark.parametrize(("loss", "torch_loss"), [
    (MSE(), torch.nn.MSELoss()),
    (MAE(), torch.nn.L1Loss()),
    (Huber(0.8), torch.nn.HuberLoss(delta=0.8)),
], ids=["mse", "mae", "huber"])
def test_regression_losses_keep_float32(loss, torch_loss):
    rng = np.random.default_rng(11)
    y, p = regression_pair(rng, (16, 2), delta=getattr(loss, "delta", None), dtype=np.float32)
    value, grad = loss.value_and_grad(y, p)
    assert grad.dtype == np.float32 and loss.grad(y, p).dtype == np.float32
    ref_value, ref_grad = torch_value_and_grad(torch_loss, y, p)
    np.testing.assert_allclose(value, ref_value, rtol=F32_RTOL)
    np.testing.assert_allclose(grad, ref_grad, rtol=F32_RTOL, atol=F32_RTOL * np.abs(ref_grad).max())


def test_bce_keeps_float32_and_matches_torch():
    rng = np.random.default_rng(12)
    z = (rng.standard_normal((16, 1)) * 4).astype(np.float32)
    z[:2, 0] = [1e4, -1e4]
    y = rng.integers(0, 2, size=(16, 1)).astype(np.float32)
    value, grad = BinaryCrossEntropy().value_and_grad(y, z)
    assert grad.dtype == np.float32
    ref_value, ref_grad = torch_value_and_grad(torch.nn.BCEWithLogitsLoss(), y, z)
    np.testing.assert_allclose(value, ref_value, rtol=F32_RTOL)
    np.testing.assert_allclose(grad, ref_grad, rtol=F32_RTOL, atol=F32_RTOL * np.abs(ref_grad).max())


def test_softmax_cross_entropy_keeps_float32_and_matches_torch():
    rng = np.random.default_rng(13)
    Z = (rng.standard_normal((16, 5)) * 3).astype(np.float32)
    Z[0] = [1e4, -1e4, 0, 0, 0]
    labels = rng.integers(0, 5, size=16)
    value, grad = SoftmaxCrossEntropy().value_and_grad(labels, Z)
    assert grad.dtype == np.float32
    ref_value, ref_grad = torch_value_and_grad(torch.nn.CrossEntropyLoss(), labels, Z)
    np.testing.assert_allclose(value, ref_value, rtol=F32_RTOL)
    np.testing.assert_allclose(grad, ref_grad, rtol=F32_RTOL, atol=F32_RTOL * np.abs(ref_grad).max())


# ------------------------------------------------------------ registry and validation


def test_get_loss_by_name_and_instance():
    assert set(LOSSES) == {"mse", "mae", "huber", "bce", "cross-entropy"}
    for name, cls in LOSSES.items():
        loss = get_loss(name)
        assert type(loss) is cls and loss.name == name
    huber = Huber(0.5)
    assert get_loss(huber) is huber
    assert BinaryCrossEntropy.task == "binary" and SoftmaxCrossEntropy.task == "multiclass"
    assert MSE.task == "regression"


def test_unknown_loss_lists_the_known_ones():
    with pytest.raises(ConfigError, match="'hinge'") as info:
        get_loss("hinge")
    for name in LOSSES:
        assert name in str(info.value)


@pytest.mark.parametrize("delta", [0, -1.0, float("nan")])
def test_huber_delta_must_be_positive(delta):
    with pytest.raises(ConfigError, match=f"delta.*{delta}"):
        Huber(delta)


@pytest.mark.parametrize("loss", [MSE(), MAE(), Huber(), BinaryCrossEntropy()], ids=repr)
@pytest.mark.parametrize("target_dtype", [np.float64, np.int64])
def test_float32_predictions_give_float32_gradients_whatever_the_targets(loss, target_dtype):
    rng = np.random.default_rng(14)
    p = rng.standard_normal((8, 1)).astype(np.float32)
    y = rng.integers(0, 2, size=8).astype(target_dtype)
    value, grad = loss.value_and_grad(y, p)
    assert grad.dtype == np.float32 and loss.grad(y, p).dtype == np.float32
    ref_value, ref_grad = loss.value_and_grad(y.astype(np.float32), p)
    assert value == ref_value
    np.testing.assert_array_equal(grad, ref_grad)
