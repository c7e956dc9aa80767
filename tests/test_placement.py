"""The emulated placement rules against what real kernels did, on real syscalls.

tests/data/placement/ holds what real kernels answered (each file says how it was produced);
each test replays the same calls here and compares where the replay's mappings start.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from traces import build_table, new_metadata, read_trace, write_trace
from traces.format import column_np, op_names
from traces.schema import OP_CODE, PMD_SIZE

from replay.engine.compile import compile_trace
from replay.running.config import ReplayConfig
from replay.engine.engine import EngineState
from replay.measure.probes import probe_kernel_alignment
from replay.engine.program import ID_MAPPED, OP_MMAP, OP_MREMAP
from replay.running.session import engine_params, run_program

DATA = Path(__file__).resolve().parent / "data" / "placement"
BUNDLED = Path(__file__).resolve().parent.parent / "traces" / "data"
MIB, KIB = 1 << 20, 1 << 10
MAP_PRIVATE_ANON, MAP_POPULATE = 0x22, 0x8000

needs_plain_search = pytest.mark.skipif(
    not probe_kernel_alignment().plain_by_hint,
    reason="this kernel aligns hinted anonymous mmaps (6.7-6.12.0): no exact plain search")


def table_of(calls: list[tuple]) -> "pa.Table":
    """A trace from (op, addr, length, ...) tuples (mmap [flags, hint], munmap, mremap
    new_addr, new_length, flags), 1 ms apart."""
    rows = []
    for n, (op, addr, length, *rest) in enumerate(calls):
        row = {"ts_ns": n * 1000000, "tid": 1, "op": op, "addr": addr, "length": length,
               "errno": 0}
        if op == "mmap":
            flags = rest[0] if rest else MAP_PRIVATE_ANON
            row.update(hint=rest[1] if len(rest) > 1 else 0, prot=3, flags=flags, fd=-1, offset=0)
        elif op == "mremap":  # ("mremap", addr, length, new_addr, new_length, flags)
            row.update(new_addr=rest[0], new_length=rest[1], flags=rest[2], hint=0)
        rows.append(row)
    names = ("ts_ns", "tid", "op", "addr", "length", "new_addr", "new_length", "hint", "prot",
             "flags", "fd", "offset", "advice", "errno")
    return build_table({name: [r.get(name) for r in rows] for name in names},
                       new_metadata("test"))


def replay_starts(table, policy: str, **options) -> tuple[dict, dict]:
    """Replay ``table`` (run_program: its own address space) and return (run, {trace row:
    replay start}) for every mmap the replay made."""
    config = ReplayConfig(policy=policy, touch=options.pop("touch", "none"), **options)
    program = compile_trace(table, config)
    seen = {}
    run = run_program(program, config, probe_kernel_alignment(),
                      on_released=lambda state: seen.update(base=state.base.copy(),
                                                            state=state.id_state.copy()))
    made = program.code == OP_MMAP
    ids, rows = program.map_id[made], program.trace_row[made]
    ok = (seen["state"][ids] & ID_MAPPED) != 0
    return run, {int(r): int(seen["base"][i]) for i, r in zip(ids[ok], rows[ok])}


def real_kernel_output(name: str) -> list[tuple[int, int]]:
    """(length, address) of each mmap line of a real kernel's answer in tests/data/placement."""
    text = (DATA / name).read_text()
    return [(int(m.group(1)), int(m.group(2), 16))
            for m in re.finditer(r"len +(\d+) addr 0x([0-9a-f]+)", text)]


