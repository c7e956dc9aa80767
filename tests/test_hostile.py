"""Issue 12: hostile traces and inputs end in a counted skip or one line, never a crash or a hang.

Each class of the issue has its test here; the bad-input corpus (tests/data/bad/make_corpus.py)
holds one file per attack, and test_bad_corpus.py / test_foreign_memory.py replay those with
exact outcomes and with sentinel mappings around them. The property test below replays traces
in the attack shapes the fuzzer draws (fuzz/fuzz_inputs.py, target "hostile") for a fixed
number of examples, with the fuzzer's oracle: /proc/self/maps exactly as before.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.cli import cli
from replay.engine.compile import compile_trace, huge_page_size
from traces.host import hugetlb_page_sizes
from replay.running.config import MAX_OS_THREADS, Access, ReplayConfig
from replay.engine.engine import EngineState
from replay.measure.probes import MapsReader, maps_snapshot, probe_kernel_alignment
from replay.engine.program import OP_MMAP, OP_MMAP_FIXED_IN
from replay.running.session import engine_params, run_program
from replay.engine.threads import plan_threads
from test_engine import Sentinels as NearbySentinels
from test_foreign_memory import TargetSentinels, _replayed_ranges as replayed_ranges, file_backed
from traces import MmreplayError, read_trace, write_trace
from traces.format import build_table, new_metadata
from traces.ipc_guard import check_ipc_sizes
from traces.schema import MAP, OPS

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "fuzz"))
sys.path.insert(0, str(ROOT / "tests" / "data" / "bad"))
import fuzz_inputs  # noqa: E402
import make_corpus as corpus  # noqa: E402

MAP_HUGETLB = MAP["MAP_HUGETLB"]
A = corpus.TRACE_BASE


def mmreplay(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "replay.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_one_line_error(done, *fragments):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def trace_file(tmp_path, rows, name="t.arrow", metadata=None):
    table = corpus.table(rows) if metadata is None else corpus.table(rows, metadata)
    return write_trace(table, tmp_path / name)


# ---------------------------------------------------------------------------------------------
# 1, 4, 5, 6: hugetlb ranges, failed MAP_FIXED, shared mremap growth, protection per page range.

@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), policy=st.sampled_from(["kernel", "align-ge-pmd"]),
       access=st.sampled_from(["stream:1", "random:64"]))
def test_attack_shapes_replay_without_touching_foreign_memory(seed, policy, access):
    r = random.Random(seed)
    table = corpus.table(fuzz_inputs.hostile_rows(r))
    config = ReplayConfig(policy=policy, touch="pages", access=Access.parse(access))
    try:
        program = compile_trace(table, config, max_live_bytes=64 << 20)
    except MmreplayError:
        return  # over the budget: refused before anything is mapped
    default, supported = hugetlb_page_sizes()
    for i in np.flatnonzero(np.isin(program.code, (OP_MMAP, OP_MMAP_FIXED_IN))):
        if program.flags[i] & MAP_HUGETLB:
            # Never MAP_FIXED, and mapped whole huge pages, as the kernel will.
            assert program.code[i] == OP_MMAP
            size = huge_page_size(int(program.flags[i]) & 0xFFFFFFFF, default, supported)
            assert size and program.length[i] % size == 0
    state = EngineState(program, engine_params(config, probe_kernel_alignment()))
    state.run(0, 0)
    targets, nearby = TargetSentinels(table), NearbySentinels()
    maps = MapsReader()
    try:
        maps.capture(0)
        state.run(0, program.ops)  # a SIGSEGV or SIGBUS here kills the test run
        maps.capture(1)  # before Python allocates again: it may reuse the freed ranges
        files_before, after = file_backed(maps.lines(0)), maps.lines(1)
        assert targets.intact() and nearby.intact()
        assert file_backed(after) == files_before
        # Everything the replay mapped is gone again (its cleanup released all of it).
        vmas = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in after
                if len(line.split("-")[0]) <= 12]
        ranges = replayed_ranges(program, state)
        assert not [(s, e) for s, e in ranges for a, b in vmas if a < e and s < b], (seed, policy, access)
    finally:
        maps.close()
        targets.close()
        nearby.close()


def test_hugetlb_fixed_inside_own_mapping_is_kernel_placed_and_rounded(tmp_path):
    """Finding 1's rows: the 4 KiB hugetlb MAP_FIXED at the last page of a replay mapping."""
    table = read_trace(trace_file(tmp_path, [
        corpus.mmap(A, 4 << 20), corpus.mremap(A, 4 << 20, A, (4 << 20) + 4096),
        corpus.mmap(A + (4 << 20), 4096, flags=corpus.ANON | corpus.MAP_FIXED | MAP_HUGETLB),
        corpus.munmap(A, (4 << 20) + 4096)]))
    program = compile_trace(table, ReplayConfig(policy="align-ge-pmd"))
    huge = np.flatnonzero(program.flags & MAP_HUGETLB)
    assert len(huge) == 1 and program.code[huge[0]] == OP_MMAP
    assert program.length[huge[0]] == hugetlb_page_sizes()[0]
    # The trace's munmap cuts the huge page: the kernel refuses it, so it is skipped.
    assert program.skipped == {"hugetlb_unaligned": 1}
    assert program.notes == {"hugetlb_fixed_kernel_placed": 1}


