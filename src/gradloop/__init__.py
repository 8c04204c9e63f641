"""gradloop: a glass-box training loop for neural networks, on NumPy.

The chapter's API::

    >>> import numpy as np, gradloop
    >>> gradloop.model(np.array([[0.5]]), np.array([[1.0]]))
    array([[0.5]])

``train(X, Y, weights, lr, epochs)`` runs full-batch gradient descent with the
per-epoch report on request; ``fit_linear`` returns the whole run (history,
optimum, gap); ``fit`` trains any :mod:`gradloop.models` network.

Importing gradloop loads NumPy only; pandas, safetensors and rich are loaded
by the modules that read files, save models or draw progress.
"""

from .callbacks import Callback
from .chapter import LinearRun, evaluate, fit_linear, gradients, loss, model, train
from .errors import CheckpointError, ConfigError, DataError, DivergenceError, GradloopError, ModelFileError
from .glass.explain import Explanation, explain
from .glass.gradcheck import GradCheck, gradcheck
from .glass.lrfind import LRFind, lr_find
from .loop import EpochRecord, History, fit
from .sums import least_squares, lipschitz
from .version import __version__

__all__ = [
    "model", "loss", "train", "gradients", "fit_linear", "evaluate", "least_squares", "lipschitz",
    "LinearRun", "fit", "History", "EpochRecord", "Callback",
    "explain", "Explanation", "gradcheck", "GradCheck", "lr_find", "LRFind",
    "GradloopError", "DataError", "ConfigError", "ModelFileError", "DivergenceError", "CheckpointError",
    "__version__",
]
