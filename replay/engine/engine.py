"""The native replay loop: numba nopython code calling libc directly, no Python per event.

libc functions are declared as ``numba.types.ExternalFunction`` (resolved by symbol name), so the
compiled code is cacheable across runs, unlike ctypes function pointers. Pointers are plain
integers; ``_u8_ptr``/``_i64_ptr`` turn them into typed pointers for touching and reading memory.

Safety rules the loop keeps (the compiler guarantees the rest):
- MAP_FIXED is only used inside a mapping this replay created (OP_MMAP_FIXED_IN, and the
  PROT_NONE window of an emulated THP-aligned placement) or inside the brk heap's own
  reservation (OP_HEAP_FREE), and never again once a call there failed;
- memory is only read or written right after a successful call that mapped it, or while the
  mapping is known intact; any failed call on a mapping "taints" it and its memory is never
  touched again.
"""

from __future__ import annotations

import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from traces.jit import njit
from traces.schema import PMD_SIZE

from replay.engine.program import (ACCESS_BEFORE, ID_MAPPED, ID_TAINTED, LOCKSTEP, OP_HEAP_FREE,
                                   OP_HEAP_GROW, OP_HEAP_RESERVE, OP_MADVISE, OP_MMAP,
                                   OP_MMAP_FIXED_IN, OP_MPROTECT, OP_MREMAP, OP_MUNMAP, OP_TOUCH,
                                   PLACE_ALIGNED, PLACE_KERNEL, PLACE_MASK, PLACE_PLAIN,
                                   THP_ADVISE, TOUCH_READ, TOUCH_WRITE)

_intp, _uintp, _i32, _i64 = types.intp, types.uintp, types.int32, types.int64
c_mmap = types.ExternalFunction("mmap", _intp(_intp, _uintp, _i32, _i32, _i32, _i64))
c_munmap = types.ExternalFunction("munmap", _i32(_intp, _uintp))
c_mremap = types.ExternalFunction("mremap", _intp(_intp, _uintp, _uintp, _i32, _intp))
c_madvise = types.ExternalFunction("madvise", _i32(_intp, _uintp, _i32))
c_mprotect = types.ExternalFunction("mprotect", _i32(_intp, _uintp, _i32))
c_clock_gettime = types.ExternalFunction("clock_gettime", _i32(_i32, _intp))
c_errno_location = types.ExternalFunction("__errno_location", types.CPointer(_i32)())
c_sched_yield = types.ExternalFunction("sched_yield", _i32())
c_getrusage = types.ExternalFunction("getrusage", _i32(_i32, _intp))

CLOCK_MONOTONIC = 1
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4
PAGE = 4096
PMD = PMD_SIZE
MAP_FIXED = 0x10
MADV_GUARD_INSTALL = 102
PROT_NONE, PROT_RW = 0, 3
HEAP_RESERVE_FLAGS = 0x02 | 0x20 | 0x4000  # MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
RUSAGE_THREAD = 1
RU_MINFLT_WORD = 8  # struct rusage: two timevals (4 words), maxrss, ixrss, idrss, isrss, minflt

# The emulator's padding window: no access, no memory reserved, never populated.
WINDOW_FLAGS = 0x02 | 0x20 | 0x4000  # MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE
ZERO_WINDOW_FLAGS = 0x02 | 0x4000    # MAP_PRIVATE | MAP_NORESERVE, of /dev/zero

# params[]
(P_TOUCH, P_ACCESS_KIND, P_ACCESS_AMOUNT, P_THP_ADVICE, P_PAD_PMD_MULTIPLES, P_PLAIN_BY_HINT,
 P_TOPDOWN_FIX, P_ZERO_FD, P_HEAP_ID, P_HEAP_HINT) = range(10)
N_PARAMS = 10
TOUCH_NONE, TOUCH_FIRST, TOUCH_PAGES, TOUCH_FULL = 0, 1, 2, 3
ACCESS_NONE, ACCESS_STREAM, ACCESS_RANDOM, ACCESS_LOCKSTEP = 0, 1, 2, 3

# counters[]
(C_TOUCH_BYTES, C_TOUCH_NS, C_ACCESS_BYTES, C_ACCESS_NS, C_ACCESS_READS, C_CHECKSUM,
 C_POLICY_CALLS, C_POLICY_FAILED, C_LIVE_BYTES, C_RNG, C_RUNTIME_SKIPPED, C_N_LOCKSTEP,
 C_THP_ADVICE_FAILED, C_ENGINE_NS, C_WAIT_NS, C_POLICY_NS, C_MMAP_NS, C_HEAP_MINFLT,
 C_HEAP_TOUCH_BYTES, C_CLOCK) = range(20)
