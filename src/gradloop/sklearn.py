"""scikit-learn estimators around the gradloop training loop.

``GradloopRegressor`` and ``GradloopClassifier`` train a linear model or an MLP
with :func:`gradloop.loop.fit` and behave like any scikit-learn estimator:
``fit``, ``predict``, ``score``, ``partial_fit``, ``get_params``/``set_params``,
and they work inside ``Pipeline``, ``GridSearchCV`` and ``cross_val_score``.
Every training option is a constructor parameter, stored as given and checked
in ``fit`` (scikit-learn's convention).

scikit-learn is optional (``pip install gradloop[sklearn]``) and imported only
by this module: ``import gradloop`` never loads it.

The defaults are the chapter's: a linear model, full-batch gradient descent
with ``lr = 1/L`` (L the smoothness constant of the loss on the training rows,
standardized unless ``standardize=False``, see :func:`gradloop.lipschitz`), 200 epochs. For ``model="mlp"`` the
default optimizer is Adam with ``lr=1e-3``. Default learning rates (``lr=None``):

===================  ===============  =====
optimizer            linear           mlp
===================  ===============  =====
sgd                  1/L of the loss  0.01
momentum, nesterov   1/L of the loss  0.001
adam, adamw          0.01             0.001
===================  ===============  =====

where L bounds the curvature of the training loss of the linear model: with ``lipschitz(X)`` that of the MSE (see
:func:`gradloop.lipschitz`), L is ``lipschitz(X) / k`` for MSE with k outputs,
``lipschitz(X) / (2k)`` for Huber (and MAE, which has no curvature bound and
takes Huber's step), ``lipschitz(X) / 4`` for softmax cross-entropy and
``lipschitz(X) / 8`` for binary cross-entropy. Full-batch SGD at 1/L never
diverges on the linear model.

Example:
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.model_selection import cross_val_score
    >>> X, y = load_diabetes(return_X_y=True)
    >>> cross_val_score(GradloopRegressor(), X, y, cv=5).mean()  # R^2, about 0.48
"""

from __future__ import annotations

import copy
import numbers

import numpy as np

try:  # scikit-learn is an optional extra: without it, say how to get it rather than fail deep in an import
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:
    raise ImportError("gradloop.sklearn needs scikit-learn: pip install 'gradloop[sklearn]' "
                      f"(importing it failed: {exc})") from exc

from .data import Standardizer
from .defaults import ESTIMATOR_EPOCHS, estimator_lr
from .errors import ConfigError, DataError
from .layers import Dense
from .loop import History, fit as loop_fit
from .losses import get_loss
from .models import Sequential, mlp
from .constraints import check_all
from .optimizers import Optimizer, Schedule, _check_lr, get_optimizer
from .sums import lipschitz

__all__ = ["GradloopRegressor", "GradloopClassifier"]

MODELS = ("linear", "mlp")
DTYPES = ("float64", "float32")


class _ContinuedSchedule(Schedule):
    """A schedule read ``offset`` epochs later: partial_fit call k continues where call k-1 stopped."""

    name = "continued"

    def __init__(self, schedule, offset):
        self.schedule, self.offset = schedule, offset

    def lr(self, base_lr, epoch):
        return self.schedule.lr(base_lr, epoch + self.offset)


def _constructor(default_loss):
    """The estimators' one ``__init__``, with the loss their task defaults to.

    scikit-learn reads the parameters and their defaults from the signature, and
    its rules want each argument stored unchanged under its own name, nothing more.
    """
    def __init__(self, *, model="linear", hidden_layer_sizes=(64,), activation="relu", dropout=0.0,
                 loss=default_loss, optimizer=None, lr=None, epochs=ESTIMATOR_EPOCHS, batch_size=None,
                 weight_decay=0.0,
                 clip_norm=None, schedule=None, round_to=None, gradient="auto", standardize=True,
                 dtype="float64", random_state=None, shuffle=True, validation_split=None, callbacks=None,
                 keep_records=False, verbose=False):
        for name, value in locals().items():
            if name != "self":
                setattr(self, name, value)

    return __init__


