"""Checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint holds the model's parameters, the optimizer's state (momentum,
Adam moments, step count), the mini-batch generator's state, dropout
generators, the epoch, the learning-rate factor and the History, so that a
run of k + m epochs and a run stopped after k epochs and resumed for m end
with the same weights, bit for bit. Mini-batches from a source can also stop
between two blocks of an epoch: the checkpoint then holds that position too
(see :class:`~gradloop.batches.SourceBatches`) and the resumed run goes on
from the next block, bit for bit as well.

On disk it is one file, ``DIR/checkpoint.safetensors`` (tensors in
safetensors, the rest as JSON metadata), replaced atomically each time
(temporary file, fsync, rename): a process killed at any moment leaves the
previous complete checkpoint, never a half-written one.

Example:
    >>> fit(model, X, y, loss="mse", optimizer=opt, epochs=10, callbacks=[CheckpointWriter("ckpt")])
    >>> state = load("ckpt")
    >>> fit(model, X, y, loss="mse", optimizer=opt, epochs=20, resume=state)   # epochs 11..20
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .callbacks import Callback
from .constraints import check
from .errors import CheckpointError, ModelFileError
from .files.modelfile import (CHECKSUM_KEY, checksum_matches, content_checksum, finite_json, read_model_file,
                              write_model_file)
from .files.paths import Place
from .models import parameter_shapes
from .records import HEAD

FILE_NAME = "checkpoint.safetensors"
LOCK_NAME = ".gradloop.lock"
KIND = "gradloop-checkpoint"


@dataclass
class TrainingState:
    """A run frozen at the end of an epoch. Build with :func:`capture`, write with :func:`save`."""

    epoch: int
    architecture: dict
    parameters: dict  # name -> array
    optimizer: dict  # Optimizer.state_dict()
    rng_state: dict | None  # mini-batch order generator (None for full batch)
    dropout_states: list  # one bit-generator state per Dropout layer, in order
    history: dict
    start_loss: float | None
    lr_factor: float = 1.0
    base_lr: float = 0.0
    config: dict = field(default_factory=dict)  # the caller's description of the run (data, options)
    callbacks: list = field(default_factory=list)  # [class name, state] of callbacks that keep state
    position: dict | None = None  # stopped between two blocks of epoch ``epoch + 1``: where (see above)

    def restore_callbacks(self, callbacks):
        """Give stateful callbacks (EarlyStopping, ReduceLROnPlateau) back their counters and best values.

        Matched in order by class name; a callback the checkpointed run did not have starts fresh.
        """
        saved = list(self.callbacks)
        for cb in callbacks:
            for i, (name, state) in enumerate(saved):
                if name == type(cb).__name__:
                    cb.load_state_dict(state)
                    del saved[i]
                    break

    def restore(self, trainer):
        """Put this state into a trainer's model, optimizer, generator and history (checked first)."""
        model = trainer.model
        # Every check comes before the first change: a refused checkpoint leaves the model and the
        # optimizer as they were.
        if _shape_of(model.config()) != _shape_of(self.architecture):
            raise CheckpointError(
                f"the checkpoint is for a different model: it holds {_describe(self.architecture)}, "
                f"the model being trained is {_describe(model.config())}")
        if len(model.dropouts) != len(self.dropout_states):
            raise CheckpointError("the checkpoint's dropout layers do not match the model's")
        if self.rng_state is not None and trainer.rng is None:
            raise CheckpointError("the checkpoint was written by a mini-batch run; resume it with "
                                  "the same batch size")
        if self.rng_state is None and trainer.rng is not None:
            raise CheckpointError("the checkpoint was written by a full-batch run; resume it without a batch size")
        if self.position is not None and trainer.rng is None:
            raise CheckpointError("the checkpoint stopped inside an epoch of mini-batches; resume it with the same "
                                  "batch size")
        if self.epoch > trainer.epochs:
            raise CheckpointError(f"the checkpoint is at epoch {self.epoch}, past the {trainer.epochs} "
                                  f"epochs asked for (epochs is the total, not a count)")
        before = model.state_dict()
        try:
            model.load_state_dict(self.parameters)
            trainer.optimizer.load_state_dict(self.optimizer)
        except Exception as exc:  # ModelFileError / ConfigError: say it is the checkpoint
            model.load_state_dict(before)  # the optimizer refused after the model was loaded
            raise CheckpointError(f"the checkpoint does not fit this run: {exc}") from exc
        model.set_dropout_states(self.dropout_states)
        if self.rng_state is not None:
            trainer.rng.bit_generator.state = self.rng_state
        history = trainer.history
        history.history = {k: list(v) for k, v in self.history.items()}
        history.start_loss = self.start_loss
        history.epochs_run = trainer.epoch = self.epoch
        trainer.lr_factor, trainer.base_lr = self.lr_factor, self.base_lr
        trainer.position = self.position


