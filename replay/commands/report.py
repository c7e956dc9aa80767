"""mmreplay report: the A/B table from saved results (e.g. one per kernel)."""

from __future__ import annotations

import json

import click

from replay.commands.common import check_outputs, emit
from replay.commands.options import json_option, output_option


@click.command("report", short_help="The A/B table from saved results (replay/compare -o).")
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text",
              show_default=True, help="The table: plain ASCII <= 72 columns, ready for a mail "
                                      "reply, or markdown.")
@json_option("the labels, notes and results")
@output_option("Write the report to FILE instead of stdout")
def command(results, fmt, as_json, output):
    """Build the comparison table from RESULT.json files (`replay -o` or `compare -o`) or results
    corpora (`mmreplay results`: each of its results, in order).

    The first result is the base. It warns when the results come from different traces or
    different configurations, and each column names its host and kernel.

    \b
    Examples:
      mmreplay report unpatched.json patched.json
      mmreplay report a.json b.json --format markdown -o table.md
      mmreplay report results.arrow
    """
    from replay.reporters.copies_report import (copies_notes, scalability_lines,
                                                scalability_markdown)
    from replay.results.corpus import read_results
    from replay.reporters.report import comparison_table, report_labels_and_notes
    from traces import MmreplayError

    check_outputs(output)
    pairs = read_results(results)
    if len(pairs) < 2:
        raise MmreplayError("report needs at least two results to compare (a compare -o "
                            "file holds several)")
    sources = [source for source, _ in pairs]
    documents = [document for _, document in pairs]
    try:
        labels, notes = report_labels_and_notes(sources, documents)
        if as_json:
            text = json.dumps({"labels": labels, "notes": notes, "results": documents}, indent=1,
                              default=str) + "\n"
        else:
            commands = list(dict.fromkeys(str(d.get("command", "")) for d in documents))
            notes += copies_notes(documents, labels)
            text = comparison_table(documents, labels, fmt, commands, "mmreplay report", notes)
            scaling = (scalability_markdown(documents, labels) if fmt == "markdown"
                       else scalability_lines(documents, labels))
            if scaling:
                text += "\n" + "\n".join(scaling) + "\n"
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # Results come from strangers: a field of the wrong shape is bad input, not a bug.
        raise MmreplayError(f"a result file has a missing or malformed field "
                            f"({type(exc).__name__}: {exc})") from None
    emit(text, output)
