"""The replay's captured address space (``Layout``) and the arithmetic on it: ranges, coverage,
and the rows and segments both pictures (ASCII and PNG) are planned in.

Everything here computes on arrays alone, so it is testable on any data;
``replay/running/layout.py`` captures a ``Layout`` from a live replay, ``replay/reporters/layout_text.py`` draws it as ASCII and
``replay/reporters/pictures.py`` as PNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.host import describe_thp
from traces.schema import PMD_SIZE

from replay.measure.probes import MAX_HOLE_BYTES, Vmas, layout_metrics, merge_ranges, owned_mask

SPLIT_ROWS = 4                      # a stretch without replay memory longer than this many rows
#                                     is folded into one "~ unused ~" line

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
        return ranges_array([self.heap["start"], self.heap["start"] + self.heap["reserved_bytes"]])

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


def ranges_array(array) -> np.ndarray:
    """Any pairs as an (n, 2) int64 array of [start, end) ranges."""
    return np.asarray(array, np.int64).reshape(-1, 2)


def huge_bytes_in(spans: np.ndarray, huge: np.ndarray) -> np.ndarray:
    """Bytes of the ``huge`` ranges inside each of the (n, 2) ``spans``."""
    covered = Coverage(merge_ranges(huge))
    spans = ranges_array(spans)
    return covered.below(spans[:, 1]) - covered.below(spans[:, 0])


def estimate_huge_ranges(vmas: np.ndarray, anon_huge_bytes: np.ndarray) -> np.ndarray:
    """Without PAGEMAP_SCAN: each VMA's AnonHugePages as its first whole 2 MiB blocks."""
    out = []
    for (start, end), huge in zip(vmas.tolist(), anon_huge_bytes.tolist()):
        first = -(-start // PMD_SIZE) * PMD_SIZE
        blocks = min(int(huge) // PMD_SIZE, max(0, (end - first) // PMD_SIZE))
        if blocks:
            out.append((first, first + blocks * PMD_SIZE))
    return ranges_array(out)


def layout_from(vmas: Vmas, replay: np.ndarray, huge: np.ndarray | None,
                mapping_start: np.ndarray, mapping_length: np.ndarray, *, trace_name: str,
                trace_events: int, config: dict, at: str, events_replayed: int,
                host: dict, mapping_anon: np.ndarray | None = None,
                heap: dict | None = None, collapse: dict | None = None) -> Layout:
    """Build a ``Layout`` from what was read while the replay's mappings were live (pure)."""
    replay = ranges_array(replay)
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

# ---------------------------------------------------------------------------------------------
# Planning: rows and segments (shared by the ASCII and PNG pictures)


class Coverage:
    """Bytes of a set of sorted, non-overlapping ranges that lie below any address (vectorized)."""

    def __init__(self, ranges: np.ndarray):
        ranges = ranges_array(ranges)
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
    replay = ranges_array(replay)
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
    ranges = ranges_array(ranges)
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
    return ranges_array(out)


def other_vmas_between(layout: Layout, low: int, high: int) -> int:
    """VMAs without replay memory lying wholly in [low, high) (VMAs are sorted and disjoint)."""
    others = layout.vmas[~layout.vma_replay]
    first = int(np.searchsorted(others[:, 0], low, side="left"))
    last = int(np.searchsorted(others[:, 1], high, side="right"))
    return max(0, last - first)
