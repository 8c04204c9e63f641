"""docs/chapter.ipynb: executed from top to bottom in a real kernel (nbclient with an ipykernel).

No cell may fail or write to stderr, and what each cell prints and returns must be what
the committed notebook shows (numbers to 1e-6: another BLAS may differ in the last bits),
so the outputs a reader sees on the repository page are the notebook's own.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "chapter.ipynb"
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _texts(cell):
    """What a code cell printed (stdout) and returned (text/plain), in order."""
    texts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            texts.append(("stream " + output.name, output.text))
        elif output.output_type in ("execute_result", "display_data"):
            texts.append((output.output_type, output.data.get("text/plain", "")))
    return texts


def _same_text(committed, executed):
    """The same words, and the same numbers to a relative 1e-6."""
    if NUMBER.split(committed) != NUMBER.split(executed):
        return False
    pairs = zip(NUMBER.findall(committed), NUMBER.findall(executed))
    return all(math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9) for a, b in pairs)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    committed = nbformat.read(NOTEBOOK, as_version=4)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    # Errors are collected, not raised at the first one: the test names every failing cell.
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path_factory.mktemp("notebook"))}})
    client.execute()
    return committed, notebook


def test_notebook_runs_without_an_error(executed):
    _, notebook = executed
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert len(code) >= 12
    failures = [(cell.source.splitlines()[0], output.get("ename") or output.get("text", "")[:300])
                for cell in code for output in cell.outputs
                if output.output_type == "error" or (output.output_type == "stream" and output.name == "stderr")]
    assert failures == []


def test_notebook_outputs_are_the_committed_ones(executed):
    committed, notebook = executed
    pairs = [(a, b) for a, b in zip(committed.cells, notebook.cells) if a.cell_type == "code"]
    assert all(a.source == b.source for a, b in pairs)
    for old, new in pairs:
        assert old.outputs, f"committed without its outputs: {old.source.splitlines()[0]!r}"
        old_texts, new_texts = _texts(old), _texts(new)
        assert [kind for kind, _ in old_texts] == [kind for kind, _ in new_texts], old.source
        for (_, a), (_, b) in zip(old_texts, new_texts):
            assert _same_text(a, b), f"{old.source.splitlines()[0]!r}:\ncommitted {a[:400]!r}\nexecuted  {b[:400]!r}"


def test_notebook_covers_the_chapter(executed):
    committed, notebook = executed
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    for needle in ("gradloop.model(", "gradloop.loss(", "gradloop.train(", "verbose=True", "gradloop.evaluate(",
                   "gradloop.least_squares(", "round_to=3", "except gradloop.DivergenceError", "sklearn:digits",
                   "LivePlot()"):
        assert needle in source, needle
    printed = "\n".join(text for cell in notebook.cells if cell.cell_type == "code" for _, text in _texts(cell))
    assert "New loss after the update: 0.2214438657" in printed  # the chapter's epoch 1
    assert "DivergenceError: training diverged at epoch 4" in printed
    accuracy = float(re.search(r"held-out accuracy (\S+)", printed)[1])
    assert accuracy > 0.95
    # LivePlot drew in the kernel: the digits cell shows its figure (updated in place, one output).
    digits = next(cell for cell in notebook.cells if "LivePlot()" in cell.source)
    images = [o for o in digits.outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == 1
