"""Replaying a hostile trace never touches memory the replay did not map itself.

Every hostile trace of the bad-input corpus is replayed in this process, after sentinel mappings
of known content were placed at every address the trace names (where it maps, unmaps, remaps,
protects or advises, and its hints) and right where the kernel puts new mappings. Then:

- at the engine level, /proc/self/maps after the whole program (its cleanup included) is line for
  line what it was before;
- through a full run (``run_program``: probes, chunks, release), finished or interrupted, every
  sentinel keeps its range, permissions and bytes, and no file-backed mapping changes.

And the memory budget: refused before anything is mapped, and re-checked while running.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
import pytest

from replay.engine.compile import compile_trace
from replay.running.config import Access, ReplayConfig
from replay.engine.engine import EngineState
from replay.measure.probes import maps_snapshot, probe_kernel_alignment
from replay.engine.program import ID_MAPPED
from replay.running.runs import Prepared
from replay.running.session import Interrupt, engine_params, run_program
from test_engine import Sentinels as NearbySentinels
from traces import MmreplayError, read_trace, write_trace
from traces.format import column_np, op_names
from traces.schema import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, OP_CODE
from tracegen import buffers_trace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "data" / "bad"))
import make_corpus as corpus  # noqa: E402

PAGE = 4096
SENTINEL_MAX_BYTES = 64 << 10
USER_LOW, USER_HIGH = 1 << 16, 0x7FFF_FFFF_0000
REPLAYED = [c for c in corpus.CASES if isinstance(c.outcome, corpus.Replayed)]
OVER_BUDGET = [c for c in corpus.CASES if c.group == "hostile"
               and isinstance(c.outcome, corpus.Refused) and c.outcome.by == ("replay",)]
POLICIES = ("kernel", "align-ge-pmd")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                       ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


class TargetSentinels:
    """Mappings of known content exactly at the addresses a trace names (where they are free)."""

    def __init__(self, table):
        self.placed: list[tuple[int, int, int]] = []  # (start, length, fill byte)
        for start, length in self._targets(table):
            if any(start < s + n + PAGE and s < start + length + PAGE for s, n, _ in self.placed):
                continue  # keep sentinels apart: neighbours with equal flags would merge
            got = _libc.mmap(start, length, 3, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                             -1, 0)
            if got != start:
                if got not in (None, ctypes.c_void_p(-1).value):
                    _libc.munmap(got, length)  # a kernel without NOREPLACE took it as a hint
                continue  # occupied (Python, a library, the stack): foreign memory too
            fill = 0xA0 + len(self.placed) % 64
            ctypes.memset(start, fill, length)
            self.placed.append((start, length, fill))

    @staticmethod
    def _targets(table):
        codes = op_names(table)
        addr = column_np(table, "addr")
        length = column_np(table, "length")
        new_addr = column_np(table, "new_addr")
        hint = column_np(table, "hint")
        found = []
        for row in range(table.num_rows):
            if codes[row] == OP_CODE["brk"]:
                continue
            size = int(min(max(int(length[row]), PAGE), SENTINEL_MAX_BYTES))
            for address in (int(addr[row]), int(new_addr[row]), int(hint[row])):
                start = address // PAGE * PAGE
                if USER_LOW <= start and start + size <= USER_HIGH:
                    found.append((start, (size + PAGE - 1) // PAGE * PAGE))
        return sorted(set(found))

    def lines(self) -> list[str]:
        """Their /proc/self/maps lines (range and permissions)."""
        wanted = {(s, s + n) for s, n, _ in self.placed}
        found = []
        for line in maps_snapshot():
            span, perms = line.split()[:2]
            start, end = (int(x, 16) for x in span.split("-"))
            if (start, end) in wanted:
                found.append(f"{span} {perms}")
        return sorted(found)

    def intact(self) -> bool:
        """Every sentinel still mapped whole, readable and writable, with its bytes (read only
        when the mapping is there: reading an unmapped one would crash the test run)."""
        if len(self.lines()) != len(self.placed) or any(
                not line.endswith(" rw-p") for line in self.lines()):
            return False
        return all(ctypes.string_at(s, n) == bytes([fill]) * n for s, n, fill in self.placed)

    def close(self):
        for start, length, _ in self.placed:
            _libc.munmap(start, length)


def file_backed(lines: list[str]) -> set[str]:
    return {line for line in lines if "/" in line}


@pytest.fixture(scope="module")
def hostile_traces(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    corpus.write_corpus(folder)
    return {case.name: folder / case.name for case in corpus.CASES}


def test_sentinels_are_placed_where_the_hostile_traces_aim(hostile_traces):
    """The check below is only as good as its sentinels: most named addresses must get one."""
    table = read_trace(hostile_traces["munmap-never-mapped.arrow"])
    sentinels = TargetSentinels(table)
    try:
        starts = {start for start, _, _ in sentinels.placed}
        assert corpus.FOREIGN in starts and corpus.FIXED_TARGET in starts
        assert len(sentinels.lines()) == len(sentinels.placed) >= 4
        assert sentinels.intact()
    finally:
        sentinels.close()


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", [c.name for c in REPLAYED])
def test_engine_leaves_the_address_space_as_it_found_it(name, policy, hostile_traces):
    table = read_trace(hostile_traces[name])
    config = ReplayConfig(policy=policy, touch="pages")
    program = compile_trace(table, config)
    state = EngineState(program, engine_params(config, probe_kernel_alignment()))
    state.run(0, 0)  # numba's dispatch done before the first snapshot
    targets, nearby = TargetSentinels(table), NearbySentinels()
    try:
        before = maps_snapshot()
        state.run(0, program.ops)
        after = maps_snapshot()
        assert after == before, sorted(set(after) ^ set(before))
        assert targets.intact() and nearby.intact()
    finally:
        targets.close()
        nearby.close()


def _replayed_ranges(program, state) -> np.ndarray:
    mapped = np.flatnonzero(state.id_state & ID_MAPPED)
    return np.stack([state.base[mapped], state.base[mapped] + program.id_length[mapped]], axis=1)


@pytest.mark.parametrize("stop", ["finished", "interrupted"])
@pytest.mark.parametrize("name", [c.name for c in REPLAYED])
def test_a_full_run_touches_only_its_own_memory(name, stop, hostile_traces):
    table = read_trace(hostile_traces[name])
    config = ReplayConfig(policy="align-ge-pmd", touch="pages", access=Access.parse("stream:1"))
    program = compile_trace(table, config)
    targets, nearby = TargetSentinels(table), NearbySentinels()
    try:
        lines_before, files_before = targets.lines(), file_backed(maps_snapshot())
        interrupt = Interrupt()
        seen = {}

        def progress(_done):
            if stop == "interrupted":
                interrupt.request("SIGINT")  # stops at the first chunk boundary

        run = run_program(program, config, probe_kernel_alignment(), interrupt,
                          on_progress=progress,
                          on_released=lambda state: seen.update(state=state))
        assert run["release_failures"] == 0
        # (a trace with nothing to replay has no chunk boundary to stop at)
        assert run["interrupted"] is (stop == "interrupted" and program.cleanup_start > 0)
        assert targets.lines() == lines_before and targets.intact() and nearby.intact()
        # Libraries may be loaded meanwhile, but none that was there changed or went away.
        assert files_before <= file_backed(maps_snapshot())
        # And nothing the replay mapped is left behind.
        ranges = _replayed_ranges(program, seen["state"])
        lines = [line.split()[0].split("-") for line in maps_snapshot()]
        vmas = [(int(a, 16), int(b, 16)) for a, b in lines if len(a) <= 12]
        assert not [(s, e) for s, e in ranges for a, b in vmas if a < e and s < b]
    finally:
        targets.close()
        nearby.close()


@pytest.mark.parametrize("name", [c.name for c in OVER_BUDGET])
def test_over_budget_traces_are_refused_before_anything_is_mapped(name, hostile_traces):
    def mappings():  # Python's own malloc may grow the brk heap while compiling
        return [line for line in maps_snapshot() if not line.endswith("[heap]")]

    before = mappings()
    with pytest.raises(MmreplayError, match="more than the memory budget"):
        Prepared(hostile_traces[name], ReplayConfig())
    assert mappings() == before


def test_the_budget_is_rechecked_while_running(tmp_path):
    """A budget the compiler was not given (RSS grows past it): the run stops at the next chunk
    boundary, counts as interrupted by the budget, and gives everything back."""
    table = read_trace(write_trace(buffers_trace(64, 4 << 20), tmp_path / "t.arrow"))
    config = ReplayConfig(touch="full")
    program = compile_trace(table, config)
    seen = {}
    run = run_program(program, config, probe_kernel_alignment(), budget_bytes=16 << 20,
                      on_released=lambda state: seen.update(state=state))
    assert run["interrupted"] and run["interrupt_reason"] == "memory budget"
    # It stopped soon after RSS passed budget + slack (64 MiB): well before the 256 MiB peak.
    assert 0 < run["events"] < 64
    assert run["release_failures"] == 0
    ranges = _replayed_ranges(program, seen["state"])
    vmas = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps_snapshot()
            if len(line.split("-")[0]) <= 12]
    assert not [(s, e) for s, e in ranges for a, b in vmas if a < e and s < b]
