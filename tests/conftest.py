"""Fixtures shared by the test modules."""

import pytest

from gradloop.cli import main


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` runs ``gradloop ARGV`` in-process: (exit status, stdout, stderr)."""
    def run(*argv):
        capsys.readouterr()
        status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture(autouse=True)
def python_loop_unless_asked(request, monkeypatch):
    """Silent linear runs take the Python loop, unless a test asks for the compiled one (``compiled``).

    In a process the compiled loop (gradloop.fast.silent) is taken once it has been loaded, and
    its sums differ from NumPy's in the last bits: without this, a test comparing a run bit for
    bit with the plain formulas would pass or fail by which tests ran before it.
    """
    if "compiled" not in request.fixturenames:
        from gradloop.fast import silent

        monkeypatch.setattr(silent, "worth_compiling", lambda epochs: False)


@pytest.fixture
def compiled(monkeypatch):
    """Silent linear runs of a few epochs or more take the compiled loop at once."""
    from gradloop.fast import silent

    monkeypatch.setattr(silent, "PYTHON_EPOCHS_BEFORE_LOADING", 0)
