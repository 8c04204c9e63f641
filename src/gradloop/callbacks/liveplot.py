"""``LivePlot``: the loss curves of a run, redrawn in place in a Jupyter notebook while it trains.

One figure, shown once and then updated through an IPython display handle (no new
output per epoch), redrawn at most every ``interval`` seconds and once more at the
end. Outside a notebook (a script, a terminal IPython) it draws nothing and costs
nothing: the loop's fast paths stay on, since it reads only ``trainer.history``.

    >>> fit(model, X, y, loss="mse", optimizer=SGD(0.1), epochs=500, callbacks=[LivePlot()])
"""

from __future__ import annotations

import time

from ..constraints import check
from .base import Callback


def _notebook_display():
    """IPython's ``display`` when running in a notebook kernel (which can update outputs), else None."""
    try:
        from IPython import get_ipython  # lazy: IPython is there only where notebooks are
    except ImportError:
        return None
    shell = get_ipython()
    # A kernel's shell has a `kernel`; the terminal IPython has none, and its display cannot update.
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    from IPython.display import display

    return display


class LivePlot(Callback):
    """Loss, new loss and validation loss per epoch, one figure updated in place in a notebook.

    Args:
        interval: the least number of seconds between two redraws (default 0.5);
            the last epoch is always drawn.
        display: a function like ``IPython.display.display`` (called as
            ``display(obj, display_id=True)``, returning a handle with
            ``update(obj)``); default: IPython's, when running in a notebook kernel,
            and no plot at all elsewhere.

    ``shown`` counts the figures drawn (0 outside a notebook).
    """

    wants_records = False  # reads trainer.history: the loop keeps its fast paths

    def __init__(self, interval=0.5, display=None):
        self.interval = float(check("interval", interval, "LivePlot"))
        self._display = display
        self._handle = None
        self._last_draw = -float("inf")
        self.shown = 0

    def on_train_begin(self, trainer):
        display = self._display or _notebook_display()
        self._handle, self._last_draw, self.shown = None, -float("inf"), 0
        if display is not None:
            self._handle = display(self._image(trainer.history), display_id=True)
            self.shown = 1
            self._last_draw = time.monotonic()

    def on_epoch_end(self, record, trainer):
        if self._handle is not None and time.monotonic() - self._last_draw >= self.interval:
            self._draw(trainer.history)

    def on_train_end(self, history, trainer):
        if self._handle is not None:
            self._draw(history)  # the final state, whatever the interval

    def _draw(self, history):
        self._handle.update(self._image(history))
        self.shown += 1
        self._last_draw = time.monotonic()

    @staticmethod
    def _image(history):
        """The loss curves as an IPython PNG image: works with every notebook front end, and leaves no
        pyplot figure behind to be shown a second time when the cell ends."""
        from IPython.display import Image  # lazy: only in a notebook (or with a display given)

        from ..report.plots import _new_figure, plot_history, png_bytes

        fig = _new_figure(6.4, 4.0)
        ax = fig.add_subplot()
        if history.history.get("loss"):
            plot_history(history, ax)
        else:  # before the first epoch: the empty axes, titled
            ax.set(title="Loss per epoch (waiting for the first epoch)", xlabel="epoch", ylabel="loss")
        return Image(png_bytes(fig))
