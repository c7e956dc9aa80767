"""mmreplay share: a trace as a plain-text block to paste into a mail to linux-mm."""

from __future__ import annotations

import click

from replay.commands.common import check_outputs, emit
from replay.commands.options import trace_in_one_out


@click.command("share", short_help="Print a trace as a text block to paste into a mail.")
@trace_in_one_out("Write the block to FILE instead of stdout")
@click.option("--keep", metavar="WHAT",
              help="Comma-separated list of what not to anonymise: hostname, paths, tids "
                   "(default: all three are taken out).")
def command(trace: str, pick: int | None, output: str | None, keep: str | None) -> None:
    """Print TRACE as a text block for a mail: lines of at most 72 columns, a header saying what
    the trace is (events per op, peak live memory, kernel, THP settings, sha256), the command
    that replays it from the saved mail, the trace itself (xz, base64) and a checksum.

    By default the host name, user paths (in the recorded command and any other metadata) and
    thread/process ids (renumbered 1, 2, ... consistently) are taken out. The block's size is
    printed on stderr, with a warning above 100,000 characters (what vger.kernel.org lists
    are commonly said to accept): cut the trace with `mmreplay slice` first.

    Every command that reads a trace reads it back out of the saved mail, an mbox of the
    thread or any text holding the block, quoted in a reply or not.

    \b
    Examples:
      mmreplay share traces/data/bert-torch.arrow -o repro.txt
      mmreplay share bert.arrow --keep hostname | wc -c
      mmreplay replay repro.eml
    """
    from traces import read_trace
    from traces.anonymize import parse_keep
    from traces.inputs import open_trace
    from traces.share import MAIL_LIMIT_CHARS
    from traces.share_trace import share_block

    kept = parse_keep(keep)
    check_outputs(output)
    table = read_trace(trace, pick)
    name = trace.rstrip("/").rsplit("/", 1)[-1]
    text, info = share_block(table, name, kept, shared_from=open_trace(trace, pick).sha256())
    emit(text, output)
    size = (f"share block: {info['characters']:,} characters in {info['lines']:,} lines "
            f"(trace file {info['trace_bytes']:,} bytes, sha256 {info['sha256'][:16]}...)")
    click.echo(size, err=True)
    if info["characters"] > MAIL_LIMIT_CHARS:
        click.echo(f"warning: the block is over the {MAIL_LIMIT_CHARS:,} characters vger.kernel.org"
                   " lists are commonly said to accept; cut the trace with `mmreplay slice` "
                   "(--events, --time or --threads) before posting it", err=True)
