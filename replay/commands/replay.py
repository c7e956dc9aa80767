"""mmreplay replay: run a trace natively and measure what the kernel did."""

from __future__ import annotations

import sys

import click

from .options import check_output, replay_options


@click.command("replay")
@click.argument("trace", required=False, type=click.Path(dir_okay=False))
@replay_options()
@click.option("--repeat", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Runs of the same program; the summary gives median, min and max.")
@click.option("--threads", default="1", show_default=True,
              help="1 (serial), recorded (one OS thread per recorded thread) or N threads.")
@click.option("--order", default="deps", show_default=True, type=click.Choice(["deps", "strict"]),
              help="With threads: wait only on real dependencies, or keep the global order.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Write the full result (every run, host, command) as JSON to this file.")
@click.option("--perf-faults", is_flag=True,
              help="Also count page faults with a perf_event_open software counter (it slows "
                   "each fault by ~3%; minor faults from getrusage are always reported).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: when stderr is a terminal).")
def command(trace, policy, thp, touch, access, files, max_live, repeat, threads, order, json_out,
            perf_faults, progress):
    """Replay TRACE natively (default: the bundled BERT inference trace) and measure page faults,
    THP coverage, VMA layout, syscall latency and memory speed.

    \b
    Examples:
      mmreplay replay
      mmreplay replay t.arrow --policy align-ge-pmd --json a.json
      mmreplay replay t.arrow --thp always --touch full --access stream:2 --repeat 5
    """
    from replay.config import Access, ReplayConfig
    from replay.report import format_replay
    from replay.result import write_result
    from replay.runs import replay_trace

    check_output(json_out)
    config = ReplayConfig(policy=policy, thp=thp, touch=touch, access=Access.parse(access),
                          files=files, threads=threads, order=order)
    bar = progress_bar_for(progress)
    try:
        result = replay_trace(trace, config, repeat, max_live, progress=bar.update if bar else None,
                              perf_faults=perf_faults)
    finally:
        if bar:
            bar.finish()
    if json_out:
        write_result(result, json_out)
    click.echo(format_replay(result), nl=False)
    reason = result["runs"][-1]["interrupt_reason"]
    if reason:
        sys.exit({"SIGINT": 130, "SIGTERM": 143}.get(reason, 1))


class progress_bar_for:
    """Adapts replay progress (run, events done, events total) to a click bar on stderr."""

    def __new__(cls, enabled):
        if enabled is None:
            enabled = sys.stderr.isatty()
        if not enabled:
            return None
        return super().__new__(cls)

    def __init__(self, enabled):
        self.bar = None

    def update(self, run_index, done, total):
        if self.bar is None:
            self.bar = click.progressbar(length=max(total, 1), label="replaying", file=sys.stderr,
                                         show_pos=True)
            self.bar.__enter__()
            self.run = run_index
        if run_index != self.run:
            self.bar.pos = 0
            self.run = run_index
            self.bar.label = f"replaying (run {run_index + 1})"
        self.bar.update(done - self.bar.pos)

    def finish(self):
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