def capture(trainer, config=None) -> TrainingState:
    """The trainer's state now (copies), at the end of epoch ``trainer.epoch``."""
    return _capture(trainer, config, {k: list(v) for k, v in trainer.history.history.items()})


def _capture(trainer, config, history, position=None) -> TrainingState:
    return TrainingState(
        epoch=trainer.epoch,
        architecture=trainer.model.config(),
        parameters=trainer.model.state_dict(),
        optimizer=trainer.optimizer.state_dict(),
        rng_state=None if trainer.rng is None else trainer.rng.bit_generator.state,
        dropout_states=trainer.dropout_states or trainer.model.dropout_states(),
        history=history,
        start_loss=trainer.history.start_loss,
        lr_factor=trainer.lr_factor,
        base_lr=trainer.base_lr,
        config=dict(config or {}),
        callbacks=[[type(cb).__name__, state] for cb in trainer.callbacks if (state := cb.state_dict()) is not None],
        position=position,
    )


def save(directory, state: TrainingState):
    """Write ``state`` to ``directory/checkpoint.safetensors`` atomically; returns the file's path."""
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint folder {directory} does not exist")
    tensors = {f"model.{k}": v for k, v in state.parameters.items()}
    optimizer = dict(state.optimizer)
    for key, arrays in optimizer.pop("state", {}).items():
        for i, a in enumerate(arrays):
            tensors[f"optimizer.{key}.{i}"] = a
    position = None
    if state.position is not None:  # its starting weights as tensors, the rest as metadata
        position = {k: v for k, v in state.position.items() if k != "start_weights"}
        for i, a in enumerate(state.position["start_weights"]):
            tensors[f"position.start.{i}"] = a
    callbacks = []
    for i, (name, cb_state) in enumerate(state.callbacks):
        arrays = cb_state.get("arrays") or {}
        for key, a in arrays.items():
            tensors[f"callback.{i}.{key}"] = a
        callbacks.append([name, {k: v for k, v in cb_state.items() if k != "arrays"}, sorted(arrays)])
    metadata = {
        "callbacks": callbacks,
        "kind": KIND, "epoch": state.epoch, "architecture": state.architecture, "optimizer": optimizer,
        # Bit-generator states hold 128-bit integers: JSON numbers of any size, as Python writes them.
        "rng_state": state.rng_state, "dropout_states": state.dropout_states, "history": state.history,
        "start_loss": state.start_loss, "lr_factor": state.lr_factor, "base_lr": state.base_lr,
        "config": state.config, "position": position,
    }
    metadata = finite_json(metadata)
    metadata[CHECKSUM_KEY] = content_checksum(tensors, metadata)
    path = os.path.join(directory, FILE_NAME)
    write_model_file(path, tensors, metadata)
    return path


