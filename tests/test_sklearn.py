"""gradloop.sklearn: scikit-learn's estimator checks, model selection, and agreement with gradloop.fit."""

import functools
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import gradloop  # noqa: E402
from gradloop.data import Standardizer  # noqa: E402
from gradloop.errors import ConfigError, DataError, DivergenceError  # noqa: E402
from gradloop.models import linear, mlp  # noqa: E402
from gradloop.optimizers import SGD, Adam, CosineLR  # noqa: E402
from gradloop.sklearn import GradloopClassifier, GradloopRegressor  # noqa: E402


@functools.cache
def diabetes():
    return load_diabetes(return_X_y=True)


@functools.cache
def iris():
    return load_iris(return_X_y=True)


# ---------------------------------------------------------------- scikit-learn's checks
# The defaults, and the other model and losses: every check passes, none is expected to fail.
CHECKED = [
    GradloopRegressor(),
    GradloopClassifier(),
    GradloopRegressor(model="mlp", hidden_layer_sizes=(16,)),
    GradloopClassifier(model="mlp", hidden_layer_sizes=(16,), batch_size=16, epochs=50),
    GradloopClassifier(loss="bce"),  # binary only: its tags say so, and the checks test that it refuses 3 classes
]


def _check_name(check):
    return check.func.__name__ if isinstance(check, functools.partial) else check.__name__


