"""A trace as a share block (``mmreplay share``): anonymised, described, encoded.

The block format itself, and reading blocks back out of mails, is ``traces/share.py``; this
module sits above the trace reader and summary, which the mail reader must not need.
"""

from __future__ import annotations

import hashlib

from .anonymize import anonymise
from .format import trace_file_bytes, trace_metadata
from .host import describe_thp
from .share import encode_block
from .summary import summarize
from .text import escape
from .units import fmt_bytes


def share_block(table, name: str, keep: set[str] = frozenset(),
                shared_from: str | None = None) -> tuple[str, dict]:
    """The block for a trace table (anonymised unless ``keep`` says otherwise) and what it holds:
    {"characters", "lines", "trace_bytes", "sha256", "anonymised"}."""
    def _printable(value) -> str:  # metadata comes from strangers: no control characters
        return escape(value, 400)

    table, removed = anonymise(table, set(keep))
    meta = trace_metadata(table)
    meta["shared"] = {"anonymised": removed, **({"from_sha256": shared_from} if shared_from else {})}
    summary = summarize(table)
    trace_file = trace_file_bytes(table, meta, compression=None)
    host = meta.get("host") if isinstance(meta.get("host"), dict) else {}
    what = meta.get("source", "unknown")
    command = meta.get("command")
    if isinstance(command, list):
        command = " ".join(str(part) for part in command)
    if command:
        what = f"{what} of {command}"
    elif meta.get("regenerate"):
        what = f"{what}: {meta['regenerate']}"
    ops = ", ".join(f"{op} {count}" for op, count in summary["ops"].items() if count)
    peak = summary["peak_live_event"]
    fields = [
        ("Trace", f"{_printable(name)}: {_printable(what)}"),
        ("Events", f"{summary['events']} ({ops or 'none'})"),
        ("Threads", str(summary["threads"])),
        ("Peak-Live", f"{fmt_bytes(summary['peak_live_bytes'])} anonymous"
         + (f", first at event {peak}" if peak is not None else "")),
    ]
    if host:
        fields.append(("Kernel", _printable(
            f"Linux {host.get('kernel', '?')} {host.get('machine', '')}".strip())))
        fields.append(("THP", _printable(describe_thp(host))))
    fields.append(("Recorded", _printable(f"{meta.get('created', '?')}, mmreplay "
                                          f"{meta.get('tool_version', '?')}")))
    fields.append(("Anonymised", (", ".join(removed) if removed else "nothing")
                   + " (mmreplay share --keep keeps them)"))
    fields.append(("Replay", "save this mail (or the thread, as b4 mbox saves it)\n"
                             "as repro.eml, then run:\n  mmreplay replay repro.eml"))
    text = encode_block(trace_file, fields)
    return text, {"characters": len(text), "lines": text.count("\n"),
                  "trace_bytes": len(trace_file), "sha256": hashlib.sha256(trace_file).hexdigest(),
                  "anonymised": removed}

