"""Compile the allocation calls of a trace into an allocation program: flat arrays the allocation
engine (``alloc_engine``) runs, every pointer resolved to a slot beforehand (``traces.alloc_walk``).

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

from traces.alloc_walk import (A_ALIGNED_ALLOC, A_CALLOC, A_FREE, A_MALLOC, A_MEMALIGN,  # noqa: F401
                               A_POSIX_MEMALIGN, A_PVALLOC, A_REALLOC, A_VALLOC, R_END_BYTES,
                               R_FAILED, R_LIVE_REUSED, R_PEAK_BYTES, R_PEAK_OP,
                               R_UNKNOWN_FREE, R_UNKNOWN_REALLOC, WALK_OP_NAMES, Walk)

ENGINE_OP_NAMES = WALK_OP_NAMES  # the engine's codes are the walk's
CLEANUP = -1  # trace_row of the frees the compiler adds at the end


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


def compile_allocations(table) -> AllocProgram:
    """The allocation program of a (validated) trace's allocation rows."""
    walk = Walk(table)
    code, slot, ref = walk.code, walk.slot, walk.ref
    # Cleanup frees: the slots still live at the end, and those no trace pointer reaches any
    # more (a NULL result the replay's allocator may not return, a pointer returned while live).
    ended = np.zeros(walk.slots, bool)
    freed = ref[(code == A_FREE) | (code == A_REALLOC)]
    ended[freed[freed >= 0]] = True
    remaining = np.sort(walk.remaining)
    ended[remaining] = True
    cleanup = np.concatenate([remaining, np.flatnonzero(~ended)]).astype(np.int32)
    skipped, notes = {}, {}
    for index, name in ((R_FAILED, "failed_in_trace"), (R_UNKNOWN_FREE, "free_of_unknown_pointer")):
        if walk.counter(index):
            skipped[name] = walk.counter(index)
    for index, name in ((R_UNKNOWN_REALLOC, "realloc_of_unknown_pointer_as_new"),
                        (R_LIVE_REUSED, "pointer_returned_while_live")):
        if walk.counter(index):
            notes[name] = walk.counter(index)
    m = len(cleanup)
    return AllocProgram(
        code=np.concatenate([code, np.full(m, A_FREE, np.int8)]),
        slot=np.concatenate([slot, np.full(m, -1, np.int32)]),
        ref=np.concatenate([ref, cleanup]),
        size=np.concatenate([walk.size, np.zeros(m, np.int64)]),
        arg=np.concatenate([walk.arg, np.zeros(m, np.int64)]),
        trace_row=np.concatenate([walk.row, np.full(m, CLEANUP, np.int32)]),
        slots=walk.slots, events=walk.events,
        peak_requested_bytes=walk.counter(R_PEAK_BYTES), peak_op=walk.counter(R_PEAK_OP),
        end_requested_bytes=walk.counter(R_END_BYTES), cleanup_start=len(code),
        threads=int(len(np.unique(walk.tid))), skipped=skipped, notes=notes)
