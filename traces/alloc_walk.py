"""Walk the allocation calls of a trace (``record --malloc``): every pointer resolved to the
allocation that returned it, as the allocation replay (``replay.alloc.alloc_program``) and ``info``
need it.

Trace pointers are names: a pointer freed and returned again is a new allocation. The walk keeps
the live pointers in an open-addressing hash table (numba), so a trace of millions of calls is
walked in a second or two.
"""

from __future__ import annotations

import numpy as np

from .format import column_np, op_names
from .jit import njit
from .schema import MM_OPS, OP_CODE

# Walk codes (the order of the allocation replay's engine codes).
A_MALLOC, A_CALLOC, A_REALLOC, A_FREE = 0, 1, 2, 3
A_POSIX_MEMALIGN, A_ALIGNED_ALLOC, A_MEMALIGN, A_VALLOC, A_PVALLOC = 4, 5, 6, 7, 8
WALK_OP_NAMES = ("malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc",
                 "memalign", "valloc", "pvalloc")
_TRACE_TO_WALK = np.full(256, -1, np.int8)
for _code, _name in enumerate(WALK_OP_NAMES):
    _TRACE_TO_WALK[OP_CODE[_name]] = _code

# counters[] of the walk
(R_FAILED, R_UNKNOWN_FREE, R_UNKNOWN_REALLOC, R_LIVE_REUSED, R_PEAK_OP, R_PEAK_BYTES, R_SLOTS,
 R_OPS, R_END_BYTES) = range(9)
N_RESOLVE = 9


