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
