"""Speed of the native replay engine against a C reference replayer and a plain Python loop.

Issue 4, "Performance": the numba engine must run the same op program at >= 0.97x the events/s of
a C replayer (benchmarks/c_replayer.c, built here with the system C compiler) with ``--touch none``
(syscall-bound) and ``--touch pages`` (fault-bound); the factor over a plain Python ctypes loop is
printed too. Then the start-up cost of ``mmreplay replay`` (runs after the first, JIT cache warm;
target <= 0.3 s of engine set-up) and the op program's memory per trace event (target <= 64 bytes).

events/s is the same figure everywhere: trace events / seconds inside the replay loop (the engine's
``engine_s``, the C program's own clock around its loop, the Python loop's own clock).

    python benchmarks/engine_speed.py              # the full run (about 3 minutes on 2 cores)
    python benchmarks/engine_speed.py --quick      # smaller traces, 3 repeats
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from replay.engine.compile import compile_trace  # noqa: E402
from replay.running.config import ReplayConfig  # noqa: E402
from replay.engine.engine import P_THP_ADVICE, P_TOUCH  # noqa: E402
from replay.engine.model import live_pieces  # noqa: E402
from replay.measure.probes import probe_kernel_alignment  # noqa: E402
from replay.engine.program import (ID_MAPPED, ID_TAINTED, OP_MADVISE, OP_MMAP, OP_MMAP_FIXED_IN,  # noqa: E402
                            OP_MREMAP, OP_MUNMAP, OP_TOUCH, PLACE_MASK, THP_ADVISE, TOUCH_READ,
                            TOUCH_WRITE)
from replay.running.session import engine_params, run_program  # noqa: E402
from traces import build_table, new_metadata, write_trace  # noqa: E402
from traces.host import host_metadata  # noqa: E402

C_SOURCE = Path(__file__).resolve().parent / "c_replayer.c"
KIB, MIB = 1 << 10, 1 << 20
PAGE = 4096
TOP_ADDRESS = 0x7F00_0000_0000
PROT_RW, MAP_PRIVATE_ANON = 0x3, 0x22
TARGET_C_RATIO = 0.97
TARGET_SETUP_S = 0.3
TARGET_BYTES_PER_EVENT = 64
SHORT_CASE_S = 1.0
# Modules the `mmreplay replay` command imports; timed alone to separate imports from set-up.
COMMAND_IMPORTS = "import replay.cli, replay.running.config, replay.reporters.report, replay.results.result, replay.running.runs"


# ---------------------------------------------------------------- synthetic traces

def window_trace(sizes_bytes: np.ndarray, live: int, source: str):
    """mmap each buffer in turn and munmap it ``live`` buffers later (then the rest at the end):
    2 events per buffer, at most ``live`` buffers mapped at once."""
    n = len(sizes_bytes)
    addresses = TOP_ADDRESS - np.cumsum(sizes_bytes + PAGE)  # distinct, never reused: names only
    order_op, order_buf = [], []
    for i in range(n):
        order_op.append("mmap")
        order_buf.append(i)
        if i >= live:
            order_op.append("munmap")
            order_buf.append(i - live)
    for i in range(max(0, n - live), n):
        order_op.append("munmap")
        order_buf.append(i)
    buf = np.array(order_buf, np.int64)
    is_mmap = np.array([op == "mmap" for op in order_op])
    events = len(buf)

    def only_mmap(value):
        return [value if m else None for m in is_mmap.tolist()]

    columns = {
        "ts_ns": np.arange(events, dtype=np.int64) * 1000,
        "tid": np.ones(events, np.int32),
        "op": order_op,
        "addr": addresses[buf].astype(np.uint64),
        "length": sizes_bytes[buf].astype(np.uint64),
        "hint": only_mmap(0),
        "prot": only_mmap(PROT_RW),
        "flags": only_mmap(MAP_PRIVATE_ANON),
        "fd": only_mmap(-1),
        "offset": only_mmap(0),
        "errno": np.zeros(events, np.int32),
    }
    return build_table(columns, new_metadata(source))


def syscall_bound_trace(events: int = 200_000, size_bytes: int = 64 * KIB, live: int = 8):
    """mmap+munmap pairs of one small size with a small live set: the syscalls dominate."""
    return window_trace(np.full(events // 2, size_bytes, np.int64), live,
                        f"benchmark: {events // 2} x {size_bytes // KIB} KiB mmap+munmap")


def fault_bound_trace(buffers: int = 2000, live: int = 4, seed: int = 4):
    """1-4 MiB buffers (page multiples, random): with --touch pages the page faults dominate."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(MIB // PAGE, 4 * MIB // PAGE + 1, buffers).astype(np.int64) * PAGE
    return window_trace(sizes, live, f"benchmark: {buffers} buffers of 1-4 MiB")


