"""strace -> trace: real programs recorded with strace in every output style, checked against the
calls the programs report making; every line form of the issue; compression; the CLI."""

from __future__ import annotations

import bz2
import collections
import gzip
import json
import lzma
import re
import shutil
import subprocess
import sys
from processes import PATIENCE_S
from pathlib import Path

import pyarrow as pa
import pytest
from click.testing import CliRunner

from replay.cli import cli
from traces import read_trace, trace_metadata
from traces.errors import MmreplayError
from traces.schema import MADV, MAP, PROT
from traces.strace import default_output, import_logs
from traces.strace_assemble import ff_pid_of

ROOT = Path(__file__).resolve().parent.parent
STRACE = shutil.which("strace")
needs_strace = pytest.mark.skipif(STRACE is None, reason="strace is not installed")
MM = "trace=mmap,munmap,mremap,madvise,mprotect,brk"
MiB = 1 << 20
ENOMEM, EINVAL = 12, 22

# Four threads map and unmap 1-8 MiB buffers at once (mmap module: MAP_SHARED|MAP_ANONYMOUS) and
# report (thread id, address, length) of each; every length is distinct.
THREADS_PROGRAM = r"""
import ctypes, json, mmap, os, threading
MiB = 1 << 20
results = {}
start = threading.Barrier(4)
def work(t):
    start.wait()
    mine = []
    for k in range(6):
        length = (1 + (t + k) % 8) * MiB + (t + 1) * 4096
        m = mmap.mmap(-1, length)
        view = ctypes.c_char.from_buffer(m)
        mine.append((ctypes.addressof(view), length))
        del view
        m[0] = 1
        m.close()
    results[threading.get_native_id()] = mine
threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(json.dumps({"pid": os.getpid(), "threads": results}))
"""

# One thread, C-level calls through ctypes: mremap (MAYMOVE, then MAYMOVE|FIXED with its fifth
# argument), madvise (HUGEPAGE, DONTNEED, COLLAPSE), mprotect, and calls that fail.
CTYPES_PROGRAM = r"""
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
vp, sz, i = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int
libc.mmap.restype = vp; libc.mmap.argtypes = [vp, sz, i, i, i, ctypes.c_long]
libc.mremap.restype = vp; libc.mremap.argtypes = [vp, sz, sz, i, vp]
libc.madvise.argtypes = [vp, sz, i]; libc.mprotect.argtypes = [vp, sz, i]
libc.munmap.argtypes = [vp, sz]
MiB = 1 << 20
first, moved = 3 * MiB + 12288, 5 * MiB + 12288
libc.madvise(None, 0, 12345)  # marker: an advice nobody uses
a = libc.mmap(None, first, 3, 0x22, -1, 0)
b = libc.mremap(a, first, moved, 1, None)
reserve = libc.mmap(None, 6 * MiB, 0, 0x4022, -1, 0)
c = libc.mremap(b, moved, moved, 3, reserve)
libc.madvise(c, 2 * MiB, 14)
libc.madvise(c, 2 * MiB, 4)
ctypes.set_errno(0)
collapse = libc.madvise(c, 2 * MiB, 25)
collapse_errno = ctypes.get_errno() if collapse else 0
libc.mprotect(c, 4096, 1)
libc.munmap(c + 1, 4096)
libc.mmap(None, 1 << 60, 3, 0x22, -1, 0)
libc.munmap(c, moved)
libc.munmap(reserve, 6 * MiB)
libc.madvise(None, 0, 12345)
print(json.dumps({"pid": os.getpid(), "a": a, "b": b, "c": c, "reserve": reserve,
                  "collapse_errno": collapse_errno}))
"""


def run_traced(tmp_path: Path, program: str, *options: str, to_stderr: bool = False,
               name: str = "app.log") -> tuple[Path, dict]:
    """Run ``program`` under strace with ``options``; return the log path and its JSON output."""
    script = tmp_path / "program.py"
    script.write_text(program)
    log = tmp_path / name
    command = [STRACE, *options, "-e", MM]
    if not to_stderr:
        command += ["-o", str(log)]
    command += [sys.executable, str(script)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PATIENCE_S)
    assert done.returncode == 0, done.stderr[-2000:]
    if to_stderr:
        log.write_text(done.stderr)
    return log, json.loads(done.stdout)


