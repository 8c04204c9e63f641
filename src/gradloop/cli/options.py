"""``gradloop train``'s options: defaults, and on ``--resume`` the checkpointed run's own.

A resumed run continues the run in its checkpoint: every option comes from the
checkpoint unless the command gives it. Options that set the run's arithmetic
(:data:`FIXED_ON_RESUME`) must then equal the checkpoint's, or the command is
refused naming the option; the others (:data:`CHANGEABLE_ON_RESUME`: how many
epochs in all, the early-stopping patience, where files go, how much is
printed) may change. The data is compared by content (a fingerprint), not by
the spelling of its path.
"""

from __future__ import annotations

import os

from ..checkpoint import load
from ..defaults import COMMAND_LINE_EPOCHS
from ..errors import CheckpointError, ConfigError

#: What an option is when neither the command nor a checkpoint says.
DEFAULTS = {
    "data": None, "target": None, "features": None, "model": "linear", "hidden": [64], "activation": "relu",
    "loss": "mse", "optimizer": "sgd", "lr": None, "batch_size": None, "seed": 0, "standardize": False,
    "test_size": None, "val_split": None, "dtype": "float64", "weight_decay": 0.0, "schedule": None,
    "clip_norm": None, "round_to": None, "gradient": "auto",
    "epochs": COMMAND_LINE_EPOCHS, "early_stopping": None, "out": None, "log": None, "checkpoint": None,
    "checkpoint_every": 1,
    "trace": None, "quiet": False, "out_of_core": False, "dask": None, "check_gradients": False,
    "explain": None, "diagnose": False, "log_tensors": False, "report": None,
}
#: Options that set the run's arithmetic: a resumed run takes them from its checkpoint.
FIXED_ON_RESUME = ("data", "target", "features", "model", "hidden", "activation", "loss", "optimizer", "lr",
                   "batch_size", "seed", "standardize", "test_size", "val_split", "dtype", "weight_decay",
                   "schedule", "clip_norm", "round_to", "gradient")
#: Options a resumed run may change.
CHANGEABLE_ON_RESUME = ("epochs", "early_stopping", "out", "log", "checkpoint", "checkpoint_every", "trace", "quiet",
                        "out_of_core", "dask", "check_gradients", "explain", "diagnose", "log_tensors", "report")
PATHS = ("out", "log", "checkpoint", "report")
#: Options a resumed run does not take from its checkpoint: how much each leg prints is its own.
PER_LEG = ("quiet", "trace", "explain")
#: Options a checkpoint does not keep: where a run executes, not what it computes. A resumed run
#: names its cluster again (the one it ran on may be gone: that is often why it is resumed).
NOT_SAVED = ("dask",)


def resolve(args):
    """Fill every option of ``args`` in place; return the checkpoint to resume (a TrainingState) or None.

    Raises ConfigError for a missing DATA or --target without --resume, CheckpointError for
    a checkpoint that cannot be read or an option that differs from the checkpoint's.
    """
    given = {key: getattr(args, key) for key in DEFAULTS if getattr(args, key, None) is not None}
    state, saved = None, {}
    if args.resume is not None:
        state = load(args.resume)
        saved = {key: value for key, value in state.config.items() if key in DEFAULTS}
        for key in FIXED_ON_RESUME:
            if key != "data" and key in given and key in saved and not _same_value(given[key], saved[key]):
                was = "the default" if saved[key] is None else repr(saved[key])
                raise CheckpointError(
                    f"--resume {args.resume}: the checkpoint was trained with {_option(key)} {was}, "
                    f"this command says {given[key]!r}; leave {_option(key)} out to continue that run")
        for key in PER_LEG:  # how much a leg prints is that leg's own choice
            saved.pop(key, None)
        # Keep checkpointing where the checkpoint is now (the folder may have moved since).
        saved["checkpoint"] = args.resume if os.path.isdir(args.resume) else os.path.dirname(args.resume) or "."
    else:
        for key, name in (("data", "DATA"), ("target", "--target")):
            if key not in given:
                raise ConfigError(f"train: the following arguments are required: {name} "
                                  "(or --resume DIR to continue a checkpointed run)")
    for key, default in DEFAULTS.items():
        value = given.get(key, saved.get(key))
        setattr(args, key, default if value is None else value)
    if args.model == "linear" and ("hidden" in given or "activation" in given):
        raise ConfigError("--hidden and --activation describe a network's hidden layers, which the linear model "
                          "has none of: add --model mlp")
    first = 1 if state is None else state.epoch + 1  # a resumed run trains from the epoch after its checkpoint
    if state is not None and state.position is not None and args.epochs < first:
        raise ConfigError(f"--epochs {args.epochs}: the checkpoint stopped inside epoch {first}; give --epochs "
                          f"{first} or more to finish it")
    if args.explain is not None and not first <= args.explain <= args.epochs:
        raise ConfigError(f"--explain {args.explain}: this run trains epochs {first} to {args.epochs}; "
                          "explain one of them")
    if args.data is None or args.target is None:  # a checkpoint written from Python, without a config
        raise ConfigError(f"--resume {args.resume}: the checkpoint does not say which data and target it was "
                          "trained on; give DATA and --target")
    return state


def run_config(args, fingerprint):
    """What a checkpoint stores of the run: every option (paths absolute) and the data's fingerprint."""
    config = {key: getattr(args, key) for key in DEFAULTS if key not in NOT_SAVED}
    for key in PATHS:
        if config[key] is not None:
            config[key] = os.path.abspath(config[key])
    if not str(args.data).startswith("sklearn:"):
        config["data"] = os.path.abspath(args.data)
    config["data_fingerprint"] = fingerprint
    return config


def check_fingerprint(state, args, fingerprint):
    """Refuse resuming on data whose content differs from the checkpointed run's."""
    saved = state.config.get("data_fingerprint")
    if saved is not None and saved != fingerprint:
        raise CheckpointError(f"--resume {args.resume}: DATA {args.data} is not the data the checkpoint was "
                              f"trained on (its content differs); give the same data to continue that run")


def _same_value(a, b):
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _option(key):
    return "--" + key.replace("_", "-")
