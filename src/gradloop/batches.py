"""The batches of an epoch, as the training loop (:mod:`gradloop.loop`) runs them.

:class:`FullBatch` is the chapter's mode: one batch, the whole training set, whose loss and
gradients a kernel computes (:mod:`gradloop.fast.kernels`). :class:`MiniBatches` is many, in a
seeded order, through the layers. Both end every batch in the loop's one ``step``; the loop
appends an epoch's entries once ``epoch()`` has returned, and nothing when it returns None
(stopped before a non-finite update reached the weights). Blocks read from disk and Dask
partitions are to be more sources of the same kind.
"""

from __future__ import annotations

import itertools
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .callbacks import BatchRecord
from .fast import silent
from .fast.blockwise import source_loss
from .fast.executors import read_ahead
from .losses import fit_targets
from .optimizers import SGD
from .records import HEAD


class FullBatch:
    """The chapter's mode: one batch, the whole training set, whose loss and gradients a kernel computes.

    The kernel's evaluation after each update is the report's "new loss" and the next
    epoch's gradient: one pass over the data per epoch.
    """

    def __init__(self, run, kernel):
        self.run, self.kernel = run, kernel
        self.step, self.evaluate, self.records = run.step, kernel.evaluate, run.records_wanted
        self.value = None  # the loss at the current weights (their gradients are in the model)
        run.history.history.setdefault("new_loss", [])
        run.history.gradient_mode = kernel.name
        if not self.records and not run.dropouts:
            # The silent epoch is the bare arithmetic: on the chapter's 16 x 7 problem an epoch is
            # ~5 us, and each branch, lookup and call of the general epoch is a visible part of it.
            self.epoch, self.update = self._bare_epoch, run.plain_step()
        self.compiled = _compiled_loop(run, kernel)  # every epoch in one compiled call, where it applies

    def run_compiled(self, done, epochs):
        """Epochs ``done + 1`` to ``epochs`` in one call of the compiled loop; returns the last one
        completed. The History gets their entries as the Python loop would give them, and an
        update that made the loss NaN or exploded raises the same DivergenceError, with the same
        last finite weights (TerminateOnNaN is a callback: never in a compiled run)."""
        run = self.run
        losses, new_losses, stopped = self.compiled(done + 1, epochs, self.limit)
        run.history.extend_later(loss=losses, new_loss=new_losses, lr=np.full(len(losses), run.optimizer.lr))
        run.optimizer.steps += len(losses) + (stopped is not None)
        run.history.gradient_mode = "compiled"
        if stopped is not None:
            epoch, value, before = stopped
            for keep, p in zip(run.last_good, before):
                keep[...] = p
            self._stop(epoch, value)
        if len(new_losses):
            self.value = float(new_losses[-1])
        return done + len(losses)

    def _bare_epoch(self, epoch):
        """:meth:`epoch` without records or dropout: step, evaluate, check."""
        self.update()
        new_value = self.evaluate()
        if not new_value <= self.limit:  # also true for NaN
            return self._stop(epoch, new_value)
        value, self.value = self.value, new_value
        return value, new_value, None, None

    def _stop(self, epoch, value):
        """The update made the loss non-finite or exploded: undo it and stop (TerminateOnNaN) or raise."""
        run = self.run
        if run.terminate_on_nan and not math.isfinite(value):
            run.undo_update(epoch, value)
            return None
        run.diverge(epoch, value, "")

    def start(self):
        self.value = self._evaluate()
        self.run.start_from(self.value)
        self.limit = self.run.limit

    def _evaluate(self):
        run = self.run
        if run.dropouts:
            # This evaluation draws the masks of the next gradient: a checkpoint of this epoch
            # must let a resumed run draw them again.
            run.trainer.dropout_states = run.model.dropout_states()
        return self.kernel.evaluate()

    def epoch(self, epoch):
        """(loss before the update, loss after it, the record or None, new head or None); None: stopped."""
        run, records = self.run, self.records
        # A copy: the kernel's evaluation after the update overwrites its predictions.
        head = np.array(self.kernel.head(), dtype=np.float64) if records else None
        grad_norm, gradients = self.step(records)
        new_value = self._evaluate() if run.dropouts else self.evaluate()
        if not new_value <= run.limit:  # also true for NaN
            return self._stop(epoch, new_value)
        record = run.partial_record(epoch, self.value, head, grad_norm, gradients) if records else None
        value, self.value = self.value, new_value
        return value, new_value, record, self.kernel.head() if records else None

    def close(self):
        self.kernel.close()


