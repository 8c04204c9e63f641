"""Where a command's data is read and where its arithmetic runs: whole in memory, block by block
from files (``--out-of-core``, or data larger than :data:`OUT_OF_CORE_SHARE` of the machine's
memory), or on Dask (``--dask local[:WORKERS]`` starts a ``distributed.LocalCluster`` on
127.0.0.1 that is closed at the end however the run ends; ``--dask tcp://HOST:PORT`` uses a
running scheduler).
"""

from __future__ import annotations

import contextlib
import glob
import os

import numpy as np

from ..constraints import machine_memory
from ..data import CSVSource, ParquetSource, open_npy, to_dask
from ..data.files import is_pattern, parquet_files
from ..errors import ConfigError, DataError

# A data file larger than this share of physical memory is streamed from disk even without
# --out-of-core: reading it whole (and its float64 copy) would leave too little for the rest.
OUT_OF_CORE_SHARE = 0.25
PARQUET = (".parquet", ".pq")


def wants_source(args):
    """Whether this command (train, predict, evaluate) reads its data block by block."""
    return (bool(getattr(args, "out_of_core", False)) or getattr(args, "dask", None) is not None
            or _larger_than_memory_share(args.data))


def _larger_than_memory_share(data):
    if data is None or str(data).startswith("sklearn:") or not os.path.isfile(str(data)):
        return _many_files(str(data))  # folders and globs: always
    memory = machine_memory()  # 0 where the platform does not say: then only the options decide
    return bool(memory) and os.path.getsize(str(data)) > OUT_OF_CORE_SHARE * memory


def _many_files(data):
    """Whether DATA names a folder or a glob (of Parquet files) rather than one file."""
    return os.path.isdir(data) or is_pattern(data)


def data_files(args):
    """The files DATA names: each Parquet file of a folder or a glob, else DATA itself."""
    data = str(args.data)
    return parquet_files(data) if _many_files(data) else [data]


def local_cluster(workers=None):
    """The ``distributed.LocalCluster`` that ``--dask local[:WORKERS]`` starts: worker processes of one
    thread each, every port on 127.0.0.1 (the status page's too: left to itself it takes 8787, which a
    second cluster on the machine then finds taken), and no work stealing. Every task of a run goes
    where its chunk already lies; stealing's bookkeeping runs in the scheduler, in this process, on
    the cores the workers use: a stream epoch over 8 chunks on 2 workers took 77-81 ms without it and
    89-95 ms with it."""
    import dask
    import distributed

    with dask.config.set({"distributed.scheduler.work-stealing": False}):
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                        dashboard_address="127.0.0.1:0", silence_logs=50)


@contextlib.contextmanager
def dask_client(spec):
    """A distributed Client for ``--dask`` (None without it): ``local[:WORKERS]`` starts a LocalCluster on
    127.0.0.1 (one thread per worker) that is closed on the way out, Ctrl-C included; ``tcp://HOST:PORT``
    connects to a running scheduler."""
    if spec is None:
        yield None
        return
    kind, where = parse_dask(spec)
    try:
        import distributed
    except ImportError:
        raise ConfigError("--dask needs Dask: pip install 'gradloop[dask]'") from None
    if kind == "local":
        if where is not None and where < int(spec.partition(":")[2]):
            print(f"gradloop: --dask {spec}: this machine has {where} cores, so {where} workers")
        with local_cluster(where) as cluster, distributed.Client(cluster) as client:
            yield client
    else:
        try:
            client = distributed.Client(where, timeout=SCHEDULER_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"--dask {spec}: no Dask scheduler answers there within {SCHEDULER_TIMEOUT} s "
                              f"({exc})") from None
        with client:
            yield client


SCHEDULER_TIMEOUT = 10  # seconds a tcp:// scheduler has to answer


def parse_dask(spec):
    """``--dask`` checked before anything starts: ("local", workers or None) or ("tcp", "tcp://HOST:PORT").

    ``local:N`` asks for N worker processes of one thread each; more than this machine's cores never
    run at once, so N is capped at the cores (:func:`dask_client` says so in a line).
    """
    from urllib.parse import urlsplit

    if spec == "local" or spec.startswith("local:"):
        workers = spec.partition(":")[2]
        if not workers:
            return "local", None
        if not workers.isdigit() or int(workers) < 1:
            raise ConfigError(f"--dask {spec}: the number of workers must be a positive integer, e.g. local:2")
        return "local", min(int(workers), os.cpu_count() or 1)
    if not spec.startswith("tcp://"):
        raise ConfigError(f"--dask {spec!r}: expected local, local:WORKERS or tcp://HOST:PORT")
    try:
        parts = urlsplit(spec)
        port = parts.port
    except ValueError as exc:  # "tcp://[::1", a port that is not a number
        raise ConfigError(f"--dask {spec}: not an address ({exc}); expected tcp://HOST:PORT") from None
    if not parts.hostname or port is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"--dask {spec}: expected tcp://HOST:PORT (a host and a port, nothing after them)")
    return "tcp", spec.rstrip("/")


def open_source(data, target, features, dtype, on_dask=False, labels=False, classes=None):
    """DATA as a source: Parquet (file, folder or glob), CSV or .npy. ``target`` None: the feature
    columns only (the rows a model predicts). ``labels``: the target holds a classifier's labels, read
    as indices into ``classes`` (given, or listed in a first pass over the target column). On Dask
    each block is read by a task: the out-of-core run's blocks, so its bits."""
    data, dtype = str(data), np.dtype(dtype)
    lowered = data.lower()
    is_parquet = lowered.endswith(PARQUET) or (_many_files(data) and (
        os.path.isdir(data) or all(f.lower().endswith(PARQUET) for f in glob.glob(data))))
    if is_parquet:
        source = ParquetSource(data, target, features, dtype=dtype, labels=labels)
    elif lowered.endswith(".csv"):
        source = CSVSource(data, target, features, dtype=dtype, labels=labels)
    elif lowered.endswith(".npy") and not on_dask:
        # Read in the run's (or the model's) dtype, as a file read whole is: each block converted as read.
        source = open_npy(data, target=target, features=features, dtype=dtype)
    elif on_dask:
        raise DataError(f"{data}: --dask reads Parquet (a file, a folder or a glob) or CSV; convert it")
    else:
        raise DataError(f"{data}: --out-of-core reads Parquet (a file, a folder or a glob), CSV or .npy")
    if labels:
        source = source.labelled(classes)
    return to_dask(source) if on_dask else source
