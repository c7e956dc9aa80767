"""What the allocation level of a trace holds (``record --malloc``): the figures ``mmreplay info``
adds under ``allocations``: calls, request sizes, peak live requested bytes, lifetimes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .alloc_walk import (A_FREE, A_REALLOC, R_END_BYTES, R_FAILED, R_LIVE_REUSED, R_PEAK_BYTES,
                         R_PEAK_OP, R_UNKNOWN_FREE, R_UNKNOWN_REALLOC, Walk)
from .format import column_np, op_names
from .schema import ALLOC_OPS, OPS
from .units import fmt_bytes, fmt_duration_ns

KIB, MIB = 1 << 10, 1 << 20
# (label, lower bound inclusive) of the request size histogram: glibc's default mmap threshold
# (128 KiB) and the 512 KiB-1.5 MiB buffers of the THP alignment report are bucket edges.
REQUEST_BUCKETS = (("<64", 0), ("64-512", 64), ("512-4K", 512), ("4K-32K", 4 * KIB),
                   ("32K-128K", 32 * KIB), ("128K-512K", 128 * KIB), ("512K-1.5M", 512 * KIB),
                   ("1.5M-2M", 1536 * KIB), ("2M-16M", 2 * MIB), (">=16M", 16 * MIB))
US, MS, S = 1000, 1000_000, 1000_000_000
# (label, lower bound in ns inclusive) of the lifetime histogram.
LIFETIME_BUCKETS = (("<1us", 0), ("1-10us", US), ("10-100us", 10 * US), ("0.1-1ms", 100 * US),
                    ("1-10ms", MS), ("10-100ms", 10 * MS), ("0.1-1s", 100 * MS), ("1-10s", S),
                    (">=10s", 10 * S))


def has_allocations(table: pa.Table) -> bool:
    return bool(table.num_rows) and bool((op_names(table) >= OPS.index(ALLOC_OPS[0])).any())


def _histogram(values: np.ndarray, weights: np.ndarray, buckets) -> dict:
    bounds = np.array([lower for _, lower in buckets[1:]], np.int64)
    index = np.searchsorted(bounds, values, side="right")
    return {label: {"count": int((index == i).sum()), "bytes": int(weights[index == i].sum())}
            for i, (label, _) in enumerate(buckets)}


def summarize_allocations(table: pa.Table) -> dict:
    """The ``allocations`` block of ``mmreplay info --json`` (a trace with allocation rows)."""
    codes = op_names(table)
    is_alloc = codes >= OPS.index(ALLOC_OPS[0])
    errno = column_np(table, "errno")
    tid = column_np(table, "tid")[is_alloc]
    walk = Walk(table)
    creating = walk.slot >= 0
    sizes = walk.size[creating]
    ts = column_np(table, "ts_ns").astype(np.int64)
    birth = np.full(walk.slots, -1, np.int64)
    birth[walk.slot[creating]] = walk.row[creating]
    ending = (walk.ref >= 0) & ((walk.code == A_FREE) | (walk.code == A_REALLOC))
    ended_slots = walk.ref[ending]
    lifetimes = ts[walk.row[ending]] - ts[birth[ended_slots]]
    lifetime_bytes = walk.slot_size[ended_slots]
    threads, per_thread = np.unique(tid, return_counts=True)
    peak_op = walk.counter(R_PEAK_OP)
    never_freed = walk.slots - len(ended_slots)
    lifetime_histogram = _histogram(lifetimes, lifetime_bytes, LIFETIME_BUCKETS)
    kept = np.ones(walk.slots, bool)
    kept[ended_slots] = False
    lifetime_histogram["never freed"] = {"count": int(never_freed),
                                         "bytes": int(walk.slot_size[kept].sum())}
    return {
        "calls": int(is_alloc.sum()),
        "ops": {name: int((codes == OPS.index(name)).sum()) for name in ALLOC_OPS},
        "failed": int((is_alloc & (errno != 0)).sum()),
        "threads": int(len(threads)),
        "busiest_thread": ({"tid": int(threads[per_thread.argmax()]),
                            "calls": int(per_thread.max())} if len(threads) else None),
        "frees_of_unknown_pointers": walk.counter(R_UNKNOWN_FREE),
        "reallocs_of_unknown_pointers": walk.counter(R_UNKNOWN_REALLOC),
        "pointers_returned_while_live": walk.counter(R_LIVE_REUSED),
        "skipped_failed": walk.counter(R_FAILED),
        "requests": int(len(sizes)),
        "requested_bytes": int(sizes.sum()),
        "request_histogram": _histogram(sizes, sizes, REQUEST_BUCKETS),
        "peak_live_requested_bytes": walk.counter(R_PEAK_BYTES),
        "peak_live_requested_event": int(walk.row[peak_op - 1]) if peak_op else None,
        "end_live_requested_bytes": walk.counter(R_END_BYTES),
        "lifetime_ns": {q: (int(np.percentile(lifetimes, p)) if len(lifetimes) else None)
                        for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))},
        "lifetime_histogram": lifetime_histogram,
    }


def format_allocations(block: dict, field) -> list[str]:
    """The lines ``info`` prints for the allocation level; ``field(label, value)`` wraps one."""
    lines = []
    ops = ", ".join(f"{op} {n}" for op, n in block["ops"].items() if n)
    lines += field("allocations", f"{block['calls']} calls ({ops})")
    busiest = block["busiest_thread"]
    if busiest:
        share = busiest["calls"] / block["calls"] * 100 if block["calls"] else 0
        lines += field("", f"{block['threads']} threads; {share:.1f}% of the calls in tid "
                           f"{busiest['tid']}")
    lines += field("", f"{block['failed']} failed; {block['frees_of_unknown_pointers']} frees "
                       "and " f"{block['reallocs_of_unknown_pointers']} reallocs of pointers the "
                       "trace never allocated")
    event = block["peak_live_requested_event"]
    lines += field("requested", f"{fmt_bytes(block['peak_live_requested_bytes'])} live at the "
                                "peak" + (f" (event {event})" if event is not None else "")
                   + f", {fmt_bytes(block['end_live_requested_bytes'])} at the end; "
                   f"{fmt_bytes(block['requested_bytes'])} in {block['requests']} requests")
    life = block["lifetime_ns"]
    if life["p50"] is not None:
        lines += field("lifetimes", f"p50 {fmt_duration_ns(life['p50'])}, p90 "
                                    f"{fmt_duration_ns(life['p90'])}, p99 "
                                    f"{fmt_duration_ns(life['p99'])}, max "
                                    f"{fmt_duration_ns(life['max'])} (freed allocations)")
    lines.append("")
    lines.append("request sizes              count          bytes")
    for label, cell in block["request_histogram"].items():
        lines.append(f"  {label:<18} {cell['count']:>12} {fmt_bytes(cell['bytes']):>14}")
    lines.append("")
    lines.append("lifetimes                  count          bytes")
    for label, cell in block["lifetime_histogram"].items():
        lines.append(f"  {label:<18} {cell['count']:>12} {fmt_bytes(cell['bytes']):>14}")
    return lines
