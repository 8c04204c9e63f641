"""A trained model with everything needed to use it on raw data, and its file.

A :class:`ModelBundle` holds the network, the feature names and target, the
scaling statistics fitted on the training rows, and the class labels of a
classifier. ``predict`` takes raw feature columns and answers in the target's
units (or labels). ``save``/``load`` go through :mod:`gradloop.io`:
safetensors for the parameters, JSON metadata, atomic write, never pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError, GradloopError, ModelFileError
from .models import Sequential

# Metadata key of the SHA-256 over the tensors and the rest of the metadata. safetensors has no
# checksum: without it a flipped byte in a weight (or a digit in the scaling statistics)
# would load without complaint and predict wrong numbers.
CHECKSUM_KEY = "sha256"
# Keys the file layer (gradloop.io) adds after the checksum is taken; it validates them itself.
_UNHASHED = (CHECKSUM_KEY, "format", "format_version")


def _checksum(tensors, metadata):
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


@dataclass
class ModelBundle:
    """Network + feature names + target + scaling (+ classes).

    Attributes:
        model: the trained :class:`Sequential`.
        feature_names: the columns the model reads, in order.
        target: the target column's name.
        scaler: a :class:`gradloop.data.Standardizer` or None.
        classes: original class labels (index i is class i) for classifiers, else None.
        loss: the training loss's name (says how outputs are read).
        info: free-form JSON-friendly facts about training (epochs, lr, ...).
    """

    model: Sequential
    feature_names: list
    target: str
    scaler: object = None
    classes: list | None = None
    loss: str = "mse"
    info: dict = field(default_factory=dict)

    def _inputs(self, X):
        X = np.asarray(X, dtype=self.model.dtype)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise DataError(f"the model reads {len(self.feature_names)} features "
                            f"({', '.join(self.feature_names)}), got data of shape {X.shape}")
        return self.scaler.transform(X) if self.scaler is not None else X

    def predict(self, X):
        """Raw features (n, d) -> predictions (n,) in the target's units, or class labels for classifiers."""
        out = self.model.predict(self._inputs(X))
        if self.classes is not None:
            return np.asarray(self.classes, dtype=object)[out]
        return out[:, 0] if out.ndim == 2 and out.shape[1] == 1 else out

    def predict_proba(self, X):
        """Class probabilities (n, classes), columns in ``classes`` order."""
        return self.model.predict_proba(self._inputs(X))

    def predict_raw(self, X):
        """Network outputs (n, outputs) for raw features: values, or logits for classifiers."""
        return self.model.predict_raw(self._inputs(X))

    def linear_coefficients(self):
        """For a linear model: (weights (d, k), bias (k,)) in the original feature units."""
        layer = self.model.layers[0]
        W, b = layer.params["W"], layer.params.get("b")
        b = np.zeros(W.shape[1], W.dtype) if b is None else b
        if self.scaler is None:
            return W.copy(), b.copy()
        return self.scaler.unscale_linear(W, b)

    # ------------------------------------------------------------ file
    def save(self, path):
        """Write the bundle to ``path`` (safetensors + JSON metadata), atomically."""
        from . import __version__
        from .io import write_model_file

        metadata = {
            "gradloop_version": __version__,
            "architecture": self.model.config(),
            "feature_names": list(self.feature_names),
            "target": self.target,
            "scaler": None if self.scaler is None else self.scaler.to_dict(),
            "classes": self.classes,
            "loss": self.loss,
            "info": self.info,
        }
        tensors = self.model.state_dict()
        try:
            metadata[CHECKSUM_KEY] = _checksum(tensors, metadata)
        except (TypeError, ValueError):  # e.g. NaN in info: the writer below says what is wrong
            pass
        write_model_file(path, tensors, metadata)

    @classmethod
    def load(cls, path):
        """Read a bundle written by :meth:`save`; a file that is not one raises ModelFileError."""
        from .data import Standardizer
        from .io import read_model_file

        tensors, meta = read_model_file(path)
        # Files written before the checksum existed have none; those are trusted as before.
        stored = meta.get(CHECKSUM_KEY)
        if stored is not None:
            try:
                actual = _checksum(tensors, meta)
            except (TypeError, ValueError):
                actual = None
            if actual != stored:
                raise ModelFileError(f"{path}: the model file is corrupted (its SHA-256 checksum does not match "
                                     "its contents); write it again or retrain and save the model")
        try:
            model = Sequential.from_config(meta["architecture"])
            model.load_state_dict(tensors)
            features = [str(f) for f in meta["feature_names"]]
            scaler = None if meta.get("scaler") is None else Standardizer.from_dict(meta["scaler"])
            classes = meta.get("classes")
            if model.n_inputs != len(features) or (scaler is not None and len(scaler.mean_) != len(features)):
                raise ModelFileError("feature names, scaling and architecture disagree in size")
            bundle = cls(model, features, str(meta["target"]), scaler, classes, str(meta.get("loss", "mse")),
                         dict(meta.get("info") or {}))
        except ModelFileError as exc:
            raise ModelFileError(f"{path}: {exc}") from exc
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, GradloopError) and not isinstance(exc, ModelFileError):
                detail = str(exc)
            else:
                detail = f"missing or malformed entry {exc}"
            raise ModelFileError(f"{path}: the gradloop metadata is inconsistent ({detail}); "
                                 f"retrain and save the model again") from exc
        model.eval()
        return bundle
