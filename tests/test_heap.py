"""The brk heap (issue 19, item 2): replayed as a region of the replay's own that grows upward in
place and shrinks as brk does, touched like any other memory, shown in results and layout.

The reference is a real C program recorded with `mmreplay record`: it grows its heap, advises it
MADV_HUGEPAGE, writes it, shrinks and grows it again, and prints the page faults of its writes
and the AnonHugePages of its [heap] VMAs. The replay of its trace must take the same faults and
get the same huge pages (the heap keeps the recorded start's offset from a 2 MiB boundary).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from replay.engine.compile import compile_trace
from replay.running.config import ReplayConfig
from replay.running.layout import capture_layout
from replay.engine.program import OP_HEAP_FREE, OP_HEAP_GROW, OP_HEAP_RESERVE
from replay.running.runs import Prepared
from replay.running.session import run_program
from strategies import brk, madvise, mmap, munmap, table_from_rows
from traces import read_trace, write_trace

DATA = Path(__file__).resolve().parent / "data"
BUNDLED_TORCH = Path(__file__).resolve().parent.parent / "traces" / "data" / "bert-torch.arrow"
MIB, PAGE = 1 << 20, 4096
HEAP = 0x5555_5560_3000  # 0x3000 past a 2 MiB boundary
MADV_HUGEPAGE = 14


def mmreplay(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replay.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("strace") is None or shutil.which("cc") is None,
                    reason="needs strace and a C compiler (.ci/run installs both)")
def test_a_recorded_heap_takes_the_faults_and_huge_pages_the_program_took(tmp_path):
    binary = tmp_path / "heap_advised"
    subprocess.run(["cc", "-O2", "-o", str(binary), str(DATA / "c" / "heap_advised.c")], check=True)
    trace = tmp_path / "heap.arrow"
    done = mmreplay("record", "-o", trace, "--", binary)
    assert done.returncode == 0, done.stderr
    seen = re.search(r"grown=(\d+) minflt=(\d+) anon_huge_kb=(\d+)", done.stdout + done.stderr)
    assert seen, done.stdout + done.stderr
    written, program_faults, program_huge = (int(seen.group(1)), int(seen.group(2)),
                                             int(seen.group(3)) * 1024)
    assert program_huge > 0, "the recorded program itself got huge pages on its heap"
    out = tmp_path / "r.json"
    done = mmreplay("replay", trace, "-o", out, "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "brk heap peak MiB" in done.stdout
    run = json.loads(out.read_text())["runs"][0]
    heap = run["heap"]
    # The replay touches all heap growth; the program measured the faults of its two loops, and
    # grew its heap once more afterwards (stdio's buffer): those pages are one fault each.
    assert heap["minflt"] == program_faults + (heap["grown_bytes"] - written) // PAGE
    assert heap["end_anon_huge_bytes"] == program_huge
    assert run["ops"]["brk"]["count"] >= 4 and "brk" not in run["skipped"]


def test_the_heap_grows_in_place_as_one_vma_and_shrinking_frees_it(tmp_path):
    rows = [brk(0, HEAP),                               # 0: start of the heap
            brk(HEAP + 8 * MIB, HEAP + 8 * MIB),       # 1
            mmap(0x7F00_0000_0000, 4 * MIB),            # 2: unrelated mapping
            brk(HEAP + 20 * MIB, HEAP + 20 * MIB),     # 3
            brk(HEAP + 6 * MIB, HEAP + 6 * MIB),       # 4: shrink
            munmap(0x7F00_0000_0000, 4 * MIB),          # 5
            brk(HEAP + 10 * MIB, HEAP + 10 * MIB)]     # 6
    path = write_trace(table_from_rows(rows), tmp_path / "heap.arrow")
    layouts = [capture_layout(str(path), ReplayConfig(), at=str(event)) for event in (1, 3, 4, 6)]
    heaps = [layout.heap for layout in layouts]
    # Each replay (up to its event) reserves the largest heap it will need, once; growing and
    # shrinking happen in place, in one VMA, with the pages shrinking gave back really gone.
    assert [h["bytes"] for h in heaps] == [8 * MIB, 20 * MIB, 6 * MIB, 10 * MIB]
    assert [h["vmas"] for h in heaps] == [1, 1, 1, 1]
    assert [h["rss_bytes"] for h in heaps] == [8 * MIB, 20 * MIB, 6 * MIB, 10 * MIB]
    assert [h["reserved_bytes"] for h in heaps] == [8 * MIB, 20 * MIB, 20 * MIB, 20 * MIB]
    assert all(h["start"] % (2 * MIB) == HEAP % (2 * MIB) for h in heaps), "recorded alignment"
    # The reservation above the heap is not replay memory; its VMA is named in the JSON.
    owners = {v["owner"] for v in layouts[2].as_dict()["vmas"]}
    assert "heap reservation" in owners
    # The replay's heap is a region of its own, not the replay process's [heap].
    prepared = Prepared(path, ReplayConfig())
    seen = {}

    def on_stop(state, pieces):
        with open("/proc/self/maps") as maps:
            seen["line"] = [line for line in maps
                            if int(line.split("-")[0], 16) == state.base[prepared.program.heap_id]]

    run_program(prepared.program, prepared.config, prepared.alignment,
                stop_op=prepared.program.cleanup_start, on_stop=on_stop)
    assert len(seen["line"]) == 1 and "[heap]" not in seen["line"][0], seen


def test_the_traces_advice_on_the_heap_is_replayed_and_forgotten_when_it_shrinks(tmp_path):
    rows = [brk(0, HEAP), brk(HEAP + 16 * MIB, HEAP + 16 * MIB),
            madvise(HEAP, 16 * MIB, MADV_HUGEPAGE),
            brk(HEAP + 4 * MIB, HEAP + 4 * MIB),        # the advised part beyond 4 MiB goes
            brk(HEAP + 16 * MIB, HEAP + 16 * MIB)]      # regrown: not advised, as with brk
    path = write_trace(table_from_rows(rows), tmp_path / "advised.arrow")
    advised = capture_layout(str(path), ReplayConfig(), at="2").heap
    regrown = capture_layout(str(path), ReplayConfig(), at="end").heap
    assert advised["anon_huge_bytes"] >= 12 * MIB     # whole 2 MiB blocks of 16 MiB, advised
    assert 0 < regrown["anon_huge_bytes"] <= 2 * MIB  # only the advised 4 MiB head keeps any
    assert regrown["vmas"] == 2                       # advised head + plain rest, as brk gives


def test_the_bundled_pytorch_trace_replays_its_heap(run_cli, tmp_path):
    table = read_trace(BUNDLED_TORCH)
    program = compile_trace(table, ReplayConfig())
    codes = program.code.tolist()
    assert codes.count(OP_HEAP_RESERVE) == 1
    assert codes.count(OP_HEAP_GROW) == 980 and codes.count(OP_HEAP_FREE) >= 24
    assert program.heap_peak_bytes == 480_669_696      # 458.40 MiB above the first break
    assert "brk" not in program.skipped
    info = run_cli("info", BUNDLED_TORCH)
    assert "brk heap     458.40 MiB at most above the first break" in info.output
    out = tmp_path / "r.json"
    done = run_cli("replay", BUNDLED_TORCH, "--touch", "none", "-o", out)
    assert done.exit_code == 0, done.output
    assert re.search(r"brk heap peak MiB\s+458\.4", done.output)
    run = json.loads(out.read_text())["runs"][0]
    assert run["heap"]["peak_bytes"] == 480_669_696 and run["heap"]["vmas_at_peak"] == 1
    assert run["ops"]["brk"]["count"] == 1004 and run["ops"]["brk"]["failed"] == 0
    assert np.isclose(run["heap"]["grown_bytes"], 1.59 * (1 << 30), rtol=0.01)


def test_a_slice_puts_the_heap_back_where_the_parent_had_it(tmp_path):
    # `mmreplay slice` re-creates the break at the cut with synthetic brk rows (brk(0) -> the
    # first break, then brk(the current break)): the replay of the slice ends with the heap the
    # replay of the whole trace ends with.
    from traces.slice import slice_trace
    rows = [brk(0, HEAP), brk(HEAP + 12 * MIB, HEAP + 12 * MIB),
            mmap(0x7F00_0000_0000, 4 * MIB),
            brk(HEAP + 6 * MIB, HEAP + 6 * MIB),           # the cut comes after this shrink
            munmap(0x7F00_0000_0000, 4 * MIB),
            brk(HEAP + 10 * MIB, HEAP + 10 * MIB)]
    table = table_from_rows(rows)
    whole = write_trace(table, tmp_path / "whole.arrow")
    part = write_trace(slice_trace(table, events=(4, None)), tmp_path / "part.arrow")
    heaps = [capture_layout(str(path), ReplayConfig(), at="end").heap for path in (whole, part)]
    assert heaps[0]["bytes"] == heaps[1]["bytes"] == 10 * MIB
    assert heaps[0]["vmas"] == heaps[1]["vmas"] == 1
    assert heaps[1]["start"] % (2 * MIB) == HEAP % (2 * MIB)
