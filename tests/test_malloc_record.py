"""record --malloc: a real C program with known allocations under the real LD_PRELOAD recorder.

The program prints the pointers it got; the trace must hold exactly its calls, per thread, with
those pointers (the result-pointer identity is checked against the program, not against
mmreplay's own idea of it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from traces import read_trace, trace_metadata
from traces.format import column_np, op_names
from traces.malloc_record import read_recording
from traces.malloc_shim import shim_library
from replay.alloc.alloc_runs import find_library
from traces.schema import ALLOC_OPS, OPS

from processes import PATIENCE_S, mmreplay

ROOT = Path(__file__).resolve().parent.parent
PROGRAM = ROOT / "tests" / "data" / "c" / "known_allocations.c"
pytestmark = pytest.mark.skipif(shutil.which("strace") is None or shutil.which("gcc") is None,
                                reason="needs strace and gcc")


@pytest.fixture(scope="module")
def known(tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("known") / "known_allocations"
    # -fno-builtin: gcc would turn realloc(NULL, n) into malloc(n) and drop free(NULL)
    subprocess.run(["gcc", "-O1", "-fno-builtin", "-o", str(binary), str(PROGRAM), "-pthread"],
                   check=True)
    return binary


def _alloc_rows(table) -> list[tuple]:
    """(tid, op, size, pointer, old pointer) of every allocation row, in trace order."""
    codes = op_names(table)
    addr, length = column_np(table, "addr"), column_np(table, "length")
    new_addr, hint = column_np(table, "new_addr"), column_np(table, "hint")
    tid = column_np(table, "tid")
    rows = []
    for row in np.flatnonzero(codes >= OPS.index(ALLOC_OPS[0])).tolist():
        op = OPS[codes[row]]
        if op == "realloc":
            rows.append((int(tid[row]), op, int(length[row]), int(new_addr[row]), int(addr[row])))
        elif op == "free":
            rows.append((int(tid[row]), op, 0, int(addr[row]), 0))
        else:
            rows.append((int(tid[row]), op, int(length[row]), int(addr[row]), 0))
    return rows


def test_records_the_exact_calls_of_two_threads_and_a_realloc_chain(known, tmp_path):
    out = tmp_path / "known.arrow"
    child = mmreplay("record", "--malloc", "-o", out, "--", known)
    stdout, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 0, stderr.decode()
    expected: dict[int, list] = {}
    for line in stdout.decode().splitlines():
        tid, op, size, pointer, old = line.split()
        expected.setdefault(int(tid), []).append((op, int(size), int(pointer, 16), int(old, 16)))
    assert len(expected) == 2 and len(sum(expected.values(), [])) == 24

    table = read_trace(out)
    recorded: dict[int, list] = {}
    for tid, *call in _alloc_rows(table):
        recorded.setdefault(tid, []).append(tuple(call))
    for tid, calls in expected.items():
        # libc allocates for itself around the program's calls (pthread_create's TLS, stdio's
        # buffer, thread exit): the program's calls must appear together, exactly, in order.
        seen = recorded[tid]
        first = seen.index(calls[0])
        assert seen[first:first + len(calls)] == calls, (tid, seen)
    # the realloc chain: each realloc's old pointer is the previous one's result
    worker = next(calls for calls in expected.values() if calls[0][0] == "malloc"
                  and calls[0][1] == 200)
    chain = [c for c in worker if c[0] == "realloc"]
    assert [c[1] for c in chain] == [10, 300000, 5]
    assert chain[0][3] == 0 and chain[1][3] == chain[0][2] and chain[2][3] == chain[1][2]
    # the aligned family keeps its alignment, in the hint column
    codes, hint = op_names(table), column_np(table, "hint")
    aligned = {OPS[c]: int(h) for c, h in zip(codes.tolist(), hint.tolist())
               if OPS[c] in ("posix_memalign", "aligned_alloc", "memalign")}
    assert aligned == {"posix_memalign": 64, "aligned_alloc": 4096, "memalign": 256}

    meta = trace_metadata(table)
    assert meta["malloc"]["included"]["exe"] == str(known)
    assert meta["malloc"]["records_lost"] is False
    assert meta["malloc"]["recorder_mmaps_removed"] == 2  # one buffer per thread
    # the syscall level is there too, on the same clock, each thread's clock monotonic
    assert (codes == OPS.index("mmap")).sum() > 5
    ts, tids = column_np(table, "ts_ns"), column_np(table, "tid")
    for tid in expected:
        assert np.all(np.diff(ts[tids == tid]) >= 0)


def test_fork_and_exec_children_record_into_files_of_their_own(known, tmp_path):
    folder = tmp_path / "recording"
    folder.mkdir()
    env = {**os.environ, "LD_PRELOAD": str(shim_library()), "MMREPLAY_MALLOC_DIR": str(folder)}
    subprocess.run([str(known), "fork-exec"], env=env, check=True, timeout=PATIENCE_S)
    images, lost = read_recording(folder)
    assert not lost
    sizes = {(image.pid, image.generation): sorted(image.size[image.ops == OPS.index("malloc")]
                                                   .tolist()) for image in images}
    parent = next(i for i in images if i.ppid == os.getpid())
    child = next(i for i in images if i.ppid == parent.pid)
    # each call once, in the image that made it: the parent's buffer is not copied into the
    # child's file at fork, the exec'd image (same pid) writes a second file, _exit flushes
    assert sizes[(parent.pid, 0)] == [111111]
    assert sizes[(child.pid, 0)] == [222222]
    assert sizes[(child.pid, 1)] == [333333]
    assert len(images) == 3


def test_a_recording_of_both_levels_replays_at_the_mm_level(known, tmp_path):
    out = tmp_path / "known.arrow"
    child = mmreplay("record", "--malloc", "-o", out, "--", known)
    _, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 0, stderr.decode()
    assert b"allocation calls: " in stderr
    table = read_trace(out)
    allocations = int((op_names(table) >= OPS.index(ALLOC_OPS[0])).sum())
    result = tmp_path / "r.json"
    child = mmreplay("replay", out, "-o", result, "--touch", "none")
    _, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 0, stderr.decode()
    run = json.loads(result.read_text())["runs"][0]
    assert run["skipped"]["allocation_calls"] == allocations
    assert run["ops"]["mmap"]["count"] > 0


BLOCK_MAPPING = (1 << 20) + 4096  # glibc: a 1 MiB block, its header, rounded to pages


def _mm_lengths(table, op: str) -> list[int]:
    codes = op_names(table)
    chosen = (codes == OPS.index(op)) & (column_np(table, "errno") == 0)
    return sorted(column_np(table, "length")[chosen].tolist())


@pytest.mark.skipif(find_library("libjemalloc.so.2") is None,
                    reason="Debian's libjemalloc2 is not installed (.ci/run installs it)")
def test_allocators_make_the_mm_calls_they_are_known_for(known, tmp_path):
    """glibc above a fixed mmap threshold maps and unmaps each 1 MiB block by itself, as the
    recorded program did; jemalloc (preloaded) carves the same blocks out of larger extents."""
    tunable = "glibc.malloc.mmap_threshold=131072"  # fixed: no dynamic threshold
    recorded = tmp_path / "buffers.arrow"
    env = {**os.environ, "GLIBC_TUNABLES": tunable}
    child = mmreplay("record", "--malloc", "-o", recorded, "--", known, "buffers", env=env)
    _, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 0, stderr.decode()
    real = read_trace(recorded)
    assert _mm_lengths(real, "mmap").count(BLOCK_MAPPING) == 16
    assert _mm_lengths(real, "munmap").count(BLOCK_MAPPING) == 16

    derived = {}
    for allocator, extra in (("glibc", ["--tunable", tunable]), ("jemalloc", [])):
        out, result = tmp_path / f"{allocator}.arrow", tmp_path / f"{allocator}.json"
        child = mmreplay("replay", recorded, "--allocator", allocator, *extra, "--mm-trace", out,
                         "-o", result)
        _, stderr = child.communicate(timeout=PATIENCE_S)
        assert child.returncode == 0, stderr.decode()
        document = json.loads(result.read_text())
        run = document["runs"][0]
        assert run["ops"]["malloc"]["count"] >= 16 and run["failed_in_replay"] == 0
        providers = set(run["providers"][name] for name in ("malloc", "free", "realloc"))
        assert len(providers) == 1
        derived[allocator] = (read_trace(out), providers.pop(), document)

    glibc, glibc_library, _ = derived["glibc"]
    assert "libc.so" in glibc_library
    # the replay through glibc makes the recorded program's own mm calls for the blocks
    assert _mm_lengths(glibc, "mmap").count(BLOCK_MAPPING) == 16
    assert _mm_lengths(glibc, "munmap").count(BLOCK_MAPPING) == 16

    jemalloc, jemalloc_library, document = derived["jemalloc"]
    assert "jemalloc" in jemalloc_library
    assert BLOCK_MAPPING not in _mm_lengths(jemalloc, "mmap")
    assert BLOCK_MAPPING not in _mm_lengths(jemalloc, "munmap")
    assert len(_mm_lengths(jemalloc, "mmap")) < 16  # extents hold several blocks
    assert max(_mm_lengths(jemalloc, "mmap")) >= 2 << 20
    assert document["mm_trace"]["events"] == jemalloc.num_rows
    assert trace_metadata(jemalloc)["derived_from"]["allocator"] == "jemalloc"


MALLOC_DEBUG = next((path for path in ("/lib/x86_64-linux-gnu/libc_malloc_debug.so.0",
                                       "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0",
                                       "/lib64/libc_malloc_debug.so.0")
                     if os.path.exists(path)), None)


@pytest.mark.skipif(MALLOC_DEBUG is None, reason="glibc's libc_malloc_debug.so.0 is not here")
def test_glibc_mtrace_output_imports_as_the_recorder_saw_the_same_calls(known, tmp_path):
    """Both doors on one run: glibc's mtrace and the recorder see the same calls and pointers;
    mtrace cannot tell calloc, memalign and realloc(NULL, n) from malloc."""
    folder, log, out = tmp_path / "rec", tmp_path / "mtrace.txt", tmp_path / "m.arrow"
    folder.mkdir()
    env = {**os.environ, "LD_PRELOAD": f"{shim_library()}:{MALLOC_DEBUG}",
           "MMREPLAY_MALLOC_DIR": str(folder), "MALLOC_TRACE": str(log)}
    subprocess.run([str(known), "mtrace"], env=env, check=True, timeout=PATIENCE_S)
    child = mmreplay("import", log, "-o", out)
    _, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 0, stderr.decode()
    imported = [(op, size, pointer) for _, op, size, pointer, _ in _alloc_rows(read_trace(out))]
    assert trace_metadata(read_trace(out))["source"] == "mtrace"
    (image,), _ = read_recording(folder)
    seen = []
    for op, size, ptr, aux in zip(image.ops.tolist(), image.size.tolist(), image.ptr.tolist(),
                                  image.aux.tolist()):
        name = OPS[op]
        if name == "realloc" and aux == 0:
            name = "malloc"  # mtrace logs realloc(NULL, n) as an allocation
        elif name == "realloc" and size == 0 and ptr == 0:
            seen.append(("free", 0, aux))  # and realloc(p, 0) as a free
            continue
        elif name not in ("free", "realloc"):
            name = "malloc"
        if name == "free" and ptr == 0:
            continue  # mtrace does not log free(NULL)
        seen.append((name, size if name != "free" else 0, ptr))
    assert len(imported) == 11
    first = seen.index(imported[0])
    assert seen[first:first + len(imported)] == imported
