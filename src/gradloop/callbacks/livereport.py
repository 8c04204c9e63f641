"""``LiveReport``: the run's HTML report, kept current on disk while it trains; no server needed.

The page is written when training starts and rewritten (atomically: a reader never sees
half a page) every few seconds. While the run is live the page says which epoch it has
reached and reloads itself; when the run ends the page is rewritten once more as the
static report, the same page ``gradloop report`` draws from the run's log.

    >>> fit(model, X, y, ..., callbacks=[LiveReport("run.html")])   # open run.html in a browser
"""

from __future__ import annotations

import json
import os
import time

from ..constraints import check
from ..files.modelfile import atomic_write_bytes, json_line
from ..files.paths import Place
from .base import Callback

REFRESH_SECONDS = 3  # how often a live page reloads itself
# Drawing the page takes a while (a few plots); it is redrawn at most this often relative to that
# cost, so a fast run does not spend more than about a fifth of its time on its report.
COST_FACTOR = 4.0


class LiveReport(Callback):
    """Write the HTML report at the start of training, rewrite it every ``interval`` seconds, and
    write the final static page at the end.

    A page already at ``path`` (the last run's) is replaced once the first epoch has run, not
    before, and a run that ends before its first epoch writes no page (it removes the one it
    wrote at its start): a run that fails on its input leaves the last report as it was.

    Args:
        path: the HTML file (its folder must exist).
        interval: the least number of seconds between rewrites (default 3); a page that
            takes long to draw is rewritten less often (at most a fifth of the run's time).
        title: the line under the heading (default: the file's name).
        feature_names: names of the inputs, for the weights' legend.
        records: epoch records already logged (dicts as :func:`gradloop.report.page.read_log`
            gives), for a resumed run: those after the resumed epoch are dropped.
        finish_later: leave the final page to a call of :meth:`finish` (the command line
            does, to add the evaluation); otherwise it is written when training ends.
    """

    def __init__(self, path, interval=REFRESH_SECONDS, title=None, feature_names=None, records=(),
                 finish_later=False):
        self.path = path
        self.interval = float(check("interval", interval, "LiveReport"))
        self.title = title if title is not None else os.path.basename(os.fspath(path))
        self.feature_names = feature_names
        self.records = list(records)
        self.finish_later = finish_later
        self.writes = 0  # pages written, live and final
        self._epochs, self._first, self._next_write, self._created = 0, 0, 0.0, False

    def output_places(self):
        return [Place(f"{type(self).__name__} path", self.path)]

    def on_train_begin(self, trainer):
        self._epochs, self._first = trainer.epochs, trainer.epoch
        self.records = [r for r in self.records if r["epoch"] <= trainer.epoch]
        # A page already there is replaced only once an epoch has run: a run that fails on its
        # input (a non-finite starting loss) must not destroy the last run's report.
        self._created = not os.path.exists(self.path)
        if self._created:
            self._write(live=True)

    def on_epoch_end(self, record, trainer):
        # Through JSON, as a log line would be read back: the live page draws what the final one will.
        self.records.append(json.loads(json_line(record.to_dict(tensors=False))))
        if (self.writes == 0 or time.monotonic() >= self._next_write) and trainer.epoch < trainer.epochs:
            self._write(live=True)

    def on_train_end(self, history, trainer):
        if not self.finish_later:
            self.finish()

    @property
    def ran_epochs(self):
        """Whether this run (not the one it resumed) completed an epoch."""
        return any(r["epoch"] > self._first for r in self.records)

    def finish(self, final=None, records=None, ended=None):
        """Write the static page: ``records`` (default: the epochs seen) and the log's ``final`` line;
        given a log's ``records``, the page ``gradloop report`` draws from that log; ``ended``: how a run
        that did not finish ended, said on the page. A run that ended before its first epoch writes
        none, and removes the page it wrote at its start."""
        if not self.ran_epochs:
            if self.writes and self._created and os.path.exists(self.path):
                os.remove(self.path)
            return
        if records is not None:  # a log's: the page is the one its report draws, names from its final line
            self.records, self.feature_names = list(records), None
        self._write(live=False, final=final, ended=ended)

    def _write(self, live, final=None, ended=None):
        from ..report.page import figures, render_html  # lazy: matplotlib is imported to draw, not to train

        started = time.monotonic()
        figs = figures(self.records, final, self.feature_names) if self.records else {}
        status = {"epochs": self._epochs, "refresh": REFRESH_SECONDS} if live else None
        page = render_html(self.records, final, figs, title=self.title, live=status, ended=ended)
        atomic_write_bytes(self.path, page.encode("utf-8"), "report")
        self.writes += 1
        cost = time.monotonic() - started
        self._next_write = time.monotonic() + max(self.interval, COST_FACTOR * cost)