@needs_plain_search
def test_no_align_places_the_mixed_sequence_exactly_as_debian_6_1_did():
    """The issue's C program (12 x (3 MiB + 4 KiB), 6 x 4 MiB, 12 x 1 MiB, 4 x (6 MiB + 8 KiB),
    then the third 4 MiB mapping freed and 4 MiB asked for again) as real Debian 6.1 ran it:
    its calls are the trace, its addresses the expected answer."""
    real = real_kernel_output("debian-6.1.0-50-amd64.txt")
    assert len(real) == 35
    calls = [("mmap", address, length) for length, address in real[:34]]
    freed = real[14]  # the third 4 MiB mapping
    calls += [("munmap", freed[1], freed[0]), ("mmap", real[34][1], real[34][0])]
    table = table_of(calls)
    rows = [n for n, call in enumerate(calls) if call[0] == "mmap"]

    run, starts = replay_starts(table, "no-align")
    top_real = real[0][1] + real[0][0]
    top_replay = starts[rows[0]] + real[0][0]
    # Every mapping sits where 6.1 put it relative to the first one: packed top-down, the
    # freed 4 MiB hole reused by the next 4 MiB request.
    assert [starts[r] - top_replay for r in rows] == [a - top_real for _, a in real]
    assert starts[rows[-1]] == starts[rows[14]]
    # The replay starts at the recorded process's residue modulo 2 MiB, so its chance alignments
    # are the recorded ones: 0 of 23 >= 2 MiB and 0 of 12 at 1 MiB, as in 6.1.
    by_size = run["pmd_aligned_by_size"]
    assert run["pmd_aligned_large_mappings"] == 0 and run["large_mappings"] == 23
    assert by_size["512K-1.5M"] == {"mappings": 12, "pmd_aligned": 0}
    assert run["policy_extra_calls"] == 0  # one mmap per mmap: the kernel's own search
    # Deterministic: another run (other interpreter state, other gaps) places the same way.
    again_run, again = replay_starts(table, "no-align")
    assert [again[r] - again[rows[0]] for r in rows] == [starts[r] - starts[rows[0]] for r in rows]
    assert again[rows[0]] % PMD_SIZE == starts[rows[0]] % PMD_SIZE
    assert again_run["pmd_aligned_by_size"] == by_size

    # This host's own rule is another one (6.18 aligns the 4 MiB multiples): the test can fail.
    kernel_run, kernel_starts = replay_starts(table, "align-pmd-multiple")
    assert kernel_run["pmd_aligned_large_mappings"] == 7
    assert [kernel_starts[r] - kernel_starts[rows[0]] for r in rows] != \
        [a - real[0][1] for _, a in real]


@needs_plain_search
def test_populate_fills_only_the_mapping_not_the_emulators_padding():
    calls = [("mmap", 0x7F00_0000_0000 - (n + 1) * 8 * MIB, 4 * MIB + 4 * KIB,
              MAP_PRIVATE_ANON | MAP_POPULATE) for n in range(16)]
    table = table_of(calls)
    faults = {}
    for policy in ("kernel", "align-ge-pmd"):
        run, starts = replay_starts(table, policy, thp="never")
        assert run["ops"]["mmap"]["count"] == 16 and run["ops"]["mmap"]["failed"] == 0
        faults[policy] = run["minflt"]
        if policy == "align-ge-pmd":
            assert all(start % PMD_SIZE == 0 for start in starts.values())
    # Populating 16 x 1025 pages faults about 16,400 times either way; populating the 2 MiB pads
    # as well would add 16 x 512 = 8,192 (+50%).
    assert faults["kernel"] >= 16 * 1025
    assert abs(faults["align-ge-pmd"] - faults["kernel"]) < 16 * 512 // 4, faults


class _Blocker:
    """A page of this test's own, mapped at a chosen free address."""

    def __init__(self, address: int):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        self.libc, self.address = libc, address
        got = libc.mmap(address, 4096, 0, 0x22 | 0x100000, -1, 0)  # MAP_FIXED_NOREPLACE
        assert got == address

    def close(self):
        self.libc.munmap(self.address, 4096)


def free_range(length: int) -> int:
    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    address = libc.mmap(None, length, 0, 0x22, -1, 0)
    libc.munmap(address, length)
    return address


def test_hinted_mmaps_under_align_ge_pmd_keep_the_hint_only_if_the_padded_window_fits():
    """6.7-6.11 (__thp_get_unmapped_area): a hint is kept when length + 2 MiB fits there; when
    only the length fits, the call is aligned elsewhere. 6.13+ and <= 6.6 grant the hint."""
    base = free_range(256 * MIB)
    base = (base + PMD_SIZE - 1) // PMD_SIZE * PMD_SIZE + 64 * MIB
    blocker = _Blocker(base + 128 * MIB)
    length = 4 * MIB + 4 * KIB
    roomy = base + 4 * MIB + 12 * KIB                   # 100+ MiB free above
    tight = blocker.address - length - 1 * MIB          # 1 MiB free above: not 2 MiB more
    try:
        table = table_of([("mmap", roomy, length, MAP_PRIVATE_ANON, roomy),
                          ("mmap", tight, length, MAP_PRIVATE_ANON, tight)])
        got = {}
        for policy in ("align-ge-pmd", "align-pmd-multiple", "no-align"):
            config = ReplayConfig(policy=policy, touch="none")
            program = compile_trace(table, config)
            state = EngineState(program, engine_params(config, probe_kernel_alignment()))
            state.run(0, program.cleanup_start)
            got[policy] = [int(state.base[i]) for i in program.map_id[program.code == OP_MMAP]]
            state.run(program.cleanup_start, program.ops)
        assert got["align-ge-pmd"][0] == roomy
        assert got["align-ge-pmd"][1] != tight and got["align-ge-pmd"][1] % PMD_SIZE == 0
        assert got["align-pmd-multiple"] == got["no-align"] == [roomy, tight]
    finally:
        blocker.close()