def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def check_threads_program(table: pa.Table, reported: dict) -> None:
    """Each reported buffer is one mmap then one munmap, by the thread that made them."""
    by_length = collections.defaultdict(list)
    for index, row in enumerate(rows(table)):
        by_length[row["length"]].append((index, row))
    tids = set()
    for tid, buffers in reported["threads"].items():
        tids.add(int(tid))
        for addr, length in buffers:
            calls = [(i, r) for i, r in by_length[length] if r["addr"] == addr]
            assert [r["op"] for _, r in calls] == ["mmap", "munmap"], (addr, length, calls)
            (i_map, mapped), (i_unmap, unmapped) = calls
            assert i_map < i_unmap
            assert mapped["tid"] == unmapped["tid"] == int(tid)
            assert (mapped["prot"], mapped["flags"], mapped["fd"], mapped["offset"]) == (
                PROT["PROT_READ"] | PROT["PROT_WRITE"], MAP["MAP_SHARED"] | MAP["MAP_ANONYMOUS"],
                -1, 0)
            assert mapped["hint"] == 0 and mapped["errno"] == 0 and unmapped["errno"] == 0
    assert len(tids) == 4


def check_ctypes_program(table: pa.Table, reported: dict, tid: int | None) -> None:
    """The program's calls appear, in order, between its two marker calls."""
    all_rows = rows(table)
    markers = [i for i, r in enumerate(all_rows) if r["op"] == "madvise" and r["advice"] == 12345]
    assert len(markers) == 2
    window = all_rows[markers[0] + 1:markers[1]]
    a, b, c, reserve = reported["a"], reported["b"], reported["c"], reported["reserve"]
    first, moved = 3 * MiB + 12288, 5 * MiB + 12288
    expected = [
        dict(op="mmap", addr=a, length=first, hint=0, prot=3, flags=0x22, fd=-1, offset=0,
             errno=0),
        dict(op="mremap", addr=a, length=first, new_length=moved, new_addr=b, flags=1, errno=0),
        dict(op="mmap", addr=reserve, length=6 * MiB, prot=0, flags=0x4022, errno=0),
        dict(op="mremap", addr=b, length=moved, new_length=moved, new_addr=c, flags=3,
             hint=reserve, errno=0),
        dict(op="madvise", addr=c, length=2 * MiB, advice=MADV["MADV_HUGEPAGE"], errno=0),
        dict(op="madvise", addr=c, length=2 * MiB, advice=MADV["MADV_DONTNEED"], errno=0),
        dict(op="madvise", addr=c, length=2 * MiB, advice=MADV["MADV_COLLAPSE"],
             errno=reported["collapse_errno"]),
        dict(op="mprotect", addr=c, length=4096, prot=1, errno=0),
        dict(op="munmap", addr=c + 1, length=4096, errno=EINVAL),
        dict(op="mmap", addr=0, length=1 << 60, prot=3, flags=0x22, errno=ENOMEM),
        dict(op="munmap", addr=c, length=moved, errno=0),
        dict(op="munmap", addr=reserve, length=6 * MiB, errno=0),
    ]
    found = iter(window)
    for want in expected:  # a subsequence: the interpreter may map memory in between
        for row in found:
            if all(row[key] == value for key, value in want.items()):
                if tid is not None:
                    assert row["tid"] == tid
                break
        else:
            pytest.fail(f"call not found in order: {want}")


@needs_strace
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_threads_recorded_with_pid_column(tmp_path, fast):
    log, reported = run_traced(tmp_path, THREADS_PROGRAM, "-f", "-ttt", "-T")
    result = import_logs([log], fast=fast)
    check_threads_program(result.table, reported)
    report = result.report
    assert report["unparsed"]["count"] == 0
    assert report["unmatched"] == {"unfinished": 0, "resumed": 0, "first_lines": []}
    assert report["timestamps"] == "epoch" and report["durations"]
    assert report["first_process"] == {"pid": reported["pid"], "exit_status": 0}
    assert sum(report["line_kinds"].values()) == report["lines"]
    assert result.table.column("duration_ns").null_count == 0


