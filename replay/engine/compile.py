"""Compile a trace into an op program: resolve every call to (mapping id, offset, length) pieces.

The trace's addresses are only names: the replay's mappings land wherever this kernel (or the
emulated policy) puts them. The compiler walks the trace through a ``LiveSet`` of the traced
process's address space and emits one engine op per piece, so that

- a partial munmap, madvise or mprotect becomes ops on the pieces it covers;
- a call on memory the trace never mapped (mapped before recording began) is skipped and
  counted;
- the brk heap is replayed as a region of the replay's own (see OP_HEAP_RESERVE): brk calls
  grow and shrink it in place, never the replay process's program break; memory of the heap is
  only ever freed back into its reservation, so nothing can move into it;
- MAP_FIXED is only ever replayed inside a mapping the replay itself created; anywhere else it
  becomes a normal mmap at a kernel-chosen address (counted), so a hostile trace cannot clobber
  foreign memory; MAP_FIXED_NOREPLACE becomes a plain hint (counted): as root it would map
  page 0 when asked to;
- a hugetlb mapping takes its whole huge pages (the kernel rounds its length up to the huge page
  size: MAP_HUGE_* bits, else the default), is never mapped with MAP_FIXED (a MAP_FIXED hugetlb
  call unmaps its rounded window even when it then fails), and a call that would cut one of its
  huge pages is skipped, as the kernel refuses it;
- protection is tracked per page range through every call, and memory is only touched or read
  where it is readable or writable; a shared mapping grown by mremap is never touched beyond its
  shared memory object (the real program would get SIGBUS there too);
- whatever the trace leaves mapped is released by cleanup ops at the end.

Memory is touched when the workload would first use it (the rule --touch documents): not
inside the mmap,
but after the madvise and mprotect calls the same thread makes on it before its next mmap,
munmap, mremap or brk call, so that an application's MADV_HUGEPAGE after mmap takes effect as it
did when recorded. A touch that falls right after its own call (nothing in between) is folded into
that call's op, which keeps programs as small and fast as touching inside the call.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from traces import MmreplayError
from traces.format import column_np, op_names
from traces.host import available_memory_bytes, hugetlb_page_sizes, vm_max_map_count
from traces.liveset import CALL_FIELDS, LiveSet, call_fields
from traces.schema import (MADV, MAP, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE,
                           MAP_HUGE_SHIFT, MAP_SHARED, MM_OPS, MREMAP_DONTUNMAP, MREMAP_FIXED,
                           MREMAP_MAYMOVE, OP_CODE, PMD_SIZE, PROT_READ, PROT_WRITE)
from traces.summary import heap_sizes
from traces.units import fmt_bytes

from replay.running.config import ReplayConfig
from replay.engine.policy import emulated_flags, placement, remap_placement
from replay.measure.probes import vma_count
from replay.engine.program import (ACCESS_BEFORE, CLEANUP, LOCKSTEP, OP_HEAP_FREE, OP_HEAP_GROW,
                                   OP_HEAP_RESERVE, OP_MADVISE, OP_MMAP, OP_MMAP_FIXED_IN,
                                   OP_MPROTECT, OP_MREMAP, OP_MUNMAP, OP_TOUCH, PLACE_KERNEL,
                                   THP_ADVISE, TOUCH_READ, TOUCH_WRITE, OpProgram)

# Largest single mapping the compiler accepts (x86-64 user space is 128 TiB).
MAX_MAPPING_BYTES = 1 << 47
USER_SPACE_END = 1 << 47
# Advice that only changes how our own pages are handled; anything else (MADV_HWPOISON,
# MADV_SOFT_OFFLINE, unknown numbers) is never issued.
SAFE_ADVICE = frozenset(v for k, v in MADV.items() if k not in ("MADV_HWPOISON", "MADV_SOFT_OFFLINE"))
THP_ADVICE = frozenset((MADV["MADV_HUGEPAGE"], MADV["MADV_NOHUGEPAGE"]))
# MAP_* bits passed through to the replay's mmap; MAP_FIXED is handled by the compiler and file
# mappings become anonymous. Unknown bits are dropped (and counted).
KNOWN_MAP_BITS = 0
for _name in ("MAP_SHARED", "MAP_PRIVATE", "MAP_ANONYMOUS", "MAP_32BIT", "MAP_GROWSDOWN",
              "MAP_LOCKED", "MAP_NORESERVE", "MAP_POPULATE", "MAP_NONBLOCK", "MAP_STACK",
              "MAP_HUGETLB", "MAP_FIXED_NOREPLACE"):
    KNOWN_MAP_BITS |= MAP[_name]
HUGETLB_SIZE_BITS = 0x3F << 26
MAP_HUGETLB, MAP_NORESERVE, MAP_STACK = MAP["MAP_HUGETLB"], MAP["MAP_NORESERVE"], MAP["MAP_STACK"]
MADV_HUGEPAGE, MADV_NOHUGEPAGE = MADV["MADV_HUGEPAGE"], MADV["MADV_NOHUGEPAGE"]
MADV_GUARD_INSTALL = MADV["MADV_GUARD_INSTALL"]
# Memory compiling takes per trace event (Python lists of the columns and of the ops, the live
# set), checked against what the machine has before starting. Measured by
# benchmarks/hostile_scaling.py: a peak Python heap of ~540 B per event (tracemalloc), ~380 B of
# RSS growth; issue 12 reports ~1.4 KB of RSS on a hostile trace. The estimate is above all of them.
COMPILE_BYTES_PER_EVENT = 1536
PROT_BITS = 0x7
SKIPPED_FILE = -2   # id of pieces whose file mmap was skipped (--files skip)
MAP_TYPE = 0x03     # MAP_SHARED, MAP_PRIVATE or MAP_SHARED_VALIDATE
# VMAs kept free for the replay's own needs below vm.max_map_count: a stack and a guard per OS
# thread, Python's and numba's later allocations, probes (what they hold already is counted:
# about 450 VMAs when compiling, measured).
VMA_HEADROOM = 1024


def huge_page_size(flags: int, default: int, supported: frozenset) -> int:
    """The huge page size a MAP_HUGETLB mmap with ``flags`` gets here, 0 when the kernel has no
    such size (it then refuses the call)."""
    shift = (flags >> MAP_HUGE_SHIFT) & 0x3F
    size = (1 << shift) if shift else default
    return size if size in supported else 0


class _Emitter:
    """Collects ops as Python lists and tracks live replayed bytes for the budget and the peak."""

    def __init__(self, config: ReplayConfig):
        self.config = config
        self.columns = {name: [] for name in ("code", "mode", "map_id", "ref_id", "offset",
                                              "length", "arg", "prot", "flags", "trace_row")}
        self.id_length: list[int] = []
        self.id_anon: list[bool] = []
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_op = 0
        self.peak_settled_op: int | None = None
        self.access_on = config.access.kind in ("stream", "random")
        self.touch_on = config.touch != "none"
        self.lockstep_on = config.access.kind == "lockstep"
        # Touches not yet emitted: per thread, in the order the memory became usable.
        self.pending: dict[int, list[_PendingTouch]] = {}
        self.pending_threads: dict[int, dict[int, int]] = {}  # map_id -> {tid: entries}
        # Mappings that may still join the lockstep set on their first touch (whole, readable,
        # never mprotected, unmapped in part or guarded).
        self.lockstep_ready: set[int] = set()
        # Shared mappings: id -> (offset of the mapping's start in its shared memory object, the
        # object's size). mremap can grow a mapping past its object; those bytes are never touched.
        self.objects: dict[int, tuple[int, int]] = {}
        self.huge: dict[int, int] = {}  # hugetlb mapping id -> its huge page size
        self.heap_id = -1
        self.heap_advice = THP_ADVISE if config.thp != "as-recorded" else 0

    def within_object(self, map_id: int, offset: int, length: int) -> bool:
        """Whether bytes [offset, offset + length) of mapping ``map_id`` can be touched."""
        if map_id not in self.objects:
            return True
        start, size = self.objects[map_id]
        return start + offset + length <= size

    def new_id(self, length: int, anon: bool) -> int:
        self.id_length.append(length)
        self.id_anon.append(anon)
        return len(self.id_length) - 1

    def emit(self, code, row, map_id=-1, ref_id=-1, offset=0, length=0, arg=0, prot=0, flags=0,
             mode=0, live_delta=0):
        c = self.columns
        c["code"].append(code)
        c["mode"].append(mode)
        c["map_id"].append(map_id)
        c["ref_id"].append(ref_id)
        c["offset"].append(offset)
        c["length"].append(length)
        c["arg"].append(arg)
        c["prot"].append(prot)
        c["flags"].append(flags)
        c["trace_row"].append(row)
        self.live_bytes += live_delta
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self.peak_op = len(c["code"])
            self.peak_settled_op = None
        elif live_delta < 0 and self.peak_settled_op is None:
            # The peak's figures are sampled just before live bytes first fall again, so that
            # the memory live at the peak has been touched (touches come before that call).
            self.peak_settled_op = len(c["code"]) - 1

    def touch_mode(self, prot: int) -> int:
        if not self.touch_on:
            return 0
        if prot & PROT_WRITE:
            return TOUCH_WRITE
        return TOUCH_READ if prot & PROT_READ else 0

    def access_mode(self, prot: int) -> int:
        return ACCESS_BEFORE if self.access_on and prot & PROT_READ else 0

    def piece_access_mode(self, piece) -> int:
        if not self.within_object(piece.map_id, piece.map_offset, piece.length):
            return 0
        return self.access_mode(piece.prot)

    def mmap_mode(self, map_id: int, prot: int) -> int:
        """Mode bits of a new mapping's op for lockstep membership (the touch comes later)."""
        if not self.lockstep_on or not prot & PROT_READ:
            return 0
        if not self.touch_on:
            return LOCKSTEP  # nothing will touch it: it joins the sweeps when mapped
        self.lockstep_ready.add(map_id)
        return 0

    # -- touching as the workload's first use (the rule of the module docstring)

    def defer_touch(self, tid: int, map_id: int, start: int, end: int, prot: int, row: int,
                    op: int | None = None) -> None:
        """The memory [start, end) of ``map_id`` (trace addresses), made usable by op ``op``
        (default: the op just emitted), is to be touched when ``tid`` would first use it."""
        if not self.touch_on or not self.touch_mode(prot) or end <= start:
            return
        if op is None:
            op = len(self.columns["code"]) - 1
        entry = _PendingTouch(map_id, start, end, prot, op, row)
        self.pending.setdefault(tid, []).append(entry)
        holders = self.pending_threads.setdefault(map_id, {})
        holders[tid] = holders.get(tid, 0) + 1

    def flush_thread(self, tid: int, row: int, live: LiveSet) -> None:
        """Touch everything ``tid`` made usable: it makes a call other than madvise/mprotect."""
        for entry in self.pending.pop(tid, ()):
            self._forget(entry.map_id, tid)
            self._touch(entry, row, live)

    def flush_pieces(self, pieces, row: int, live: LiveSet, except_tid: int | None = None) -> None:
        """Touch pending memory of the mappings ``pieces`` belong to, held by threads other
        than ``except_tid``: a call on that memory comes next."""
        for map_id in {p.map_id for p in pieces if p.map_id in self.pending_threads}:
            for tid in [t for t in self.pending_threads.get(map_id, {}) if t != except_tid]:
                keep = []
                for entry in self.pending.get(tid, ()):
                    if entry.map_id == map_id:
                        self._forget(map_id, tid)
                        self._touch(entry, row, live)
                    else:
                        keep.append(entry)
                self.pending[tid] = keep

    def flush_all(self, row: int, live: LiveSet) -> None:
        for tid in list(self.pending):
            self.flush_thread(tid, row, live)

    def forget_lockstep(self, pieces) -> None:
        for piece in pieces:
            self.lockstep_ready.discard(piece.map_id)

    def _forget(self, map_id: int, tid: int) -> None:
        holders = self.pending_threads[map_id]
        holders[tid] -= 1
        if not holders[tid]:
            del holders[tid]
            if not holders:
                del self.pending_threads[map_id]

    def _touch(self, entry: "_PendingTouch", row: int, live: LiveSet) -> None:
        """Touch what is still live of ``entry``, with the protection each piece has now."""
        pieces = [p for p in live.overlapping(entry.start, entry.end) if p.map_id == entry.map_id]
        lockstep = LOCKSTEP if entry.map_id in self.lockstep_ready else 0
        self.lockstep_ready.discard(entry.map_id)
        c = self.columns
        if (len(pieces) == 1 and entry.op == len(c["code"]) - 1 and pieces[0].prot == entry.prot
                and pieces[0].start <= entry.start and pieces[0].end >= entry.end):
            # Nothing happened since the call that made it usable: touch inside that call.
            c["mode"][entry.op] |= self.touch_mode(entry.prot) | lockstep
            return
        for piece in pieces:
            start, end = max(piece.start, entry.start), min(piece.end, entry.end)
            mode = self.touch_mode(piece.prot)
            if mode and end > start:
                self.emit(OP_TOUCH, row, piece.map_id, offset=piece.map_offset + start - piece.start,
                          length=end - start, arg=entry.row, mode=mode | lockstep)
                lockstep = 0

    def unmap_pieces(self, pieces, row) -> None:
        heap = []  # (offset, length) runs of heap memory, neighbours joined: one free each
        for piece in pieces:
            self.lockstep_ready.discard(piece.map_id)
            if piece.map_id == self.heap_id and piece.map_id >= 0:
                if heap and heap[-1][0] + heap[-1][1] == piece.map_offset:
                    heap[-1][1] += piece.length
                else:
                    heap.append([piece.map_offset, piece.length, piece.prot])
            elif piece.map_id >= 0:
                self.emit(OP_MUNMAP, row, piece.map_id, offset=piece.map_offset,
                          length=piece.length, mode=self.piece_access_mode(piece),
                          live_delta=-piece.length)
        for offset, length, prot in heap:
            # Heap memory goes back into the heap's reservation (with the reservation's advice),
            # never out of it.
            self.emit(OP_HEAP_FREE, row, self.heap_id, offset=offset, length=length,
                      mode=self.access_mode(prot) | self.heap_advice, live_delta=-length)

    def cuts_huge_page(self, live: LiveSet, *addresses: int) -> bool:
        """Whether a call with these boundaries would split a hugetlb mapping inside a huge page
        (the kernel refuses it with EINVAL: a huge page is never split)."""
        if not self.huge:
            return False
        for address in addresses:
            piece = live.piece_at(address)
            if piece is not None and piece.start < address and piece.map_id in self.huge:
                if (piece.map_offset + address - piece.start) % self.huge[piece.map_id]:
                    return True
        return False


