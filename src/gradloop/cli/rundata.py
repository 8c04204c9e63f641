"""The data of one ``gradloop train`` run, wherever it lives: read, split, scaled and held out, and
every number the run's pipeline needs of it (the step-size bound, the optimum, losses, metrics).

:func:`open_run_data` reads DATA whole (:class:`InMemory`) or as a source read block by block
(:class:`BlockByBlock`: out of core or on Dask, see :mod:`gradloop.cli.cluster`). Both answer the
same questions, so :mod:`gradloop.cli.train` is one pipeline for both. In memory the rows are
split and held out one by one; block by block the test and validation sets are whole blocks (a
row-level draw would read every block for each row), except that data of a single block is
split row by row as in memory, and a test fraction that rounds to no block still holds out one.
"""

from __future__ import annotations

import math

import numpy as np

from ..data import (DEFAULT_TEST_SIZE, ArraySource, Standardizer, fingerprint, load_xy, to_dask,
                    train_test_split)
from ..data.columns import text_feature_hint
from ..errors import ConfigError, DataError
from ..fast.blockwise import source_loss
from ..glass.lrfind import lr_find
from ..losses import fit_targets
from ..optimizers import get_optimizer
from ..sums import SourceSums, fit_standardizer, gap_to_optimum, least_squares, lipschitz
from ..validation import split_source_validation, split_validation
from .cluster import open_source
from .results import FINAL_ROWS, metrics_of, source_metrics

DIAGNOSE_SIZE = 10_000_000  # entries of X up to which the diagnosis computes the stable bound 2/L
SWEEP_ROWS = 100_000  # --lr find on a source sweeps in memory on whole training blocks, up to this many rows


def open_run_data(args, classify, client=None):
    """DATA as the run reads it: :class:`BlockByBlock` where ``args`` asks for a source (or ``client``,
    a Dask client, is given), else :class:`InMemory`."""
    from .cluster import wants_source

    return BlockByBlock(args, classify, client) if wants_source(args) else InMemory(args, classify)


class InMemory:
    """DATA read whole: rows split and held out one by one, scaled with the training rows' statistics.

    After :meth:`prepare`: ``X_train, y_train`` (before the validation split), ``X_fit, y_fit`` (the
    rows trained on), ``validation`` ((X_val, y_val) or None), ``X_test, y_test``, ``scaler``.
    """

    where = "in memory"
    batch_order = ""

    def __init__(self, args, classify):
        try:
            data = load_xy(args.data, args.target, args.features, labels=classify)
        except DataError as exc:
            # Text in the target under a regression loss: the user most likely wants a classifier.
            if (hinted := text_feature_hint(exc, args.target)) is not exc:
                raise hinted from None
            if not classify and f"column {str(args.target)!r}: " in str(exc) and "is not a number" in str(exc):
                raise DataError(f"{exc}; to predict labels train a classifier (--loss cross-entropy or bce)") \
                    from None
            raise
        self.data, self.fingerprint, self.name = data, fingerprint(data), args.data
        self.feature_names, self.target_name, self.classes = data.feature_names, data.target_name, data.classes
        self.n_features = data.X.shape[1]

    def prepare(self, args, classify):
        """Split, scale, convert to --dtype and hold out the validation rows."""
        data = self.data
        test_size = DEFAULT_TEST_SIZE if args.test_size is None else args.test_size
        train_idx, test_idx = train_test_split(len(data.X), test_size, args.seed, name="--test-size")
        X_train, self.y_train = data.X[train_idx], data.y[train_idx]
        X_test, self.y_test = data.X[test_idx], data.y[test_idx]
        self.scaler = None
        if args.standardize:
            self.scaler = Standardizer().fit(X_train, names=data.feature_names, source=args.data)
            X_train, X_test = self.scaler.transform(X_train), self.scaler.transform(X_test)
        dtype = np.dtype(args.dtype)
        self.X_train, self.X_test = X_train.astype(dtype), X_test.astype(dtype)
        # float32 holds up to 3.4e38: a larger value would become inf here and fail far away.
        if not (np.isfinite(self.X_train).all() and np.isfinite(self.X_test).all()
                and (classify or np.isfinite(self.y_train.astype(dtype)).all())):
            raise ConfigError(f"--dtype {args.dtype}: {args.data} holds values too large for {args.dtype}; "
                              "use --dtype float64" + ("" if args.standardize else " or --standardize"))
        # The validation rows are split off here, as fit would: the rows trained on are then known,
        # and the final training loss is measured on them.
        self.X_fit, self.y_fit, self.validation = self.X_train, self.y_train, None
        if args.val_split:
            self.X_fit, self.y_fit, self.validation = split_validation(self.X_train, self.y_train, args.val_split,
                                                                       args.seed, classify)

    # ------------------------------------------------------------ what the pipeline asks
    def rows_summary(self, args):
        rows = f"{len(self.X_train)} training rows ({len(self.X_test)} test"
        if args.val_split:
            rows += f"; {round(args.val_split * len(self.X_train))} of the training rows held out for validation"
        return rows + ")"

    def fit_inputs(self):
        """(X, y, validation_data) as :func:`gradloop.loop.fit` takes them."""
        return self.X_fit, self.y_fit, self.validation

    def check_linear(self):
        """Refuse features whose squares overflow: 1/L and the Gram sums would be inf."""
        X, names = self.X_train, self.feature_names
        if X.size:
            # 1/L needs X^T X: with values near sqrt(float max) it overflows to inf and the step to 0.
            big = np.abs(X).max(axis=0)
            top = float(big.max())
            if not math.isfinite(top * top * len(X)):  # (top ** 2 would raise OverflowError)
                j = int(np.argmax(big))
                raise ConfigError(f"{self.name}: column {names[j]!r}: feature values up to {big[j]:.3g} are too "
                                  "large for the linear model (their squares overflow); use --standardize or "
                                  "rescale them")

    def lipschitz(self):
        """L of the training rows' MSE (the linear model), as ``--lr auto`` takes it."""
        return lipschitz(self.X_train)

    def entries(self):
        return self.X_fit.size

    def feature_scales(self):
        """Each feature's root mean square as trained on: how big it is to the gradient."""
        X = self.X_fit
        return dict(zip(self.feature_names, np.sqrt(np.einsum("ij,ij->j", X, X) / max(len(X), 1)).tolist()))

    def optimum_loss(self):
        return least_squares(self.X_fit, self.y_fit).loss

    def gap(self, W, b):
        return gap_to_optimum(self.X_fit, self.y_fit, W, b, least_squares(self.X_fit, self.y_fit))

    def find_lr(self, args, model, loss):
        """--lr find: the finder's sweep on the training rows (model and optimizer left as they were)."""
        return _sweep(args, model, loss, self.X_train, self.y_train)

    def explain_rows(self):
        return self.X_fit, self.y_fit

    def final_loss(self, model, loss):
        """The loss of the model's weights on the rows it trained on, in evaluation mode."""
        return float(loss.value(fit_targets(model, loss, self.y_fit), model.predict_raw(self.X_fit)))

    def parts(self):
        """[(title, rows)] of the sets the run reports on: training, validation, test (those it has)."""
        test = (self.X_test, self.y_test) if len(self.X_test) else None
        return _parts((self.X_fit, self.y_fit), self.validation, test)

    def metrics(self, bundle, rows):
        return metrics_of(bundle, *rows)

    def head(self, rows):
        """The first FINAL_ROWS rows of a part, (X scaled, y): what the log's final line shows."""
        X, y = rows
        return X[:FINAL_ROWS], y[:FINAL_ROWS]

    def size(self, rows):
        return len(rows[1])