C_RUSAGE = C_CLOCK + 2  # 18 words of scratch for getrusage's struct rusage
N_COUNTERS = C_RUSAGE + 18  # C_CLOCK and C_CLOCK + 1: scratch for clock_gettime's timespec
# Counters that are not sums when threads' counters are merged.
NOT_ADDITIVE = (C_RNG, C_N_LOCKSTEP, C_MMAP_NS, C_CLOCK, C_CLOCK + 1) + tuple(
    range(C_RUSAGE, N_COUNTERS))


def _pointer_intrinsic(element_type):
    """An intrinsic turning an integer address into a typed pointer (a plain inttoptr)."""

    def _as_pointer(typingctx, address):
        sig = types.CPointer(element_type)(types.intp)

        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    return intrinsic(_as_pointer)


_u8_ptr = _pointer_intrinsic(types.uint8)
_i64_ptr = _pointer_intrinsic(types.int64)


@intrinsic
def atomic_load(typingctx, array, index):
    """array[index] with acquire ordering: sees what the publishing thread wrote before it."""
    sig = array.dtype(array, index)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        return builder.load_atomic(pointer, ordering="acquire", align=8)

    return sig, codegen


@intrinsic
def atomic_store(typingctx, array, index, value):
    """array[index] = value with release ordering (publishes every earlier write)."""
    sig = types.void(array, index, value)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [args[1]])
        stored = context.cast(builder, args[2], signature.args[2], array_type.dtype)
        builder.store_atomic(stored, pointer, ordering="release", align=8)
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True)
def now_ns(clock):
    """CLOCK_MONOTONIC in ns; ``clock`` is the address of two int64s (an int, not an array,
    so that calling this per op costs no reference counting)."""
    c_clock_gettime(CLOCK_MONOTONIC, clock)
    t = _i64_ptr(clock)
    return t[0] * 1000000000 + t[1]


@njit(cache=True, nogil=True)
def _errno():
    return c_errno_location()[0]


