"""Record a command's (or a running process's) mm syscalls with strace, then import the log.

    strace -f -ttt -T -e trace=mmap,munmap,mremap,madvise,mprotect,brk [--seccomp-bpf] -o LOG

``--seccomp-bpf`` makes the kernel stop the tracee only at the traced calls instead of at every
syscall, which cuts the overhead; it is used when a quick probe shows this strace and kernel
support it (never when attaching: a filter cannot be installed into a running process).

The command's exit status becomes the recording's; a command that fails or is killed still
leaves a valid trace. SIGINT/SIGTERM reach the command (Ctrl-C from the terminal reaches it
directly; other signals are forwarded), and the trace of what ran is written anyway.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import MmreplayError
from .files import KeepOpen, atomic_output, check_writable
from .format import write_trace
from .host import host_metadata
from .signals import SignalNotes
from .strace import import_logs, import_metadata

MM_SYSCALLS = "mmap,munmap,mremap,madvise,mprotect,brk"
INSTALL_HINT = ("install it with `apt-get install strace` (Debian/Ubuntu) or "
                "`dnf install strace` (Fedora), or pass --strace PATH")
_POLL_S = 0.05


def find_strace(path: str | None = None) -> str:
    """The strace executable to use; MmreplayError with install instructions when there is none."""
    if path:
        candidate = shutil.which(path) if os.sep not in path else path
        if not candidate or not os.path.isfile(candidate) or not os.access(candidate, os.X_OK):
            raise MmreplayError(f"--strace {path}: no such executable; {INSTALL_HINT}")
        return candidate
    found = shutil.which("strace")
    if not found:
        raise MmreplayError(f"strace is not installed; {INSTALL_HINT}")
    return found


@functools.lru_cache(maxsize=8)
def strace_version(strace: str) -> str | None:
    """'6.1' from `strace -V`."""
    try:
        first = subprocess.run([strace, "-V"], capture_output=True, text=True,
                               timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    words = first[0].split() if first else []
    return words[-1] if words else None


@functools.lru_cache(maxsize=8)
def seccomp_supported(strace: str) -> bool:
    """Whether ``strace --seccomp-bpf`` really filters here (strace >= 5.3, a kernel with seccomp
    filters). strace falls back to plain ptrace with a warning when it cannot, so the probe
    checks the warning, not only the exit status."""
    true = shutil.which("true") or sys.executable
    probe = [strace, "-f", "--seccomp-bpf", "-e", "trace=mmap", "-o", os.devnull, "--", true]
    if true == sys.executable:
        probe += ["-c", ""]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and "seccomp" not in done.stderr.lower()


def strace_command(strace: str, log: str, *, seccomp: bool, argv: Sequence[str] = (),
                   pid: int | None = None, env: dict | None = None) -> list[str]:
    """strace's command line; ``env`` is set in the traced command's environment only."""
    command = [strace, "-f", "-ttt", "-T", "-e", f"trace={MM_SYSCALLS}", "-o", log]
    if seccomp:
        command.append("--seccomp-bpf")
    for name, value in (env or {}).items():
        command += ["-E", f"{name}={value}"]
    if pid is not None:
        return command + ["-p", str(pid)]
    return command + ["--", *argv]


@dataclass
class Recording:
    """What ``record`` did: the report of the import and how the command ended."""

    output: Path
    events: int
    report: dict
    metadata: dict
    exit_code: int  # what mmreplay exits with: the command's status, 128+N if killed by signal N
    interrupted: bool
    ops: dict       # op name -> rows of the trace

    def notes(self, pid: int | None = None) -> list[str]:
        """What ``mmreplay record`` says on stderr about the recording (``pid``: --pid)."""
        from .units import plural

        meta, report = self.metadata, self.report
        ops = ", ".join(f"{op} {n}" for op, n in self.ops.items()) or "no calls"
        if pid is not None:
            ended = f"attached to pid {pid} for {meta['wall_time_s']:.1f} s"
        elif meta.get("signal"):
            ended = f"command killed by {meta['signal']}"
        else:
            ended = f"command exit status {meta.get('exit_status')}"
        notes = [f"recorded {self.events} events ({ops}) in {meta['wall_time_s']:.2f} s, "
                 f"{plural(report['threads'], 'thread')}; {ended}; strace mode "
                 f"{meta['strace_mode']}" + ("; interrupted" if self.interrupted else "")]
        allocations = meta.get("malloc")
        if allocations:
            included = allocations["included"]
            others = allocations["not_included"]
            notes.append(
                f"allocation calls: {included['calls']} recorded in pid {included['pid']} "
                f"({included['exe']})"
                + (f"; {sum(i['calls'] for i in others)} in {len(others)} other process "
                   "image(s) not included" if others else "")
                + (f"; {included['unrecorded_nested_calls']} made inside the recorder (a "
                   "signal handler) not recorded" if included["unrecorded_nested_calls"] else ""))
            if allocations["records_lost"]:
                notes.append("warning: the allocation recorder could not write everything (a "
                             "full disk?): the allocation level of this trace is incomplete")
        unparsed = report["unparsed"]["count"]
        unknown = report["unknown_results"]["count"]
        if unparsed or unknown:
            notes.append(f"note: {unparsed} log lines not understood, {unknown} calls with "
                         "unknown result (see `mmreplay info --json` under metadata.import)")
        notes.append(f"wrote {self.output}")
        return notes


def _resolve_command(argv: Sequence[str]) -> None:
    program = argv[0]
    if os.sep in program:
        if not os.path.isfile(program):
            raise MmreplayError(f"command not found: {program}")
        if not os.access(program, os.X_OK):
            raise MmreplayError(f"{program}: not executable")
    elif not shutil.which(program):
        raise MmreplayError(f"command not found: {program} (not on PATH)")


def _tracee_pid(strace_pid: int) -> int | None:
    """The traced command: strace's child (Linux >= 3.5 lists children in /proc)."""
    try:
        children = Path(f"/proc/{strace_pid}/task/{strace_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _terminal_sends_sigint_to_us() -> bool:
    """True when a Ctrl-C reaches our whole process group (and so the command) directly."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except (OSError, ValueError, AttributeError):
            continue
    return False


class _SignalRelay(SignalNotes):
    """While strace runs: note SIGINT/SIGTERM/SIGHUP, so they can be passed to the command."""


def _exit_code(status: int | None, signal_name: str | None) -> int:
    if signal_name is not None:
        with contextlib.suppress(KeyError):
            return 128 + int(signal.Signals[signal_name])
        return 128
    return status if status is not None else 0


def record(argv: Sequence[str], output: str | os.PathLike, *, strace: str | None = None,
           keep_log: str | os.PathLike | None = None, seccomp: str = "auto",
           pid: int | None = None, duration_s: float | None = None,
           progress: Callable[[int, int], None] | None = None,
           malloc: bool = False) -> Recording:
    """Run ``argv`` (or attach to ``pid`` for ``duration_s``) under strace and write the trace.

    ``seccomp``: "auto" (use --seccomp-bpf when supported), "yes" (require it) or "no".
    ``progress(bytes_done, log_bytes)`` follows the import of the log once strace is done.
    ``malloc``: also record the command's calls of the malloc family with the LD_PRELOAD
    recorder (``traces.malloc_record``), into the same trace.
    """
    if malloc and pid is not None:
        raise MmreplayError("--malloc preloads a library into the command it starts: it cannot "
                            "attach to a running process (--pid)")
    if bool(argv) == (pid is not None):
        raise MmreplayError("give either a command (after --) or --pid PID, not both" if argv
                            else "nothing to record: give a command after -- or --pid PID")
    if duration_s is not None and (pid is None or duration_s <= 0):
        raise MmreplayError("--duration needs --pid and a positive number of seconds")
    if seccomp not in ("auto", "yes", "no"):
        raise MmreplayError(f"--seccomp {seccomp}: expected auto, yes or no")
    strace_path = find_strace(strace)
    out = check_writable(output)
    if keep_log is not None:
        check_writable(keep_log)
    if argv:
        _resolve_command(argv)
    elif not Path(f"/proc/{pid}").is_dir():
        raise MmreplayError(f"--pid {pid}: no such process")

    supported = seccomp != "no" and pid is None and seccomp_supported(strace_path)
    if seccomp == "yes" and not supported:
        raise MmreplayError("--seccomp yes: this strace/kernel cannot filter with seccomp-bpf"
                            + (" (never possible when attaching with --pid)" if pid else ""))
    mode = "seccomp-bpf" if supported else "ptrace"

    env, malloc_dir = None, None
    if malloc:
        from .malloc_shim import shim_library

        library = shim_library()  # before the command runs: a build failure is one line
        malloc_dir = os.path.abspath(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".malloc",
                                                      dir=out.parent))
        preload = os.environ.get("LD_PRELOAD")
        # First, so that the recorder's dlsym(RTLD_NEXT) finds any allocator preloaded after it.
        env = {"LD_PRELOAD": f"{library}:{preload}" if preload else str(library),
               "MMREPLAY_MALLOC_DIR": malloc_dir}
    fd, log = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".strace", dir=out.parent)
    os.close(fd)
    command = strace_command(strace_path, log, seccomp=supported, argv=argv, pid=pid, env=env)
    try:
        with _SignalRelay() as relay:
            started = time.monotonic()
            try:
                process = subprocess.Popen(command)
            except OSError as exc:
                raise MmreplayError(f"cannot run {strace_path}: {exc.strerror}") from None
            returncode = _wait(process, relay, pid is not None, duration_s)
            wall_s = time.monotonic() - started
            if os.path.getsize(log) == 0:
                raise MmreplayError(f"strace recorded nothing (it exited with status "
                                    f"{returncode}; see its message above)")
            if keep_log is not None:  # first: the raw recording survives a failed import
                _keep(log, Path(keep_log))
            log_name = str(keep_log) if keep_log is not None else "strace log"
            log_bytes = os.path.getsize(log)
            result = import_logs([log], names=[log_name], progress=None if progress is None else
                                 (lambda done: progress(done, log_bytes)))
            report = result.report
            status, signal_name = None, None
            if pid is None:
                first = report.get("first_process") or {}
                if "exit_status" in first:
                    status = first["exit_status"]
                elif "signal" in first:
                    signal_name = str(first["signal"])
                elif returncode < 0:  # strace re-raises the signal that killed the command
                    signal_name = signal.Signals(-returncode).name
                else:
                    status = returncode
            fields = {
                "command": list(argv) if argv else None,
                "host": host_metadata(),
                "strace_mode": mode,
                "strace_version": strace_version(strace_path),
                "strace_command": [*command[:command.index("-o") + 1], "LOG",
                                   *command[command.index("-o") + 2:]],
                "wall_time_s": round(wall_s, 3),
                "interrupted": relay.received,
            }
            if pid is None:
                fields["exit_status"] = status
                fields["signal"] = signal_name
            else:
                fields.update(attached_pid=pid, duration_s=duration_s)
            table = result.table
            if malloc_dir is not None:
                table, fields["malloc"] = _with_allocations(table, report, malloc_dir,
                                                            process.pid)
            metadata = import_metadata(report, **fields)
            write_trace(table, out, metadata)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(log)
        if malloc_dir is not None:
            shutil.rmtree(malloc_dir, ignore_errors=True)
    code = _exit_code(status, signal_name) if pid is None else 0
    return Recording(out, table.num_rows, report, metadata, code, relay.received,
                     _op_counts(table))


def _op_counts(table) -> dict:
    from .format import op_names
    from .schema import OPS

    counts = np.bincount(op_names(table), minlength=len(OPS)) if table.num_rows else []
    return {name: int(n) for name, n in zip(OPS, counts) if n}


def _with_allocations(table, report: dict, folder: str, strace_pid: int):
    """The syscall trace with the recorded command's allocation calls merged in, and the
    metadata block describing them."""
    from .malloc_record import allocation_report, choose_image, merge_levels, read_recording

    images, lost = read_recording(folder)
    chosen = choose_image(images, strace_pid)
    if chosen is None:
        raise MmreplayError("the command made no call of the malloc family that the recorder "
                            "saw (a statically linked program, or one that never allocates, "
                            "cannot be recorded at this level)")
    merged, notes = merge_levels(table, report.get("time_origin_ns"), chosen)
    return merged, allocation_report(images, chosen, lost, notes)


def _wait(process: subprocess.Popen, relay: _SignalRelay, attached: bool,
          duration_s: float | None) -> int:
    """Wait for strace, passing signals on; stop an attached recording after ``duration_s``."""
    deadline = time.monotonic() + duration_s if duration_s else None
    stopped = False
    while True:
        try:
            return process.wait(timeout=_POLL_S)
        except subprocess.TimeoutExpired:
            pass
        if attached:
            # strace detaches from the process and exits on SIGINT.
            if relay.pending or (deadline is not None and time.monotonic() >= deadline
                                 and not stopped):
                relay.pending.clear()
                stopped = True
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT)
            continue
        while relay.pending:
            signum = relay.pending[0]
            if signum == signal.SIGINT and _terminal_sends_sigint_to_us():
                relay.pending.pop(0)  # the terminal delivered it to the command too
                continue
            target = _tracee_pid(process.pid)
            if target is None:
                break  # not started yet; try again on the next poll
            relay.pending.pop(0)
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signum)


def _keep(log: str, keep: Path) -> None:
    """Store the raw log, compressed when the name asks for it (.gz, .xz, .zst)."""
    name = keep.name
    if name.endswith((".gz", ".xz", ".zst")):
        import gzip
        import lzma

        import pyarrow as pa

        with atomic_output(keep) as handle, open(log, "rb") as source:
            if name.endswith(".gz"):
                sink = gzip.GzipFile(fileobj=handle, mode="wb")
            elif name.endswith(".xz"):
                sink = lzma.LZMAFile(handle, "wb", preset=6)
            else:
                sink = pa.CompressedOutputStream(pa.PythonFile(KeepOpen(handle), mode="w"),
                                                 "zstd")
            with sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        return
    with atomic_output(keep) as handle, open(log, "rb") as source:
        shutil.copyfileobj(source, handle, 1 << 20)
