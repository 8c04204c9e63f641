"""Run reports: the HTML page (``page``) and its plots (``plots``), drawn from a run's log or its
History. matplotlib loads only when a figure is drawn.
"""

from .page import figures, read_log, render_html
from .plots import plot_history

__all__ = ["figures", "plot_history", "read_log", "render_html"]
