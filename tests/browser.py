"""Headless Chromium for the report tests: where it is, a screenshot, and the DOM after a page's layout."""

import json
import re
import shutil
import subprocess

import pytest


def chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


# A test that needs the browser skips only where it is not installed (.ci/run installs it).
needs_chromium = pytest.mark.skipif(chromium() is None,
                                    reason="headless Chromium is not installed (Debian: apt-get install chromium)")


def _run(profile, width, height, *args):
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", f"--window-size={width},{height}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


def screenshot(page, shot, profile, width=1280, height=2000):
    """Render the HTML file ``page`` and write a PNG screenshot to ``shot``."""
    _run(profile, width, height, f"--screenshot={shot}", page.resolve().as_uri())


def dom(page, profile, width=1280, height=2000):
    """The DOM of the HTML file ``page`` as Chromium has it once loaded (scripts run)."""
    return _run(profile, width, height, "--dump-dom", page.resolve().as_uri()).stdout


# Written into the title of a copy of the page: the viewport, the page's width, and the box of each plot.
_PROBE = ("<script>const f=[...document.querySelectorAll('.plots figure')].map(e=>{const r=e.getBoundingClientRect();"
          "return [r.left,r.top,r.width]});document.title=JSON.stringify({viewport:innerWidth,"
          "width:document.documentElement.scrollWidth,figures:f})</script>")


def layout(page, probe, profile, width):
    """{viewport, width, figures: [[left, top, width], ...]} of the page laid out ``width`` pixels wide.

    The report forbids scripts (its Content-Security-Policy); the probe is a copy without that
    line, with a script that measures the laid-out page.
    """
    html = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", page.read_text(encoding="utf-8"))
    probe.write_text(html.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    title = re.search(r"<title>(.*?)</title>", dom(probe, profile, width, 1600), re.S)
    assert title is not None, "Chromium returned no DOM"
    return json.loads(title[1])
