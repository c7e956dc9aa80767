"""Fidelity: the replay issues the trace's calls, as strace sees them.

1. The compiler turns each replayed trace row into ops of the same kind, length, protection and
   flags (apart from the documented changes: pieces of partial calls, MAP_FIXED relocation).
2. `mmreplay replay` run under `strace -f` really makes those calls, in order (Python's own calls
   interleave, so the program's calls must form a subsequence of the log).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from processes import PATIENCE_S
from pathlib import Path

import numpy as np
import pytest

from replay.engine.compile import KNOWN_MAP_BITS, compile_trace
from replay.running.config import ReplayConfig
from replay.engine.program import (CLEANUP, OP_HEAP_FREE, OP_HEAP_GROW, OP_HEAP_RESERVE, OP_MADVISE,
                            OP_MMAP, OP_MMAP_FIXED_IN, OP_MPROTECT, OP_MREMAP, OP_MUNMAP,
                            PLACE_ALIGNED, PLACE_MASK)
from traces import read_trace
from traces.format import column_np, op_names
from traces.schema import MAP_ANONYMOUS, MAP_FIXED, OPS
from traces.summary import page_round

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed "
                                "(.ci/run installs it)")

WORKLOAD = r"""
import ctypes, mmap, threading
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MIB = 1 << 20
p = libc.mmap(None, 3 * MIB, 3, 0x22, -1, 0)
libc.madvise(p, 3 * MIB, 14)                    # MADV_HUGEPAGE
libc.mprotect(p + MIB, MIB, 1)                  # split by protection
q = libc.mremap(p + 2 * MIB, MIB, 5 * MIB, 1)   # grow (and maybe move) the tail
libc.munmap(p, MIB)                             # partial munmap: the head
libc.munmap(p + MIB, MIB)
libc.munmap(q, 5 * MIB)
def worker(n):
    bufs = [mmap.mmap(-1, (n + 1) * MIB) for _ in range(3)]
    for b in bufs:
        b.close()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
