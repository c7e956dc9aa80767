"""mmreplay results: gather result files from many runs and machines into one Arrow table."""

from __future__ import annotations

import json

import click

from replay.commands.common import Progress, check_outputs, emit, interrupt_exit_code, invoked_argv
from replay.commands.options import json_option, output_option, progress_option


@click.command("results", short_help="Gather result files into one Arrow table, a row per run.")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@output_option("Write the corpus (an Arrow IPC file) to FILE")
@click.option("--glob", "pattern", default="*.json", show_default=True,
              help="Which files to read inside folders (files named on the command line are "
                   "always read).")
@json_option("the summary (counts, skipped files, columns)")
@progress_option
def command(inputs, output, pattern, as_json, progress):
    """Gather result files (`replay -o`, `compare -o`, other corpora) into one Arrow table, one
    row per run: the file it came from, host, kernel, THP settings, trace name and sha256,
    config, the exact command, and every figure of the run as a column of its own
    (run.events_per_s, run.minflt, run.ops.mmap.p50_ns, ...). Folders are searched at any depth.
    `mmreplay report` reads the corpus as it reads the JSON files; pyarrow, DuckDB or pandas
    query it (docs/results-corpus.md).

    A file that is not a result is reported on one line on stderr and skipped; the exit status
    is 2 only when no result could be read. The corpus is written to a temporary file and
    renamed into place.

    \b
    Examples:
      mmreplay results runs/ -o results.arrow
      mmreplay results /lkp/result/mmreplay --glob result.json -o lkp.arrow
      mmreplay results a.arrow b.arrow -o both.arrow
      mmreplay report results.arrow
    """
    import sys

    from replay.results.corpus import gather, write_corpus
    from replay.results.result import command_line
    from traces import MmreplayError

    if not output:
        raise MmreplayError("give the corpus file with -o FILE ('-' for stdout)")
    check_outputs(output)
    try:
        with Progress(progress, "reading results") as bar:
            gathered = gather(inputs, pattern, progress=bar.update if bar else None)
    except KeyboardInterrupt:
        click.echo("Error: interrupted; no corpus written", err=True)
        sys.exit(interrupt_exit_code("SIGINT"))
    for reason in gathered.skipped:
        click.echo(f"skipped {reason}", err=True)
    write_corpus(gathered, output, command_line(invoked_argv()))
    summary = {"output": output, "results": gathered.results, "runs": gathered.table.num_rows,
               "files_read": gathered.files, "files_skipped": len(gathered.skipped),
               "columns": gathered.table.num_columns}
    if as_json:
        text = json.dumps({**summary, "skipped": gathered.skipped}, indent=1) + "\n"
    else:
        text = (f"results  {gathered.results} results, {gathered.table.num_rows} runs from "
                f"{gathered.files} files -> {output} ({gathered.table.num_columns} columns)\n")
        if gathered.skipped:
            text += f"skipped  {len(gathered.skipped)} files that are not results (listed above)\n"
    emit(text, None, output)