class _PendingTouch:
    __slots__ = ("map_id", "start", "end", "prot", "op", "row")

    def __init__(self, map_id: int, start: int, end: int, prot: int, op: int, row: int):
        self.map_id, self.start, self.end, self.prot, self.op, self.row = (
            map_id, start, end, prot, op, row)


def _single_mapping_span(pieces, start: int, end: int):
    """(map_id, offset) when [start, end) is exactly covered by one replayed mapping, else None."""
    if not pieces or pieces[0].start > start or pieces[-1].end < end:
        return None
    first = pieces[0]
    if first.map_id < 0:
        return None
    for before, after in zip(pieces, pieces[1:]):
        if (after.map_id != first.map_id or after.start != before.end
                or after.map_offset != before.map_offset + before.length):
            return None
    return first.map_id, first.map_offset + (start - first.start)


def _file_offset(table: pa.Table, cache: list, row: int, anon: bool) -> int:
    """The recorded file offset of a file mmap (0 for anonymous ones); the column is read once."""
    if anon:
        return 0
    if not cache:
        cache.append(column_np(table, "offset"))
    return int(cache[0][row])


def _count(bucket: dict, reason: str, n: int = 1) -> None:
    bucket[reason] = bucket.get(reason, 0) + n


def _unknown_range(pieces, call: str, skipped: dict) -> bool:
    """Whether a ``call`` (munmap, madvise, mprotect, mremap) finds none of its range live: no
    mapping the trace showed, so nothing to replay (counted as CALL_unknown_range)."""
    if not pieces:
        _count(skipped, f"{call}_unknown_range")
    return not pieces


