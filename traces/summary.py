"""What a trace contains: the figures ``mmreplay info`` prints (TraceSummary as a plain dict)."""

from __future__ import annotations

import shlex
import textwrap

import numpy as np
import pyarrow as pa

from .format import column_np, events_sha256, op_names, trace_metadata
from .host import describe_thp
from .liveset import LiveSet, page_round, successful_calls
from .text import escape, escape_lines
from .alloc_summary import format_allocations, has_allocations, summarize_allocations
from .schema import MAP_ANONYMOUS, MM_OPS, OP_CODE, OPS, PMD_SIZE
from .units import KIB, MIB, SIZE_BUCKETS, fmt_bytes, fmt_duration_ns  # noqa: F401 (re-export)


def size_histogram(lengths: np.ndarray) -> dict:
    bounds = np.array([lower for _, lower in SIZE_BUCKETS[1:]], dtype=np.uint64)
    bucket = np.searchsorted(bounds, lengths, side="right")
    histogram = {}
    for index, (label, _) in enumerate(SIZE_BUCKETS):
        chosen = lengths[bucket == index]
        # Python ints: hostile traces carry lengths whose uint64 sum would wrap.
        histogram[label] = {"count": int(len(chosen)), "bytes": sum(chosen.tolist())}
    return histogram


def walk_live_bytes(table: pa.Table, series: list | None = None) -> dict:
    """Replay the trace's successful mmap/munmap/mremap calls through a ``LiveSet``.

    Returns peak live anonymous bytes, the row where it is first reached and the count of
    partial munmaps: munmaps after which some mapping they removed bytes from (one mmap or mremap
    call's result) still has bytes alive elsewhere. With ``series``, (row, live anonymous bytes)
    is appended to it after each of those calls.
    """
    interesting, calls = successful_calls(table, ("mmap", "munmap", "mremap"))
    op, addr, length, flags = calls["op"], calls["addr"], calls["length"], calls["flags"]

    live = LiveSet()
    live_by_mapping: dict[int, int] = {}  # row that created a mapping -> its bytes still alive

    def forget(pieces) -> set:
        for piece in pieces:
            live_by_mapping[piece.map_id] -= piece.length
            if not live_by_mapping[piece.map_id]:
                del live_by_mapping[piece.map_id]
        return {piece.map_id for piece in pieces}

    def created(row: int, start: int, end: int, displaced) -> None:
        forget(displaced)
        if end > start:
            live_by_mapping[row] = end - start

    peak, peak_row, partial = 0, None, 0
    mmap_code, munmap_code = OP_CODE["mmap"], OP_CODE["munmap"]
    for i, row in enumerate(interesting.tolist()):
        start = addr[i]
        if op[i] == mmap_code:
            anon = bool(flags[i] & MAP_ANONYMOUS) or calls["fd"][i] < 0
            end = start + length[i]
            created(row, start, end, live.map(start, end, row, calls["prot"][i], anon))
        elif op[i] == munmap_code:
            touched = forget(live.unmap(start, start + length[i]))
            if any(mapping in live_by_mapping for mapping in touched):
                partial += 1
        else:  # mremap: the result is a mapping of its own (row), even of an unknown old range
            new_start = calls["new_addr"][i]
            new_end = new_start + calls["new_length"][i]
            _, removed, displaced = live.mremap(start, start + length[i], new_start, new_end,
                                                flags[i], map_id=row)
            forget(removed)
            created(row, new_start, new_end, displaced)
        if live.live_anon_bytes > peak:
            peak, peak_row = live.live_anon_bytes, row
        if series is not None:  # live bytes over time, for plots
            series.append((row, live.live_anon_bytes))
    return {"peak_live_bytes": peak, "peak_live_event": peak_row, "partial_munmaps": partial,
            "end_live_bytes": live.live_anon_bytes}


