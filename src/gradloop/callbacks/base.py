"""The callback contract: the hooks the loop calls, and what a batch step reports."""

from __future__ import annotations

from dataclasses import dataclass


class Callback:
    """Consumer of the loop's records. Override the hooks you need.

    Hooks: ``on_train_begin(trainer)``, ``on_epoch_end(record, trainer)``,
    ``on_batch_end(batch, trainer)`` (only for callbacks with
    ``wants_batches = True``; ``batch`` is a :class:`BatchRecord`), and
    ``on_train_end(history, trainer)``, which runs however training ended.
    ``wants_records = False`` marks a callback that reads only
    ``trainer.history`` (its ``record`` may then be None, and a run without
    record consumers builds none). ``trainer.stop_training = True`` ends
    training after the current epoch.
    """

    wants_records = True
    wants_batches = False

    def on_train_begin(self, trainer):
        pass

    def on_batch_end(self, batch, trainer):
        pass

    def on_epoch_end(self, record, trainer):
        pass

    def on_train_end(self, history, trainer):
        pass


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