@needs_strace
def test_threads_recorded_to_stderr_with_pid_brackets_and_wall_clock(tmp_path):
    log, reported = run_traced(tmp_path, THREADS_PROGRAM, "-f", "-tt", to_stderr=True)
    text = log.read_text()
    assert "[pid " in text and "strace: Process" in text
    result = import_logs([log])
    check_threads_program(result.table, reported)
    report = result.report
    assert report["timestamps"] == "wall-clock" and not report["durations"]
    assert report["unparsed"]["count"] == 0
    # lines without a [pid N] prefix belong to the command's first process
    main = [r for r in rows(result.table) if r["tid"] == reported["pid"]]
    assert len(main) > 10
    assert report["tid_for_lines_without_pid"][0]["tid"] == reported["pid"]
    assert report["line_kinds"]["strace_message"] >= 4


@needs_strace
def test_ff_files_given_together(tmp_path):
    log, reported = run_traced(tmp_path, THREADS_PROGRAM, "-ff", "-t", name="split")
    files = sorted(tmp_path.glob("split.*"))
    assert len(files) >= 5  # the main thread and four workers
    result = import_logs(files)
    check_threads_program(result.table, reported)
    assert result.report["timestamps"] == "wall-clock"
    tids = {r["tid"] for r in rows(result.table)}
    assert len(tids) == 5 and tids <= {ff_pid_of(f) for f in files}


@needs_strace
def test_ctypes_mremap_madvise_and_failures(tmp_path):
    log, reported = run_traced(tmp_path, CTYPES_PROGRAM, "-f", "-ttt", "-T")
    result = import_logs([log])
    check_ctypes_program(result.table, reported, reported["pid"])
    assert result.report["failed_calls"]["mmap"] >= 1
    assert result.report["failed_calls"]["munmap"] >= 1


@needs_strace
@pytest.mark.parametrize("options", [
    [], ["-X", "verbose"], ["-X", "raw"], ["-e", "raw=all"], ["-y"], ["-i"], ["-n"],
    ["--timestamps=unix,ns", "--syscall-times=ns", "-T"], ["-t"],
], ids=["plain", "xverbose", "xraw", "rawall", "fdpaths", "ip", "syscallnr", "ns", "seconds"])
def test_single_process_logs_in_every_argument_style(tmp_path, options):
    """No -f: lines carry no pid; --tid names the thread."""
    log, reported = run_traced(tmp_path, CTYPES_PROGRAM, *options)
    result = import_logs([log], tid=reported["pid"], fast=True)
    assert result.report["unparsed"]["count"] == 0
    check_ctypes_program(result.table, reported, reported["pid"])
    reference = import_logs([log], tid=reported["pid"], fast=False)
    assert reference.table.equals(result.table)
    default = import_logs([log])
    assert set(default.table.column("tid").to_pylist()) == {0}
    assert "pass --tid" in default.report["tid_for_lines_without_pid"][0]["source"]


@needs_strace
def test_compressed_logs_are_detected_by_content(tmp_path):
    log, reported = run_traced(tmp_path, THREADS_PROGRAM, "-f", "-ttt", "-T")
    data = log.read_bytes()
    plain = import_logs([log])
    zstd_path = tmp_path / "zstd.log"  # misleading names: the magic bytes decide
    with pa.CompressedOutputStream(str(zstd_path), "zstd") as sink:
        sink.write(data)
    variants = {
        tmp_path / "a.log.gz": gzip.compress(data),
        tmp_path / "b.txt": lzma.compress(data),
        tmp_path / "c.bz2": bz2.compress(data),
    }
    for path, payload in variants.items():
        path.write_bytes(payload)
    for path in [*variants, zstd_path]:
        result = import_logs([path])
        assert result.table.equals(plain.table), path
        check_threads_program(result.table, reported)


