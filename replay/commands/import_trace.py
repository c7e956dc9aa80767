"""mmreplay import: strace logs -> trace."""

from __future__ import annotations

import json
import os
import sys

import click


@click.command("import", short_help="Turn strace logs into a trace.")
@click.argument("logs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Trace to write (default: the first log's name with .arrow).")
@click.option("--tid", type=int, default=None,
              help="Thread id for lines that carry no pid (a log recorded without -f). "
                   "Default: the LOG.PID suffix of `strace -ff` files, else 0.")
@click.option("--json", "as_json", is_flag=True, help="Print the import report as JSON.")
def command(logs: tuple[str, ...], output: str | None, tid: int | None, as_json: bool) -> None:
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
    """
    from traces.strace import default_output, format_report, import_to_file

    out = output or str(default_output(logs[0]))
    total = sum(os.path.getsize(log) for log in logs if os.path.isfile(log))
    if sys.stderr.isatty() and total:  # pipes have no size to show progress against
        with click.progressbar(length=total, label="importing", file=sys.stderr) as bar:
            report = import_to_file(logs, out, tid=tid, progress=bar.update)
    else:
        report = import_to_file(logs, out, tid=tid)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(format_report(report) + f"wrote        {out} ({report['mm_calls_total']} "
                   "events)", nl=True)
    if report["interrupted"]:
        import signal

        click.echo(f"interrupted by {report['interrupted']}: the trace holds the calls of the "
                   f"first {report['lines']} lines", err=True)
        click.get_current_context().exit(128 + int(signal.Signals[report["interrupted"]]))