def test_file_mappings_keep_the_alignment_the_recording_host_gave_them():
    """16 file mappings of 2 MiB or more in the PyTorch trace started congruent to their file
    offset modulo 2 MiB (the THP rule for files); replayed as anonymous memory they keep it."""
    table = read_trace(BUNDLED / "bert-torch.arrow")
    codes, fd = op_names(table), column_np(table, "fd", -1)
    flags, length = column_np(table, "flags"), column_np(table, "length")
    addr, offset = column_np(table, "addr"), column_np(table, "offset")
    errno = column_np(table, "errno")
    files = np.flatnonzero((codes == OP_CODE["mmap"]) & (fd >= 0) & (flags & 0x30 == 0)
                           & (length >= PMD_SIZE) & (errno == 0))
    recorded_aligned = [int(r) for r in files if (int(addr[r]) - int(offset[r])) % PMD_SIZE == 0]
    assert len(recorded_aligned) == 16
    for policy in ("no-align", "kernel"):
        _, starts = replay_starts(table, policy)
        kept = [r for r in recorded_aligned
                if (starts[r] - int(offset[r])) % PMD_SIZE == 0]
        assert len(kept) == 16, policy


@needs_plain_search
def test_kernel_policy_reproduces_the_recorded_alignment_on_the_recording_kernels_rule():
    """The bundled PyTorch trace was recorded on a 6.18 kernel. Replayed here with the kernel's
    own placement in an address space of its own, from the recorded residue, every mapping that
    was 2 MiB-aligned when recorded is aligned again, size bucket by size bucket."""
    alignment = probe_kernel_alignment()
    if not alignment.aligns_pmd_multiples or alignment.aligns_large:
        pytest.skip("this kernel's rule is not the recording host's (6.12+: multiples only)")
    table = read_trace(BUNDLED / "bert-torch.arrow")
    addr = column_np(table, "addr")
    run, starts = replay_starts(table, "kernel")
    recorded = {row: int(addr[row]) for row in starts}
    same_residue = sum((starts[r] - recorded[r]) % PMD_SIZE == 0 for r in starts)
    assert same_residue >= 0.99 * len(starts)
    lengths = column_np(table, "length")
    for bucket, lower, upper in (("512K-1.5M", 512 * KIB, 1536 * KIB),
                                 ("4M-16M", 4 * MIB, 16 * MIB)):
        rows = [r for r in starts if lower <= lengths[r] < upper]
        assert run["pmd_aligned_by_size"][bucket]["pmd_aligned"] == \
            sum(recorded[r] % PMD_SIZE == 0 for r in rows) > 0


@pytest.mark.skipif(subprocess.run(["which", "strace"], capture_output=True).returncode != 0,
                    reason="strace is not installed")
def test_the_emulators_own_calls_are_counted_apart_from_the_workloads(tmp_path):
    """Under strace: the replay makes the trace's 8 mmaps and 8 munmaps of 3 MiB + 4 KiB, plus
    exactly ``policy_extra_calls`` calls of its own (PROT_NONE windows and their trims)."""
    length = 3 * MIB + 4 * KIB
    calls = [("mmap", 0x7F00_0000_0000 - (n + 1) * 8 * MIB, length) for n in range(8)]
    calls += [("munmap", address, size) for _, address, size in calls]
    trace = write_trace(table_of(calls), tmp_path / "t.arrow")
    out, log = tmp_path / "r.json", tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-e", "trace=mmap,munmap", "-o", str(log), sys.executable,
                    "-m", "replay.cli", "replay", str(trace), "--policy", "align-ge-pmd",
                    "--touch", "none", "--warmup", "0", "--no-progress", "-o", str(out)],
                   check=True, capture_output=True)
    run = json.loads(out.read_text())["runs"][0]
    assert run["ops"]["mmap"]["count"] == 8 and run["ops"]["munmap"]["count"] == 8
    assert run["pmd_aligned_large_mappings"] == 8
    lines = log.read_text().splitlines()
    window = re.compile(rf"mmap\(0x[0-9a-f]+, {length + PMD_SIZE}, PROT_NONE, "
                        r"MAP_PRIVATE\|MAP_ANONYMOUS\|MAP_NORESERVE, -1, 0\) = (0x[0-9a-f]+)")
    fixed = re.compile(rf"mmap\(0x[0-9a-f]+, {length}, PROT_READ\|PROT_WRITE, "
                       r"MAP_PRIVATE\|MAP_FIXED\|MAP_ANONYMOUS")
    trim = re.compile(r"munmap\((0x[0-9a-f]+), (\d+)\)\s+= 0")
    windows = fixed_calls = trims = 0
    current = None  # the last window: its trims follow it
    for line in lines:
        if match := window.search(line):
            windows += 1
            current = (int(match.group(1), 16), int(match.group(1), 16) + length + PMD_SIZE)
        elif fixed.search(line):
            fixed_calls += 1
        elif (match := trim.search(line)) and current and int(match.group(2)) != length \
                and current[0] <= int(match.group(1), 16) < current[1]:
            trims += 1
    assert windows == 8 and fixed_calls == 8 and 8 <= trims <= 16
    assert run["policy_extra_calls"] == windows + trims
    assert run["policy_extra_s"] > 0
    assert run["events_per_s"] == pytest.approx(run["events"] / run["engine_s"])