@pytest.mark.parametrize("compress", [None, gzip.compress, lzma.compress, bz2.compress, "zstd"],
                         ids=["plain", "gzip", "xz", "bzip2", "zstd"])
def test_logs_read_from_a_pipe(tmp_path, compress):
    """`mmreplay import <(xzcat app.log.xz)`: no seeking, no size, same trace."""
    import os
    import threading

    text = "".join(f"7  100.{i:06d} munmap(0x{0x7f0000000000 + i * 4096:x}, 4096) = 0\n"
                   for i in range(3000)).encode()
    if compress == "zstd":
        frame = tmp_path / "frame.zst"  # a real zstd frame, as the zstd tool writes it
        with pa.CompressedOutputStream(str(frame), "zstd") as sink:
            sink.write(text)
        payload = frame.read_bytes()
    else:
        payload = compress(text) if compress else text
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(payload,), daemon=True)
    writer.start()
    seen = []
    result = import_logs([fifo], progress=seen.append)
    writer.join()
    assert result.table.num_rows == 3000 and result.report["unparsed"]["count"] == 0
    assert seen == sorted(seen) and seen[-1] == len(payload)


def test_progress_reports_every_compressed_byte(tmp_path):
    lines = "".join(f"1 {1700000000 + i}.000001 munmap(0x{0x10000 + i * 4096:x}, 4096) = 0\n"
                    for i in range(5000))
    path = tmp_path / "log.gz"
    path.write_bytes(gzip.compress(lines.encode()))
    seen = []
    result = import_logs([path], chunk_bytes=4096, progress=seen.append)
    assert len(seen) > 1 and seen == sorted(seen) and seen[-1] == path.stat().st_size
    assert result.table.num_rows == 5000


def test_an_interrupted_import_keeps_what_it_read(tmp_path):
    lines = "".join(f"1 {1700000000 + i}.000001 munmap(0x{0x10000 + i * 4096:x}, 4096) = 0\n"
                    for i in range(20000))
    path = tmp_path / "long.log"
    path.write_text(lines)
    calls = []

    def interrupted():
        calls.append(1)
        return len(calls) >= 3  # a signal arrives while the third chunk is read

    result = import_logs([path], fast=True, chunk_bytes=64 << 10, interrupted=interrupted)
    assert result.report["interrupted"] is True
    read = result.report["lines"]
    assert 0 < read < 20000 and result.table.num_rows == read
    assert result.table.column("addr").to_pylist() == [0x10000 + i * 4096 for i in range(read)]


def test_signals_during_an_import_are_noted_not_fatal():
    import os
    import signal

    from traces.signals import SignalNotes

    with SignalNotes() as notes:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
    assert notes.received and notes.name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_damaged_compressed_log_is_one_clear_error(tmp_path):
    path = tmp_path / "log.xz"
    path.write_bytes(lzma.compress(b"1 1.0 munmap(0x1000, 4096) = 0\n" * 1000)[:60])
    with pytest.raises(MmreplayError, match="damaged xz data"):
        import_logs([path])


# --- every line form, hand-written from real strace output ------------------------------------