@parametrize_with_checks(CHECKED)
def test_sklearn_estimator_checks(estimator, check):
    if _check_name(check) == "check_array_api_input" and os.environ.get("SCIPY_ARRAY_API") != "1":
        # This check skips itself unless SCIPY_ARRAY_API=1 was set before scipy was imported;
        # run it for real in a fresh interpreter that has it (a skip there fails the test).
        code = "import pickle, sys; estimator, check = pickle.load(sys.stdin.buffer); check(estimator)"
        done = subprocess.run([sys.executable, "-c", code], input=pickle.dumps((estimator, check)),
                              env={**os.environ, "SCIPY_ARRAY_API": "1"}, capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
    else:
        check(estimator)


# ---------------------------------------------------------------- model selection
def test_linear_regressor_cross_val_matches_least_squares_on_diabetes():
    X, y = diabetes()
    ours = cross_val_score(GradloopRegressor(), X, y, cv=5)
    exact = cross_val_score(LinearRegression(), X, y, cv=5)
    assert ours.mean() > 0.45
    # 200 epochs at 1/L get within a hair of the least-squares fit on every fold.
    np.testing.assert_allclose(ours, exact, atol=0.01)


def test_pipeline_with_standard_scaler_equals_built_in_standardizing():
    X, y = diabetes()
    pipe = Pipeline([("scale", StandardScaler()), ("reg", GradloopRegressor(standardize=False))])
    scores = cross_val_score(pipe, X, y, cv=5)
    assert scores.mean() > 0.45
    # StandardScaler and gradloop's Standardizer compute the same statistics (ddof=0).
    np.testing.assert_allclose(pipe.fit(X, y).predict(X), GradloopRegressor().fit(X, y).predict(X), rtol=1e-9)
    assert pipe.named_steps["reg"].scaler_ is None


def test_mlp_classifier_cross_val_on_iris_and_digits():
    X, y = iris()
    assert cross_val_score(GradloopClassifier(model="mlp", batch_size=16, epochs=50, lr=1e-2), X, y, cv=5).mean() > 0.9
    X, y = load_digits(return_X_y=True)
    clf = GradloopClassifier(model="mlp", hidden_layer_sizes=(32,), batch_size=32, epochs=10, lr=1e-2)
    assert cross_val_score(clf, X, y, cv=3).mean() > 0.9


def test_grid_search_over_lr_and_hidden_sizes():
    X, y = iris()
    grid = GridSearchCV(GradloopClassifier(model="mlp", batch_size=16, epochs=30),
                        {"lr": [1e-5, 1e-2], "hidden_layer_sizes": [(2,), (32,)]}, cv=3)
    grid.fit(X, y)
    # lr=1e-5 barely moves the weights in 30 epochs: the search must see that.
    assert grid.best_params_["lr"] == 1e-2
    assert grid.best_score_ > 0.9
    assert grid.best_estimator_.score(X, y) > 0.9
    scores = grid.cv_results_["mean_test_score"]
    slow = [s for s, p in zip(scores, grid.cv_results_["params"]) if p["lr"] == 1e-5]
    assert max(slow) < grid.best_score_


def test_grid_search_regressor_in_pipeline():
    X, y = diabetes()
    pipe = Pipeline([("scale", StandardScaler()), ("reg", GradloopRegressor(standardize=False))])
    grid = GridSearchCV(pipe, {"reg__lr": [1e-4, None], "reg__model": ["linear"]}, cv=3).fit(X, y)
    assert grid.best_params_["reg__lr"] is None  # 1/L beats a tiny fixed step
    assert grid.best_score_ > 0.4


# ---------------------------------------------------------------- the same numbers as gradloop.fit
def test_regressor_equals_gradloop_fit_bit_for_bit():
    X, y = diabetes()
    est = GradloopRegressor(epochs=50).fit(X, y)
    scaler = Standardizer().fit(X)
    Xs = scaler.transform(X)
    lr = 1.0 / gradloop.lipschitz(Xs)  # the default: 1/L of the MSE
    model = linear(X.shape[1], 1)
    history = gradloop.fit(model, Xs, y, loss="mse", optimizer=SGD(lr), epochs=50)
    assert est.lr_ == lr
    assert np.array_equal(est.predict(X), model.predict(scaler.transform(X))[:, 0])
    assert est.loss_curve_ == history.history["loss"]
    assert est.n_iter_ == 50 and len(est.loss_curve_) == 50
    assert est.history_.history["new_loss"] == history.history["new_loss"]


def test_mlp_classifier_equals_gradloop_fit_bit_for_bit():
    X, y = iris()
    est = GradloopClassifier(model="mlp", hidden_layer_sizes=(8, 4), activation="tanh", optimizer="adam",
                             lr=0.01, batch_size=16, epochs=5, random_state=7).fit(X, y)
    scaler = Standardizer().fit(X)
    model = mlp([4, 8, 4, 3], "tanh", seed=7, task="multiclass")
    gradloop.fit(model, scaler.transform(X), y, loss="cross-entropy", optimizer=Adam(0.01), epochs=5,
                 batch_size=16, seed=7)
    assert np.array_equal(est.predict_proba(X), model.predict_proba(scaler.transform(X)))
    for (name, ours), (_, theirs) in zip(est.model_.named_parameters(), model.named_parameters()):
        assert np.array_equal(ours, theirs), name


# ---------------------------------------------------------------- partial_fit
def _same_run(a, b):
    for (name, p), (_, q) in zip(a.model_.named_parameters(), b.model_.named_parameters()):
        assert np.array_equal(p, q), name
    assert a.loss_curve_ == b.loss_curve_
    assert a.n_iter_ == b.n_iter_


@pytest.mark.parametrize("params", [
    {},  # linear, full batch, lr = 1/L
    {"model": "mlp", "hidden_layer_sizes": (8,), "optimizer": "adam", "lr": 1e-2},
    {"optimizer": "nesterov", "schedule": CosineLR(5)},
    {"model": "mlp", "hidden_layer_sizes": (8,), "batch_size": 64, "random_state": 3},  # the mini-batch order continues
], ids=["linear", "mlp-adam", "nesterov-cosine", "mlp-minibatch"])
def test_regressor_partial_fit_five_times_equals_fit_five_epochs(params):
    X, y = diabetes()
    whole = GradloopRegressor(epochs=5, **params).fit(X, y)
    steps = GradloopRegressor(**params)
    for _ in range(5):
        assert steps.partial_fit(X, y) is steps
    _same_run(whole, steps)
    assert np.array_equal(whole.predict(X), steps.predict(X))
    assert steps.optimizer_.steps == whole.optimizer_.steps


def test_classifier_partial_fit_five_times_equals_fit_five_epochs():
    X, y = iris()
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    whole = GradloopClassifier(model="mlp", hidden_layer_sizes=(8,), epochs=5).fit(X, labels)
    steps = GradloopClassifier(model="mlp", hidden_layer_sizes=(8,))
    steps.partial_fit(X, labels, classes=["virginica", "setosa", "versicolor"])
    for _ in range(4):
        steps.partial_fit(X, labels)
    _same_run(whole, steps)
    assert np.array_equal(whole.predict_proba(X), steps.predict_proba(X))
    assert list(steps.classes_) == ["setosa", "versicolor", "virginica"]


def test_partial_fit_continues_after_fit_and_on_new_rows():
    X, y = diabetes()
    est = GradloopRegressor(epochs=3).fit(X[:300], y[:300])
    scaler_mean = est.scaler_.mean_.copy()
    est.partial_fit(X[300:], y[300:])
    assert est.n_iter_ == 4 and len(est.loss_curve_) == 4
    np.testing.assert_array_equal(est.scaler_.mean_, scaler_mean)  # the scaler stays the first one


def test_classifier_partial_fit_needs_classes_and_refuses_new_labels():
    X, y = iris()
    clf = GradloopClassifier()
    with pytest.raises(ValueError, match="classes must be passed"):
        clf.partial_fit(X, y)
    clf.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])  # a class may be absent from one call
    assert clf.model_.n_outputs == 3
    with pytest.raises(ValueError, match="not the same"):
        clf.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(DataError, match="not among classes_"):
        clf.partial_fit(X, y + 1)


