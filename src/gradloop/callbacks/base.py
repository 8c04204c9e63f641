"""The callback contract: the hooks the loop calls, and what a batch step reports."""

from __future__ import annotations

from dataclasses import dataclass, field


class Callback:
    """Consumer of the loop's records. Override the hooks you need.

    Everything the loop asks of a callback is declared here, with its default (the loop
    never probes for more):

    - hooks: ``on_train_begin(trainer)``, ``on_epoch_end(record, trainer)``,
      ``on_batch_end(batch, trainer)`` (only with ``wants_batches = True``; ``batch`` is a
      :class:`BatchRecord`), ``on_block_end(position, trainer)`` (only with
      ``wants_blocks = True``: mini-batches from a source, between two blocks), and
      ``on_train_end(history, trainer)``, which runs however training ended;
    - ``wants_records = False``: reads only ``trainer.history`` (its ``record`` may then be
      None, and a run without record consumers builds none);
    - ``terminates_on_nan = True``: a non-finite loss stops the run quietly instead of raising;
    - ``output_places()``: the files it writes, checked before the first epoch;
    - ``state_dict()`` / ``load_state_dict(state)``: what a checkpoint keeps of it (None: nothing).

    ``trainer.stop_training = True`` ends training after the current epoch.
    """

    wants_records = True
    wants_batches = False
    wants_blocks = False
    terminates_on_nan = False

    def output_places(self):
        """The files this callback writes (:class:`gradloop.files.paths.Place`), checked when training starts."""
        return ()

    def state_dict(self):
        """What a checkpoint keeps of this callback so that a resumed run goes on as an unbroken one; None:
        nothing (it starts fresh)."""
        return None

    def load_state_dict(self, state):
        pass

    def on_block_end(self, position, trainer):
        pass

    def on_train_begin(self, trainer):
        pass

    def on_batch_end(self, batch, trainer):
        pass

    def on_epoch_end(self, record, trainer):
        pass

    def on_train_end(self, history, trainer):
        pass


@dataclass
class Trainer:
    """What callbacks can see and change while training runs.

    ``lr_factor`` multiplies the learning rate (or the schedule's) from the
    next epoch on (ReduceLROnPlateau lowers it); ``stop_reason`` says why a
    run stopped early; ``rng`` is the mini-batch order's generator and
    ``epoch`` the last completed epoch, both saved by checkpoints.
    """

    model: object
    optimizer: object
    loss: object
    history: object  # the run's gradloop.records.History
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
    failed: bool = False  # training ended by an error (train end still runs)
    callbacks: list = field(default_factory=list)


def train_end(callbacks, history, trainer, failing):
    """Train end runs for every callback however training ended: loggers close, best weights return.

    One callback's error does not skip the others; it is raised afterwards unless training itself
    already failed (that error says more).
    """
    first = None
    for cb in callbacks:
        try:
            cb.on_train_end(history, trainer)
        except Exception as exc:
            first = first or exc
    if first is not None and not failing:
        raise first


@dataclass
class BatchRecord:
    """One mini-batch step: its epoch, its number in the epoch (1-based), its loss and size."""

    epoch: int
    batch: int
    loss: float
    size: int


# Parameters with more entries than this are summarised (norm and a few values).


def due(epoch, every, last):
    """Whether an every-``every``-epochs consumer handles ``epoch``: its multiples, the first and the last."""
    return epoch % every == 0 or epoch in (1, last)
