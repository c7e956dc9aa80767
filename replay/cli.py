"""The ``mmreplay`` command line. Each command lives in ``replay/commands/<name>.py`` and is
listed in ``replay/commands/__init__.py`` (``COMMANDS``).

Heavy modules (numba, matplotlib) are imported inside commands so ``--help`` and ``info`` start fast.
"""

from __future__ import annotations

import atexit
import errno
import gc
import os
import sys

import click

from traces import MmreplayError, __version__
from traces.text import escape

from replay.commands import COMMANDS
from replay.commands.common import ARGV_KEY, interrupt_exit_code, invoked_argv

EPILOG = """\b
Typical journey:
  mmreplay record -o bert.arrow -- python examples/hf_inference.py
  mmreplay info bert.arrow
  mmreplay replay bert.arrow --policy align-ge-pmd -o a.json
  mmreplay compare bert.arrow --policies align-ge-pmd,align-pmd-multiple

\b
Every command: --json prints JSON instead of text; -o FILE writes the
output to FILE ('-' is stdout); --progress/--no-progress where a bar
is drawn. Sizes: K, M, G, T are powers of 1024 (KiB, MiB, GiB, TiB).
"""


class MmreplayGroup(click.Group):
    """Turns MmreplayError into one line on stderr and exit status 2 (no traceback)."""

    def make_context(self, info_name, args, parent=None, **extra):
        # The exact command as given, before click consumes it: results record it ("command"),
        # and commands hand it down to the library (``invoked_argv``).
        argv = ["mmreplay", *args]
        ctx = super().make_context(info_name, args, parent, **extra)
        ctx.meta[ARGV_KEY] = argv
        return ctx

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            # `replay t.arrow --json a.json` was once the way to save a result
            if "unexpected extra argument" in exc.message and "--json" in invoked_argv():
                exc.message += " (--json is a flag; write a result file with -o FILE)"
            raise
        except MmreplayError as exc:
            message = " ".join(str(exc).split("\n"))
            click.echo(f"Error: {escape(message, 2000)}", err=True)
            ctx.exit(getattr(exc, "exit_code", 2))  # 130/143: a VM stopped by Ctrl-C/SIGTERM
        except KeyboardInterrupt:
            # Ctrl-C outside a replay's own handler (reading, compiling): the shell's convention.
            click.echo("Interrupted (SIGINT)", err=True)
            ctx.exit(interrupt_exit_code("SIGINT"))
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # the reader went away (`| head`): click closes stdout and exits 1
            # An output the system refused (ENOSPC on stdout, EIO): one line, never a traceback.
            # Written data still buffered for stdout would fail again at exit: drop it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {escape(where, 500)}{exc.strerror or exc}", err=True)
            ctx.exit(1)
        except MemoryError:
            click.echo("Error: out of memory (the input is too large for this machine; try a "
                       "smaller trace or --max-live)", err=True)
            ctx.exit(2)


@click.group(cls=MmreplayGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mmreplay")
def cli() -> None:
    """Record, replay and synthesize mmap/munmap workloads to test Linux memory-management changes.

    A trace is an Arrow IPC file with one row per mmap/munmap/mremap/madvise/mprotect/brk call.
    """


for _command in COMMANDS:
    cli.add_command(_command)


def main() -> None:
    # Skip the garbage collector's passes over every object at interpreter exit: once the numba
    # engine is loaded they take 0.2-0.4 s (benchmarks/engine_speed.py, start-up). Outputs are
    # already closed by then (atomic_output), so nothing waits on those passes.
    atexit.register(gc.freeze)
    cli(prog_name="mmreplay")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
