"""Every option is checked once, at the boundary, from one table: bad values of each raise ConfigError
naming the argument (and the class it was given to), and nothing trains."""

import numpy as np
import pytest

import gradloop
from gradloop.callbacks import EarlyStopping, LivePlot, LiveReport, ProgressPrinter, ReduceLROnPlateau
from gradloop.constraints import PARAMETERS, check
from gradloop.data import ArraySource
from gradloop.errors import ConfigError
from gradloop.fast.kernels import GRADIENT_MODES
from gradloop.loop import fit
from gradloop.models import linear, mlp
from gradloop.optimizers import SGD, CosineLR, ExponentialLR, StepLR

BAD_ARGUMENTS = [
    (lambda: ExponentialLR(-5), r"ExponentialLR gamma must be a positive finite number, got -5"),
    (lambda: ExponentialLR(0), r"ExponentialLR gamma must be a positive finite number, got 0"),
    (lambda: StepLR(3, gamma=float("nan")), r"StepLR gamma must be a positive finite number, got nan"),
    (lambda: StepLR(2.5), r"StepLR step_size must be a positive integer, got 2.5"),
    (lambda: CosineLR(10, min_lr=-1), r"CosineLR min_lr must be a non-negative finite number, got -1"),
    (lambda: ReduceLROnPlateau(patience=-3), r"ReduceLROnPlateau patience must be a non-negative integer, got -3"),
    (lambda: ReduceLROnPlateau(factor=1.5), r"ReduceLROnPlateau factor must be a number in \(0, 1\), got 1.5"),
    (lambda: ReduceLROnPlateau(cooldown=-1), r"ReduceLROnPlateau cooldown must be a non-negative integer"),
    (lambda: ReduceLROnPlateau(min_lr=-0.1), r"ReduceLROnPlateau min_lr must be a non-negative finite number"),
    (lambda: ReduceLROnPlateau(min_delta=-1), r"ReduceLROnPlateau min_delta must be a non-negative finite"),
    (lambda: EarlyStopping(patience=-1), r"EarlyStopping patience must be a non-negative integer, got -1"),
    (lambda: EarlyStopping(min_delta=float("inf")), r"EarlyStopping min_delta must be a non-negative finite"),
    (lambda: ProgressPrinter(lines=-4), r"ProgressPrinter lines must be a positive integer, got -4"),
    (lambda: ProgressPrinter(lines=0), r"ProgressPrinter lines must be a positive integer, got 0"),
    (lambda: ProgressPrinter(after=-1), r"ProgressPrinter after must be a non-negative integer, got -1"),
    (lambda: LivePlot(interval=-1), r"LivePlot interval must be a non-negative finite number \(seconds\), got -1"),
    (lambda: LiveReport("r.html", interval="often"), r"LiveReport interval must be .*, got 'often'"),
]


@pytest.mark.parametrize("build,message", BAD_ARGUMENTS)
def test_bad_arguments_of_schedules_and_callbacks_are_refused_naming_them(build, message):
    with pytest.raises(ConfigError, match=message):
        build()


def test_the_table_accepts_each_default():
    for build in (ExponentialLR, lambda: StepLR(), lambda: CosineLR(5), ReduceLROnPlateau, EarlyStopping,
                  ProgressPrinter, LivePlot):
        build()
    assert check("gamma", 1e201) == 1e201  # a huge factor is legal (the divergence tests use it)


def test_every_entry_describes_what_it_allows():
    for name, rule in PARAMETERS.items():
        assert rule.text, name


def data(n=40, d=3):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, d)), rng.standard_normal((n, 1))


KNOWN = "known: " + ", ".join(GRADIENT_MODES)


@pytest.mark.parametrize("model,batch_size,as_source", [
    (lambda: linear(3), None, True),    # was: Gram on the source, silently
    (lambda: mlp([3, 4, 1]), None, True),  # was: a reshape error
    (lambda: linear(3), 8, False),      # was: ignored with mini-batches
    (lambda: linear(3), 8, True),
    (lambda: mlp([3, 4, 1]), None, False),
])
def test_an_unknown_gradient_mode_is_refused_everywhere_with_the_names(model, batch_size, as_source):
    X, Y = data()
    net = model()
    before = [p.copy() for p in net.parameters()]
    inputs = (ArraySource(X, Y), None) if as_source else (X, Y)
    with pytest.raises(ConfigError, match=f"unknown gradient mode 'bogus'; {KNOWN}"):
        fit(net, *inputs, loss="mse", optimizer=SGD(0.01), epochs=2, batch_size=batch_size, gradient="bogus")
    assert all(np.array_equal(a, b) for a, b in zip(before, net.parameters()))  # nothing trained


def test_the_chapter_and_the_estimators_refuse_an_unknown_gradient_mode():
    X, Y = data()
    with pytest.raises(ConfigError, match=f"unknown gradient mode 'bogus'; {KNOWN}"):
        gradloop.train(X, Y, np.zeros((3, 1)), 0.01, 2, gradient="bogus")
    with pytest.raises(ConfigError, match=f"unknown gradient mode 'bogus'; {KNOWN}"):
        gradloop.fit_linear(ArraySource(X, Y), None, np.zeros((3, 1)), 0.01, 2, gradient="bogus")
    from gradloop.sklearn import GradloopRegressor

    with pytest.raises(ConfigError, match=f"unknown gradient mode 'bogus'; {KNOWN}"):
        GradloopRegressor(gradient="bogus", epochs=2).fit(X, Y[:, 0])