class BlockByBlock:
    """DATA as a source read block by block, here or on Dask: the test set is whole blocks drawn by
    --seed, standardization statistics come from one streaming pass, the linear model's numbers from
    the Gram sums (:class:`gradloop.sums.SourceSums`).

    After :meth:`prepare`: ``train`` (the blocks trained on), ``test`` and ``validation`` (sources or None),
    ``scaler``, ``sums`` (SourceSums of ``train``, for the linear model with MSE).
    """

    def __init__(self, args, classify, client):
        self.client = client
        source = open_source(args.data, args.target, args.features, args.dtype, client is not None, labels=classify)
        self.source, self.fingerprint = source, source.fingerprint()
        self.feature_names, self.target_name, self.classes = source.feature_names, source.target_names[0], \
            source.classes
        self.n_features = source.n_features
        self.where = f"Dask ({len(client.scheduler_info()['workers'])} workers)" if client is not None \
            else "out of core"
        self.batch_order = " (blocks in random order)"
        self.sums = self._optimum = None

    def prepare(self, args, classify):
        """Split, scale and hold out the validation blocks."""
        test_size = DEFAULT_TEST_SIZE if args.test_size is None else args.test_size
        train, test = split_test_blocks(self.source, test_size, args.seed)
        if test is not None and not isinstance(test, ArraySource):
            # Held-out blocks are read only after training: a bad value there is named before anything is
            # written (training blocks are checked as the first pass reads them).
            test.find_bad_value()
        if isinstance(train, ArraySource) and self.client is not None:  # one block's rows, split in memory
            train, test = to_dask(train), None if test is None else to_dask(test)
        self.scaler = None
        if args.standardize:
            self.scaler = fit_standardizer(train, self.client)
            train, test = train.scaled(self.scaler), test.scaled(self.scaler) if test is not None else None
        self.validation = None
        if args.val_split:  # whole training blocks, after the scaler saw them all (as in memory)
            train, self.validation = split_source_validation(train, args.val_split, args.seed, name="--val-split")
        self.train, self.test = train, test
        if args.model == "linear" and args.loss == "mse":
            self.sums = SourceSums(train, self.client)

    def rows_summary(self, args):
        held = "" if self.validation is None else \
            f"; {self.validation.n_rows} rows in {self.validation.n_blocks} block(s) for validation"
        return (f"{self.train.n_rows} training rows in {self.train.n_blocks} block(s) "
                f"({0 if self.test is None else self.test.n_rows} test rows{held}), {self.where}")

    def fit_inputs(self):
        return self.train, None, self.validation

    def check_linear(self):
        pass  # the Gram pass names a non-finite value where it finds one

    def lipschitz(self):
        return self.sums.lipschitz()

    def entries(self):
        return self.train.n_rows * self.n_features

    def feature_scales(self):
        """Each feature's root mean square, from the Gram sums' diagonal (formed once for the run)."""
        if self.sums is None:
            return None
        diagonal = np.diag(self.sums.S)[:self.n_features]
        return dict(zip(self.feature_names, np.sqrt(diagonal / max(self.train.n_rows, 1)).tolist()))

    def optimum(self):
        """The least-squares optimum of the training blocks (its loss costs a streaming pass: formed once)."""
        if self._optimum is None:
            self._optimum = self.sums.optimum()
        return self._optimum

    def optimum_loss(self):
        return self.optimum().loss

    def gap(self, W, b):
        return self.sums.gap(W, b, self.optimum())

    def find_lr(self, args, model, loss):
        """--lr find over a source. For the linear model with MSE the sweep's answer is exactly 1/L, here
        from the block sums of every training row; for any other model the in-memory sweep runs on a
        sample: whole training blocks drawn by --seed, up to SWEEP_ROWS rows."""
        if self.sums is not None:
            lr = 1.0 / self.sums.lipschitz()
            print(f"lr_find: exact for the linear model with MSE: 1/L = {lr:.6g} (from the block sums); "
                  f"the stable bound 2/L is {2 * lr:.6g}")
            return lr, None
        X, Y = self.train.sample(SWEEP_ROWS, args.seed)
        print(f"lr_find: sweeping on {len(X)} training rows ({SWEEP_ROWS} at most, whole blocks drawn by --seed)")
        return _sweep(args, model, loss, X, Y)

    def explain_rows(self):
        raise ConfigError("--explain writes out an epoch's step from the training rows in memory; it does not "
                          "run block by block (--out-of-core, --dask, or data beyond memory): leave it out")

    def final_loss(self, model, loss):
        return source_loss(model, loss, self.train, self.client)

    def parts(self):
        return _parts(self.train, self.validation, self.test)

    def metrics(self, bundle, source):
        return source_metrics(bundle.model, source, self.client)

    def head(self, source):
        X, Y = source.head(FINAL_ROWS)
        return X, Y.reshape(len(Y)) if Y.shape[1] == 1 else Y

    def size(self, source):
        return source.n_rows


