"""Import strace logs into a trace.

strace writes one line per event; ``strace_grammar`` lists the line forms and prefixes that are
handled (every one strace prints for these calls, in every output style).

Two tokenizers produce the same per-line records (a row of ``NFIELDS`` int64 values):

* the **reference parser** ``parse_line``: plain Python, one compiled regex per line form, the
  definition of what a line means;
* the **fast path** (``strace_fast``, numba) that handles the common complete forms over the raw
  bytes of a chunk and hands every other line to ``parse_line``. A property test checks that the
  two agree on every line the fast path accepts.

Both feed one vectorized assembly (``FileImport``) that pairs ``<unfinished ...>`` with
``<... resumed>`` lines per thread, places each call where the replay can safely run it, and
counts every line into exactly one category of the import report: nothing is silently dropped.

The parts: ``strace_grammar`` (vocabulary and reference parser), ``strace_fast`` (the fast path),
``strace_read`` (decompression, chunks, the tokenizing worker), ``strace_assemble`` (records to
rows to the trace table), ``strace_report`` (the import report). This module runs them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from .errors import MmreplayError
from .format import new_metadata
from .host import available_memory_bytes
from .signals import SignalNotes
from .strace_assemble import FF_SUFFIX, FileImport, order_rows, trace_table
from .strace_grammar import F_POS, I32_MAX, K_BLANK, K_UNPARSED, TS_EPOCH, TS_NAMES, TS_NONE
from .strace_read import CHUNK_BYTES, COMPRESSED_SUFFIXES, LogReader, tokenized_chunks
from .strace_report import import_report
from .units import fmt_bytes


class ImportResult(NamedTuple):
    table: pa.Table  # validated trace rows, no metadata yet
    report: dict


# At most this many mm calls by default (--max-events): a replay of more needs gigabytes.
DEFAULT_MAX_EVENTS = 10_000_000
# Memory an imported call takes until the trace is written: its row (~100 bytes) about three
# times over (the chunks' parts, their concatenation, the ordered table).
IMPORT_BYTES_PER_EVENT = 320


def _check_import_size(path: Path, state: "FileImport", rows: int, max_events: int) -> None:
    if rows > max_events:
        raise MmreplayError(f"{path}: more than {max_events} mm calls by line {state.lines}; "
                            "refusing to import them (raise --max-events if this machine can "
                            "take it)")
    available = available_memory_bytes()
    if available is not None and rows * IMPORT_BYTES_PER_EVENT > available // 2:
        raise MmreplayError(f"{path}: {rows} mm calls by line {state.lines} would need about "
                            f"{fmt_bytes(rows * IMPORT_BYTES_PER_EVENT)} to import, more than half "
                            f"of the {fmt_bytes(available)} available; refusing to import them")


def import_logs(paths: Sequence[str | Path], *, tid: int | None = None, fast: bool | str = "auto",
                chunk_bytes: int = CHUNK_BYTES, progress: Callable[[int], None] | None = None,
                names: Sequence[str] | None = None,
                interrupted: Callable[[], bool] | None = None,
                max_events: int = DEFAULT_MAX_EVENTS) -> ImportResult:
    """Parse strace logs (plain, .gz, .xz, .zst, .bz2) into trace rows and an import report.

    Several files are one recording split by ``strace -ff`` (or several processes): their rows
    are merged by time. ``tid`` names the thread of lines that carry no pid. ``fast``: True,
    False (reference parser only) or "auto" (fast path for logs over ``FAST_MIN_BYTES``).
    ``progress`` is called with the compressed bytes consumed so far (all files) after each
    chunk. ``names``: how
    the report calls each file (default: its path). When ``interrupted()`` turns true, reading
    stops at the next chunk and the calls imported so far are returned (report "interrupted").
    More than ``max_events`` calls, or more than half the memory available for the rows kept
    (checked after each bounded chunk), is refused: a few kilobytes of zstd can hold a log of
    tens of millions of lines.
    """
    _check_inputs(paths)
    if tid is not None and not 0 <= tid <= I32_MAX:
        raise MmreplayError(f"--tid {tid}: a thread id is between 0 and {I32_MAX}")
    files: list[FileImport] = []
    file_notes = []
    parsers: set[str] = set()
    stopped = False
    consumed_total = 0  # compressed bytes read, all files
    kept = 0  # rows of the files before this one
    for index, path in enumerate(map(Path, paths)):
        state = FileImport(names[index] if names else str(path))
        for records, consumed in tokenized_chunks(LogReader(path, chunk_bytes, interrupted), fast,
                                                   parsers):
            if records is not None:
                records[F_POS] = np.arange(state.lines + 1, state.lines + 1 + records.shape[1])
                state.feed(records)
                _check_import_size(path, state, kept + state.row_count, max_events)
            consumed_total += consumed
            if progress is not None:
                progress(consumed_total)
            if interrupted is not None and interrupted():
                stopped = True
                break
        file_notes.append(state.finish(tid, path))
        recognized = state.lines - int(state.counts[K_UNPARSED] + state.counts[K_BLANK])
        if state.lines and recognized == 0:
            first = state.first["unparsed"][0] if state.first["unparsed"] else 1
            raise MmreplayError(f"{path}: not an strace log (no line looks like strace output; "
                                f"first line that does not: {path}:{first})")
        files.append(state)
        kept += state.row_count
        if stopped:
            break

    kinds = {state.ts_kind for state in files if state.ts_kind is not None}
    if len(kinds) > 1:
        described = ", ".join(f"{state.name}: {TS_NAMES[state.ts_kind]}" for state in files
                              if state.ts_kind is not None)
        raise MmreplayError(f"the logs use different timestamp formats ({described}); "
                            "import them separately")
    ts_kind = kinds.pop() if kinds else TS_NONE
    rows = order_rows(files, ts_kind)
    table, clamped = trace_table(rows, ts_kind)
    report = import_report(files, file_notes, rows, ts_kind, clamped, parsers)
    # The epoch time (ns) that ts_ns 0 stands for: another recording of the same run (the
    # allocation level) is put on the same clock with it.
    report["time_origin_ns"] = (int(rows["ts"].min()) if ts_kind == TS_EPOCH and len(rows["pos"])
                                else None)
    report["interrupted"] = stopped
    return ImportResult(table, report)


def _check_inputs(paths: Sequence[str | Path]) -> None:
    """Every log exists and is a file, before any work (or any output) is done."""
    if not paths:
        raise MmreplayError("no strace log given")
    for path in map(Path, paths):
        if path.is_dir():
            raise MmreplayError(f"{path}: is a folder, not an strace log")
        if not path.exists():
            raise MmreplayError(f"{path}: no such file")


def import_metadata(report: dict, **fields) -> dict:
    """Trace metadata for an import; ``fields`` (command, host, ...) come from ``record``."""
    fields.setdefault("host", None)
    if fields["host"] is None:
        fields.setdefault("host_note", "imported from an strace log: the recording host's "
                                       "kernel, CPU and THP settings are unknown")
    return new_metadata("strace", timestamps=report["timestamps"], strace_files=report["files"],
                        **{"import": report}, **fields)


def default_output(log: str | Path) -> Path:
    """bert.log.xz -> bert.arrow, trace.4412 (strace -ff) -> trace.arrow, next to the log."""
    path = Path(log)
    name = path.name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    name = FF_SUFFIX.sub("", name)
    for suffix in (".log", ".strace", ".txt", ".out"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return path.with_name((name or "trace") + ".arrow")


def import_to_file(paths: Sequence[str | Path], output: str | Path, *, tid: int | None = None,
                   progress: Callable[[int], None] | None = None,
                   max_events: int = DEFAULT_MAX_EVENTS) -> dict:
    """Import strace logs and write the trace; return the import report.

    SIGINT/SIGTERM stop the import at the next chunk: the calls read so far are written, with
    ``interrupted: true`` and the signal in the metadata (report["interrupted"] names it).
    """
    from .files import check_writable
    from .format import write_trace

    _check_inputs(paths)
    check_writable(output)
    with SignalNotes() as notes:
        result = import_logs(paths, tid=tid, progress=progress,
                             interrupted=lambda: notes.received, max_events=max_events)
        report = result.report
        report["interrupted"] = notes.name if report["interrupted"] else None
        fields = {"interrupted": True, "signal": notes.name} if report["interrupted"] else {}
        write_trace(result.table, output, import_metadata(report, **fields))
    return report