@njit(cache=True)
def _find(keys, mask, key):
    """Slot of ``key`` in the open-addressing table (linear probing), or -1 - insertion point."""
    h = (key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
    i = np.int64(h & np.uint64(mask))
    while True:
        k = keys[i]
        if k == key:
            return i
        if k == 0:
            return -1 - i
        i = (i + 1) & mask


@njit(cache=True)
def _delete(keys, values, mask, i):
    """Remove entry i, shifting later entries of its probe run back (no tombstones)."""
    j = i
    while True:
        j = (j + 1) & mask
        k = keys[j]
        if k == 0:
            break
        h = (k * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(20)
        home = np.int64(h & np.uint64(mask))
        # entry j may move to i when i lies cyclically in [home, j)
        if (j > i and (home <= i or home > j)) or (j < i and home <= i and home > j):
            keys[i] = k
            values[i] = values[j]
            i = j
    keys[i] = 0
    values[i] = -1


@njit(cache=True)
def _resolve(ops, addr, length, new_addr, hint, errno, code, slot, ref, size, arg, trace_row,
             slot_size, counters):
    """Walk the allocation rows; fill the op arrays; return the live slots at the end."""
    n = len(ops)
    capacity = 1024
    keys = np.zeros(capacity, np.uint64)
    values = np.full(capacity, -1, np.int64)
    live_count = 0
    slots = 0
    k = 0
    live = 0
    peak = 0
    peak_op = 0
    free_code = 3
    realloc_code = 2
    for row in range(n):
        c = ops[row]
        if c < 0:
            continue
        if errno[row] != 0:
            counters[0] += 1  # R_FAILED
            continue
        if live_count * 2 >= capacity:  # grow: rehash every entry
            old_keys, old_values = keys, values
            capacity *= 2
            keys = np.zeros(capacity, np.uint64)
            values = np.full(capacity, -1, np.int64)
            for j in range(len(old_keys)):
                if old_keys[j] != 0:
                    at = _find(keys, capacity - 1, old_keys[j])
                    keys[-1 - at] = old_keys[j]
                    values[-1 - at] = old_values[j]
        mask = capacity - 1
        if c == free_code:
            p = addr[row]
            if p == 0:
                code[k] = c
                slot[k] = -1
                ref[k] = -1
                size[k] = 0
                arg[k] = 0
                trace_row[k] = row
                k += 1
                continue
            at = _find(keys, mask, p)
            if at < 0:
                counters[1] += 1  # R_UNKNOWN_FREE
                continue
            s = values[at]
            _delete(keys, values, mask, at)
            live_count -= 1
            live -= slot_size[s]
            code[k] = c
            slot[k] = -1
            ref[k] = s
            size[k] = 0
            arg[k] = 0
            trace_row[k] = row
            k += 1
            continue
        # allocations, realloc
        old = -1
        result = addr[row]
        if c == realloc_code:
            result = new_addr[row]
            p = addr[row]
            if p != 0:
                at = _find(keys, mask, p)
                if at < 0:
                    counters[2] += 1  # R_UNKNOWN_REALLOC: replayed as realloc(NULL, n)
                else:
                    old = values[at]
                    _delete(keys, values, mask, at)
                    live_count -= 1
                    live -= slot_size[old]
        s = slots
        slots += 1
        n_bytes = np.int64(length[row]) if length[row] < np.uint64(1 << 62) else np.int64(1 << 62)
        slot_size[s] = n_bytes
        code[k] = c
        slot[k] = s
        ref[k] = old
        size[k] = n_bytes
        if c == realloc_code:
            arg[k] = slot_size[old] if old >= 0 else 0
        else:
            arg[k] = np.int64(hint[row]) if hint[row] < np.uint64(1 << 62) else np.int64(1 << 62)
        trace_row[k] = row
        k += 1
        live += n_bytes
        if result != 0:
            at = _find(keys, mask, result)
            if at >= 0:
                counters[3] += 1  # R_LIVE_REUSED: the older slot stays allocated
                values[at] = s
            else:
                keys[-1 - at] = result
                values[-1 - at] = s
                live_count += 1
        if live > peak:
            peak = live
            peak_op = k
    counters[4] = peak_op
    counters[5] = peak
    counters[6] = slots
    counters[7] = k
    counters[8] = live
    remaining = np.zeros(live_count, np.int64)
    j = 0
    for i in range(capacity):
        if keys[i] != 0:
            remaining[j] = values[i]
            j += 1
    return remaining


class Walk:
    """The allocation calls of a trace, resolved. Arrays are per op kept (failed calls and frees
    of unknown pointers are left out); ``rows`` maps ops back to trace rows."""

    def __init__(self, table):
        self.rows_all = np.flatnonzero(op_names(table) >= len(MM_OPS))
        part = table.take(self.rows_all) if len(self.rows_all) != table.num_rows else table
        n = len(self.rows_all)
        ops = (_TRACE_TO_WALK[op_names(part).astype(np.int64) & 0xFF] if n
               else np.zeros(0, np.int8))
        self.code = np.zeros(n, np.int8)
        self.slot = np.zeros(n, np.int32)
        self.ref = np.zeros(n, np.int32)
        self.size = np.zeros(n, np.int64)
        self.arg = np.zeros(n, np.int64)
        self.row = np.zeros(n, np.int32)
        self.slot_size = np.zeros(n, np.int64)
        self.counters = np.zeros(N_RESOLVE, np.int64)
        self.remaining = _resolve(ops, column_np(part, "addr"), column_np(part, "length"),
                                  column_np(part, "new_addr"), column_np(part, "hint"),
                                  column_np(part, "errno").astype(np.int64), self.code,
                                  self.slot, self.ref, self.size, self.arg, self.row,
                                  self.slot_size, self.counters)
        k = int(self.counters[R_OPS])
        for name in ("code", "slot", "ref", "size", "arg", "row"):
            setattr(self, name, getattr(self, name)[:k])
        self.row = self.rows_all[self.row].astype(np.int32)  # trace rows
        self.slots = int(self.counters[R_SLOTS])
        self.slot_size = self.slot_size[: self.slots]
        self.tid = column_np(part, "tid") if n else np.zeros(0, np.int32)

    @property
    def events(self) -> int:
        return len(self.rows_all)

    def counter(self, index: int) -> int:
        return int(self.counters[index])
