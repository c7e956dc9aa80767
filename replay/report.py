"""Reporters: turn result documents into text. They only read results, never run replays."""

from __future__ import annotations

from traces.host import describe_thp
from traces.units import fmt_bytes

MIB = 1 << 20

# (dotted path in a run, label with unit, scale divisor, decimals). Order = order printed.
METRICS = (
    ("events_per_s", "replay speed (events/s)", 1, 0),
    ("engine_s", "engine time (s)", 1, 4),
    ("touch_gbps", "touch speed (GB/s)", 1, 2),
    ("access.gbps", "access speed (GB/s)", 1, 2),
    ("access.ns_per_read", "access time (ns/read)", 1, 2),
    ("minflt", "minor faults", 1, 0),
    ("vmstat.thp_fault_alloc", "thp_fault_alloc", 1, 0),
    ("vmstat.thp_fault_fallback", "thp_fault_fallback", 1, 0),
    ("vmstat.thp_collapse_alloc", "thp_collapse_alloc", 1, 0),
    ("peak_vmas", "peak VMAs", 1, 0),
    ("peak_anon_huge_bytes", "peak AnonHugePages (MiB)", MIB, 1),
    ("end_anon_huge_bytes", "end AnonHugePages (MiB)", MIB, 1),
    ("peak_rss_bytes", "peak Rss of replay (MiB)", MIB, 1),
    ("thp_eligible_bytes", "THP-eligible 2M blocks (MiB)", MIB, 1),
    ("large_mappings", "mappings >= 2 MiB", 1, 0),
    ("pmd_aligned_large_mappings", "  of them 2 MiB-aligned", 1, 0),
    ("holes", "holes between mappings", 1, 0),
    ("hole_bytes", "hole bytes (MiB)", MIB, 1),
    ("ops.mmap.p50_ns", "mmap p50 (ns)", 1, 0),
    ("ops.mmap.p99_ns", "mmap p99 (ns)", 1, 0),
    ("ops.munmap.p50_ns", "munmap p50 (ns)", 1, 0),
    ("ops.munmap.p99_ns", "munmap p99 (ns)", 1, 0),
)


def fmt_number(value, scale: float = 1, decimals: int = 0) -> str:
    if value is None:
        return "n/a"
    value = value / scale
    if decimals == 0:
        return f"{value:,.0f}"
    return f"{value:,.{decimals}f}"


def header_lines(result: dict) -> list[str]:
    trace = result["trace"]
    host = result.get("host") or {}
    return [
        f"trace   {trace['name']} ({trace['events']} events, source {trace['source']})",
        f"        sha256 {trace['sha256'][:16]}...",
        f"kernel  Linux {host.get('kernel', '?')} on {host.get('hostname', '?')}",
        f"cpu     {host.get('cpu_model') or '?'}",
        f"thp     {describe_thp(host)}",
        f"command {result.get('command', '')}",
    ]


def format_replay(result: dict) -> str:
    """The text summary ``mmreplay replay`` prints: one line per metric, median over runs."""
    config = result["config"]
    runs = result["runs"]
    lines = header_lines(result)
    lines.append(f"config  policy={config['policy']} thp={config['thp']} touch={config['touch']} "
                 f"access={config['access']} files={config['files']}")
    emulation = result.get("policy_emulation") or {}
    if emulation and not emulation.get("emulated", True):
        lines.append(f"WARNING policy {config['policy']} is not exact here: {emulation.get('why')}")
    lines.append("")
    summary = result["summary"]
    multi = len(runs) > 1
    head = f"{'metric':<34}{'median':>14}"
    if multi:
        head += f"{'min':>14}{'max':>14}"
    lines.append(head + ("" if multi else ""))
    for path, label, scale, decimals in METRICS:
        stats = summary.get(path)
        if stats is None:
            continue
        line = f"{label:<34}{fmt_number(stats['median'], scale, decimals):>14}"
        if multi:
            line += (f"{fmt_number(stats['min'], scale, decimals):>14}"
                     f"{fmt_number(stats['max'], scale, decimals):>14}")
        lines.append(line)
    lines.append("")
    last = runs[-1]
    ops = ", ".join(f"{name} {s['count']}" + (f" ({s['failed']} failed)" if s["failed"] else "")
                    for name, s in last["ops"].items() if s["count"])
    lines.append(f"calls   {ops or 'none'} ({len(runs)} run{'s' if multi else ''})")
    lines.append(f"peak    {fmt_bytes(last['peak_live_bytes'])} live in the replay's mappings")
    if last["skipped"]:
        lines.append("skipped " + ", ".join(f"{k} {v}" for k, v in sorted(last["skipped"].items())))
    if last["replayed_differently"]:
        lines.append("changed " + ", ".join(f"{k} {v}" for k, v in
                                            sorted(last["replayed_differently"].items())))
    unavailable = last.get("perf_unavailable") or {}
    if unavailable:
        lines.append("perf    unavailable here: " + ", ".join(sorted(unavailable)))
    if any(run["interrupted"] for run in runs):
        lines.append(f"INTERRUPTED ({runs[-1]['interrupt_reason']}): partial figures")
    return "\n".join(lines) + "\n"
