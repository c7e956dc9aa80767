"""The op program: what the engine executes, as flat numpy arrays resolved before the first syscall.

Every mapping the replay creates gets an id; every later call names (id, offset, length), so the
hot loop never looks anything up by address. The program also carries the per-mapping table and
the live pieces at the two moments results are sampled (peak live bytes, end of trace).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Op codes of the engine (not the trace's op dictionary codes).
OP_MMAP = 0           # create mapping `map_id`: length, prot, flags, arg=hint, offset=start
                      # residue mod 2 MiB of an emulated THP placement (a file offset, else 0)
OP_MMAP_FIXED_IN = 1  # MAP_FIXED inside live mapping `ref_id` at `offset`: creates `map_id`
OP_MUNMAP = 2         # unmap (map_id, offset, length)
OP_MREMAP = 3         # remap (map_id, offset, length) to arg=new length, creating `ref_id`
OP_MADVISE = 4        # madvise (map_id, offset, length), arg=advice
OP_MPROTECT = 5       # mprotect (map_id, offset, length), prot
OP_TOUCH = 6          # touch (map_id, offset, length) as the workload's first use; no syscall.
#                       arg = the trace row of the call that made the memory usable (its thread
#                       touches it). Touches right after their call are folded into its mode.
# The brk heap: one mapping id whose whole extent (the trace's largest heap) is reserved
# PROT_NONE when the trace first calls brk; growing makes the next part read-write in place,
# shrinking frees its pages and makes it PROT_NONE again: one VMA growing upward, as brk's, without
# moving the replay process's own program break (Python's malloc uses it).
OP_HEAP_RESERVE = 7   # reserve `length` bytes for the heap `map_id`, starting at an address with
#                       arg = the traced heap's start modulo 2 MiB (its THP alignment)
OP_HEAP_GROW = 8      # make (map_id, offset, length) of the heap read-write (brk growth)
OP_HEAP_FREE = 9      # free (map_id, offset, length) of the heap: a fresh PROT_NONE piece of
#                       reservation mapped over it (MAP_FIXED inside the heap's own reservation), so
#                       its pages, advice and protection go as when brk shrinks (brk shrinking, or
#                       any unmap of heap memory: the reservation is only unmapped whole)
ENGINE_OP_NAMES = ("mmap", "mmap", "munmap", "mremap", "madvise", "mprotect", "touch",
                   "heap reservation", "brk", "brk")

# mode bits, per op
PLACE_MASK = 0x03     # mmap placement: see policy.py
PLACE_KERNEL, PLACE_PLAIN, PLACE_ALIGNED = 0, 1, 2
TOUCH_WRITE = 0x04    # write-touch the memory (OP_TOUCH; folded: the new memory of mmap, of mremap
#                       growth, of mprotect to writable)
TOUCH_READ = 0x08     # read-touch it (readable but not writable)
ACCESS_BEFORE = 0x10  # run the access pattern over the range before unmapping it (readable)
THP_ADVISE = 0x20     # apply the run's --thp advice to this new anonymous mapping
LOCKSTEP = 0x40       # the mapping joins the lockstep sweep set (readable, whole): on its mmap,
#                       or on its first touch when touching is on
CLEANUP = -1          # trace_row of ops the compiler adds to release what the trace left mapped

# id_state bits, per mapping
ID_MAPPED = 0x01      # the replay's call creating it succeeded; base[id] is valid
ID_TAINTED = 0x02     # a call on it failed: never read or write its memory again


@dataclass
class OpProgram:
    code: np.ndarray       # int8
    mode: np.ndarray       # int8
    map_id: np.ndarray     # int32
    ref_id: np.ndarray     # int32
    offset: np.ndarray     # int64 (int64 throughout: numba turns uint64/int64 mixes into floats)
    length: np.ndarray     # int64
    arg: np.ndarray        # int64 (hint, new length or advice)
    prot: np.ndarray       # int32
    flags: np.ndarray      # int32
    trace_row: np.ndarray  # int32: trace event of each op, CLEANUP for the compiler's own
    id_length: np.ndarray  # int64: length of each mapping when created
    id_anon: np.ndarray    # bool: anonymous in the trace (file mappings replayed as anon are False)
    events: int                    # trace rows
    peak_live_bytes: int           # of the replayed mappings
    peak_op: int                   # ops [0, peak_op) run when the peak is sampled: peak live
    #                                bytes reached, and its memory touched
    cleanup_start: int             # first cleanup op
    peak_pieces: np.ndarray        # (n, 3) int64: id, offset, length live at peak
    end_pieces: np.ndarray         # (n, 3) int64: id, offset, length live at end of trace
    heap_id: int = -1              # mapping id of the brk heap (-1: the trace never grows one)
    heap_peak_bytes: int = 0       # largest heap, the bytes reserved for it
    heap_grown_bytes: int = 0      # sum of all heap growth
    skipped: dict = field(default_factory=dict)   # reason -> trace events not replayed
    notes: dict = field(default_factory=dict)     # reason -> trace events replayed differently
    # End of the trace's first kernel-placed mmap modulo 2 MiB: where the recorded process's
    # top-down placement started (region.py starts the replay at the same residue).
    top_residue: int = 0

    @property
    def ops(self) -> int:
        return len(self.code)

    @property
    def ids(self) -> int:
        return len(self.id_length)

    def nbytes(self) -> int:
        per_op = [self.code, self.mode, self.map_id, self.ref_id, self.offset, self.length,
                  self.arg, self.prot, self.flags, self.trace_row]
        return sum(a.nbytes for a in per_op) + self.id_length.nbytes + self.id_anon.nbytes

    def ops_for_event(self, event: int) -> int:
        """Number of ops to run so that trace events [0, event) have been replayed."""
        # Ops are emitted in trace order, so trace_row is non-decreasing before the cleanup.
        return int(np.searchsorted(self.trace_row[: self.cleanup_start], event, side="left"))
