"""The ``gradloop`` command line: ``main`` (parser and dispatch), the ``train`` command and its
``options`` (defaults, and what a resumed run takes from its checkpoint), and the other
``commands`` (evaluate, predict, report)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
