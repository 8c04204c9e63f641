"""Data for the training loop: whole tables read into arrays, or sources read block by block.

- :mod:`gradloop.data.tables`: a CSV, Parquet, ``.npy`` or ``.npz`` file (or a scikit-learn
  data set) read whole and validated: :func:`read_table`, :func:`select_xy`, :func:`load_xy`.
- :mod:`gradloop.data.sources`: data bigger than memory or spread over a Dask cluster, as
  row blocks of (X, Y) with names, dtype and row count known before training:
  :class:`ArraySource` (memory-mapped arrays too), :func:`open_npy`;
  :mod:`gradloop.data.files`: :class:`ParquetSource`, :class:`CSVSource`;
  :mod:`gradloop.data.dasksource`: :class:`DaskSource`, and :func:`to_dask` for any source's blocks;
  :mod:`gradloop.data.convert`: :func:`as_source`, arrays at the boundary. A classifier's labels
  are listed in one pass and read as class indices by ``source.labelled()``
  (:mod:`gradloop.data.labels`).
- The split and the scaling (:mod:`gradloop.preprocessing`), importable from here too.
"""

from .convert import as_source
from .dasksource import DaskSource, to_dask
from .files import CSVSource, ParquetSource
from .sources import ArraySource, Source, open_npy
from .tables import (DEFAULT_TEST_SIZE, SKLEARN_DATASETS, SKLEARN_PREFIX, SUPPORTED, Dataset, Standardizer,
                     encode_labels, fingerprint, load_xy, read_table, select_features, select_xy,
                     train_test_split)

__all__ = ["ArraySource", "CSVSource", "DEFAULT_TEST_SIZE", "DaskSource", "Dataset", "ParquetSource",
           "SKLEARN_DATASETS", "SKLEARN_PREFIX", "SUPPORTED", "Source", "Standardizer", "as_source",
           "encode_labels", "fingerprint", "load_xy", "open_npy", "read_table", "select_features", "select_xy",
           "to_dask", "train_test_split"]
