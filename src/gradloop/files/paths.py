"""Where a run reads and writes: no output may destroy an input or another output.

Every command and every file-writing callback names its places before any work
starts: the paths it reads (data, model file, checkpoint) and the paths it
writes (model file, log, checkpoint folder, report, plots). :func:`check_places`
resolves them by real path (symlinks followed, ``./x`` and ``x`` alike; hard
links through ``os.path.samefile``) and refuses, naming both places:

- an output that is an input;
- two outputs at one path, or an output inside an output folder;
- an output file that exists and is not a regular file (a folder, a device
  such as ``/dev/null``, a pipe), or an output folder that is a file;
- an output whose parent folder does not exist.

Nothing is read, trained or written before these checks pass.

Example:
    >>> check_places(inputs=[Place("DATA file", "data.csv")], outputs=[Place("--out", "data.csv")])
    Traceback (most recent call last):
    gradloop.errors.ConfigError: --out data.csv: is the DATA file itself (data.csv); writing it would destroy it: ...
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class Place:
    """One path a run reads or writes.

    label: how the user named it ("--out", "DATA", "JSONLinesLogger path").
    path: the path as given. folder: an output folder (a checkpoint folder, PNG plots)
    rather than a file. writes: for an output folder, the names of the files it writes
    inside (an input among them would be destroyed); for an input folder, the files read.
    parents: an output folder created with its missing parents (its parent need not exist).
    """

    label: str
    path: object
    folder: bool = False
    writes: tuple = ()
    parents: bool = False

    @property
    def shown(self):
        return f"{self.label} {os.fspath(self.path)}"


def _real(path):
    return os.path.realpath(os.fspath(path))


def _same(a, b):
    """Whether two paths name one file: same real path, or (both existing) the same inode."""
    if _real(a) == _real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path, folder):
    """Whether ``path`` lies inside ``folder`` (by real path), the folder itself excluded."""
    real, top = _real(path), _real(folder)
    return real != top and real.startswith(top.rstrip(os.sep) + os.sep)


def _files_of(place):
    """The concrete files a place stands for: itself, or the files it reads or writes inside a folder."""
    if place.folder or place.writes:
        return [os.path.join(os.fspath(place.path), name) for name in place.writes]
    return [os.fspath(place.path)]


def check_output(place: Place):
    """One output on its own: an existing parent folder; a regular file (or none) for a file, a folder for a folder."""
    path = os.fspath(place.path)
    if path == "":
        raise ConfigError(f"{place.label}: an empty path; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if not place.parents and not os.path.isdir(parent):
        raise ConfigError(f"{place.shown}: the folder {parent} does not exist")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{place.shown}: cannot be used ({exc.strerror})") from None
    if place.folder:
        if not stat.S_ISDIR(mode):
            raise ConfigError(f"{place.shown}: is a file, expected a folder")
    elif stat.S_ISDIR(mode):
        raise ConfigError(f"{place.shown}: is a folder, expected a file name")
    elif not stat.S_ISREG(mode):
        raise ConfigError(f"{place.shown}: is not a regular file (a device, a pipe or a socket); "
                          "give the name of a file to write")


def check_places(inputs=(), outputs=()):
    """Refuse, with a ConfigError naming both places, any output that would destroy an input or another output.

    inputs, outputs: iterables of :class:`Place` (None entries and None paths are skipped).
    """
    inputs = [p for p in inputs if p is not None and p.path is not None]
    outputs = [p for p in outputs if p is not None and p.path is not None]
    for out in outputs:  # what an existing output is (a file for a folder, a device) says most
        if os.path.lexists(os.fspath(out.path)):
            check_output(out)
    for out in outputs:
        for source in inputs:
            for read in _files_of(source) + ([os.fspath(source.path)] if source.writes else []):
                for written in _files_of(out) + ([os.fspath(out.path)] if out.folder else []):
                    if os.path.lexists(read) and _same(read, written):
                        raise ConfigError(f"{out.shown}: is the {source.label} itself ({os.fspath(read)}); "
                                          f"writing it would destroy it: give {out.label} another name")
    for i, first in enumerate(outputs):
        for second in outputs[i + 1:]:
            if _same(first.path, second.path):
                raise ConfigError(f"{second.shown}: is also {first.shown}; two outputs cannot share one path: "
                                  f"give {second.label} another name")
            for folder, other in ((first, second), (second, first)):
                if folder.folder and _inside(other.path, folder.path):
                    raise ConfigError(f"{other.shown}: lies inside the {folder.label} folder {os.fspath(folder.path)}; "
                                      f"give {other.label} a path outside it")
    for out in outputs:  # then the missing parent folders
        check_output(out)


def callback_places(callbacks):
    """The output places of callbacks that write files (their ``output_places()``), checked together.

    Raises ConfigError when fit starts, before any epoch: two callbacks aimed at one file, a
    logger aimed at a folder or a device, a checkpoint folder that is a file.
    """
    places = []
    for cb in callbacks:
        places.extend(cb.output_places())
    check_places(outputs=places)
    return places