FORMS_LOG = """\
4414  1795826565.085056 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f67c81ec000 <0.000037>
4414  1795826565.085174 mmap(NULL, 34547, PROT_READ, MAP_PRIVATE, 3, 0) = 0x7f67c81e3000 <0.000039>
4414  1795826565.085346 mmap(0x7f67c8027000, 1400832, PROT_READ|PROT_EXEC, MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE, 3, 0x26000) = 0x7f67c8027000 <0.000040>
4414  1795826565.085400 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3 <0.000020>
4414  1795826565.085500 brk(NULL)               = 0x5594d7e2d000 <0.000034>
4414  1795826565.085600 brk(0x5594d7e4e000)     = 0x5594d7e4e000 <0.000010>
4415  1795826565.085700 mmap(NULL, 8392704, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_STACK, -1, 0) = 0x7fd4f3162000 <0.000048>
4415  1795826565.085800 mprotect(0x7fd4f3163000, 8388608, PROT_READ|PROT_WRITE) = 0 <0.000058>
4415  1795826565.085900 mmap(NULL, 4198400, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0 <unfinished ...>
4414  1795826565.086000 munmap(0x7fd4f3062000, 1048576 <unfinished ...>
4416  1795826565.086100 madvise(0x7fd4f1800000, 4194304, MADV_HUGEPAGE) = 0 <0.000008>
4414  1795826565.086200 <... munmap resumed>) = 0 <0.000037>
4415  1795826565.086300 <... mmap resumed>) = 0x7fb9367dc000 <0.000082>
4416  1795826565.086400 madvise(0x7fd4f1800000, 4194304, MADV_COLLAPSE) = -1 EINVAL (Invalid argument) <0.000035>
4416  1795826565.086500 mremap(0x7f5bea500000, 1048576, 2097152, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f5bea600000) = 0x7f5bea600000 <0.000011>
4416  1795826565.086600 mmap(NULL, 1152921504606846976, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = -1 ENOMEM (Cannot allocate memory) <0.000006>
4416  1795826565.086700 mmap(NULL, 2097152, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|21<<MAP_HUGE_SHIFT, -1, 0) = -1 ENOMEM (Cannot allocate memory) <0.000043>
4416  1795826565.086800 mmap(NULL, 8192, PROT_READ|PROT_WRITE|0x10, MAP_PRIVATE|MAP_ANONYMOUS|0x200, -1, 0) = 0x7f83e59e6000 <0.000029>
4416  1795826565.086900 madvise(0x7f83e5200000, 4096, 0x42 /* MADV_??? */) = -1 EINVAL (Invalid argument) <0.000028>
4416  1795826565.087000 mmap(NULL, 8192, 0x3 /* PROT_READ|PROT_WRITE */, 0x222 /* MAP_PRIVATE|MAP_ANONYMOUS|0x200 */, -1, 0) = 0x7efdbdd6c000 <0.000030>
4416  1795826565.087100 madvise(0x7f83e5200000, 4096, MADV_FREE) = 0 <0.000031>
4416  1795826565.087200 madvise(0x7f83e5200000, 4096, MADV_NOHUGEPAGE) = 0 <0.000030>
4416  1795826565.087300 mmap(NULL, 4096, PROT_READ, MAP_SHARED, 3</etc/passwd>, 0x1000) = 0x7f9a5c112000 <0.000031>
4416  1795826565.087400 mmap(0x200000000, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000 <0.000030>
4414  1795826565.087500 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=4417, si_uid=0, si_status=0, si_utime=0, si_stime=0} ---
4417  1795826565.087600 mmap(NULL, 4096, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>) = ?
4418  1795826565.087700 munmap(0x7f0000000000, 4096 <unfinished ...>
4418  1795826565.087800 <... munmap resumed> <unfinished ...>) = ?
4419  1795826565.087850 mprotect(0x7f0000000000, 4096, PROT_READ) = ?
4417  1795826565.087900 +++ killed by SIGKILL +++
4418  1795826565.088000 +++ exited with 0 +++
4416  1795826565.088100 futex(0x7f0000000010, FUTEX_WAIT_PRIVATE, 0, NULL <unfinished ...>
4416  1795826565.088200 <... futex resumed>) = 0 <0.000100>
4414  1795826565.088300 this line is not strace output
4414  1795826565.088400 mmap(NULL, 4096, PROT_READ|PROT_BOGUS, MAP_PRIVATE, -1, 0) = 0x7f0000001000 <0.000001>

4414  1795826565.088500 +++ exited with 3 +++
"""


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "reference"])
def test_every_line_form(tmp_path, fast):
    path = tmp_path / "forms.log"
    path.write_text(FORMS_LOG)
    result = import_logs([path], fast=fast)
    report = result.report
    table = rows(result.table)
    assert report["lines"] == 37
    assert report["mm_calls"] == {"mmap": 11, "munmap": 1, "mremap": 1, "madvise": 5,
                                  "mprotect": 1, "brk": 2}
    assert report["ignored_calls"] == 2  # openat and futex (the futex resumed line is not a call)
    assert report["line_kinds"]["non_mm_resumed"] == 1
    assert report["signal_lines"] == 1 and report["exit_lines"] == 3
    assert report["line_kinds"]["blank"] == 1
    assert report["unknown_results"]["count"] == 3
    assert report["unknown_results"]["by_op"] == {"mmap": 1, "munmap": 1, "mprotect": 1}
    assert report["unknown_results"]["first_lines"] == [f"{path}:26", f"{path}:28", f"{path}:29"]
    assert report["unparsed"] == {"count": 2, "mm": 1,
                                  "first_lines": [f"{path}:34", f"{path}:35"]}
    assert report["first_process"] == {"pid": 4414, "exit_status": 3}
    assert sum(report["line_kinds"].values()) == 37
    assert report["failed_calls"] == {"mmap": 2, "madvise": 2}

    by_op = collections.defaultdict(list)
    for row in table:
        by_op[row["op"]].append(row)
    brk_null, brk_set = by_op["brk"]
    assert (brk_null["addr"], brk_null["length"], brk_null["new_addr"]) == (0, 0, 0x5594d7e2d000)
    assert brk_set["new_addr"] == brk_set["addr"] == 0x5594d7e4e000
    fixed = by_op["mmap"][2]
    assert (fixed["hint"], fixed["addr"], fixed["fd"], fixed["offset"]) == (
        0x7f67c8027000, 0x7f67c8027000, 3, 0x26000)
    assert fixed["flags"] == MAP["MAP_PRIVATE"] | MAP["MAP_FIXED"] | MAP["MAP_DENYWRITE"]
    huge = [r for r in by_op["mmap"] if r["length"] == 2097152 and r["errno"] == ENOMEM][0]
    assert huge["flags"] == 0x22 | MAP["MAP_HUGETLB"] | (21 << 26)
    unknown_bits = [r for r in by_op["mmap"] if r["flags"] == 0x222]
    assert [r["prot"] for r in unknown_bits] == [0x13, 0x3]  # symbolic and -X verbose forms
    assert [(r["advice"], r["errno"]) for r in by_op["madvise"]] == [
        (14, 0), (25, EINVAL), (0x42, EINVAL), (8, 0), (15, 0)]
    mremap = by_op["mremap"][0]
    assert (mremap["addr"], mremap["length"], mremap["new_length"], mremap["new_addr"],
            mremap["flags"], mremap["hint"]) == (0x7f5bea500000, 1 << 20, 2 << 20,
                                                 0x7f5bea600000, 3, 0x7f5bea600000)
    assert by_op["mmap"][-2]["fd"] == 3  # -y fd path
    assert by_op["mmap"][-1]["flags"] == MAP["MAP_PRIVATE"] | MAP["MAP_ANONYMOUS"] | \
        MAP["MAP_FIXED_NOREPLACE"]


