"""What every command shares at run time: the progress bar, the exit code of an interrupted
command, and where outputs go (``-o FILE``, ``-`` meaning stdout).

The click options themselves live in ``options.py``.
"""

from __future__ import annotations

import signal
import sys

import click

from traces.text import escape_lines

STDOUT = "-"
ARGV_KEY = "mmreplay.argv"  # click context meta: the command line as given (set by cli.py)


def invoked_argv() -> list[str]:
    """The running command as given (``["mmreplay", "replay", "t.arrow", ...]``), for the
    library functions that record it; ``sys.argv`` outside a click command."""
    ctx = click.get_current_context(silent=True)
    argv = ctx.meta.get(ARGV_KEY) if ctx is not None else None
    return list(argv) if argv is not None else list(sys.argv)


# ---------------------------------------------------------------------------------------------
# Progress


class Progress:
    """The progress bar of every command, on stderr.

    Drawn when ``enabled`` is True, or when it is None (no --progress/--no-progress given) and
    stderr is a terminal. ``update(done, total, label)`` takes absolute positions; a new
    ``label`` (a new run, a new file) starts a new bar at zero. On a pipe click prints each
    bar's label once, when the bar first moves: tests wait for it.

        with Progress(progress, "replaying") as bar:
            work(progress=bar.update)
    """

    def __init__(self, enabled: bool | None, label: str, min_total: int = 0):
        self.enabled = sys.stderr.isatty() if enabled is None else bool(enabled)
        self.asked = enabled is True
        self.label = label
        self.min_total = min_total  # smaller jobs get a bar only when --progress asks for one
        self.bar = None

    def __bool__(self) -> bool:
        return self.enabled

    def update(self, done: int, total: int, label: str | None = None) -> None:
        if not self.enabled or (total < self.min_total and not self.asked):
            return
        label = label or self.label
        if self.bar is not None and self.bar.label != label:
            self.finish()
        if self.bar is None:
            self.bar = click.progressbar(length=max(int(total), 1), label=label, file=sys.stderr,
                                         show_pos=True)
            self.bar.__enter__()
        self.bar.length = max(int(total), 1)
        step = int(done) - self.bar.pos
        if step > 0:
            self.bar.update(step)

    def runs(self, repeat: int):
        """A ``progress(run, done, total, copies=None)`` for replays: one bar per run (warm-up
        runs have negative numbers), and per copy count of --copies."""
        def update(run: int, done: int, total: int, copies: int | None = None) -> None:
            label = ("warming up" if run < 0 else
                     f"replaying run {run + 1} of {repeat}" if repeat > 1 else self.label)
            self.update(done, total, f"{label}, {copies} cop{'y' if copies == 1 else 'ies'}"
                        if copies else label)

        return update if self.enabled else None

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> bool:
        self.finish()
        return False


def status_line(text: str) -> None:
    """One line on stderr about a long step that has no bar (preparing a VM guest, a fallback)."""
    click.echo(f"mmreplay: {text}", err=True)


# ---------------------------------------------------------------------------------------------
# Interrupts


def interrupt_exit_code(reason: str | None) -> int:
    """The exit status of a command stopped by ``reason``: 128 + the signal number, as a shell
    reports a process killed by it (SIGINT 130, SIGTERM 143); 1 for any other stop (the memory
    budget); 0 when nothing stopped it."""
    if not reason:
        return 0
    try:
        return 128 + int(signal.Signals[reason])
    except KeyError:
        return 1


def exit_if_interrupted(reason: str | None) -> None:
    """End the command with ``interrupt_exit_code(reason)`` when it was stopped."""
    code = interrupt_exit_code(reason)
    if code:
        sys.exit(code)


def deliver(document: dict, output, as_json: bool, text) -> None:
    """A result or compare document: written to ``output`` (-o) when given, then printed as
    JSON (--json, unless -o is stdout) or as ``text()``."""
    save(document, output)
    show(document, output, as_json, text)


def save(document: dict, output) -> None:
    from replay.results.result import write_result

    if output:
        write_result(document, output)


def show(document: dict, output, as_json: bool, text) -> None:
    from replay.results.result import result_json

    if as_json:
        if not is_stdout(output):
            emit(result_json(document))
    else:
        emit(text(), None, output)


def exit_if_copies_failed(results: list[dict]) -> None:
    """End the command with status 1 when a copy of --copies failed (its reason was printed;
    the results of the others were written)."""
    if any((result.get("copies") or {}).get("failed") for result in results):
        sys.exit(1)


# ---------------------------------------------------------------------------------------------
# Outputs


def is_stdout(path) -> bool:
    return path is not None and str(path) == STDOUT


def check_outputs(*paths) -> None:
    """Fail before any work when an output cannot be written, or when two outputs both ask for
    stdout."""
    from traces import MmreplayError
    from traces.files import check_writable

    if sum(is_stdout(path) for path in paths) > 1:
        raise MmreplayError("only one output can go to stdout ('-')")
    for path in paths:
        if path and not is_stdout(path):
            check_writable(path)


def emit(text: str, output=None, *others) -> None:
    """A command's text output (report, table, picture, JSON): into the file ``output`` when one
    is given (atomically); else on stdout, or on stderr when one of ``others`` is stdout (a
    trace, a result or an image is being written there)."""
    text = escape_lines(text)  # strings from traces and results: no terminal escapes
    if output is not None and not is_stdout(output):
        from traces.files import write_text

        write_text(output, text)
    else:
        click.echo(text, nl=False, err=any(is_stdout(path) for path in others))
