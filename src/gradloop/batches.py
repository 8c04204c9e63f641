"""Batch plans: what an epoch's batches are, as data; the training loop (:mod:`gradloop.loop`) runs them.

- :class:`FullBatch`: the chapter's mode, one batch, the whole training set, whose loss and
  gradients a kernel computes (:mod:`gradloop.fast.kernels`, :mod:`gradloop.fast.blockwise`).
- :class:`ArrayBatches`: rows in memory, in batches, each epoch in an order drawn from the run's
  generator.
- :class:`SourceBatches`: a source's rows in batches, block by block: the blocks in an order drawn
  from the run's generator, the rows of each block in an order drawn next, the next block read
  while the current one trains.

A plan holds data and draws orders; it holds no reference back to the run: the loop steps,
records, checks and calls the callbacks.
"""

from __future__ import annotations

import functools
import itertools
from concurrent.futures import ThreadPoolExecutor

from .errors import CheckpointError
from .fast import kernels
from .fast.blockwise import make_source_kernel, source_loss
from .fast.executors import read_ahead
from .losses import fit_targets
from .records import HEAD


def plan_for(model, loss, X, y, source, batch_size, shuffle, gradient, epochs):
    """The run's batch plan: mini-batches (``batch_size`` rows) of arrays or of a source's blocks, or
    (``batch_size`` None) the full batch a kernel computes, the one chooser
    (:func:`gradloop.fast.kernels.choose_mode`) picking it from ``gradient``."""
    if batch_size is not None:
        if source is None:
            return ArrayBatches(X, y, int(batch_size), shuffle)
        return SourceBatches(source, int(batch_size), shuffle, functools.partial(fit_targets, model, loss))
    if source is not None:
        return FullBatch(make_source_kernel(model, loss, source, gradient, epochs))
    return FullBatch(kernels.make_kernel(model, loss, X, y, gradient, epochs))


class FullBatch:
    """One batch, the whole training set: ``evaluate()`` gives the loss at the current weights and
    leaves their gradients in the layers; ``head()`` the first rows' predictions of that evaluation."""

    def __init__(self, kernel):
        self.kernel, self.name = kernel, kernel.name
        self.evaluate, self.head = kernel.evaluate, kernel.head

    def close(self):
        self.kernel.close()


class ArrayBatches:
    """X (n, d) and y (shaped for the loss) in memory, in batches of ``batch_size`` rows."""

    n_blocks = 1  # one part: never stopped inside an epoch

    def __init__(self, X, y, batch_size, shuffle):
        self.X, self.y, self.batch_size, self.shuffle = X, y, batch_size, shuffle
        self.n_rows = len(X)

    def parts(self, rng, skip=0):
        """The epoch's rows as (X, y, order) parts: one, all rows in an order drawn now from ``rng``."""
        yield self.X, self.y, rng.permutation(self.n_rows) if self.shuffle else None

    def head_rows(self):
        """The rows of the report's "first 5 samples"."""
        return self.X[:HEAD]

    def full_loss(self, model, loss):
        """(loss of the current weights on every training row, evaluation mode; their first predictions)."""
        pred = model.predict_raw(self.X)
        return loss.value(self.y, pred), pred[:HEAD]

    def close(self):
        pass


class SourceBatches:
    """A source's rows in batches: its blocks in an order drawn each epoch from the run's generator,
    the rows of each block in an order drawn next, the next block read while the current one trains.
    A batch never spans two blocks (a block's last batch may be short).

    This is not a global shuffle: rows of one block stay together within an epoch. A source read in
    file order only (CSV) keeps its blocks in file order and shuffles within them. ``targets``: a
    block's Y shaped for the loss (``fit_targets`` of the model and loss).
    """

    def __init__(self, source, batch_size, shuffle, targets):
        self.source, self.batch_size, self.shuffle, self.targets = source, batch_size, shuffle, targets
        self.n_rows, self.n_blocks = source.n_rows, source.n_blocks
        self.first_rows = source.head(HEAD)[0]
        self._reader = ThreadPoolExecutor(1)

    def parts(self, rng, skip=0):
        """The epoch's blocks as (X, y, order) parts, drawn from ``rng`` (at the epoch's start state): the
        block order, then each block's row order. The first ``skip`` blocks (done before a checkpoint)
        have their row orders drawn again and are not read."""
        source = self.source
        if skip >= source.n_blocks:
            raise CheckpointError(f"the checkpoint's position says {skip} blocks of its epoch are done, but "
                                  f"{source.name} has {source.n_blocks}: it is not this data's checkpoint")
        shuffled = source.random_access and self.shuffle
        order = [int(i) for i in rng.permutation(source.n_blocks)] if shuffled else list(range(source.n_blocks))
        for i in order[:skip]:
            if self.shuffle:
                rng.permutation(source.bounds[i][1] - source.bounds[i][0])
        if source.random_access:
            blocks = (source.block(i) for i in order[skip:])
        else:
            blocks = itertools.islice(iter(source), skip, None)
        for X, Y in read_ahead(blocks, self._reader):  # the next block is read while this one trains
            yield X, self.targets(Y), rng.permutation(len(X)) if self.shuffle else None

    def head_rows(self):
        return self.first_rows

    def full_loss(self, model, loss):
        return source_loss(model, loss, self.source), model.predict_raw(self.first_rows)

    def close(self):
        self._reader.shutdown()
