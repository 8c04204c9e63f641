"""A trained model with everything needed to use it on raw data, and its file.

A :class:`ModelBundle` holds the network, the feature names and target, the
scaling statistics fitted on the training rows, and the class labels of a
classifier. ``predict`` takes raw feature columns and answers in the target's
units (or labels). ``save``/``load`` go through :mod:`gradloop.files.modelfile`:
safetensors for the parameters, JSON metadata, atomic write, never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data import Standardizer
from ..display import table
from ..errors import DataError, GradloopError, ModelFileError
from ..layers import Dense
from ..losses import LOSSES
from .modelfile import CHECKSUM_KEY, checksum_matches, content_checksum, read_model_file, write_model_file
from ..models import Sequential
from ..version import __version__

def _check_outputs(model, loss, classes):
    """The loss, the task, the class list and the number of outputs must tell one story."""
    if loss not in LOSSES:
        raise ModelFileError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    if LOSSES[loss].task != model.task:
        raise ModelFileError(f"loss {loss!r} trains a {LOSSES[loss].task} model, the architecture says {model.task}")
    if model.task == "regression":
        if classes is not None:
            raise ModelFileError("a regression model has no class list")
        return
    if not (isinstance(classes, list) and len(classes) >= 2
            and all(isinstance(c, (str, int, float, bool)) for c in classes)):
        raise ModelFileError(f"a {model.task} model needs a list of at least 2 class labels")
    if len({str(c) for c in classes}) != len(classes):
        raise ModelFileError("the class list holds a label twice")
    outputs = 1 if model.task == "binary" else len(classes)
    if model.n_outputs != outputs or (model.task == "binary" and len(classes) != 2):
        raise ModelFileError(f"a {model.task} model of {len(classes)} classes has {outputs} output(s), "
                             f"the architecture has {model.n_outputs}")


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

    def _repr_html_(self):
        sizes = [self.model.n_inputs] + [layer.out_features for layer in self.model.layers
                                         if isinstance(layer, Dense)]
        return table("Saved model", [("architecture", " - ".join(map(str, sizes))), ("loss", self.loss),
                                     ("features", ", ".join(self.feature_names)), ("target", self.target),
                                     ("classes", None if self.classes is None else ", ".join(map(str, self.classes))),
                                     ("standardized", self.scaler is not None),
                                     *((k, v) for k, v in self.info.items())])

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
            metadata[CHECKSUM_KEY] = content_checksum(tensors, metadata)
        except (TypeError, ValueError):  # e.g. NaN in info: the writer below says what is wrong
            pass
        write_model_file(path, tensors, metadata)

    @classmethod
    def load(cls, path):
        """Read a bundle written by :meth:`save`; a file that is not one raises ModelFileError."""
        tensors, meta = read_model_file(path)
        if not checksum_matches(tensors, meta):
            why = ("has no SHA-256 checksum" if meta.get(CHECKSUM_KEY) is None
                   else "its SHA-256 checksum does not match its contents")
            raise ModelFileError(f"{path}: the model file is corrupted ({why}); write it again or retrain "
                                 "and save the model")
        try:
            # Everything the file declares is checked against everything else before it is used.
            model = Sequential.from_file(meta["architecture"], tensors)
            features = meta["feature_names"]
            if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
                raise ModelFileError("feature_names must be a list of strings")
            scaler = None if meta.get("scaler") is None else Standardizer.from_dict(meta["scaler"])
            if model.n_inputs != len(features) or (scaler is not None and len(scaler.mean_) != len(features)):
                raise ModelFileError("feature names, scaling and architecture disagree in size")
            loss, classes = meta.get("loss", "mse"), meta.get("classes")
            _check_outputs(model, loss, classes)
            if not isinstance(meta["target"], str) or not isinstance(meta.get("info") or {}, dict):
                raise ModelFileError("target must be a string and info an object")
            bundle = cls(model, features, meta["target"], scaler, classes, loss, dict(meta.get("info") or {}))
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