# ---------------------------------------------------------------- C reference replayer

def build_c_replayer(folder: Path) -> Path:
    """Compile benchmarks/c_replayer.c with the system C compiler (``$CC`` or cc) into ``folder``."""
    compiler = os.environ.get("CC", "cc")
    binary = Path(folder) / "c_replayer"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(C_SOURCE)], check=True,
                   capture_output=True, text=True)
    return binary


def dump_program(program, params: np.ndarray, path: Path) -> Path:
    """Write the op program in the layout c_replayer.c reads (header, then each array raw)."""
    header = np.array([program.ops, program.ids, program.events, params[P_TOUCH],
                       params[P_THP_ADVICE]], np.int64)
    with open(path, "wb") as out:
        out.write(b"MMRPROG1")
        out.write(header.tobytes())
        for array, dtype in ((program.code, np.int8), (program.mode, np.int8),
                             (program.map_id, np.int32), (program.ref_id, np.int32),
                             (program.offset, np.int64), (program.length, np.int64),
                             (program.arg, np.int64), (program.prot, np.int32),
                             (program.flags, np.int32), (program.id_length, np.int64)):
            out.write(np.ascontiguousarray(array, dtype).tobytes())
    return Path(path)


def build_c_library(folder: Path) -> ctypes.CDLL:
    """The same C loop as a shared library (c_replayer_main), to run it inside this process."""
    compiler = os.environ.get("CC", "cc")
    library = Path(folder) / "libc_replayer.so"
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-DC_REPLAYER_LIBRARY", "-o",
                    str(library), str(C_SOURCE)], check=True, capture_output=True, text=True)
    loaded = ctypes.CDLL(str(library))
    loaded.c_replayer_main.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
    return loaded


def run_c_in_process(library: ctypes.CDLL, program_path: Path, program, out_dir: Path) -> float:
    """Run the C loop inside this process (GIL released by ctypes); returns its events/s."""
    argv = (ctypes.c_char_p * 3)(b"c_replayer", str(program_path).encode(), str(out_dir).encode())
    if library.c_replayer_main(3, argv) != 0:
        raise RuntimeError("the in-process C replayer failed")
    loop_ns = int(np.fromfile(Path(out_dir) / "result.bin", np.int64, 1)[0])
    return program.events / (loop_ns / 1e9)


C_COUNTERS = ("live_bytes", "touch_bytes", "touch_ns", "checksum", "runtime_skipped",
              "thp_advice_failed")