def test_a_failed_map_fixed_leaves_nothing_mapped_behind(tmp_path):
    """Finding 4: the kernel refuses the MAP_FIXED before unmapping (no MAP_PRIVATE/SHARED);
    the replay unmaps the target itself, so what it holds is what the budget counted."""
    table = read_trace(trace_file(tmp_path, [
        corpus.mmap(A, 8 << 20), corpus.mmap(A, 8 << 20, flags=corpus.MAP_ANONYMOUS | corpus.MAP_FIXED)]))
    config = ReplayConfig(touch="pages")
    program = compile_trace(table, config)
    state = EngineState(program, engine_params(config, probe_kernel_alignment()))
    state.run(0, 1)
    parent = (int(state.base[0]), int(state.base[0]) + (8 << 20))
    state.run(1, 2)
    assert state.err[1] != 0  # EINVAL
    vmas = [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps_snapshot()]
    assert not [v for v in vmas if v[0] < parent[1] and parent[0] < v[1]]
    state.run(2, program.ops)


def test_prot_pieces_keep_their_protection_through_mremap(tmp_path):
    """Finding 6's rows with --access stream: the PROT_NONE page kept by the shrink is not read."""
    trace = trace_file(tmp_path, [corpus.mmap(A, 16384), corpus.mprotect(A + 4096, 12288, 0),
                                  corpus.mremap(A, 16384, A, 8192, flags=0), corpus.munmap(A, 8192)])
    done = mmreplay("replay", trace, "--access", "stream:1", "--no-progress")
    assert done.returncode == 0, done.stderr
    program = compile_trace(read_trace(trace), ReplayConfig(access=Access.parse("stream:1")))
    munmaps = np.flatnonzero(program.code == 2)
    # Two pieces unmapped: the read-write page read first, the PROT_NONE one not.
    assert [int(program.length[i]) for i in munmaps] == [4096, 4096]
    assert [bool(program.mode[i] & 0x10) for i in munmaps] == [True, False]