def load(directory) -> TrainingState:
    """Read the checkpoint in ``directory``; a missing, foreign or damaged one raises CheckpointError."""

    path = directory if os.path.isfile(directory) else os.path.join(directory, FILE_NAME)
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint in {directory} (expected {FILE_NAME} there); "
                              "a run writes one with CheckpointWriter (gradloop train --checkpoint DIR)")
    try:
        tensors, meta = read_model_file(path)
    except ModelFileError as exc:
        raise CheckpointError(f"{exc}") from exc
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a gradloop checkpoint (it may be a model file: "
                              f"those are loaded with evaluate/predict)")
    if not checksum_matches(tensors, meta):
        raise CheckpointError(f"{path}: the checkpoint is corrupted (its SHA-256 checksum is missing or does not "
                              "match its contents); resume from another checkpoint or train again")
    try:
        parameters = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        optimizer = dict(meta["optimizer"])
        state_arrays = {}
        for name, array in tensors.items():
            if name.startswith("optimizer."):
                _, key, index = name.split(".")
                state_arrays.setdefault(key, {})[int(index)] = array
        optimizer["state"] = {k: [v[i] for i in range(len(v))] for k, v in state_arrays.items()}
        history = {k: [_none_to_nan(x) for x in v] for k, v in meta["history"].items()}
        return _validated(TrainingState(
            epoch=int(meta["epoch"]), architecture=meta["architecture"], parameters=parameters,
            optimizer=optimizer, rng_state=meta["rng_state"], dropout_states=list(meta["dropout_states"]),
            history=history, start_loss=meta["start_loss"], lr_factor=float(meta["lr_factor"]),
            base_lr=float(meta["base_lr"]), config=dict(meta.get("config") or {}),
            callbacks=[[name, {**cb_state, "arrays": {k: tensors[f"callback.{i}.{k}"] for k in keys} or None}]
                       for i, (name, cb_state, keys) in enumerate(meta.get("callbacks") or [])],
            position=_position(meta.get("position"), tensors)), path)
    # AttributeError too: a "history" or "optimizer" that is not a JSON object has no .items().
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's metadata is incomplete or malformed ({exc})") from exc


def _position(meta, tensors):
    """The position inside an epoch from the metadata and its starting weights' tensors (None: none)."""
    if meta is None:
        return None
    starts = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in tensors.items() if k.startswith("position.start."))
    return {**meta, "start_weights": [v for _, v in starts]}


def _validated(state, path):
    """``state`` once everything in it agrees with everything else; CheckpointError naming what does not.

    Checked before anything is built from it: the architecture against the stored parameters
    (nothing allocated beyond them), the optimizer's state arrays against the parameters, the
    generator states against numpy's PCG64, the History's lists against the epoch.
    """
    def bad(why):
        return CheckpointError(f"{path}: the checkpoint is inconsistent: {why}")

    try:
        expected = parameter_shapes(state.architecture)
    except Exception as exc:
        raise bad(str(exc)) from None
    stored = {name: (tuple(t.shape), str(t.dtype)) for name, t in state.parameters.items()}
    if stored != expected:
        raise bad("its parameters do not match its architecture")
    shapes = [shape for _, (shape, _) in sorted(expected.items(), key=lambda kv: _parameter_order(kv[0]))]
    for key, arrays in state.optimizer.get("state", {}).items():
        if [tuple(a.shape) for a in arrays] != shapes:
            raise bad(f"the optimizer's {key!r} arrays do not match the parameters")
    for generator in ([state.rng_state] if state.rng_state is not None else []) + list(state.dropout_states):
        try:
            np.random.PCG64().state = generator
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
            raise bad("a random generator state is not a PCG64 state") from None
    if isinstance(state.epoch, bool) or state.epoch < 0:
        raise bad(f"epoch {state.epoch}")
    lists = state.history
    if not isinstance(lists, dict) or not isinstance(lists.get("loss"), list) or any(
            not isinstance(v, list) or len(v) > state.epoch
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) for v in lists.values()):
        raise bad("its History must be lists of numbers, none longer than its epoch count")
    if len(lists["loss"]) != state.epoch:
        raise bad(f"its History has {len(lists['loss'])} epochs, its epoch is {state.epoch}")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
               for x in (state.lr_factor, state.base_lr)) or state.lr_factor <= 0:
        raise bad("its learning-rate factor and base must be finite, the factor positive")
    if state.position is not None:
        _check_position(state, bad)
    start = state.start_loss
    if start is not None and not (isinstance(start, (int, float)) and not isinstance(start, bool)
                                  and np.isfinite(start) and start >= 0):
        raise bad("its starting loss must be a finite non-negative number or null")
    return state


