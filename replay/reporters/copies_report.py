"""Text for results of ``--copies``: the per-copy figures, the notes a reader must see, and the
scalability table (will-it-scale's per-task operations and scalability, with compare's
significance marks). Reporters only read results."""

from __future__ import annotations

from replay.results.cells import Cell, fmt_number, significant, spread_text, value_text, wrap_ascii

MIB = 1 << 20

# (dotted path in a copy's run, column head, scale, decimals, width): the per-copy table
PER_COPY = (
    ("events_per_s", "events/s", 1, 0, 11),
    ("minflt", "minor faults", 1, 0, 14),
    ("peak_anon_huge_bytes", "peak AnonHuge MiB", MIB, 1, 19),
    ("ops.mmap.p50_ns", "mmap p50 ns", 1, 0, 13),
)


def copies_section(result: dict) -> dict | None:
    """The ``copies`` section of a --copies result; None otherwise (a results corpus keeps the
    stages as JSON text: its rows are the aggregate runs, read as any result's)."""
    section = result.get("copies")
    if isinstance(section, dict) and isinstance(section.get("stages"), list) and section["stages"]:
        return section
    return None


def _plural(n: int) -> str:
    return f"{n} cop{'y' if n == 1 else 'ies'}"


def failure_lines(section: dict) -> list[str]:
    lines = []
    for failed in section.get("failed") or []:
        lines += wrap_ascii("FAILED  ", f"copy {failed.get('copy')} (pid {failed.get('pid')}): "
                            f"{failed.get('reason')} ({failed.get('when')}); its earlier runs "
                            "are kept, later sums leave it out")
    return lines


def _median(runs: list[dict], path: str):
    from replay.results.result import summarize_runs

    stats = summarize_runs(runs).get(path)
    return stats["median"] if stats else None


def copies_lines(result: dict) -> list[str]:
    """What ``replay`` prints after the summary of a ``--copies`` result."""
    section = copies_section(result)
    if section is None:
        return []
    largest = section["stages"][-1]
    n = largest["copies"]
    lines = wrap_ascii("copies  ", f"{_plural(n)} at once, separate processes started together "
                       "at every run; the figures above are their sums (engine time: the "
                       "slowest copy), the per-copy figures below each process's own (median "
                       "over runs)")
    head = f"{'copy':>4} {'pid':>8}" + "".join(f"{label:>{width}}"
                                               for _, label, _, _, width in PER_COPY)
    lines.append(head)
    for entry in largest["per_copy"]:
        line = f"{entry['copy']:>4} {entry['pid']:>8}"
        for path, _, scale, decimals, width in PER_COPY:
            line += f"{fmt_number(_median(entry['runs'], path), scale, decimals):>{width}}"
        lines.append(line)
    lines += wrap_ascii("        ", "The thp_* and other /proc/vmstat figures are system-wide "
                        "(every process on the machine): one delta per run, taken by the "
                        "parent around all copies.")
    lines += failure_lines(section)
    if len(section["stages"]) > 1:
        lines.append("")
        lines += scalability_lines([result], [""], with_total=True)
    return lines


def copies_notes(results: list[dict], labels: list[str]) -> list[str]:
    """Notes above compare's A/B table when its results come from ``--copies``."""
    sections = [copies_section(r) for r in results]
    if not any(sections):
        return []
    counts = sorted({stage["copies"] for s in sections if s for stage in s["stages"]})
    n = counts[-1]
    ran = " and ".join(str(c) for c in counts)
    notes = [f"Each configuration ran as {ran} cop{'y' if ran == '1' else 'ies'} at once "
             "(separate processes started together at every run)"
             + (f"; the table is the {n}-copy runs" if len(counts) > 1 else "")
             + ": figures are sums over the copies (engine time: the slowest copy); "
             "/proc/vmstat figures are system-wide."]
    seen = set()
    for section in sections:
        for failed in (section or {}).get("failed") or []:
            key = (failed.get("copy"), failed.get("pid"))
            if key not in seen:
                seen.add(key)
                notes += failure_lines({"failed": [failed]})
    return notes


