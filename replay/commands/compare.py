"""mmreplay compare: one trace, several configurations, interleaved runs, one A/B table."""

from __future__ import annotations

import json
import sys

import click

from .options import SIZE, check_output


@click.command("compare")
@click.argument("trace", required=False, type=click.Path(dir_okay=False))
@click.option("--policies", "policy", default="kernel,align-ge-pmd", show_default=True,
              help="Comma-separated placement policies: kernel, no-align, align-ge-pmd, "
                   "align-pmd-multiple.")
@click.option("--thp", default="as-recorded", show_default=True,
              help="THP mode or comma list: as-recorded, always, never.")
@click.option("--touch", default="pages", show_default=True,
              help="Touch model or comma list: none, first, pages, full.")
@click.option("--access", default="none", show_default=True,
              help="Access model or comma list: none, stream:N, random:K, lockstep:N.")
@click.option("--files", default="anon", show_default=True, help="anon or skip (or both).")
@click.option("--threads", default="1", show_default=True,
              help="1, recorded or N (or a comma list).")
@click.option("--repeat", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="Runs per configuration (interleaved A B A B ...).")
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(0, 100),
              help="Uncounted rounds before the measured ones.")
@click.option("--max-live", type=SIZE, default=None, help="Memory budget (default: half of "
              "MemAvailable).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write every result (each configuration's runs) to this JSON file.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text",
              show_default=True, help="text is plain ASCII <= 72 columns, ready for a mail reply.")
@click.option("--perf-faults", is_flag=True,
              help="Also count page faults with a perf_event_open software counter (~3% slower "
                   "faults).")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr.")
def command(trace, policy, thp, touch, access, files, threads, repeat, warmup, max_live, json_out,
            fmt, perf_faults, progress):
    """Replay TRACE under several configurations and print one A/B table.

    Exactly one option takes several comma-separated values; the first value is the base.
    The table follows the kernel test robot's format: mean +- %stddev, %change, and a * where
    the 95% confidence intervals do not overlap.

    \b
    Examples:
      mmreplay compare --policies align-ge-pmd,align-pmd-multiple
      mmreplay compare t.arrow --policies kernel,no-align,align-ge-pmd --repeat 10
      mmreplay compare t.arrow --thp always,never --touch full --format markdown
    """
    from replay.compare import compare_trace
    from replay.report import comparison_table
    from replay.result import command_line, write_result

    check_output(json_out)
    values = {"policy": policy, "thp": thp, "touch": touch, "access": access, "files": files,
              "threads": threads}
    bar = None
    if progress or (progress is None and sys.stderr.isatty()):
        bar = click.progressbar(length=1, label="replaying", file=sys.stderr, show_pos=True)

    def on_progress(done, total):
        bar.length = total
        bar.update(done - bar.pos)

    try:
        document = compare_trace(trace, values, repeat, max_live,
                                 progress=on_progress if bar else None, warmup=warmup,
                                 perf_faults=perf_faults)
    finally:
        if bar is not None:
            bar.render_finish()
    if json_out:
        write_result(document, json_out)
    results = document["results"]
    if fmt == "json":
        click.echo(json.dumps(document, indent=1, default=str))
    else:
        labels = document["values"][: len(results)]
        title = f"mmreplay compare: {document['axis']} on {results[0]['trace']['name']}"
        notes = []
        if document["interrupted"]:
            notes.append(f"INTERRUPTED ({document['interrupted']}): partial runs")
        for value, result in zip(labels, results):
            emulation = result.get("policy_emulation") or {}
            if not emulation.get("emulated", True):
                notes.append(f"WARNING: {value} is not exact here: {emulation.get('why')}")
        click.echo(comparison_table(results, labels, fmt, [command_line()], title, notes), nl=False)
    if document["interrupted"]:
        sys.exit({"SIGINT": 130, "SIGTERM": 143}.get(document["interrupted"], 1))