def heap_sizes(table: pa.Table) -> tuple[np.ndarray, np.ndarray, int | None]:
    """The brk heap through the trace: (rows of the successful brk calls, heap size in bytes after
    each, page-rounded, the first break returned).

    The heap is counted from the first break the trace saw (brk(NULL) at start-up returns the
    start of the heap; a trace recorded by attaching later starts at the break of that moment,
    and what lies below it is not known). A break below that start counts as an empty heap.
    """
    codes = op_names(table)
    new_addr_column = table.column("new_addr")
    ok = (codes == OP_CODE["brk"]) & (column_np(table, "errno") == 0)
    ok &= ~np.asarray(new_addr_column.is_null(), bool)
    rows = np.flatnonzero(ok)
    if len(rows) == 0:
        return rows, np.zeros(0, np.uint64), None
    breaks = column_np(table, "new_addr")[rows].astype(np.uint64)
    start = int(breaks[0])
    above = np.where(breaks > np.uint64(start), breaks - np.uint64(start), np.uint64(0))
    return rows, page_round(above), start


def heap_summary(table: pa.Table) -> dict:
    """What the trace did with its brk heap (the ``brk_heap`` block of ``info --json``)."""
    rows, sizes, start = heap_sizes(table)
    # Python ints: a hostile trace's sizes can be near 2^64.
    sizes = [0] + sizes.tolist()
    steps = [b - a for a, b in zip(sizes, sizes[1:])]
    peak = max(sizes)
    return {"brk_calls": int(len(rows)), "start": start, "peak_bytes": peak,
            "peak_event": int(rows[sizes.index(peak) - 1]) if peak else None,
            "end_bytes": sizes[-1],
            "grows": sum(1 for d in steps if d > 0), "grown_bytes": sum(d for d in steps if d > 0),
            "shrinks": sum(1 for d in steps if d < 0),
            "shrunk_bytes": -sum(d for d in steps if d < 0)}


def summarize(table: pa.Table) -> dict:
    """The ``mmreplay info --json`` document for a validated trace table."""
    codes = op_names(table)
    errno = column_np(table, "errno")
    ts = column_np(table, "ts_ns")
    is_mmap = (codes == OP_CODE["mmap"]) & (errno == 0)
    anon = (column_np(table, "flags") & MAP_ANONYMOUS).astype(bool) | (column_np(table, "fd", -1) < 0)
    anon_mmap_lengths = page_round(column_np(table, "length")[is_mmap & anon])
    pmd = np.uint64(PMD_SIZE)
    walk = walk_live_bytes(table)
    allocations = has_allocations(table)
    listed = OPS if allocations else MM_OPS  # allocation ops only where the trace has them
    document = {
        "events": int(table.num_rows),
        "ops": {name: int((codes == OPS.index(name)).sum()) for name in listed},
        "failed": int((errno != 0).sum()),
        "failed_by_op": {name: int(((codes == code) & (errno != 0)).sum())
                         for code, name in enumerate(OPS) if ((codes == code) & (errno != 0)).any()},
        "threads": int(len(np.unique(column_np(table, "tid")))),
        "duration_ns": int(ts.max() - ts.min()) if len(ts) else 0,
        "peak_live_bytes": walk["peak_live_bytes"],
        "peak_live_event": walk["peak_live_event"],
        "end_live_bytes": walk["end_live_bytes"],
        "anon_mmaps": int((is_mmap & anon).sum()),
        "file_mmaps": int((is_mmap & ~anon).sum()),
        "pmd_multiple_mmaps": int(((anon_mmap_lengths > 0) & ((anon_mmap_lengths % pmd) == 0)).sum()),
        "pmd_unaligned_large_mmaps": int(((anon_mmap_lengths >= pmd)
                                          & ((anon_mmap_lengths % pmd) != 0)).sum()),
        "size_histogram": size_histogram(anon_mmap_lengths),
        "partial_munmaps": walk["partial_munmaps"],
        "events_sha256": events_sha256(table),
        "brk_heap": heap_summary(table),
        "metadata": trace_metadata(table),
    }
    if allocations:
        document["allocations"] = summarize_allocations(table)
    return document


WIDTH = 72  # mail-ready, as every text mmreplay prints
LABEL_WIDTH = 13


def _printable(value) -> str:
    """Metadata comes from strangers: no control characters (newlines, terminal escapes)."""
    return escape(value, 1000)


def _field(label: str, value) -> list[str]:
    """``label value`` wrapped to WIDTH columns, continuation lines indented under the value."""
    return textwrap.wrap(_printable(value), WIDTH, initial_indent=f"{label:<{LABEL_WIDTH}}",
                         subsequent_indent=" " * LABEL_WIDTH, break_on_hyphens=False) or [label]