def _stage_cells(section: dict) -> list[tuple[int, Cell, Cell, bool]]:
    """(copies, events/s per copy, events/s summed, some run lacked a copy) per stage."""
    out = []
    for stage in section["stages"]:
        per_copy, total, short = [], [], False
        for run in stage["aggregate"]:
            finished = run.get("copies_finished") or 0
            if run.get("events_per_s") is None or not finished:
                continue
            per_copy.append(run["events_per_s"] / finished)
            total.append(run["events_per_s"])
            short = short or finished < stage["copies"]
        out.append((stage["copies"], Cell(per_copy), Cell(total), short))
    return out


def _ratio(base: Cell, cell: Cell) -> str:
    if base.mean in (None, 0) or cell.mean is None:
        return "n/a"
    return f"{cell.mean / base.mean:.2f}"


def scalability_lines(results: list[dict], labels: list[str], with_total: bool = False) -> list[str]:
    """will-it-scale's table: per copy count, events/s per copy (mean over runs +- %stddev) and
    its ratio to the smallest count, marked * where the 95% confidence intervals do not overlap;
    one column group per result, at most two per block (72 columns)."""
    columns = [(label, _stage_cells(copies_section(r))) for label, r in zip(labels, results)
               if copies_section(r) and len(copies_section(r)["stages"]) > 1]
    if not columns:
        return []
    base_count = columns[0][1][0][0]
    runs = sorted({cells[0][1].n for _, cells in columns})
    lines = wrap_ascii("", f"Scalability (will-it-scale style): events/s per copy, mean of "
                       f"{'/'.join(map(str, runs))} runs +- %stddev; ratio to {_plural(base_count)}"
                       f"{' (* = significant, as in compare)' if max(runs) > 1 else ''}"
                       + ("; total = summed over the copies" if with_total else ""))
    per_block = 1 if with_total else 2
    for start in range(0, len(columns), per_block):
        block = columns[start:start + per_block]
        lines.append("")
        lines.append((f"{'':6}" + "".join(f"   {label[:23]:>23} " for label, _ in block)
                      + (f" {'total':>12}" if with_total else "")).rstrip())
        lines.append((f"{'copies':>6}" + "".join(f"   {'per copy':>16} {'ratio':>6} "
                                                 for _ in block)
                      + (f" {'events/s':>12}" if with_total else "")).rstrip())
        for row in range(len(block[0][1])):
            count = block[0][1][row][0]
            line = f"{count:>6}"
            for _, cells in block:
                _, cell, total, short = cells[row]
                base = cells[0][1]
                mark = "*" if row and significant(base, cell) else " "
                value = value_text(cell, 1, 0, 10) + spread_text(cell)
                line += f"   {value:>16} {_ratio(base, cell):>6}{mark}"
                if short:
                    line += "!"
            if with_total:
                line += f" {value_text(block[0][1][row][2], 1, 0, 12):>12}"
            lines.append(line.rstrip())
    if any(short for _, cells in columns for *_, short in cells):
        lines += wrap_ascii("", "! = a copy failed: some runs of this count summed fewer copies")
    return lines


def scalability_markdown(results: list[dict], labels: list[str]) -> list[str]:
    columns = [(label, _stage_cells(copies_section(r))) for label, r in zip(labels, results)
               if copies_section(r) and len(copies_section(r)["stages"]) > 1]
    if not columns:
        return []
    base_count = columns[0][1][0][0]
    lines = ["", f"Scalability: events/s per copy (mean ± %stddev), ratio to "
                 f"{_plural(base_count)}, * = significant", "",
             "| copies | " + " | ".join(f"{label} per copy | ratio" for label, _ in columns) + " |",
             "|---:|" + "---:|---:|" * len(columns)]
    for row in range(len(columns[0][1])):
        cells = [f"{columns[0][1][row][0]}"]
        for _, column in columns:
            _, cell, _, _ = column[row]
            base = column[0][1]
            mark = "*" if row and significant(base, cell) else ""
            cells += [(value_text(cell, 1, 0, 14) + spread_text(cell).replace("+-", "±")).strip(),
                      f"{_ratio(base, cell)}{mark}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
