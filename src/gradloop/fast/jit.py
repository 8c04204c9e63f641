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

import ctypes
import functools
import threading

import numpy as np

_JITABLE = set()  # plain functions numba already knows how to call from compiled code
_INTRINSICS_READY = False


def prefetch(array, row, col):
    """Ask the CPU to start loading the cache line of ``array[row, col]`` (2-D): a hint that changes
    no result. Compiled, it is LLVM's prefetch instruction; in plain Python it does nothing."""


def column_at(address, start, length):
    """The ``length`` float64 values at memory ``address`` from the ``start``-th on, as a 1-D array
    (a view, no copy). ``address``: the data of a contiguous float64 array that the caller keeps
    alive, e.g. one of several separate column buffers, which a compiled loop takes as one int64
    array of addresses (one compiled form for any number of columns). Compiled, a pointer cast;
    in plain Python, through ctypes."""
    return np.ctypeslib.as_array((ctypes.c_double * int(length)).from_address(int(address) + 8 * int(start)))


def _compile_intrinsics():
    """Teach numba :func:`prefetch` (an ``llvm.prefetch``, read, keep in every cache level, of the
    element's address, which the compiled loops call a few kilobytes ahead of the rows they read)
    and :func:`column_at`."""
    global _INTRINSICS_READY
    if _INTRINSICS_READY:
        return
    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic, overload

    @intrinsic
    def _prefetch(typingctx, array, row, col):
        def codegen(context, builder, signature, args):
            arytype = signature.args[0]
            ary = context.make_array(arytype)(context, builder, args[0])
            pointer = cgutils.get_item_pointer2(
                context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
                strides=cgutils.unpack_tuple(builder, ary.strides), layout=arytype.layout,
                inds=[args[1], args[2]], wraparound=False, boundscheck=False)
            byte_pointer, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]), "llvm.prefetch.p0i8")
            builder.call(fn, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return types.void(array, row, col), codegen

    @overload(prefetch)
    def _prefetch_overload(array, row, col):
        return lambda array, row, col: _prefetch(array, row, col)

    @intrinsic
    def _float64_pointer(typingctx, address):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return types.CPointer(types.float64)(types.intp), codegen

    @overload(column_at)
    def _column_at_overload(address, start, length):
        return lambda address, start, length: numba.carray(_float64_pointer(address + 8 * start), length)

    _INTRINSICS_READY = True


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

                    _compile_intrinsics()
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