def test_unfinished_pairs_are_placed_where_replay_is_safe(tmp_path):
    """Removals at their start line, creations at their completion line; ts = start time."""
    log = """\
10  100.000100 munmap(0x7f0000000000, 2097152 <unfinished ...>
11  100.000200 mmap(NULL, 2097152, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>
10  100.000300 <... munmap resumed>) = 0 <0.000200>
12  100.000400 madvise(0x7f1000000000, 4096, MADV_DONTNEED <unfinished ...>
11  100.000500 <... mmap resumed>) = 0x7f0000000000 <0.000300>
12  100.000600 <... madvise resumed>) = 0 <0.000200>
"""
    path = tmp_path / "pairs.log"
    path.write_text(log)
    for fast in (True, False):
        table = rows(import_logs([path], fast=fast).table)
        assert [(r["op"], r["tid"]) for r in table] == [("munmap", 10), ("madvise", 12),
                                                        ("mmap", 11)]
        assert [r["ts_ns"] for r in table] == [0, 300_000, 100_000]
        assert [r["duration_ns"] for r in table] == [200_000, 200_000, 300_000]
        assert table[2]["addr"] == 0x7f0000000000


def test_unmatched_lines_are_reported(tmp_path):
    log = """\
10  100.000100 <... mmap resumed>) = 0x7f0000000000 <0.000200>
11  100.000200 munmap(0x7f0000000000, 4096 <unfinished ...>
10  100.000300 munmap(0x7f0000001000, 4096) = 0 <0.000001>
"""
    path = tmp_path / "unmatched.log"
    path.write_text(log)
    report = import_logs([path]).report
    assert report["unmatched"] == {"unfinished": 1, "resumed": 1,
                                   "first_lines": [f"{path}:1", f"{path}:2"]}
    assert report["mm_calls_total"] == 1


