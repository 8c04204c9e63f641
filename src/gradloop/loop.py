"""The training loop: one loop for every model and every mode, producing epoch records.

Per epoch::

    for each batch the epoch's source yields:      full batch: one, the whole training set
        loss, gradients   <- a kernel, or forward, loss, backward through the layers
        weights           <- step: clip and round the gradients, optimizer.step, round the weights
    entries of the epoch  -> History (once the epoch has completed) -> callbacks

Full batch is the chapter's mode: the kernel's evaluation after the update is the
report's "new loss" and the next epoch's gradient, so an epoch costs one forward and
one backward pass, report or not. The kernels (:mod:`gradloop.fast.kernels`) compute it
through the layers for any model, or for the linear model with MSE as a fused pass,
a compiled one-pass stream or the Gram form. The batch sources are in
:mod:`gradloop.batches`.

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
from dataclasses import dataclass, field

import numpy as np

from .batches import FullBatch, MiniBatches, SourceMiniBatches
from .callbacks import BatchRecord, Callback
from .errors import DivergenceError
from .fast import kernels
from .fast.blockwise import make_source_kernel
from .glass.gradcheck import check_before_training
from .inputs import check_epochs, checked_options, training_data
from .losses import fit_targets, get_loss
from .optimizers import Optimizer, clip_grad_norm
from .records import HEAD, EpochRecord, History
from .validation import split_validation, validation_for

# Callback, BatchRecord, EpochRecord and History live in callbacks.py and records.py, check_epochs in
# inputs.py and split_validation in validation.py; they stay importable from here.
__all__ = ["BatchRecord", "Callback", "EpochRecord", "FitOptions", "History", "Trainer", "check_epochs", "fit",
           "fit_targets", "split_validation"]


# A loss this many times the starting loss counts as divergence: gradient
# descent on a convex problem never goes up, and a healthy network run does
# not climb six orders of magnitude.
DIVERGENCE_FACTOR = 1e6
CHECK_ROWS = 256  # rows the gradient check runs on: enough to reach every unit, cheap next to training
# The library's advice names the class; the command line says its option instead.
STANDARDIZE_ADVICE = "standardize them (gradloop.data.Standardizer)"


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


@dataclass
class Trainer:
    """What callbacks can see and change while training runs.

    ``lr_factor`` multiplies the learning rate (or the schedule's) from the
    next epoch on (ReduceLROnPlateau lowers it); ``stop_reason`` says why a
    run stopped early; ``rng`` is the mini-batch order's generator and
    ``epoch`` the last completed epoch, both saved by checkpoints.
    """

    model: object
    optimizer: Optimizer
    loss: object
    history: History
    epochs: int = 0
    stop_training: bool = False
    stop_reason: str | None = None
    lr_factor: float = 1.0
    base_lr: float = 0.0
    epoch: int = 0
    rng: object = None
    schedule: object = None
    dropout_states: list | None = None  # full batch: dropout generators before the last evaluation
    position: dict | None = None  # a checkpoint's place inside an epoch, until the run reaches it
    has_validation: bool = False
    callbacks: list = field(default_factory=list)


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
    plan = functools.partial(_batches, run, source, mini_batch, batch_size, shuffle, gradient, epochs)
    _train(run, plan, source, resume, quiet=source is not None and not mini_batch)
    return history


def _train(run, plan, source, resume, quiet):
    """Train begin, the epochs over the batches ``plan()`` makes, train end (however training ends: see
    :func:`_end_training`); ``quiet``: a full batch over a source, whose blocks are checked as read."""
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
        _end_training(model, callbacks, run.history, trainer, failing=True)
        if source is not None and isinstance(exc, DivergenceError) and exc.epoch == 0:
            # A source is read, never checked whole in advance: a non-finite starting loss is
            # first of all a question about the data.
            source.find_bad_value()
        raise
    _end_training(model, callbacks, run.history, trainer, failing=False)


def _batches(run, source, mini_batch, batch_size, shuffle, gradient, epochs):
    """The run's batch plan: mini-batches of arrays or of a source's blocks, or the full batch a kernel
    computes (the one chooser, :func:`gradloop.fast.kernels.choose_mode`, picks it)."""
    if mini_batch:
        return (MiniBatches(run, int(batch_size), shuffle) if source is None
                else SourceMiniBatches(run, source, int(batch_size), shuffle))
    if source is not None:
        return FullBatch(run, make_source_kernel(run.model, run.loss, source, gradient, epochs))
    return FullBatch(run, kernels.make_kernel(run.model, run.loss, run.X, run.y, gradient, epochs))


def _end_training(model, callbacks, history, trainer, failing):
    """Train end runs for every callback however training ended: loggers close, best weights return.

    One callback's error does not skip the others; it is raised afterwards unless
    training itself already failed (that error says more).
    """
    model.eval()
    first = None
    for cb in callbacks:
        try:
            cb.on_train_end(history, trainer)
        except Exception as exc:
            first = first or exc
    if first is not None and not failing:
        raise first


class _Run:
    """One call of :func:`fit`: the epoch loop, the step, and the helpers they hand work to.

    One loop for every mode. Each epoch asks its batch source (:class:`~gradloop.batches.FullBatch`:
    one batch, the whole data set, whose loss and gradients a kernel computes;
    :class:`~gradloop.batches.MiniBatches`: many, through the layers) to run its batches; every batch
    ends in the same :meth:`step`. An epoch's entries go into the History once it has
    completed, never before, so an epoch that stops half-way leaves none.
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
        self.terminate_on_nan = any(cb.terminates_on_nan for cb in callbacks)
        self.validation = None if validation_data is None else validation_for(model, loss, validation_data)
        # Per-epoch bookkeeping (the clock, the learning rate from the schedule and the factor) only
        # when something reads it or it can change: a silent full-batch run is the bare arithmetic.
        self.bookkeeping = (bool(callbacks) or self.validation is not None or options.schedule is not None
                            or options.batch_size is not None)
        # Clipping, rounding and the gradient norm only when asked for (the norm: for the records).
        self.adjust_grads = options.clip_norm is not None or options.round_to is not None or self.records_wanted
        # Nothing to clip or round: the step is the optimizer's alone (see :meth:`plain_step`).
        self.plain = not self.adjust_grads
        self.params, self.grads = model.parameters(), model.gradients()
        self.names = [n for n, _ in model.named_parameters()]
        # The last parameters with a finite loss, restored if training diverges.
        self.last_good = [p.copy() for p in self.params]
        self.dropouts = model.dropouts
        self.limit = None  # the divergence threshold, from the starting loss
        # Looked up once: the step runs every batch, and on the chapter's 16 x 7 problem an
        # epoch is ~4 us, of which each attribute lookup or bound-method creation is a visible part.
        self.round_to, self.optimizer_step = options.round_to, optimizer.step

    # ------------------------------------------------------------ the loop
    def run(self, source):
        """Train from ``trainer.epoch`` to ``options.epochs`` over the batches ``source`` yields."""
        trainer, history, last_good, params, optimizer = (self.trainer, self.history, self.last_good, self.params,
                                                           self.optimizer)
        losses, lrs = history.history["loss"], history.history["lr"]
        bookkeeping, completed = self.bookkeeping, trainer.epoch
        try:
            source.start()
            new_losses = history.history.get("new_loss")  # mini-batch runs have one only with records
            if source.compiled is not None:  # a silent full-batch run (see batches)
                completed = source.run_compiled(completed, self.options.epochs)
            run_epoch = source.epoch
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
            source.close()
            if self.validation is not None:
                self.validation.close()
        trainer.epoch = history.epochs_run = completed
        history.stopped_early = completed < self.options.epochs

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

    def undo_update(self, epoch, value):
        """TerminateOnNaN, full batch: this epoch's update gave a non-finite loss; take it back and stop."""
        for keep, p in zip(self.last_good, self.params):
            np.copyto(p, keep)
        self.trainer.stop_training, self.trainer.stop_reason = True, "nan"
        self.history.stop_message = (f"stopped at epoch {epoch}: its update made the loss {value}; "
                                     f"the weights of epoch {epoch - 1} are kept")

    def stop_on_nan(self, epoch, batch, value):
        """A non-finite batch loss: stop quietly (TerminateOnNaN) or raise DivergenceError."""
        if self.terminate_on_nan:
            self.trainer.stop_training, self.trainer.stop_reason = True, "nan"
            self.history.stop_message = (f"stopped at epoch {epoch}, batch {batch}: the loss is {value}; "
                                         f"the weights are those before that batch's update")
            return
        self.diverge(epoch, value, f" (batch {batch})")

    def partial_record(self, epoch, value, pred, grad_norm, gradients, batches=1):
        """The epoch's record up to its update; :meth:`_end_epoch` adds what follows the update."""
        n_head = len(self.target_head)
        target = self.target_head
        return EpochRecord(
            epoch=epoch, loss=value, new_loss=None, pred_head=np.array(pred[:n_head], dtype=np.float64),
            target_head=np.asarray(target, dtype=np.float64).reshape(n_head, -1), new_pred_head=None,
            gradients=gradients, weights=[], names=self.names, lr=self.optimizer.lr,
            grad_norm=grad_norm, seconds=0.0, batches=batches)

    def _end_epoch(self, epoch, record, new_value, new_head, started):
        history = self.history
        history.epochs_run = epoch
        val_loss = None
        if self.validation is not None:
            val_loss = self.validation.loss(self.model, self.loss)
            history.append("val_loss", val_loss)
        if record is not None:
            record.new_loss = new_value
            record.new_pred_head = np.array(new_head, dtype=np.float64)
            record.weights = [p.copy() for p in self.params]
            # How far this epoch moved the weights, relative to where they were.
            moved = math.sqrt(sum(float(np.vdot(w - old, w - old)) for w, old in zip(record.weights, self.last_good)))
            size = math.sqrt(sum(float(np.vdot(old, old)) for old in self.last_good))
            record.update_ratio = moved / size if size > 0 else None  # undefined from all-zero weights
            record.val_loss = val_loss
            record.seconds = time.perf_counter() - started
        for cb in self.callbacks:
            cb.on_epoch_end(record, self.trainer)

    def start_from(self, value):
        """Set the divergence limit from the starting loss ``value``; a non-finite start is refused."""
        if not math.isfinite(value):
            raise DivergenceError(
                f"the loss of the starting weights is {value}: check the data and the initial weights",
                epoch=self.trainer.epoch, weights=[p.copy() for p in self.params], stable_lr=None,
                lr=self.optimizer.lr)
        # A resumed run keeps the divergence threshold of its first start.
        if self.history.start_loss is None:
            self.history.start_loss = value
        self.limit = DIVERGENCE_FACTOR * max(self.history.start_loss, 1e-8)  # a loss above this (or NaN) diverged

    def diverge(self, epoch, value, where):
        for keep, p in zip(self.last_good, self.params):
            np.copyto(p, keep)
        lr = self.optimizer.lr
        stable = self.options.stable_lr() if callable(self.options.stable_lr) else self.options.stable_lr
        what = "is not finite" if not math.isfinite(value) else f"exploded to {value:.3g}"
        if stable is not None:
            advice = f"the largest stable learning rate for this problem is {stable:.6g}"
        else:
            advice = f"try a smaller learning rate, e.g. {lr / 10:.3g}"
        kept = f"the last finite weights (epoch {epoch - 1}) are kept"
        raise DivergenceError(
            f"training diverged at epoch {epoch}{where}: the loss {what} with learning rate {lr:.6g}; "
            f"{advice}; {kept}{_scale_hint(self.X) if self.X is not None else ''}",
            epoch=epoch, weights=[p.copy() for p in self.params], stable_lr=stable, lr=lr)


def _scale_hint(X):
    """Advice to standardize when the features' sizes (root mean square) differ more than 10-fold.

    Uneven (or uncentred) features stretch the loss surface: the stable step
    is set by the largest feature while the small ones barely move.
    """
    X = np.asarray(X)
    scales = np.sqrt(np.einsum("ij,ij->j", X, X) / len(X))
    scales = scales[scales > 0]
    if len(scales) > 1 and scales.max() / scales.min() > 10:
        return f"; the features' scales differ widely: {STANDARDIZE_ADVICE}"
    return ""
