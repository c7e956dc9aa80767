"""The import report: every line of the logs counted into exactly one category, and its text."""

from __future__ import annotations

import signal as _signal

import numpy as np

from .schema import MM_OPS, OPS
from .strace_grammar import FIRST_LINES_KEPT, KIND_NAMES, N_KINDS, RES_ERROR, RES_OK, TS_NAMES

_SIGNAL_VALUES = {int(s) for s in _signal.Signals}


def import_report(files, file_notes, rows, ts_kind, clamped, parsers) -> dict:
    counts = sum((state.counts for state in files), np.zeros(N_KINDS, np.int64))
    line_kinds: dict[str, int] = {}
    for kind, name in enumerate(KIND_NAMES):
        line_kinds[name] = line_kinds.get(name, 0) + int(counts[kind])
    op = rows["op"]
    failed = rows["errno"] != 0
    unknown = sum((state.unknown_by_op for state in files), np.zeros(len(OPS), np.int64))

    def first(which):
        return [f"{state.name}:{line}" for state in files
                for line in state.first[which]][:FIRST_LINES_KEPT]

    exit_info = None
    if files:
        # The traced command's first process: the leader of the first file.
        state = files[0]
        leader = state.leader if state.leader is not None else state.first_pid
        found = state.exits.get(leader) if leader is not None else None
        if found is None:
            found = state.exits.get(-1)  # its exit line carried no pid
        if found is not None:
            result, value = found
            exit_info = {"pid": leader}
            if result == RES_OK:
                exit_info["exit_status"] = value
            elif result == RES_ERROR:
                exit_info["signal"] = (_signal.Signals(value).name if value in _SIGNAL_VALUES
                                       else f"signal {value}")
    tid_notes = [dict(note["tid_for_lines_without_pid"], file=state.name)
                 for state, note in zip(files, file_notes) if note["tid_for_lines_without_pid"]]
    return {
        "files": [state.name for state in files],
        "parser": "+".join(sorted(parsers)) or "none",
        "lines": int(sum(state.lines for state in files)),
        "line_kinds": line_kinds,
        "mm_calls": {name: int(n) for name, n in zip(MM_OPS, np.bincount(op, minlength=len(OPS)))},
        "mm_calls_total": int(len(op)),
        "failed_calls": {name: int(n) for name, n in
                         zip(OPS, np.bincount(op[failed], minlength=len(OPS))) if n},
        "ignored_calls": line_kinds["non_mm_call"],
        "signal_lines": line_kinds["signal"],
        "exit_lines": line_kinds["exit"],
        "unknown_results": {
            "count": int(unknown.sum()),
            "by_op": {name: int(unknown[code]) for code, name in enumerate(OPS) if unknown[code]},
            "first_lines": first("unknown"),
            "meaning": "result '?' (the process died or the call was restarted); not imported",
        },
        "unmatched": {
            "unfinished": int(sum(state.unmatched_unfinished for state in files)),
            "resumed": int(sum(state.unmatched_resumed for state in files)),
            "first_lines": first("unmatched"),
        },
        "unparsed": {
            "count": line_kinds["unparsed"],
            "mm": int(sum(state.unparsed_mm for state in files)),
            "first_lines": first("unparsed"),
        },
        "threads": int(len(np.unique(rows["tid"]))) if len(op) else 0,
        "timestamps": TS_NAMES[ts_kind],
        "durations": any(state.durations for state in files),
        "clamped_timestamps": int(clamped),
        "tid_for_lines_without_pid": tid_notes,
        "first_process": exit_info,
    }


def format_report(report: dict) -> str:
    """The import report as text (each figure says what it counts)."""
    ops = ", ".join(f"{op} {n}" for op, n in report["mm_calls"].items() if n) or "none"
    failed = ", ".join(f"{op} {n}" for op, n in report["failed_calls"].items())
    lines = [
        f"logs         {', '.join(report['files'])}",
        f"lines        {report['lines']} read",
        f"mm calls     {report['mm_calls_total']} imported ({ops})",
        f"failed       {sum(report['failed_calls'].values())} of them failed, kept with errno"
        + (f" ({failed})" if failed else ""),
        f"ignored      {report['ignored_calls']} non-mm calls, {report['signal_lines']} signal "
        f"lines, {report['exit_lines']} exit lines, "
        f"{report['line_kinds']['strace_message']} strace messages",
    ]
    unknown = report["unknown_results"]
    if unknown["count"]:
        by_op = ", ".join(f"{op} {n}" for op, n in unknown["by_op"].items())
        lines.append(f"unknown      {unknown['count']} calls returned '?' ({by_op}), not imported; "
                     f"lines {', '.join(unknown['first_lines'])}")
    unmatched = report["unmatched"]
    if unmatched["unfinished"] or unmatched["resumed"]:
        lines.append(f"unmatched    {unmatched['unfinished']} unfinished calls never resumed, "
                     f"{unmatched['resumed']} resumed lines without a start; lines "
                     f"{', '.join(unmatched['first_lines'])}")
    unparsed = report["unparsed"]
    lines.append(f"unparsed     {unparsed['count']} lines ({unparsed['mm']} mention an mm call)"
                 + (f"; first at {', '.join(unparsed['first_lines'][:5])}"
                    if unparsed["count"] else ""))
    lines.append(f"threads      {report['threads']}")
    lines.append(f"timestamps   {report['timestamps']}"
                 + (", durations from -T" if report["durations"] else ", no durations (no -T)")
                 + (f"; {report['clamped_timestamps']} moved forward to keep each thread's "
                    "clock monotonic" if report["clamped_timestamps"] else ""))
    for note in report["tid_for_lines_without_pid"]:
        lines.append(f"tid          lines without a pid in {note['file']} -> thread "
                     f"{note['tid']} ({note['source']})")
    return "\n".join(lines) + "\n"
