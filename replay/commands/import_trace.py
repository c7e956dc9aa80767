"""mmreplay import: strace logs -> trace."""

from __future__ import annotations

import json
import os

import click

from replay.commands.common import Progress, emit, exit_if_interrupted
from replay.commands.options import json_option, output_option, progress_option


@click.command("import", short_help="Turn strace logs (or glibc mtrace output) into a trace.")
@click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=str))
@output_option("Trace to write (default: the first log's name with .arrow)")
@click.option("--tid", type=int, default=None,
              help="Thread id for lines that carry no pid (a log recorded without -f). "
                   "Default: the LOG.PID suffix of `strace -ff` files, else 0.")
@click.option("--max-events", type=click.IntRange(1, 200_000_000), default=10_000_000,
              show_default=True, help="Refuse a log with more mm calls than this (checked as it "
              "is read, before the memory is taken).")
@json_option("the import report")
@progress_option
def command(logs: tuple[str, ...], output: str | None, tid: int | None, max_events: int,
            as_json: bool, progress: bool | None) -> None:
    """Turn strace logs into a trace: every mmap/munmap/mremap/madvise/mprotect/brk call.

    Accepts `strace -f -ttt -T` logs and their variants: [pid N] prefixes, -tt/-t wall-clock
    times, no timestamps, no -T, no -f, `-ff` files given together (LOG.1234 LOG.1235 ...),
    -X verbose/raw, -y, -i, -n, and .gz/.xz/.zst/.bz2 compression. Lines it cannot read are
    counted and reported with their line numbers, never dropped silently. Ctrl-C or SIGTERM
    stops a long import and writes the calls read so far, marked interrupted.

    \b
    Record a log that imports fully:
      strace -f -ttt -T -e trace=mmap,munmap,mremap,madvise,mprotect,brk -o app.log CMD
    \b
    Examples:
      mmreplay import app.log -o app.arrow
      mmreplay import app.log.xz --json | jq .unparsed
      mmreplay import trace.4412 trace.4413 trace.4420 -o app.arrow
    
    glibc's mtrace output (a program calling mtrace(3), run with
    LD_PRELOAD=libc_malloc_debug.so.0 MALLOC_TRACE=FILE) is recognized by its "= Start" line
    and imported as allocation calls (no threads, no times; `record --malloc` keeps both):
      mmreplay import mtrace.txt -o app-malloc.arrow
    """
    from traces.mtrace import format_mtrace_report, import_mtrace_to_file, is_mtrace
    from traces.strace import default_output, import_to_file
    from traces.strace_report import format_report

    out = output or str(default_output(logs[0]))
    if len(logs) == 1 and is_mtrace(logs[0]):
        report = import_mtrace_to_file(logs[0], out, max_events)
        if as_json:
            emit(json.dumps(report, indent=2) + "\n", None, out)
        else:
            emit(format_mtrace_report(report) + f"wrote        {out} ({report['calls']} events)\n",
                 None, out)
        return
    total = sum(os.path.getsize(log) for log in logs if os.path.isfile(log))
    with Progress(progress, "importing") as bar:
        # pipes have no size to show progress against
        report = import_to_file(logs, out, tid=tid,
                                progress=(lambda done: bar.update(done, total))
                                if bar and total else None, max_events=max_events)
    if as_json:
        emit(json.dumps(report, indent=2) + "\n", None, out)
    else:
        emit(format_report(report) + f"wrote        {out} ({report['mm_calls_total']} events)\n",
             None, out)
    if report["interrupted"]:
        click.echo(f"interrupted by {report['interrupted']}: the trace holds the calls of the "
                   f"first {report['lines']} lines", err=True)
        exit_if_interrupted(report["interrupted"])
