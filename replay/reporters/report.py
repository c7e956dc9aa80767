"""Reporters: turn result documents into text. They only read results, never run replays."""

from __future__ import annotations

from traces.host import describe_thp
from traces.text import escape, escape_lines
from traces.units import fmt_bytes

from replay.results.cells import (SIGNIFICANCE_RULE, Cell, fmt_number, percent_change, significant,
                                  spread_text, value_text, wrap_ascii)
from replay.results.result import finished_runs

MIB = 1 << 20


def latencies(*calls: str) -> tuple:
    """Metric rows of call latencies: "mmap p50" is ("ops.mmap.p50_ns", "mmap p50 ns", 1, 0)."""
    return tuple((f"ops.{op}.{percentile}_ns", f"{op} {percentile} ns", 1, 0)
                 for op, percentile in (call.split() for call in calls))


# (dotted path in a run, label with unit (<= 25 chars: the compare table is 72 columns),
#  scale divisor, decimals). Order = order printed.
METRICS = (
    ("events_per_s", "events/s", 1, 0),
    ("engine_s", "engine time (s)", 1, 4),
    ("touch_gbps", "touch GB/s", 1, 2),
    ("access.gbps", "access GB/s", 1, 2),
    ("access.ns_per_read", "access ns/read", 1, 2),
    ("minflt", "minor faults", 1, 0),
    ("cgroup.pgfault", "cgroup page faults", 1, 0),
    ("peak_vmas", "peak VMAs", 1, 0),
    ("peak_anon_huge_bytes", "peak AnonHugePages MiB", MIB, 1),
    ("collapsed_anon_huge_bytes", "  after collapse MiB", MIB, 1),
    ("end_anon_huge_bytes", "end AnonHugePages MiB", MIB, 1),
    ("cgroup.peak_anon_thp_bytes", "cgroup THP at peak MiB", MIB, 1),
    ("cgroup.collapsed_anon_thp_bytes", "  after collapse MiB", MIB, 1),
    ("cgroup.thp_fault_alloc", "cgroup thp_fault_alloc", 1, 0),
    ("cgroup.thp_collapse_alloc", "cgroup thp_collapse_alloc", 1, 0),
    ("vmstat_system_wide.thp_fault_alloc", "system thp_fault_alloc", 1, 0),
    ("vmstat_system_wide.thp_fault_fallback", "system thp_fault_fallback", 1, 0),
    ("vmstat_system_wide.thp_collapse_alloc", "system thp_collapse_alloc", 1, 0),
    ("peak_rss_bytes", "peak Rss MiB", MIB, 1),
    ("thp_eligible_bytes", "THP-eligible MiB", MIB, 1),
    ("heap.peak_bytes", "brk heap peak MiB", MIB, 1),
    ("heap.minflt", "  heap page faults", 1, 0),
    ("heap.peak_anon_huge_bytes", "  heap AnonHugePages MiB", MIB, 1),
    ("heap.collapsed_anon_huge_bytes", "  after collapse MiB", MIB, 1),
    ("large_mappings", "mappings >= 2 MiB", 1, 0),
    ("pmd_aligned_large_mappings", "  of them 2 MiB-aligned", 1, 0),
    ("pmd_aligned_by_size.512K-1.5M.mappings", "mappings 512K-1.5M", 1, 0),
    ("pmd_aligned_by_size.512K-1.5M.pmd_aligned", "  of them 2 MiB-aligned", 1, 0),
    ("holes", "holes", 1, 0),
    ("hole_bytes", "hole MiB", MIB, 1),
    *latencies("mmap p50", "mmap p99", "munmap p50", "munmap p99"),
    ("wait_s", "thread wait (s)", 1, 4),
    # allocation-level replays (replay --allocator): this process's figures since the first call
    ("calls_per_s", "allocation calls/s", 1, 0),
    *latencies("malloc p50", "malloc p99", "free p50", "free p99", "realloc p50", "calloc p50"),
    ("peak_rss_growth_bytes", "peak RSS growth MiB", MIB, 1),
    ("end_rss_growth_bytes", "RSS growth at end MiB", MIB, 1),
    ("allocator_mappings_at_peak.vmas", "allocator VMAs at peak", 1, 0),
    ("allocator_mappings_at_peak.large_vmas", "  of them >= 2 MiB", 1, 0),
    ("allocator_mappings_at_peak.pmd_aligned_large_vmas", "  of them 2 MiB-aligned", 1, 0),
    ("allocator_mappings_at_peak.thp_eligible_bytes", "  THP-eligible MiB", MIB, 1),
)


