"""What a run leaves behind: an :class:`EpochRecord` per epoch (the chapter's report as data)
and the :class:`History` (Keras' dict of per-epoch lists)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .display import table
from .report.plots import plot_history

HEAD = 5  # rows shown in the chapter's report (the heads of predictions and targets)
WHOLE = 64  # entries of a gradient or weight array logged whole even when the log keeps heads only


@dataclass
class EpochRecord:
    """What the chapter prints for one epoch, as data.

    Heads are the first ``HEAD`` rows, shape (≤5, outputs). ``gradients`` and
    ``weights`` are copies, one array per parameter, in ``names`` order.
    ``loss`` is the loss before this epoch's update (full batch) or the mean
    over the epoch's batches; ``new_loss`` is the loss of the updated weights on
    the whole training set (``None`` if nothing asked for it).
    """

    epoch: int
    loss: float
    new_loss: float | None
    pred_head: np.ndarray
    target_head: np.ndarray
    new_pred_head: np.ndarray | None
    gradients: list[np.ndarray]
    weights: list[np.ndarray]
    names: list[str]
    lr: float
    grad_norm: float
    seconds: float
    batches: int = 1
    val_loss: float | None = None
    update_ratio: float | None = None  # ||weights after - before|| / ||before||
    metrics: dict = field(default_factory=dict)

    @classmethod
    def before_update(cls, epoch, value, pred, target_head, grad_norm, gradients, names, lr, batches=1):
        """The record of an epoch up to its update (what follows it: :meth:`complete`). ``pred``: the
        predictions before the update, at least as many rows as ``target_head``."""
        n_head = len(target_head)
        return cls(epoch=epoch, loss=value, new_loss=None, pred_head=np.array(pred[:n_head], dtype=np.float64),
                   target_head=np.asarray(target_head, dtype=np.float64).reshape(n_head, -1), new_pred_head=None,
                   gradients=gradients, weights=[], names=names, lr=lr, grad_norm=grad_norm, seconds=0.0,
                   batches=batches)

    def complete(self, new_loss, new_head, params, before, val_loss, seconds):
        """What follows the update: the new loss and head, copies of the weights ``params`` and how far
        they moved from ``before`` (relative to where they were), the validation loss, the epoch's time."""
        self.new_loss = new_loss
        self.new_pred_head = np.array(new_head, dtype=np.float64)
        self.weights = [p.copy() for p in params]
        moved = math.sqrt(sum(float(np.vdot(w - old, w - old)) for w, old in zip(self.weights, before)))
        size = math.sqrt(sum(float(np.vdot(old, old)) for old in before))
        self.update_ratio = moved / size if size > 0 else None  # undefined from all-zero weights
        self.val_loss, self.seconds = val_loss, seconds

    def _repr_html_(self):
        rows = [("epoch", self.epoch), ("loss", self.loss), ("new loss", self.new_loss), ("val loss", self.val_loss),
                ("lr", self.lr), ("gradient norm", self.grad_norm), ("update ratio", self.update_ratio),
                ("batches", self.batches), ("predicted head", self.pred_head), ("target head", self.target_head)]
        rows += [(f"weights {name}", w) for name, w in zip(self.names, self.weights)]
        return table(f"Epoch {self.epoch}", rows)

    def __repr__(self):
        return (f"EpochRecord(epoch={self.epoch}, loss={self.loss:.7g}, new_loss="
                f"{'None' if self.new_loss is None else format(self.new_loss, '.7g')}, lr={self.lr:.7g}, "
                f"parameters={list(self.names)})")

    @property
    def diff_head(self):
        """Actual minus predicted, first rows (the chapter's 'difference')."""
        return self.target_head - self.pred_head

    def to_dict(self, tensors=True):
        """JSON-friendly dict: one line of a JSON-lines log.

        ``tensors=False`` writes a gradient or weight array of more than ``WHOLE`` entries as its
        shape, norm and first entries (a log sized to its use: an MLP of 4,810 parameters wrote ~215 KB
        an epoch whole); smaller ones (a linear model's, what the weights plot draws) stay whole.
        """
        def listify(a):
            return None if a is None else np.asarray(a).tolist()

        def tensor(a):
            a = np.asarray(a)
            if tensors or a.size <= WHOLE:
                return a.tolist()
            return {"shape": list(a.shape), "norm": float(np.linalg.norm(a)), "head": a.reshape(-1)[:HEAD].tolist()}

        return {
            "epoch": self.epoch, "loss": self.loss, "new_loss": self.new_loss, "val_loss": self.val_loss,
            "lr": self.lr, "grad_norm": self.grad_norm, "update_ratio": self.update_ratio,
            "seconds": self.seconds, "batches": self.batches,
            "pred_head": listify(self.pred_head), "target_head": listify(self.target_head),
            "diff_head": listify(self.diff_head), "new_pred_head": listify(self.new_pred_head),
            "gradients": {n: tensor(g) for n, g in zip(self.names, self.gradients)},
            "weights": {n: tensor(w) for n, w in zip(self.names, self.weights)},
            **self.metrics,
        }


