"""Import glibc's mtrace output: a program that calls mtrace(3), run with
``LD_PRELOAD=libc_malloc_debug.so.0 MALLOC_TRACE=FILE`` (glibc >= 2.34; older glibc needs no
preload), writes one line per call of the malloc family:

    = Start
    @ ./prog:[0x1220] + 0x561c02182510 0x64        malloc, calloc, memalign, ... (pointer, size)
    @ ./prog:[0x12fb] - 0x561c02182580             free (and realloc(p, 0))
    @ ./prog:[0x1235] < 0x561c021824a0             realloc: the old pointer,
    @ ./prog:[0x1235] > 0x561c02182580 0x1388      then the new one and the size
    @ ./prog:[0x1240] ! 0x561c021824a0 0x1388      a realloc that failed
    = End

mtrace writes no thread, no time and no call name: every allocation becomes ``malloc``
(calloc and the aligned family cannot be told apart), rows are one microsecond apart in file
order on thread 0, and ``+ (nil)`` is a failed allocation (ENOMEM). The caller location is not
kept. What the recorder of ``record --malloc`` keeps and mtrace does not is said in the metadata.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import MmreplayError
from .format import build_table, new_metadata, write_trace
from .schema import OP_CODE

ENOMEM = 12
MTRACE_HEAD = b"= Start"
# "@ CALLER " prefix (optional), the kind, a pointer or (nil), an optional hex size
LINE = re.compile(rb"^(?:@ \S.*? )?([-+<>!]) (0x[0-9a-fA-F]+|\(nil\))(?: (0x[0-9a-fA-F]+))?\s*$")
SPACING_NS = 1000
NOTE = ("imported from glibc mtrace output: no threads (all on tid 0), no times (rows 1 us "
        "apart in file order), every allocation as malloc (calloc, memalign, posix_memalign, "
        "aligned_alloc, valloc, pvalloc are not told apart), free(NULL) not logged")


def is_mtrace(path: str | Path) -> bool:
    """Whether the file starts as mtrace output does (plain text only). Only a regular file is
    looked at: reading a FIFO's first bytes would take them from the strace import."""
    try:
        if not Path(path).is_file():
            return False
        with open(path, "rb") as handle:
            return handle.read(len(MTRACE_HEAD)) == MTRACE_HEAD
    except OSError:
        return False


def _pointer(text: bytes) -> int:
    return 0 if text == b"(nil)" else int(text, 16)


def parse_mtrace(path: str | Path, max_events: int) -> tuple[pa.Table, dict]:
    """The trace rows of an mtrace file and an import report."""
    from .strace_read import LogReader

    ops, addr, length, new_addr, errno = [], [], [], [], []
    unparsed, first_unparsed, lines, pending_old = 0, [], 0, None
    for chunk, _ in LogReader(Path(path), 1 << 20):
        for line in chunk.split(b"\n")[:-1]:
            lines += 1
            if not line.strip() or line.startswith(b"= "):
                continue
            match = LINE.match(line)
            if match is None:
                unparsed += 1
                if len(first_unparsed) < 5:
                    first_unparsed.append(lines)
                continue
            kind, pointer, size = match.group(1), _pointer(match.group(2)), match.group(3)
            size = int(size, 16) if size else 0
            if kind == b"<":
                pending_old = pointer
                continue
            if kind == b">":
                ops.append("realloc")
                addr.append(pending_old if pending_old is not None else 0)
                new_addr.append(pointer)
                length.append(size)
                errno.append(0)
            elif kind == b"!":
                ops.append("realloc")
                addr.append(pointer)
                new_addr.append(0)
                length.append(size)
                errno.append(ENOMEM)
            elif kind == b"+":
                ops.append("malloc")
                addr.append(pointer)
                new_addr.append(None)
                length.append(size)
                errno.append(ENOMEM if pointer == 0 and size else 0)
            else:  # "-"
                ops.append("free")
                addr.append(pointer)
                new_addr.append(None)
                length.append(0)
                errno.append(0)
            pending_old = None
            if len(ops) > max_events:
                raise MmreplayError(f"{path}: more than {max_events} calls (--max-events)")
    n = len(ops)
    table = build_table({
        "ts_ns": np.arange(n, dtype=np.int64) * SPACING_NS, "tid": np.zeros(n, np.int32),
        "op": np.array([OP_CODE[op] for op in ops], np.int8), "addr": addr, "length": length,
        "new_addr": pa.array(new_addr, pa.uint64()), "errno": errno})
    counts = {op: ops.count(op) for op in ("malloc", "free", "realloc")}
    report = {"format": "glibc mtrace", "files": [str(path)], "lines": lines, "calls": n,
              "allocation_calls": counts, "failed": int(sum(1 for e in errno if e)),
              "unparsed": {"count": unparsed, "first_lines": first_unparsed}}
    return table, report


def import_mtrace_to_file(path: str | Path, output: str | Path, max_events: int) -> dict:
    from .files import check_writable

    check_writable(output)
    table, report = parse_mtrace(path, max_events)
    write_trace(table, output, new_metadata("mtrace", note=NOTE, **{"import": report}))
    return report


def format_mtrace_report(report: dict) -> str:
    ops = ", ".join(f"{op} {n}" for op, n in report["allocation_calls"].items() if n) or "none"
    lines = [f"logs         {', '.join(report['files'])} (glibc mtrace)",
             f"lines        {report['lines']} read",
             f"calls        {report['calls']} imported ({ops}); {report['failed']} failed",
             f"unparsed     {report['unparsed']['count']} lines"
             + (f" (first at line {report['unparsed']['first_lines'][0]})"
                if report["unparsed"]["count"] else ""),
             "note         " + NOTE]
    return "\n".join(lines) + "\n"