def figure_sources(run: dict) -> str:
    """Where the THP and fault figures come from: the line under every table."""
    text = ("AnonHugePages: smaps of the replay's own mappings; system: /proc/vmstat deltas, "
            "every process on the machine")
    cgroup = run.get("cgroup")
    if cgroup:
        text += (f"; cgroup: the replay's own memory cgroup (v{cgroup['version']}"
                 + (", which counts no THP events" if cgroup["version"] == 1 else "") + ")")
    elif run.get("cgroup_unavailable"):
        text += f"; no cgroup of its own: {run['cgroup_unavailable']}"
    return text


def header_lines(result: dict) -> list[str]:
    trace = result["trace"]
    host = result.get("host") or {}
    fields = [
        ("trace   ", f"{escape(trace['name'])} ({escape(trace['events'])} events, "
                     f"source {escape(trace['source'])})"),
        ("        ", f"sha256 {escape(str(trace['sha256'])[:16])}..."),
        ("kernel  ", f"Linux {escape(host.get('kernel', '?'))} on "
                     f"{escape(host.get('hostname', '?'))}"),
        ("cpu     ", escape(host.get("cpu_model") or "?")),
        ("thp     ", escape(describe_thp(host))),
        ("command ", escape(result.get("command", ""), 2000)),
    ]
    return [line for prefix, text in fields for line in wrap_ascii(prefix, text)]


TCG_NOTE = ("times are not comparable with native runs (full emulation); counts are: "
            "alignment, VMAs, holes, faults, THP pages")


def _seconds(value) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def vm_description(vm: dict) -> str:
    """'QEMU TCG guest, 2 CPUs, 2048 MiB, on HOST (why TCG)'."""
    runner = (vm.get("runner") or {}).get("hostname", "?")
    return (f"QEMU {str(vm.get('accel', '?')).upper()} guest, {vm.get('cpus')} CPUs, "
            f"{vm.get('memory_mib')} MiB, on {runner} ({vm.get('accel_reason')})")


def vm_startup(vm: dict) -> str:
    """'guest command at 41.3 s, first replayed event at 98.2 s after the command started ...'."""
    timings = vm.get("timings") or {}
    cache = vm.get("numba_cache") or {}
    warm = "warm" if cache.get("warm_at_start") else "prepared by this command"
    return (f"boot {_seconds(timings.get('boot_s'))}; guest command at "
            f"{_seconds(timings.get('command_to_guest_command_s'))}, first replayed event at "
            f"{_seconds(timings.get('command_to_first_event_s'))} after the command started "
            f"(numba cache {warm})")


def vm_lines(result: dict, label: str = "vm      ", width: int = 100) -> list[str]:
    vm = result.get("vm")
    if not vm:
        return []
    lines = wrap_ascii(label, vm_description(vm), width)
    lines += wrap_ascii(" " * len(label), "image " + str((vm.get("image") or {}).get("given")), width)
    if vm.get("guest_sysfs"):
        lines += wrap_ascii(" " * len(label), "guest sysfs " + ", ".join(
            f"{path}={entry.get('written')}" for path, entry in vm["guest_sysfs"].items()), width)
    lines += wrap_ascii(" " * len(label), vm_startup(vm), width)
    if vm.get("accel") == "tcg":
        lines += wrap_ascii(" " * len(label), "TCG: " + TCG_NOTE, width)
    return lines


def metric_lines(summary: dict, metrics, multi: bool, label_width: int,
                 head: str = "metric") -> list[str]:
    """A heading and one line per metric of ``metrics`` the summary holds: its median, and with
    ``multi`` its min and max over the runs, scaled."""
    columns = ("median", "min", "max") if multi else ("median",)
    lines = [f"{head:<{label_width}}" + "".join(f"{column:>14}" for column in columns)]
    for path, label, scale, decimals in metrics:
        stats = summary.get(path)
        if stats is not None:
            lines.append(f"{label:<{label_width}}" + "".join(
                f"{fmt_number(stats[column], scale, decimals):>14}" for column in columns))
    return lines


def calls_text(run: dict) -> str:
    """'mmap 120, munmap 118 (2 failed)': the calls a run made, by op."""
    return ", ".join(f"{name} {s['count']}" + (f" ({s['failed']} failed)" if s["failed"] else "")
                     for name, s in run["ops"].items() if s["count"]) or "none"