def _compiled_loop(run, kernel):
    """The compiled silent loop (:class:`gradloop.fast.silent.LinearLoop`) for a run it computes as the
    Python loop does, its sums in another order: full batch, the kernel "auto" chose is the fused one,
    nothing reads the epochs, the step is plain SGD and nothing is clipped. None otherwise, and
    while loading the compiled loop would not pay (:func:`~gradloop.fast.silent.worth_compiling`)."""
    optimizer, options = run.optimizer, run.options
    if not (kernel.name == "fused" and options.gradient == "auto" and not run.bookkeeping and not run.records_wanted
            and not run.dropouts and options.clip_norm is None and type(optimizer) is SGD
            and optimizer.momentum == 0 and optimizer.weight_decay == 0):
        return None
    W, b = kernel.layer.params["W"], kernel.layer.params.get("b")
    if not (kernel.X.dtype == kernel.Y.dtype == W.dtype and W.dtype in (np.float32, np.float64)):
        return None
    if not silent.worth_compiling(options.epochs - run.trainer.epoch):
        return None
    return silent.LinearLoop(kernel.X, kernel.Y, W, b, optimizer.lr, options.round_to)


class MiniBatches:
    """Rows in batches of ``batch_size``, in an order drawn each epoch from the trainer's generator."""

    compiled = None  # no compiled loop: every batch is a step of the Python loop

    def __init__(self, run, batch_size, shuffle):
        self.run, self.batch_size, self.shuffle = run, batch_size, shuffle
        self.n_rows = None if run.X is None else len(run.X)

    def start(self):
        run = self.run
        # The starting loss (the divergence threshold's base) is the first batch's, which the
        # first step computes anyway: a separate forward pass over all of X cost a third of an
        # epoch (65 ms of 310 on the MLP benchmark). A run of no epochs has no batch to use.
        if run.options.epochs <= run.trainer.epoch:
            self._start_from(self.full_loss()[0])
        run.model.train()

    def _start_from(self, value):
        """A non-finite start (a NaN in the data): each batch's check finds the batch and stops
        before its update; there is no start to measure growth from."""
        if math.isfinite(value):
            self.run.start_from(value)
        else:
            self.run.limit = math.inf

    def parts(self):
        """The epoch's rows as (X, y, order) parts: in memory one, all rows in an order drawn now."""
        run = self.run
        yield run.X, run.y, run.trainer.rng.permutation(self.n_rows) if self.shuffle else None

    def head(self):
        """The report's "predicted output for the first 5 samples": before this epoch's updates."""
        return self.run.model.predict_raw(self.run.X[:HEAD])

    def full_loss(self):
        """(loss of the current weights on every training row, evaluation mode; their first predictions)."""
        run = self.run
        pred = run.model.predict_raw(run.X)
        return run.loss.value(run.y, pred), pred[:HEAD]

    def epoch_start(self):
        """(the report's head before the epoch's updates, loss total, batches) the epoch starts from."""
        return (self.head() if self.run.records_wanted else None), 0.0, 0

    def part_done(self, epoch, head, total, batch):
        """After each part: whether the run stops here, inside the epoch (never, in memory)."""
        return False

    def epoch(self, epoch):
        run = self.run
        head, total, batch = self.epoch_start()
        grad_norm = 0.0
        for X, y, order in self.parts():
            done = self._steps(X, y, order, epoch, batch, total)
            if done is None:
                return None
            total, batch, grad_norm = done
            if self.part_done(epoch, head, total, batch):
                return None
        mean_loss = total / self.n_rows
        if not mean_loss <= run.limit:
            run.diverge(epoch, mean_loss, "")
        if not run.records_wanted:
            return mean_loss, None, None, None
        # The loss of the epoch's final weights on the whole training set, evaluation mode.
        new_value, new_head = self.full_loss()
        record = run.partial_record(epoch, mean_loss, head, grad_norm, [g.copy() for g in run.grads],
                                    batches=batch)
        return mean_loss, new_value, record, new_head

    def _steps(self, X, y, order, epoch, batch, total):
        """Steps over rows (X, y) in batches, in ``order`` (None: as they are), numbered after ``batch``,
        their losses times their rows added to ``total``: (the new total, the last batch's number, its
        gradient norm), or None when a non-finite batch loss stopped the run."""
        run, size = self.run, self.batch_size
        model, loss = run.model, run.loss
        grad_norm = 0.0
        for batch, start in enumerate(range(0, len(X), size), batch + 1):
            if order is None:
                xb, yb = X[start:start + size], y[start:start + size]
            else:
                idx = order[start:start + size]
                xb, yb = X[idx], y[idx]
            pred = model.forward(xb)
            value, dpred = loss.value_and_grad(yb, pred)
            if run.limit is None:
                self._start_from(value)
            if not math.isfinite(value):
                # Stop before a non-finite gradient reaches the weights: they are still finite.
                run.stop_on_nan(epoch, batch, value)
                return None
            model.backward(dpred)
            grad_norm, _ = run.step()
            total += value * len(xb)
            if run.batch_callbacks:
                record = BatchRecord(epoch, batch, value, len(xb))
                for cb in run.batch_callbacks:
                    cb.on_batch_end(record, run.trainer)
        return total, batch, grad_norm

    def close(self):
        pass