def format_summary(summary: dict, name: str = "") -> str:
    """Plain text for ``mmreplay info`` (fits WIDTH columns)."""
    meta = summary["metadata"]
    host = meta.get("host") if isinstance(meta.get("host"), dict) else {}
    lines = _field("trace", name)
    lines += _field("source", f"{meta.get('source', 'unknown')}, created {meta.get('created', '?')}, "
                              f"format {meta.get('format_version', '?')}")
    if meta.get("command"):
        lines += _field("command", _shell_join(meta["command"]))
    if meta.get("regenerate"):
        lines += _field("regenerate", meta["regenerate"])
    if isinstance(meta.get("slice"), dict):
        lines += _field("slice of", describe_slice(meta["slice"]))
    if host:
        lines += _field("host", f"{host.get('hostname', '?')}, Linux {host.get('kernel', '?')}, "
                                f"{host.get('machine', '?')}")
        lines += _field("cpu", host.get("cpu_model") or "?")
        lines += _field("thp", describe_thp(host))
    lines.append("")
    ops = ", ".join(f"{op} {count}" for op, count in summary["ops"].items() if count)
    lines += _field("events", f"{summary['events']} ({ops or 'none'})")
    failed = ", ".join(f"{op} {n}" for op, n in summary.get("failed_by_op", {}).items())
    lines += _field("failed calls", f"{summary['failed']}" + (f" ({failed})" if failed else ""))
    lines += _field("threads", summary["threads"])
    lines += _field("duration", fmt_duration_ns(summary["duration_ns"]))
    lines += _field("mmaps", f"{summary['anon_mmaps']} anonymous, {summary['file_mmaps']} "
                             "file-backed (successful)")
    event = summary["peak_live_event"]
    lines += _field("peak live", f"{fmt_bytes(summary['peak_live_bytes'])} anonymous"
                    + (f", first at event {event}" if event is not None else ""))
    lines += _field("2 MiB", f"{summary['pmd_multiple_mmaps']} anonymous mmaps are exact multiples "
                             "of 2 MiB")
    lines += _field("", f"{summary['pmd_unaligned_large_mmaps']} are >= 2 MiB but not a multiple "
                        "(aligned by 6.7-6.11)")
    lines += _field("partial", f"{summary['partial_munmaps']} munmaps left part of a mapping alive")
    heap = summary.get("brk_heap") or {}
    if heap.get("brk_calls"):
        lines += _field("brk heap", f"{fmt_bytes(heap['peak_bytes'])} at most above the first "
                                    f"break; grew {heap['grows']} times ("
                                    f"{fmt_bytes(heap['grown_bytes'])} in all), shrank "
                                    f"{heap['shrinks']} times ({fmt_bytes(heap['shrunk_bytes'])})")
    lines.append("")
    lines.append("anonymous mmap lengths     count          bytes")
    for label, cell in summary["size_histogram"].items():
        lines.append(f"  {label:<18} {cell['count']:>12} {fmt_bytes(cell['bytes']):>14}")
    if summary.get("allocations"):
        lines.append("")
        lines += format_allocations(summary["allocations"], _field)
    return escape_lines("\n".join(lines)) + "\n"


def describe_slice(record: dict) -> str:
    """Where a slice came from, in one sentence (the metadata `mmreplay slice` writes)."""
    asked = record.get("asked") or {}
    if "events" in asked:
        low, high = asked["events"]
        what = f"events {'' if low is None else low}:{'' if high is None else high}"
    elif "time_ns" in asked:
        low, high = asked["time_ns"]
        what = (f"time {'' if low is None else fmt_duration_ns(low)}:"
                f"{'' if high is None else fmt_duration_ns(high)}")
    elif "threads" in asked:
        what = "threads " + ",".join(str(t) for t in asked["threads"])
    else:
        what = "?"
    sha = str(record.get("parent_sha256") or "?")[:16]
    synthetic = record.get("synthetic_rows") or []
    return (f"{record.get('parent', '?')} (sha256 {sha}...), {what}: "
            f"{record.get('kept_events', '?')} events kept, {len(synthetic)} synthetic rows "
            "re-create the memory mapped before")


def _shell_join(argv) -> str:
    if isinstance(argv, list):
        return " ".join(shlex.quote(str(a)) for a in argv)
    return str(argv)