def not_replayed_lines(run: dict) -> list[str]:
    """The 'skipped' and 'changed' lines: trace calls a run left out or replayed differently."""
    return [f"{prefix} " + ", ".join(f"{k} {v}" for k, v in sorted(run[key].items()))
            for prefix, key in (("skipped", "skipped"), ("changed", "replayed_differently"))
            if run[key]]


def format_replay(result: dict) -> str:
    """The text summary ``mmreplay replay`` prints: one line per metric, median over runs."""
    config = result["config"]
    runs = result["runs"]
    lines = header_lines(result)
    lines += vm_lines(result)
    threads = config.get("threads", "1")
    lines += wrap_ascii("config  ", f"policy={config['policy']} thp={config['thp']} "
                        f"touch={config['touch']} access={config['access']} "
                        f"files={config['files']} threads={threads}"
                        + (f" order={config.get('order')}" if str(threads) != "1" else "")
                        + (f" collapse={config['collapse']}"
                           if config.get("collapse", "none") != "none" else ""))
    if config.get("from_trace"):
        taken = " ".join(f"--{key} {value}" for key, value in config["from_trace"].items())
        lines += wrap_ascii("        ", f"{taken} from the trace's recommended replay settings ("
                            f"{config.get('from_trace_why') or 'no reason given'}); give the "
                            "option to override")
    if result.get("warmup"):
        lines.append(f"        after {result['warmup']} uncounted warm-up run"
                     + ("s" if result["warmup"] > 1 else ""))
    emulation = result.get("policy_emulation") or {}
    if emulation and not emulation.get("emulated", True):
        lines.append(f"WARNING policy {config['policy']} is not exact here: {emulation.get('why')}")
    lines.append("")
    summary = result["summary"]
    done = finished_runs(result)
    multi = len(done) > 1
    from replay.reporters.copies_report import copies_section

    section = copies_section(result)
    copies = section["stages"][-1]["copies"] if section else None
    # With min and max: 72 columns.
    lines += metric_lines(summary, METRICS, multi, 30,
                          f"metric (sum of {copies} copies)" if copies else "metric")
    lines.append("")
    last = (done or runs)[-1]
    counted = len(done or runs)
    lines.append(f"calls   {calls_text(last)} ({counted} run{'s' if counted > 1 else ''})")
    lines.append(f"peak    {fmt_bytes(last['peak_live_bytes'])} live in the replay's mappings"
                 + (f" ({last.get('copies_finished')} copies together)" if copies else ""))
    lines += not_replayed_lines(last)
    lines += wrap_ascii("figures ", figure_sources(last))
    unavailable = last.get("perf_unavailable") or {}
    if unavailable:
        lines.append("perf    unavailable here: " + ", ".join(sorted(unavailable)))
    if len(done) < len(runs):
        stopped = runs[-1]
        where = f"INTERRUPTED ({stopped['interrupt_reason']}) in run {len(runs)} of " \
                f"{config.get('repeat', len(runs))}"
        if done:
            lines.append(f"{where}: the figures are over the {len(done)} finished "
                         f"run{'s' if len(done) > 1 else ''}; the partial run is left out")
        else:
            lines.append(f"{where}: partial figures, over the {stopped['events']} of "
                         f"{result['trace']['events']} events replayed before it")
    if copies:
        from replay.reporters.copies_report import copies_lines

        lines.append("")
        lines += copies_lines(result)
    return escape_lines("\n".join(lines)) + "\n"


# ---------------------------------------------------------------------------------------------
# A/B tables in the kernel test robot's format: base +- %stddev   %change   new +- %stddev  metric

def metric_cells(result: dict) -> dict:
    from replay.results.result import flatten_numbers

    values: dict = {}
    for run in finished_runs(result):  # a partial run is no sample of the configuration
        for path, value in flatten_numbers(run).items():
            values.setdefault(path, []).append(value)
    return {path: Cell(v) for path, v in values.items()}


