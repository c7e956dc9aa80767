"""mmreplay compare: one trace, several configurations, interleaved runs, one A/B table."""

from __future__ import annotations

import click

from .common import Progress, check_outputs, emit, exit_if_interrupted, is_stdout
from .options import SIZE, json_option, output_option, pick_option, progress_option


@click.command("compare")
@click.argument("trace", required=False, type=click.Path(dir_okay=False))
@pick_option
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
@output_option("Write every result (each configuration's runs) as JSON to FILE")
@json_option("every result")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text",
              show_default=True, help="The table: plain ASCII <= 72 columns, ready for a mail "
                                      "reply, or markdown.")
@click.option("--perf-faults", is_flag=True,
              help="Also count page faults with a perf_event_open software counter (~3% slower "
                   "faults).")
@progress_option
def command(trace, pick, policy, thp, touch, access, files, threads, repeat, warmup, max_live, output,
            as_json, fmt, perf_faults, progress):
    """Replay TRACE under several configurations and print one A/B table.

    TRACE is a trace file, or a saved mail, an mbox or any text holding one (a `mmreplay
    share` block, quoted or not, or the trace attached).

    Exactly one option takes several comma-separated values; the first value is the base.
    The table follows the kernel test robot's format: mean +- %stddev, %change, and a * where
    the 95% confidence intervals do not overlap.

    \b
    Examples:
      mmreplay compare --policies align-ge-pmd,align-pmd-multiple
      mmreplay compare t.arrow --policies kernel,no-align,align-ge-pmd --repeat 10
      mmreplay compare t.arrow --thp always,never --touch full --format markdown
      mmreplay compare t.arrow --policies kernel,no-align -o ab.json
    """
    from replay.compare import compare_trace
    from replay.report import comparison_table
    from replay.result import command_line, result_json, write_result

    check_outputs(output)
    values = {"policy": policy, "thp": thp, "touch": touch, "access": access, "files": files,
              "threads": threads}
    with Progress(progress, "replaying") as bar:
        document = compare_trace(trace, values, repeat, max_live,
                                 progress=bar.update if bar else None, warmup=warmup,
                                 perf_faults=perf_faults, pick=pick)
    if output:
        write_result(document, output)
    results = document["results"]
    if as_json:
        if not is_stdout(output):
            emit(result_json(document))
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
        emit(comparison_table(results, labels, fmt, [command_line()], title, notes), None, output)
    exit_if_interrupted(document["interrupted"])