def test_shared_anonymous_growth_is_never_touched(tmp_path):
    """Finding 5: touching past the shared memory object is a SIGBUS (the program's too)."""
    trace = trace_file(tmp_path, [corpus.mmap(A, 4096, flags=corpus.MAP_SHARED | corpus.MAP_ANONYMOUS),
                                  corpus.mremap(A, 4096, A + (1 << 20), 8192),
                                  corpus.munmap(A + (1 << 20), 8192)])
    done = mmreplay("replay", trace, "--touch", "full", "--access", "stream:2", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "shared_growth_not_touched 1" in done.stdout


# ---------------------------------------------------------------------------------------------
# 2, 10: threads.

def many_threads_trace(threads: int, per_thread: int = 2):
    rows = []
    for t in range(threads):
        for k in range(per_thread):
            address = A + (t * per_thread + k) * (1 << 20)
            rows += [corpus.mmap(address, 65536, tid=1000 + t), corpus.munmap(address, 65536, tid=1000 + t)]
    return corpus.table(rows)


def test_recorded_threads_share_at_most_max_os_threads():
    table = many_threads_trace(3 * MAX_OS_THREADS)
    config = ReplayConfig(touch="pages", threads="recorded")
    program = compile_trace(table, config)
    plan = plan_threads(program, table, "recorded")
    assert plan.threads == MAX_OS_THREADS
    assert sorted(t for group in plan.tids for t in group) == list(range(1000, 1000 + 3 * MAX_OS_THREADS))
    run = run_program(program, config, probe_kernel_alignment(), plan=plan)
    assert not run["interrupted"] and run["events"] == table.num_rows
    assert len(run["threads"]) == 3 * MAX_OS_THREADS
    assert all(entry["ops"]["mmap"]["count"] == 2 for entry in run["threads"].values())


@pytest.mark.parametrize("value", ["10000000", str(MAX_OS_THREADS + 1), "0"])
def test_absurd_thread_counts_are_refused(tmp_path, value):
    trace = trace_file(tmp_path, [corpus.mmap(A, 4096), corpus.munmap(A, 4096)])
    assert_one_line_error(mmreplay("replay", trace, "--threads", value), "bad --threads")


def chained_threads_trace(threads: int):
    """Every thread maps, then unmaps the next thread's mapping: thread t's second call waits for
    thread t+1's first, so every thread stays alive until the last one has started. How many
    thread stacks exist at once is then the trace's doing, not the scheduler's."""
    addresses = [A + t * (1 << 20) for t in range(threads)]
    rows = [corpus.mmap(a, 65536, tid=1000 + t) for t, a in enumerate(addresses)]
    rows += [corpus.munmap(addresses[(t + 1) % threads], 65536, tid=1000 + t)
             for t in range(threads)]
    return corpus.table(rows)


def test_chained_threads_wait_for_the_next_one():
    table = chained_threads_trace(8)
    plan = plan_threads(compile_trace(table, ReplayConfig(threads="recorded")), table, "recorded")
    assert plan.threads == 8 and plan.dependencies == 8
    waits = [(int(plan.thread_of_op[i]), int(plan.dep_thread[i]))
             for i in range(len(plan.dep_thread)) if plan.dep_thread[i] >= 0]
    assert sorted(waits) == [(t, (t + 1) % 8) for t in range(8)]


THREAD_START_CHILD = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    from test_hostile import chained_threads_trace, many_threads_trace
    from replay.engine.compile import compile_trace
    from replay.running.config import ReplayConfig
    from replay.measure.probes import MapsReader, maps_snapshot, probe_kernel_alignment
    from replay.running.session import run_program
    from replay.engine.threads import plan_threads
    table = chained_threads_trace(64)  # all 64 thread stacks are needed at once
    config = ReplayConfig(touch="pages", threads="recorded")
    program = compile_trace(table, config)
    plan = plan_threads(program, table, "recorded")
    alignment = probe_kernel_alignment()
    run_program(compile_trace(many_threads_trace(2), config), config, alignment,
                plan=plan_threads(compile_trace(many_threads_trace(2), config),
                                  many_threads_trace(2), "recorded"))  # warm: numba, threads
    with open("/proc/self/status") as handle:
        size = next(int(l.split()[1]) * 1024 for l in handle if l.startswith("VmSize:"))
    # Room for a few thread stacks of 8 MiB, not for 64.
    import threading
    threading.stack_size(8 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (size + (40 << 20), resource.RLIM_INFINITY))
    run = run_program(program, config, alignment, plan=plan)
    print(json.dumps({"interrupted": run["interrupted"], "reason": run["interrupt_reason"],
                      "release_failures": run["release_failures"]}))
""")


def test_a_thread_that_cannot_start_stops_the_run_with_its_reason():
    """Finding 10 (and 2): under an address-space limit, thread stacks cannot be had. The run
    stops with the reason, the threads that did start are stopped and joined, nothing waits
    forever, and the replay's memory is given back. The trace keeps every thread alive until the
    last has started, so 64 stacks of 8 MiB never fit in 40 MiB, however the threads are
    scheduled."""
    done = subprocess.run([sys.executable, "-c", THREAD_START_CHILD, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    import json

    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["interrupted"] and result["reason"].startswith("cannot start replay thread")
    assert result["release_failures"] == 0


def test_more_live_mappings_than_the_vma_limit_is_refused_with_one_line(tmp_path):
    """Finding 2's trace: at vm.max_map_count every mmap fails, Python's and the thread stacks'
    too (MemoryError in a worker, then a wait forever). Refused before anything is mapped."""
    limit = int(Path("/proc/sys/vm/max_map_count").read_text())
    n = limit + 100
    table = build_table({
        "ts_ns": np.arange(1, n + 1, dtype=np.int64), "tid": (np.arange(n) % 16 + 1).astype(np.int32),
        "op": np.full(n, OPS.index("mmap"), np.int8),
        "addr": (A + np.arange(n, dtype=np.uint64) * 8192).astype(np.uint64),
        "length": np.full(n, 4096, np.uint64), "prot": (1 + np.arange(n) % 2).astype(np.int32),
        "flags": np.full(n, corpus.ANON, np.int32), "fd": np.full(n, -1, np.int32),
        "errno": np.zeros(n, np.int32)}, new_metadata("test"))
    trace = write_trace(table, tmp_path / "vmas.arrow")
    done = mmreplay("replay", trace, "--threads", "recorded", "--touch", "none")
    assert_one_line_error(done, "mappings (VMAs) live", "vm.max_map_count")


# ---------------------------------------------------------------------------------------------
# 3: the size checks see what Arrow reads.

def test_the_size_check_reads_the_footer_blocks(tmp_path):
    table = corpus.table(corpus.GOOD_ROWS)
    data = corpus.arrow_bytes(pa.concat_tables([table.slice(0, 3), table.slice(3)]))
    assert check_ipc_sizes(data) == table.num_rows
    hidden = corpus.hidden_footer_batch(1 << 20, 4)
    (tmp_path / "h.arrow").write_bytes(hidden)
    assert_one_line_error(mmreplay("info", tmp_path / "h.arrow"), "a batch of 4 rows claims")


# ---------------------------------------------------------------------------------------------
# 7: outputs.

def test_outputs_write_through_fifos_and_devices_and_keep_modes(tmp_path):
    trace = trace_file(tmp_path, [corpus.mmap(A, 4096), corpus.munmap(A, 4096)])
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    done = mmreplay("replay", trace, "-o", fifo, "--no-progress")
    reader.join()
    assert done.returncode == 0, done.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode) and b'"mmreplay_result"' in received[0]

    # A character device of our own (the null device's numbers): a wrong output path must never
    # get to replace the machine's /dev/null.
    device = tmp_path / "null"
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        device = None  # not root: no device node to test with
    if device is not None:
        done = mmreplay("replay", trace, "-o", device, "--no-progress")
        assert done.returncode == 0 and stat.S_ISCHR(device.stat().st_mode)

    private = tmp_path / "private.json"
    private.write_text("old")
    private.chmod(0o600)
    assert mmreplay("replay", trace, "-o", private, "--no-progress").returncode == 0
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and private.read_text() != "old"

    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        assert_one_line_error(mmreplay("replay", trace, "-o", tmp_path / "sock"),
                              "not a file: refusing to write to it")


# ---------------------------------------------------------------------------------------------
# 8: strings from a trace or a result never reach the terminal raw.

def test_trace_strings_are_escaped_before_printing(tmp_path):
    hostile = "evil\x1b[2J\x1b]0;title\x07\r\nforged line\u202e"
    meta = dict(corpus.METADATA, source=hostile, host={"kernel": hostile, "hostname": hostile})
    trace = trace_file(tmp_path, [corpus.mmap(A, 4096), corpus.munmap(A, 4096)], metadata=meta)
    for command in (["replay", trace, "--no-progress"], ["info", trace]):
        done = mmreplay(*command)
        assert done.returncode == 0, done.stderr
        for char in "\x1b\x07\r\u202e":
            assert char not in done.stdout
        assert "forged line" not in [line.strip() for line in done.stdout.splitlines()]
        assert "evil\\x1b[2J" in done.stdout
    bad_version = dict(corpus.METADATA, format_version="\x1b[31m9\r\n")
    (tmp_path / "v.arrow").write_bytes(corpus.arrow_bytes(corpus.table([corpus.mmap(A, 4096)],
                                                                        bad_version)))
    done = mmreplay("info", tmp_path / "v.arrow")
    assert_one_line_error(done, "\\x1b[31m")


# ---------------------------------------------------------------------------------------------
# 9: bounded memory from small inputs.

def test_import_refuses_more_calls_than_max_events(tmp_path):
    lines = [corpus.MAP_LINE.format(pid=100, ts=f"1700000000.{i:06d}", length=8192, addr=A)
             for i in range(300)]
    log = tmp_path / "big.log"
    log.write_text("\n".join(lines) + "\n")
    done = mmreplay("import", log, "-o", tmp_path / "t.arrow", "--max-events", "100")
    assert_one_line_error(done, "more than 100 mm calls", "--max-events")
    assert not (tmp_path / "t.arrow").exists()


# ---------------------------------------------------------------------------------------------
# 11: one line for every bad input, never a traceback or a block.

def test_one_line_errors(tmp_path):
    trace = trace_file(tmp_path, [corpus.mmap(A, 4096), corpus.munmap(A, 4096)])
    good = tmp_path / "good.json"
    assert mmreplay("replay", trace, "-o", good, "--no-progress").returncode == 0
    import json

    document = json.loads(good.read_text())
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "null.json").write_text(json.dumps(dict(document, trace=None)))
    long_kernel = dict(document, host=dict(document["host"], kernel="x" * 100_000))
    (tmp_path / "long.json").write_text(json.dumps(long_kernel))
    assert_one_line_error(mmreplay("report", tmp_path / "deep.json", good), "nested too deeply")
    assert_one_line_error(mmreplay("report", tmp_path / "null.json", good), "'trace' is not")
    done = mmreplay("report", tmp_path / "long.json", good)
    assert done.returncode == 0 and max(len(line) for line in done.stdout.splitlines()) <= 80
    assert_one_line_error(mmreplay("info", "/proc/self/mem"), "cannot read")
    assert_one_line_error(mmreplay("replay", trace, "--access", "stream:99999999999999999999"),
                          "bad --access")
    assert_one_line_error(mmreplay("layout", trace, "--width", "99999999999999999999"), "--width")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # nobody writes to it: opening it for reading would block
    assert_one_line_error(mmreplay("info", fifo, timeout=120), "is a FIFO")


def test_importing_a_fifo_nobody_writes_to_can_be_stopped(tmp_path):
    """Finding 11: `import FIFO` waits for a writer (as cat would), but SIGTERM ends the wait
    with one line; it used to sit in open() for ever, its signal handler only taking note."""
    from processes import mmreplay as start, wait_for

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    child = start("import", fifo, "-o", tmp_path / "f.arrow", text=True)

    def holds_the_fifo() -> bool:
        try:
            return any(os.readlink(f"/proc/{child.pid}/fd/{fd}") == str(fifo)
                       for fd in os.listdir(f"/proc/{child.pid}/fd"))
        except OSError:
            return False

    wait_for(holds_the_fifo, "the import to open the FIFO")
    child.send_signal(signal.SIGTERM)
    _, stderr = child.communicate(timeout=300)
    assert child.returncode == 2, stderr
    assert stderr.strip().splitlines() == [f"Error: {fifo}: interrupted while waiting for a "
                                           "writer on this FIFO"]
    assert not (tmp_path / "f.arrow").exists()


def test_ctrl_c_while_compiling_exits_130(tmp_path, monkeypatch):
    import replay.running.runs

    trace = trace_file(tmp_path, [corpus.mmap(A, 4096), corpus.munmap(A, 4096)])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what SIGINT raises in the main thread while compiling

    monkeypatch.setattr(replay.running.runs, "compile_trace", interrupted)
    result = CliRunner().invoke(cli, ["replay", str(trace), "--no-progress"])
    assert result.exit_code == 128 + signal.SIGINT.value
    assert "Interrupted" in result.output and "Traceback" not in result.output
