"""The training loop: one loop for every model and every mode, producing epoch records.

Per epoch::

    for each batch of the epoch's plan:      full batch: one, the whole training set
        loss, gradients   <- a kernel, or forward, loss, backward through the layers
        weights           <- step: clip and round the gradients, optimizer.step, round the weights
    entries of the epoch  -> History (once the epoch has completed) -> callbacks

Full batch is the chapter's mode: the kernel's evaluation after the update is the
report's "new loss" and the next epoch's gradient, so an epoch costs one forward and
one backward pass, report or not. The kernels (:mod:`gradloop.fast.kernels`) compute it
through the layers for any model, or for the linear model with MSE as a fused pass,
a compiled one-pass stream or the Gram form. The batch plans (:mod:`gradloop.batches`) are
data: what the batches are; everything done per epoch and per batch is here, and the
divergence and NaN rules are the small functions of :mod:`gradloop.divergence`.

Callbacks see a :class:`Trainer` and can stop the run; checkpoints capture it
(:mod:`gradloop.checkpoint`) so that a resumed run continues exactly.

The loop never prints: it hands an :class:`EpochRecord` to each callback
(the report printer, loggers, early stopping...). Records are only built when
some callback consumes them, so a silent run pays nothing for them.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time

import numpy as np

from .batches import FullBatch, plan_for
from .callbacks import BatchRecord, Callback
from .callbacks.base import Trainer, train_end
from .divergence import STANDARDIZE_ADVICE, divergence_error, divergence_limit, nan_stop_message, non_finite_start
from .errors import DivergenceError
from .fast import silent
from .glass.gradcheck import check_before_training
from .inputs import FitOptions, check_epochs, checked_options, training_data
from .losses import fit_targets, get_loss
from .optimizers import clip_grad_norm
from .records import HEAD, EpochRecord, History
from .validation import split_validation, validation_for

# Importable from here too: the callbacks' and records' classes, check_epochs, split_validation and
# STANDARDIZE_ADVICE, which live in the modules of their jobs.
__all__ = ["STANDARDIZE_ADVICE", "BatchRecord", "Callback", "EpochRecord", "FitOptions", "History", "Trainer",
           "check_epochs", "fit", "fit_targets", "split_validation"]

CHECK_ROWS = 256  # rows the gradient check runs on: enough to reach every unit, cheap next to training


def fit(model, X, y, *, loss, optimizer, epochs, batch_size=None, shuffle=True, seed=0,
        validation_data=None, callbacks=(), verbose=False, every=1, round_to=None,
        schedule=None, clip_norm=None, keep_records=False, stable_lr=None, gradient="auto",
        validation_split=None, resume=None, check_gradients=False):
    """Train ``model`` on (X, y) and return its :class:`History`.

    Args:
        model: a :class:`gradloop.models.Sequential`.
        X: (n_samples, n_features), the model's dtype.
        y: (n_samples,) or (n_samples, outputs); integer classes for cross-entropy.
        loss: a Loss object or name ("mse", "cross-entropy", ...).
        optimizer: an Optimizer object (updated in place; its state persists).
        epochs: number of epochs (0 runs none and records the start).
        batch_size: None for full batch (the chapter's mode), else rows per step.
        shuffle, seed: mini-batch order from ``numpy.random.default_rng(seed)``.
        validation_data: optional (X_val, y_val); "val_loss" is recorded each epoch.
        validation_split: or a fraction of (X, y) held out for validation, drawn
            at random from ``seed`` (stratified by class for classifiers).
        callbacks: consumers of epoch records (see :mod:`gradloop.callbacks`).
        verbose: add the chapter's report printer (every ``every`` epochs).
        round_to: round gradients and weights to this many decimals each step,
            as the chapter does (stalls once ``lr * gradient`` < half the last digit).
        schedule: a :class:`gradloop.optimizers.Schedule` (lr per epoch).
        clip_norm: clip the global gradient norm to this value each step.
        keep_records: keep every EpochRecord in ``history.records``.
        gradient: full-batch executor: "auto", "layers" (any model), or for the
            linear model with MSE "fused" (the layers' arithmetic without their
            calls), "stream" (one compiled pass over X per epoch) or "gram" (X^T X
            once, then O(d^2) per epoch); see :mod:`gradloop.fast.kernels`.
        stable_lr: the largest stable learning rate if known (for the divergence
            message), or a function computing it, called only if training diverges.
        resume: a :class:`gradloop.checkpoint.TrainingState` to continue from:
            model, optimizer, generator and history are restored and training
            runs from its epoch up to ``epochs`` (the total, not a count).
        check_gradients: before the first update, check every layer's backward against
            central differences (:func:`gradloop.glass.gradcheck`) on up to 256 training rows.

    Raises:
        DivergenceError: the loss stopped being finite or grew 1e6-fold; the
            model keeps the last parameters whose loss was finite.
        GradloopError: with ``check_gradients``, a layer's backward that does not match its
            forward (the message names the layer and the parameter); nothing was updated.

    Example:
        >>> from gradloop.models import mlp
        >>> from gradloop.optimizers import Adam
        >>> model = mlp([4, 16, 1], "tanh")
        >>> history = fit(model, X, y, loss="mse", optimizer=Adam(1e-2), epochs=100)
    """
    loss = get_loss(loss)
    callbacks = checked_options(epochs, batch_size, round_to, every, clip_norm, validation_split, gradient, seed,
                                callbacks, verbose, keep_records)
    source, X, y, validation_data = training_data(model, loss, X, y, validation_split, validation_data, seed)
    if check_gradients:
        rows_X, rows_y = (X[:CHECK_ROWS], y[:CHECK_ROWS]) if source is None else source.head(CHECK_ROWS)
        check_before_training(model, loss, rows_X, rows_y)
    epochs, history = int(epochs), History()
    mini_batch = batch_size is not None and batch_size < (len(X) if source is None else source.n_rows)
    trainer = Trainer(model, optimizer, loss, history, epochs, base_lr=optimizer.lr, schedule=schedule,
                      rng=np.random.default_rng(seed) if mini_batch else None, callbacks=callbacks,
                      has_validation=validation_data is not None)
    if resume is not None:
        resume.restore(trainer)
    options = FitOptions(epochs, batch_size if mini_batch else None, shuffle, round_to, schedule, clip_norm,
                         gradient, stable_lr)
    target_head = y[:HEAD] if source is None else fit_targets(model, loss, source.head(HEAD)[1])
    run = _Run(trainer, X, y, options, validation_data, target_head)
    plan = functools.partial(plan_for, model, loss, X, y, source, batch_size if mini_batch else None, shuffle,
                             gradient, epochs)
    _train(run, plan, source, resume, quiet=source is not None and not mini_batch)
    return history


def _train(run, plan, source, resume, quiet):
    """Train begin, the epochs over the batches ``plan()`` makes, train end (however training ends: see
    :func:`gradloop.callbacks.base.train_end`); ``quiet``: a full batch over a source, whose blocks are
    checked as read."""
    model, trainer, callbacks = run.model, run.trainer, run.callbacks
    model.train()
    for cb in callbacks:
        cb.on_train_begin(trainer)
    if resume is not None:
        resume.restore_callbacks(callbacks)  # after train begin, which resets their counters
    try:
        # Unchecked blocks may hold a NaN or infinity until the starting loss shows it (then
        # find_bad_value names it): no warnings on the way.
        with np.errstate(invalid="ignore", over="ignore") if quiet else contextlib.nullcontext():
            run.run(plan())
    except BaseException as exc:
        model.eval()
        trainer.failed = True
        train_end(callbacks, run.history, trainer, failing=True)
        if source is not None and isinstance(exc, DivergenceError) and exc.epoch == 0:
            # A source is read, never checked whole in advance: a non-finite starting loss is
            # first of all a question about the data.
            source.find_bad_value()
        raise
    model.eval()
    train_end(callbacks, run.history, trainer, failing=False)


class _Run:
    """One call of :func:`fit`: the epoch loop, the step, and everything done per epoch and per batch.

    One loop for every mode. Each epoch runs its batch plan (:mod:`gradloop.batches`): the full batch
    (:meth:`_full_batch_epoch`: one step on the whole data set, whose loss and gradients a kernel
    computes) or mini-batches (:meth:`_mini_batch_epoch`: many steps through the layers); every batch
    ends in the same :meth:`step`. An epoch's entries go into the History once it has completed,
    never before, so an epoch that stops half-way leaves none.
    """

    def __init__(self, trainer, X, y, options, validation_data, target_head):
        """trainer: its model, optimizer, loss, callbacks and History; X, y: the training rows, shaped for
        the loss (None for a source, which only its kernel reads); options: a :class:`FitOptions`;
        validation_data: (X_val, y_val) or None; target_head: the first rows of y, for the records."""
        model, loss, optimizer, callbacks = trainer.model, trainer.loss, trainer.optimizer, trainer.callbacks
        self.model, self.loss, self.optimizer, self.options = model, loss, optimizer, options
        self.X, self.y, self.target_head = X, y, target_head
        self.callbacks, self.trainer, self.history = callbacks, trainer, trainer.history
        self.records_wanted = any(cb.wants_records for cb in callbacks)
        self.batch_callbacks = [cb for cb in callbacks if cb.wants_batches]
        self.block_callbacks = [cb for cb in callbacks if cb.wants_blocks]
        self.terminate_on_nan = any(cb.terminates_on_nan for cb in callbacks)
        self.validation = None if validation_data is None else validation_for(model, loss, validation_data)
        # Per-epoch bookkeeping (the clock, the learning rate from the schedule and the factor) only
        # when something reads it or it can change: a silent full-batch run is the bare arithmetic.
        self.bookkeeping = (bool(callbacks) or self.validation is not None or options.schedule is not None
                            or options.batch_size is not None)
        # Clipping, rounding and the gradient norm only when asked for (the norm: for the records);
        # with none of them the step is the optimizer's alone (see :meth:`plain_step`).
        self.adjust_grads = options.clip_norm is not None or options.round_to is not None or self.records_wanted
        self.plain = not self.adjust_grads
        self.params, self.grads = model.parameters(), model.gradients()
        self.names = [n for n, _ in model.named_parameters()]
        # The last parameters with a finite loss, restored if training diverges.
        self.last_good = [p.copy() for p in self.params]
        self.dropouts, self.limit = model.dropouts, None  # limit: the divergence threshold, from the starting loss
        # The batch plan; full batch: the loss at the current weights, the bare epoch's two calls.
        self.plan = self.value = self._plan_evaluate = self._update = None
        # Looked up once: the step runs every batch, and on the chapter's 16 x 7 problem an
        # epoch is ~4 us, of which each attribute lookup or bound-method creation is a visible part.
        self.round_to, self.optimizer_step = options.round_to, optimizer.step

    # ------------------------------------------------------------ the loop
    def run(self, plan):
        """Train from ``trainer.epoch`` to ``options.epochs`` over the batches of ``plan``."""
        trainer, history, last_good, params, optimizer = (self.trainer, self.history, self.last_good, self.params,
                                                           self.optimizer)
        losses, lrs = history.history["loss"], history.history["lr"]
        bookkeeping, completed = self.bookkeeping, trainer.epoch
        try:
            run_epoch, compiled = self._start(plan)
            new_losses = history.history.get("new_loss")  # mini-batch runs have one only with records
            if compiled is not None:  # a silent full-batch run: every epoch in one compiled call
                completed = self._run_compiled(compiled, completed, self.options.epochs)
            lr = optimizer.lr  # a silent run's learning rate never changes
            for epoch in range(completed + 1, self.options.epochs + 1):
                if bookkeeping:
                    started = time.perf_counter()
                    lr = self._set_lr(epoch)
                for keep, p in zip(last_good, params):
                    keep[...] = p  # 0.09 us where np.copyto takes 0.24 us on the chapter's arrays
                done = run_epoch(epoch)
                if done is None:  # stopped before a non-finite update reached the weights
                    break
                completed = epoch
                loss, new_loss, record, new_head = done
                losses.append(loss)
                lrs.append(lr)
                if new_loss is not None:
                    if new_losses is None:
                        new_losses = history.history.setdefault("new_loss", [])
                    new_losses.append(new_loss)
                if bookkeeping:
                    trainer.epoch = epoch  # callbacks and checkpoints read it; a silent run sets it at the end
                    self._end_epoch(epoch, record, new_loss, new_head, started)
                    if trainer.stop_training:
                        break
        finally:
            plan.close()
            if self.validation is not None:
                self.validation.close()
        trainer.epoch = history.epochs_run = completed
        history.stopped_early = completed < self.options.epochs

    def _start(self, plan):
        """Measure the starting loss (the divergence limit's base); returns (the epoch function, the
        compiled silent loop or None)."""
        self.plan = plan
        if not isinstance(plan, FullBatch):
            # The starting loss is the first batch's, which the first step computes anyway: a separate
            # forward pass over all of X cost a third of an epoch (65 ms of 310 on the MLP benchmark).
            # A run of no epochs has no batch to use.
            if self.options.epochs <= self.trainer.epoch:
                self._start_mini_batches(plan.full_loss(self.model, self.loss)[0])
            self.model.train()
            return self._mini_batch_epoch, None
        self.history.history.setdefault("new_loss", [])
        self.history.gradient_mode, self._plan_evaluate = plan.name, plan.evaluate
        self.value = self._evaluate()
        self.start_from(self.value)
        run_epoch = self._full_batch_epoch
        if not self.records_wanted and not self.dropouts:
            # The silent epoch is the bare arithmetic: on the chapter's 16 x 7 problem an epoch is
            # ~5 us, and each branch, lookup and call of the general epoch is a visible part of it.
            self._update, run_epoch = self.plain_step(), self._bare_epoch
        silent_run = not (self.bookkeeping or self.records_wanted or self.dropouts) and self.options.gradient == "auto"
        return run_epoch, silent.loop_for(plan.kernel, self.optimizer, self.options, self.trainer.epoch) \
            if silent_run else None

    def step(self, keep_gradients=False):
        """The update every batch ends with: clip and round the gradients, step, round the weights.

        Returns the gradient norm before clipping (NaN when nothing asked for it) and, with
        ``keep_gradients``, copies of the gradients the step used (for the epoch record).
        """
        grads, params, round_to = self.grads, self.params, self.round_to
        norm = self._clip_and_round(grads) if self.adjust_grads else math.nan
        kept = [g.copy() for g in grads] if keep_gradients else None
        self.optimizer_step(params, grads)
        if round_to is not None:
            for p in params:
                np.round(p, round_to, out=p)
        return norm, kept

    def plain_step(self):
        """:meth:`step` as a call with no Python frame of its own when nothing is clipped or rounded
        (each frame is a visible part of the chapter problem's ~5 us epoch), else :meth:`step`."""
        return functools.partial(self.optimizer_step, self.params, self.grads) if self.plain else self.step

    # ------------------------------------------------------------ full batch
    def _evaluate(self):
        """The kernel's loss at the current weights (their gradients left in the layers)."""
        if self.dropouts:
            # This evaluation draws the masks of the next gradient: a checkpoint of this epoch
            # must let a resumed run draw them again.
            self.trainer.dropout_states = self.model.dropout_states()
        return self.plan.evaluate()

    def _full_batch_epoch(self, epoch):
        """(loss before the update, loss after it, the record or None, new head or None); None: stopped.

        The kernel's evaluation after the update is the report's "new loss" and the next epoch's
        gradient: one pass over the data per epoch."""
        plan, records = self.plan, self.records_wanted
        # A copy: the kernel's evaluation after the update overwrites its predictions.
        head = np.array(plan.head(), dtype=np.float64) if records else None
        grad_norm, gradients = self.step(records)
        new_value = self._evaluate()
        if not new_value <= self.limit:  # also true for NaN
            return self._stop(epoch, new_value)
        record = self._record(epoch, self.value, head, grad_norm, gradients) if records else None
        value, self.value = self.value, new_value
        return value, new_value, record, plan.head() if records else None

    def _bare_epoch(self, epoch):
        """:meth:`_full_batch_epoch` without records or dropout: step, evaluate, check."""
        self._update()
        new_value = self._plan_evaluate()
        if not new_value <= self.limit:  # also true for NaN
            return self._stop(epoch, new_value)
        value, self.value = self.value, new_value
        return value, new_value, None, None

    def _stop(self, epoch, value):
        """The update made the loss non-finite or exploded: undo it and stop (TerminateOnNaN) or raise."""
        if self.terminate_on_nan and not math.isfinite(value):
            self._restore_last_good()
            self._stop_quietly(nan_stop_message(epoch, value))
            return None
        self.diverge(epoch, value, "")

    def _run_compiled(self, compiled, done, epochs):
        """Epochs ``done + 1`` to ``epochs`` in one call of the compiled loop; returns the last one
        completed. The History gets their entries as the Python loop would give them, and an update
        that made the loss NaN or exploded raises the same DivergenceError, with the same last finite
        weights (TerminateOnNaN is a callback: never in a compiled run)."""
        losses, new_losses, stopped = compiled(done + 1, epochs, self.limit)
        self.history.extend_later(loss=losses, new_loss=new_losses, lr=np.full(len(losses), self.optimizer.lr))
        self.optimizer.steps += len(losses) + (stopped is not None)
        self.history.gradient_mode = "compiled"
        if stopped is not None:
            epoch, value, before = stopped
            for keep, p in zip(self.last_good, before):
                keep[...] = p
            self._stop(epoch, value)
        if len(new_losses):
            self.value = float(new_losses[-1])
        return done + len(losses)

    # ------------------------------------------------------------ mini-batches
    def _start_mini_batches(self, value):
        """A non-finite start (a NaN in the data): no start to measure growth from; each batch's check stops it."""
        if math.isfinite(value):
            self.start_from(value)
        else:
            self.limit = math.inf

    def _mini_batch_epoch(self, epoch):
        """The epoch's batches, part by part (a source's blocks): (mean loss, the loss after the epoch
        or None, the record or None, new head or None); None: stopped inside the epoch.

        A checkpoint inside an epoch (``trainer.position``) resumes it: the epoch's generator state, its
        starting weights, the loss total, batches and report head so far, and the blocks done (their
        row orders drawn again, the blocks not read)."""
        plan, trainer, rng = self.plan, self.trainer, self.trainer.rng
        resume, trainer.position = trainer.position, None
        if resume is None:
            epoch_rng, skip, total, batch = rng.bit_generator.state, 0, 0.0, 0
            head = self.model.predict_raw(plan.head_rows()) if self.records_wanted else None
        else:
            epoch_rng, skip, total, batch = resume["epoch_rng"], resume["blocks"], resume["total"], resume["batches"]
            for keep, start in zip(self.last_good, resume["start_weights"]):
                keep[...] = start  # the epoch's starting weights: its update ratio, and what a divergence restores
            head = None if resume["head"] is None else np.asarray(resume["head"])
            rng.bit_generator.state = epoch_rng  # the epoch's start: its orders drawn again
        grad_norm, blocks_done = 0.0, skip
        for X, y, order in plan.parts(rng, skip):
            done = self._steps(X, y, order, epoch, batch, total)
            if done is None:
                return None
            total, batch, grad_norm = done
            blocks_done += 1
            if blocks_done < plan.n_blocks and (self.block_callbacks or trainer.stop_training):
                position = {"epoch": epoch, "blocks": blocks_done, "total": float(total), "batches": batch,
                            "head": None if head is None else np.asarray(head, dtype=np.float64).tolist(),
                            "epoch_rng": epoch_rng, "start_weights": [w.copy() for w in self.last_good]}
                if self._block_end(position):
                    return None
        mean_loss = total / plan.n_rows
        if not mean_loss <= self.limit:
            self.diverge(epoch, mean_loss, "")
        if not self.records_wanted:
            return mean_loss, None, None, None
        # The loss of the epoch's final weights on the whole training set, evaluation mode.
        new_value, new_head = plan.full_loss(self.model, self.loss)
        record = self._record(epoch, mean_loss, head, grad_norm, [g.copy() for g in self.grads], batch)
        return mean_loss, new_value, record, new_head

    def _block_end(self, position):
        """Between two blocks: the block callbacks see ``position`` (a checkpoint's place inside the epoch);
        True when the run stops here (``trainer.stop_training``, e.g. Ctrl-C on the command line)."""
        trainer = self.trainer
        for cb in self.block_callbacks:
            cb.on_block_end(position, trainer)
        if trainer.stop_training:
            self.history.stopped_inside = position
            return True
        return False

    def _steps(self, X, y, order, epoch, batch, total):
        """Steps over rows (X, y) in batches, in ``order`` (None: as they are), numbered after ``batch``,
        their losses times their rows added to ``total``: (the new total, the last batch's number, its
        gradient norm), or None when a non-finite batch loss stopped the run."""
        size, model, loss = self.plan.batch_size, self.model, self.loss
        grad_norm = 0.0
        for batch, start in enumerate(range(0, len(X), size), batch + 1):
            if order is None:
                xb, yb = X[start:start + size], y[start:start + size]
            else:
                idx = order[start:start + size]
                xb, yb = X[idx], y[idx]
            pred = model.forward(xb)
            value, dpred = loss.value_and_grad(yb, pred)
            if self.limit is None:
                self._start_mini_batches(value)
            if not math.isfinite(value):
                # Stop before a non-finite gradient reaches the weights: they are still finite.
                self.stop_on_nan(epoch, batch, value)
                return None
            model.backward(dpred)
            grad_norm, _ = self.step()
            total += value * len(xb)
            if self.batch_callbacks:
                record = BatchRecord(epoch, batch, value, len(xb))
                for cb in self.batch_callbacks:
                    cb.on_batch_end(record, self.trainer)
        return total, batch, grad_norm

    # ------------------------------------------------------------ helpers
    def _set_lr(self, epoch):
        trainer, schedule = self.trainer, self.options.schedule
        base = schedule.lr(trainer.base_lr, epoch - 1) if schedule is not None else trainer.base_lr
        self.optimizer.lr = base * trainer.lr_factor
        return self.optimizer.lr

    def _clip_and_round(self, grads):
        """Clip by global norm and apply the chapter's rounding; return the norm before clipping (or NaN)."""
        norm = math.nan
        if self.options.clip_norm is not None:
            norm = clip_grad_norm(grads, self.options.clip_norm)
        elif self.records_wanted:
            norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
        if self.options.round_to is not None:
            for g in grads:
                np.round(g, self.options.round_to, out=g)
        return norm

    def _record(self, epoch, value, pred, grad_norm, gradients, batches=1):
        """The epoch's record up to its update; :meth:`_end_epoch` completes it."""
        return EpochRecord.before_update(epoch, value, pred, self.target_head, grad_norm, gradients, self.names,
                                         self.optimizer.lr, batches)

    def _end_epoch(self, epoch, record, new_value, new_head, started):
        history = self.history
        history.epochs_run = epoch
        val_loss = None
        if self.validation is not None:
            val_loss = self.validation.loss(self.model, self.loss)
            history.append("val_loss", val_loss)
        if record is not None:
            record.complete(new_value, new_head, self.params, self.last_good, val_loss, time.perf_counter() - started)
        for cb in self.callbacks:
            cb.on_epoch_end(record, self.trainer)

    # ------------------------------------------------------------ divergence and NaN
    def start_from(self, value):
        """Set the divergence limit from the starting loss ``value``; a non-finite start is refused."""
        if not math.isfinite(value):
            raise non_finite_start(value, self.trainer.epoch, [p.copy() for p in self.params], self.optimizer.lr)
        # A resumed run keeps the divergence threshold of its first start.
        if self.history.start_loss is None:
            self.history.start_loss = value
        self.limit = divergence_limit(self.history.start_loss)  # a loss above this (or NaN) diverged

    def stop_on_nan(self, epoch, batch, value):
        """A non-finite batch loss: stop quietly (TerminateOnNaN) or raise DivergenceError."""
        if self.terminate_on_nan:
            self._stop_quietly(nan_stop_message(epoch, value, batch))
            return
        self.diverge(epoch, value, f" (batch {batch})")

    def _stop_quietly(self, message):
        self.trainer.stop_training, self.trainer.stop_reason = True, "nan"
        self.history.stop_message = message

    def _restore_last_good(self):
        for keep, p in zip(self.last_good, self.params):
            np.copyto(p, keep)

    def diverge(self, epoch, value, where):
        """Raise the DivergenceError of ``epoch``, the model back at the last weights whose loss was finite."""
        self._restore_last_good()
        raise divergence_error(epoch, value, where, self.optimizer.lr, self.options.stable_lr, self.X,
                               [p.copy() for p in self.params])