# ---------------------------------------------------------------- parameters
def test_get_params_set_params_and_clone_round_trip():
    est = GradloopClassifier(model="mlp", hidden_layer_sizes=(16, 8), lr=0.05, optimizer="momentum",
                             schedule=CosineLR(10), random_state=4)
    params = est.get_params()
    assert params["hidden_layer_sizes"] == (16, 8) and params["lr"] == 0.05 and params["loss"] == "cross-entropy"
    twin = clone(est)
    assert twin is not est
    assert {k: v for k, v in twin.get_params().items() if k != "schedule"} == \
        {k: v for k, v in params.items() if k != "schedule"}
    assert vars(twin.schedule) == vars(est.schedule)
    assert est.set_params(lr=0.1, model="linear", epochs=7) is est
    assert est.get_params()["lr"] == 0.1 and est.model == "linear" and est.epochs == 7
    with pytest.raises(ValueError, match="Invalid parameter"):
        est.set_params(learning_rate=0.1)
    X, y = iris()
    fitted = est.fit(X, y)
    unfitted = clone(fitted)
    with pytest.raises(NotFittedError):
        unfitted.predict(X)
    assert unfitted.get_params() == {**fitted.get_params(), "schedule": unfitted.schedule}


def test_optimizer_object_is_a_template_and_left_untouched():
    X, y = diabetes()
    template = SGD(0.05, momentum=0.5)
    est = GradloopRegressor(optimizer=template, epochs=20).fit(X, y)
    assert template.steps == 0 and template.state == {}
    assert est.optimizer_ is not template and est.optimizer_.steps == 20 and est.optimizer_.momentum == 0.5
    assert GradloopRegressor(optimizer=template, lr=0.01, epochs=1).fit(X, y).lr_ == 0.01


def test_callbacks_are_copied_and_validation_split_records_val_loss():
    class CountEpochs(gradloop.Callback):
        wants_records = False

        def __init__(self):
            self.epochs = 0

        def on_epoch_end(self, record, trainer):
            self.epochs += 1

    X, y = diabetes()
    counter = CountEpochs()
    est = GradloopRegressor(epochs=7, callbacks=[counter], validation_split=0.25).fit(X, y)
    assert counter.epochs == 0  # the parameter is left as given
    assert est.callbacks_[0].epochs == 7
    assert len(est.history_.history["val_loss"]) == 7
    with pytest.raises(ConfigError, match="validation_split"):
        GradloopRegressor(validation_split=0.25).partial_fit(X, y)