class _GradloopEstimator(BaseEstimator):
    """What the regressor and the classifier share: checks, model building, training."""

    # ------------------------------------------------------------ settings
    def _settings(self, task_kind):
        """Check the constructor parameters once, at fit; return the resolved ones."""
        if self.model not in MODELS:
            raise ConfigError(f"model must be one of {', '.join(map(repr, MODELS))}, got {self.model!r}")
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else hidden
        if self.model == "mlp" and (not isinstance(hidden, (list, tuple)) or not all(
                isinstance(h, numbers.Integral) and not isinstance(h, bool) and h > 0 for h in hidden)):
            raise ConfigError(f"hidden_layer_sizes must be a positive integer or a tuple of them, "
                              f"got {self.hidden_layer_sizes!r}")
        loss = get_loss(self.loss)
        allowed = ("regression",) if task_kind == "regression" else ("binary", "multiclass")
        if loss.task not in allowed:
            known = "'mse', 'mae', 'huber'" if task_kind == "regression" else "'cross-entropy', 'bce'"
            raise ConfigError(f"loss {self.loss!r} is for {loss.task}, not for {type(self).__name__}; "
                              f"use one of {known} (or a gradloop Loss object for that task)")
        # The same table as fit and the command line, checked before anything is built.
        check_all(epochs=self.epochs, batch_size=self.batch_size, clip_norm=self.clip_norm, round_to=self.round_to,
                  validation_split=self.validation_split)
        if self.schedule is not None and not isinstance(self.schedule, Schedule):
            raise ConfigError(f"schedule must be a gradloop.optimizers.Schedule or None, got {self.schedule!r}")
        if not isinstance(self.standardize, (bool, np.bool_)):
            raise ConfigError(f"standardize must be True or False, got {self.standardize!r}")
        return [int(h) for h in hidden] if self.model == "mlp" else None, loss

    def _dtype(self):
        try:
            dtype = None if self.dtype is None else np.dtype(self.dtype)
        except TypeError:
            dtype = None
        if dtype is None or dtype.name not in DTYPES:
            raise ConfigError(f"dtype must be 'float64' or 'float32', got {self.dtype!r}")
        return dtype

    def _seed(self):
        """An int seed from random_state: None means 0 (runs are reproducible by default)."""
        rs = self.random_state
        if rs is None:
            return 0
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool) and 0 <= rs < 2**63:
            return int(rs)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(2**31 - 1))
        if isinstance(rs, np.random.Generator):
            return int(rs.integers(2**31 - 1))
        raise ConfigError(f"random_state must be None, a non-negative int, a RandomState or a Generator, got {rs!r}")

    def _optimizer_name(self):
        if self.optimizer is None:
            return "sgd" if self.model == "linear" else "adam"
        return self.optimizer

    def _default_lr(self, X, loss, n_outputs):
        """The learning rate for lr=None (see the module docstring's table, and :mod:`gradloop.defaults`)."""
        name = self.optimizer.name if isinstance(self.optimizer, Optimizer) else self._optimizer_name()
        return estimator_lr(self.model, name, loss, n_outputs, lambda: lipschitz(X, bias=True))

    def _build_optimizer(self, X, loss, n_outputs):
        if isinstance(self.optimizer, Optimizer):
            if self.weight_decay:
                raise ConfigError("weight_decay is set on an optimizer object itself; leave weight_decay=0.0")
            optimizer = copy.deepcopy(self.optimizer)  # the parameter stays untouched
            optimizer.state, optimizer.steps = {}, 0
            if self.lr is not None:
                optimizer.lr = _check_lr(self.lr)
            return optimizer
        lr = self._default_lr(X, loss, n_outputs) if self.lr is None else self.lr
        return get_optimizer(self._optimizer_name(), lr, self.weight_decay)

    def _build_model(self, n_features, n_outputs, task, dtype, hidden, seed):
        if self.model == "linear":
            return Sequential([Dense(n_features, n_outputs, init="zeros", dtype=dtype)], task=task)
        return mlp([n_features, *hidden, n_outputs], self.activation, seed=seed, dtype=dtype,
                   dropout=self.dropout, task=task)

    # ------------------------------------------------------------ training
    def _reset(self):
        """Forget a previous fit, so a failed fit never leaves a stale model behind."""
        for name in [k for k in vars(self) if k.endswith("_") and not k.startswith("__")]:
            delattr(self, name)

    def _start(self, X, targets, n_outputs, task_kind):
        """Build scaler, model and optimizer for a first fit or partial_fit; return scaled X."""
        hidden, loss = self._settings(task_kind)
        dtype = self._dtype()
        seed = self._random_seed = self._seed()
        scaler = Standardizer().fit(X) if self.standardize else None
        Xs = self._scaled(X, scaler)
        model = self._build_model(X.shape[1], n_outputs, loss.task, dtype, hidden, seed)
        optimizer = self._build_optimizer(Xs, loss, n_outputs)
        self.scaler_, self.model_, self.optimizer_, self.loss_ = scaler, model, optimizer, loss
        self.lr_ = optimizer.lr
        self.callbacks_ = copy.deepcopy(list(self.callbacks or ()))
        # One generator for the mini-batch order, continued by every partial_fit call.
        self._rng = np.random.default_rng(seed)
        self.history_, self.loss_curve_, self.n_iter_ = History(), [], 0
        return Xs

    def _scaled(self, X, scaler):
        return X if scaler is None else scaler.transform(X)

    def _train(self, Xs, targets, epochs, *, continued):
        """Run the loop for ``epochs`` on scaled X; append to history_, loss_curve_ and n_iter_."""
        schedule = self.schedule
        if continued and schedule is not None:
            schedule = _ContinuedSchedule(schedule, self.n_iter_)
        # Each call starts from the base learning rate; the schedule (continued) moves it.
        self.optimizer_.lr = self.lr_
        verbose = self.verbose
        every = int(verbose) if isinstance(verbose, numbers.Integral) and not isinstance(verbose, bool) else 1
        history = loop_fit(
            self.model_, Xs, targets, loss=self.loss_, optimizer=self.optimizer_, epochs=epochs,
            batch_size=self.batch_size, shuffle=self.shuffle,
            # The generator itself (default_rng hands it back): partial_fit continues its stream.
            # validation_split draws from an int seed, so it gets the int.
            seed=self._rng if self.validation_split is None else self._random_seed,
            validation_split=self.validation_split, callbacks=self.callbacks_, verbose=bool(verbose),
            every=max(every, 1), round_to=self.round_to, schedule=schedule, clip_norm=self.clip_norm,
            keep_records=self.keep_records, gradient=self.gradient)
        self._append_history(history)
        return self

    def _check_partial(self):
        if self.validation_split is not None:
            raise ConfigError("partial_fit cannot hold out validation_split rows; set validation_split=None")

    def _forgetting_failures(self, start):
        """Run ``start`` (a first fit): if it fails (bad option, divergence) the estimator is left unfitted."""
        self._reset()
        try:
            return start()
        except BaseException:
            self._reset()
            raise

    def _append_history(self, run):
        total = self.history_
        for key, values in run.history.items():
            total.history.setdefault(key, []).extend(values)
        total.records.extend(run.records)
        total.epochs_run += run.epochs_run
        total.gradient_mode = run.gradient_mode
        total.stopped_early = run.stopped_early
        self.loss_curve_ = list(total.history["loss"])
        self.n_iter_ = total.epochs_run

    def _forward_input(self, X):
        check_is_fitted(self)
        X = validate_data(self, X, dtype=self.model_.dtype, reset=False)
        return self._scaled(X, self.scaler_)


