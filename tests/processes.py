"""Commands run as real child processes, and waiting for them on a busy machine: every wait is
for a condition (a marker on stderr, a file position, a process gone), never for a time."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

EXIT_BY_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
# A generous upper bound for a condition that should come quickly: it fails a hung test, and
# is never how a passing test is told from a failing one.
PATIENCE_S = 300


def mmreplay(*args, **kwargs) -> subprocess.Popen:
    """`mmreplay ARGS` as its own process (the installed script, or the module)."""
    script = Path(sys.executable).with_name("mmreplay")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "replay.cli"]
    return subprocess.Popen([*command, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def descendants(pid: int) -> dict[int, str]:
    """pid -> start time of every live descendant of ``pid``."""
    parents: dict[int, list[int]] = {}
    start: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parents.setdefault(int(fields[1]), []).append(int(entry))
        start[int(entry)] = fields[19]
    found, todo = {}, [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found[child] = start[child]
            todo.append(child)
    return found


def assert_gone(processes: dict[int, str], timeout_s: float = PATIENCE_S) -> None:
    """None of ``processes`` runs any more (a reused pid has another start time)."""
    deadline = time.monotonic() + timeout_s
    while True:
        alive = []
        for pid, started in processes.items():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[19] == started and fields[0] != "Z":
                alive.append(pid)
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not alive, f"leaked processes: {alive}"


def wait_for(condition, what: str, timeout_s: float = PATIENCE_S) -> None:
    """Poll ``condition()`` until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def read_stderr_until(child: subprocess.Popen, marker: bytes,
                      timeout_s: float = PATIENCE_S) -> bytes:
    """Read the child's stderr until ``marker`` shows; returns what was read."""
    fd = child.stderr.fileno()
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            raise AssertionError(f"no {marker!r} on stderr after {timeout_s} s: {seen!r}")
        data = os.read(fd, 1 << 16)
        if not data:
            raise AssertionError(f"exited before {marker!r}: {seen!r}")
        seen += data
    return seen


def wait_until_replaying(child: subprocess.Popen) -> bytes:
    """The progress bar (--progress) prints its label, on a pipe, once the first chunk of
    events has been replayed: from then on, an interrupted run has events to show."""
    return read_stderr_until(child, b"replaying")


def interrupt_replaying(child, sig) -> bytes:
    """Signal a replaying mmreplay once its progress bar moves; check it ended as that signal
    asks, without a traceback. Returns its stdout."""
    seen = wait_until_replaying(child)
    child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=PATIENCE_S)
    stderr = seen + stderr
    assert child.returncode == EXIT_BY_SIGNAL[sig], stderr.decode()
    assert b"Traceback" not in stderr
    return stdout


def run_on_a_terminal(*args) -> tuple[int, bytes, str]:
    """`mmreplay ARGS` with stderr on a pseudo-terminal (as in an interactive shell), stdout on
    a pipe; returns (exit status, stdout, what the terminal showed)."""
    import pty

    master, slave = pty.openpty()
    script = Path(sys.executable).with_name("mmreplay")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "replay.cli"]
    child = subprocess.Popen([*command, *map(str, args)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        shown += data
    os.close(master)
    stdout = child.stdout.read()
    child.wait(timeout=PATIENCE_S)
    return child.returncode, stdout, shown.decode(errors="replace")