# ---------------------------------------------------------------- labels, probabilities, outputs
def test_string_labels_round_trip_through_predict():
    X, y = iris()
    names = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    clf = GradloopClassifier().fit(X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    pred = clf.predict(X)
    assert set(pred) <= set(clf.classes_)
    assert np.mean(pred == names) > 0.9
    assert clf.score(X, names) == np.mean(pred == names)


@pytest.mark.parametrize("params", [{}, {"model": "mlp"}, {"loss": "bce"}], ids=["softmax", "mlp", "bce"])
def test_predict_proba_rows_sum_to_one_and_agree_with_predict(params):
    X, y = iris()
    if params.get("loss") == "bce":
        X, y = X[y > 0], np.where(y[y > 0] == 2, "yes", "no")
    clf = GradloopClassifier(**params).fit(X, y)
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(clf.classes_))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(proba >= 0)
    assert np.array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba)
    assert clf.score(X, y) > 0.9


def test_bce_refuses_more_than_two_classes():
    X, y = iris()
    with pytest.raises(ValueError, match="Only binary classification is supported"):
        GradloopClassifier(loss="bce").fit(X, y)


def test_multi_output_regression_is_column_by_column():
    X, y = diabetes()
    Y = np.column_stack([y, -3 * y + 1])
    both = GradloopRegressor(epochs=100).fit(X, Y)
    assert both.predict(X).shape == (len(X), 2) and both.model_.n_outputs == 2
    # lr = k/L with the loss averaged over k outputs: each column takes the single-output steps.
    one = GradloopRegressor(epochs=100).fit(X, y)
    np.testing.assert_allclose(both.predict(X)[:, 0], one.predict(X), rtol=1e-10)
    assert both.score(X, Y) > 0.5


def test_float32_and_dataframe_inputs():
    pd = pytest.importorskip("pandas")
    X, y = diabetes()
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    est = GradloopRegressor(dtype="float32").fit(frame, y)
    assert est.model_.dtype == np.float32
    assert est.predict(frame).dtype == np.float32
    assert list(est.feature_names_in_) == list(frame.columns) and est.n_features_in_ == 10
    np.testing.assert_allclose(est.predict(frame), GradloopRegressor().fit(X, y).predict(X), rtol=1e-3)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("params, match", [
    ({"model": "tree"}, "model must be one of"),
    ({"loss": "cross-entropy"}, "for multiclass, not for GradloopRegressor"),
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"dtype": "int8"}, "dtype must be"),
    ({"model": "mlp", "hidden_layer_sizes": (8, 0)}, "hidden_layer_sizes"),
    ({"model": "mlp", "activation": "swish"}, "unknown activation"),
    ({"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'"),
    ({"lr": -1.0}, "Invalid learning rate"),
    ({"epochs": 2.5}, "epochs must be"),
    ({"batch_size": 0}, "batch_size"),
    ({"clip_norm": -1}, "clip_norm"),
    ({"schedule": "cosine"}, "schedule must be"),
    ({"random_state": -1}, "random_state"),
    ({"optimizer": SGD(0.1), "weight_decay": 0.1}, "weight_decay"),
])
def test_bad_parameters_raise_config_error_at_fit(params, match):
    X, y = diabetes()
    est = GradloopRegressor(**params)  # constructing never checks (scikit-learn's convention)
    with pytest.raises(ConfigError, match=match):
        est.fit(X, y)
    with pytest.raises(NotFittedError):
        est.predict(X)


def test_divergence_raises_and_leaves_the_estimator_unfitted():
    X, y = diabetes()
    est = GradloopRegressor(lr=10.0, epochs=50)
    with pytest.raises(DivergenceError, match="diverged") as info:
        est.fit(X, y)
    assert isinstance(info.value, ValueError)
    with pytest.raises(NotFittedError):
        est.predict(X)


def test_importing_gradloop_does_not_import_sklearn():
    code = "import sys, gradloop, gradloop.loop, gradloop.models; print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