@pytest.mark.parametrize("method", ["occupied-hint", "dev-zero", "one-page-pad"])
@pytest.mark.parametrize("policy", ["no-align", "align-ge-pmd"])
def test_every_way_to_the_plain_search_maps_everything_and_leaves_nothing(method, policy):
    """The engine's three ways to a plain search (policy.KernelAlignment picks the first this
    kernel allows) each replay the mixed sequence: every mmap succeeds, an aligned placement
    starts on a boundary, and nothing is left mapped. Where a way is not the plain search on this
    kernel (6.18 aligns /dev/zero mappings), only its safety is checked."""
    from replay.engine.policy import KernelAlignment

    probed = probe_kernel_alignment()
    alignment = KernelAlignment(probed.aligns_pmd_multiples, probed.aligns_large, 0,
                                plain_by_hint=method == "occupied-hint",
                                plain_by_zero=method == "dev-zero")
    real = real_kernel_output("debian-6.1.0-50-amd64.txt")
    table = table_of([("mmap", address, length) for length, address in real[:34]])
    config = ReplayConfig(policy=policy, touch="pages")
    program = compile_trace(table, config)
    seen = {}

    def inaccessible():  # windows and placeholders are PROT_NONE anonymous mappings
        return [line for line in open("/proc/self/maps") if " ---p 00000000 00:00 0" in line]

    before = inaccessible()
    run = run_program(program, config, alignment,
                      on_released=lambda state: seen.update(base=state.base.copy()))
    assert inaccessible() == before
    assert run["ops"]["mmap"]["count"] == 34 and run["ops"]["mmap"]["failed"] == 0
    assert run["release_failures"] == 0 and run["address_space"]["release_failures"] == 0
    ids = program.map_id[program.code == OP_MMAP]
    if policy == "align-ge-pmd":
        assert all(seen["base"][i] % PMD_SIZE == 0 for i in ids if program.id_length[i] >= PMD_SIZE)
    lines = open("/proc/self/maps").read().splitlines()
    vmas = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in lines
            if len(line.split("-")[0]) <= 12]
    ranges = [(seen["base"][i], seen["base"][i] + program.id_length[i]) for i in ids]
    assert not [r for r in ranges for a, b in vmas if a < r[1] and r[0] < b]
    if method == "occupied-hint" and probed.plain_by_hint and policy == "no-align":
        assert run["policy_extra_calls"] == 0