def _parts(train, validation, test):
    """[(title, rows)] of the sets a run reports on, the ones it has (arrays or sources)."""
    named = [("training rows", train), ("validation rows", validation), ("test rows", test)]
    return [(title, rows) for title, rows in named if rows is not None]


def _sweep(args, model, loss, X, y):
    """The learning-rate finder's sweep on rows (X, y) in memory, printed: (its suggestion, the sweep)."""
    found = lr_find(model, X, y, loss=loss, optimizer=get_optimizer(args.optimizer, 1e-3, args.weight_decay),
                    batch_size=args.batch_size, seed=args.seed)
    print(found)
    return found.suggestion, found


def split_test_blocks(source, test_size, seed):
    """(training source, test source or None): ``round(test_size * blocks)`` whole blocks drawn by ``seed``,
    at least one where ``test_size`` > 0; a source of one block is split row by row, as in memory."""
    if source.n_blocks == 1 and test_size > 0:
        X, Y = source.block(0)
        source.check_block(X, Y, source.rows_read()[0][0])  # its rows are shuffled next: name the value now
        train_idx, test_idx = train_test_split(len(X), test_size, seed, name="--test-size")
        part = {"feature_names": source.feature_names, "target_names": source.target_names, "name": source.name,
                "dtype": source.dtype}
        train, test = ArraySource(X[train_idx], Y[train_idx], **part), ArraySource(X[test_idx], Y[test_idx], **part)
        train.classes = test.classes = source.classes
        return train, test if len(test_idx) else None
    train_blocks, test_blocks = train_test_split(source.n_blocks, test_size, seed, name="--test-size", unit="block")
    if test_size > 0 and len(test_blocks) == 0:
        # Fewer blocks than 1/test_size: round() holds out none, and the run would have no test set.
        order = np.random.default_rng(seed).permutation(source.n_blocks)
        train_blocks, test_blocks = order[1:], order[:1]
    test = source.subset(sorted(test_blocks)) if len(test_blocks) else None
    return source.subset(sorted(train_blocks)), test
