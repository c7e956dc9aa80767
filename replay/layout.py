"""Replay a trace up to one moment, capture the replay's address space, and draw it for a mail.

``capture_layout`` touches the kernel: it runs the replay to ``--at``, reads /proc/self/smaps and
asks the PAGEMAP_SCAN ioctl which ranges are mapped by huge pages, then releases everything.
Everything after that (``layout_from``, ``plan_segments``, ``render_ascii``) computes on the
captured ``Layout`` alone, so the drawing is testable on any data.

The ASCII picture wraps the address space into rows that each start on a 2 MiB boundary and
cover a whole number of 2 MiB blocks, so one ruler of ``|`` ticks marks every 2 MiB boundary of
every row. Long stretches without replay memory are folded into a ``~ 1.20 GiB unused ~`` line and
runs of identical rows into a ``*`` line (as hexdump does).
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from traces.errors import MmreplayError
from traces.host import describe_thp, host_metadata
from traces.schema import PMD_SIZE
from traces.units import fmt_bytes, plural

from .collapse import collapse
from .config import ReplayConfig
from .model import coalesce_pieces
from .probes import (MAX_HOLE_BYTES, PAGE_IS_HUGE, PAGE_IS_PFNZERO, Vmas, layout_metrics,
                     merge_ranges, owned_mask, read_smaps, scan_pages)
from .program import ID_MAPPED

MIB = 1 << 20

# Characters of the ASCII picture.
START, HUGE, MAPPED, OTHER, FREE, TICK, RESERVED = "[", "#", "=", "x", ".", "|", "-"
COLUMNS_PER_PMD = (32, 16, 8, 4, 2)  # scales tried, finest first (2 is the least that shows ticks)
MIN_PMDS_PER_ROW = 4                # rows hold a power of two of 2 MiB blocks (the PNG's too)
MIN_WIDTH = 40
MAX_WIDTH = 1000  # columns of the ASCII picture; wider is no picture a terminal or mail shows
DEFAULT_WIDTH = 72
DEFAULT_MAX_ROWS = 40               # lines of drawing (top ruler, rows, folds, separators)
#                                     before a coarser scale is tried
SPLIT_ROWS = 4                      # a stretch without replay memory longer than this many rows
#                                     is folded into one "~ unused ~" line
BOTTOM_RULER_ROWS = 24              # repeat the ruler under drawings longer than this
RENDER_BLOCK_ROWS = 4096            # rows computed at once (a 1 TiB reservation is 16k rows)


# ---------------------------------------------------------------------------------------------
# The captured layout


@dataclass
class Layout:
    """The replay's address space at one moment, from the kernel's own accounts."""
    trace_name: str
    trace_events: int
    config: dict                  # ReplayConfig.as_dict()
    at: str                       # "peak", "end" or "event"
    events_replayed: int          # trace events [0, events_replayed) had been replayed
    host: dict                    # host_metadata() of this machine
    vmas: np.ndarray              # (n, 2) every VMA from the lowest replay range to the highest
    vma_rss_bytes: np.ndarray
    vma_anon_huge_bytes: np.ndarray
    vma_thp_eligible: np.ndarray  # smaps THPeligible (0/1)
    vma_replay: np.ndarray        # bool: the VMA holds replay memory
    replay: np.ndarray            # (n, 2) the replay's live address ranges, sorted
    huge: np.ndarray              # (n, 2) PMD-mapped huge-page ranges inside them, sorted
    huge_source: str              # "pagemap" (exact) or "smaps" (placed by estimate)
    mapping_start: np.ndarray     # live replay mappings (one per successful mmap/mremap)
    mapping_length: np.ndarray
    mapping_anon: np.ndarray      # bool: anonymous in the trace (else a file mapping replayed
    #                               as anonymous)
    metrics: dict                 # probes.layout_metrics: the figures ``replay`` reports
    vm: dict | None = None        # the ``vm`` section of a result, when read inside a guest
    heap: dict | None = None      # the brk heap: start, bytes (live), reserved_bytes, and
    #                               layout_metrics of its live part; None without a heap
    collapse: dict | None = None  # what --collapse did before the layout was read

    @property
    def empty(self) -> bool:
        return len(self.replay) == 0

    @property
    def base(self) -> int:
        """The 2 MiB boundary at or below the lowest replay range: offsets are counted from it."""
        return int(self.replay[0, 0]) // PMD_SIZE * PMD_SIZE if len(self.replay) else 0

    def holes(self) -> np.ndarray:
        """(n, 2) unmapped stretches of at most 2 MiB between two neighbouring VMAs that both
        hold replay memory (the same definition as the replay's ``holes`` figure)."""
        if len(self.vmas) < 2:
            return np.zeros((0, 2), np.int64)
        gap = self.vmas[1:, 0] - self.vmas[:-1, 1]
        chosen = self.vma_replay[1:] & self.vma_replay[:-1] & (gap > 0) & (gap <= MAX_HOLE_BYTES)
        return np.stack([self.vmas[:-1, 1][chosen], self.vmas[1:, 0][chosen]], axis=1)

    def large_mappings(self) -> tuple[int, int]:
        """(live anonymous replay mappings >= 2 MiB, how many start on a 2 MiB boundary): the
        mappings the placement policies are about."""
        large = (self.mapping_length >= PMD_SIZE) & self.mapping_anon
        return int(large.sum()), int((self.mapping_start[large] % PMD_SIZE == 0).sum())

    def large_file_mappings(self) -> int:
        """Live mappings >= 2 MiB that were file mappings in the trace (replayed as anonymous)."""
        return int(((self.mapping_length >= PMD_SIZE) & ~self.mapping_anon).sum())

    def _reserved(self, start: int, end: int) -> bool:
        return _inside(self.heap_reservation(), start, end)

    def heap_reservation(self) -> np.ndarray:
        """(n, 2): the brk heap's reserved address range (PROT_NONE until the heap grows)."""
        if not self.heap:
            return np.zeros((0, 2), np.int64)
        return _ranges([self.heap["start"], self.heap["start"] + self.heap["reserved_bytes"]])

    def at_text(self) -> str:
        if self.at == "peak":
            return f"at peak live bytes (after event {self.events_replayed - 1} " \
                   f"of {self.trace_events})" if self.events_replayed else "at peak (no mappings)"
        if self.at == "end":
            return f"at the end of the trace (all {self.trace_events} events, before cleanup)"
        return f"after event {self.events_replayed - 1} of {self.trace_events}"

    def as_dict(self) -> dict:
        """The ``layout --json`` document (addresses and sizes in bytes)."""
        large, aligned = self.large_mappings()
        holes = self.holes()
        return {
            "trace": self.trace_name, "trace_events": self.trace_events,
            "at": self.at, "events_replayed": self.events_replayed, "config": self.config,
            "host": {"kernel": self.host.get("kernel"), "thp": describe_thp(self.host)},
            **({"vm": self.vm} if self.vm else {}),
            "figures": {**self.metrics, "large_mappings": large,
                        "pmd_aligned_large_mappings": aligned,
                        "large_file_mappings": self.large_file_mappings(),
                        "huge_bytes": int((self.huge[:, 1] - self.huge[:, 0]).sum()),
                        "huge_source": self.huge_source},
            "heap": self.heap,
            "collapse": self.collapse,
            "vmas": [{"start": int(s), "end": int(e), "bytes": int(e - s), "rss_bytes": int(r),
                      "anon_huge_bytes": int(h), "thp_eligible": bool(t),
                      "owner": "replay" if o else ("heap reservation" if self._reserved(s, e)
                                                   else "other")}
                     for (s, e), r, h, t, o in zip(self.vmas.tolist(), self.vma_rss_bytes,
                                                   self.vma_anon_huge_bytes, self.vma_thp_eligible,
                                                   self.vma_replay)],
            "holes": [{"start": int(s), "end": int(e), "bytes": int(e - s)} for s, e in holes],
            "huge_ranges": [[int(s), int(e)] for s, e in self.huge],
            "mappings": [{"start": int(s), "length": int(n), "anonymous": bool(a),
                          "pmd_aligned": bool(s % PMD_SIZE == 0)}
                         for s, n, a in zip(self.mapping_start, self.mapping_length,
                                            self.mapping_anon)],
        }


def _inside(ranges: np.ndarray, start: int, end: int) -> bool:
    return bool(((ranges[:, 0] <= start) & (ranges[:, 1] >= end)).any()) if len(ranges) else False


def _ranges(array) -> np.ndarray:
    return np.asarray(array, np.int64).reshape(-1, 2)


def huge_ranges(ranges: np.ndarray, pagemap: str = "/proc/self/pagemap") -> np.ndarray | None:
    """The parts of ``ranges`` (ours, live) mapped by transparent huge pages, from PAGEMAP_SCAN:
    PMD-mapped and not the huge zero page.

    Returns None where the ioctl does not exist (Linux < 6.7): smaps only gives a total per VMA.
    """
    return scan_pages(ranges, PAGE_IS_HUGE, PAGE_IS_PFNZERO, pagemap=pagemap)


def huge_bytes_in(spans: np.ndarray, huge: np.ndarray) -> np.ndarray:
    """Bytes of the ``huge`` ranges inside each of the (n, 2) ``spans``."""
    covered = Coverage(merge_ranges(huge))
    spans = _ranges(spans)
    return covered.below(spans[:, 1]) - covered.below(spans[:, 0])


def estimate_huge_ranges(vmas: np.ndarray, anon_huge_bytes: np.ndarray) -> np.ndarray:
    """Without PAGEMAP_SCAN: each VMA's AnonHugePages as its first whole 2 MiB blocks."""
    out = []
    for (start, end), huge in zip(vmas.tolist(), anon_huge_bytes.tolist()):
        first = -(-start // PMD_SIZE) * PMD_SIZE
        blocks = min(int(huge) // PMD_SIZE, max(0, (end - first) // PMD_SIZE))
        if blocks:
            out.append((first, first + blocks * PMD_SIZE))
    return _ranges(out)


def layout_from(vmas: Vmas, replay: np.ndarray, huge: np.ndarray | None,
                mapping_start: np.ndarray, mapping_length: np.ndarray, *, trace_name: str,
                trace_events: int, config: dict, at: str, events_replayed: int,
                host: dict, mapping_anon: np.ndarray | None = None,
                heap: dict | None = None, collapse: dict | None = None) -> Layout:
    """Build a ``Layout`` from what was read while the replay's mappings were live (pure)."""
    replay = _ranges(replay)
    replay = replay[np.argsort(replay[:, 0], kind="stable")]
    owned = owned_mask(vmas.start, vmas.end, replay)
    if owned.any():
        low, high = vmas.start[owned].min(), vmas.end[owned].max()
        if heap:  # the heap's reservation above it belongs to the picture too
            low, high = min(low, heap["start"]), max(high, heap["start"] + heap["reserved_bytes"])
        keep = (vmas.start < high) & (vmas.end > low)
    else:
        keep = np.zeros(len(vmas.start), bool)
    span = np.stack([vmas.start[keep], vmas.end[keep]], axis=1).astype(np.int64).reshape(-1, 2)
    source = "pagemap"
    if huge is not None and (huge_bytes_in(span, huge) > vmas.anon_huge[keep]).any():
        # More PMD-mapped bytes in a VMA than its AnonHugePages: pages that are no THP (the huge
        # zero page on a kernel whose PAGEMAP_SCAN does not flag it). Only smaps can be trusted.
        huge = None
    if huge is None:
        source = "smaps"
        huge = estimate_huge_ranges(span[owned[keep]], vmas.anon_huge[keep][owned[keep]])
    return Layout(
        trace_name=trace_name, trace_events=trace_events, config=config, at=at,
        events_replayed=events_replayed, host=host, vmas=span,
        vma_rss_bytes=vmas.rss[keep], vma_anon_huge_bytes=vmas.anon_huge[keep],
        vma_thp_eligible=vmas.thp_eligible[keep], vma_replay=owned[keep], replay=replay,
        huge=merge_ranges(huge), huge_source=source,
        mapping_start=np.asarray(mapping_start, np.int64),
        mapping_length=np.asarray(mapping_length, np.int64),
        mapping_anon=(np.ones(len(mapping_start), bool) if mapping_anon is None
                      else np.asarray(mapping_anon, bool)),
        metrics=layout_metrics(vmas, replay), heap=heap, collapse=collapse)


def parse_at(text) -> str | int:
    """--at: 'peak', 'end' or an event number (0-based row, as ``info`` counts them)."""
    value = str(text).strip().lower()
    if value in ("peak", "end"):
        return value
    if value.isdigit():
        return int(value)
    raise MmreplayError(f"bad --at {text!r} (expected peak, end or an event number >= 0)")


def capture_layout(trace_path: str | None, config: ReplayConfig, at: str | int = "peak",
                   max_live_bytes: int | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   pick: int | None = None,
                   in_guest: Callable | None = None) -> Layout:
    """Replay the trace up to ``at``, read the layout of the replay's own mappings, release them.

    ``at`` is 'peak' (the first moment of most live bytes), 'end' (after the last event, before
    the cleanup) or an event number N (just after event N). ``progress(events_done,
    events_to_replay)`` is called between chunks. ``in_guest(prepared, stop_op)`` runs the capture
    inside a VM guest instead and returns (captured arrays, the guest's host metadata, its vm
    section): ``layout --kernel``.
    """
    from traces import read_trace

    from .runs import Prepared, resolve_trace
    from .session import Interrupt, catch_signals

    where = parse_at(at)
    path = resolve_trace(trace_path)
    table = read_trace(path, pick)
    if isinstance(where, int):
        if where >= table.num_rows:
            raise MmreplayError(f"--at {where}: {path.name} has {table.num_rows} events"
                                + (f", numbered 0 to {table.num_rows - 1}" if table.num_rows else ""))
        prepared = Prepared(path, config, max_live_bytes, table=table, stop_event=where + 1,
                            pick=pick)
    else:
        prepared = Prepared(path, config, max_live_bytes, table=table, pick=pick)
    program = prepared.program
    stop_op = program.peak_op if where == "peak" else program.cleanup_start
    if isinstance(where, int):
        events_replayed = where + 1
    elif where == "end":
        events_replayed = program.events
    else:
        events_replayed = int(program.trace_row[stop_op - 1]) + 1 if stop_op else 0

    host, vm = host_metadata(), None
    if in_guest is not None:  # layout --kernel: the same capture, inside a VM guest
        captured, host, vm = in_guest(prepared, stop_op)
        reason = None
    elif stop_op > 0:
        interrupt = Interrupt()
        with catch_signals(interrupt):
            captured, reason = capture_live(
                program, config, prepared.alignment, stop_op, prepared.max_live_bytes, interrupt,
                None if progress is None else (lambda done: progress(done, events_replayed)))
    else:  # nothing is mapped yet at that point: nothing to run
        captured, reason = nothing_captured(), None
    if captured is None:
        raise MmreplayError(f"the replay stopped before --at {at} was reached "
                            f"({reason or 'unknown reason'})")
    layout = layout_from_capture(captured, trace_name=Path(path).name,
                                 trace_events=table.num_rows, config=config.as_dict(),
                                 at=where if isinstance(where, str) else "event",
                                 events_replayed=events_replayed, host=host)
    layout.vm = vm
    return layout


def capture_live(program, config: ReplayConfig, alignment, stop_op: int,
                 max_live_bytes: int | None, interrupt,
                 on_progress: Callable[[int], None] | None = None) -> tuple[dict | None, str | None]:
    """Run ops [0, stop_op) and read the replay's layout while its mappings are live;
    ``on_progress(events_done)`` between chunks.

    Returns (the arrays ``layout_from_capture`` takes, or None if the run stopped first; the
    interrupt reason). Runs on the host, or inside a VM guest (replay/vm/guest.py)."""
    from .session import run_program

    captured: dict = {}

    def on_stop(state, pieces) -> None:
        # Read everything while the mappings are live: run_program releases them afterwards.
        pieces = coalesce_pieces(pieces)  # a mapping's neighbouring pieces drawn as one
        replay = state.ranges(pieces)
        if config.collapse != "none":
            # Arrays only (see below): what collapse did, as JSON text.
            captured["collapse_json"] = np.array(json.dumps(collapse(config.collapse, replay)))
        # Huge pages first: khugepaged may collapse more in between, never fewer, so the scan
        # stays within the AnonHugePages read after it.
        huge = huge_ranges(replay)
        vmas = read_smaps()
        captured.update(vmas_start=vmas.start, vmas_end=vmas.end, vmas_rss=vmas.rss,
                        vmas_anon_huge=vmas.anon_huge, vmas_thp_eligible=vmas.thp_eligible)
        if huge is not None:
            captured["huge"] = huge
        captured["replay"] = replay
        ids = np.unique(pieces[:, 0].astype(np.int64)) if len(pieces) else np.zeros(0, np.int64)
        ids = ids[(state.id_state[ids] & ID_MAPPED) != 0]
        heap = program.heap_id
        if heap >= 0 and heap in ids:
            ids = ids[ids != heap]  # not an mmap: the mapping figures leave it out, as replay's
            # Arrays only: a capture travels back from a VM guest as an .npz file.
            captured["heap_ranges"] = state.ranges(pieces[pieces[:, 0] == heap])
            captured["heap_start_reserved"] = np.array(
                [state.base[heap], program.id_length[heap]], np.int64)
        captured["mapping_start"] = state.base[ids].copy()
        captured["mapping_length"] = program.id_length[ids].copy()
        captured["mapping_anon"] = program.id_anon[ids].copy()

    run = run_program(program, config, alignment, interrupt, max_live_bytes, stop_op=stop_op,
                      on_stop=on_stop, on_progress=on_progress)
    return (captured or None), run["interrupt_reason"]


def nothing_captured() -> dict:
    empty = np.zeros(0, np.int64)
    return {"vmas_start": empty, "vmas_end": empty, "vmas_rss": empty, "vmas_anon_huge": empty,
            "vmas_thp_eligible": np.zeros(0, np.int8), "huge": _ranges(empty),
            "replay": _ranges(empty), "mapping_start": empty, "mapping_length": empty,
            "mapping_anon": np.zeros(0, bool)}


def layout_from_capture(captured: dict, **fields) -> Layout:
    """A ``Layout`` from ``capture_live``'s arrays (a plain dict of arrays: it travels back from
    a VM guest as an .npz file); ``fields`` are ``layout_from``'s keyword arguments."""
    vmas = Vmas(captured["vmas_start"], captured["vmas_end"], captured["vmas_rss"],
                captured["vmas_anon_huge"], captured["vmas_thp_eligible"])
    heap = None
    if "heap_ranges" in captured:
        ranges = np.asarray(captured["heap_ranges"], np.int64).reshape(-1, 2)
        start, reserved = (int(v) for v in captured["heap_start_reserved"])
        heap = {"start": start, "bytes": int((ranges[:, 1] - ranges[:, 0]).sum()),
                "reserved_bytes": reserved, **layout_metrics(vmas, ranges)}
    done = json.loads(str(captured["collapse_json"])) if "collapse_json" in captured else None
    return layout_from(vmas, captured["replay"], captured.get("huge"), captured["mapping_start"],
                       captured["mapping_length"], mapping_anon=captured["mapping_anon"],
                       heap=heap, collapse=done, **fields)


# ---------------------------------------------------------------------------------------------
# Planning: rows and segments (shared by the ASCII and PNG pictures)


class Coverage:
    """Bytes of a set of sorted, non-overlapping ranges that lie below any address (vectorized)."""

    def __init__(self, ranges: np.ndarray):
        ranges = _ranges(ranges)
        self.starts = ranges[:, 0]
        self.lengths = ranges[:, 1] - ranges[:, 0]
        self.before = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)

    def below(self, address: np.ndarray) -> np.ndarray:
        address = np.asarray(address, np.int64)
        if len(self.starts) == 0:
            return np.zeros(address.shape, np.int64)
        index = np.searchsorted(self.starts, address, side="right") - 1
        safe = np.maximum(index, 0)
        inside = np.clip(address - self.starts[safe], 0, self.lengths[safe])
        return np.where(index >= 0, self.before[safe] + inside, 0)

    def per_cell(self, edges: np.ndarray) -> np.ndarray:
        """Covered bytes in each [edges[i], edges[i + 1])."""
        return np.diff(self.below(edges))


@dataclass(frozen=True)
class Geometry:
    """How addresses map to a drawing: each row holds ``pmds_per_row`` whole 2 MiB blocks."""
    columns_per_pmd: int
    pmds_per_row: int

    @property
    def column_bytes(self) -> int:
        return PMD_SIZE // self.columns_per_pmd

    @property
    def cells(self) -> int:
        return self.columns_per_pmd * self.pmds_per_row

    @property
    def row_bytes(self) -> int:
        return self.pmds_per_row * PMD_SIZE


@dataclass
class Segment:
    """A stretch of contiguous replay activity, drawn as rows from ``start`` (a 2 MiB boundary)."""
    start: int
    end: int          # end of its last replay range
    ranges: int       # replay ranges in it
    bytes: int        # replay bytes in it

    def rows(self, row_bytes: int) -> int:
        return max(1, -(-(self.end - self.start) // row_bytes))


def plan_segments(replay: np.ndarray, row_bytes: int, split_rows: int = SPLIT_ROWS) -> list[Segment]:
    """Group the sorted replay ranges into segments; a stretch without replay memory longer than
    ``split_rows`` rows starts a new one."""
    replay = _ranges(replay)
    if len(replay) == 0:
        return []
    starts, ends = replay[:, 0], np.maximum.accumulate(replay[:, 1])
    gap = starts[1:] - ends[:-1]
    first = np.concatenate([[0], np.flatnonzero(gap > split_rows * row_bytes) + 1])
    last = np.append(first[1:], len(replay)) - 1
    lengths = np.concatenate([[0], np.cumsum(replay[:, 1] - replay[:, 0])])
    return [Segment(start=int(starts[f]) // PMD_SIZE * PMD_SIZE, end=int(ends[k]),
                    ranges=int(k - f + 1), bytes=int(lengths[k + 1] - lengths[f]))
            for f, k in zip(first.tolist(), last.tolist())]


def choose_segments(costs: list[int], sizes: list[int], budget: int) -> list[int]:
    """Indices of the largest segments (by ``sizes``) whose ``costs`` (rows) plus one separator
    between neighbours fit in ``budget``, in address order. The largest is always kept."""
    kept: list[int] = []
    spent = 0
    for i in sorted(range(len(costs)), key=lambda i: -sizes[i]):
        cost = costs[i] + (1 if kept else 0)
        if spent + cost <= budget or not kept:
            kept.append(i)
            spent += cost
    return sorted(kept)


def clip_ranges(ranges: np.ndarray, low: int, high: int) -> np.ndarray:
    """The parts of sorted, non-overlapping ``ranges`` inside [low, high)."""
    ranges = _ranges(ranges)
    first = int(np.searchsorted(ranges[:, 1], low, side="right"))
    last = int(np.searchsorted(ranges[:, 0], high, side="left"))
    return np.clip(ranges[first:last], low, high).reshape(-1, 2)


def subtract_ranges(ranges: np.ndarray, minus: np.ndarray) -> np.ndarray:
    """The parts of ``ranges`` not covered by ``minus`` (both are merged first)."""
    out = []
    cut = merge_ranges(minus)
    for start, end in merge_ranges(ranges).tolist():
        for lo, hi in clip_ranges(cut, start, end).tolist():
            if lo > start:
                out.append((start, lo))
            start = max(start, hi)
        if start < end:
            out.append((start, end))
    return _ranges(out)


def other_vmas_between(layout: Layout, low: int, high: int) -> int:
    """VMAs without replay memory lying wholly in [low, high) (VMAs are sorted and disjoint)."""
    others = layout.vmas[~layout.vma_replay]
    first = int(np.searchsorted(others[:, 0], low, side="left"))
    last = int(np.searchsorted(others[:, 1], high, side="right"))
    return max(0, last - first)


# ---------------------------------------------------------------------------------------------
# The ASCII picture


class _Cells:
    """Per-cell characters for any stretch of rows."""

    def __init__(self, layout: Layout, geometry: Geometry):
        self.geometry = geometry
        self.replay = Coverage(merge_ranges(layout.replay))
        self.vmas = Coverage(merge_ranges(layout.vmas))
        self.huge = Coverage(layout.huge)
        self.reserved = Coverage(layout.heap_reservation())
        self.starts = np.unique(layout.replay[:, 0]) if len(layout.replay) else np.zeros(0, np.int64)

    def rows(self, first_row_start: int, count: int) -> list[str]:
        g = self.geometry
        n = count * g.cells
        edges = first_row_start + np.arange(n + 1, dtype=np.int64) * g.column_bytes
        replay = self.replay.per_cell(edges)
        vmas = self.vmas.per_cell(edges)
        huge = self.huge.per_cell(edges)
        chars = np.full(n, FREE, "S1")
        chars[vmas > replay] = OTHER           # memory of the process that is not the replay's
        chars[self.reserved.per_cell(edges) > replay] = RESERVED  # the heap's room to grow
        chars[replay > 0] = MAPPED             # a replay mapping never vanishes, however small
        chars[2 * huge >= g.column_bytes] = HUGE
        lo, hi = np.searchsorted(self.starts, [edges[0], edges[-1]])
        chars[(self.starts[lo:hi] - edges[0]) // g.column_bytes] = START
        return [row.tobytes().decode("ascii") for row in chars.reshape(count, g.cells)]


def _segment_lines(cells: _Cells, segment: Segment, base: int, label_width: int, width: int,
                   budget: int) -> list[str]:
    """The rows of one segment, runs of identical rows folded into a '*' line; stops as soon as
    there are more than ``budget`` lines (the segment will not fit anyway)."""
    g = cells.geometry
    total = segment.rows(g.row_bytes)
    lines: list[str] = []
    previous, repeats = None, 0

    def fold() -> None:
        if repeats == 1:
            row_start = segment.start + (row - 1) * g.row_bytes
            lines.append(_row_line((row_start - base) // MIB, previous, label_width))
        elif repeats > 1:
            lines.extend(_label_wrap("*", f"{repeats} more rows like this "
                                          f"({fmt_bytes(repeats * g.row_bytes)})", label_width,
                                     width))

    row = 0
    for block in range(0, total, RENDER_BLOCK_ROWS):
        count = min(RENDER_BLOCK_ROWS, total - block)
        for offset, text in enumerate(cells.rows(segment.start + block * g.row_bytes, count)):
            row = block + offset
            if text == previous:
                repeats += 1
                continue
            fold()
            lines.append(_row_line((segment.start + row * g.row_bytes - base) // MIB, text,
                                   label_width))
            previous, repeats = text, 0
            if len(lines) > budget:
                return lines
    row = total
    fold()
    return lines


def _row_line(offset_mib: int, cells: str, label_width: int) -> str:
    return f"{offset_mib:>{label_width}}  {cells}"


def _label_wrap(label: str, text: str, label_width: int, width: int) -> list[str]:
    """A note in the drawing: ``label`` in the row-label column, ``text`` wrapped beside it."""
    indent = " " * (label_width + 2)
    return textwrap.wrap(text, width, initial_indent=f"{label:>{label_width}}  ",
                         subsequent_indent=indent, break_on_hyphens=False)


def _pack(items: list[str], width: int, gap: str = "   ") -> list[str]:
    """Legend items side by side, as many per line as fit."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(gap) + len(item) <= width:
            lines[-1] += gap + item
        else:
            lines.append(item[:width])
    return lines


def _ruler(geometry: Geometry, label_width: int, width: int) -> list[str]:
    """Two lines: in-row MiB offsets of the ticks, and a '|' on every 2 MiB boundary (the row's
    closing boundary too, where a column is left for it)."""
    cpp = geometry.columns_per_pmd
    closing = label_width + 2 + geometry.cells + 1 <= width
    ticks = [" "] * (geometry.cells + int(closing))
    labels = [" "] * width
    free_from = 0
    for k in range(geometry.pmds_per_row + int(closing)):
        ticks[k * cpp] = TICK
        text = f"+{2 * k}"
        column = label_width + 2 + k * cpp
        if column >= free_from and column + len(text) <= width:
            labels[column:column + len(text)] = text
            free_from = column + len(text) + 1
    head = f"{'MiB':>{label_width}}  "
    return [head + "".join(labels[len(head):]).rstrip(),
            (" " * (label_width + 2) + "".join(ticks)).rstrip()]


def _size(n: int) -> str:
    """Exact binary sizes as people say them: 262144 -> '256 KiB'."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return fmt_bytes(n)


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def _outside(left_out: list[Segment], where: str, label_width: int, width: int) -> list[str]:
    return _label_wrap("", f"~ {plural(len(left_out), 'segment')} {where} not drawn "
                           f"({fmt_bytes(sum(s.bytes for s in left_out))}) ~", label_width, width)


def _separator(layout: Layout, skipped: list[Segment], previous: Segment, segment: Segment,
               label_width: int, width: int) -> list[str]:
    """The line standing for the stretch between two drawn segments (``skipped``: the segments
    between them that are not drawn)."""
    gap = fmt_bytes(segment.start - previous.end)
    if skipped:
        text = (f"~ {gap}: {plural(len(skipped), 'segment')} not drawn "
                f"({fmt_bytes(sum(s.bytes for s in skipped))}) ~")
    else:
        others = other_vmas_between(layout, previous.end, segment.start)
        text = f"~ {gap}, {plural(others, 'other VMA')} ~" if others else f"~ {gap} unused ~"
    return _label_wrap("", text, label_width, width)


def _draw(layout: Layout, geometry: Geometry, label_width: int, width: int,
          max_rows: int, truncate: bool) -> tuple[list[str], list[str]] | None:
    """(drawing lines, notes) at one scale; None when the drawing is longer than ``max_rows``
    lines and ``truncate`` is off. With ``truncate`` the largest segments that fit are drawn and
    a note says what was left out."""
    base = layout.base
    cells = _Cells(layout, geometry)
    segments = plan_segments(layout.replay, geometry.row_bytes)
    ruler = _ruler(geometry, label_width, width)
    budget = max(1, max_rows - len(ruler))
    drawn: list[tuple[Segment, list[str]]] = []
    used = 0
    for segment in segments:
        separator = len(_separator(layout, [], drawn[-1][0], segment, label_width,
                                   width)) if drawn else 0
        allowance = budget if truncate else budget - used - separator
        lines = _segment_lines(cells, segment, base, label_width, width, max(0, allowance))
        used += len(lines) + separator
        drawn.append((segment, lines))
        if used > budget and not truncate:
            return None
    kept = list(range(len(drawn)))
    notes: list[str] = []
    if used > budget:
        # Two lines are kept for the segments left out below the first and above the last.
        kept = choose_segments([len(lines) for _, lines in drawn],
                               [segment.bytes for segment, _ in drawn], budget - 2)
        left_out = [drawn[i][0] for i in range(len(drawn)) if i not in set(kept)]
        if left_out:
            notes.append(f"{len(kept)} of {len(drawn)} segments drawn (the largest by replay "
                         f"bytes); the other {len(left_out)} hold "
                         f"{fmt_bytes(sum(s.bytes for s in left_out))} in "
                         f"{sum(s.ranges for s in left_out)} replay ranges (see --json, --png)")
    body: list[str] = []
    previous: Segment | None = None
    last_drawn = -1
    for n, i in enumerate(kept):
        segment, lines = drawn[i]
        separator = (_separator(layout, segments[kept[n - 1] + 1:i], previous, segment,
                                label_width, width) if previous is not None else [])
        room = budget - len(body) - len(separator)
        if room < min(len(lines), 2):
            notes.append(f"{plural(len(kept) - n, 'more segment')} not drawn: no room left")
            break
        body.extend(separator)
        if len(lines) > room:
            body.extend(lines[:room - 1])
            body.extend(_label_wrap("", "... (rest not drawn)", label_width, width))
        else:
            body.extend(lines)
        previous, last_drawn = segment, i
    # Say what lies below the first and above the last segment drawn, where there is room.
    if previous is not None:
        if kept[0] > 0:
            lines = _outside(segments[:kept[0]], "below", label_width, width)
            if len(body) + len(lines) <= budget:
                body[:0] = lines
        if last_drawn < len(segments) - 1:
            lines = _outside(segments[last_drawn + 1:], "above", label_width, width)
            if len(body) + len(lines) <= budget:
                body.extend(lines)
    drawing = ruler + body
    if len(body) > BOTTOM_RULER_ROWS:
        drawing += ruler[::-1]
    return drawing, notes


def _scale_and_draw(layout: Layout, width: int, max_rows: int):
    """(geometry, drawing lines, notes) at the finest scale whose drawing fits ``max_rows``."""
    label_width = max(3, len(str((int(layout.replay[-1, 1]) - layout.base) // MIB)))
    room = width - label_width - 2  # cells; the closing tick takes one more column if free

    def pmds(cpp: int) -> int:  # a power of two of 2 MiB blocks per row
        return 1 << ((room // cpp).bit_length() - 1) if room // cpp else 0

    # Rows of at least a few 2 MiB blocks show neighbours side by side; finer scales first.
    scales = ([c for c in COLUMNS_PER_PMD if pmds(c) >= MIN_PMDS_PER_ROW]
              or [c for c in COLUMNS_PER_PMD if pmds(c) >= 1])
    for index, cpp in enumerate(scales):
        geometry = Geometry(cpp, pmds(cpp))
        drawn = _draw(layout, geometry, label_width, width, max_rows,
                      truncate=index == len(scales) - 1)
        if drawn is not None:
            return (geometry, *drawn)
    raise AssertionError("the coarsest scale always draws")  # pragma: no cover


def ascii_row_bytes(layout: Layout, width: int = DEFAULT_WIDTH) -> int:
    """The address range of one row of the ASCII picture (the PNG draws the same rows)."""
    return _scale_and_draw(layout, width, DEFAULT_MAX_ROWS)[0].row_bytes


def render_ascii(layout: Layout, width: int = DEFAULT_WIDTH, max_rows: int = DEFAULT_MAX_ROWS) -> str:
    """The layout as plain ASCII text for a mail, every line at most ``width`` columns."""
    if width < MIN_WIDTH:
        raise MmreplayError(f"--width {width}: the picture needs at least {MIN_WIDTH} columns")
    cfg = layout.config
    head = _wrap(f"mmreplay layout: {layout.trace_name} {layout.at_text()}", width, "  ")
    head += _wrap(f"policy={cfg.get('policy')} thp={cfg.get('thp')} touch={cfg.get('touch')} "
                  f"access={cfg.get('access')} files={cfg.get('files')}", width, "  ")
    head += _wrap(f"Linux {layout.host.get('kernel', '?')}; THP {describe_thp(layout.host)}",
                  width, "  ")
    if layout.vm:
        head += _wrap(f"in a QEMU {str(layout.vm.get('accel')).upper()} guest booted from "
                      f"{(layout.vm.get('image') or {}).get('given')}", width, "  ")
    if layout.empty:
        return _ascii("\n".join(head + ["", "No replay mapping is live at this point."]) + "\n")

    geometry, drawing, notes = _scale_and_draw(layout, width, max_rows)
    head += _wrap(f"1 column = {_size(geometry.column_bytes)}, 1 row = "
                  f"{_size(geometry.row_bytes)}; rows labelled in MiB from {layout.base:#x}",
                  width, "  ")
    for note in notes:
        head += _wrap(f"NOTE: {note}", width, "  ")
    estimated = ", placed by estimate" if layout.huge_source == "smaps" else ""
    legend = _pack([f"{START} a replay mapping starts", f"{MAPPED} replay memory, 4 KiB pages",
                    f"{HUGE} THP-backed (PMD-mapped{estimated})",
                    f"{OTHER} other memory of this process", f"{FREE} unmapped",
                    f"{TICK} 2 MiB boundary"]
                   + ([f"{RESERVED} the brk heap's reservation (PROT_NONE)"] if layout.heap
                      else []), width)
    return _ascii("\n".join(head + [""] + drawing + [""] + legend + [""]
                            + figure_lines(layout, width)) + "\n")


def _ascii(text: str) -> str:
    """Mail-safe: names from the trace or the host that are not printable ASCII become '?'."""
    return "".join(c if c == "\n" or " " <= c <= "~" else "?" for c in text)


def figure_lines(layout: Layout, width: int = DEFAULT_WIDTH) -> list[str]:
    """The few figures under the picture, each naming its unit."""
    m = layout.metrics
    large, aligned = layout.large_mappings()
    huge_bytes = int((layout.huge[:, 1] - layout.huge[:, 0]).sum())
    lines = _wrap(f"VMAs holding replay memory: {m['vmas']} ({fmt_bytes(m['mapped_bytes'])}); "
                  f"holes between them: {m['holes']} ({fmt_bytes(m['hole_bytes'])})", width, "  ")
    lines += _wrap(f"THP: AnonHugePages {fmt_bytes(m['anon_huge_bytes'])} of Rss "
                   f"{fmt_bytes(m['rss_bytes'])}; whole 2 MiB blocks inside the VMAs: "
                   f"{fmt_bytes(m['thp_eligible_bytes'])}", width, "  ")
    if layout.huge_source == "pagemap" and huge_bytes != m["anon_huge_bytes"]:
        lines += _wrap(f"     PMD-mapped in the replay's ranges (PAGEMAP_SCAN): "
                       f"{fmt_bytes(huge_bytes)}", width, "  ")
    files = layout.large_file_mappings()
    lines += _wrap(f"anonymous mappings >= 2 MiB: {large} live, {aligned} of them start 2 MiB-"
                   f"aligned" + (f" (and {plural(files, 'file mapping')} >= 2 MiB replayed as "
                                 f"anonymous)" if files else ""), width, "  ")
    done = layout.collapse
    if done:
        what = (f"MADV_COLLAPSE on {plural(done['calls'], 'range')} ({done['failed']} failed)"
                if done["how"] == "madvise" else
                f"waited {done['seconds']:.0f} s for khugepaged: {done.get('full_scans', 0)} full "
                f"scans, {done.get('pages_collapsed', 0)} pages collapsed (system-wide)")
        lines += _wrap(f"collapse before this picture: {what}", width, "  ")
    heap = layout.heap
    if heap:
        lines += _wrap(f"brk heap: {fmt_bytes(heap['bytes'])} at {heap['start']:#x} in "
                       f"{plural(heap['vmas'], 'VMA')}, AnonHugePages "
                       f"{fmt_bytes(heap['anon_huge_bytes'])}; reserved up to "
                       f"{fmt_bytes(heap['reserved_bytes'])} (its largest size in the trace), the "
                       f"rest PROT_NONE and not counted as replay memory", width, "  ")
    return lines
