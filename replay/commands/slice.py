"""mmreplay slice: a shorter valid trace, by event range, time range or threads."""

from __future__ import annotations

import click

from replay.commands.common import check_outputs, emit, is_stdout
from replay.commands.options import trace_in_one_out


@click.command("slice")
@trace_in_one_out("Write the slice (a trace) to FILE")
@click.option("--events", metavar="A:B",
              help="Rows A to B-1, counted from 0 (either side may be left out; negative counts "
                   "from the end), as `info` numbers events.")
@click.option("--time", "time_range", metavar="A:B",
              help="The rows from the first at or after time A to the last before B, in "
                   "recorded order; times from the trace's start, with a unit (s, ms, us, ns; "
                   "seconds without one).")
@click.option("--threads", metavar="T,...",
              help="Only these threads' rows (thread ids as `info --json` and the trace give "
                   "them).")
def command(trace: str, pick: int | None, output: str | None, events: str | None,
            time_range: str | None, threads: str | None) -> None:
    """Cut TRACE down to a shorter valid trace.

    Memory mapped before the cut is re-created at the slice's start by synthetic rows (one
    mmap per live piece, with its protection, THP advice and file offset, and brk calls that
    put the break back), so no munmap, mremap, mprotect or madvise of the slice refers to
    memory it never mapped. With --threads, memory another thread mapped is re-created just
    before the kept row that first touches it. The slice's metadata (`mmreplay info`) says
    where it came from: the parent's sha256, the range, the rows kept and which rows are
    synthetic. Times are rebased to start at 0.

    \b
    Examples:
      mmreplay slice traces/data/bert-torch.arrow --events 5000:9000 -o middle.arrow
      mmreplay slice bert.arrow --time 10s:20s -o ten-seconds.arrow
      mmreplay slice repro.eml --threads 3,4 -o workers.arrow
      mmreplay slice bert.arrow --events :2000 -o - | mmreplay share - > repro.txt
    """
    from traces import MmreplayError, read_trace, trace_metadata, write_trace
    from traces.inputs import open_trace
    from traces.slice import slice_trace
    from traces.units import parse_duration_ns

    if sum(x is not None for x in (events, time_range, threads)) != 1:
        raise MmreplayError("give exactly one of --events A:B, --time A:B and --threads T,...")
    if not output:
        raise MmreplayError("give the output file with -o FILE ('-' for stdout)")
    check_outputs(output)
    kwargs = {}
    if events is not None:
        kwargs["events"] = _range(events, "--events", int)
    elif time_range is not None:
        kwargs["time_ns"] = _range(time_range, "--time", parse_duration_ns)
    else:
        try:
            kwargs["threads"] = [int(t) for t in threads.split(",") if t.strip()]
        except ValueError:
            raise MmreplayError(f"--threads {threads!r}: expected thread ids separated by "
                                "commas") from None
        if not kwargs["threads"]:
            raise MmreplayError("--threads: give at least one thread id")
    table = read_trace(trace, pick)
    parent = {"parent": trace.rstrip("/").rsplit("/", 1)[-1],
              "parent_sha256": open_trace(trace, pick).sha256()}
    sliced = slice_trace(table, parent=parent, **kwargs)
    write_trace(sliced, output)
    record = trace_metadata(sliced)["slice"]
    emit(f"wrote        {output if not is_stdout(output) else 'stdout'}: {sliced.num_rows} events, "
         f"{record['kept_events']} kept of {table.num_rows}, {len(record['synthetic_rows'])} "
         "synthetic (re-creating memory mapped before the cut)\n", None, output)


def _range(text: str, option: str, parse) -> tuple:
    from traces import MmreplayError

    if text.count(":") != 1:
        raise MmreplayError(f"{option} {text!r}: expected A:B (either side may be empty)")
    low, high = (part.strip() for part in text.split(":"))
    try:
        return (parse(low) if low else None, parse(high) if high else None)
    except (ValueError, MmreplayError) as exc:
        raise MmreplayError(f"{option} {text!r}: {exc}") from None
