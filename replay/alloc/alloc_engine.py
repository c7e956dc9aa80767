"""The allocation replay loop: numba nopython code calling the process's malloc family directly.

The functions are declared as ``numba.types.ExternalFunction`` and resolved by symbol name when
the compiled code is loaded, so in a child started with ``LD_PRELOAD=libjemalloc.so.2`` they are
jemalloc's (``alloc_child`` checks which library provides each one). Every call is timed with the
CPU's cycle counter (``llvm.readcyclecounter``: rdtsc on x86-64), converted to nanoseconds with
CLOCK_MONOTONIC readings taken around each run of the loop.

The loop only passes the allocator pointers it returned in this run (slots resolved by
``alloc_program``); a free of a slot whose allocation failed here is skipped and counted. Memory
is written only inside the bytes a call returned: what ``--touch`` asks for (first byte, one byte
in every page the block covers, every byte), and for realloc only the bytes it added.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from traces.jit import njit

from replay.alloc.alloc_program import (A_ALIGNED_ALLOC, A_CALLOC, A_FREE, A_MALLOC, A_MEMALIGN,
                                        A_POSIX_MEMALIGN, A_PVALLOC, A_REALLOC, A_VALLOC)
from replay.engine.engine import _u8_ptr, _i64_ptr

_intp, _uintp, _i32, _i64 = types.intp, types.uintp, types.int32, types.int64
c_malloc = types.ExternalFunction("malloc", _intp(_uintp))
c_calloc = types.ExternalFunction("calloc", _intp(_uintp, _uintp))
c_realloc = types.ExternalFunction("realloc", _intp(_intp, _uintp))
c_free = types.ExternalFunction("free", types.void(_intp))
c_posix_memalign = types.ExternalFunction("posix_memalign", _i32(_intp, _uintp, _uintp))
c_aligned_alloc = types.ExternalFunction("aligned_alloc", _intp(_uintp, _uintp))
c_memalign = types.ExternalFunction("memalign", _intp(_uintp, _uintp))
c_valloc = types.ExternalFunction("valloc", _intp(_uintp))
c_pvalloc = types.ExternalFunction("pvalloc", _intp(_uintp))
c_clock_gettime = types.ExternalFunction("clock_gettime", _i32(_i32, _intp))

CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
PAGE = 4096

# params[]
P_TOUCH, P_SUBSTITUTE = 0, 1
N_PARAMS = 2
TOUCH_NONE, TOUCH_FIRST, TOUCH_PAGES, TOUCH_FULL = 0, 1, 2, 3
# P_SUBSTITUTE bits: the allocator lacks the function; the loop calls memalign(PAGE, ...) instead
SUBSTITUTE_VALLOC, SUBSTITUTE_PVALLOC = 1, 2

# counters[]
(C_TICKS, C_NS, C_UNUSED, C_TOUCH_BYTES, C_FAILED, C_FREE_SKIPPED, C_REALLOC_OF_FAILED,
 C_REALLOC_FAILED_KEPT, C_LOOP_START_REALTIME, C_LOOP_END_REALTIME, C_SCRATCH, C_CLOCK) = range(12)
N_COUNTERS = 14  # C_CLOCK, C_CLOCK + 1: a struct timespec


@intrinsic
def cycles(typingctx):
    """The CPU cycle counter (rdtsc on x86-64)."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return sig, codegen


@njit(cache=True, nogil=True)
def _clock_ns(which, clock):
    c_clock_gettime(which, clock)
    t = _i64_ptr(clock)
    return t[0] * 1000000000 + t[1]


@njit(cache=True, nogil=True)
def _touch(p, n, touch):
    """Write the block [p, p + n) as --touch says: its first byte, one byte in each page it
    covers, or every byte."""
    if n <= 0 or touch == TOUCH_NONE:
        return 0
    b = _u8_ptr(p)
    if touch == TOUCH_FIRST:
        b[0] = 1
        return 1
    if touch == TOUCH_PAGES:
        b[0] = 1
        written = 1
        offset = ((p | (PAGE - 1)) + 1) - p  # the next page boundary
        while offset < n:
            b[offset] = 1
            offset += PAGE
            written += 1
        return written
    for i in range(n):
        b[i] = 1
    return n