class SourceMiniBatches(MiniBatches):
    """A source's rows in batches: its blocks in an order drawn each epoch from the trainer's
    generator, the rows of each block in an order drawn next, the next block read while the
    current one trains. A batch never spans two blocks (a block's last batch may be short).

    This is not a global shuffle: rows of one block stay together within an epoch. A source
    read in file order only (CSV) keeps its blocks in file order and shuffles within them.

    An epoch over a large source is long, so the run can stop between two blocks: a callback
    with ``wants_blocks`` (:class:`~gradloop.checkpoint.CheckpointWriter`)
    sees each block's end, and ``trainer.stop_training`` set during a block (Ctrl-C on the
    command line) stops the run at its end. ``position`` is what a checkpoint needs to go on
    exactly there: the epoch, the blocks done, the epoch's loss total and batches so far, the
    report's head, the weights at the epoch's start, and the generator's state then (the block
    order and each block's row order are drawn again from it, the done blocks' without reading them).
    """

    def __init__(self, run, source, batch_size, shuffle):
        super().__init__(run, batch_size, shuffle)
        self.source, self.n_rows = source, source.n_rows
        self.first_rows = source.head(HEAD)[0]
        self._reader = ThreadPoolExecutor(1)
        self.block_callbacks = [cb for cb in run.callbacks if cb.wants_blocks]
        self._resume = self._epoch_rng = None
        self._blocks_done = 0

    def epoch_start(self):
        trainer = self.run.trainer
        self._resume, trainer.position = trainer.position, None
        if self._resume is None:
            self._epoch_rng = trainer.rng.bit_generator.state
            return super().epoch_start()
        self._epoch_rng = self._resume["epoch_rng"]
        for keep, start in zip(self.run.last_good, self._resume["start_weights"]):
            keep[...] = start  # the epoch's starting weights: its update ratio, and what a divergence restores
        head = self._resume["head"]
        return (None if head is None else np.asarray(head)), self._resume["total"], self._resume["batches"]

    def parts(self):
        run, source = self.run, self.source
        rng = run.trainer.rng
        rng.bit_generator.state = self._epoch_rng  # (a resumed epoch: its start, drawn again)
        skip = self._blocks_done = 0 if self._resume is None else self._resume["blocks"]
        shuffled = source.random_access and self.shuffle
        order = [int(i) for i in rng.permutation(source.n_blocks)] if shuffled else list(range(source.n_blocks))
        for i in order[:skip]:  # done before the checkpoint: their row orders drawn again, the rows not read
            if self.shuffle:
                rng.permutation(source.bounds[i][1] - source.bounds[i][0])
        if source.random_access:
            blocks = (source.block(i) for i in order[skip:])
        else:
            blocks = itertools.islice(iter(source), skip, None)
        for X, Y in read_ahead(blocks, self._reader):  # the next block is read while this one trains
            yield X, fit_targets(run.model, run.loss, Y), rng.permutation(len(X)) if self.shuffle else None

    def part_done(self, epoch, head, total, batch):
        trainer = self.run.trainer
        self._blocks_done += 1
        if self._blocks_done == self.source.n_blocks or not (self.block_callbacks or trainer.stop_training):
            return False  # the epoch's end (its record and checkpoint), or nobody to tell
        position = {"epoch": epoch, "blocks": self._blocks_done, "total": float(total), "batches": batch,
                    "head": None if head is None else np.asarray(head, dtype=np.float64).tolist(),
                    "epoch_rng": self._epoch_rng, "start_weights": [w.copy() for w in self.run.last_good]}
        for cb in self.block_callbacks:
            cb.on_block_end(position, trainer)
        if trainer.stop_training:
            self.run.history.stopped_inside = position
            return True
        return False

    def head(self):
        return self.run.model.predict_raw(self.first_rows)

    def full_loss(self):
        run = self.run
        return source_loss(run.model, run.loss, self.source), run.model.predict_raw(self.first_rows)

    def close(self):
        self._reader.shutdown()
