"""gradloop.glass.explain: the chapter's epoch written out, every number checked against the arithmetic.

The text is parsed back: each product, sum, gradient, update and loss it prints must equal
what gradloop.gradients, gradloop.loss and gradloop.train compute (to the 10 significant
digits printed).
"""

import re

import numpy as np
import pytest

import gradloop
from gradloop.errors import ConfigError, DataError

NUMBER = r"\(?-?[0-9.]+(?:e[-+]?\d+)?\)?"
REL = 2e-9  # 10 significant digits printed


def _value(text):
    return float(text.strip("()"))


def _close(a, b):
    return abs(a - b) <= REL * max(1.0, abs(b))


CHAPTER_X = np.array([[0.5], [1.0], [1.5], [2.0], [2.5], [3.0]])


def test_the_chapters_first_epoch_by_hand():
    """The chapter's worked example: input 0.5, weight 1.0; Y = 2X; lr 0.1."""
    text = str(gradloop.explain(CHAPTER_X, 2 * CHAPTER_X, np.array([[1.0]]), 0.1))
    assert "row 1: 0.5*1 = 0.5" in text
    # sum of squares 0.25 + 1 + 2.25 + 4 + 6.25 + 9 = 22.75, over 6 rows
    assert "... (2 more) = 22.75" in text and "loss = 22.75 / 6 = 3.791666667" in text
    # X . (Y - Y_pred) = 0.5*0.5 + 1*1 + 1.5*1.5 + 2*2 + 2.5*2.5 + 3*3 = 22.75; -2 * 22.75 / 6
    assert "-2 * 22.75 / 6 = -7.583333333" in text
    assert "w[0]: 1 - 0.1 * (-7.583333333) = 1.758333333" in text
    assert "new loss = 0.2214438657" in text  # the README's report of train(..., verbose=True)
    assert "Why the loss fell" in text and "2/L = 0.2637362637" in text


@pytest.mark.parametrize("epoch", [1, 2, 7])
@pytest.mark.parametrize("bias", [None, 0.5])
def test_epoch_k_starts_where_train_stops_and_ends_where_train_goes(epoch, bias):
    rng = np.random.default_rng(epoch)
    X = rng.standard_normal((20, 3))
    Y = X @ [1.0, -2.0, 0.5] + 0.3
    w = np.zeros(3)
    explanation = gradloop.explain(X, Y, w, 0.05, epoch=epoch, bias=bias)
    before = gradloop.train(X, Y, w, 0.05, epoch - 1, bias=bias)
    after = gradloop.train(X, Y, w, 0.05, epoch, bias=bias)
    if bias is not None:
        (before, b_before), (after, b_after) = before, after
        assert np.isclose(explanation.bias[0], b_before, rtol=1e-12)
        assert np.isclose(explanation.new_bias[0], b_after, rtol=1e-12)
    assert np.allclose(explanation.weights[:, 0], before, rtol=1e-12, atol=1e-15)
    assert np.allclose(explanation.new_weights[:, 0], after, rtol=1e-12, atol=1e-15)
    grads = gradloop.gradients(X, Y, explanation.weights, explanation.bias)
    gW = grads if bias is None else grads[0]
    assert np.allclose(explanation.gradients, gW, rtol=1e-12, atol=1e-15)
    pred = gradloop.model(X, explanation.new_weights, explanation.new_bias)
    assert np.isclose(explanation.new_loss, gradloop.loss(Y.reshape(-1, 1), pred), rtol=1e-12)