def run_c(binary: Path, program_path: Path, program, out_dir: Path, stop_op: int | None = None) -> dict:
    """Run the C replayer on a dumped program; returns its loop time, counters and arrays."""
    argv = [str(binary), str(program_path), str(out_dir)]
    if stop_op is not None:
        argv.append(str(stop_op))
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    raw = (Path(out_dir) / "result.bin").read_bytes()
    n_ops, n_ids = program.ops, program.ids
    at = 0

    def take(dtype, count):
        nonlocal at
        array = np.frombuffer(raw, dtype, count, at)
        at += array.nbytes
        return array

    loop_ns = int(take(np.int64, 1)[0])
    counters = dict(zip(C_COUNTERS, take(np.int64, len(C_COUNTERS)).tolist()))
    result = {"loop_ns": loop_ns, "counters": counters, "latency": take(np.int64, n_ops),
              "err": take(np.int32, n_ops), "base": take(np.int64, n_ids),
              "id_state": take(np.int8, n_ids), "stdout": done.stdout.strip()}
    result["events_per_s"] = program.events / (loop_ns / 1e9) if loop_ns > 0 else None
    if stop_op is not None:
        result["maps"] = (Path(out_dir) / "maps.txt").read_text()
    return result


# ---------------------------------------------------------------- plain Python ctypes loop

