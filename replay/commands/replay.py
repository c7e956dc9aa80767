"""mmreplay replay: run a trace natively and measure what the kernel did."""

from __future__ import annotations

import click

from replay.commands.common import (Progress, check_outputs, deliver, exit_if_copies_failed,
                                    exit_if_interrupted, invoked_argv, status_line)
from replay.commands.options import (VM_OPTION_NAMES, copies_option, json_option, options_given,
                                     output_option, perf_faults_option, pick_option,
                                     progress_option, replay_config, replay_help_sections,
                                     replay_options, threads_option, vm_options, vm_settings)


HELP = """Replay TRACE natively (default: the bundled BERT inference trace) and measure page
faults, THP coverage, VMA layout, syscall latency and memory speed.

TRACE is a trace file, or a saved mail, an mbox or any text holding one (a `mmreplay share`
block, quoted or not, or the trace attached).

Options not given take the trace's recommended replay settings when it has some (a synth
preset's, e.g. malloc1's --touch first --thp always); the output says which.

""" + replay_help_sections() + """
\b
Examples:
  mmreplay replay
  mmreplay replay t.arrow --policy align-ge-pmd -o a.json
  mmreplay replay t.arrow --thp always --touch full --access stream:2 --repeat 5
  mmreplay replay t.arrow --json | jq .summary
  mmreplay replay t.arrow --copies 4 --repeat 3
  mmreplay replay t.arrow --copies 1,2,4 -o scaling.json
  mmreplay replay t.arrow --kernel /boot/vmlinuz-6.1.0-50-amd64 \\
      --guest-sysfs transparent_hugepage/enabled=always
  mmreplay replay bert-malloc.arrow --allocator jemalloc --mm-trace je.arrow -o je.json
"""


@click.command("replay", help=HELP,
               short_help="Replay a trace natively; measure faults, THP, VMAs, latency.")
@click.argument("trace", required=False, type=click.Path(dir_okay=False))
@pick_option
@replay_options()
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Runs of the same program; the summary gives median, min and max.")
@click.option("--warmup", default=1, show_default=True, type=click.IntRange(0, 100),
              help="Uncounted runs first (the first run pays the JIT start-up and the first "
                   "touches of fresh memory), as compare does.")
@threads_option()
@click.option("--order", default="deps", show_default=True, type=click.Choice(["deps", "strict"]),
              help="With threads: wait only on real dependencies, or keep the global order.")
@output_option("Write the full result (every run, host, command) as JSON to FILE")
@json_option("the full result")
@perf_faults_option
@click.option("--allocator", metavar="NAME|PATH.so",
              help="Replay the trace's allocation calls (record --malloc) through an allocator: "
                   "glibc, jemalloc, mimalloc, tcmalloc (Debian's libjemalloc2, libmimalloc2.0, "
                   "libtcmalloc-minimal4, LD_PRELOADed into a child process) or a library file.")
@click.option("--tunable", "tunables", multiple=True, metavar="glibc.NAME=VALUE",
              help="With --allocator: a glibc tunable for the child (GLIBC_TUNABLES), e.g. "
                   "glibc.malloc.mmap_threshold=131072. Repeatable.")
@click.option("--mm-trace", metavar="FILE", type=click.Path(dir_okay=False),
              help="With --allocator: one more run under strace; the mm calls the allocator made "
                   "become a trace in FILE (replay it with --policy, compare, --kernel).")
@copies_option
@progress_option
@vm_options()
def command(trace, pick, max_live, repeat, warmup, output, as_json, perf_faults, allocator,
            tunables, mm_trace, copies, progress, **options):
    from replay.running.copies import parse_counts
    from replay.running.execute import replay_trace
    from replay.reporters.report import format_replay

    check_outputs(output)
    if allocator is not None:
        return _replay_allocations(trace, pick, options["touch"], max_live, repeat, output,
                                   as_json, allocator, tunables, mm_trace, progress)
    if tunables or mm_trace:
        raise click.UsageError("--tunable and --mm-trace go with --allocator")
    counts = parse_counts(copies)
    kernel, vm_options_ = vm_settings(options)
    config = replay_config(options)
    with Progress(progress, "replaying") as bar:
        result = replay_trace(trace, config, repeat, max_live, progress=bar.runs(repeat),
                              perf_faults=perf_faults, pick=pick, copies=counts,
                              notify=status_line, argv=invoked_argv(), warmup=warmup,
                              given=options_given(click.get_current_context()),
                              kernel=kernel, vm_options=vm_options_)
    _deliver(result, output, as_json, format_replay)
    exit_if_copies_failed([result])


# Options of the mm-level replay that an allocation-level replay does not take.
_MM_ONLY = ("policy", "thp", "access", "files", "threads", "order", "perf_faults", "copies",
            *VM_OPTION_NAMES)


def _replay_allocations(trace, pick, touch, max_live, repeat, output, as_json, allocator,
                        tunables, mm_trace, progress):
    from replay.reporters.alloc_report import format_alloc_replay
    from replay.alloc.alloc_runs import replay_allocations

    given = [name for name in _MM_ONLY if name in options_given(click.get_current_context())]
    if given:
        raise click.UsageError(f"--{given[0].replace('_', '-')} is an option of the mm-level "
                               "replay; with --allocator, replay the --mm-trace it writes")
    if mm_trace:
        check_outputs(output, mm_trace)
    with Progress(progress, "replaying allocations") as bar:
        result = replay_allocations(trace, allocator, tunables, touch, repeat, max_live, mm_trace,
                                    progress=bar.runs(repeat), pick=pick)
    _deliver(result, output, as_json, format_alloc_replay)


def _deliver(result, output, as_json, format_text) -> None:
    """Write the result file, print the JSON or the table, and exit as an interrupted run does."""
    deliver(result, output, as_json, lambda: format_text(result))
    exit_if_interrupted(result["runs"][-1]["interrupt_reason"])
