"""Replay a trace's allocation calls through an allocator, in child processes, and build the
result document (``mmreplay replay --allocator``).

Each run is a fresh ``python -m replay.alloc.alloc_child`` with the allocator in LD_PRELOAD
(none for glibc) and ``--tunable`` settings in GLIBC_TUNABLES, so every run starts from the same empty
allocator. With ``mm_trace``, one more run is made under strace (seccomp-bpf): the mm calls the
allocator made while the loop ran become a normal mm trace, which ``replay``, ``compare`` and
``--kernel`` take like any other, to cross allocators with kernel placement rules. That run is
not timed: strace stops the process at every mm call.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from traces import MmreplayError, read_trace
from traces.format import column_np, events_sha256, new_metadata, write_trace
from traces.host import host_metadata
from traces.summary import summarize

from replay.alloc.alloc_program import AllocProgram, compile_allocations
from replay.results.result import build_result, trace_identity
from replay.running.runs import default_budget_bytes, resolve_trace
from replay.running.session import Interrupt, catch_signals

# --allocator NAME -> (library file name, Debian package)
ALLOCATORS = {
    "glibc": (None, None),
    "jemalloc": ("libjemalloc.so.2", "libjemalloc2"),
    "mimalloc": ("libmimalloc.so.2", "libmimalloc2.0"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64",
                "/usr/local/lib", "/usr/lib", "/lib")
TOUCH_CODE = {"none": 0, "first": 1, "pages": 2, "full": 3}
TUNABLE = re.compile(r"^glibc\.[A-Za-z0-9_.]+=[A-Za-z0-9_.+-]+$")


def find_library(name: str) -> str | None:
    """Where the dynamic linker finds ``name`` (ldconfig's cache, then the usual folders)."""
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        parts = line.strip().split(" => ")
        if len(parts) == 2 and parts[0].split(" ", 1)[0] == name and "x86-64" in parts[0]:
            return parts[1]
    for folder in LIBRARY_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    return None


def resolve_allocator(allocator: str) -> tuple[str, str | None]:
    """(name, library to preload or None for glibc) for --allocator NAME|PATH.so."""
    if allocator in ALLOCATORS:
        library, package = ALLOCATORS[allocator]
        if library is None:
            return allocator, None
        found = find_library(library)
        if found is None:
            raise MmreplayError(f"--allocator {allocator}: {library} is not installed "
                                f"(apt-get install {package})")
        return allocator, found
    path = Path(allocator)
    if not allocator.endswith(".so") and ".so." not in path.name:
        raise MmreplayError(f"--allocator {allocator}: expected one of {', '.join(ALLOCATORS)} "
                            "or the path of a shared library (.so)")
    if not path.is_file():
        raise MmreplayError(f"--allocator {allocator}: no such file")
    with open(path, "rb") as handle:
        if handle.read(4) != b"\x7fELF":
            raise MmreplayError(f"--allocator {allocator}: not a shared library (no ELF header)")
    return path.name, str(path.resolve())


def check_tunables(tunables) -> list[str]:
    checked = []
    for tunable in tunables or ():
        if not TUNABLE.match(tunable):
            raise MmreplayError(f"--tunable {tunable}: expected glibc.NAME=VALUE, e.g. "
                                "glibc.malloc.mmap_threshold=131072")
        checked.append(tunable)
    return checked


def child_environment(library: str | None, tunables: list[str]) -> dict:
    """What the child gets on top of our environment (the allocator, the tunables)."""
    env = {}
    if library:
        env["LD_PRELOAD"] = library
    if tunables:
        env["GLIBC_TUNABLES"] = ":".join(tunables)
    return env


def write_job(folder: Path, program: AllocProgram, job: dict) -> None:
    arrays = {name: getattr(program, name) for name in ("code", "slot", "ref", "size", "arg",
                                                         "trace_row")}
    np.savez(folder / "program.npz", **arrays)
    scalars = {name: getattr(program, name) for name in (
        "slots", "events", "peak_requested_bytes", "peak_op", "end_requested_bytes",
        "cleanup_start", "threads", "skipped", "notes")}
    (folder / "program.json").write_text(json.dumps(scalars))
    (folder / "job.json").write_text(json.dumps(job))


def run_child(folder: Path, env: dict, interrupt: Interrupt,
              progress: Callable[[int, int], None] | None = None,
              traced_with: list[str] | None = None) -> dict:
    """One run in a child process; ``traced_with`` is an strace command line to run it under
    (the child's environment then goes through strace's -E, already in that command)."""
    for stale in ("result.json", "error.txt"):
        with contextlib.suppress(FileNotFoundError):
            (folder / stale).unlink()
    child_argv = [sys.executable, "-m", "replay.alloc.alloc_child", str(folder)]
    command = (traced_with + child_argv) if traced_with else child_argv
    # The allocator is ours to choose: a preload or tunables in our own environment would
    # change what the child replays through (under strace, env goes through strace's -E).
    inherited = {name: value for name, value in os.environ.items()
                 if name not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    full_env = {**inherited, **({} if traced_with else env)}
    stderr_path = folder / "stderr.txt"
    root = str(Path(__file__).resolve().parent.parent)
    full_env["PYTHONPATH"] = root + (os.pathsep + full_env["PYTHONPATH"]
                                     if full_env.get("PYTHONPATH") else "")
    with open(stderr_path, "wb") as stderr:
        try:
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr,
                                       env=full_env, start_new_session=False)
        except OSError as exc:
            raise MmreplayError(f"cannot start the replay child: {exc.strerror}") from None
        forwarded = None
        try:
            for line in process.stdout:
                if interrupt and forwarded is None:
                    forwarded = interrupt.reason
                    _forward(process, interrupt.reason)
                parts = line.split()
                if len(parts) == 3 and parts[0] == b"progress" and progress is not None:
                    progress(int(parts[1]), int(parts[2]))
            returncode = process.wait()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if interrupt and forwarded is None:
        forwarded = interrupt.reason  # it came after the last line: the run is complete anyway
    result_path = folder / "result.json"
    if result_path.exists():
        return json.loads(result_path.read_text())
    error = folder / "error.txt"
    if error.exists():
        raise MmreplayError(error.read_text().strip())
    tail = stderr_path.read_text(errors="replace").strip().splitlines()[-5:]
    how = (f"killed by {signal.Signals(-returncode).name}" if returncode < 0
           else f"exit status {returncode}")
    raise MmreplayError(f"the replay child failed ({how})" + (": " + " | ".join(tail)
                                                              if tail else ""))


def _forward(process: subprocess.Popen, reason: str | None) -> None:
    """Pass a SIGTERM on to the child (a Ctrl-C from the terminal reaches it directly)."""
    if reason == "SIGTERM":
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


def capture_mm_trace(folder: Path, env: dict, interrupt: Interrupt, output: str | Path,
                     trace_path: Path, table, allocator: str, library: str | None,
                     tunables: list[str], touch: str, argv: list[str] | None = None,
                     pick: int | None = None) -> dict:
    """One more run under strace; the mm calls between the loop's first call and the trace's
    last become the trace ``output``. Returns its summary and where it came from."""
    from traces.record import find_strace, seccomp_supported, strace_command
    from traces.strace import import_logs

    strace = find_strace()
    log = folder / "child.strace"
    seccomp = seccomp_supported(strace)
    # ends with "--": run_child adds the child's command line
    command = strace_command(strace, str(log), seccomp=seccomp, argv=[], env=env)
    run = run_child(folder, env, interrupt, None, traced_with=command)
    imported = import_logs([str(log)], names=["replay child"])
    mm = imported.table
    origin = imported.report.get("time_origin_ns")
    start, end = run["loop_realtime_ns"]
    if origin is None or start == 0 or end is None:
        raise MmreplayError("the replay child's mm calls could not be placed in time")
    absolute = column_np(mm, "ts_ns").astype(np.int64) + np.int64(origin)
    # strace's times are whole microseconds, truncated
    inside = (absolute >= (start // 1000) * 1000) & (absolute <= end)
    rows = np.flatnonzero(inside)
    window = mm.take(rows)
    ts = column_np(window, "ts_ns").astype(np.int64)
    if len(ts):
        window = window.set_column(window.schema.get_field_index("ts_ns"),
                                   window.schema.field("ts_ns"), pa.array(ts - ts.min(), pa.int64()))
    from replay.results.result import command_line

    metadata = new_metadata(
        "allocator-replay", command=command_line(argv), host=host_metadata(),
        derived_from={"trace": trace_path.name, "events_sha256": events_sha256(table),
                      "allocator": allocator, "library": library,
            "tunables": tunables, "touch": touch},
        strace_mode="seccomp-bpf" if seccomp else "ptrace",
        note=("the mm calls the allocator made while replaying the allocation calls of "
              f"{trace_path.name}, between its first call and its last (the replay's own cleanup "
              "frees are not included)"))
    write_trace(window.select(mm.schema.names), output, metadata)
    summary = summarize(read_trace(output))
    return {"path": str(output), "events": int(len(rows)), "ops": summary["ops"],
            "anon_mmaps": summary["anon_mmaps"],
            "pmd_multiple_mmaps": summary["pmd_multiple_mmaps"],
            "large_mmaps": summary["pmd_multiple_mmaps"] + summary["pmd_unaligned_large_mmaps"],
            "size_histogram": summary["size_histogram"],
            "peak_live_bytes": summary["peak_live_bytes"],
            "skipped_calls_outside_window": int(mm.num_rows - len(rows))}


def replay_allocations(trace_path: str | None, allocator: str, tunables=(), touch: str = "pages",
                       repeat: int = 1, max_live_bytes: int | None = None,
                       mm_trace: str | Path | None = None,
                       progress: Callable[[int, int, int], None] | None = None,
                       argv: list[str] | None = None, pick: int | None = None) -> dict:
    """Replay the allocation calls of a trace ``repeat`` times through ``allocator``; returns
    the result document (partial if interrupted)."""
    if repeat < 1:
        raise MmreplayError("--repeat must be at least 1")
    name, library = resolve_allocator(allocator)
    tunables = check_tunables(tunables)
    path = resolve_trace(trace_path)
    table = read_trace(path, pick)
    program = compile_allocations(table)
    if program.events == 0:
        raise MmreplayError(f"{path}: no allocation calls to replay (record them with "
                            "`mmreplay record --malloc`)")
    budget = max_live_bytes if max_live_bytes is not None else default_budget_bytes()
    if program.peak_requested_bytes > budget:
        raise MmreplayError(f"{path}: the trace keeps {program.peak_requested_bytes} bytes "
                            f"allocated at its peak, more than the memory budget of {budget} "
                            "bytes (raise --max-live if this machine can take it)")
    env = child_environment(library, tunables)
    job = {"touch_code": TOUCH_CODE[touch], "library": library, "max_live_bytes": budget}
    runs = []
    interrupt = Interrupt()
    mm_info = None
    folder = Path(tempfile.mkdtemp(prefix="mmreplay-alloc-"))
    try:
        write_job(folder, program, job)
        with catch_signals(interrupt):
            for index in range(repeat):
                report = None
                if progress is not None:
                    def report(done, total, index=index):
                        progress(index, done, total)
                runs.append(run_child(folder, env, interrupt, report))
                if interrupt or runs[-1]["interrupted"]:
                    break
            if mm_trace is not None and not interrupt and not runs[-1]["interrupted"]:
                write_job(folder, program, {**job, "capture": True})
                mm_info = capture_mm_trace(folder, env, interrupt, mm_trace, path, table, name,
                                           library, tunables, touch, argv, pick)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if interrupt and not runs[-1]["interrupted"]:
        runs[-1]["interrupted"], runs[-1]["interrupt_reason"] = True, interrupt.reason
    config = {"level": "allocation", "allocator": name, "library": library,
              "tunables": tunables, "touch": touch, "repeat": repeat,
              "max_live_bytes": budget, "threads": "1"}
    extra = {"allocator": {"name": name, "library": library, "tunables": tunables,
                           "providers": runs[-1].get("providers")},
             "mm_trace": mm_info}
    return build_result(trace_identity(path, table, pick), config, runs, program.info(), extra,
                        argv)
