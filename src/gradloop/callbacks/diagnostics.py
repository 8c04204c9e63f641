"""Diagnostics: what is going wrong in a run, said in plain words, each with a remedy.

Per layer, every epoch: each parameter's gradient norm and update-to-weight ratio, the
fraction of dead ReLU units (0 for every row of the epoch), the fraction of saturated
tanh or sigmoid outputs. For the run: a loss that stalled high, a loss that oscillates,
the learning rate against the stable bound 2/L (when known), features whose scales
differ widely, a classification target that looks continuous. Each :class:`Finding` names the
layer or feature, the epoch and the number, and says what to do. Findings go into the epoch's
record (``record.metrics["findings"]``, so into a JSON-lines log); a run with nothing to report
says nothing.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..layers import ReLU, Sigmoid, Tanh
from .base import Callback

DEAD_SHARE = 0.25  # dead ReLU units worth a finding: a quarter of a layer's units
SATURATED_SHARE = 0.5  # saturated tanh/sigmoid outputs worth a finding: half of them
SATURATED = 0.99  # |tanh| above this, or a sigmoid within 0.01 of 0 or 1, has a gradient below ~0.02
UPDATE_TOO_LARGE = 0.1  # an epoch moving a parameter by 10% of its size: the steps are too large
SETTLING = 5  # epochs before update sizes are judged
WINDOW = 20  # epochs over which a plateau or an oscillation is judged
STALLED = 1e-4  # relative change of the loss over WINDOW epochs below which it has stalled...
STALLED_HIGH = 0.01  # ...while still above this share of the starting loss...
CONVERGED = 0.01  # ...and the gradient norm above this share of the first epoch's (else: a minimum)
OSCILLATING = 0.6  # share of the WINDOW's steps whose change flips sign
SCALE_SPREAD = 10.0  # feature sizes (root mean square) this many times apart stretch the loss surface
MANY_CLASSES = 20  # more classes than this, all numbers and some fractional: a continuous target


def _fractional(labels):
    """Whether labels read as numbers, some of them not whole: a measured quantity, not a category."""
    try:
        values = np.array([float(label) for label in labels])
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(values).all() and (values != np.round(values)).any())


@dataclass
class Finding:
    """One thing going wrong: what, where (a layer, a feature or the run), when, the number, and a remedy."""

    kind: str
    where: str
    epoch: int
    value: float
    message: str
    remedy: str

    def __str__(self):
        return f"epoch {self.epoch}, {self.where}: {self.message}; {self.remedy}"


class Diagnostics(Callback):
    """Measure each layer and the run every epoch, and report what goes wrong (see the module).

    Args:
        verbose: print each finding when it appears (``out``: where to).
        stable_lr: the stable bound 2/L of the problem when known (the linear model with MSE).
        feature_scales: {feature name: root mean square} of the inputs as trained on.
        classes: a classifier's class labels as written (a continuous-looking target is said).
        optimum: a function giving the least-squares loss (the linear model with MSE): with widely
            differing feature scales, a run that did not diverge is compared with it at the end.

    Attributes: ``findings`` (every :class:`Finding`, in order), ``layers`` (the last epoch's
    statistics per layer).
    """

    wants_batches = True  # dead units must be dead for every batch of the epoch

    def __init__(self, verbose=False, out=print, *, stable_lr=None, feature_scales=None, classes=None, optimum=None):
        self.verbose, self.out = verbose, out
        self.stable_lr, self.feature_scales, self.classes, self.optimum = stable_lr, feature_scales, classes, optimum
        self.findings, self.layers = [], {}

    def on_train_begin(self, trainer):
        self.findings, self.layers, self._reported = [], {}, set()
        self._alive, self._saturated, self._batches = {}, {}, 0
        self._new, self._before, self._pending = [], [p.copy() for p in trainer.model.parameters()], []
        self._first_norm = None
        # The findings of the start are said with the first epoch (or when training ends): a resumed run
        # gets back what it had reported (load_state_dict, after this) and must not say it twice.
        lr = trainer.optimizer.lr
        if self.stable_lr is not None and lr >= self.stable_lr:
            self._pend("learning rate", "the run", trainer.epoch, lr,
                      f"lr {lr:.6g} is at or above the stable bound 2/L = {self.stable_lr:.6g}, where the "
                      "steepest direction's error grows each step",
                      f"use lr below {self.stable_lr:.6g}; 1/L = {self.stable_lr / 2:.6g} is the fastest safe step")
        if self.feature_scales:
            names, scales = list(self.feature_scales), np.array(list(self.feature_scales.values()), dtype=float)
            live = scales > 0
            if live.sum() > 1 and scales[live].max() / scales[live].min() > SCALE_SPREAD:
                big, small = names[int(np.argmax(np.where(live, scales, -np.inf)))], \
                    names[int(np.argmin(np.where(live, scales, np.inf)))]
                spread = scales[live].max() / scales[live].min()
                self._pend("feature scales", f"features {big!r} and {small!r}", trainer.epoch, spread,
                          f"their sizes differ {spread:.3g}-fold (root mean square {scales.max():.3g} against "
                          f"{scales[live].min():.3g}): the stable step is set by the largest while the small "
                          "ones barely move", "standardize the features (--standardize)")

        if self.classes is not None and len(self.classes) > MANY_CLASSES and _fractional(self.classes):
            self._pend("continuous target", "the target", trainer.epoch, len(self.classes),
                       f"{len(self.classes)} classes, and labels like {self.classes[0]!r} and {self.classes[1]!r} "
                       "are fractional numbers: the target looks continuous",
                       "train a regression (--loss mse) instead of a classifier")

    def on_batch_end(self, batch, trainer):
        self._watch(trainer.model)

    def on_epoch_end(self, record, trainer):
        self._say_pending()
        model, epoch = trainer.model, trainer.epoch
        if self._batches == 0:  # full batch: the last forward pass covered every row
            self._watch(model)
        losses = trainer.history.history["loss"]
        self._layers(model, record, epoch, rose=len(losses) > 1 and losses[-1] > losses[-2])
        norm = None if record is None else record.grad_norm
        if norm is not None and math.isfinite(norm) and self._first_norm is None:
            self._first_norm = norm
        self._loss_shape(trainer.history.history["loss"], epoch, norm)
        if record is not None and self._new:
            record.metrics["findings"] = [asdict(f) for f in self._new]
        self._new, self._alive, self._saturated, self._batches = [], {}, {}, 0

    def _watch(self, model):
        """Accumulate which ReLU units fired and how many tanh/sigmoid outputs saturated, this epoch."""
        self._batches += 1
        for index, layer in enumerate(model.layers):
            y = layer.output
            if y is None:
                continue
            if isinstance(layer, ReLU):
                fired = (y > 0).any(axis=0)
                self._alive[index] = fired | self._alive.get(index, np.zeros_like(fired))
            elif isinstance(layer, (Tanh, Sigmoid)):
                near = np.abs(y) > SATURATED if isinstance(layer, Tanh) else np.abs(y - 0.5) > SATURATED - 0.5
                done, total = self._saturated.get(index, (0, 0))
                self._saturated[index] = (done + int(near.sum()), total + near.size)

    def _layers(self, model, record, epoch, rose):
        for index, alive in self._alive.items():
            dead = 1.0 - float(alive.mean())
            self.layers.setdefault(f"layer {index}", {})["dead_relu"] = dead
            if dead >= DEAD_SHARE:
                self._add("dead ReLU", f"layer {index} (ReLU)", epoch, dead,
                          f"{int(round(dead * alive.size))} of {alive.size} units ({dead:.0%}) output 0 for every "
                          "row this epoch and get no gradient",
                          "lower the learning rate, start from he initialization, or use leaky-relu")
        for index, (done, total) in self._saturated.items():
            share = done / total if total else 0.0
            self.layers.setdefault(f"layer {index}", {})["saturated"] = share
            if share >= SATURATED_SHARE:
                kind = type(model.layers[index]).__name__
                self._add("saturation", f"layer {index} ({kind})", epoch, share,
                          f"{share:.0%} of its outputs are saturated (gradient below ~0.02)",
                          "standardize the inputs, lower the learning rate or the initial weights, or use relu")
        if record is None:
            return
        for name, g, w, before in zip(record.names, record.gradients, record.weights, self._before):
            stats = self.layers.setdefault(f"layer {name.split('.')[0]}", {})
            stats[f"{name} gradient norm"] = float(np.linalg.norm(g))
            size = float(np.linalg.norm(before))
            ratio = float(np.linalg.norm(w - before)) / size if size > 0 else None  # what the epoch moved
            stats[f"{name} update ratio"] = ratio
            # Weights only, after the first epochs, and while the loss rose: a bias, or weights started at
            # 0, begin so small that any step is large next to them, and a large step that still lowers
            # the loss is doing its job.
            if ratio is not None and ratio > UPDATE_TOO_LARGE and w.ndim == 2 and epoch > SETTLING and rose:
                self._add("large update", f"parameter {name}", epoch, ratio,
                          f"this epoch moved it by {ratio:.0%} of its size and the loss rose",
                          "lower the learning rate")
        self._before = [w.copy() for w in record.weights]

    def _loss_shape(self, losses, epoch, grad_norm):
        if len(losses) < WINDOW + 1 or not all(math.isfinite(v) for v in losses[-WINDOW - 1:]):
            return
        window = np.array(losses[-WINDOW - 1:])
        change = abs(window[-1] - window[0]) / max(abs(window[0]), 1e-300)
        # Stalled, not converged: the gradient is still a good part of what it was at the start (at a
        # minimum it has all but vanished, however high the loss the model can reach).
        steep = grad_norm is None or self._first_norm is None or grad_norm > CONVERGED * self._first_norm
        if change < STALLED and window[-1] > STALLED_HIGH * losses[0] and steep:
            self._add("plateau", "the run", epoch, window[-1] / losses[0],
                      f"the loss moved {change:.1e} (relative) over the last {WINDOW} epochs and is still "
                      f"{window[-1] / losses[0]:.1%} of its start",
                      "raise the learning rate or use momentum/adam; a bigger model if the loss is the model's best")
        steps = np.sign(np.diff(window))
        flips = float(np.mean(steps[1:] != steps[:-1])) if len(steps) > 1 else 0.0
        if flips > OSCILLATING:
            self._add("oscillation", "the run", epoch, flips,
                      f"the loss went up and down in {flips:.0%} of the last {WINDOW} epochs",
                      "lower the learning rate, or use larger batches")

    def on_train_end(self, history, trainer):
        self._say_pending()  # a run that stopped before its first epoch ended (diverged) still hears them
        finished = trainer.epoch == trainer.epochs or trainer.stop_training  # not diverged
        scaled = [f for f in self.findings if f.kind == "feature scales"]
        if scaled and finished and self.optimum is not None and history.final_loss is not None:
            best, reached = float(self.optimum()), float(history.final_loss)
            times = reached / best if best > 0 else math.inf
            self._add("feature scales, result", scaled[0].where, trainer.epoch, times,
                      f"the run did not diverge and reached loss {reached:.6g} against the least-squares optimum "
                      f"{best:.6g} ({times:.3g} times)",
                      "standardize the features (--standardize) to reach it in fewer epochs")

    def state_dict(self):
        """What was reported, for a checkpoint: a resumed run does not report it again."""
        return {"reported": sorted([kind, where] for kind, where in self._reported)}

    def load_state_dict(self, state):
        self._reported = {(kind, where) for kind, where in state.get("reported", [])}

    def _pend(self, *finding):
        self._pending.append(finding)

    def _say_pending(self):
        pending, self._pending = self._pending, []
        for finding in pending:
            self._add(*finding)

    def _add(self, kind, where, epoch, value, message, remedy):
        """Record a finding the first time its kind appears at that place."""
        if (kind, where) in self._reported:
            return
        self._reported.add((kind, where))
        finding = Finding(kind, where, int(epoch), float(value), message, remedy)
        self.findings.append(finding)
        self._new.append(finding)
        if self.verbose:
            self.out(f"gradloop: diagnosis: {finding}")

    def summary(self):
        """One line for the end of a run: nothing when nothing was found."""
        if not self.findings:
            return ""
        return (f"gradloop: diagnosis: {len(self.findings)} finding(s): "
                + "; ".join(f"{f.kind} ({f.where}, epoch {f.epoch})" for f in self.findings)
                + " (--diagnose prints each with its remedy)")