@njit(cache=True, nogil=True)
def run_allocations(code, slot, ref, size, arg, base, latency, failed, counters, params,
                    start, stop):
    """Run ops [start, stop): call the allocator, time each call, touch what it returned."""
    clock = counters.ctypes.data + 8 * C_CLOCK
    scratch = counters.ctypes.data + 8 * C_SCRATCH
    touch = params[P_TOUCH]
    substitute = params[P_SUBSTITUTE]
    if counters[C_LOOP_START_REALTIME] == 0:
        counters[C_LOOP_START_REALTIME] = _clock_ns(CLOCK_REALTIME, clock)
    mono0 = _clock_ns(CLOCK_MONOTONIC, clock)
    tick0 = cycles()
    for i in range(start, stop):
        c = code[i]
        n = size[i]
        if c == A_FREE:
            r = ref[i]
            p = 0
            if r >= 0:
                p = base[r]
                if p == 0:
                    counters[C_FREE_SKIPPED] += 1  # its allocation failed here: never got it
                    failed[i] = 2
                    continue
                base[r] = 0
            t0 = cycles()
            c_free(p)
            latency[i] = cycles() - t0
            continue
        grown_from = 0
        if c == A_MALLOC:
            t0 = cycles()
            p = c_malloc(n)
            t1 = cycles()
        elif c == A_CALLOC:
            t0 = cycles()
            p = c_calloc(1, n)
            t1 = cycles()
        elif c == A_REALLOC:
            r = ref[i]
            old = base[r] if r >= 0 else 0
            if r >= 0 and old == 0:
                counters[C_REALLOC_OF_FAILED] += 1  # realloc(NULL, n): a new allocation
            t0 = cycles()
            p = c_realloc(old, n)
            t1 = cycles()
            if r >= 0:
                if p == 0 and n > 0:
                    counters[C_REALLOC_FAILED_KEPT] += 1  # the old block stays valid
                else:
                    base[r] = 0
                    if old != 0:
                        grown_from = arg[i]
        elif c == A_POSIX_MEMALIGN:
            t0 = cycles()
            rc = c_posix_memalign(scratch, arg[i], n)
            t1 = cycles()
            p = _i64_ptr(scratch)[0] if rc == 0 else 0
        elif c == A_ALIGNED_ALLOC:
            t0 = cycles()
            p = c_aligned_alloc(arg[i], n)
            t1 = cycles()
        elif c == A_MEMALIGN:
            t0 = cycles()
            p = c_memalign(arg[i], n)
            t1 = cycles()
        elif c == A_VALLOC:
            t0 = cycles()
            if substitute & SUBSTITUTE_VALLOC:
                p = c_memalign(PAGE, n)
            else:
                p = c_valloc(n)
            t1 = cycles()
        else:  # A_PVALLOC
            t0 = cycles()
            if substitute & SUBSTITUTE_PVALLOC:
                p = c_memalign(PAGE, (n + PAGE - 1) // PAGE * PAGE if n > 0 else PAGE)
            else:
                p = c_pvalloc(n)
            t1 = cycles()
        latency[i] = t1 - t0
        base[slot[i]] = p
        if p == 0:
            if n > 0:
                failed[i] = 1
                counters[C_FAILED] += 1
            continue
        if n > grown_from and touch != TOUCH_NONE:
            counters[C_TOUCH_BYTES] += _touch(p + grown_from, n - grown_from, touch)
    counters[C_TICKS] += cycles() - tick0
    counters[C_NS] += _clock_ns(CLOCK_MONOTONIC, clock) - mono0
    counters[C_LOOP_END_REALTIME] = _clock_ns(CLOCK_REALTIME, clock)
    return stop


class AllocState:
    """The arrays one run of an allocation program mutates."""

    def __init__(self, program, touch: int, substitute: int):
        self.program = program
        self.base = np.zeros(max(program.slots, 1), np.int64)
        self.latency = np.zeros(program.ops, np.int64)
        self.failed = np.zeros(program.ops, np.int8)
        self.counters = np.zeros(N_COUNTERS, np.int64)
        self.params = np.zeros(N_PARAMS, np.int64)
        self.params[P_TOUCH] = touch
        self.params[P_SUBSTITUTE] = substitute
        # Written once now, so that the loop's own bookkeeping takes no page fault and no THP
        # while it runs: the faults measured are the allocator's and the touches'.
        for array in (self.base, self.latency, self.failed, self.counters):
            array.fill(1)
            array.fill(0)

    def run(self, start: int, stop: int) -> int:
        p = self.program
        return run_allocations(p.code, p.slot, p.ref, p.size, p.arg, self.base, self.latency,
                               self.failed, self.counters, self.params, start, stop)

    def ns_per_tick(self) -> float | None:
        ticks, ns = self.counters[C_TICKS], self.counters[C_NS]
        return ns / ticks if ticks > 0 and ns > 0 else None