def _check_position(state, bad):
    """A position inside an epoch: the epoch after the last complete one, a positive block count,
    a finite loss total, a batch count, the report's head (or null), a PCG64 state and the epoch's
    starting weights, shaped as the parameters."""
    p = state.position
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    try:
        np.random.PCG64().state = p["epoch_rng"]
        ok = (whole(p["epoch"]) and p["epoch"] == state.epoch + 1 and whole(p["blocks"]) and p["blocks"] > 0
              and whole(p["batches"]) and p["batches"] >= 0 and isinstance(p["total"], (int, float))
              and np.isfinite(p["total"]) and (p["head"] is None or _head_ok(p["head"]))
              and state.rng_state is not None
              and [(a.shape, a.dtype) for a in p["start_weights"]] == _parameter_layout(state.parameters))
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        ok = False
    if not ok:
        raise bad(f"its position inside epoch {state.epoch + 1} is malformed")


def _head_ok(head):
    """The report's head kept in a position: at most HEAD rows of equal length, finite numbers."""
    if not isinstance(head, list) or not all(isinstance(row, list) for row in head):
        return False
    rows = np.asarray(head, dtype=np.float64)  # ragged rows or text: ValueError
    return rows.ndim == 2 and 0 < len(rows) <= HEAD and bool(np.isfinite(rows).all())


def _parameter_layout(parameters):
    """(shape, dtype) of each parameter, in the model's order."""
    return [(v.shape, v.dtype) for _, v in sorted(parameters.items(), key=lambda kv: _parameter_order(kv[0]))]


def _parameter_order(name):
    layer, key = name.split(".")
    return int(layer), key != "W"  # the model's order: layer by layer, W before b


class FolderLock:
    """An exclusive lock on a checkpoint folder while a run writes it: ``flock`` on ``DIR/.gradloop.lock``.

    A second run on the same folder is refused at once (CheckpointError naming the holder's
    process id) and never disturbs the first. The kernel drops the lock of a process that
    dies, so a dead run's lock is taken over by the next one. The lock file is removed on
    release. Platforms without ``fcntl`` (Windows) run unlocked.
    """

    def __init__(self, directory):
        self.directory, self._fd = os.fspath(directory), None

    @property
    def held(self):
        return self._fd is not None

    def acquire(self):
        try:
            import fcntl  # POSIX only: imported here so that the module loads on every platform
        except ImportError:
            return self
        path = os.path.join(self.directory, LOCK_NAME)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
                os.close(fd)
                raise CheckpointError(f"checkpoint folder {self.directory} is in use by another gradloop run "
                                      f"(process {holder}); wait for it to end, or choose another folder") from None
            # The holder may have released and removed the file between our open and our lock:
            # then we hold a lock on a file nobody else will open. Try again on the current one.
            try:
                current = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def release(self):
        if self._fd is None:
            return
        try:
            os.unlink(os.path.join(self.directory, LOCK_NAME))  # while still locked: no one holds a stale file
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


