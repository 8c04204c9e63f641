"""What a caller hands the loop, as a source: the boundary between arrays and blocks.

:func:`as_source` takes a source as it is, Dask collections as a
:class:`~gradloop.data.dasksource.DaskSource` and arrays as an
:class:`~gradloop.data.sources.ArraySource`; :func:`source_for` also checks it against a model.
"""

from __future__ import annotations

from ..errors import ConfigError
from .dasksource import DaskSource
from .sources import ArraySource, Source


def is_dask(value):
    """Whether ``value`` is a Dask collection (array or DataFrame), without importing Dask."""
    return type(value).__module__.split(".")[0] in ("dask", "dask_expr") and hasattr(value, "dask")


def as_source(X, Y=None, **options):
    """X as a :class:`Source`: a source as it is, Dask arrays as a :class:`DaskSource`, arrays as an
    :class:`ArraySource` (memory-mapped ones are then read block by block)."""
    if isinstance(X, Source):
        if Y is not None:
            raise ConfigError("give the targets inside the source: Y must be None when X is a source")
        return X
    if Y is None:
        raise ConfigError("Y (the targets) is missing")
    if is_dask(X) or is_dask(Y):
        import dask.array as da  # lazy: Dask is an optional extra

        return DaskSource(da.asarray(X), da.asarray(Y), **options)
    return ArraySource(X, Y, **options)


def is_source_input(X, y):
    """Whether (X, y) is data read block by block: a :class:`Source` or Dask arrays."""
    return isinstance(X, Source) or is_dask(X) or is_dask(y)


def source_for(model, X, y):
    """(X, y) as a source whose dtype and columns match the model's (ConfigError if not)."""
    source = as_source(X, y)
    if source.dtype != model.dtype:
        raise ConfigError(f"the source's data is {source.dtype} but the model is {model.dtype}: give the "
                          "model or the source the other's dtype so the arithmetic runs in one precision")
    if source.n_features != model.n_inputs:
        raise ConfigError(f"the source has {source.n_features} features; the model reads {model.n_inputs}")
    return source
