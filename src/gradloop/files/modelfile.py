"""The gradloop model file: tensors in safetensors, metadata as JSON inside it.

A model file is a plain safetensors file. Its tensors are the model's arrays;
its header metadata (a ``dict[str, str]`` in safetensors) holds one key,
``"gradloop"``, whose value is a JSON object with everything else the model
needs (architecture, feature names, scaling statistics, target, versions...)
plus ``"format": "gradloop-model"`` and ``"format_version"``.

Nothing here ever pickles. Files are written to a temporary file in the
destination directory and renamed over the destination, so a crash or a
failure leaves the previous file as it was. Reading checks the file before
trusting it: whatever the bytes, :func:`read_model_file` either returns or
raises :class:`~gradloop.errors.ModelFileError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError, ModelFileError, one_line

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "METADATA_KEY",
    "read_model_file",
    "write_model_file",
]

#: The value of ``metadata["format"]`` in every gradloop model file.
FORMAT_NAME = "gradloop-model"
#: The newest format version this code writes and reads.
FORMAT_VERSION = 1
#: The safetensors header metadata key that holds gradloop's JSON metadata.
METADATA_KEY = "gradloop"

# safetensors reserves this header key for its own metadata.
_RESERVED_NAME = "__metadata__"
# dtype kinds we store: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"
_TRAIN_HINT = "train one with `gradloop train ... --out MODEL`"


# --------------------------------------------------------------------------
# checksum
# --------------------------------------------------------------------------

# Metadata key of the SHA-256 over the tensors and the rest of the metadata. safetensors has no
# checksum: without it a flipped byte in a weight (or a digit in the scaling statistics)
# would load without complaint and predict wrong numbers.
CHECKSUM_KEY = "sha256"
# Keys the file layer (gradloop.files.modelfile) adds after the checksum is taken; it validates them itself.
_UNHASHED = (CHECKSUM_KEY, "format", "format_version")


def content_checksum(tensors, metadata):
    """SHA-256 hex digest of the tensors (name, dtype, shape, little-endian bytes) and the metadata JSON."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        digest.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode("utf-8"))
        digest.update(a.tobytes())
    rest = {k: v for k, v in metadata.items() if k not in _UNHASHED}
    # JSON floats round-trip exactly, so the loaded metadata re-serializes to the same text.
    digest.update(json.dumps(rest, sort_keys=True, allow_nan=False, ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def checksum_matches(tensors, metadata) -> bool:
    """Whether ``metadata`` holds the checksum of these tensors and metadata. No checksum counts as a wrong one:
    without it, a changed weight or a forged shape would be read without complaint."""
    stored = metadata.get(CHECKSUM_KEY)
    try:
        return stored is not None and stored == content_checksum(tensors, metadata)
    except (TypeError, ValueError):  # metadata that is not JSON-serializable cannot match
        return False


# --------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------


def write_model_file(path, tensors: dict, metadata: dict) -> None:
    """Write ``tensors`` and ``metadata`` to the model file ``path``, atomically.

    Args:
        path: destination file (str or path-like). Its directory must exist.
        tensors: ``{name: numpy array}``; names are non-empty strings, arrays
            have a numeric (bool, integer or float) dtype. Arrays are stored
            C-contiguous, little-endian.
        metadata: a JSON-serializable dict (no NaN or infinity). A copy is
            stored with ``"format"`` and ``"format_version"`` added; the
            caller's dict is not changed.

    Raises:
        ConfigError: bad tensors or metadata, a missing destination directory,
            a destination that is a directory, or a failed write. On any
            failure the previous file at ``path`` (if any) is left untouched
            and no temporary file remains.
    """
    dest = Path(os.fspath(path))
    payload = _serialize(dest, tensors, metadata)

    if dest.is_dir():
        raise ConfigError(
            f"cannot write model file {dest}: it is a directory; give a file path such as {dest / 'model.safetensors'}"
        )
    directory = dest.parent
    if not directory.is_dir():
        raise ConfigError(
            f"cannot write model file {dest}: directory {directory} does not exist; create it first"
        )
    _atomic_write(dest, payload)


def finite_json(value):
    """``value`` with every non-finite float (a diverged run's loss) replaced by None: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def json_line(obj) -> str:
    """One line of strict JSON (a log line): non-finite numbers are written as null."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:  # the rare line with a NaN or infinity: clean it only then
        return json.dumps(finite_json(obj), allow_nan=False)


def atomic_write_bytes(path, payload: bytes, what: str = "file") -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename: never half-written.

    Raises ConfigError (naming ``what`` and the path) if the folder is missing or the write fails.
    """
    dest = Path(os.fspath(path))
    if dest.is_dir() or not dest.parent.is_dir():
        problem = "it is a directory" if dest.is_dir() else f"directory {dest.parent} does not exist"
        raise ConfigError(f"cannot write {what} {dest}: {problem}")
    _atomic_write(dest, payload, what)


def _serialize(dest: Path, tensors, metadata) -> bytes:
    """Validate and serialize everything to bytes before touching the disk."""
    if not isinstance(tensors, dict):
        raise ConfigError(
            f"cannot write model file {dest}: tensors must be a dict of name -> numpy array, "
            f"got {type(tensors).__name__}"
        )
    if not isinstance(metadata, dict):
        raise ConfigError(f"cannot write model file {dest}: metadata must be a dict, got {type(metadata).__name__}")

    arrays: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"cannot write model file {dest}: tensor names must be non-empty strings, got {name!r}")
        if name == _RESERVED_NAME:
            raise ConfigError(
                f"cannot write model file {dest}: tensor name {name!r} is reserved by safetensors; rename it"
            )
        if not isinstance(value, np.ndarray):
            raise ConfigError(
                f"cannot write model file {dest}: tensor {name!r} must be a numpy array, got {type(value).__name__}"
            )
        if value.dtype.kind not in _NUMERIC_KINDS:
            raise ConfigError(
                f"cannot write model file {dest}: tensor {name!r} has dtype {value.dtype}, "
                "not a bool, integer or float dtype"
            )
        # np.ascontiguousarray would turn a 0-d array into shape (1,)
        arrays[name] = np.asarray(value, dtype=value.dtype.newbyteorder("<"), order="C")

    stored = dict(metadata)
    stored["format"] = FORMAT_NAME
    stored["format_version"] = FORMAT_VERSION
    try:
        text = json.dumps(stored, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(
            f"cannot write model file {dest}: metadata is not JSON-serializable ({one_line(exc)})"
        ) from exc

    from safetensors.numpy import save  # lazy: keep `import gradloop` light

    try:
        return save(arrays, metadata={METADATA_KEY: text})
    except Exception as exc:  # SafetensorError is not a ValueError
        raise ConfigError(f"cannot write model file {dest}: {one_line(exc)}") from exc


def _atomic_write(dest: Path, payload: bytes, what: str = "model file") -> None:
    """Write ``payload`` to a temp file beside ``dest``, fsync, rename over it."""
    with atomic_file(dest, what) as handle:
        handle.write(payload)


@contextlib.contextmanager
def atomic_file(dest, what="file"):
    """A binary handle on a temp file beside ``dest``, renamed over it (after an fsync) when the block
    ends without an error: written piece by piece (predictions block by block), never half-written.
    On an error the temp file is removed and ``dest`` is as it was."""
    dest = Path(os.fspath(dest))
    if dest.exists() and not dest.is_file() and not dest.is_dir():
        # The rename would replace a device or a pipe by a file (and /dev/null needs root to restore).
        raise ConfigError(f"cannot write {what} {dest}: it is not a regular file (a device, a pipe or a socket)")
    directory = dest.parent
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"cannot write {what} {dest}: {one_line(exc)}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            _set_default_mode(handle.fileno(), dest)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, dest)
    except BaseException as exc:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise ConfigError(
                f"cannot write {what} {dest}: {one_line(exc)}; the previous file is unchanged"
            ) from exc
        raise
    _fsync_directory(directory)


def _set_default_mode(fd: int, dest: Path) -> None:
    """Give the temp file (0600 from mkstemp) the mode a normal file would get."""
    if not hasattr(os, "fchmod"):
        return
    try:
        mode = dest.stat().st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_current_umask()
    try:
        os.fchmod(fd, mode)
    except OSError:
        pass


def _current_umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable where the platform allows it (best effort)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------


def read_model_file(path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a gradloop model file.

    Returns:
        ``(tensors, metadata)``: fresh writable numpy arrays by name, and the
        stored metadata dict (including ``"format"`` and ``"format_version"``).

    Raises:
        ModelFileError: for any file that is missing, unreadable, empty,
            truncated, corrupted, not a gradloop model, or of a newer format
            version. No other exception escapes for any file content.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except FileNotFoundError as exc:
        raise ModelFileError(f"model file {name} does not exist; check the path, or {_TRAIN_HINT}") from exc
    except IsADirectoryError as exc:
        raise ModelFileError(
            f"model file {name} is a directory, not a file; give the path of the model file inside it"
        ) from exc
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {name}: {one_line(exc)}") from exc
    except MemoryError as exc:
        raise ModelFileError(f"cannot read model file {name}: too large to be a gradloop model") from exc

    if os.path.isdir(name):  # some platforms open directories without error
        raise ModelFileError(f"model file {name} is a directory, not a file; give the path of the model file inside it")
    return _parse(name, data)


def _parse(name: str, data: bytes) -> tuple[dict[str, np.ndarray], dict]:
    corrupt = f"; the file is damaged: write it again or {_TRAIN_HINT}"
    if not data:
        raise ModelFileError(f"model file {name} is empty; it was not written completely: {_TRAIN_HINT}")
    if len(data) < 8:
        raise ModelFileError(
            f"model file {name} is truncated ({len(data)} bytes, too short for a safetensors header){corrupt}"
        )

    header_len = int.from_bytes(data[:8], "little")
    if header_len > len(data) - 8:
        raise ModelFileError(
            f"model file {name} is truncated or not a safetensors file "
            f"(header says {header_len} bytes, only {len(data) - 8} follow){corrupt}"
        )
    try:
        header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelFileError(
            f"model file {name} is not a safetensors file or its header is corrupted "
            f"(header is not valid JSON){corrupt}"
        ) from exc
    if not isinstance(header, dict):
        raise ModelFileError(f"model file {name} has a corrupted safetensors header (not a JSON object){corrupt}")

    metadata = _parse_metadata(name, header)
    tensors = _load_tensors(name, data, header, corrupt)
    return tensors, metadata


def _parse_metadata(name: str, header: dict) -> dict:
    not_ours = f"model file {name} is not a gradloop model file"
    st_meta = header.get(_RESERVED_NAME)
    if not isinstance(st_meta, dict) or METADATA_KEY not in st_meta:
        raise ModelFileError(f"{not_ours} (no gradloop metadata); {_TRAIN_HINT}")
    text = st_meta[METADATA_KEY]
    if not isinstance(text, str):
        raise ModelFileError(f"{not_ours} (its gradloop metadata is not a string); {_TRAIN_HINT}")
    try:
        metadata = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(
            f"model file {name} has corrupted gradloop metadata (not valid JSON); write it again or {_TRAIN_HINT}"
        ) from exc
    if not isinstance(metadata, dict):
        raise ModelFileError(
            f"model file {name} has corrupted gradloop metadata (not a JSON object); write it again or {_TRAIN_HINT}"
        )
    if metadata.get("format") != FORMAT_NAME:
        raise ModelFileError(
            f"{not_ours} (format is {_short(metadata.get('format'))}, expected {FORMAT_NAME!r}); {_TRAIN_HINT}"
        )
    version = metadata.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"model file {name} has an invalid format_version {_short(version)}; write it again or {_TRAIN_HINT}"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"model file {name} has format_version {version}, newer than this gradloop supports "
            f"(up to {FORMAT_VERSION}); upgrade gradloop to read it"
        )
    return metadata


def _load_tensors(name: str, data: bytes, header: dict, corrupt: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load  # lazy: keep `import gradloop` light

    try:
        loaded = load(data)
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except KeyError as exc:  # a dtype safetensors knows but numpy has no type for (BF16, F8_*)
        raise ModelFileError(
            f"model file {name} holds a tensor of unsupported dtype {_short(exc.args[0] if exc.args else None)}; "
            f"{_TRAIN_HINT}"
        ) from exc
    except BaseException as exc:  # SafetensorError, and pyo3's PanicException (a BaseException)
        raise ModelFileError(f"model file {name} is corrupted ({one_line(exc)}){corrupt}") from exc

    tensors: dict[str, np.ndarray] = {}
    for key in header:
        if key == _RESERVED_NAME:
            continue
        array = loaded.get(key)
        if not isinstance(array, np.ndarray):
            raise ModelFileError(f"model file {name} is corrupted (tensor {key!r} could not be read){corrupt}")
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise ModelFileError(
                f"model file {name} holds tensor {key!r} of unsupported dtype {array.dtype}; {_TRAIN_HINT}"
            )
        tensors[key] = np.array(array, dtype=array.dtype.newbyteorder("="), copy=True, order="C")
    return tensors


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