def test_wall_clock_times_cross_midnight(tmp_path):
    log = """\
23:59:59.900000 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000
00:00:00.100000 munmap(0x7f0000000000, 4096) = 0
"""
    path = tmp_path / "midnight.log"
    path.write_text(log)
    for fast in (True, False):
        result = import_logs([path], fast=fast)
        assert result.table.column("ts_ns").to_pylist() == [0, 200_000_000]
        assert result.report["timestamps"] == "wall-clock"


def test_logs_without_timestamps_get_a_sequence(tmp_path):
    path = tmp_path / "plain.log"
    path.write_text("mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000\n"
                    "munmap(0x7f0000000000, 4096) = 0\n")
    result = import_logs([path])
    assert result.table.column("ts_ns").to_pylist() == [0, 1]
    assert result.report["timestamps"] == "none"
    assert result.table.column("duration_ns").null_count == 2


def test_a_thread_clock_stepping_back_is_clamped_and_counted(tmp_path):
    path = tmp_path / "back.log"
    path.write_text("7  100.000500 munmap(0x7f0000000000, 4096) = 0\n"
                    "7  100.000400 munmap(0x7f0000001000, 4096) = 0\n")
    result = import_logs([path])
    assert result.table.column("ts_ns").to_pylist() == [100_000, 100_000]
    assert result.report["clamped_timestamps"] == 1


def test_logs_with_different_timestamp_formats_are_refused(tmp_path):
    (tmp_path / "a.1").write_text("100.000001 munmap(0x1000, 4096) = 0\n")
    (tmp_path / "a.2").write_text("10:00:00.000001 munmap(0x1000, 4096) = 0\n")
    with pytest.raises(MmreplayError, match="different timestamp formats"):
        import_logs([tmp_path / "a.1", tmp_path / "a.2"])


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"\x00\x01\x02binary\xff\n" * 10, "not an strace log"),
    (b"ARROW1\x00\x00", "already an mmreplay trace"),
])
def test_files_that_are_not_logs(tmp_path, content, message):
    path = tmp_path / "x.log"
    path.write_bytes(content)
    with pytest.raises(MmreplayError, match=message):
        import_logs([path])


def test_default_output_and_ff_suffix():
    assert default_output("runs/bert.log.xz") == Path("runs/bert.arrow")
    assert default_output("app.strace") == Path("app.arrow")
    assert default_output("/tmp/trace.4412") == Path("/tmp/trace.arrow")
    assert ff_pid_of("trace.4412") == 4412
    assert ff_pid_of("trace.4412.zst") == 4412
    assert ff_pid_of("trace.log") is None


# --- the command -------------------------------------------------------------------------------