def compile_trace(table: pa.Table, config: ReplayConfig, max_live_bytes: int | None = None,
                  stop_event: int | None = None) -> OpProgram:
    """Turn a validated trace table into an ``OpProgram`` for ``config``.

    ``stop_event`` compiles only events [0, stop_event) (``layout --at``). Raises MmreplayError
    when the replayed mappings would at some point exceed ``max_live_bytes``.
    """
    n_events = table.num_rows if stop_event is None else min(stop_event, table.num_rows)
    table = table.slice(0, n_events)
    # Allocation-level rows (record --malloc) are replayed by `replay --allocator`: the mm
    # program is compiled from the mm rows alone, and maps its ops back to the trace's rows.
    mm_rows = np.flatnonzero(op_names(table) < len(MM_OPS))
    allocation_calls = n_events - len(mm_rows)
    if allocation_calls:
        table = table.take(pa.array(mm_rows))
    mm_events = table.num_rows
    available = available_memory_bytes()
    if available is not None and mm_events * COMPILE_BYTES_PER_EVENT > available:
        raise MmreplayError(f"replaying {mm_events} events needs about "
                            f"{fmt_bytes(mm_events * COMPILE_BYTES_PER_EVENT)} of memory to "
                            f"prepare, more than the {fmt_bytes(available)} available")
    calls = call_fields(table, names=CALL_FIELDS + ("errno", "hint"))
    codes, errno, tids = calls["op"], calls["errno"], calls["tid"]
    addr, length = calls["addr"], calls["length"]
    new_addr, new_length = calls["new_addr"], calls["new_length"]
    hint, prot, flags = calls["hint"], calls["prot"], calls["flags"]
    fd, advice = calls["fd"], calls["advice"]
    file_offsets = []  # the offset column, read at the first file mmap (as a numpy array)

    out = _Emitter(config)
    huge_default, huge_supported = hugetlb_page_sizes()
    # Every live piece can be a VMA of its own. At vm.max_map_count every mmap fails, Python's,
    # numba's and thread stacks' included: MemoryError anywhere, a thread dead before it starts.
    map_count_limit = vm_max_map_count()
    max_pieces = max(0, map_count_limit - vma_count() - VMA_HEADROOM)
    live = LiveSet()
    skipped: dict = {}
    notes: dict = {}
    mmap_c, munmap_c, mremap_c = OP_CODE["mmap"], OP_CODE["munmap"], OP_CODE["mremap"]
    madvise_c, mprotect_c, brk_c = OP_CODE["madvise"], OP_CODE["mprotect"], OP_CODE["brk"]
    # --thp always/never: each new anonymous mapping gets the run's advice. always, like
    # enabled=always, leaves out MAP_STACK mappings and keeps the trace's MADV_NOHUGEPAGE (and
    # MADV_HUGEPAGE, which it implies); never drops the trace's MADV_HUGEPAGE.
    thp_override = config.thp != "as-recorded"
    top_residue = None
    # Per mapping id: the THP advice the trace last gave any part of it, or MADV_NOHUGEPAGE for
    # MAP_STACK mappings (the kernel's VM_NOHUGEPAGE); kept when an mremap has to be emulated.
    thp_of: dict[int, int] = {}

    def advise_new(replayed_flags: int, new_id: int) -> int:
        """THP_ADVISE for a new private mapping under --thp always/never. ``replayed_flags`` are
        the emulated kernel's (policy.emulated_flags): MAP_STACK is VM_NOHUGEPAGE since 6.7.5, so
        enabled=always gives stacks no huge pages there, but a no-align (<= 6.6) kernel's
        enabled=always does, and its replay advises them like any other mapping."""
        if replayed_flags & MAP_STACK:
            thp_of[new_id] = MADV_NOHUGEPAGE
        if not thp_override or replayed_flags & MAP_SHARED:
            return 0
        if config.thp == "always" and replayed_flags & MAP_STACK:
            return 0
        return THP_ADVISE

    if allocation_calls:
        skipped["allocation_calls"] = allocation_calls
    # The brk heap: its size after each brk call; its reservation is the largest size.
    heap_rows, heap_size_after, heap_start = heap_sizes(table)
    heap_after = dict(zip(heap_rows.tolist(), heap_size_after.tolist()))
    heap_extent = max(heap_after.values(), default=0)
    heap_size = heap_grown = 0
    heap_too_large = heap_extent > MAX_MAPPING_BYTES

    for row in range(mm_events):
        op = codes[row]
        if errno[row]:
            _count(skipped, "failed_in_trace")
            continue
        tid = tids[row]
        if op != madvise_c and op != mprotect_c:
            out.flush_thread(tid, row, live)
        if op == brk_c:
            if row not in heap_after or heap_too_large:
                _count(skipped, "bad_length" if heap_too_large else "brk_without_result")
                continue
            new_size = heap_after[row]
            if new_size == heap_size:
                _count(skipped, "brk_no_change")  # a query (brk(NULL)) or a refused move
                continue
            if out.heap_id < 0:
                out.heap_id = out.new_id(heap_extent, True)
                out.emit(OP_HEAP_RESERVE, row, out.heap_id, length=heap_extent,
                         arg=heap_start % PMD_SIZE, mode=out.heap_advice)
            low, high = sorted((heap_start + heap_size, heap_start + new_size))
            out.flush_pieces(live.overlapping(low, high), row, live)
            if new_size > heap_size:
                if live.overlapping(low, high):
                    # Hostile: the kernel grows brk only into free address space.
                    out.unmap_pieces(live.isolate(low, high), row)
                    _count(notes, "overlap_implicit_unmap")
                out.emit(OP_HEAP_GROW, row, out.heap_id, offset=heap_size,
                         length=new_size - heap_size, live_delta=new_size - heap_size)
                live.map(low, high, out.heap_id, PROT_READ | PROT_WRITE, True, heap_size)
                out.defer_touch(tid, out.heap_id, low, high, PROT_READ | PROT_WRITE, row)
                heap_grown += new_size - heap_size
            else:
                out.unmap_pieces(live.unmap(low, high), row)
            heap_size = new_size
            continue
        start, size = addr[row], length[row]
        end = start + size

        if op == mmap_c:
            if size == 0 or size > MAX_MAPPING_BYTES or end > (1 << 64):
                _count(skipped, "bad_length")
                continue
            anon = bool(flags[row] & MAP_ANONYMOUS) or fd[row] < 0
            overlapped = live.overlapping(start, end)
            out.flush_pieces(overlapped, row, live)
            if not anon and config.files == "skip":
                live.map(start, end, SKIPPED_FILE, prot[row], False)
                _count(skipped, "file_mmap")
                continue
            if not anon:
                _count(notes, "file_mmap_as_anon")
            mmap_flags = (flags[row] | MAP_ANONYMOUS) & (KNOWN_MAP_BITS | HUGETLB_SIZE_BITS)
            if mmap_flags >= 1 << 31:
                mmap_flags -= 1 << 32  # bit 31 (a huge page size bit): flags are a C int
            if mmap_flags & MAP_HUGETLB and mmap_flags & MAP_NORESERVE:
                # Unreserved huge pages SIGBUS when touched with the pool empty: reserve them, so
                # the mmap fails (counted) instead of the replay crashing.
                mmap_flags &= ~MAP_NORESERVE
                _count(notes, "hugetlb_noreserve_dropped")
            placement_flags = mmap_flags  # the kernels emulated never aligned NOREPLACE calls
            if mmap_flags & MAP_FIXED_NOREPLACE:
                mmap_flags &= ~MAP_FIXED_NOREPLACE
                _count(notes, "fixed_noreplace_as_hint")
            if mmap_flags != emulated_flags(config.policy, mmap_flags):
                mmap_flags = emulated_flags(config.policy, mmap_flags)
                _count(notes, "map_stack_as_before_6_7")
            if flags[row] & 0xFFFFFFFF & ~(KNOWN_MAP_BITS | HUGETLB_SIZE_BITS | MAP_FIXED | 0x800
                                           | 0x1000):
                _count(notes, "unknown_map_flags_dropped")
            huge = 0
            if mmap_flags & MAP_HUGETLB:
                huge = huge_page_size(mmap_flags & 0xFFFFFFFF, huge_default, huge_supported)
                if not huge:
                    _count(skipped, "hugetlb_size_unsupported")  # the kernel refuses it here
                    continue
                if start % huge:
                    _count(skipped, "hugetlb_unaligned")  # no kernel returns or takes this
                    continue
                # The kernel maps (and, for MAP_FIXED, first unmaps) whole huge pages.
                size = -(-size // huge) * huge
                end = start + size
                if size > MAX_MAPPING_BYTES or end > (1 << 64):
                    _count(skipped, "bad_length")
                    continue
            if out.cuts_huge_page(live, start, end):
                _count(skipped, "hugetlb_unaligned")
                continue
            map_prot = prot[row] & PROT_BITS
            new = out.new_id(size, anon)
            mode = out.mmap_mode(new, map_prot) | advise_new(mmap_flags, new)
            if flags[row] & MAP_FIXED:
                # Never a hugetlb MAP_FIXED: it unmaps its rounded window even when it then fails;
                # never inside the heap's reservation (only the heap's own ops change that).
                span = None if huge else _single_mapping_span(overlapped, start, end)
                if span is not None and span[0] != out.heap_id:
                    # Inside a mapping the replay made itself: MAP_FIXED there is safe.
                    out.forget_lockstep(overlapped)
                    out.emit(OP_MMAP_FIXED_IN, row, new, ref_id=span[0], offset=span[1],
                             length=size, prot=map_prot, flags=mmap_flags, mode=mode)
                else:
                    out.unmap_pieces(live.isolate(start, end), row)
                    place, residue = placement(config.policy, size, placement_flags, 0, anon,
                                               start, _file_offset(table, file_offsets, row, anon))
                    out.emit(OP_MMAP, row, new, offset=residue, length=size, prot=map_prot,
                             flags=mmap_flags, mode=mode | place, live_delta=size)
                    _count(notes, "hugetlb_fixed_kernel_placed" if huge else "fixed_relocated")
                _new_mapping(out, new, size, mmap_flags, huge)
                live.map(start, end, new, map_prot, anon)
                out.defer_touch(tid, new, start, end, map_prot, row)
                continue
            if overlapped:
                # The trace lost a munmap (or is hostile): the kernel never returns live memory.
                out.unmap_pieces(live.isolate(start, end), row)
                _count(notes, "overlap_implicit_unmap")
            if top_residue is None and not hint[row]:
                top_residue = end % PMD_SIZE
            map_hint = hint[row]
            if map_hint >= USER_SPACE_END:
                map_hint = 0  # not a user-space address: the kernel would ignore it anyway
                _count(notes, "hint_outside_user_space_dropped")
            place, residue = placement(config.policy, size, placement_flags, map_hint, anon,
                                       start, _file_offset(table, file_offsets, row, anon))
            out.emit(OP_MMAP, row, new, offset=residue, length=size, arg=map_hint, prot=map_prot,
                     flags=mmap_flags, mode=mode | place, live_delta=size)
            _new_mapping(out, new, size, mmap_flags, huge)
            live.map(start, end, new, map_prot, anon)
            out.defer_touch(tid, new, start, end, map_prot, row)

        elif op == munmap_c:
            if size == 0 or end > (1 << 64):
                _count(skipped, "bad_length")
                continue
            if out.cuts_huge_page(live, start, end):
                _count(skipped, "hugetlb_unaligned")
                continue
            out.flush_pieces(live.overlapping(start, end), row, live)
            pieces = live.unmap(start, end)
            if _unknown_range(pieces, "munmap", skipped):
                continue
            if any(p.map_id == SKIPPED_FILE for p in pieces):
                _count(skipped, "file_munmap")
            out.unmap_pieces(pieces, row)

        elif op in (madvise_c, mprotect_c):
            if size == 0 or end > (1 << 64):
                _count(skipped, "bad_length")
                continue
            name = "madvise" if op == madvise_c else "mprotect"
            if out.cuts_huge_page(live, start, end):
                _count(skipped, "hugetlb_unaligned")
                continue
            if op == madvise_c:
                if advice[row] not in SAFE_ADVICE:
                    _count(skipped, "madvise_unsafe_advice")
                    continue
                if config.thp == "never" and advice[row] == MADV_HUGEPAGE:
                    _count(skipped, "madvise_thp_overridden")
                    continue
            # Another thread's call on memory this one has not used yet: it is used first.
            out.flush_pieces(live.overlapping(start, end), row, live, except_tid=tid)
            if op == madvise_c:
                pieces = live.isolate(start, end)
            else:
                old = {p.start: p.prot for p in live.isolate(start, end)}
                pieces = live.protect(start, end, prot[row] & PROT_BITS)
            if _unknown_range(pieces, name, skipped):
                continue
            if op == mprotect_c or advice[row] == MADV_GUARD_INSTALL:
                out.forget_lockstep(pieces)
            for piece in pieces:
                if piece.map_id < 0:
                    continue
                if op == madvise_c:
                    out.emit(OP_MADVISE, row, piece.map_id, offset=piece.map_offset,
                             length=piece.length, arg=advice[row])
                    if advice[row] in THP_ADVICE:
                        thp_of[piece.map_id] = advice[row]
                else:
                    new_prot = prot[row] & PROT_BITS
                    out.emit(OP_MPROTECT, row, piece.map_id, offset=piece.map_offset,
                             length=piece.length, prot=new_prot)
                    if (new_prot & PROT_WRITE and not old[piece.start] & PROT_WRITE
                            and out.within_object(piece.map_id, piece.map_offset, piece.length)):
                        out.defer_touch(tid, piece.map_id, piece.start, piece.end, new_prot, row)

        elif op == mremap_c:
            grown = new_length[row]
            target = new_addr[row]
            if (size == 0 or grown == 0 or grown > MAX_MAPPING_BYTES or end > (1 << 64)
                    or target + grown > (1 << 64)):
                _count(skipped, "bad_length")
                continue
            if out.cuts_huge_page(live, start, end, target, target + grown):
                _count(skipped, "hugetlb_unaligned")
                continue
            out.flush_pieces(live.overlapping(start, end), row, live)
            out.flush_pieces(live.overlapping(target, target + grown), row, live)
            pieces = live.isolate(start, end)
            if _unknown_range(pieces, "mremap", skipped):
                continue
            if any(p.map_id == SKIPPED_FILE for p in pieces):
                _count(skipped, "file_mremap")
                continue
            if any(p.map_id in out.huge for p in pieces):
                # The kernel rounds both lengths to huge pages and refuses growth: not replayed.
                _count(skipped, "hugetlb_mremap")
                continue
            out.forget_lockstep(pieces)
            span = _single_mapping_span(pieces, start, end)
            if span is not None and span[0] == out.heap_id:
                span = None  # moving heap pages out would leave a hole in its reservation
            old_prot, anon = pieces[0].prot, pieces[0].anon
            kept_thp = thp_of.get(pieces[0].map_id)
            tail_prot = pieces[-1].prot  # what the growth's pages allow
            dont_unmap = bool(flags[row] & MREMAP_DONTUNMAP)
            if dont_unmap and target < end and start < target + grown:
                # The old range stays: a new one over it is refused by the kernel (EINVAL).
                _count(skipped, "mremap_overlapping_ranges")
                continue
            if flags[row] & MREMAP_FIXED:
                _count(notes, "mremap_fixed_relocated")
            new = out.new_id(grown, anon)
            # The live set follows the call (a mapping the replay made itself moves with its
            # pages' protections); whatever else the trace's target range held was unmapped by
            # the kernel.
            _, _, displaced = live.mremap(start, end, target, target + grown, flags[row], new,
                                          keep_pieces=span is not None)
            out.unmap_pieces(displaced, row)
            if kept_thp is not None:
                thp_of[new] = kept_thp
            if span is None:
                # Several replayed mappings (neighbours merged in the traced process): emulate.
                # The new mapping keeps what the kernel's mremap keeps: the THP advice.
                if not dont_unmap:
                    out.unmap_pieces(pieces, row)
                mode = out.mmap_mode(new, old_prot)
                if thp_override and not (config.thp == "always" and kept_thp == MADV_NOHUGEPAGE):
                    mode |= THP_ADVISE
                out.emit(OP_MMAP, row, new, length=grown, prot=old_prot,
                         flags=0x02 | MAP_ANONYMOUS,
                         mode=mode | placement(config.policy, grown, 0x02 | MAP_ANONYMOUS, 0, True)[0],
                         live_delta=grown)
                created = len(out.columns["code"]) - 1
                if kept_thp is not None and (not thp_override or (
                        config.thp == "always" and kept_thp == MADV_NOHUGEPAGE)):
                    out.emit(OP_MADVISE, row, new, length=grown, arg=kept_thp)
                _count(notes, "mremap_emulated_by_mmap")
            else:
                remap_flags = flags[row] & (MREMAP_MAYMOVE | MREMAP_DONTUNMAP)
                if flags[row] & MREMAP_FIXED:
                    remap_flags |= MREMAP_MAYMOVE
                if span[0] in out.objects:
                    object_start, object_size = out.objects[span[0]]
                    out.objects[new] = (object_start + span[1], object_size)
                touch_growth = grown > size and out.within_object(new, size, grown - size)
                if grown > size and not touch_growth and out.touch_on:
                    _count(notes, "shared_growth_not_touched")
                out.emit(OP_MREMAP, row, span[0], ref_id=new, offset=span[1], length=size,
                         arg=grown, flags=remap_flags, prot=tail_prot,
                         mode=(PLACE_KERNEL if span[0] in out.objects or span[0] in out.huge else
                               remap_placement(config.policy, size, grown, remap_flags, anon)),
                         live_delta=grown - (0 if dont_unmap else size))
                created = len(out.columns["code"]) - 1
            if span is None:
                out.defer_touch(tid, new, target, target + grown, old_prot, row, created)
            elif touch_growth:
                out.defer_touch(tid, new, target + size, target + grown, tail_prot, row, created)

        if len(live) > max_pieces:
            raise MmreplayError(
                f"the trace keeps more than {max_pieces} mappings (VMAs) live at event {int(mm_rows[row])}: "
                f"vm.max_map_count allows {map_count_limit} here and the replay keeps "
                f"{map_count_limit - max_pieces} for itself (Python, its threads, the results)")
        if max_live_bytes is not None and out.live_bytes > max_live_bytes:
            raise MmreplayError(
                f"the trace keeps more than the memory budget mapped at event {int(mm_rows[row])}: "
                f"{fmt_bytes(out.live_bytes)} live > --max-live {fmt_bytes(max_live_bytes)} "
                "(raise --max-live if this machine can take it)")

    # What was made usable and not touched yet is used before the trace ends.
    out.flush_all(max(n_events - 1, 0), live)
    # Live pieces when results are sampled: at the (first) peak and at the end, before cleanup.
    end_pieces = _pieces_array(live)
    cleanup_start = len(out.columns["code"])
    peak_op = out.peak_op
    if out.peak_bytes:
        peak_op = out.peak_settled_op if out.peak_settled_op is not None else cleanup_start
    peak_pieces = _pieces_at(out, peak_op)
    out.unmap_pieces([p for p in live.pieces() if p.map_id >= 0], CLEANUP)
    if out.heap_id >= 0:
        out.emit(OP_MUNMAP, CLEANUP, out.heap_id, length=heap_extent)
    c = out.columns
    trace_row = np.array(c["trace_row"], np.int32)
    if allocation_calls:
        from_trace = trace_row != CLEANUP
        trace_row[from_trace] = mm_rows[trace_row[from_trace]]
    return OpProgram(
        code=np.array(c["code"], np.int8), mode=np.array(c["mode"], np.int8),
        map_id=np.array(c["map_id"], np.int32), ref_id=np.array(c["ref_id"], np.int32),
        offset=np.array(c["offset"], np.int64), length=np.array(c["length"], np.int64),
        arg=np.array(c["arg"], np.int64), prot=np.array(c["prot"], np.int32),
        flags=np.array(c["flags"], np.int32), trace_row=trace_row,
        id_length=np.array(out.id_length, np.int64), id_anon=np.array(out.id_anon, bool),
        events=n_events, peak_live_bytes=out.peak_bytes, peak_op=peak_op,
        heap_id=out.heap_id, heap_peak_bytes=heap_extent if out.heap_id >= 0 else 0,
        heap_grown_bytes=heap_grown,
        cleanup_start=cleanup_start, peak_pieces=peak_pieces, end_pieces=end_pieces,
        skipped=skipped, notes=notes, top_residue=top_residue or 0)


def _new_mapping(out: _Emitter, map_id: int, size: int, mmap_flags: int, huge: int) -> None:
    """Remember what later calls on a new mapping must know: its huge page size, its object."""
    if huge:
        out.huge[map_id] = huge
    if mmap_flags & MAP_TYPE in (MAP_SHARED, MAP_TYPE):
        out.objects[map_id] = (0, size)


def _pieces_array(live: LiveSet) -> np.ndarray:
    rows = [(p.map_id, p.map_offset, p.length) for p in live.pieces() if p.map_id >= 0]
    return np.array(rows, np.int64).reshape(-1, 3)


def _pieces_at(out: _Emitter, op_count: int) -> np.ndarray:
    """Live (id, offset, length) pieces after the first ``op_count`` ops, by running the model."""
    from replay.engine.model import ProgramModel

    model = ProgramModel(np.array(out.id_length, np.int64))
    c = out.columns
    for i in range(op_count):
        model.apply(c["code"][i], c["map_id"][i], c["ref_id"][i], c["offset"][i], c["length"][i],
                    c["arg"][i], c["flags"][i])
    return model.pieces_array()