def _check_every_line(text, explanation, X, Y):
    """Parse the text back and check each printed relation, and the numbers against to_dict()."""
    data = explanation.to_dict()
    n, k = len(X), np.asarray(Y).reshape(len(X), -1).shape[1]
    checked = 0
    for line in text.splitlines():
        if m := re.search(rf"loss = ({NUMBER}) / (\d+) = ({NUMBER})$", line):
            total, size, value = _value(m[1]), int(m[2]), _value(m[3])
            assert size == n * k and _close(total / size, value) and _close(value, data["loss"])
        elif m := re.search(rf"-2 \* ({NUMBER}) / \(?(\d+)(?:\*(\d+)\))? = ({NUMBER})(?:, rounded: ({NUMBER}))?$",
                            line):
            total, rows, outs, value = _value(m[1]), int(m[2]), int(m[3] or 1), _value(m[4])
            assert rows == n and _close(-2 * total / (rows * outs), value)
            if m[5] is not None:
                assert _value(m[5]) == round(value, 6)
        elif m := re.search(rf"(w\[[\d,]+\]|bias(?:\[\d+\])?): ({NUMBER}) - ({NUMBER}) \* ({NUMBER}) = ({NUMBER})$",
                            line):
            w0, lr, g, w1 = (_value(m[i]) for i in range(2, 6))
            assert _close(lr, data["lr"])
            if explanation.new_weights is not None and m[1].startswith("w"):
                idx = [int(i) for i in m[1][2:-1].split(",")]
                i, j = idx[0], idx[1] if len(idx) > 1 else 0
                assert _close(w1, data["new_weights"][i][j]) and _close(g, data["gradients"][i][j])
            assert _close(w1, round(w0 - lr * g, 6)) or _close(w1, w0 - lr * g)
        elif m := re.search(rf"new loss = ({NUMBER})$", line):
            assert _close(_value(m[1]), data["new_loss"])
        elif m := re.search(rf"= ({NUMBER})$", line):
            if "(" in line.split("=")[0] or "*" in line.split("=")[0]:
                pass  # sums are checked through the lines that use their totals
        else:
            continue
        checked += 1
    return checked


def test_every_printed_relation_holds_with_outputs_bias_rounding_and_long_sums():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 5))
    Y = X @ rng.standard_normal((5, 2)) + [1.0, -1.0]
    explanation = gradloop.explain(X, Y, np.zeros((5, 2)), 0.05, epoch=4, bias=np.zeros(2), round_to=6)
    text = str(explanation)
    assert "... (36 more)" in text and "... (37 more rows)" in text  # long sums: first terms, then the count
    assert "(gradients rounded to 6 decimals, as the chapter does; so are the new weights)" in text
    assert _check_every_line(text, explanation, X, Y) >= 5 * 2 * 2 + 2 * 2 + 2
    assert np.allclose(explanation.new_weights, gradloop.train(X, Y, np.zeros((5, 2)), 0.05, 4, bias=np.zeros(2),
                                                                round_to=6)[0], rtol=0, atol=1e-12)


def test_to_dict_holds_the_numbers():
    d = gradloop.explain(CHAPTER_X, 2 * CHAPTER_X, np.array([[1.0]]), 0.1).to_dict()
    assert d["loss"] == pytest.approx(3.7916666666666665) and d["new_loss"] == pytest.approx(0.2214438657, 1e-9)
    assert d["gradients"] == [[pytest.approx(-7.583333333333333)]]
    assert d["new_weights"] == [[pytest.approx(1.7583333333333333)]]
    assert d["predicted_change"] == pytest.approx(-0.1 * 7.583333333333333 ** 2)
    assert d["stable_lr"] == pytest.approx(2 / (2 * (CHAPTER_X ** 2).sum() / 6))


def test_a_step_beyond_the_stable_bound_says_why_the_loss_rose():
    text = str(gradloop.explain(CHAPTER_X, 2 * CHAPTER_X, np.array([[1.0]]), 0.3))
    assert "Why the loss rose" in text and "at or above it" in text


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(epoch=0), ConfigError, "epoch must be an integer >= 1"),
    (dict(epoch=1.5), ConfigError, "epoch must be an integer >= 1"),
    (dict(round_to=-1), ConfigError, "round_to"),
    (dict(lr=-0.1), ConfigError, "lr must be a positive finite number, got -0.1"),
    (dict(weights=np.zeros(2)), DataError, "weights have shape"),
])
def test_bad_arguments_are_refused_by_name(kwargs, error, message):
    args = dict(X=CHAPTER_X, Y=2 * CHAPTER_X, weights=np.array([[1.0]]), lr=0.1) | kwargs
    with pytest.raises(error, match=message):
        gradloop.explain(**args)