def repro_header(results: list[dict], labels: list[str], commands: list[str], title: str) -> list[str]:
    """The block a mail reply starts with: kernel(s), THP, CPU, trace, exact commands. Labels
    take 8 columns, as in ``replay``'s header, so a full sha256 fits 72 columns."""
    lines = wrap_ascii("", title)
    kernels = []
    for label, result in zip(labels, results):
        host = result.get("host") or {}
        kernels.append((host.get("kernel", "?"), host.get("hostname", "?"), describe_thp(host),
                        host.get("cpu_model") or "?"))
    unique = sorted(set(kernels))
    if len(unique) == 1:
        kernel, hostname, thp, cpu = unique[0]
        lines += wrap_ascii("kernel  ", f"Linux {kernel} (host {hostname})")
        lines += wrap_ascii("thp     ", thp)
        lines += wrap_ascii("cpu     ", cpu)
    else:
        for label, (kernel, hostname, thp, cpu) in zip(labels, kernels):
            lines += wrap_ascii(f"[{label}] ", f"Linux {kernel} on {hostname}; {thp}; {cpu}")
    in_vm = [(label, result) for label, result in zip(labels, results) if result.get("vm")]
    for label, result in in_vm:
        vm = result["vm"]
        lines += wrap_ascii(f"[{label}] ", f"vm: {vm_description(vm)}; image "
                            f"{(vm.get('image') or {}).get('given')}"
                            + "".join(f"; guest sysfs {path}={entry.get('written')}"
                                      for path, entry in (vm.get("guest_sysfs") or {}).items())
                            + f"; {vm_startup(vm)}")
    if any(result["vm"].get("accel") == "tcg" for _, result in in_vm):
        lines += wrap_ascii("", "TCG guest: " + TCG_NOTE + ".")
    traces = []
    for result in results:
        trace = result["trace"]
        key = (trace["name"], trace["sha256"], trace["events"], trace["source"])
        if key not in traces:
            traces.append(key)
    for name, sha, events, source in traces:
        lines += wrap_ascii("trace   ", f"{name}, {events} events, source {source}")
        lines += wrap_ascii("sha256  ", sha)
    runs = {len(finished_runs(r)) for r in results}
    warmups = {r.get("warmup") for r in results if r.get("warmup")}
    lines += wrap_ascii("runs    ", f"{'/'.join(str(n) for n in sorted(runs))} finished per column"
                        + (", interleaved" if any(r.get("interleaved") for r in results) else "")
                        + (f", after {max(warmups)} uncounted warm-up round(s)" if warmups else ""))
    for command in commands:
        lines += wrap_ascii("command ", command)
    return lines


def _table_block(base: dict, new: dict, base_label: str, new_label: str) -> list[str]:
    backslash = "\\"
    lines = [f"{base_label[:16]:>16} {new_label[:27]:>27}",
             "-" * 16 + " " + "-" * 27,
             f"{'%stddev':>16} {'%change':>10} {'%stddev':>16}",
             f"{backslash:>14}   {'|':>8} {backslash:>15}"]
    for path, label, scale, decimals in METRICS:
        a, b = base.get(path), new.get(path)
        if a is None and b is None:
            continue
        mark = "*" if a is not None and b is not None and significant(a, b) else " "
        change = percent_change(a, b) if a is not None and b is not None else "n/a"
        line = (f"{value_text(a, scale, decimals, 10):>10}{spread_text(a)} {change:>9}{mark}"
                f" {value_text(b, scale, decimals, 10):>10}{spread_text(b)}  {label}")
        lines.append(line.rstrip())
    return lines


def comparison_table(results: list[dict], labels: list[str], fmt: str = "text",
                     commands: list[str] | None = None, title: str = "mmreplay comparison",
                     notes: list[str] | None = None) -> str:
    """The A/B table: the first result is the base, every other one is compared with it.

    Only finished runs are figures: a column whose runs were all stopped (Ctrl-C, the memory
    budget) is left out and named in a note; without a base and one other column, no table."""
    commands = commands if commands is not None else [r.get("command", "") for r in results]
    commands = list(dict.fromkeys(commands))
    notes = list(notes or [])
    kept = [i for i, r in enumerate(results) if finished_runs(r)]
    left_out = [labels[i] for i in range(len(results)) if i not in kept]
    if left_out:
        notes.append(f"Left out, no run finished: {', '.join(left_out)}")
    partial = [f"{labels[i]} {len(results[i]['runs']) - len(finished_runs(results[i]))}"
               for i in kept if len(finished_runs(results[i])) < len(results[i]["runs"])]
    if partial:
        notes.append("Partial runs left out of every figure: " + ", ".join(partial))
    if not kept or kept[0] != 0 or len(kept) < 2:
        lines = repro_header(results, labels, commands, title)
        for note in notes:
            lines += wrap_ascii("", note)
        lines += ["", "No table: the base and at least one other column need a finished run."]
        text = "\n".join(lines) + "\n"
        return text if fmt != "markdown" else "```\n" + text + "```\n"
    results = [results[i] for i in kept]
    labels = [labels[i] for i in kept]
    cells = [metric_cells(r) for r in results]
    if fmt == "markdown":
        return _markdown(results, labels, cells, commands, title, notes)
    lines = repro_header(results, labels, commands, title)
    for note in notes:
        lines += wrap_ascii("", note)
    for index in range(1, len(results)):
        lines.append("")
        lines += _table_block(cells[0], cells[index], labels[0], labels[index])
    lines.append("")
    lines += wrap_ascii("", figure_sources(results[0]["runs"][-1]) + ".")
    lines += wrap_ascii("", SIGNIFICANCE_RULE)
    lines += wrap_ascii("", "Values are means over runs; +-N% is the standard deviation as a "
                            "percentage of the mean (blank when every run gave the same value).")
    return escape_lines("\n".join(lines)) + "\n"


