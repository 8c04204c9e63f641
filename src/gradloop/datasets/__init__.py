"""Small real data sets shipped with gradloop (no network needed).

- ``diabetes.csv``: 442 patients, 10 raw (unscaled) baseline measurements and
  ``progression``, a measure of disease progression one year later (Efron et
  al., "Least Angle Regression", 2004; as distributed with scikit-learn).
"""

from importlib.resources import files

from ..errors import ConfigError


def path(name="diabetes"):
    """Filesystem path of a bundled data set, e.g. ``path("diabetes")``."""
    resource = files(__name__) / f"{name}.csv"
    if not resource.is_file():
        raise ConfigError(f"no bundled data set {name!r}; known: diabetes")
    return str(resource)
