"""lr_find: a suggestion by its documented rule, exact for the linear model, and no trace left."""

import numpy as np
import pytest

import gradloop
from gradloop.errors import ConfigError
from gradloop.loop import fit
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD, Adam

rng = np.random.default_rng(0)
X = rng.standard_normal((200, 5))
y = X @ rng.standard_normal(5) + 0.1 * rng.standard_normal(200)


@pytest.mark.parametrize("make_optimizer, batch_size, dropout", [(lambda: Adam(1e-3), 32, 0.2),
                                                                 (lambda: SGD(0.01, momentum=0.9), None, 0.0)])
def test_training_after_lr_find_is_bit_for_bit_training_without_it(make_optimizer, batch_size, dropout):
    def run(find_first):
        model, optimizer = mlp([5, 16, 1], "relu", seed=1, dropout=dropout), make_optimizer()
        if find_first:
            found = gradloop.lr_find(model, X, y, loss="mse", optimizer=optimizer, batch_size=batch_size, seed=3)
            assert 1e-7 <= found.suggestion <= 10
        history = fit(model, X, y, loss="mse", optimizer=optimizer, epochs=4, batch_size=batch_size, seed=5)
        return history, model, optimizer

    (h1, m1, o1), (h2, m2, o2) = run(False), run(True)
    assert h1.history == h2.history
    assert all(np.array_equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))
    assert o1.steps == o2.steps and o1.lr == o2.lr


def test_the_linear_model_gets_the_exact_step_and_the_stable_bound():
    model = linear(5, 1)
    found = gradloop.lr_find(model, X, y, loss="mse", optimizer=SGD(0.1), steps=60)
    L = gradloop.lipschitz(X)
    assert found.suggestion == pytest.approx(1 / L, rel=1e-12) and found.stable_lr == pytest.approx(2 / L, rel=1e-12)
    assert float(found) == found.suggestion and "2/L" in str(found)
    # Past the stable bound the steps blow the loss up; below it they never do.
    below = [v for lr, v in zip(found.lrs, found.raw_losses) if lr < found.stable_lr]
    above = [v for lr, v in zip(found.lrs, found.raw_losses) if lr > found.stable_lr]
    assert max(above) > 100 * min(found.raw_losses) and max(below) <= found.raw_losses[0]


def test_the_suggestion_is_where_the_smoothed_loss_falls_fastest():
    model = mlp([5, 16, 1], "tanh", seed=0)
    found = gradloop.lr_find(model, X, y, loss="mse", optimizer=SGD(0.01), start=1e-5, end=1.0, steps=80)
    slopes = np.gradient(np.array(found.losses), np.log(found.lrs))
    assert found.suggestion == found.lrs[int(np.argmin(slopes))]
    assert found.losses[found.lrs.index(found.suggestion)] < found.losses[0]


@pytest.mark.parametrize("kwargs", [dict(start=1.0, end=0.1), dict(steps=2), dict(end=float("inf"))])
def test_bad_sweeps_are_refused(kwargs):
    with pytest.raises(ConfigError, match="lr_find needs 0 < start < end and at least 3 steps"):
        gradloop.lr_find(linear(5, 1), X, y, loss="mse", optimizer=SGD(0.1), **kwargs)


def test_the_command_line_finds_the_learning_rate(cli, tmp_path):
    import pandas as pd

    pd.DataFrame(X, columns=list("abcde")).assign(y=y).to_csv(tmp_path / "d.csv", index=False)
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--model", "mlp", "--hidden", "8",
                           "--lr", "find", "--epochs", "3")
    assert status == 0, err
    suggestion = float(out.split("suggestion ")[1].split()[0])
    assert f"lr {suggestion:.6g}," in out  # the run uses the suggestion
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--lr", "find", "--epochs", "3")
    assert status == 0 and "exact for the linear model with MSE: 1/L" in out


def test_the_sweep_is_drawn_in_the_report(cli, tmp_path):
    import json

    import pandas as pd

    pd.DataFrame(X, columns=list("abcde")).assign(y=y).to_csv(tmp_path / "d.csv", index=False)
    status, out, err = cli("train", tmp_path / "d.csv", "--target", "y", "--lr", "find", "--epochs", "3",
                           "--log", tmp_path / "run.jsonl")
    assert status == 0, err
    final = [json.loads(line) for line in open(tmp_path / "run.jsonl")][-1]
    assert final["final"] and final["lr_find"]["stable_lr"] == pytest.approx(2 * final["lr_find"]["suggestion"])
    status, out, err = cli("report", tmp_path / "run.jsonl", "--png", tmp_path / "plots")
    assert status == 0, err
    assert (tmp_path / "plots" / "lr_find.png").stat().st_size > 1000
