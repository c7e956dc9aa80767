"""mmreplay info: what a trace contains."""

from __future__ import annotations

import json

import click


@click.command("info")
# A plain string: read_trace gives the one-line error for a folder or a missing file.
@click.argument("trace", type=str)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (stable keys).")
@click.option("--png", type=click.Path(dir_okay=False), help="Also plot mmap sizes and live bytes.")
def command(trace: str, as_json: bool, png: str | None) -> None:
    """Summarize TRACE: events per op, failures, threads, peak live bytes, mmap sizes.

    \b
    Examples:
      mmreplay info traces/data/bert-torch.arrow
      mmreplay info t.arrow --json | jq .size_histogram
    """
    from traces import MmreplayError, read_trace
    from traces.files import check_writable
    from traces.summary import format_summary, summarize

    if png:
        check_writable(png)
        try:
            from replay.pictures import plot_trace
        except ImportError as exc:
            raise MmreplayError(f"--png {png}: plotting is not available ({exc})") from None
    table = read_trace(trace)
    summary = summarize(table)
    if png:
        plot_trace(table, summary, png, title=trace)
    if as_json:
        click.echo(json.dumps(summary, indent=2, sort_keys=False))
    else:
        click.echo(format_summary(summary, trace), nl=False)
