"""What :func:`gradloop.fit` is given, checked and shaped at its boundary, before anything trains:
every option against the constraints table, the callbacks the run consumes its records with, and
the data as the loop reads it (arrays in the model's dtype, or a source)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .callbacks import Callback, TracePrinter
from .constraints import check, check_all
from .data.convert import is_source_input, source_for
from .data.sources import Source
from .errors import ConfigError
from .fast import kernels
from .losses import fit_targets
from .files.paths import callback_places
from .validation import split_source_validation, split_validation


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit` trains, once checked: everything but the model, the data and the optimizer.

    batch_size is None for full batch (also when it is not smaller than the data).
    """

    epochs: int
    batch_size: int | None = None
    shuffle: bool = True
    round_to: int | None = None
    schedule: object = None
    clip_norm: float | None = None
    gradient: str = "auto"
    stable_lr: object = None  # a number, a function computing it (called only on divergence), or None


def checked_options(epochs, batch_size, round_to, every, clip_norm, validation_split, gradient, seed, callbacks,
                     verbose, keep_records):
    """Every option checked here, before anything trains (scikit-learn's validate-at-fit); returns the
    run's callbacks: the given ones, the report printer first with ``verbose``, then the record keeper."""
    check_all(epochs=epochs, batch_size=batch_size, round_to=round_to, every=every, clip_norm=clip_norm,
              validation_split=validation_split)
    kernels.check_mode(gradient)  # refused whatever the data and the batches, before anything runs
    if not isinstance(seed, np.random.Generator):
        check("seed", seed)
    callbacks = list(callbacks)
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            raise ConfigError(f"callbacks[{i}] is a {type(cb).__name__}, not a gradloop.callbacks.Callback: subclass "
                              "Callback (it declares every hook and what the loop asks, with defaults)")
    if verbose:
        callbacks.insert(0, TracePrinter(every=every))
    if keep_records:
        callbacks.append(KeepRecords())
    callback_places(callbacks)  # two loggers on one file, a logger aimed at a folder: refused before epoch 1
    return callbacks


def training_data(model, loss, X, y, validation_split, validation_data, seed):
    """(source or None, X, y, validation_data) as the loop reads them: a source (X, y None: only its kernel
    reads it), or arrays in the model's dtype with targets shaped for the loss; a validation split
    held out (whole blocks of a source, rows of arrays)."""
    source = source_for(model, X, y) if is_source_input(X, y) else None
    if validation_split is not None and validation_data is not None:
        raise ConfigError("give validation_data or validation_split, not both")
    if source is not None:
        if validation_split is not None:  # whole blocks, as the source's test set
            source, validation_data = split_source_validation(source, validation_split, seed)
        X, y = None, None
    else:
        X = inputs_for(model, X, "X")
        y = fit_targets(model, loss, y)
        if validation_split is not None:
            X, y, validation_data = split_validation(X, y, validation_split, seed, loss.task != "regression")
    if validation_data is not None and not isinstance(validation_data, Source):
        validation_data = (inputs_for(model, validation_data[0], "validation X"), validation_data[1])
    return source, X, y, validation_data


def check_epochs(epochs):
    return int(check("epochs", epochs))


def inputs_for(model, X, name):
    """Inputs must already have the model's dtype: gradloop never mixes precisions silently."""
    X = np.asarray(X)
    if X.dtype != model.dtype:
        raise ConfigError(f"{name} is {X.dtype} but the model is {model.dtype}: convert one of them "
                          f"(e.g. X.astype(np.{model.dtype})) so the arithmetic runs in one precision")
    if X.ndim != 2 or X.shape[1] != model.n_inputs:
        raise ConfigError(f"{name} has shape {X.shape}; the model reads (n_samples, {model.n_inputs})")
    return X


class KeepRecords(Callback):
    """``fit(keep_records=True)``: every epoch's record in ``history.records``."""

    def on_epoch_end(self, record, trainer):
        trainer.history.records.append(record)