class GradloopRegressor(RegressorMixin, _GradloopEstimator):
    """Regression with a gradloop linear model or MLP, as a scikit-learn estimator.

    Args:
        model: "linear" (one Dense layer, weights starting at zero: the
            chapter's model) or "mlp".
        hidden_layer_sizes: hidden widths for the MLP, e.g. (64,) or (64, 32).
        activation: the MLP's hidden activation: "relu", "leaky-relu", "tanh", "sigmoid".
        dropout: dropout probability after each hidden activation (MLP, training only).
        loss: "mse", "mae", "huber", or a gradloop Loss object (e.g. ``Huber(2.0)``).
        optimizer: "sgd", "momentum", "nesterov", "adam", "adamw", a gradloop
            Optimizer object (a template, deep-copied at each fit: use it for
            momentum or betas), or None: "sgd" for linear, "adam" for mlp.
        lr: learning rate, or None for the default (module docstring); ``lr_``
            holds the one used.
        epochs: passes over the data per ``fit`` (``partial_fit`` runs one).
        batch_size: rows per step, or None for full batch (the chapter's mode).
        weight_decay: L2 penalty (decoupled for adamw).
        clip_norm: clip the global gradient norm to this value each step, or None.
        schedule: a gradloop Schedule (StepLR, ExponentialLR, CosineLR) or None.
        round_to: round gradients and weights each step, as the chapter does (None: off).
        gradient: full-batch executor, "auto", "layers", "stream" or "gram"
            (see :mod:`gradloop.fast.kernels`); pin one for bit-identical runs whatever
            the number of epochs.
        standardize: scale each feature to mean 0, std 1 with the training rows' statistics.
        dtype: "float64" or "float32"; inputs are converted to it.
        random_state: seeds the MLP's initial weights and the mini-batch order
            (None: 0, so runs repeat exactly).
        shuffle: reshuffle the rows every epoch (mini-batches).
        validation_split: fraction of the rows held out for ``val_loss`` (fit only).
        callbacks: gradloop callbacks (deep-copied at fit; the copies are in ``callbacks_``).
        keep_records: keep every epoch's record in ``history_.records``.
        verbose: print the chapter's report each epoch (an int k: every k epochs).

    Fitted attributes: ``model_`` (the :class:`gradloop.models.Sequential`),
    ``scaler_`` (a Standardizer or None), ``optimizer_`` (its state carries on in
    ``partial_fit``), ``loss_``, ``lr_``, ``history_`` (a :class:`gradloop.History`),
    ``loss_curve_`` (training loss per epoch), ``n_iter_`` (epochs run),
    ``n_features_in_`` and ``feature_names_in_`` (when X is a DataFrame).

    Example:
        >>> reg = GradloopRegressor(model="mlp", hidden_layer_sizes=(32,), epochs=300)
        >>> reg.fit(X, y).predict(X[:3])
    """

    __init__ = _constructor(default_loss="mse")

    def _validate(self, X, y, reset):
        X, y = validate_data(self, X, y, dtype=self._dtype(), multi_output=True, y_numeric=True, reset=reset)
        if not reset and (y.ndim == 1) != (self._y_ndim == 1):
            raise DataError(f"y has shape {y.shape} but the model was fitted with "
                            f"{'1-D y' if self._y_ndim == 1 else f'{self.model_.n_outputs} output columns'}")
        return X, y

    def fit(self, X, y):
        """Train on X (n_samples, n_features) and y (n_samples,) or (n_samples, n_outputs); return self."""
        return self._forgetting_failures(lambda: self._first(X, y, self.epochs))

    def _first(self, X, y, epochs):
        X, y = self._validate(X, y, reset=True)
        Xs = self._start(X, y, 1 if y.ndim == 1 else y.shape[1], "regression")
        self._y_ndim = y.ndim
        return self._train(Xs, y, epochs, continued=False)

    def partial_fit(self, X, y):
        """One epoch on (X, y), continuing the model and optimizer state; the first call builds them.

        The first call fits the Standardizer and picks the default learning rate
        on its rows. N calls on the same data equal ``fit`` with ``epochs=N``
        (bit for bit with a pinned ``gradient`` mode; "auto" may pick the Gram
        kernel for long full-batch fits).
        """
        self._check_partial()
        if not hasattr(self, "model_"):
            return self._forgetting_failures(lambda: self._first(X, y, 1))
        X, y = self._validate(X, y, reset=False)
        if y.ndim == 2 and y.shape[1] != self.model_.n_outputs:
            raise DataError(f"y has {y.shape[1]} columns but the model has {self.model_.n_outputs} outputs")
        return self._train(self._scaled(X, self.scaler_), y, 1, continued=True)

    def predict(self, X):
        """Predictions (n_samples,), or (n_samples, n_outputs) when fitted on 2-D y."""
        Xs = self._forward_input(X)
        out = self.model_.predict(Xs)
        return out[:, 0] if self._y_ndim == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class GradloopClassifier(ClassifierMixin, _GradloopEstimator):
    """Classification with a gradloop linear model (softmax or logistic regression) or MLP.

    Parameters are those of :class:`GradloopRegressor`, except ``loss``:
    "cross-entropy" (softmax over one logit per class; default) or "bce"
    (binary problems only: one logit, sigmoid). Labels may be any values
    ``np.unique`` sorts (numbers, strings); ``classes_`` holds them and
    ``predict`` answers in them.

    Fitted attributes: those of the regressor, plus ``classes_``.

    Example:
        >>> clf = GradloopClassifier(model="mlp", batch_size=32, epochs=30).fit(X, y)
        >>> clf.predict_proba(X[:2]).sum(axis=1)
        array([1., 1.])
    """

    __init__ = _constructor(default_loss="cross-entropy")

    def _validate(self, X, y, reset):
        X, y = validate_data(self, X, y, dtype=self._dtype(), reset=reset)
        check_classification_targets(y)
        return X, y

    def _n_outputs(self):
        if get_loss(self.loss).task != "binary":
            return len(self.classes_)
        if len(self.classes_) != 2:
            raise ConfigError(f"Only binary classification is supported with loss='bce'; y has "
                              f"{len(self.classes_)} classes: use loss='cross-entropy'")
        return 1

    def fit(self, X, y):
        """Train on X (n_samples, n_features) and labels y (n_samples,); return self."""
        return self._forgetting_failures(lambda: self._first(X, y, None, self.epochs))

    def _first(self, X, y, classes, epochs):
        """The first fit (classes=None: those of y) or partial_fit (classes given)."""
        X, y = self._validate(X, y, reset=True)
        self.classes_ = np.unique(y if classes is None else classes)
        if len(self.classes_) < 2:
            raise DataError(f"{type(self).__name__} needs samples of at least 2 classes; "
                            f"got only one class, {self.classes_[0]!r}")
        indices = self._indices(y)
        Xs = self._start(X, indices, self._n_outputs(), "classification")
        return self._train(Xs, indices, epochs, continued=False)

    def partial_fit(self, X, y, classes=None):
        """One epoch on (X, y), continuing the model and optimizer state.

        The first call needs ``classes`` (every label that will ever appear),
        as in scikit-learn; it fits the Standardizer on its rows. N calls on the
        same data equal ``fit`` with ``epochs=N``.
        """
        self._check_partial()
        if not hasattr(self, "model_"):
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            return self._forgetting_failures(lambda: self._first(X, y, classes, 1))
        X, y = self._validate(X, y, reset=False)
        if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} is not the same as on the first call, {self.classes_!r}")
        return self._train(self._scaled(X, self.scaler_), self._indices(y), 1, continued=True)

    def _indices(self, y):
        """Positions of the labels y in classes_; a label outside classes_ is an error."""
        indices = np.minimum(np.searchsorted(self.classes_, y), len(self.classes_) - 1)
        wrong = np.asarray(self.classes_[indices] != y)
        if wrong.any():
            bad = y[wrong][0]
            raise DataError(f"label {bad!r} is not among classes_ {self.classes_!r}; pass every label "
                            "in classes= on the first partial_fit call")
        return indices

    def predict(self, X):
        """Predicted labels (n_samples,), values of ``classes_``."""
        Xs = self._forward_input(X)
        return self.classes_[self.model_.predict(Xs)]

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in ``classes_`` order; rows sum to 1."""
        Xs = self._forward_input(X)
        return self.model_.predict_proba(Xs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        try:
            tags.classifier_tags.multi_class = get_loss(self.loss).task != "binary"
        except ConfigError:  # an unknown loss is reported by fit
            pass
        return tags

    def predict_log_proba(self, X):
        """The logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))