@njit(cache=True, nogil=True)
def _touch(address, length, write, touch, counters, clock):
    """Fault in new memory: first byte, one byte per page, or every byte."""
    if touch == TOUCH_NONE or length == 0:
        return
    t0 = now_ns(clock)
    p = _u8_ptr(address)
    touched = 0
    if touch == TOUCH_FIRST:
        if write:
            p[0] = 1
        else:
            counters[C_CHECKSUM] += p[0]
        touched = PAGE
    elif touch == TOUCH_PAGES:
        s = 0
        for i in range(0, length, PAGE):
            if write:
                p[i] = 1
            else:
                s += p[i]
        counters[C_CHECKSUM] += s
        touched = (length + PAGE - 1) // PAGE * PAGE
    else:
        if write:
            for i in range(length):
                p[i] = 1
        else:
            q = _i64_ptr(address)
            s = 0
            for i in range(length // 8):
                s += q[i]
            counters[C_CHECKSUM] += s
        touched = length
    counters[C_TOUCH_BYTES] += touched
    counters[C_TOUCH_NS] += now_ns(clock) - t0


@njit(cache=True, nogil=True)
def _touch_heap(address, length, write, touch, counters, clock):
    """_touch for the brk heap, counting the faults it takes (this thread's own, exactly)."""
    scratch = counters.ctypes.data + 8 * C_RUSAGE
    c_getrusage(RUSAGE_THREAD, scratch)
    before = counters[C_RUSAGE + RU_MINFLT_WORD]
    touched = counters[C_TOUCH_BYTES]
    _touch(address, length, write, touch, counters, clock)
    c_getrusage(RUSAGE_THREAD, scratch)
    counters[C_HEAP_MINFLT] += counters[C_RUSAGE + RU_MINFLT_WORD] - before
    counters[C_HEAP_TOUCH_BYTES] += counters[C_TOUCH_BYTES] - touched


@njit(cache=True, nogil=True)
def _reserve_heap(length, pmd_offset, hint, counters, clock):
    """PROT_NONE, unaccounted address space for the brk heap, starting at an address that is
    ``pmd_offset`` past a 2 MiB boundary (the traced heap's own): length + 2 MiB is mapped (at
    ``hint`` if free: away from the mmap area, as a real brk heap is) and what lies outside the
    chosen window unmapped at once."""
    total = length + PMD
    r = c_mmap(hint, total, PROT_NONE, HEAP_RESERVE_FLAGS, -1, 0)
    if r == -1:
        return -1
    start = r + (pmd_offset - r % PMD + PMD) % PMD
    if start > r:
        c_munmap(r, start - r)
    if r + total > start + length:
        c_munmap(start + length, r + total - start - length)
    return start


@njit(cache=True, nogil=True)
def _xorshift(counters):
    x = counters[C_RNG]
    x ^= (x << 13) & 0x7FFFFFFFFFFFFFFF
    x ^= x >> 7
    x ^= (x << 17) & 0x7FFFFFFFFFFFFFFF
    x &= 0x7FFFFFFFFFFFFFFF
    if x == 0:
        x = 88172645463325252
    counters[C_RNG] = x
    return x


@njit(cache=True, nogil=True)
def _access(address, length, kind, amount, counters, clock):
    """Read a mapping before it goes: sequential passes or random 8-byte reads."""
    if length < 8:
        return
    q = _i64_ptr(address)
    words = length // 8
    s = 0
    reads = 0
    t0 = now_ns(clock)
    if kind == ACCESS_STREAM:
        for _ in range(amount):
            for i in range(words):
                s += q[i]
        reads = words * amount
    elif kind == ACCESS_RANDOM:
        reads = max(1, (length * amount) >> 20)
        for _ in range(reads):
            s += q[_xorshift(counters) % words]
    counters[C_ACCESS_NS] += now_ns(clock) - t0
    counters[C_ACCESS_READS] += reads
    counters[C_ACCESS_BYTES] += reads * 8
    counters[C_CHECKSUM] += s


@njit(cache=True, nogil=True)
def lockstep_sweep(base, id_length, live_ids, counters, passes):
    """Offset-major sweeps over all intact live mappings, one cache line each per offset.

    Many arrays read at the same offsets, as a stencil code does: when their starts share 2 MiB
    alignment, the lines land in the same cache sets and the same TLB sets.
    """
    n = counters[C_N_LOCKSTEP]
    if n == 0:
        return
    clock = counters.ctypes.data + 8 * C_CLOCK
    longest = 0
    for j in range(n):
        longest = max(longest, id_length[live_ids[j]])
    s = 0
    lines = 0
    t0 = now_ns(clock)
    for _ in range(passes):
        for off in range(0, longest - 63, 64):
            for j in range(n):
                m = live_ids[j]
                if off + 64 <= id_length[m]:
                    q = _i64_ptr(base[m] + off)
                    s += q[0] + q[1] + q[2] + q[3] + q[4] + q[5] + q[6] + q[7]
                    lines += 1
    elapsed = now_ns(clock) - t0
    counters[C_ACCESS_NS] += elapsed
    counters[C_ENGINE_NS] += elapsed
    counters[C_ACCESS_READS] += lines * 8
    counters[C_ACCESS_BYTES] += lines * 64
    counters[C_CHECKSUM] += s


@njit(cache=True, nogil=True)
def _lockstep_add(m, live_ids, live_pos, counters):
    n = counters[C_N_LOCKSTEP]
    live_ids[n] = m
    live_pos[m] = n
    counters[C_N_LOCKSTEP] = n + 1


@njit(cache=True, nogil=True)
def _lockstep_remove(m, live_ids, live_pos, counters):
    at = live_pos[m]
    if at < 0:
        return
    last = counters[C_N_LOCKSTEP] - 1
    moved = live_ids[last]
    live_ids[at] = moved
    live_pos[moved] = at
    live_pos[m] = -1
    counters[C_N_LOCKSTEP] = last


@njit(cache=True, nogil=True)
def _search_window(length, hint, params, counters, clock):
    """A PROT_NONE mapping of ``length`` where a <= 6.6 kernel's search would put it: at the
    hint if it fits there, else by the plain top-down search, with no THP alignment. -1 if none.

    The search is always the running kernel's own, reached in the first way this kernel allows
    (policy.KernelAlignment probes them):
    - a hint inside a mapping that exists (the page of ``counters``), which the kernel refuses
      and answers with its plain search: 6.13+ never THP-align hinted calls, <= 6.6 nothing;
    - a private mapping of /dev/zero (params[P_ZERO_FD]): a file mapping, which the anonymous
      rule of 6.7-6.12 never applied to (6.18 aligns these too, so it comes second);
    - else a 2 MiB multiple is searched one page longer and the page given back (a kernel that
      aligns only multiples), or the length as is.
    Every call here is the emulator's own: counted and timed under C_POLICY_*."""
    t0 = now_ns(clock)
    calls = 1
    zero = params[P_ZERO_FD]
    if params[P_PLAIN_BY_HINT] != 0:
        if hint == 0:
            hint = (clock >> 12) << 12
        window = c_mmap(hint, length, 0, WINDOW_FLAGS, -1, 0)
    elif zero >= 0:
        window = c_mmap(hint, length, 0, ZERO_WINDOW_FLAGS, np.int32(zero), 0)
    elif hint == 0 and params[P_PAD_PMD_MULTIPLES] != 0 and length % PMD == 0:
        window = c_mmap(0, length + PAGE, 0, WINDOW_FLAGS, -1, 0)
        if window != -1:
            c_munmap(window, PAGE)
            calls += 1
            window += PAGE
    else:
        window = c_mmap(hint, length, 0, WINDOW_FLAGS, -1, 0)
    counters[C_POLICY_NS] += now_ns(clock) - t0
    counters[C_POLICY_CALLS] += calls
    return window


@njit(cache=True, nogil=True)
def _settle_window(window, window_length, start, length, p, t0, t1, counters, clock):
    """The workload's call that was to fill [start, start + length) of the emulator's PROT_NONE
    ``window`` ran from t0 to t1 and returned ``p``: its time is the workload's (C_MMAP_NS); what
    is left of the window, all of it if the call failed (p == -1), goes back as the emulator's
    calls (C_POLICY_*)."""
    counters[C_MMAP_NS] = t1 - t0
    if p == -1:
        c_munmap(window, window_length)
        counters[C_POLICY_CALLS] += 1
    else:
        if start > window:
            c_munmap(window, start - window)
            counters[C_POLICY_CALLS] += 1
        tail = window + window_length - (start + length)
        if tail > 0:
            c_munmap(start + length, tail)
            counters[C_POLICY_CALLS] += 1
    counters[C_POLICY_NS] += now_ns(clock) - t1


@njit(cache=True, nogil=True)
def _map_in_window(window, window_length, start, length, prot, flags, counters, clock):
    """Make the workload's mapping with MAP_FIXED at ``start`` inside the emulator's own PROT_NONE
    ``window`` (nothing else can be there), then give back the rest of the window. The MAP_FIXED
    call is the workload's mmap (C_MMAP_NS); the trims are the emulator's (C_POLICY_*)."""
    t0 = now_ns(clock)
    p = c_mmap(start, length, prot, flags | MAP_FIXED, -1, 0)
    t1 = now_ns(clock)
    _settle_window(window, window_length, start, length, p, t0, t1, counters, clock)
    return p


@njit(cache=True, nogil=True)
def _map_plain(length, prot, flags, params, counters, clock):
    """A hint-less mmap placed as <= 6.6 placed it: in one call where a hint inside an existing
    mapping gets the plain search, else in a window found by _search_window."""
    if params[P_PLAIN_BY_HINT] != 0:
        t0 = now_ns(clock)
        p = c_mmap((clock >> 12) << 12, length, prot, flags, -1, 0)
        counters[C_MMAP_NS] = now_ns(clock) - t0
        return p
    if params[P_ZERO_FD] < 0 and (params[P_PAD_PMD_MULTIPLES] == 0 or length % PMD != 0):
        t0 = now_ns(clock)  # this kernel places this length plainly by itself
        p = c_mmap(0, length, prot, flags, -1, 0)
        counters[C_MMAP_NS] = now_ns(clock) - t0
        return p
    window = _search_window(length, 0, params, counters, clock)
    if window == -1:
        counters[C_MMAP_NS] = 0
        return -1
    return _map_in_window(window, length, window, length, prot, flags, counters, clock)


@njit(cache=True, nogil=True)
def _map_aligned(length, prot, flags, hint, residue, params, counters, clock):
    """__thp_get_unmapped_area() of 6.7-6.11 (and of file mappings on every kernel): search a
    window of length + 2 MiB (honouring ``hint`` if the whole window fits there), keep a granted
    hint, else start at the first address in the window congruent to ``residue`` modulo 2 MiB
    (0 for anonymous memory, the file offset for files); with the 6.8 top-down fix
    (params[P_TOPDOWN_FIX]) an already-congruent window start moves 2 MiB up, flush against
    the upper neighbour. The rest of the window stays unmapped.

    The window is claimed first as PROT_NONE (no MAP_POPULATE, no memory), the mapping is then
    made with MAP_FIXED inside that window, which only this replay owns, and the padding is given
    back: nothing else can take the window meanwhile, and MAP_POPULATE fills only the mapping."""
    window_length = length + PMD
    window = _search_window(window_length, hint, params, counters, clock)
    if window == -1:
        # The kernel retries without the padding: the hint if free, else a plain placement.
        if hint != 0:
            t0 = now_ns(clock)
            p = c_mmap(hint, length, prot, flags, -1, 0)
            counters[C_MMAP_NS] = now_ns(clock) - t0
            return p
        return _map_plain(length, prot, flags, params, counters, clock)
    if hint != 0 and window == hint:
        start = hint
    else:
        below = (residue - window) & (PMD - 1)
        if below == 0 and params[P_TOPDOWN_FIX] != 0:
            below = PMD
        start = window + below
    p = _map_in_window(window, window_length, start, length, prot, flags, counters, clock)
    return -1 if p == -1 else start


@njit(cache=True, nogil=True)
def _remap_placed(address, size, new_size, flags, place, params, counters, clock):
    """mremap(MREMAP_MAYMOVE) as the emulated kernel did it: grow in place if the space above is
    free, else move to where that kernel's get_unmapped_area() put the new length (a plain
    search, or the THP rule with PLACE_ALIGNED). The target is a PROT_NONE window this replay
    claimed first, so MREMAP_FIXED replaces only its own memory. Only the call that moves (or
    grows) is the workload's (C_MMAP_NS); the rest is the emulator's (C_POLICY_*)."""
    dont_unmap = (flags & MREMAP_DONTUNMAP) != 0
    if not dont_unmap:
        t0 = now_ns(clock)
        p = c_mremap(address, size, new_size, 0, 0)  # in place: the kernel's first try
        t1 = now_ns(clock)
        if p != -1:
            counters[C_MMAP_NS] = t1 - t0
            return p
        counters[C_POLICY_NS] += t1 - t0
        counters[C_POLICY_CALLS] += 1
    window_length = new_size + (PMD if place == PLACE_ALIGNED else 0)
    window = _search_window(window_length, 0, params, counters, clock)
    if window == -1:
        counters[C_MMAP_NS] = 0
        return -1
    start = window
    if place == PLACE_ALIGNED:
        below = (-window) & (PMD - 1)
        if below == 0 and params[P_TOPDOWN_FIX] != 0:
            below = PMD
        start = window + below
    t2 = now_ns(clock)
    p = c_mremap(address, size, new_size, flags | MREMAP_MAYMOVE | MREMAP_FIXED, start)
    _settle_window(window, window_length, start, new_size, p, t2, now_ns(clock), counters, clock)
    return p


@njit(cache=True, nogil=True)
def run_ops(code, mode, map_id, ref_id, offset, length, arg, prot, flags,
            id_length, base, id_state, latency, err, counters, live_ids, live_pos, params,
            order, kstart, kstop, dep_thread, dep_pos, progress, thread_index, stop_flag):
    """Run the ops order[kstart:kstop] (ops kstart..kstop-1 when ``order`` is empty).

    With dependencies (``dep_thread`` not empty), op i first waits until thread dep_thread[i]
    has completed dep_pos[i] + 1 of its ops, and this thread publishes how many of its ops are
    done before each op; waiting spins briefly, then yields the CPU. Returns the position
    reached (== kstop unless ``stop_flag[0]`` was raised).

    The op body is written inline, not as a function: a call passing the program's arrays costs
    reference-count updates per op that showed in the benchmark against C.
    """
    # The timespec lives in counters, which outlives every use (a local array's address could
    # outlive the array: numba frees it after its last use as an object).
    clock = counters.ctypes.data + 8 * C_CLOCK
    identity = len(order) == 0
    has_deps = len(dep_thread) > 0
    touch = params[P_TOUCH]
    access_kind = params[P_ACCESS_KIND]
    access_amount = params[P_ACCESS_AMOUNT]
    thp_advice = params[P_THP_ADVICE]
    heap = params[P_HEAP_ID]
    engine_t0 = now_ns(clock)
    reached = kstop
    for k in range(kstart, kstop):
        i = k if identity else order[k]
        if has_deps:
            atomic_store(progress, thread_index, k)  # ops before k are done
            if atomic_load(stop_flag, 0) != 0:
                reached = k
                break
            waited_for = dep_thread[i]
            if waited_for >= 0:
                need = dep_pos[i] + 1
                if atomic_load(progress, waited_for) < need:
                    w0 = now_ns(clock)
                    spins = 0
                    while atomic_load(progress, waited_for) < need:
                        spins += 1
                        if spins > 100:
                            c_sched_yield()
                        if atomic_load(stop_flag, 0) != 0:
                            break
                    counters[C_WAIT_NS] += now_ns(clock) - w0
                    if atomic_load(progress, waited_for) < need:
                        reached = k
                        break
        c = code[i]
        m = map_id[i]
        md = mode[i]
        if c == OP_MMAP or c == OP_MMAP_FIXED_IN:
            size = length[i]
            if c == OP_MMAP_FIXED_IN:
                parent = ref_id[i]
                if (id_state[parent] & (ID_MAPPED | ID_TAINTED)) != ID_MAPPED:
                    err[i] = -1
                    counters[C_RUNTIME_SKIPPED] += 1
                    continue
                if access_kind == ACCESS_LOCKSTEP:
                    _lockstep_remove(parent, live_ids, live_pos, counters)
                t0 = now_ns(clock)
                p = c_mmap(base[parent] + offset[i], size, prot[i], flags[i] | MAP_FIXED, -1, 0)
                latency[i] = now_ns(clock) - t0
                if p == -1:
                    # A failed MAP_FIXED may or may not have unmapped the old range (the kernel
                    # refuses some calls before unmapping): unmap it, so that what the replay
                    # holds is what the compiler counted (the range is the parent's own).
                    id_state[parent] |= ID_TAINTED
                    c_munmap(base[parent] + offset[i], size)
            else:
                place = md & PLACE_MASK
                if place == PLACE_PLAIN:
                    p = _map_plain(size, prot[i], flags[i], params, counters, clock)
                    latency[i] = counters[C_MMAP_NS]
                elif place == PLACE_ALIGNED:
                    # offset[i]: the start's residue modulo 2 MiB (a file's offset, else 0)
                    p = _map_aligned(size, prot[i], flags[i], arg[i], offset[i], params,
                                     counters, clock)
                    latency[i] = counters[C_MMAP_NS]
                else:
                    t0 = now_ns(clock)
                    p = c_mmap(arg[i], size, prot[i], flags[i], -1, 0)
                    latency[i] = now_ns(clock) - t0
            if p == -1:
                err[i] = _errno()
                base[m] = 0
                continue
            base[m] = p
            id_state[m] = ID_MAPPED
            counters[C_LIVE_BYTES] += size if c == OP_MMAP else 0
            if (md & THP_ADVISE) != 0 and thp_advice >= 0:
                if c_madvise(p, size, thp_advice) != 0:
                    counters[C_THP_ADVICE_FAILED] += 1
            if (md & (TOUCH_WRITE | TOUCH_READ)) != 0:
                _touch(p, size, (md & TOUCH_WRITE) != 0, touch, counters, clock)
            if (md & LOCKSTEP) != 0 and access_kind == ACCESS_LOCKSTEP:
                _lockstep_add(m, live_ids, live_pos, counters)
            continue

        if c == OP_TOUCH:
            # The workload's first use of memory made usable earlier: no call, nothing to skip.
            if (id_state[m] & (ID_MAPPED | ID_TAINTED)) == ID_MAPPED:
                if m == heap:
                    _touch_heap(base[m] + offset[i], length[i], (md & TOUCH_WRITE) != 0, touch,
                                counters, clock)
                else:
                    _touch(base[m] + offset[i], length[i], (md & TOUCH_WRITE) != 0, touch,
                           counters, clock)
                if (md & LOCKSTEP) != 0 and access_kind == ACCESS_LOCKSTEP and live_pos[m] < 0:
                    _lockstep_add(m, live_ids, live_pos, counters)
            continue
        if c == OP_HEAP_RESERVE:
            p = _reserve_heap(length[i], arg[i], params[P_HEAP_HINT], counters, clock)
            if p == -1:
                err[i] = _errno()
                continue
            base[m] = p
            id_state[m] = ID_MAPPED
            if (md & THP_ADVISE) != 0 and thp_advice >= 0:
                if c_madvise(p, length[i], thp_advice) != 0:
                    counters[C_THP_ADVICE_FAILED] += 1
            continue

        # Every other op works on a piece of mapping m, which must exist in this replay.
        if (id_state[m] & ID_MAPPED) == 0:
            err[i] = -1
            counters[C_RUNTIME_SKIPPED] += 1
            continue
        address = base[m] + offset[i]
        size = length[i]
        intact = (id_state[m] & ID_TAINTED) == 0
        if c == OP_MUNMAP:
            if m == heap and not intact:
                # A failed call may have left a hole in the heap's reservation that something
                # else now uses: leave the reservation mapped rather than unmap foreign memory.
                err[i] = -1
                counters[C_RUNTIME_SKIPPED] += 1
                continue
            if (md & ACCESS_BEFORE) != 0 and intact and access_kind != ACCESS_NONE \
                    and access_kind != ACCESS_LOCKSTEP:
                _access(address, size, access_kind, access_amount, counters, clock)
            if access_kind == ACCESS_LOCKSTEP:
                _lockstep_remove(m, live_ids, live_pos, counters)
            t0 = now_ns(clock)
            r = c_munmap(address, size)
            latency[i] = now_ns(clock) - t0
            if r != 0:
                err[i] = _errno()
                id_state[m] |= ID_TAINTED
            elif m == heap:
                # The heap's reservation, unmapped only whole, at cleanup (after its live parts
                # were freed, which counted them).
                id_state[m] = 0
            else:
                counters[C_LIVE_BYTES] -= size
        elif c == OP_MREMAP:
            new_size = arg[i]
            new = ref_id[i]
            if access_kind == ACCESS_LOCKSTEP:
                _lockstep_remove(m, live_ids, live_pos, counters)
            if (md & PLACE_MASK) != PLACE_KERNEL:
                p = _remap_placed(address, size, new_size, flags[i], md & PLACE_MASK, params,
                                  counters, clock)
                latency[i] = counters[C_MMAP_NS]
            else:
                t0 = now_ns(clock)
                p = c_mremap(address, size, new_size, flags[i], 0)
                latency[i] = now_ns(clock) - t0
            dont_unmap = (flags[i] & 4) != 0
            if p == -1:
                err[i] = _errno()
                base[new] = 0
                # Keep the replay's live set equal to the trace's: the old piece is gone there.
                if not dont_unmap:
                    c_munmap(address, size)
                    counters[C_LIVE_BYTES] -= size
                continue
            base[new] = p
            id_state[new] = ID_MAPPED | (id_state[m] & ID_TAINTED)
            counters[C_LIVE_BYTES] += new_size - (0 if dont_unmap else size)
            if new_size > size and (md & (TOUCH_WRITE | TOUCH_READ)) != 0 and intact:
                _touch(p + size, new_size - size, (md & TOUCH_WRITE) != 0, touch, counters, clock)
        elif c == OP_MADVISE:
            t0 = now_ns(clock)
            r = c_madvise(address, size, np.int32(arg[i]))
            latency[i] = now_ns(clock) - t0
            if r != 0:
                err[i] = _errno()
            elif arg[i] == MADV_GUARD_INSTALL:
                id_state[m] |= ID_TAINTED  # guard pages fault on access
                if access_kind == ACCESS_LOCKSTEP:
                    _lockstep_remove(m, live_ids, live_pos, counters)
        elif c == OP_HEAP_GROW:
            # In place, inside the heap's own reservation: never unmaps anything.
            t0 = now_ns(clock)
            r = c_mprotect(address, size, PROT_RW)
            latency[i] = now_ns(clock) - t0
            if r != 0:
                err[i] = _errno()
                id_state[m] |= ID_TAINTED  # part of the heap may not be writable: never touch it
            else:
                counters[C_LIVE_BYTES] += size
                if (md & (TOUCH_WRITE | TOUCH_READ)) != 0 and intact:
                    _touch_heap(address, size, (md & TOUCH_WRITE) != 0, touch, counters, clock)
        elif c == OP_HEAP_FREE:
            if (md & ACCESS_BEFORE) != 0 and intact and access_kind != ACCESS_NONE \
                    and access_kind != ACCESS_LOCKSTEP:
                _access(address, size, access_kind, access_amount, counters, clock)
            if not intact:
                err[i] = -1  # the reservation may have a hole: no MAP_FIXED into it any more
                counters[C_RUNTIME_SKIPPED] += 1
                continue
            # A fresh PROT_NONE piece of reservation in place of the freed memory: its pages go,
            # and so does any advice or protection the trace gave it, as when brk shrinks.
            t0 = now_ns(clock)
            p = c_mmap(address, size, PROT_NONE, HEAP_RESERVE_FLAGS | MAP_FIXED, -1, 0)
            latency[i] = now_ns(clock) - t0
            if p == -1:
                err[i] = _errno()
                id_state[m] |= ID_TAINTED
            else:
                counters[C_LIVE_BYTES] -= size
                if (md & THP_ADVISE) != 0 and thp_advice >= 0:
                    if c_madvise(address, size, thp_advice) != 0:
                        counters[C_THP_ADVICE_FAILED] += 1
        elif c == OP_MPROTECT:
            if access_kind == ACCESS_LOCKSTEP:
                _lockstep_remove(m, live_ids, live_pos, counters)
            t0 = now_ns(clock)
            r = c_mprotect(address, size, prot[i])
            latency[i] = now_ns(clock) - t0
            if r != 0:
                err[i] = _errno()
                id_state[m] |= ID_TAINTED
            elif (md & (TOUCH_WRITE | TOUCH_READ)) != 0 and intact:
                _touch(address, size, (md & TOUCH_WRITE) != 0, touch, counters, clock)
    if has_deps:
        atomic_store(progress, thread_index, reached)
    counters[C_ENGINE_NS] += now_ns(clock) - engine_t0
    return reached


@njit(cache=True, nogil=True)
def release_pieces(pieces, base, id_state):
    """munmap exactly the given (id, offset, length) pieces of this replay; returns failures."""
    failed = 0
    for k in range(pieces.shape[0]):
        m = pieces[k, 0]
        if (id_state[m] & ID_MAPPED) == 0 or base[m] == 0:
            continue
        if c_munmap(base[m] + pieces[k, 1], pieces[k, 2]) != 0:
            failed += 1
    return failed


_NONE = np.zeros(0, np.int64)
_NONE32 = np.zeros(0, np.int32)


class EngineState:
    """The arrays one run of a program mutates."""

    def __init__(self, program, params: np.ndarray, seed: int = 0x9E3779B97F4A7C15 & 0x7FFFFFFFFFFFFFFF):
        n_ops, n_ids = program.ops, program.ids
        self.base = np.zeros(n_ids, np.int64)
        self.id_state = np.zeros(n_ids, np.int8)
        self.latency = np.zeros(n_ops, np.int64)
        self.err = np.zeros(n_ops, np.int32)
        self.counters = np.zeros(N_COUNTERS, np.int64)
        self.counters[C_RNG] = seed
        self.live_ids = np.zeros(max(n_ids, 1), np.int64)
        self.live_pos = np.full(max(n_ids, 1), -1, np.int64)
        self.params = params.copy()
        self.params[P_HEAP_ID] = program.heap_id  # a property of the program, not of the config
        self.program = program

    def run(self, start: int, stop: int) -> int:
        """Run ops [start, stop) serially on this thread."""
        p = self.program
        return run_ops(p.code, p.mode, p.map_id, p.ref_id, p.offset, p.length, p.arg, p.prot,
                       p.flags, p.id_length, self.base, self.id_state, self.latency, self.err,
                       self.counters, self.live_ids, self.live_pos, self.params, _NONE, start,
                       stop, _NONE32, _NONE32, _NONE, 0, _NONE)

    def run_thread(self, counters, order, kstart, kstop, deps, progress, thread_index,
                   stop_flag) -> int:
        """Run order[kstart:kstop] on the calling OS thread (GIL released), honouring deps."""
        p = self.program
        return run_ops(p.code, p.mode, p.map_id, p.ref_id, p.offset, p.length, p.arg, p.prot,
                       p.flags, p.id_length, self.base, self.id_state, self.latency, self.err,
                       counters, self.live_ids, self.live_pos, self.params, order, kstart, kstop,
                       deps.dep_thread, deps.dep_pos, progress, thread_index, stop_flag)

    def warm(self) -> None:
        """Load (or compile) the native code of every engine function without running an op."""
        self.run(0, 0)
        lockstep_sweep(self.base, self.program.id_length, self.live_ids,
                       np.zeros(N_COUNTERS, np.int64), 0)
        release_pieces(np.zeros((0, 3), np.int64), self.base, self.id_state)

    def lockstep(self, passes: int) -> None:
        lockstep_sweep(self.base, self.program.id_length, self.live_ids, self.counters, passes)

    def release(self, pieces: np.ndarray) -> int:
        """munmap the given live pieces, and the brk heap's whole reservation (never its pieces
        alone: that would leave holes in it for a moment)."""
        pieces = pieces.astype(np.int64)
        heap = self.program.heap_id
        if heap < 0:
            return int(release_pieces(pieces, self.base, self.id_state))
        failed = int(release_pieces(pieces[pieces[:, 0] != heap], self.base, self.id_state))
        if self.id_state[heap] & ID_TAINTED:
            return failed + 1  # it may have holes something else now uses: leave it mapped
        reservation = np.array([[heap, 0, self.program.id_length[heap]]], np.int64)
        return failed + int(release_pieces(reservation, self.base, self.id_state))

    def ranges(self, pieces: np.ndarray) -> np.ndarray:
        """Replay address ranges (start, end) of live pieces whose mapping exists, sorted."""
        if len(pieces) == 0:
            return np.zeros((0, 2), np.int64)
        ids = pieces[:, 0].astype(np.int64)
        ok = (self.id_state[ids] & ID_MAPPED) != 0
        starts = self.base[ids[ok]] + pieces[ok, 1]
        ranges = np.stack([starts, starts + pieces[ok, 2]], axis=1)
        return ranges[np.argsort(ranges[:, 0], kind="stable")]
