"""One allocation replay run, in a process of its own
(``python -m replay.alloc.alloc_child JOBDIR``).

The parent (``alloc_runs``) starts it with the allocator in LD_PRELOAD and GLIBC_TUNABLES set,
and leaves in JOBDIR the program (``program.npz``) and the job (``job.json``). This process
checks which library provides each function it will call, runs the program in chunks (sampling
the kernel at the trace's peak and end, stopping cleanly on SIGINT/SIGTERM or when its RSS grows
past the budget), and writes ``result.json``. It prints ``progress DONE TOTAL`` lines on stdout.

Measurements are of this whole process, from just before the first call: what it held before
(Python, numpy, numba) is subtracted where a figure is a size, and the numba loop makes no
allocation and no mm call of its own, so the allocator's work is all that changes in between.
With ``capture`` the run is one chunk with no sampling at all, so that an strace of this
process between the loop's start and end times sees only the allocator's mm calls.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from traces.schema import PMD_SIZE

from replay.alloc.alloc_engine import (C_FAILED, C_LOOP_END_REALTIME, C_LOOP_START_REALTIME, C_NS,
                                       C_REALLOC_FAILED_KEPT, C_REALLOC_OF_FAILED, C_TOUCH_BYTES,
                                       SUBSTITUTE_PVALLOC, SUBSTITUTE_VALLOC, AllocState)
from replay.alloc.alloc_program import CLEANUP, ENGINE_OP_NAMES, AllocProgram
from replay.measure.probes import (read_smaps, reset_peak_rss, rss_bytes, rusage_faults,
                                   smaps_rollup, status_bytes)

FUNCTIONS = ("malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
             "valloc", "pvalloc")
CHUNKS = 100
BUDGET_SLACK_BYTES = 64 << 20


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def providers() -> dict:
    """function -> the file of the library its global symbol resolves to (as numba resolves it:
    the process's global lookup, LD_PRELOAD first)."""
    libc = ctypes.CDLL(None)
    dladdr = libc.dladdr
    dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    found = {}
    for name in FUNCTIONS:
        try:
            address = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value
        except AttributeError:
            found[name] = None
            continue
        info = _DlInfo()
        found[name] = os.path.realpath(info.dli_fname.decode()) if dladdr(address, ctypes.byref(info)) else None
    return found


def allocator_mappings(before: set, vmas) -> dict:
    """The VMAs that are new or changed since the replay began (what the allocator mapped, or
    grew, for the trace; a brk heap that grew counts whole)."""
    pmd = PMD_SIZE
    new = np.array([(int(s), int(e)) not in before for s, e in zip(vmas.start, vmas.end)], bool)
    start, end = vmas.start[new], vmas.end[new]
    length = end - start
    large = length >= pmd
    whole_blocks = np.maximum(end // pmd - (start + pmd - 1) // pmd, 0)
    return {
        "vmas": int(new.sum()),
        "mapped_bytes": int(length.sum()),
        "rss_bytes": int(vmas.rss[new].sum()),
        "anon_huge_bytes": int(vmas.anon_huge[new].sum()),
        "thp_eligible_bytes": int(whole_blocks.sum() * pmd),
        "large_vmas": int(large.sum()),
        "pmd_aligned_large_vmas": int((large & (start % pmd == 0)).sum()),
    }


def load_program(folder: Path) -> AllocProgram:
    with np.load(folder / "program.npz") as data:
        arrays = {name: data[name] for name in data.files}
    scalars = json.loads((folder / "program.json").read_text())
    return AllocProgram(**arrays, **scalars)


def op_stats(program: AllocProgram, state: AllocState, executed: np.ndarray, ns_per_tick) -> dict:
    from_trace = (program.trace_row != CLEANUP) & executed
    stats = {}
    scale = ns_per_tick or 0.0
    for code, name in enumerate(ENGINE_OP_NAMES):
        chosen = from_trace & (program.code == code) & (state.failed != 2)  # calls made
        done = chosen & (state.failed == 0)
        latency = state.latency[done] * scale
        stats[name] = {
            "count": int(chosen.sum()),
            "failed": int((chosen & (state.failed == 1)).sum()),
            "p50_ns": int(np.percentile(latency, 50)) if len(latency) and scale else None,
            "p99_ns": int(np.percentile(latency, 99)) if len(latency) and scale else None,
            "mean_ns": float(latency.mean()) if len(latency) and scale else None,
        }
    return stats


def die_with_parent() -> None:
    """SIGKILL this process when the process that started it (mmreplay, or strace) dies: a
    replay child must never outlive its replay, whatever kills the parent."""
    parent = os.getppid()
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent or parent == 1:  # it died before the request took effect
        os._exit(1)


def main(folder: Path) -> int:
    die_with_parent()
    job = json.loads((folder / "job.json").read_text())
    program = load_program(folder)
    found = providers()
    expected = job.get("library")
    substitute = 0
    if expected:
        expected = os.path.realpath(expected)
        for name in ("malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc",
                     "memalign"):
            if found.get(name) != expected:
                (folder / "error.txt").write_text(
                    f"{name} resolves to {found.get(name)}, not to the preloaded {expected}: "
                    "the library does not replace the malloc family")
                return 3
        if found.get("valloc") != expected:
            substitute |= SUBSTITUTE_VALLOC
        if found.get("pvalloc") != expected:
            substitute |= SUBSTITUTE_PVALLOC
    elif not os.path.basename(found.get("malloc") or "").startswith("libc.so"):
        (folder / "error.txt").write_text(
            f"malloc resolves to {found.get('malloc')}, not to the C library: --allocator glibc "
            "needs a process without another malloc preloaded")
        return 3
    state = AllocState(program, job["touch_code"], substitute)
    state.run(0, 0)  # loads the compiled loop before anything is measured
    if job.get("loop") == "c":
        state.run = _c_loop(job["c_library"], state)  # benchmarks/alloc_replay_speed.py

    stop = {"reason": None}

    def on_signal(signum, _frame):
        stop["reason"] = signal.Signals(signum).name

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    trace_end = program.cleanup_start
    capture = job.get("capture", False)
    if capture:
        bounds = [0, trace_end, program.ops]
    else:
        size = max(1, -(-trace_end // CHUNKS))
        bounds = sorted(set(range(0, trace_end, size)) | {program.peak_op, trace_end, program.ops})
    budget = job.get("max_live_bytes")
    samples = {}
    before_vmas = read_smaps()
    before = set(zip(before_vmas.start.tolist(), before_vmas.end.tolist()))
    rollup_before = smaps_rollup()
    rss_before = rss_bytes()
    peak_reset = reset_peak_rss()
    minflt0, majflt0 = rusage_faults()
    faults_at_end = None
    wall0 = time.perf_counter()
    ran = 0
    trace_end_realtime = None
    for start, end in zip(bounds, bounds[1:]):
        if stop["reason"] and end > start:
            break
        ran = state.run(start, end)
        if end == trace_end:
            trace_end_realtime = int(state.counters[C_LOOP_END_REALTIME])
        if not capture:
            if end == program.peak_op and end > 0:
                samples["peak"] = _sample(before, rollup_before)
            if end == trace_end:
                samples["end"] = _sample(before, rollup_before)
                faults_at_end = rusage_faults()
                print(f"progress {program.events} {program.events}", flush=True)
            elif end < trace_end:
                print(f"progress {int(program.trace_row[end - 1]) + 1 if end else 0} "
                      f"{program.events}", flush=True)
            if budget is not None and rss_bytes() - rss_before > budget + BUDGET_SLACK_BYTES:
                stop["reason"] = stop["reason"] or "memory budget"
    wall_s = time.perf_counter() - wall0
    hwm = status_bytes("VmHWM") if peak_reset else None
    minflt1, majflt1 = faults_at_end or rusage_faults()
    if ran < program.ops:
        # stopped early: free what the run still holds (its own pointers only)
        live = np.flatnonzero(state.base)
        program_cleanup = AllocProgram(
            code=np.full(len(live), 3, np.int8), slot=np.full(len(live), -1, np.int32),
            ref=live.astype(np.int32), size=np.zeros(len(live), np.int64),
            arg=np.zeros(len(live), np.int64), trace_row=np.full(len(live), CLEANUP, np.int32),
            slots=program.slots, events=0, peak_requested_bytes=0, peak_op=0,
            end_requested_bytes=0, cleanup_start=0, threads=1)
        leftover = AllocState(program_cleanup, 0, substitute)
        leftover.base = state.base
        leftover.run(0, len(live))
    executed = np.zeros(program.ops, bool)
    executed[:ran] = True
    ns_per_tick = state.ns_per_tick()
    counters = state.counters
    trace_ops = int((executed & (program.trace_row != CLEANUP)).sum())
    loop_s = counters[C_NS] / 1e9  # the loop's own time, chunks summed (sampling excluded)
    from_trace = program.trace_row != CLEANUP
    peak = samples.get("peak") or samples.get("end") or {}
    run = {
        "wall_s": wall_s,
        "engine_s": loop_s,
        "events": int(program.trace_row[:ran][from_trace[:ran]].max()) + 1 if trace_ops else 0,
        "calls": trace_ops,
        # every call the loop made (the cleanup frees too) per second of the loop
        "calls_per_s": ran / loop_s if loop_s > 0 else None,
        "touch_writes": int(counters[C_TOUCH_BYTES]),  # bytes written by --touch
        "ns_per_tick": ns_per_tick,
        "ops": op_stats(program, state, executed, ns_per_tick),
        "minflt": minflt1 - minflt0,
        "majflt": majflt1 - majflt0,
        "rss_before_bytes": rss_before,
        "peak_rss_growth_bytes": (hwm - rss_before) if hwm is not None else None,
        "peak_sample_rss_growth_bytes": peak.get("rss_growth_bytes"),
        "end_rss_growth_bytes": (samples.get("end") or {}).get("rss_growth_bytes"),
        "peak_anon_huge_bytes": peak.get("anon_huge_growth_bytes"),
        "peak_requested_bytes": program.peak_requested_bytes,
        "allocator_mappings_at_peak": peak.get("mappings"),
        "failed_in_replay": int((from_trace & (state.failed == 1)).sum()),
        "skipped": {**program.skipped,
                    **({"free_of_allocation_failed_here": int((from_trace & (state.failed == 2)).sum())}
                       if (from_trace & (state.failed == 2)).any() else {})},
        "replayed_differently": {**program.notes,
                                 **({"valloc_as_memalign": int((program.code == 7).sum())}
                                    if substitute & SUBSTITUTE_VALLOC and (program.code == 7).any() else {}),
                                 **({"pvalloc_as_memalign": int((program.code == 8).sum())}
                                    if substitute & SUBSTITUTE_PVALLOC and (program.code == 8).any() else {}),
                                 **({"realloc_of_allocation_failed_here": int(counters[C_REALLOC_OF_FAILED])}
                                    if counters[C_REALLOC_OF_FAILED] else {}),
                                 **({"realloc_failed_old_block_kept": int(counters[C_REALLOC_FAILED_KEPT])}
                                    if counters[C_REALLOC_FAILED_KEPT] else {})},
        "providers": found,
        # CLOCK_REALTIME when the loop began and when the trace's last call was done (before the
        # cleanup frees): the window of an strace of this process that holds the trace's calls
        "loop_realtime_ns": [int(counters[C_LOOP_START_REALTIME]), trace_end_realtime],
        "tid": int(threading_native_id()),
        "samples": samples,
        "interrupted": stop["reason"] is not None,
        "interrupt_reason": stop["reason"],
    }
    run["failed_calls"] = int(counters[C_FAILED])
    (folder / "result.json").write_text(json.dumps(run))
    return 0


def _c_loop(library: str, state: AllocState):
    """The C reference loop (benchmarks/alloc_c_replayer.c built as a library) in place of the
    numba one, on the same arrays, keeping the same counters."""
    from replay.alloc.alloc_engine import C_TICKS

    loop = ctypes.CDLL(library).alloc_c_loop
    loop.restype = ctypes.c_int64
    p = state.program
    pointer = lambda array: array.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    out = np.zeros(3, np.int64)  # ticks, touched, failed

    def run(start: int, stop: int) -> int:
        c = state.counters
        if c[C_LOOP_START_REALTIME] == 0:
            c[C_LOOP_START_REALTIME] = time.time_ns()
        ns = loop(pointer(p.code), pointer(p.slot), pointer(p.ref), pointer(p.size),
                  pointer(p.arg), ctypes.c_int64(start), ctypes.c_int64(stop),
                  pointer(state.base), pointer(state.latency), pointer(state.failed),
                  ctypes.c_int64(int(state.params[0])), ctypes.c_int64(int(state.params[1])),
                  ctypes.c_void_p(out.ctypes.data), ctypes.c_void_p(out.ctypes.data + 8),
                  ctypes.c_void_p(out.ctypes.data + 16))
        c[C_NS] += ns
        c[C_TICKS] += out[0]
        c[C_TOUCH_BYTES] += out[1]
        c[C_FAILED] += out[2]
        out[:] = 0
        c[C_LOOP_END_REALTIME] = time.time_ns()
        return stop

    return run


def threading_native_id() -> int:
    import threading

    return threading.get_native_id()


def _sample(before: set, rollup_before: dict) -> dict:
    rollup = smaps_rollup()
    return {
        "rss_growth_bytes": rollup.get("Rss", 0) - rollup_before.get("Rss", 0),
        "anon_huge_growth_bytes": (rollup.get("AnonHugePages", 0)
                                   - rollup_before.get("AnonHugePages", 0)),
        "mappings": allocator_mappings(before, read_smaps()),
    }


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
