"""mmreplay record: run a command (or attach to a process) under strace and write the trace."""

from __future__ import annotations

import difflib
from pathlib import Path

import click

from replay.commands.common import Progress
from replay.commands.options import progress_option

PROGRESS_MIN_BYTES = 16 << 20  # smaller logs import in about a second: no bar


@click.command("record", short_help="Record a command's mm syscalls with strace.",
               context_settings={"ignore_unknown_options": True,
                                 "allow_interspersed_args": False})
@click.argument("argv", nargs=-1, type=click.UNPROCESSED, metavar="[-- CMD [ARGS]...]")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=str),
              help="Trace to write (default: NAME.arrow after the command, or pid-PID.arrow).")
@click.option("--strace", "strace_path", metavar="PATH", help="The strace executable to use.")
@click.option("--keep-log", type=click.Path(dir_okay=False, path_type=str),
              help="Also keep strace's raw log (compressed if the name ends in .gz/.xz/.zst).")
@click.option("--seccomp", type=click.Choice(["auto", "yes", "no"]), default="auto",
              show_default=True,
              help="Filter with --seccomp-bpf so only mm calls stop the command (auto: when "
                   "this strace and kernel support it).")
@click.option("--pid", type=int, help="Attach to this running process (and its threads).")
@click.option("--duration", "duration_s", type=float, metavar="SECONDS",
              help="With --pid: detach after this many seconds (default: on Ctrl-C).")
@click.option("--malloc", is_flag=True,
              help="Also record every malloc/free/calloc/realloc/posix_memalign/aligned_alloc/"
                   "memalign/valloc/pvalloc call (an LD_PRELOAD library built with the system's "
                   "C compiler on first use) into the same trace.")
@progress_option
def command(argv: tuple[str, ...], output: str | None, strace_path: str | None,
            keep_log: str | None, seccomp: str, pid: int | None,
            duration_s: float | None, malloc: bool, progress: bool | None) -> None:
    """Record the mm syscalls of a command, or of a running process, into a trace.

    Runs `strace -f -ttt -T -e trace=mmap,munmap,mremap,madvise,mprotect,brk` and imports its
    log. mmreplay exits with the command's exit status (128+N when signal N killed it); a
    command that fails, crashes or is interrupted with Ctrl-C still leaves a valid trace, with
    the status in its metadata. The command's own output is untouched; mmreplay reports on
    stderr.

    \b
    Examples:
      mmreplay record -o t.arrow -- python -c "import mmap; mmap.mmap(-1, 8 << 20).close()"
      mmreplay record -o bert.arrow --keep-log bert.log.xz -- python examples/hf_inference.py
      mmreplay record --pid 4242 --duration 30 -o server.arrow
      mmreplay record --malloc -o bert-malloc.arrow -- python examples/hf_inference.py
    """
    from traces import MmreplayError
    from traces.record import record

    args = list(argv)
    if args and args[0].startswith("-") and args[0] != "--":
        # Options are read up to the command; an unknown one would otherwise be run as it.
        names = [name for param in click.get_current_context().command.params
                 for name in getattr(param, "opts", [])]
        raise click.NoSuchOption(args[0].split("=", 1)[0],
                                 possibilities=difflib.get_close_matches(args[0], names))
    if args and args[0] == "--":
        args = args[1:]
    for name, path in (("-o", output), ("--keep-log", keep_log)):
        if path == "-":
            raise MmreplayError(f"{name} -: the recorded command writes to stdout; give a file")
    if output is None:
        output = f"pid-{pid}.arrow" if pid is not None and not args else (
            f"{Path(args[0]).name}.arrow" if args else "trace.arrow")

    # smaller logs import in about a second: a bar only when --progress asks for one
    with Progress(progress, "importing the strace log", PROGRESS_MIN_BYTES) as bar:
        recording = record(args, output, strace=strace_path, keep_log=keep_log, seccomp=seccomp,
                           pid=pid, duration_s=duration_s, progress=bar.update if bar else None,
                           malloc=malloc)
    for note in recording.notes(pid):
        click.echo(note, err=True)
    if recording.exit_code:
        click.get_current_context().exit(recording.exit_code)
