"""Dask arrays and DataFrames as a source: one block per chunk of rows, read by the Dask workers.

:class:`DaskSource` holds Dask arrays X and Y; :func:`to_dask` puts any other source's blocks on
Dask (each block read by a task of its own). The Dask executor
(:class:`gradloop.fast.executors.DaskBlocks`) runs each chunk's arithmetic where the chunk lies.
Dask is an optional extra: it is imported only when a Dask source is built or read.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .sources import Source, _float_dtype, _names, _pick_columns, _target_dtype


class DaskSource(Source):
    """Dask arrays X (n, d) and Y (n,) or (n, k), one block per chunk of rows.

    X is rechunked to whole rows and Y to X's row chunks; chunk sizes are computed now if Dask
    does not know them. ``block(i)`` computes chunk i here; the Dask executor
    (:mod:`gradloop.fast.executors`) instead runs each chunk's arithmetic on the workers.
    """

    on_dask = True  # the block kernels send its chunks' work to the Dask workers

    def __init__(self, X, Y, *, feature_names=None, target_names=None, name="dask array", classes=None):
        if X.ndim != 2:
            raise DataError(f"{name}: X must be 2-D (n_samples, n_features), got {X.ndim}-D")
        if any(np.isnan(c) for c in X.chunks[0]):
            X = X.compute_chunk_sizes()
        if any(np.isnan(c) for c in Y.chunks[0]):
            Y = Y.compute_chunk_sizes()
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        if Y.shape[0] != X.shape[0]:
            raise DataError(f"{name}: X has {X.shape[0]} rows but Y has {Y.shape[0]}: they must match")
        self.X = X.rechunk({1: -1})
        self.Y = Y.rechunk({0: self.X.chunks[0], 1: -1})
        self.name, self.classes = name, classes
        self.dtype = _float_dtype(X.dtype)
        self.y_dtype = _target_dtype(Y.dtype, self.dtype)
        self.feature_names, self.target_names = _names(feature_names, target_names, X.shape[1], Y.shape[1])
        sizes = np.cumsum((0,) + tuple(int(c) for c in self.X.chunks[0]))
        self.bounds = [(int(a), int(b)) for a, b in zip(sizes[:-1], sizes[1:]) if b > a]
        self.chunk_index = [i for i, c in enumerate(self.X.chunks[0]) if c > 0]  # Dask's chunk of each block
        if not self.bounds:
            raise DataError(f"{name}: has no rows")

    @classmethod
    def from_dataframe(cls, frame, target, features=None):
        """A Dask DataFrame's target and feature columns (numeric) as a source."""
        columns = [str(c) for c in frame.columns]
        feature_idx, target_idx = _pick_columns(columns, target, features, "dask dataframe")
        feats, targets = [frame.columns[j] for j in feature_idx], [frame.columns[j] for j in target_idx]
        # One array of every needed column: separate selections can be partitioned differently.
        both = frame[feats + targets].to_dask_array(lengths=True)
        X, Y = both[:, :len(feats)], both[:, len(feats):]
        return cls(X, Y, feature_names=[str(f) for f in feats], target_names=[str(t) for t in targets],
                   name="dask dataframe")

    def head(self, rows):
        """The first rows, sliced where the first chunk is: only they travel here, not the chunk (one
        task, kept: a run asks for them more than once, and each task is a round trip to the cluster)."""
        import dask

        kept = self.__dict__.get("_head")
        if kept is None or len(kept[0]) < rows:
            x, y = self.chunks()[0]
            X, Y = dask.delayed(_first_rows, pure=True)(x, y, rows).compute()
            kept = self._head = (np.ascontiguousarray(X, dtype=self.dtype),
                                 np.ascontiguousarray(Y, dtype=self.y_dtype))
        return kept[0][:rows].copy(), kept[1][:rows].copy()

    def persisted(self):
        """This source with its chunks computed once and kept in the workers' memory (with a
        distributed Client; else in this process). Sources derived from it (subsets, scaling) then
        refer to those chunks: passes that persist two of them (the training and the validation
        blocks) never resubmit the reads they share, which the scheduler can take for two different
        tasks under one key (seen: "Detected different run_spec", then a failed gather)."""
        import dask

        X, Y = dask.persist(self.X, self.Y)
        return DaskSource(X, Y, feature_names=self.feature_names, target_names=self.target_names, name=self.name,
                          classes=self.classes)

    def scaled(self, scaler):
        """X standardized lazily, chunk by chunk on the workers."""
        mean, scale = (np.asarray(v, dtype=self.dtype) for v in (scaler.mean_, scaler.scale_))
        return DaskSource((self.X - mean) / scale, self.Y, feature_names=self.feature_names,
                          target_names=self.target_names, name=self.name, classes=self.classes)

    def subset(self, blocks):
        index = [self.chunk_index[int(i)] for i in blocks]
        return DaskSource(self.X.blocks[index], self.Y.blocks[index], feature_names=self.feature_names,
                          target_names=self.target_names, name=self.name, classes=self.classes)

    def chunks(self):
        """The Dask objects of each block: [(X chunk, Y chunk)] as delayed values, in row order."""
        xs, ys = self.X.to_delayed().ravel(), self.Y.to_delayed().ravel()
        return [(xs[i], ys[i]) for i in self.chunk_index]

    def _read(self, i):
        import dask

        x, y = self.chunks()[i]
        X, Y = dask.compute(x, y)
        return np.ascontiguousarray(X, dtype=self.dtype), np.ascontiguousarray(Y, dtype=self.y_dtype)


def _first_rows(X, Y, rows):
    return X[:rows].copy(), Y[:rows].copy()


def to_dask(source):
    """The same blocks as a :class:`DaskSource`, each read by a Dask task (on a cluster the files must
    be where the workers can read them): the same blocks give the same bits."""
    import dask
    import dask.array as da  # lazy: Dask is an optional extra

    xs, ys = [], []
    for i, (a, b) in enumerate(source.bounds):
        block = dask.delayed(source.block, pure=True)(i)
        xs.append(da.from_delayed(block[0], (b - a, source.n_features), dtype=source.dtype))
        ys.append(da.from_delayed(block[1], (b - a, source.n_outputs), dtype=source.y_dtype))
    return DaskSource(da.concatenate(xs), da.concatenate(ys), feature_names=source.feature_names,
                      target_names=source.target_names, name=source.name, classes=source.classes)
