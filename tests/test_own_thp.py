"""The replay's own THP figures (issue 19, item 5): another process's huge-page faults during a
replay change the system-wide /proc/vmstat deltas, never the replay's own figures (smaps of its
mappings, smaps_rollup, its memory cgroup).

The other process is real: it maps 64 MiB, advises it MADV_HUGEPAGE and writes it while the
replay runs, and reports the huge pages its own smaps shows. The replay waits for that report
(a condition, not a time) before it goes on.
"""

from __future__ import annotations

import ctypes
import mmap as mmap_module
import subprocess
import sys

import numpy as np
import pytest

from replay.measure.cgroup import memory_cgroup_dir
from replay.running.config import ReplayConfig
from replay.measure.probes import layout_metrics, own_page_bytes, read_rollup, read_smaps
from replay.running.runs import Prepared
from replay.running.session import run_program
from tracegen import buffers_trace
from traces import write_trace

MIB = 1 << 20

OTHER_PROCESS = r"""
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
sys.stdin.readline()                                   # wait until the replay is under way
size = 64 << 20
p = libc.mmap(None, size + (2 << 20), 3, 0x22, -1, 0)  # private anonymous
start = (p + (2 << 20) - 1) // (2 << 20) * (2 << 20)
libc.madvise(start, size, 14)                          # MADV_HUGEPAGE
ctypes.memset(start, 1, size)
huge = 0
for line in open("/proc/self/smaps"):
    if line.startswith("AnonHugePages:"):
        huge += int(line.split()[1]) * 1024
print(huge, flush=True)
sys.stdin.readline()                                   # keep the huge pages until told
"""


def replay_beside_a_thp_user(trace_path, thp: str) -> tuple[dict, int]:
    """One run of the trace; at its first chunk boundary another process faults huge pages.
    Returns the run and the other process's AnonHugePages."""
    other = subprocess.Popen([sys.executable, "-c", OTHER_PROCESS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    seen = {}

    def on_progress(done):
        if "huge" not in seen:
            other.stdin.write("go\n")
            other.stdin.flush()
            seen["huge"] = int(other.stdout.readline())

    try:
        prepared = Prepared(trace_path, ReplayConfig(thp=thp))
        # This process may hold huge pages of its own already (pyarrow's allocator advises).
        run = run_program(prepared.program, prepared.config, prepared.alignment,
                          on_progress=on_progress)
    finally:
        other.communicate("done\n", timeout=120)
    return run, seen["huge"]


@pytest.fixture
def trace_path(tmp_path):
    # 24 MiB in 2 MiB-multiple buffers, alive together: room for huge pages when THP is asked.
    return write_trace(buffers_trace(6, 4 * MIB), tmp_path / "t.arrow")


def test_another_process_thp_faults_do_not_change_the_replays_own_figures(trace_path):
    before = read_rollup()["anon_huge_bytes"]
    run, other_huge = replay_beside_a_thp_user(trace_path, "never")
    if other_huge == 0:
        pytest.skip("the machine gave the other process no huge page (memory fragmented)")
    # System-wide: the other process's faults are there.
    assert run["vmstat_system_wide"]["thp_fault_alloc"] >= other_huge // (2 * MIB)
    # The replay's own: nothing, however its figures are measured.
    assert run["peak_anon_huge_bytes"] == 0 and run["end_anon_huge_bytes"] == 0
    assert run["process_peak_anon_huge_bytes"] == before  # smaps_rollup: this process's
    if memory_cgroup_dir()[0] is None or "cgroup_unavailable" in run:
        pytest.skip(f"no memory cgroup of its own here: {run.get('cgroup_unavailable')}")
    assert run["cgroup"]["peak_anon_thp_bytes"] == 0
    assert run["cgroup"].get("thp_fault_alloc") in (None, 0)   # cgroup v1 counts no THP events
    assert run["cgroup"]["pgfault"] >= 24 * MIB // 4096        # its own 4 KiB faults are there


def test_the_replays_own_thp_is_counted_when_it_has_some(trace_path):
    before = read_rollup()["anon_huge_bytes"]
    run, _ = replay_beside_a_thp_user(trace_path, "always")
    assert run["peak_anon_huge_bytes"] >= 6 * 4 * MIB // 2   # most of its 2 MiB blocks are huge
    assert run["process_peak_anon_huge_bytes"] == before + run["peak_anon_huge_bytes"]
    if "cgroup" in run:
        # The cgroup holds exactly the replay's huge pages, none of the other process's.
        assert run["cgroup"]["peak_anon_thp_bytes"] == run["peak_anon_huge_bytes"]


def test_a_vma_shared_with_other_memory_counts_only_the_replays_pages():
    """A neighbour with the same flags merges with a replay mapping into one VMA (the
    interpreter's memory beside the replay's). smaps has one Rss for the whole VMA; the replay's
    figures must count its own range only: PAGEMAP_SCAN, exact to the page."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = 10 * MIB
    base = libc.mmap(None, size, 3, 0x22, -1, 0)  # one private anonymous VMA
    assert base not in (None, ctypes.c_void_p(-1).value)
    try:
        assert libc.madvise(base, size, 15) == 0   # MADV_NOHUGEPAGE: 4 KiB pages, on any host
        start = -(-base // (2 * MIB)) * (2 * MIB)
        other, ours = (start, start + 4 * MIB), (start + 4 * MIB, start + 8 * MIB)
        ctypes.memset(other[0], 1, 4 * MIB)          # the neighbour's memory: all of it
        for page in range(ours[0], ours[0] + MIB, mmap_module.PAGESIZE):
            ctypes.memset(page, 1, 1)                # the replay's: its first MiB
        ranges = np.array([ours], np.int64)
        if own_page_bytes(ranges) is None:
            pytest.skip("PAGEMAP_SCAN (Linux 6.7+) is needed to measure part of a VMA")
        vmas = read_smaps()
        mine = layout_metrics(vmas, ranges, own_page_bytes)
        assert mine["rss_bytes"] == MIB and mine["anon_huge_bytes"] == 0
        assert mine["thp_eligible_bytes"] == 4 * MIB and mine["vmas"] == 1
        assert mine["shared_vmas"] == 0
        whole = layout_metrics(vmas, ranges)         # smaps alone: the whole VMA, and said
        assert whole["rss_bytes"] == 5 * MIB and whole["shared_vmas"] == 1
    finally:
        libc.munmap(base, size)