"""

ENGINE_TO_TRACE = {OP_MMAP: "mmap", OP_MMAP_FIXED_IN: "mmap", OP_MUNMAP: "munmap",
                   OP_MREMAP: "mremap", OP_MADVISE: "madvise", OP_MPROTECT: "mprotect",
                   OP_HEAP_RESERVE: "brk", OP_HEAP_GROW: "brk", OP_HEAP_FREE: "heap free"}
HEAP_RESERVATION_FLAGS = 0x02 | MAP_ANONYMOUS | 0x4000  # private, anonymous, MAP_NORESERVE


def strace_log(tmp_path: Path, argv: list[str], name: str) -> Path:
    log = tmp_path / name
    subprocess.run(["strace", "-f", "-qq", "-o", str(log), "-e",
                    "trace=mmap,munmap,mremap,madvise,mprotect,brk", *argv], check=True,
                   capture_output=True, timeout=PATIENCE_S)
    return log


def imported(tmp_path: Path, log: Path) -> Path:
    out = log.with_suffix(".arrow")
    subprocess.run([sys.executable, "-m", "replay.cli", "import", str(log), "-o", str(out)],
                   check=True, capture_output=True, timeout=PATIENCE_S)
    return out


@pytest.fixture(scope="module")
def real_trace(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fidelity")
    log = strace_log(tmp, [sys.executable, "-c", WORKLOAD], "workload.log")
    return imported(tmp, log)


def visible_calls(program, stop: int) -> list[tuple]:
    """What strace shows for ops [0, stop) under --policy kernel --touch none."""
    calls = []
    for i in range(stop):
        code = int(program.code[i])
        length = int(program.length[i])
        if code in (OP_MMAP, OP_MMAP_FIXED_IN):
            # An emulated THP placement (file mappings keep their recorded alignment) maps with
            # MAP_FIXED inside the PROT_NONE window it claimed first.
            fixed = code == OP_MMAP_FIXED_IN or int(program.mode[i]) & PLACE_MASK == PLACE_ALIGNED
            flags = int(program.flags[i]) | (MAP_FIXED if fixed else 0)
            calls.append(("mmap", length, int(program.prot[i]), flags))
        elif code == OP_MUNMAP:
            calls.append(("munmap", length))
        elif code == OP_MREMAP:
            calls.append(("mremap", length, int(program.arg[i]), int(program.flags[i])))
        elif code == OP_MADVISE:
            calls.append(("madvise", length, int(program.arg[i])))
        elif code == OP_MPROTECT:
            calls.append(("mprotect", length, int(program.prot[i])))
        # The brk heap: its reservation (2 MiB more, trimmed by munmaps strace also shows),
        # growth in place, and a fresh piece of reservation over what it gives back.
        elif code == OP_HEAP_RESERVE:
            calls.append(("mmap", length + 2 * 1024 * 1024, 0, HEAP_RESERVATION_FLAGS))
        elif code == OP_HEAP_GROW:
            calls.append(("mprotect", length, 3))
        elif code == OP_HEAP_FREE:
            calls.append(("mmap", length, 0, HEAP_RESERVATION_FLAGS | MAP_FIXED))
    return calls


def logged_calls(table) -> list[tuple]:
    codes = op_names(table)
    length = page_round(column_np(table, "length")).tolist()
    new_length = page_round(column_np(table, "new_length")).tolist()
    prot, flags = column_np(table, "prot").tolist(), column_np(table, "flags").tolist()
    advice, errno = column_np(table, "advice").tolist(), column_np(table, "errno").tolist()
    calls = []
    for row, code in enumerate(codes.tolist()):
        name = OPS[code]
        if errno[row]:
            continue
        if name == "mmap":
            calls.append(("mmap", length[row], prot[row], flags[row]))
        elif name == "munmap":
            calls.append(("munmap", length[row]))
        elif name == "mremap":
            calls.append(("mremap", length[row], new_length[row], flags[row]))
        elif name == "madvise":
            calls.append(("madvise", length[row], advice[row]))
        elif name == "mprotect":
            calls.append(("mprotect", length[row], prot[row]))
    return calls


def is_subsequence(needle: list, haystack: list) -> tuple[bool, int]:
    """Greedy earliest matching; returns (matched all, how many matched)."""
    position = 0
    for matched, item in enumerate(needle):
        while position < len(haystack) and haystack[position] != item:
            position += 1
        if position == len(haystack):
            return False, matched
        position += 1
    return True, len(needle)


def bundled_real_traces() -> list[Path]:
    data = Path(__file__).resolve().parent.parent / "traces" / "data"
    return sorted(p for p in data.glob("*.arrow") if read_trace(p).schema.metadata and
                  b'"source": "strace"' in read_trace(p).schema.metadata[b"mmreplay"])


def check_compiled_rows_match_trace(table, program) -> None:
    codes = op_names(table).tolist()
    length = page_round(column_np(table, "length")).tolist()
    prot, flags = column_np(table, "prot").tolist(), column_np(table, "flags").tolist()
    fd = column_np(table, "fd", -1).tolist()
    rows = program.trace_row[: program.cleanup_start]
    first = np.searchsorted(rows, np.arange(table.num_rows), side="left")
    last = np.searchsorted(rows, np.arange(table.num_rows), side="right")
    for row in range(table.num_rows):
        ops = range(int(first[row]), int(last[row]))
        if not len(ops):
            continue
        name = OPS[codes[row]]
        kinds = {ENGINE_TO_TRACE[int(program.code[i])] for i in ops}
        if name == "mmap":
            # An mmap may first release what the trace says it replaced (MAP_FIXED, overlap).
            assert kinds <= {"mmap", "munmap"}, (row, kinds)
            made = [i for i in ops if ENGINE_TO_TRACE[int(program.code[i])] == "mmap"]
            assert len(made) == 1
            i = made[0]
            assert int(program.length[i]) == length[row]
            assert int(program.prot[i]) == prot[row] & 7
            anon = bool(flags[row] & MAP_ANONYMOUS) or fd[row] < 0
            expected_flags = (flags[row] | MAP_ANONYMOUS) & (KNOWN_MAP_BITS | (0x3F << 26))
            assert int(program.flags[i]) == expected_flags, (row, hex(flags[row]))
            assert anon or program.notes.get("file_mmap_as_anon")
        elif name == "mremap":
            assert kinds <= {"mremap", "munmap", "mmap", "madvise", "heap free"}, (row, kinds)
        elif name == "brk":
            # A brk grows the heap (after its reservation, the first time) or gives part of it
            # back; growing over a mapping the trace still had releases that mapping.
            assert kinds <= {"brk", "heap free", "munmap"}, (row, kinds)
        elif name == "munmap":
            assert kinds <= {"munmap", "heap free"}, (row, kinds)
            assert sum(int(program.length[i]) for i in ops) <= length[row]
        else:
            assert kinds == {name}, (row, name, kinds)
            assert sum(int(program.length[i]) for i in ops) <= length[row]


def test_compiled_program_follows_the_recorded_calls(real_trace):
    table = read_trace(real_trace)
    program = compile_trace(table, ReplayConfig(policy="kernel", touch="none"))
    check_compiled_rows_match_trace(table, program)
    # The workload's own calls are all there: mremap, madvise, mprotect, partial munmaps.
    codes = set(program.code[: program.cleanup_start].tolist())
    assert {OP_MMAP, OP_MUNMAP, OP_MREMAP, OP_MADVISE, OP_MPROTECT} <= codes


@pytest.mark.parametrize("trace_name", ["recorded-workload"] + [p.name for p in bundled_real_traces()])
def test_replay_under_strace_makes_the_programs_calls(real_trace, tmp_path, trace_name):
    trace = real_trace if trace_name == "recorded-workload" else \
        Path(__file__).resolve().parent.parent / "traces" / "data" / trace_name
    table = read_trace(trace)
    program = compile_trace(table, ReplayConfig(policy="kernel", touch="none"))
    check_compiled_rows_match_trace(table, program)
    log = strace_log(tmp_path, [sys.executable, "-m", "replay.cli", "replay", str(trace),
                                "--policy", "kernel", "--touch", "none", "--no-progress"],
                     "replay.log")
    seen = logged_calls(read_trace(imported(tmp_path, log)))
    expected = visible_calls(program, program.cleanup_start)
    ok, matched = is_subsequence(expected, seen)
    assert ok, f"call {matched} of {len(expected)} not found in order: {expected[matched]}"
    # And the cleanup releases whatever the trace left mapped.
    ok, _ = is_subsequence(visible_calls(program, program.ops)[program.cleanup_start:], seen)
    assert ok
    assert (program.trace_row[program.cleanup_start:] == CLEANUP).all()