class CheckpointWriter(Callback):
    """Save the run every ``every`` epochs (and when training ends) into ``directory``.

    Mini-batches from a source: also every ``every_blocks`` blocks inside an epoch, and where the
    run stopped between two blocks.

    ``config`` (JSON-friendly) is stored with it, for a resuming caller to
    check that the data and options match. The folder is locked (:class:`FolderLock`)
    from train begin to train end; ``lock``: a FolderLock the caller already holds.
    """

    wants_records = False
    wants_blocks = True  # it checkpoints inside an epoch too

    def __init__(self, directory, every=1, config=None, lock=None, every_blocks=None):
        self.directory, self.every, self.config = directory, check("checkpoint_every", every), config
        self.every_blocks = None if every_blocks is None else check("checkpoint_every", every_blocks)
        self.path = None
        self._saved_epoch = self._pending = None
        self._lock, self._own_lock = lock, None

    def output_places(self):
        return [Place("CheckpointWriter directory", self.directory, folder=True, writes=(FILE_NAME, LOCK_NAME))]

    def on_train_begin(self, trainer):
        os.makedirs(self.directory, exist_ok=True)
        self._pending = self._saved_epoch = None
        if self._lock is None or not self._lock.held:
            self._own_lock = FolderLock(self.directory).acquire()
        # A process killed mid-write leaves its temporary file (the checkpoint itself is intact).
        # Only the lock's holder writes here, so no live run's file is among them.
        for name in os.listdir(self.directory):
            if name.startswith(f".{FILE_NAME}.") and name.endswith(".tmp"):
                os.remove(os.path.join(self.directory, name))

    def on_epoch_end(self, record, trainer):
        # The History is kept as list lengths, cut when written: copying every list each epoch
        # would cost O(epochs**2) (measured: 20,000 full-batch epochs of the linear model take
        # 0.2 s this way, 2.9 s with the copies).
        history = trainer.history.history
        state = _capture(trainer, self.config, {})  # its History's lists: cut from the live ones when written
        lengths = (history, {k: len(v) for k, v in history.items()})
        if trainer.epoch % self.every == 0:
            self._write(state, lengths)
        else:
            # Kept for train end: by then other callbacks (EarlyStopping restoring its best
            # weights) may have changed the model, and the checkpoint must be this epoch's.
            self._pending = (state, lengths)

    def on_block_end(self, position, trainer):
        """Between two blocks of a source's epoch: write the position every ``every_blocks`` blocks, and
        keep it for train end when the run stops here (Ctrl-C)."""
        due = self.every_blocks is not None and position["blocks"] % self.every_blocks == 0
        if due or trainer.stop_training:
            history = {k: list(v) for k, v in trainer.history.history.items()}
            state = _capture(trainer, self.config, history, dict(position))
            if due:
                self._write(state)
            else:
                self._pending = (state, None)

    def on_train_end(self, history, trainer):
        # However training ended (finished, stopped, interrupted, diverged): the last complete epoch.
        try:
            if self._pending is not None:
                self._write(*self._pending)
            elif self._saved_epoch is None and trainer.epoch == 0 and not trainer.failed:
                # A run of no epochs: its start. One that failed before its first epoch leaves the folder
                # as it was (an earlier run's checkpoint stays).
                self._write(capture(trainer, self.config))
        finally:
            if self._own_lock is not None:
                self._own_lock.release()
                self._own_lock = None

    def _write(self, state, lengths=None):
        """Save ``state``; ``lengths``: (the live History's lists, their lengths at the state's epoch), whose
        cut copies become its History."""
        if lengths is not None:
            lists, sizes = lengths
            state.history = {k: list(lists[k][:n]) for k, n in sizes.items()}
        self.path = save(self.directory, state)
        self._saved_epoch, self._pending = state.epoch, None


def _shape_of(architecture):
    """The architecture without seeds: a dropout seed is superseded by the generator state restored."""
    layers = [{k: v for k, v in layer.items() if k != "seed"} for layer in architecture.get("layers", [])]
    return {**architecture, "layers": layers}


def _describe(architecture):
    layers = architecture.get("layers", []) if isinstance(architecture, dict) else []
    parts = []
    for layer in layers:
        if layer.get("type") == "Dense":
            parts.append(f"Dense({layer.get('in_features')}, {layer.get('out_features')})")
        else:
            parts.append(str(layer.get("type")))
    return f"[{', '.join(parts)}] ({architecture.get('dtype')})"


def _none_to_nan(value):
    return float("nan") if value is None else value
