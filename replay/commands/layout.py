"""mmreplay layout: replay up to one moment and draw the replay's address space."""

from __future__ import annotations

import json

import click

from traces.text import escape

from replay.commands.common import Progress, check_outputs, emit
from replay.commands.options import (json_option, output_option, pick_option, progress_option,
                                     replay_config, replay_help_sections, replay_options,
                                     vm_options, vm_settings)


HELP = """Replay TRACE (default: the bundled BERT inference trace) up to --at and draw the
replay's address space as the kernel sees it: its mappings, the holes between them, every
2 MiB boundary and which ranges huge pages back (from /proc/self/smaps and PAGEMAP_SCAN).

TRACE is a trace file, or a saved mail, an mbox or any text holding one (a `mmreplay share`
block, quoted or not, or the trace attached).

The ASCII picture is plain text of at most --width columns, ready for a mail.

""" + replay_help_sections() + """
\b
Examples:
  mmreplay layout t.arrow --policy align-ge-pmd
  mmreplay layout t.arrow --policy align-pmd-multiple --thp always --png layout.png
  mmreplay layout t.arrow --at 120 --width 100
  mmreplay layout t.arrow --json | jq .figures
  mmreplay layout t.arrow --kernel /boot/vmlinuz-6.1.0-50-amd64
"""


@click.command("layout", help=HELP,
               short_help="Draw the replay's address space (ASCII for a mail, or PNG).")
@click.argument("trace", required=False, type=str)
@pick_option
@replay_options()
@click.option("--at", "at", default="peak", show_default=True, metavar="peak|end|EVENT",
              help="When to look: peak (first moment of most live bytes), end (after the last "
                   "event, before cleanup) or an event number N (just after event N, counted "
                   "from 0 as info does).")
@click.option("--width", default=72, show_default=True, type=int, metavar="COLUMNS",
              help="Columns of the ASCII picture; no line is wider (at least 40).")
@click.option("--png", metavar="FILE", type=click.Path(dir_okay=False, allow_dash=True),
              help="Also draw the layout as a PNG image in FILE (needs matplotlib; '-': on "
                   "stdout).")
@json_option("the layout (every VMA, hole, huge-page range, mapping)")
@output_option("Write the picture (or the --json layout) to FILE instead of stdout")
@progress_option
@vm_options("Draw the layout inside this kernel, booted in a QEMU guest with virtme-ng: a "
            "bzImage/vmlinuz file or a built kernel tree.")
def command(trace, pick, max_live, at, width, png, as_json, output, progress, **options):
    from replay.running.layout import capture_layout, parse_at
    from replay.reporters.layout_text import MAX_WIDTH, MIN_WIDTH, render_ascii
    from traces import MmreplayError

    parse_at(at)  # a bad --at fails before any work
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise MmreplayError(f"--width {escape(width, 40)}: the picture needs {MIN_WIDTH} to "
                            f"{MAX_WIDTH} columns")
    check_outputs(output, png)
    kernel, vm_options_ = vm_settings(options)
    in_guest = None
    if kernel is not None:
        from replay.vm.run import layout_in_vm

        from replay.commands.common import status_line

        def in_guest(prepared, stop_op):
            return layout_in_vm(prepared, stop_op, kernel, vm_options_, status_line)
    if png:
        from replay.reporters.pictures import require_matplotlib
        require_matplotlib()
    config = replay_config(options)
    with Progress(progress, "replaying") as bar:
        layout = capture_layout(trace, config, at, max_live, progress=bar.update if bar else None,
                                pick=pick, in_guest=in_guest)
    if png:
        from replay.reporters.pictures import plot_layout
        plot_layout(layout, png)
    if as_json:
        emit(json.dumps(layout.as_dict(), indent=2) + "\n", output, png)
    else:
        emit(render_ascii(layout, width), output, png)
    if png and png != "-":
        click.echo(f"wrote {png}", err=True)