def test_import_command_writes_a_trace_and_reports(tmp_path):
    path = tmp_path / "forms.log"
    path.write_text(FORMS_LOG)
    out = tmp_path / "forms.arrow"
    result = CliRunner().invoke(cli, ["import", str(path), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "mm calls     21 imported" in result.output
    assert f"unparsed     2 lines (1 mention an mm call); first at {path}:34" in result.output
    table = read_trace(out)
    meta = trace_metadata(table)
    assert meta["source"] == "strace" and meta["host"] is None and "unknown" in meta["host_note"]
    assert meta["import"]["mm_calls_total"] == table.num_rows == 21
    info = CliRunner().invoke(cli, ["info", str(out)])
    assert info.exit_code == 0 and "events       21" in info.output

    as_json = CliRunner().invoke(cli, ["import", str(path), "-o", str(out), "--json"])
    assert json.loads(as_json.output)["unparsed"]["count"] == 2


@pytest.mark.parametrize("args, message", [
    (["import", "/nonexistent/app.log"], "no such file"),
    (["import", "{tmp}"], "is a folder"),
    (["import", "{log}", "-o", "/nonexistent/dir/out.arrow"], "does not exist"),
    (["import", "{log}", "--tid", "-3"], "--tid -3"),
])
def test_import_command_errors_are_one_line(tmp_path, args, message):
    log = tmp_path / "ok.log"
    log.write_text("munmap(0x1000, 4096) = 0\n")
    args = [a.format(tmp=tmp_path, log=log) for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and message in lines[0]
    assert "Traceback" not in result.output


# --- fidelity on the bundled real traces ------------------------------------------------------

RAW_LOGS = sorted((ROOT / "tests" / "data" / "strace").glob("bert-*.log.xz"))
_CALL = re.compile(r"^\d+ +[\d.]+ (mmap|munmap|mremap|madvise|mprotect|brk)\((.*)$")


def grep_count(text: str, op: str) -> int:
    """`grep -c` for calls of ``op`` that started (complete or unfinished), minus '= ?' ones."""
    done = subprocess.run(["grep", "-cE", rf"^[0-9]+ +[0-9.]+ {op}\(.*[^?]$"], input=text,
                          capture_output=True, text=True)
    return int(done.stdout.strip() or 0)


def grep_signature(line: str, names: dict) -> tuple:
    """(op, length, prot, flags) from a raw line with str.split, independent of the importer."""
    op, rest = _CALL.match(line).groups()
    args = rest.split(" <unfinished")[0].split(")")[0].split(", ")

    def bits(text):
        return sum(names[t] if t in names else int(t, 0) for t in text.split("|"))
    if op == "mmap":
        return op, int(args[1]), bits(args[2]), bits(args[3])
    if op == "mprotect":
        return op, int(args[1]), bits(args[2]), None
    if op == "mremap":
        return op, int(args[1]), None, bits(args[3])
    if op == "brk":
        return op, 0, None, None
    return op, int(args[1]), None, None


@pytest.mark.skipif(not RAW_LOGS, reason="raw logs of the bundled traces are not in tests/data")
@pytest.mark.parametrize("raw", RAW_LOGS, ids=[p.name for p in RAW_LOGS])
def test_bundled_trace_matches_grep_on_its_raw_log(raw):
    text = lzma.decompress(raw.read_bytes()).decode()
    trace_path = ROOT / "traces" / "data" / raw.name.replace(".log.xz", ".arrow")
    bundled = read_trace(trace_path)
    imported = import_logs([raw])
    assert imported.report["unparsed"]["count"] == 0
    names = {**PROT, **MAP, "MREMAP_MAYMOVE": 1, "MREMAP_FIXED": 2, "MREMAP_DONTUNMAP": 4}
    expected = collections.Counter(grep_signature(line, names) for line in text.splitlines()
                                   if _CALL.match(line) and not line.endswith("= ?"))
    for table in (imported.table, bundled):
        counts = collections.Counter(table.column("op").to_pylist())
        for op in ("mmap", "munmap", "mremap", "madvise", "mprotect", "brk"):
            assert counts[op] == grep_count(text, op), op
        got = collections.Counter(
            (r["op"], r["length"], r["prot"] if r["op"] in ("mmap", "mprotect") else None,
             r["flags"] if r["op"] in ("mmap", "mremap") else None)
            for r in table.select(["op", "length", "prot", "flags"]).to_pylist())
        assert got == expected
    assert len(set(bundled.column("tid").to_pylist())) >= 2
