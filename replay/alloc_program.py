"""Compile the allocation calls of a trace into an allocation program: flat arrays the allocation
engine (``alloc_engine``) runs, every pointer resolved to a slot beforehand.

Trace pointers are only names: the replay's allocator returns its own. Each allocation gets a
slot; a later free or realloc of the same pointer names that slot, so the engine never looks a
pointer up and never passes the allocator a pointer it did not return in this run:

- a free (or realloc) of a pointer the trace never allocated (allocated before recording
  began, by a process image not recorded, or by a call made inside the recorder) is skipped and
  counted; a realloc of one is replayed as realloc(NULL, n) (counted);
- a call that failed in the trace (NULL, errno set) is skipped and counted; free(NULL) and
  malloc(0) are replayed as the calls they were;
- an allocation returning a pointer that is still live in the trace (its free was not
  recorded) leaves the older slot allocated until the end (counted);
- whatever the trace leaves allocated is freed by cleanup ops at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from traces.format import column_np, op_names
from traces.jit import njit
from traces.schema import MM_OPS, OP_CODE

# Engine codes (not the trace's op codes).
A_MALLOC, A_CALLOC, A_REALLOC, A_FREE = 0, 1, 2, 3
A_POSIX_MEMALIGN, A_ALIGNED_ALLOC, A_MEMALIGN, A_VALLOC, A_PVALLOC = 4, 5, 6, 7, 8
ENGINE_OP_NAMES = ("malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc",
                   "memalign", "valloc", "pvalloc")
CLEANUP = -1  # trace_row of the frees the compiler adds at the end

# The trace op code of each engine code.
_TRACE_TO_ENGINE = np.full(256, -1, np.int8)
for _code, _name in enumerate(ENGINE_OP_NAMES):
    _TRACE_TO_ENGINE[OP_CODE[_name]] = _code

# Counters the resolver returns (index -> name in the program's ``skipped``/``notes``).
(R_FAILED, R_UNKNOWN_FREE, R_UNKNOWN_REALLOC, R_LIVE_REUSED, R_PEAK_OP, R_PEAK_BYTES, R_SLOTS,
 R_OPS, R_END_BYTES) = range(9)
N_RESOLVE = 9


@dataclass
class AllocProgram:
    code: np.ndarray        # int8 engine code
    slot: np.ndarray        # int32: slot the result goes to (-1: none)
    ref: np.ndarray         # int32: slot of the pointer passed in (free, realloc; -1: NULL)
    size: np.ndarray        # int64 bytes requested (calloc: the product)
    arg: np.ndarray         # int64: alignment (aligned family); realloc: the old slot's size
    trace_row: np.ndarray   # int32: trace row, CLEANUP for the compiler's frees
    slots: int
    events: int             # allocation rows in the trace
    peak_requested_bytes: int
    peak_op: int            # ops [0, peak_op) run when the peak is reached
    end_requested_bytes: int
    cleanup_start: int
    threads: int            # recorded threads (the replay is serial)
    skipped: dict = field(default_factory=dict)
    notes: dict = field(default_factory=dict)

    @property
    def ops(self) -> int:
        return len(self.code)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.code, self.slot, self.ref, self.size, self.arg,
                                       self.trace_row))

    def info(self) -> dict:
        return {"ops": self.ops, "slots": self.slots, "events": self.events,
                "program_bytes": self.nbytes(), "recorded_threads": self.threads,
                "peak_requested_bytes": self.peak_requested_bytes,
                "end_requested_bytes": self.end_requested_bytes,
                "skipped": self.skipped, "replayed_differently": self.notes}


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


def allocation_rows(table) -> np.ndarray:
    """Indices of a trace's allocation rows."""
    return np.flatnonzero(op_names(table) >= len(MM_OPS))


def compile_allocations(table) -> AllocProgram:
    """The allocation program of a (validated) trace's allocation rows."""
    rows = allocation_rows(table)
    part = table.take(rows) if len(rows) != table.num_rows else table
    ops = _TRACE_TO_ENGINE[op_names(part).astype(np.int64) & 0xFF] if len(rows) else np.zeros(0, np.int8)
    n = len(rows)
    code = np.zeros(n, np.int8)
    slot = np.zeros(n, np.int32)
    ref = np.zeros(n, np.int32)
    size = np.zeros(n, np.int64)
    arg = np.zeros(n, np.int64)
    trace_row = np.zeros(n, np.int32)
    slot_size = np.zeros(n, np.int64)
    counters = np.zeros(N_RESOLVE, np.int64)
    remaining = _resolve(ops, column_np(part, "addr"), column_np(part, "length"),
                         column_np(part, "new_addr"), column_np(part, "hint"),
                         column_np(part, "errno").astype(np.int64), code, slot, ref, size, arg,
                         trace_row, slot_size, counters)
    k = int(counters[R_OPS])
    # also free the slots whose pointer was reused while live, and those of NULL results
    remaining = np.sort(remaining)
    ended = np.zeros(int(counters[R_SLOTS]), bool)
    freed = ref[:k][(code[:k] == A_FREE) | (code[:k] == A_REALLOC)]
    ended[freed[freed >= 0]] = True
    ended[remaining] = True  # cleanup frees these below
    orphans = np.flatnonzero(~ended)  # allocated but no longer reachable by a trace pointer
    cleanup = np.concatenate([remaining, orphans]).astype(np.int32)
    original_rows = rows[trace_row[:k]].astype(np.int32)
    skipped, notes = {}, {}
    for index, name in ((R_FAILED, "failed_in_trace"),
                        (R_UNKNOWN_FREE, "free_of_unknown_pointer")):
        if counters[index]:
            skipped[name] = int(counters[index])
    for index, name in ((R_UNKNOWN_REALLOC, "realloc_of_unknown_pointer_as_new"),
                        (R_LIVE_REUSED, "pointer_returned_while_live")):
        if counters[index]:
            notes[name] = int(counters[index])
    m = len(cleanup)
    tids = column_np(part, "tid") if len(rows) else np.zeros(0, np.int32)
    return AllocProgram(
        code=np.concatenate([code[:k], np.full(m, A_FREE, np.int8)]),
        slot=np.concatenate([slot[:k], np.full(m, -1, np.int32)]),
        ref=np.concatenate([ref[:k], cleanup]),
        size=np.concatenate([size[:k], np.zeros(m, np.int64)]),
        arg=np.concatenate([arg[:k], np.zeros(m, np.int64)]),
        trace_row=np.concatenate([original_rows, np.full(m, CLEANUP, np.int32)]),
        slots=int(counters[R_SLOTS]), events=n,
        peak_requested_bytes=int(counters[R_PEAK_BYTES]), peak_op=int(counters[R_PEAK_OP]),
        end_requested_bytes=int(counters[R_END_BYTES]), cleanup_start=k,
        threads=int(len(np.unique(tids))), skipped=skipped, notes=notes)
