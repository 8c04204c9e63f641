"""Every training option's allowed values, declared once and checked at the boundary.

In the spirit of scikit-learn's ``_parameter_constraints``: :data:`PARAMETERS`
maps each option to what it accepts. The library checks arguments with
:func:`check` (messages name the argument: ``clip_norm must be a positive
finite number, got -1``); the command line builds its argparse types from the
same table with :func:`option_type` (messages name the option: ``argument
--clip-norm: expected a positive finite number, got '-1'``). :func:`check_memory`
refuses a model that cannot fit in memory before anything is allocated.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Interval:
    """Numbers of one kind (``int`` or ``float``) between bounds.

    low/high: bounds (None: unbounded); low_open/high_open: whether a bound is excluded.
    none: None is allowed (meaning "off"). words: strings allowed besides numbers ("auto").
    text: the allowed numbers in words, for messages. cap: a practical upper limit (a larger
    value is a typo or would not fit), said separately: "at most 1,000,000,000".
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    none: bool = False
    words: tuple = ()
    text: str = ""
    cap: int | None = None

    def describe(self, option=False) -> str:
        """What is allowed, in words: 'a non-negative integer', 'a number in [0, 1)'.

        option: for the command line, where "off" is leaving the option out, not None.
        """
        none = self.none and not option
        return self.text + "".join(f" or {w!r}" for w in self.words) + (" or None" if none else "")

    def why_not(self, value, option=False) -> str:
        """What a refused value should have been: the description, or the cap it passed."""
        if (self.cap is not None and isinstance(value, numbers.Real) and not isinstance(value, bool)
                and math.isfinite(value) and value > self.cap):
            return f"at most {self.cap:,}"
        return self.describe(option)

    def accepts(self, value) -> bool:
        if value is None:
            return self.none
        if isinstance(value, str):
            return value in self.words
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.kind is int and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.cap is not None and value > self.cap:
            return False
        return self.high is None or not (value > self.high or (self.high_open and value == self.high))

    def parse(self, text: str):
        """The value a command-line word stands for; ValueError when it is not allowed."""
        if text in self.words:
            return text
        value = int(text) if self.kind is int else float(text)
        if not self.accepts(value):
            raise ValueError(text)
        return value


MAX_EPOCHS = 10**9  # ~1 hour of the chapter's 16 x 7 loop; a larger count is a typo, not a plan
MAX_SEED = 2**63 - 1

#: Each training option and what it accepts (the argument name; the option is --name-with-dashes).
PARAMETERS = {
    "epochs": Interval(int, 0, cap=MAX_EPOCHS, text="a non-negative integer"),
    "lr": Interval(float, 0, None, low_open=True, words=("auto", "find"), text="a positive finite number"),
    "batch_size": Interval(int, 1, None, none=True, text="a positive integer"),
    "seed": Interval(int, 0, cap=MAX_SEED, text="a non-negative integer"),
    "round_to": Interval(int, 0, 15, none=True, text="an integer in [0, 15]"),
    "every": Interval(int, 1, None, text="a positive integer"),
    "clip_norm": Interval(float, 0, None, low_open=True, none=True, text="a positive finite number"),
    "weight_decay": Interval(float, 0, None, text="a non-negative finite number"),
    "test_size": Interval(float, 0, 1, high_open=True, text="a number in [0, 1)"),
    "validation_split": Interval(float, 0, 1, low_open=True, high_open=True, none=True,
                                 text="a fraction in (0, 1)"),
    "checkpoint_every": Interval(int, 1, None, text="a positive integer"),
    "patience": Interval(int, 0, None, text="a non-negative integer"),
    "units": Interval(int, 1, None, text="a positive integer"),
    # Schedules (gradloop.optimizers).
    "gamma": Interval(float, 0, None, low_open=True, text="a positive finite number"),
    "step_size": Interval(int, 1, None, text="a positive integer"),
    "total_epochs": Interval(int, 1, None, text="a positive integer"),
    "min_lr": Interval(float, 0, None, text="a non-negative finite number"),
    # Callbacks (gradloop.callbacks).
    "factor": Interval(float, 0, 1, low_open=True, high_open=True, text="a number in (0, 1)"),
    "cooldown": Interval(int, 0, None, text="a non-negative integer"),
    "min_delta": Interval(float, 0, None, text="a non-negative finite number"),
    "lines": Interval(int, 1, None, text="a positive integer"),
    "after": Interval(int, 0, None, text="a non-negative integer"),
    "interval": Interval(float, 0, None, text="a non-negative finite number (seconds)"),
}
# The optimizers' own arguments (momentum, betas, eps, weight_decay) are checked in their
# constructors with PyTorch's words ("Invalid momentum: -1 (must be in [0.0, 1.0))"), which
# load_state_dict reuses on what it loads.
# Command-line spellings whose argument has another name in the library.
OPTION_OF = {"validation_split": "--val-split", "patience": "--early-stopping", "units": "--hidden",
             "every": "--trace"}


def check_lr(lr):
    """The chapter API's learning rate: a positive finite number, or "auto" (1/L)."""
    if isinstance(lr, str) and lr == "auto":
        return lr
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise ConfigError(f"lr must be a positive number or 'auto', got {lr!r}")
    if not PARAMETERS["lr"].accepts(lr):
        raise ConfigError(f"lr must be a positive finite number, got {lr}")
    return lr


def option_name(name):
    return OPTION_OF.get(name, "--" + name.replace("_", "-"))


def check(name, value, owner=None):
    """Return ``value`` if :data:`PARAMETERS` allows it for ``name``, else raise ConfigError naming the argument
    (and ``owner``, the class it was given to: ``ExponentialLR gamma must be ...``)."""
    rule = PARAMETERS[name]
    if not rule.accepts(value):
        raise ConfigError(f"{owner + ' ' if owner else ''}{name} must be {rule.why_not(value)}, got {value!r}")
    return value


def check_all(**values):
    """:func:`check` each keyword argument; returns them as a dict."""
    return {name: check(name, value) for name, value in values.items()}


def option_type(name):
    """An argparse ``type=`` for ``name``: parses the word, or says what the option accepts."""
    rule = PARAMETERS[name]

    def parse(text):
        try:
            return rule.parse(text)
        except (ValueError, OverflowError):
            try:
                expected = rule.why_not(int(text) if rule.kind is int else float(text), option=True)
            except (ValueError, OverflowError):
                expected = rule.describe(option=True)
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


# ---------------------------------------------------------------- memory
def machine_memory() -> int:
    """Bytes of physical memory, or 0 where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


# Parameters, their gradients and up to two optimizer moments (Adam) live at once.
COPIES_PER_PARAMETER = 4


def check_memory(sizes, itemsize, what):
    """Refuse a network of layer ``sizes`` whose parameters cannot fit in this machine's memory.

    sizes: [inputs, hidden..., outputs]; itemsize: bytes per number; what: the argument or
    option to name. Checked before a single array is allocated.
    """
    parameters = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    need, have = parameters * itemsize * COPIES_PER_PARAMETER, machine_memory()
    if have and need > have:
        raise ConfigError(f"{what}: a network of sizes {list(sizes)} has {parameters:,} parameters and needs about "
                          f"{need / 2**30:,.1f} GiB with their gradients and optimizer state, more than this "
                          f"machine's {have / 2**30:,.1f} GiB; choose smaller layers")
