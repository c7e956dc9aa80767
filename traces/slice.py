"""Cut a trace down: a shorter valid trace by event range, time range or threads.

A cut out of the middle of a trace refers to memory mapped before it: the munmaps, mremaps,
mprotects and madvises it keeps would name ranges the slice never mapped. So the slice starts
by re-creating what was alive, as *synthetic* rows that the metadata lists:

- ``--events A:B`` and ``--time A:B`` keep a run of consecutive rows; before them come one mmap
  per live piece of memory at the cut (its current address, length and protection, its flags
  and file offset from the mmap or mremap that made it, without MAP_FIXED), an madvise for each
  range advised MADV_HUGEPAGE or MADV_NOHUGEPAGE, and brk calls that put the break where it was.
- ``--threads T,...`` keeps those threads' rows from the whole trace; memory another thread
  mapped is re-created just before the first kept row that touches it, by the thread that
  touches it (the other threads' munmaps are not kept: such memory stays alive).

Allocation rows (``record --malloc``) are kept as they are: a free or realloc of a block
allocated before the cut becomes one of a pointer the slice never allocated, which
``replay --allocator`` skips and counts.

Times are rebased so that the slice starts at 0. ``slice`` in the metadata says where the
slice came from (the parent's file and events sha256, the range asked for, the rows kept) and
which rows are synthetic; a slice of a slice keeps its parent's record as ``parent_slice``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .errors import MmreplayError
from .format import column_np, events_sha256, op_names, trace_metadata, validate, with_metadata
from .liveset import LiveSet
from .schema import (COLUMN_NAMES, MADV_HUGEPAGE, MADV_NOHUGEPAGE, MAP_ANONYMOUS, MAP_FIXED,
                     MAP_FIXED_NOREPLACE, MAP_PRIVATE, MM_OPS, MREMAP_DONTUNMAP, OP_CODE, OPS,
                     PAGE_SIZE)

MMAP, MUNMAP, MREMAP, MADVISE, MPROTECT, BRK = (OP_CODE[op] for op in MM_OPS)
THP_ADVICE = (MADV_HUGEPAGE, MADV_NOHUGEPAGE)
ADDRESS_LIMIT = 1 << 64


def page_end(start: int, length: int) -> int:
    return start + ((length + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))


class _Memory:
    """The traced process's memory while walking the trace: live pieces (with the flags, fd and
    offset of the call that made each mapping), THP advice ranges and the program break."""

    def __init__(self) -> None:
        self.live = LiveSet()
        self.advice = LiveSet()  # pieces whose "prot" field holds the MADV_* advice
        self.made_by: dict[int, tuple[int, int, int]] = {}  # map id -> (flags, fd, offset)
        self.first_break: int | None = None
        self.current_break: int | None = None

    def apply(self, op: int, row: dict, index: int) -> None:
        if row["errno"]:
            return
        addr, length = row["addr"], row["length"]
        if op == MMAP:
            end = page_end(addr, length)
            if not addr < end <= ADDRESS_LIMIT:  # the replay skips these too (bad_length)
                return
            anon = bool(row["flags"] & MAP_ANONYMOUS) or row["fd"] < 0
            self.live.map(addr, end, index, row["prot"], anon)
            self.advice.unmap(addr, end)
            self.made_by[index] = (row["flags"], row["fd"], row["offset"])
        elif op == MUNMAP:
            end = page_end(addr, length)
            if end > addr:
                self.live.unmap(addr, end)
                self.advice.unmap(addr, end)
        elif op == MREMAP:
            end = page_end(addr, length)
            new_addr, new_end = row["new_addr"], page_end(row["new_addr"], row["new_length"])
            if end > ADDRESS_LIMIT or new_end > ADDRESS_LIMIT:
                return
            old = self.live.overlapping(addr, end)
            prot = old[0].prot if old else 0
            anon = old[0].anon if old else True
            made = self.made_by.get(old[0].map_id, (MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)) \
                if old else (MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
            advised = [(p.start - addr, p.length, p.prot) for p in self.advice.overlapping(addr, end)]
            if not row["flags"] & MREMAP_DONTUNMAP:
                self.live.unmap(addr, end)
                self.advice.unmap(addr, end)
            if new_end > new_addr:
                self.live.map(new_addr, new_end, index, prot, anon)
                offset = made[2] + (old[0].map_offset if old else 0)
                self.made_by[index] = (made[0], made[1], offset)
                for delta, size, advice in advised:
                    start = max(new_addr, new_addr + delta)
                    stop = min(new_end, new_addr + delta + size)
                    if stop > start:
                        self.advice.map(start, stop, index, advice, True)
        elif op == MPROTECT:
            end = page_end(addr, length)
            if end > addr:
                self.live.protect(addr, end, row["prot"])
        elif op == MADVISE and row["advice"] in THP_ADVICE:
            end = page_end(addr, length)
            for piece in self.live.overlapping(addr, end):
                start, stop = max(piece.start, addr), min(piece.end, end)
                self.advice.map(start, stop, index, row["advice"], True)
        elif op == BRK:
            if row["new_addr"] is not None:
                if self.first_break is None:
                    self.first_break = row["new_addr"]
                self.current_break = row["new_addr"]

    def recreate(self, start: int, end: int, known: LiveSet) -> list[dict]:
        """Synthetic rows re-creating the live parts of [start, end) that ``known`` lacks."""
        rows = []
        for piece in self.live.overlapping(start, end):
            low, high = max(piece.start, start), min(piece.end, end)
            # The parts of [low, high) the slice has not mapped yet.
            cursor = low
            for have in known.overlapping(low, high) + [None]:
                gap_end = high if have is None else max(cursor, have.start)
                if gap_end > cursor:
                    rows += self._mmap_rows(piece, cursor, gap_end)
                    known.map(cursor, gap_end, -1, piece.prot, piece.anon)
                if have is not None:
                    cursor = max(cursor, have.end)
        return rows

    def _mmap_rows(self, piece, low: int, high: int) -> list[dict]:
        flags, fd, offset = self.made_by.get(piece.map_id, (MAP_PRIVATE | MAP_ANONYMOUS, -1, 0))
        flags &= ~(MAP_FIXED | MAP_FIXED_NOREPLACE)
        rows = [dict(op="mmap", addr=low, length=high - low, hint=0, prot=piece.prot,
                     flags=flags, fd=fd,
                     offset=0 if fd < 0 else offset + piece.map_offset + (low - piece.start),
                     errno=0)]
        for advised in self.advice.overlapping(low, high):
            start, stop = max(advised.start, low), min(advised.end, high)
            rows.append(dict(op="madvise", addr=start, length=stop - start, advice=advised.prot,
                             errno=0))
        return rows

    def break_rows(self) -> list[dict]:
        if self.first_break is None:
            return []
        rows = [dict(op="brk", addr=0, length=0, new_addr=self.first_break, errno=0)]
        if self.current_break != self.first_break:
            rows.append(dict(op="brk", addr=self.current_break, length=0,
                             new_addr=self.current_break, errno=0))
        return rows


def _touched(op: int, row: dict) -> tuple[int, int] | None:
    """The existing memory a row acts on (which the slice must have mapped), if any."""
    if row["errno"]:
        return None
    if op in (MUNMAP, MPROTECT, MADVISE, MREMAP):
        return row["addr"], page_end(row["addr"], row["length"])
    if op == MMAP and row["flags"] & MAP_FIXED:
        return row["addr"], page_end(row["addr"], row["length"])
    return None


def _rows(table: pa.Table) -> tuple[np.ndarray, list[dict]]:
    codes = op_names(table)
    columns = {name: table.column(name).to_pylist() for name in COLUMN_NAMES if name != "op"}
    rows = [{name: columns[name][i] for name in columns} for i in range(table.num_rows)]
    return codes, rows


def slice_trace(table: pa.Table, *, events: tuple[int | None, int | None] | None = None,
                time_ns: tuple[int | None, int | None] | None = None,
                threads: list[int] | None = None, parent: dict | None = None) -> pa.Table:
    """The slice of a validated trace table (exactly one of ``events``, ``time_ns``,
    ``threads``); ``parent`` ({"name", "sha256"}) is recorded in the metadata."""
    if sum(x is not None for x in (events, time_ns, threads)) != 1:
        raise MmreplayError("give exactly one of --events, --time and --threads")
    n = table.num_rows
    codes, rows = _rows(table)
    ts = column_np(table, "ts_ns")
    tids = column_np(table, "tid")
    if threads is not None:
        missing = sorted(set(threads) - set(tids.tolist()))
        if missing:
            raise MmreplayError(f"--threads: no thread {', '.join(map(str, missing))} in the trace "
                                f"(its threads: {', '.join(map(str, sorted(set(tids.tolist()))))})")
        keep = np.isin(tids, threads)
        first, stop = 0, n
        asked = {"threads": sorted(threads)}
    elif events is not None:
        first, stop = slice(*events).indices(n)[:2]
        stop = max(first, stop)
        keep = None
        asked = {"events": [events[0], events[1]]}
    else:
        low = time_ns[0] if time_ns[0] is not None else np.iinfo(np.int64).min
        high = time_ns[1] if time_ns[1] is not None else np.iinfo(np.int64).max
        inside = np.flatnonzero((ts >= low) & (ts < high))
        first, stop = (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (n, n)
        keep = None
        asked = {"time_ns": [time_ns[0], time_ns[1]]}
    if keep is None:
        keep = np.zeros(n, bool)
        keep[first:stop] = True

    memory = _Memory()
    known = LiveSet()
    out: list[dict] = []
    source: list[int | None] = []  # the parent row of each slice row (None: synthetic)
    synthetic: list[int] = []
    for index in range(first):  # the trace before the cut: state only
        memory.apply(codes[index], rows[index], index)
    if threads is None and first < stop:
        head = [*memory.break_rows()]
        for piece in memory.live.pieces():
            head += memory.recreate(piece.start, piece.end, known)
        for row in head:
            row.update(ts_ns=int(ts[first]), tid=int(tids[first]))
            synthetic.append(len(out))
            out.append(row)
            source.append(None)
    for index in range(first, stop):
        op, row = codes[index], rows[index]
        if keep[index]:
            touched = _touched(op, row)
            if touched and threads is not None:
                for extra in memory.recreate(*touched, known):
                    extra.update(ts_ns=row["ts_ns"], tid=row["tid"])
                    synthetic.append(len(out))
                    out.append(extra)
                    source.append(None)
            out.append({**row, "op": OPS[op]})
            source.append(index)
            _follow(known, op, row, index)
        memory.apply(op, row, index)
    kept = int(keep[first:stop].sum())

    from .format import build_table

    columns = {name: [row.get(name) for row in out] for name in COLUMN_NAMES}
    if out:
        origin = min(columns["ts_ns"])
        columns["ts_ns"] = [t - origin for t in columns["ts_ns"]]
    meta = trace_metadata(table)
    record = {**(parent or {}), "events_sha256": events_sha256(table), "asked": asked,
              "rows": [first, stop] if threads is None else None, "kept_events": kept,
              "synthetic_rows": synthetic}
    if "slice" in meta:
        record["parent_slice"] = meta["slice"]
    meta["slice"] = record
    sliced = build_table(columns, meta)
    for name in table.schema.names:
        if name not in COLUMN_NAMES:  # extra columns: the parent's values, null on synthetic rows
            values = table.column(name).to_pylist()
            sliced = sliced.append_column(table.schema.field(name), pa.array(
                [values[i] if i is not None else None for i in source], table.schema.field(name).type))
    return validate(sliced)


def _follow(known: LiveSet, op: int, row: dict, index: int) -> None:
    """Keep ``known`` (what the slice itself has mapped) up to date with a kept row."""
    if row["errno"]:
        return
    addr, length = row["addr"], row["length"]
    if op == MMAP:
        end = page_end(addr, length)
        if end > addr:
            known.map(addr, end, index, row["prot"], True)
    elif op == MUNMAP:
        end = page_end(addr, length)
        if end > addr:
            known.unmap(addr, end)
    elif op == MREMAP:
        if not row["flags"] & MREMAP_DONTUNMAP:
            end = page_end(addr, length)
            if end > addr:
                known.unmap(addr, end)
        new_end = page_end(row["new_addr"], row["new_length"])
        if new_end > row["new_addr"]:
            known.map(row["new_addr"], new_end, index, 0, True)