def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_ssize_t
    libc.mmap.argtypes = [ctypes.c_ssize_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mremap.restype = ctypes.c_ssize_t
    libc.mremap.argtypes = [ctypes.c_ssize_t, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                            ctypes.c_ssize_t]
    for name in ("munmap", "madvise", "mprotect"):
        getattr(libc, name).restype = ctypes.c_int
    libc.munmap.argtypes = [ctypes.c_ssize_t, ctypes.c_size_t]
    libc.madvise.argtypes = libc.mprotect.argtypes = [ctypes.c_ssize_t, ctypes.c_size_t, ctypes.c_int]
    return libc


def python_replay(program, params: np.ndarray, events: int) -> dict:
    """The same calls as the engine for trace events [0, events), one Python statement at a time
    (kernel placement, touch none/pages, each call timed). Returns events and loop seconds; what
    the slice leaves mapped is released afterwards, outside the timing."""
    libc = _libc()
    mmap, munmap, mremap = libc.mmap, libc.munmap, libc.mremap
    madvise, mprotect = libc.madvise, libc.mprotect
    clock = time.monotonic_ns
    stop = program.ops_for_event(events) if events < program.events else program.ops
    code, mode = program.code[:stop].tolist(), program.mode[:stop].tolist()
    map_id, ref_id = program.map_id[:stop].tolist(), program.ref_id[:stop].tolist()
    offset, length = program.offset[:stop].tolist(), program.length[:stop].tolist()
    arg, prot, flags = program.arg[:stop].tolist(), program.prot[:stop].tolist(), program.flags[:stop].tolist()
    touch_pages = int(params[P_TOUCH]) == 2
    if int(params[P_TOUCH]) not in (0, 2):
        raise ValueError("the Python loop implements --touch none and pages only")
    thp_advice = int(params[P_THP_ADVICE])
    base = [0] * program.ids
    state = [0] * program.ids
    latency = [0] * stop
    err = [0] * stop

    def touch(address, size, write):
        if not touch_pages:
            return
        memory = (ctypes.c_ubyte * size).from_address(address)
        if write:
            for i in range(0, size, PAGE):
                memory[i] = 1
        else:
            total = 0
            for i in range(0, size, PAGE):
                total += memory[i]

    t_start = time.perf_counter()
    for i in range(stop):
        c, m, md = code[i], map_id[i], mode[i]
        if c == OP_MMAP or c == OP_MMAP_FIXED_IN:
            if c == OP_MMAP_FIXED_IN:
                parent = ref_id[i]
                if state[parent] & (ID_MAPPED | ID_TAINTED) != ID_MAPPED:
                    err[i] = -1
                    continue
                t0 = clock()
                p = mmap(base[parent] + offset[i], length[i], prot[i], flags[i] | 0x10, -1, 0)
                latency[i] = clock() - t0
                if p == -1:
                    state[parent] |= ID_TAINTED
            else:
                if md & PLACE_MASK:
                    raise ValueError("the Python loop implements policy 'kernel' only")
                t0 = clock()
                p = mmap(arg[i], length[i], prot[i], flags[i], -1, 0)
                latency[i] = clock() - t0
            if p == -1:
                err[i] = ctypes.get_errno()
                base[m] = 0
                continue
            base[m] = p
            state[m] = ID_MAPPED
            if md & THP_ADVISE and thp_advice >= 0:
                madvise(p, length[i], thp_advice)
            if md & (TOUCH_WRITE | TOUCH_READ):
                touch(p, length[i], md & TOUCH_WRITE)
            continue
        if c == OP_TOUCH:
            if state[m] & (ID_MAPPED | ID_TAINTED) == ID_MAPPED:
                touch(base[m] + offset[i], length[i], md & TOUCH_WRITE)
            continue
        if not state[m] & ID_MAPPED:
            err[i] = -1
            continue
        address, size = base[m] + offset[i], length[i]
        intact = not state[m] & ID_TAINTED
        if c == OP_MUNMAP:
            t0 = clock()
            r = munmap(address, size)
            latency[i] = clock() - t0
            if r:
                err[i] = ctypes.get_errno()
                state[m] |= ID_TAINTED
        elif c == OP_MREMAP:
            t0 = clock()
            p = mremap(address, size, arg[i], flags[i], 0)
            latency[i] = clock() - t0
            if p == -1:
                err[i] = ctypes.get_errno()
                if not flags[i] & 4:
                    munmap(address, size)
                continue
            base[ref_id[i]] = p
            state[ref_id[i]] = ID_MAPPED | (state[m] & ID_TAINTED)
            if arg[i] > size and md & (TOUCH_WRITE | TOUCH_READ) and intact:
                touch(p + size, arg[i] - size, md & TOUCH_WRITE)
        elif c == OP_MADVISE:
            t0 = clock()
            r = madvise(address, size, arg[i])
            latency[i] = clock() - t0
            if r:
                err[i] = ctypes.get_errno()
        else:
            t0 = clock()
            r = mprotect(address, size, prot[i])
            latency[i] = clock() - t0
            if r:
                err[i] = ctypes.get_errno()
                state[m] |= ID_TAINTED
            elif md & (TOUCH_WRITE | TOUCH_READ) and intact:
                touch(address, size, md & TOUCH_WRITE)
    loop_s = time.perf_counter() - t_start
    for m, piece_offset, piece_length in live_pieces(program, stop).tolist():
        if state[m] & ID_MAPPED:
            munmap(base[m] + piece_offset, piece_length)
    return {"events": events, "loop_s": loop_s, "events_per_s": events / loop_s,
            "failed": sum(1 for e in err if e)}


# ---------------------------------------------------------------- measurements

def speed_case(name, table, touch, binary, library, folder, repeats, python_events, alignment):
    """Engine, C (own process) and C (in this process) alternately on one trace and touch mode,
    then the Python loop; returns every run's events/s."""
    config = ReplayConfig(touch=touch)
    program = compile_trace(table, config)
    params = engine_params(config, alignment)
    slug = f"{name.split()[0]}-{touch}"
    program_path = dump_program(program, params, Path(folder) / f"{slug}.bin")
    out_dir = Path(folder) / f"{slug}.out"
    out_dir.mkdir(exist_ok=True)
    runs = {"engine": [], "c": [], "c_in_process": []}
    # Short cases get more runs (up to 5x) so that their best and median are not one scheduler
    # hiccup: about SHORT_CASE_S of engine loop time in all.
    first_s = program.events / run_program(program, config, alignment)["events_per_s"]
    repeats = max(repeats, min(5 * repeats, math.ceil(SHORT_CASE_S / max(first_s, 1e-6))))
    for r in range(repeats):
        # Alternate the order, so that none always runs on a machine warmed by another.
        for who in (("engine", "c", "c_in_process") if r % 2 == 0 else ("c_in_process", "c", "engine")):
            if who == "engine":
                runs[who].append(run_program(program, config, alignment)["events_per_s"])
            elif who == "c":
                runs[who].append(run_c(binary, program_path, program, out_dir)["events_per_s"])
            else:
                runs[who].append(run_c_in_process(library, program_path, program, out_dir))
    python = max((python_replay(program, params, min(python_events, program.events))
                  for _ in range(2)), key=lambda run: run["events_per_s"])
    return {"case": name, "touch": touch, "events": program.events, "ops": program.ops,
            "repeats": repeats, "program_bytes": program.nbytes(), **runs, "python": python}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_subprocess(argv) -> tuple[float, subprocess.CompletedProcess]:
    """Run argv to completion; its wall time and result (``done.cpu_s``: its CPU time)."""
    cpu0 = children_cpu_s()
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    elapsed = time.perf_counter() - t0
    done.cpu_s = children_cpu_s() - cpu0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed: {done.stderr.strip()[-500:]}")
    return elapsed, done


BREAKDOWN_SCRIPT = """
import json, sys, time
clock = time.process_time  # CPU time: other jobs on the machine inflate it far less than wall time
t0 = clock()
import replay.running.runs
from replay.running.config import ReplayConfig
from replay.engine.engine import EngineState
from replay.running.session import engine_params
t1 = clock()
prepared = replay.running.runs.Prepared(sys.argv[1], ReplayConfig())
t2 = clock()
state = EngineState(prepared.program, engine_params(prepared.config, prepared.alignment))
state.run(0, 0)
t3 = clock()
print(json.dumps({"imports_s": t1 - t0, "read_probe_compile_s": t2 - t1, "jit_load_s": t3 - t2}))
"""


# `mmreplay` as its console script runs it, plus the import time measured in the same process.
TIMED_MMREPLAY = (
    "import atexit, os, sys, time\n"
    # At exit: the main thread's CPU and run-queue wait times since it started (schedstat, ns).
    "atexit.register(lambda: sys.stderr.write("
    "'schedstat=' + ','.join(open('/proc/self/schedstat').read().split()[:2]) + '\\n'))\n"
    "t0, cpu0 = time.perf_counter(), time.process_time()\n"
    f"{COMMAND_IMPORTS}\n"
    "sys.stderr.write(f'imports_s={time.perf_counter() - t0} "
    "imports_cpu_s={time.process_time() - cpu0}\\n')\n"
    "from replay.cli import main\n"
    "sys.argv[0] = 'mmreplay'\n"
    "sys.exit(main())\n"
)


def startup(folder: Path, events: int = 2000, warm_runs: int = 7) -> dict:
    """`mmreplay replay` on a small trace in fresh processes; figures from the runs after the first.

    engine set-up = command wall time (process start to exit, seen from the parent) - import time
    of the command's modules (measured inside that same process) - engine loop time (the result's
    engine_s). What remains is interpreter start and exit, reading, checking and compiling the
    trace, probing the kernel, loading the cached JIT code, the /proc samples, building and
    printing the result. The first run may compile and cache the JIT code; runs 2..1+warm_runs
    must not, and their median is reported (the machine may be shared: one run alone is noisy).
    """
    trace = Path(folder) / "small.arrow"
    write_trace(syscall_bound_trace(events), trace)
    result_path = Path(folder) / "small-result.json"
    argv = [sys.executable, "-c", TIMED_MMREPLAY, "replay", str(trace), "--no-progress",
            "-o", str(result_path)]
    first_wall_s = timed_subprocess(argv)[0]
    walls, imports, engines, setups, cpu_setups, blocked, breakdowns = [], [], [], [], [], [], []
    for _ in range(warm_runs):
        wall, done = timed_subprocess(argv)
        imported = float(done.stderr.split("imports_s=")[1].split()[0])
        imported_cpu = float(done.stderr.split("imports_cpu_s=")[1].split()[0])
        engine_s = sum(run["engine_s"] for run in json.loads(result_path.read_text())["runs"])
        walls.append(wall)
        imports.append(imported)
        engines.append(engine_s)
        setups.append(wall - imported - engine_s)
        # The same difference in CPU time, which other work on the machine inflates far less.
        cpu_setups.append(done.cpu_s - imported_cpu - engine_s)
        running_ns, queued_ns = map(int, done.stderr.split("schedstat=")[1].split()[0].split(","))
        blocked.append(wall - (running_ns + queued_ns) / 1e9)
        _, done = timed_subprocess([sys.executable, "-c", BREAKDOWN_SCRIPT, str(trace)])
        breakdowns.append(json.loads(done.stdout))
    median = statistics.median
    return {"events": events, "first_wall_s": first_wall_s, "runs": warm_runs,
            "wall_s": median(walls), "imports_s": median(imports), "engine_s": median(engines),
            "setup_s": median(setups), "setup_min_s": min(setups), "setup_max_s": max(setups),
            "setup_cpu_s": median(cpu_setups), "blocked_s": median(blocked),
            "breakdown": {key: median(b[key] for b in breakdowns) for key in breakdowns[0]}}


# ---------------------------------------------------------------- report

def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def speed_table(cases: list[dict], repeats: int) -> str:
    best, median = max, statistics.median
    lines = [
        "Replay speed. events/s = trace events / seconds inside the replay loop. Engine = "
        "`mmreplay replay`'s run_program; C = benchmarks/c_replayer.c (cc -O2) in its own process; "
        f"they run alternately, at least {repeats} runs each (more for short cases, see runs): "
        "best run, median run in brackets.",
        "",
        f"{'case':<28} {'touch':<6} {'events':>7}  {'engine ev/s':>12} {'C ev/s (baseline)':>18}  "
        f"{'engine/C best':>13} {'(median)':>9} {'runs':>5}  target >= {TARGET_C_RATIO}",
    ]
    for case in cases:
        ratio = best(case["engine"]) / best(case["c"])
        lines.append(
            f"{case['case']:<28} {case['touch']:<6} {case['events']:>7}  "
            f"{fmt_rate(best(case['engine'])):>12} {fmt_rate(best(case['c'])):>18}  {ratio:>12.3f}x "
            f"{median(case['engine']) / median(case['c']):>8.3f}x {case['repeats']:>5}  "
            f"{'yes' if ratio >= TARGET_C_RATIO else 'NO'}")
    lines += [
        "",
        "Other baselines: the same C loop loaded into this Python process (same address-space "
        "environment as the engine; best run) and a plain Python ctypes loop doing the same calls "
        "(best of 2).",
        f"{'case':<28} {'touch':<6}  {'C in-process ev/s':>17} {'engine/C in-process':>19}  "
        f"{'Python ev/s':>11} {'Python events timed':>19} {'engine/Python':>13}",
    ]
    for case in cases:
        python = case["python"]
        lines.append(
            f"{case['case']:<28} {case['touch']:<6}  {fmt_rate(best(case['c_in_process'])):>17} "
            f"{best(case['engine']) / best(case['c_in_process']):>18.3f}x  "
            f"{fmt_rate(python['events_per_s']):>11} {python['events']:>19} "
            f"{best(case['engine']) / python['events_per_s']:>12.1f}x")
    return "\n".join(lines)


def startup_text(s: dict) -> str:
    b = s["breakdown"]
    idle = s["setup_cpu_s"] + s["blocked_s"]  # what set-up would take with a CPU to itself

    def verdict(value):
        return "yes" if value <= TARGET_SETUP_S else "NO"

    return "\n".join([
        f"Start-up: `mmreplay replay` on a {s['events']}-event trace in fresh processes; first run "
        f"{s['first_wall_s']:.3f} s wall, then the median of {s['runs']} runs with the JIT cache warm:",
        f"  command wall time                                  {s['wall_s']:.3f} s",
        f"  - imports of the command's modules (same process)  {s['imports_s']:.3f} s",
        f"  - engine loop (result engine_s)                    {s['engine_s']:.4f} s",
        f"  = engine set-up (median of per-run differences)    {s['setup_s']:.3f} s  "
        f"(min {s['setup_min_s']:.3f} s, max {s['setup_max_s']:.3f} s; "
        f"target <= {TARGET_SETUP_S} s: {verdict(s['setup_s'])})",
        f"  without waiting for a CPU (other jobs): set-up CPU time {s['setup_cpu_s']:.3f} s "
        f"(user + system, loop at its wall time) + {s['blocked_s']:.3f} s the command was neither "
        f"running nor queued (exec, end of exit, the parent's own wake-up) = {idle:.3f} s "
        f"(target <= {TARGET_SETUP_S} s: {verdict(idle)})",
        f"  of which (CPU time, separate instrumented fresh process): read+probe+compile the trace "
        f"{b['read_probe_compile_s']:.3f} s, JIT cache load {b['jit_load_s']:.3f} s; the rest is "
        "interpreter start and exit, /proc samples and perf counters around the loop, result, "
        f"report and click (imports there {b['imports_s']:.3f} s)",
    ])


def memory_text(cases: list[dict]) -> str:
    lines = [f"Memory: op program bytes per trace event (target <= {TARGET_BYTES_PER_EVENT} B/event):"]
    seen = set()
    for case in cases:
        if case["case"] in seen:
            continue
        seen.add(case["case"])
        per_event = case["program_bytes"] / case["events"]
        lines.append(f"  {case['case']:<28} {per_event:6.1f} B/event ({case['program_bytes']} B for "
                     f"{case['events']} events, {case['ops']} ops)  "
                     f"{'yes' if per_event <= TARGET_BYTES_PER_EVENT else 'NO'}")
    return "\n".join(lines)


def load_average() -> float:
    return os.getloadavg()[0]


def host_line(load_start: float, load_end: float) -> str:
    host = host_metadata()
    thp = host.get("thp", {})
    enabled = thp.get("enabled") if isinstance(thp, dict) else thp
    return (f"Host: Linux {host.get('kernel')}, {host.get('cpu_model')}, "
            f"{os.cpu_count()} CPUs, THP enabled={enabled}; C compiler: "
            f"{os.environ.get('CC', 'cc')} -O2; 1-minute load average {load_start:.2f} at start, "
            f"{load_end:.2f} at end (other work on the machine makes every figure noisier)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs of engine and of C per case")
    parser.add_argument("--events", type=int, default=200_000, help="syscall-bound trace events")
    parser.add_argument("--buffers", type=int, default=2000, help="fault-bound trace buffers")
    parser.add_argument("--python-events", type=int, default=50_000,
                        help="events the (slow) Python loop replays per case")
    parser.add_argument("--quick", action="store_true", help="small traces, 3 repeats")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.events, args.buffers, args.python_events = 3, 40_000, 400, 10_000
    if shutil.which(os.environ.get("CC", "cc")) is None:
        print("no C compiler (cc) on PATH: the C reference cannot be built", file=sys.stderr)
        return 2
    load_start = load_average()
    alignment = probe_kernel_alignment()
    traces = [("syscall-bound 64 KiB pairs", syscall_bound_trace(args.events)),
              ("fault-bound 1-4 MiB buffers", fault_bound_trace(args.buffers))]
    with tempfile.TemporaryDirectory(prefix="mmreplay-bench-") as folder:
        binary = build_c_replayer(Path(folder))
        library = build_c_library(Path(folder))
        # Warm-up: load (or compile and cache) the engine's JIT code before anything is timed.
        run_program(compile_trace(syscall_bound_trace(200), ReplayConfig()), ReplayConfig(), alignment)
        cases = [speed_case(name, table, touch, binary, library, folder, args.repeat,
                            args.python_events, alignment)
                 for name, table in traces for touch in ("none", "pages")]
        setup = startup(Path(folder))
    print(host_line(load_start, load_average()))
    print(speed_table(cases, args.repeat))
    print()
    print(startup_text(setup))
    print()
    print(memory_text(cases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
