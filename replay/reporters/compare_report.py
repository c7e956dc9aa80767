"""The text compare prints: the A/B table of a compare document (``compare.compare_trace``) with
its notes (failed columns, how runs were interleaved, copies, an interrupt, inexact emulations)
and, with --copies, the scalability table."""

from __future__ import annotations

from replay.reporters.copies_report import copies_notes, scalability_lines, scalability_markdown
from replay.reporters.report import comparison_table
from replay.results.result import finished_runs


def compare_text(document: dict, fmt: str, command: str) -> str:
    """The table (``fmt``: text or markdown) of a document that has results; ``command``: the
    command line that made it."""
    results, labels = document["results"], document["labels"]
    title = f"mmreplay compare: {document['axis']} on {results[0]['trace']['name']}"
    notes = [f"FAILED {failed['value']}: {failed['reason']}" for failed in document["failed"]]
    if document["axis"] == "kernel":
        notes.append("Each kernel's runs ran one kernel after the other (a guest per image), "
                     "not interleaved.")
    notes += copies_notes(results, labels)
    if document["interrupted"]:
        counts = ", ".join(f"{value} {len(finished_runs(result))}"
                           for value, result in zip(labels, results))
        notes.append(f"INTERRUPTED ({document['interrupted']}): runs finished of "
                     f"{document['repeat']} per column: {counts or 'none'}")
    for value, result in zip(labels, results):
        emulation = result.get("policy_emulation") or {}
        if not emulation.get("emulated", True):
            notes.append(f"WARNING: {value} is not exact here: {emulation.get('why')}")
    text = comparison_table(results, labels, fmt, [command], title, notes)
    scaling = (scalability_markdown(results, labels) if fmt == "markdown"
               else scalability_lines(results, labels))
    if scaling:
        text += "\n" + "\n".join(scaling) + "\n"
    return text