@needs_plain_search
def test_mremap_moves_go_where_the_emulated_kernel_put_the_new_length():
    """A 1 MiB mapping grown to 4 MiB with a neighbour right above it must move: <= 6.6 put it
    where the plain search finds 4 MiB (right below it, off any boundary here), 6.7-6.11 on a
    2 MiB boundary (get_unmapped_area() of an anonymous mapping takes the THP path). This host
    (6.18) aligns the 4 MiB multiple itself."""
    top = 0x7F00_0012_3000  # the replay's top keeps this residue: off any 2 MiB boundary
    above, below = top - (MIB + 4 * KIB), top - (2 * MIB + 4 * KIB)
    table = table_of([("mmap", above, MIB + 4 * KIB), ("mmap", below, MIB),
                      ("mremap", below, MIB, 0x7E00_0000_0000, 4 * MIB, 1)])
    moved = {}
    for policy in ("no-align", "align-ge-pmd", "kernel"):
        run, _ = replay_starts(table, policy)
        assert run["ops"]["mremap"]["count"] == 1 and run["ops"]["mremap"]["failed"] == 0
        config = ReplayConfig(policy=policy, touch="none")
        program = compile_trace(table, config)
        seen = {}
        run_program(program, config, probe_kernel_alignment(),
                    on_stop=lambda state, pieces: seen.update(base=state.base.copy()),
                    stop_op=program.cleanup_start)
        old, new = program.map_id[1], program.ref_id[program.code == OP_MREMAP][0]
        moved[policy] = (int(seen["base"][old]), int(seen["base"][new]))
    old, new = moved["no-align"]
    assert new == old - 4 * MIB and new % PMD_SIZE != 0
    assert moved["align-ge-pmd"][1] % PMD_SIZE == 0
    assert moved["kernel"][1] % PMD_SIZE == 0  # the host's own rule differs: the test can fail


def test_a_gap_taken_while_the_address_space_is_claimed_is_filled_around():
    """Reading /proc/self/maps allocates: the interpreter may map an arena into a free gap after
    the maps were read and before that gap's placeholder is placed (the placeholder then fails
    with EEXIST). The claim looks again and fills around it: a gap left open would take the
    replay's first mapping that fits, at an address that depends on ASLR (a chance 2 MiB
    alignment, seen under load in tests/test_vm_boot.py)."""
    from replay.measure.probes import read_named_maps
    from replay.engine.region import FreshAddressSpace, plan_placeholders

    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    outer = libc.mmap(None, 3 * MIB, 0, MAP_PRIVATE_ANON, -1, 0)
    libc.munmap(outer + MIB, MIB)  # a 1 MiB gap of our own inside the interpreter's area
    interloper = outer + MIB + 256 * KIB

    class Interrupted(FreshAddressSpace):
        """Maps a page into our gap just before its placeholder is placed, once."""
        def _place(self, start, end):
            if start <= interloper < end and not self.__dict__.get("interfered"):
                self.interfered = True
                assert libc.mmap(interloper, 4 * KIB, 0, MAP_PRIVATE_ANON | 0x100000, -1,
                                 0) == interloper
            return super()._place(start, end)

    space = Interrupted(floor_residue=0)
    try:
        space.claim()
        assert space.interfered and space.raced >= 1 and space.rounds >= 2
        assert space.unfilled == 0
        floor = space.as_dict()["floor"]
        # Nothing is free above the floor: both sides of the interloper are placeholders.
        assert not [(start, end) for start, end in plan_placeholders(read_named_maps(), 0, floor)
                    if end > floor]
        placed = set(space.placed)
        assert (outer + MIB, interloper) in placed
        assert (interloper + 4 * KIB, outer + 2 * MIB) in placed
    finally:
        assert space.release() == 0
        libc.munmap(interloper, 4 * KIB)
        libc.munmap(outer, 3 * MIB)


def test_the_replays_first_mapping_never_adjoins_an_interpreter_mapping():
    """When the interpreter's lowest mapping already starts at the chosen residue, the floor
    still gets a placeholder below it: the replay's first mapping must not merge with a mapping
    of the interpreter (its figures, read per VMA, would count the interpreter's pages)."""
    from replay.measure.probes import read_named_maps
    from replay.engine.region import FreshAddressSpace

    libc = ctypes.CDLL(None)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    # An anonymous read-write mapping of "the interpreter's", made the lowest of the area by
    # claiming first (no gap is left above it), then mapped right below that floor.
    first = FreshAddressSpace(floor_residue=0).claim()
    ours = first.floor - MIB
    assert libc.mmap(ours, MIB, 3, MAP_PRIVATE_ANON | 0x100000, -1, 0) == ours
    first.release()
    space = FreshAddressSpace(floor_residue=ours % PMD_SIZE)  # ours starts at the residue
    replay = None
    try:
        space.claim()
        assert space.floor < ours and space.unfilled == 0
        replay = libc.mmap(None, MIB, 3, MAP_PRIVATE_ANON, -1, 0)  # the plain top-down search
        assert replay + MIB == space.floor
        vma = next((start, end) for start, end, _ in read_named_maps()
                   if start <= replay < end)
        assert vma == (replay, replay + MIB)  # not merged with anything
    finally:
        if replay:
            libc.munmap(replay, MIB)
        space.release()
        libc.munmap(ours, MIB)
