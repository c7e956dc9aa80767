"""mmreplay info: what a trace contains."""

from __future__ import annotations

import json

import click

from replay.commands.common import check_outputs, emit
from replay.commands.options import json_option, output_option, pick_option


@click.command("info", short_help="Summarize a trace: ops, threads, peak live bytes, sizes.")
# A plain string: read_trace gives the one-line error for a folder or a missing file.
@click.argument("trace", type=str)
@pick_option
@json_option("the summary (stable keys)")
@output_option("Write the summary to FILE instead of stdout")
@click.option("--png", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also plot mmap sizes and live bytes ('-': the PNG on stdout).")
def command(trace: str, pick: int | None, as_json: bool, output: str | None,
            png: str | None) -> None:
    """Summarize TRACE: events per op, failures, threads, peak live bytes, mmap sizes.

    TRACE is a trace file, or a saved mail, an mbox or any text holding one (a `mmreplay
    share` block, quoted or not, or the trace attached).

    \b
    Examples:
      mmreplay info traces/data/bert-torch.arrow
      mmreplay info t.arrow --json | jq .size_histogram
      mmreplay info t.arrow --png sizes.png
    """
    from traces import MmreplayError, read_trace
    from traces.summary import format_summary, summarize

    check_outputs(output, png)
    if png:
        try:
            from replay.reporters.pictures import plot_trace
        except ImportError as exc:
            raise MmreplayError(f"--png {png}: plotting is not available ({exc})") from None
    table = read_trace(trace, pick)
    summary = summarize(table)
    if png:
        plot_trace(table, summary, png, title=trace)
    if as_json:
        emit(json.dumps(summary, indent=2, sort_keys=False) + "\n", output, png)
    else:
        emit(format_summary(summary, trace), output, png)
