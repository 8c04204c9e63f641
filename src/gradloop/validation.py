"""The rows a run holds out for validation, and the loss it measures on them after every epoch.

Arrays in memory are held out row by row (:func:`split_validation`, by class for a classifier); a
source, whose rows are read block by block, gives whole blocks (:func:`split_source_validation`),
as its test set does. Either way the validation loss is the model's loss in evaluation mode
(dropout off) on the held-out rows: one product in memory, one streaming pass over a source.
"""

from __future__ import annotations

import numpy as np

from .constraints import check
from .data.convert import source_for
from .data.sources import Source
from .errors import ConfigError
from .fast.blockwise import source_loss
from .fast.executors import executor_for
from .losses import fit_targets

# The validation draw's own generator, apart from the mini-batch order drawn from the same seed.
_SALT = 0x5EED


def split_validation(X, y, fraction, seed, stratify):
    """Hold out ``fraction`` of the rows at random (by class when ``stratify``): (X, y, (X_val, y_val))."""
    check("validation_split", fraction)
    rng = np.random.default_rng([int(seed), _SALT])
    labels = y.reshape(len(y), -1)[:, 0] if stratify else None  # binary targets are (n, 1)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if stratify else [np.arange(len(X))]
    held = np.concatenate([g[rng.permutation(len(g))[:int(round(fraction * len(g)))]] for g in groups])
    if len(held) == 0 or len(held) == len(X):
        raise ConfigError(f"validation_split {fraction} of {len(X)} rows leaves no rows for "
                          f"{'validation' if len(held) == 0 else 'training'}")
    keep = np.ones(len(X), dtype=bool)
    keep[held] = False
    held.sort()
    return X[keep], y[keep], (X[held], y[held])


def split_source_validation(source, fraction, seed, name="validation_split"):
    """Hold out ``round(fraction * blocks)`` whole blocks of a source, drawn by ``seed``: (training
    source, validation source), each keeping its blocks in their order."""
    check("validation_split", fraction)
    held = int(round(fraction * source.n_blocks))
    if held == 0 or held == source.n_blocks:
        raise ConfigError(f"{name} {fraction} holds out whole blocks: of {source.n_blocks} block(s) it leaves "
                          f"none for {'validation' if held == 0 else 'training'}; give a fraction of at least "
                          f"1/{source.n_blocks}, or smaller blocks")
    order = np.random.default_rng([int(seed), _SALT]).permutation(source.n_blocks)
    if source.on_dask:
        source = source.persisted()  # the two parts' passes then share computed chunks, not their graphs
    return source.subset(sorted(order[held:])), source.subset(sorted(order[:held]))


class ArrayValidation:
    """Validation rows in memory: X_val (n, d) in the model's dtype, y_val shaped for the loss."""

    def __init__(self, model, loss, X_val, y_val):
        self.X, self.y = X_val, fit_targets(model, loss, y_val)

    def loss(self, model, loss):
        return loss.value(self.y, model.predict_raw(self.X))

    def close(self):
        pass


class SourceValidation:
    """Validation rows read block by block (on Dask, by the workers): one executor for the whole run,
    so a Dask source's chunks are persisted once, not every epoch."""

    def __init__(self, model, source):
        self.source = source_for(model, source, None)
        self.blocks = None

    def loss(self, model, loss):
        if self.blocks is None:
            self.blocks = executor_for(self.source)
        return source_loss(model, loss, self.source, blocks=self.blocks)

    def close(self):
        if self.blocks is not None:
            self.blocks.close()
            self.blocks = None


def validation_for(model, loss, data):
    """The run's validation from ``validation_data``: (X_val, y_val) arrays, or a source."""
    return SourceValidation(model, data) if isinstance(data, Source) else ArrayValidation(model, loss, *data)