class History:
    """The run as data: ``history`` is a dict of per-epoch lists (Keras' layout).

    Keys: "loss" always; "new_loss" (full-batch runs, and mini-batch runs with
    records); "val_loss" with validation data; "lr". ``records`` holds the
    :class:`EpochRecord` objects when ``keep_records`` was asked for.
    """

    def __init__(self):
        self._history: dict[str, list] = {"loss": [], "lr": []}
        # A compiled run's per-epoch values, as arrays, until they are read: a Python float costs
        # ~25 ns to make, more than a compiled epoch of the chapter's problem (gradloop.fast.silent).
        self._later: list[dict] = []
        self.records: list[EpochRecord] = []
        self.epochs_run = 0
        self.gradient_mode = None  # which full-batch kernel ran: layers, fused, stream, gram, or "compiled"
        self.start_loss = None  # loss of the very first weights: the divergence threshold's base
        self.stop_message = None  # why a run stopped before its last epoch, when a callback says
        self.stopped_early = False
        self.stopped_inside = None  # a run from a source stopped between two blocks: the position there
        self.restored_epoch = None  # the epoch whose weights EarlyStopping(restore_best) gave back

    @property
    def history(self):
        """{key: list of one value per epoch}."""
        if self._later:
            for arrays in self._later:
                for key, values in arrays.items():
                    self._history.setdefault(key, []).extend(values.tolist())
            self._later = []
        return self._history

    @history.setter
    def history(self, value):
        self._history, self._later = value, []

    def extend_later(self, **arrays):
        """Append each array's values to ``history[key]``, as floats, when the history is next read."""
        self._later.append(arrays)

    def append(self, key, value):
        self.history.setdefault(key, []).append(value)

    @property
    def final_loss(self):
        """The loss of the final weights (full batch) or the last epoch's mean loss."""
        later = self._later[-1] if self._later else {}
        if len(later.get("new_loss", ())):  # without making every epoch's float
            return float(later["new_loss"][-1])
        new = self.history.get("new_loss")
        return new[-1] if new else (self.history["loss"][-1] if self.history["loss"] else None)

    def plot(self, ax=None):
        """Draw the loss curves (loss, new loss, validation loss per epoch) with matplotlib; returns the axes."""
        return plot_history(self, ax)

    def __repr__(self):
        return f"History(epochs={self.epochs_run}, final_loss={self.final_loss})"

    def _repr_html_(self):
        keys = [k for k in ("loss", "new_loss", "val_loss", "lr") if self.history.get(k)]
        last = range(max(0, self.epochs_run - 10), self.epochs_run)
        rows = [[i + 1] + [self.history[k][i] if i < len(self.history[k]) else None for k in keys] for i in last]
        summary = table("History", [("epochs run", self.epochs_run), ("final loss", self.final_loss),
                                    ("stopped early", self.stopped_early),
                                    ("gradient mode", self.gradient_mode)])
        return summary + (table("last epochs", rows, ["epoch", *keys]) if rows else "")
