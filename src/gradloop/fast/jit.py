"""Compiling plain Python loops with numba, on first use.

A few steps cost more in NumPy's separate passes and call overheads than in
their arithmetic: the streaming epoch's row loop (:mod:`gradloop.fast.rowloop`)
and the optimizers' updates of large parameters. Those are written as plain
Python loops and compiled by numba. numba is imported only when one of them
is first needed, so ``import gradloop`` stays NumPy-only, and ``cache=True``
keeps the machine code on disk: a machine pays each compile (about a second)
once. numba keys that cache on the function's source file, not on the options
given here: after changing an option, delete ``__pycache__/*.nbi`` and ``*.nbc``.
"""

from __future__ import annotations

import functools
import threading


_JITABLE = set()  # plain functions numba already knows how to call from compiled code


def compiled(uses=(), **options):
    """Decorator: the function, compiled by ``numba.njit(nogil=True, cache=True, **options)`` at its first call.

    Division follows NumPy (``error_model="numpy"``: x / 0 is inf or NaN, no
    exception), which also leaves the loops free to use SIMD lanes. ``uses``: plain
    Python functions the loop calls (an optimizer's update rule, written once for
    numbers and arrays alike); numba learns to compile them at the same first call,
    and they stay ordinary functions for NumPy.
    """

    def wrap(fn):
        dispatcher = None
        lock = threading.Lock()  # threads may make the first call together: one compiles

        def build():
            nonlocal dispatcher
            with lock:
                if dispatcher is None:
                    import numba  # lazy, on purpose: heavy (~0.4 s), and small models never need it
                    from numba.extending import register_jitable

                    for helper in uses:
                        if helper not in _JITABLE:
                            register_jitable(helper)
                            _JITABLE.add(helper)
                    dispatcher = numba.njit(nogil=True, cache=True, error_model="numpy", **options)(fn)
            return dispatcher

        @functools.wraps(fn)
        def call(*args):
            return (dispatcher or build())(*args)

        call.python = fn  # the uncompiled loop, for reading and for tests
        call.loaded = lambda: dispatcher is not None  # compiled (or loaded from the cache) in this process
        return call

    return wrap
