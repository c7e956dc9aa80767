"""mmreplay compare: one trace, several configurations, interleaved runs, one A/B table."""

from __future__ import annotations

import click

from traces.errors import MmreplayError

from replay.commands.common import (Progress, check_outputs, exit_if_copies_failed,
                                    exit_if_interrupted, invoked_argv, save, show, status_line)
from replay.commands.options import (copies_option, json_option, output_option, perf_faults_option,
                                     pick_option, progress_option, replay_help_sections,
                                     replay_options, threads_option, vm_options, vm_settings)


HELP = """Replay TRACE under several configurations and print one A/B table.

TRACE is a trace file, or a saved mail, an mbox or any text holding one (a `mmreplay share`
block, quoted or not, or the trace attached).

Exactly one option takes several comma-separated values; the first value is the base. The
table follows the kernel test robot's format: mean +- %stddev, %change, and a * where the 95%
confidence intervals do not overlap. Only runs that finished are figures.

""" + replay_help_sections() + """
\b
Examples:
  mmreplay compare --policies align-ge-pmd,align-pmd-multiple
  mmreplay compare t.arrow --policies kernel,no-align,align-ge-pmd --repeat 10
  mmreplay compare t.arrow --thp always,never --touch full --format markdown
  mmreplay compare t.arrow --policies kernel,no-align -o ab.json
  mmreplay compare t.arrow --kernels host,/boot/vmlinuz-6.1.0-50-amd64 --repeat 2
  mmreplay compare m.arrow --copies 1,2 --policies no-align,align-ge-pmd --thp always
"""


@click.command("compare", help=HELP,
               short_help="Replay a trace under several configurations: an A/B table.")
@click.argument("trace", required=False, type=click.Path(dir_okay=False))
@pick_option
@replay_options(multi=True)
@threads_option(multi=True)
@click.option("--repeat", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="Runs per configuration (interleaved A B A B ...).")
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(0, 100),
              help="Uncounted rounds before the measured ones.")
@output_option("Write every result (each configuration's runs) as JSON to FILE")
@json_option("every result")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown"]), default="text",
              show_default=True, help="The table: plain ASCII <= 72 columns, ready for a mail "
                                      "reply, or markdown.")
@perf_faults_option
@copies_option
@progress_option
@click.option("--kernels", default=None, metavar="host,IMAGE,...",
              help="Compare kernels: one column each, 'host' (this machine, no VM) or a kernel "
                   "image (bzImage/vmlinuz or a built tree) booted in a QEMU guest that runs all "
                   "of that column's runs. The other options take one value each.")
@vm_options("Run every configuration inside this kernel, booted in one QEMU guest with "
            "virtme-ng: a bzImage/vmlinuz file or a built kernel tree.")
def command(trace, pick, repeat, warmup, max_live, output, as_json, fmt, perf_faults, copies,
            progress, kernels, **options):
    from replay.running.compare import compare_trace, require_results
    from replay.reporters.compare_report import compare_text
    from replay.running.copies import parse_counts
    from replay.results.result import command_line
    from replay.vm.image import resolve_kernels

    check_outputs(output)
    counts = parse_counts(copies)
    kernel_list = resolve_kernels(kernels, options["kernel"])
    if not kernel_list and (options["guest_sysfs"] or options["vm_append"]):
        raise MmreplayError("--guest-sysfs and --vm-append apply to a guest: give --kernel or "
                            "--kernels too")
    # The images are in kernel_list (checked there): one guest per --kernels entry.
    _, vm_options_ = vm_settings({**options, "kernel": None}, guest=bool(kernel_list))
    values = {name: options[name] for name in ("policy", "thp", "touch", "access", "files",
                                               "threads", "collapse")}
    with Progress(progress, "replaying") as bar:
        document = compare_trace(trace, values, repeat, max_live,
                                 progress=bar.update if bar else None, warmup=warmup,
                                 perf_faults=perf_faults, pick=pick, kernels=kernel_list,
                                 vm_options=vm_options_, notify=status_line, copies=counts,
                                 argv=invoked_argv())
    save(document, output)
    require_results(document)
    show(document, output, as_json,
         lambda: compare_text(document, fmt, command_line(invoked_argv())))
    exit_if_interrupted(document["interrupted"])
    exit_if_copies_failed(document["results"])
