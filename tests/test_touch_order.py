"""Touch order (issue 19, item 1): memory is touched when the workload would first use it.

A real program recorded with `mmreplay record` maps 16 MiB, advises it MADV_HUGEPAGE and writes
it. Its replay under `--thp as-recorded` must give the AnonHugePages the program itself saw in
its smaps: the advice comes before the first fault, as it did when recorded (touching inside the
mmap op gave 0).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replay.engine.compile import compile_trace
from replay.running.config import ReplayConfig
from replay.engine.program import (OP_MADVISE, OP_MMAP, OP_MPROTECT, OP_MUNMAP, OP_TOUCH, TOUCH_READ,
                            TOUCH_WRITE)
from strategies import madvise, mmap, mprotect, munmap, table_from_rows

C_PROGRAM = Path(__file__).resolve().parent / "data" / "c" / "advised_write.c"
MIB = 1 << 20
A, B = 0x7F00_0000_0000, 0x7F10_0000_0000

needs_tools = pytest.mark.skipif(shutil.which("strace") is None or shutil.which("cc") is None,
                                 reason="needs strace and a C compiler (.ci/run installs both)")


def mmreplay(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replay.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """The C program's trace and what its own smaps said about its advised mapping."""
    folder = tmp_path_factory.mktemp("touch-order")
    binary = folder / "advised_write"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(C_PROGRAM)], check=True)
    trace = folder / "advised.arrow"
    done = mmreplay("record", "-o", trace, "--", binary)
    assert done.returncode == 0, done.stderr
    seen = re.search(r"anon_huge_kb=(\d+) rss_kb=(\d+)", done.stdout + done.stderr)
    assert seen, done.stdout + done.stderr
    return trace, int(seen.group(1)) * 1024, folder


@needs_tools
def test_a_recorded_madvise_hugepage_before_use_gives_the_huge_pages_the_program_got(recorded):
    trace, program_anon_huge_bytes, folder = recorded
    assert program_anon_huge_bytes > 0, "the recorded program itself got huge pages"
    out = folder / "replay.json"
    done = mmreplay("replay", trace, "--thp", "as-recorded", "-o", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    run = json.loads(out.read_text())["runs"][0]
    # The trace's only madvise is replayed, and the replay's own mappings got exactly the huge
    # pages the program had in its smaps (measured while the mapping was live in both).
    assert run["ops"]["madvise"] == {**run["ops"]["madvise"], "count": 1, "failed": 0}
    assert run["peak_anon_huge_bytes"] == program_anon_huge_bytes


def test_the_touch_comes_after_the_threads_madvise_and_mprotect_calls():
    rows = [mmap(A, 4 * MIB, tid=1),                 # 0
            mmap(B, 2 * MIB, tid=2),                 # 1: another thread
            madvise(A, 4 * MIB, 14, tid=1),          # 2: MADV_HUGEPAGE before use
            mprotect(A, MIB, 1, tid=1),              # 3: read-only head
            munmap(B, 2 * MIB, tid=1),               # 4: thread 1's next call that is not
            #                                             madvise/mprotect: A is used first
            ]
    program = compile_trace(table_from_rows(rows), ReplayConfig(touch="pages"))
    trace_ops = program.cleanup_start
    order = [(int(program.code[i]), int(program.trace_row[i])) for i in range(trace_ops)]
    touches = [i for i in range(trace_ops) if program.code[i] == OP_TOUCH]
    assert order.index((OP_MADVISE, 2)) < touches[0] and order.index((OP_MPROTECT, 3)) < touches[0]
    # A is touched with the protection each part has by then (the read-only head is read, the
    # rest written), before the munmap of B; that munmap (of another thread's mapping) first
    # has B touched, by B's own thread.
    a_touch = [(int(program.offset[i]), int(program.length[i]), int(program.mode[i]))
               for i in touches if program.arg[i] == 0]
    assert a_touch == [(0, MIB, TOUCH_READ), (MIB, 3 * MIB, TOUCH_WRITE)]
    b_touch = [i for i in touches if program.arg[i] == 1]
    assert len(b_touch) == 1 and b_touch[0] < order.index((OP_MUNMAP, 4))
    assert not [i for i in range(trace_ops) if program.code[i] == OP_MMAP
                and program.mode[i] & TOUCH_WRITE], "nothing is touched inside these mmaps"


def test_a_touch_right_after_its_call_is_folded_into_it():
    rows = [mmap(A, 4 * MIB), mmap(B, 2 * MIB), munmap(A, 4 * MIB), munmap(B, 2 * MIB)]
    program = compile_trace(table_from_rows(rows), ReplayConfig(touch="pages"))
    # Each mmap is followed by the thread's next mmap/munmap: same program as touching inside.
    assert OP_TOUCH not in program.code.tolist()
    mmaps = [i for i in range(program.ops) if program.code[i] == OP_MMAP]
    assert all(program.mode[i] & TOUCH_WRITE for i in mmaps)
