"""The text ``mmreplay replay --allocator`` prints: it only reads the result document."""

from __future__ import annotations

from traces.text import escape, escape_lines
from traces.units import fmt_bytes

from replay.reporters.report import (calls_text, header_lines, latencies, metric_lines,
                                     not_replayed_lines)

MIB = 1 << 20

# (dotted path in a run, label with unit, scale divisor, decimals), in print order.
ALLOC_METRICS = (
    ("calls_per_s", "calls/s (loop, touches included)", 1, 0),
    *latencies("malloc p50", "malloc p99", "free p50", "free p99", "calloc p50", "realloc p50",
               "posix_memalign p50"),
    ("minflt", "minor faults", 1, 0),
    ("peak_requested_bytes", "requested at peak MiB", MIB, 1),
    ("peak_rss_growth_bytes", "peak RSS growth MiB", MIB, 1),
    ("peak_sample_rss_growth_bytes", "RSS growth at trace peak MiB", MIB, 1),
    ("end_rss_growth_bytes", "RSS growth at end MiB", MIB, 1),
    ("peak_anon_huge_bytes", "AnonHugePages growth MiB", MIB, 1),
    ("allocator_mappings_at_peak.vmas", "allocator VMAs at peak", 1, 0),
    ("allocator_mappings_at_peak.mapped_bytes", "  mapped MiB", MIB, 1),
    ("allocator_mappings_at_peak.large_vmas", "  of them >= 2 MiB", 1, 0),
    ("allocator_mappings_at_peak.pmd_aligned_large_vmas", "    2 MiB-aligned", 1, 0),
    ("allocator_mappings_at_peak.thp_eligible_bytes", "  THP-eligible MiB", MIB, 1),
    ("allocator_mappings_at_peak.anon_huge_bytes", "  AnonHugePages MiB", MIB, 1),
)


def format_alloc_replay(result: dict) -> str:
    config = result["config"]
    runs = result["runs"]
    lines = header_lines(result)
    allocator = config["allocator"] + (f" ({config['library']})" if config.get("library") else
                                       " (this process's libc)")
    lines.append(f"config  allocator={escape(allocator)} touch={config['touch']}"
                 + (f" tunables={escape(':'.join(config['tunables']))}" if config["tunables"]
                    else ""))
    lines.append("")
    summary = result["summary"]
    multi = len(runs) > 1
    lines += metric_lines(summary, ALLOC_METRICS, multi, 34)
    lines.append("")
    last = runs[-1]
    lines.append(f"calls   {calls_text(last)} ({len(runs)} run{'s' if multi else ''}, one thread; "
                 f"{result['program']['recorded_threads']} recorded)")
    lines += not_replayed_lines(last)
    lines.append("figures of the replay process since its first call; sizes are growth over "
                 f"its {fmt_bytes(last['rss_before_bytes'])} RSS before it")
    mm = result.get("mm_trace")
    if mm:
        ops = ", ".join(f"{op} {n}" for op, n in mm["ops"].items() if n) or "no calls"
        lines.append(f"mm trace {escape(mm['path'])}: {mm['events']} calls ({ops}); "
                     f"{mm['large_mmaps']} anonymous mmaps >= 2 MiB, "
                     f"{mm['pmd_multiple_mmaps']} exact multiples of 2 MiB")
    if any(run["interrupted"] for run in runs):
        lines.append(f"INTERRUPTED ({runs[-1]['interrupt_reason']}): partial figures")
    return escape_lines("\n".join(lines)) + "\n"