def _markdown(results, labels, cells, commands, title, notes) -> str:
    lines = [f"### {title}", ""]
    lines += ["```"] + repro_header(results, labels, commands, title)[1:] + ["```", ""]
    lines += [f"> {note}" for note in notes]
    head = "| metric | " + " | ".join(labels) + " |"
    lines += [head, "|---|" + "---:|" * len(labels)]
    for path, label, scale, decimals in METRICS:
        row = [label.strip()]
        if all(c.get(path) is None for c in cells):
            continue
        for index, c in enumerate(cells):
            cell = c.get(path)
            text = value_text(cell, scale, decimals, 14) + spread_text(cell).replace("+-", "±")
            if index and cell is not None and cells[0].get(path) is not None:
                base = cells[0][path]
                text += f" ({percent_change(base, cell)}{'*' if significant(base, cell) else ''})"
            row.append(text.strip())
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", figure_sources(results[0]["runs"][-1]) + ".", "", SIGNIFICANCE_RULE]
    return escape_lines("\n".join(lines)) + "\n"


def expand_results(documents: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """(source, result) pairs; a compare document contributes each of its results."""
    out = []
    for source, document in documents:
        if "mmreplay_compare" in document:
            for index, result in enumerate(document.get("results") or []):
                out.append((f"{source}[{index}]", result))
        else:
            out.append((source, document))
    return out


def config_differences(results: list[dict]) -> dict:
    """{config field: [value per result]} for the fields that are not the same everywhere."""
    keys = ("allocator", "tunables", "policy", "thp", "touch", "access", "files", "threads",
            "order", "copies", "collapse")
    differing = {}
    for key in keys:
        values = [str((r.get("config") or {}).get(key)) for r in results]
        if len(set(values)) > 1:
            differing[key] = values
    return differing


MAX_LABEL_CHARS = 24


def report_labels_and_notes(sources: list[str], results: list[dict]) -> tuple[list[str], list[str]]:
    """Column labels that say what differs, and the warnings a reader must see."""
    notes = []
    # The same events in two files (a v1 trace and its v2 rewrite, a trace read out of a mail)
    # are the same trace; results from before events_sha256 existed compare file hashes.
    key = "events_sha256" if all("events_sha256" in r["trace"] for r in results) else "sha256"
    shas = [r["trace"][key] for r in results]
    if len(set(shas)) > 1:
        notes.append("WARNING: the results come from different traces: "
                     + ", ".join(f"{s} {sha[:12]}" for s, sha in zip(sources, shas)))
    differing = config_differences(results)
    kernels = [f"{(r.get('host') or {}).get('kernel', '?')}@{(r.get('host') or {}).get('hostname', '?')}"
               for r in results]
    if differing:
        notes.append("WARNING: the configs differ: " + "; ".join(
            f"{key} {' vs '.join(values)}" for key, values in differing.items()))
    if differing and len(set(kernels)) > 1:
        notes.append("WARNING: both the config and the host/kernel differ, so the table cannot "
                     "tell which one caused a change")
    if differing:
        labels = [" ".join(values[i] for values in differing.values()) for i in range(len(results))]
    elif len(set(kernels)) > 1:
        labels = [(r.get("host") or {}).get("kernel", "?") for r in results]
    else:
        labels = [s.rsplit("/", 1)[-1] for s in sources]
    # Labels head columns and prefix lines: short and printable, whatever a result file holds.
    labels = [escape(label, MAX_LABEL_CHARS) for label in labels]
    if len(set(labels)) < len(labels):
        labels = [f"{label}#{i}" for i, label in enumerate(labels)]
    return labels, notes
