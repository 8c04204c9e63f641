"""Compiling plain Python loops with numba, on first use.

A few steps cost more in NumPy's separate passes and call overheads than in
their arithmetic: the streaming epoch's row loop (:mod:`gradloop.rowloop`)
and the SGD update of large parameters. Those are written as plain Python
loops and compiled by numba. numba is imported only when one of them is
first needed, so ``import gradloop`` stays NumPy-only, and ``cache=True`` keeps
the machine code on disk: a machine pays each compile (about a second) once.
"""

from __future__ import annotations

import functools


def compiled(**options):
    """Decorator: the function, compiled by ``numba.njit(nogil=True, cache=True, **options)`` at its first call.

    Division follows NumPy (``error_model="numpy"``: x / 0 is inf or NaN, no
    exception), which also leaves the loops free to use SIMD lanes.
    """

    def wrap(fn):
        @functools.cache
        def build():
            import numba

            return numba.njit(nogil=True, cache=True, error_model="numpy", **options)(fn)

        @functools.wraps(fn)
        def call(*args):
            return build()(*args)

        call.python = fn  # the uncompiled loop, for reading and for tests
        call.build = build
        return call

    return wrap
