"""Faults from outside: the kernel refusing memory, Ctrl-C and SIGTERM, a full disk, a file size
limit, a read-only folder. Each runs the real command in a child process and checks what is left
behind: a run that completes with the failures counted, partial outputs that are valid and say
they were interrupted, no half-written file under the output name, no leaked process, and a clear
error before any work when the output cannot be written."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from replay.engine.compile import COMPILE_BYTES_PER_EVENT
from traces import read_trace, trace_metadata, write_trace
from processes import (EXIT_BY_SIGNAL, PATIENCE_S, assert_gone, descendants, interrupt_replaying,
                       mmreplay, wait_for)
from traces.units import fmt_bytes
from tracegen import TracedProcess, buffers_trace

MIB = 1 << 20
needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")


def one_line_error(stderr: bytes, *fragments: str) -> str:
    text = stderr.decode(errors="replace")
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), text
    assert "Traceback" not in text
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def listing(folder: Path) -> set[str]:
    return set(os.listdir(folder))


# ---------------------------------------------------------------------------------------------
# mmap failing with ENOMEM in the middle of a replay.

ENOMEM_CHILD = textwrap.dedent("""
    import resource, sys
    from replay.cli import cli
    warm, trace, out, headroom = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    # Load everything (numba's compiled engine included) before the address space is capped.
    cli.main(["replay", warm, "--no-progress"], prog_name="mmreplay", standalone_mode=False)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (used + headroom, resource.RLIM_INFINITY))
    print("LIMITED", flush=True)
    cli.main(["replay", trace, "-o", out, "--no-progress", "--touch", "none"],
             prog_name="mmreplay")
""")


def test_enomem_mid_replay_is_counted_and_the_run_completes(tmp_path):
    # 12 mappings of 128 MiB alive together, under an address-space limit with room for 3 of
    # them plus 64 MiB for Python: the 4th and later mmaps fail with ENOMEM.
    process = TracedProcess(3)
    for _ in range(12):
        process.mmap(128 * MIB)
    for start, length in sorted(process.live.items()):
        process._row(op="munmap", addr=start, length=length)
    trace = write_trace(process.table(), tmp_path / "big.arrow")
    warm = write_trace(buffers_trace(4, MIB), tmp_path / "warm.arrow")
    out = tmp_path / "enomem.json"
    headroom = 3 * 128 * MIB + 64 * MIB
    done = subprocess.run([sys.executable, "-c", ENOMEM_CHILD, warm, trace, out, str(headroom)],
                          capture_output=True, timeout=PATIENCE_S)
    assert done.returncode == 0, done.stderr.decode()
    assert b"Traceback" not in done.stderr
    run = json.loads(out.read_text())["runs"][-1]
    failed = run["ops"]["mmap"]["failed"]
    assert run["ops"]["mmap"]["count"] == 12
    assert 3 <= failed <= 11, run["ops"]  # 3 fit, fewer if Python took room
    # The munmaps of the mappings that never existed are skipped and counted, the others ran.
    assert run["skipped"] == {"target_mapping_failed_earlier": failed}
    assert run["ops"]["munmap"] == {**run["ops"]["munmap"], "count": 12 - failed, "failed": 0}
    assert run["interrupted"] is False and run["events"] == 24
    assert run["release_failures"] == 0 and run["live_bytes_at_stop"] == 0
    assert f"mmap 12 ({failed} failed)" in done.stdout.decode()


def test_a_trace_too_big_to_prepare_is_refused_with_one_line(tmp_path):
    """Compiling takes up to COMPILE_BYTES_PER_EVENT per event: with less memory than that left (here an
    address-space limit), the replay is refused up front instead of dying in MemoryError."""
    trace = write_trace(buffers_trace(100_000, 64 << 10, alive_together=False),
                        tmp_path / "many.arrow")
    warm = write_trace(buffers_trace(4, MIB), tmp_path / "warm.arrow")
    child = ENOMEM_CHILD.replace('"--touch", "none"', '"--touch", "none", "--max-live", "1G"')
    done = subprocess.run([sys.executable, "-c", child, warm, trace, tmp_path / "r.json",
                           str(64 * MIB)], capture_output=True, timeout=PATIENCE_S)
    assert done.returncode == 2, done.stderr.decode()
    assert done.stderr.decode().splitlines()[-1].startswith(
        f"Error: {trace}: replaying 200000 events needs about "
        f"{fmt_bytes(200000 * COMPILE_BYTES_PER_EVENT)} of memory to prepare, more than the ")
    assert "Traceback" not in done.stderr.decode()
    assert not (tmp_path / "r.json").exists()


# ---------------------------------------------------------------------------------------------
# SIGINT and SIGTERM while working.

def long_trace(tmp_path: Path, pairs: int = 30000) -> Path:
    return write_trace(buffers_trace(pairs, MIB, alive_together=False), tmp_path / "long.arrow")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_during_threaded_replay(sig, tmp_path):
    trace = long_trace(tmp_path)
    out = tmp_path / "partial.json"
    # --warmup 0: the bar moves in the first run, not after a whole uncounted one
    child = mmreplay("replay", trace, "--touch", "full", "--threads", "2", "--warmup", "0",
                     "-o", out, "--progress")
    stdout = interrupt_replaying(child, sig)
    document = json.loads(out.read_text())
    run = document["runs"][-1]
    assert run["interrupted"] is True and run["interrupt_reason"] == sig.name
    assert 0 < run["events"] < 60000 and run["release_failures"] == 0
    assert run["os_threads"] == 2
    assert b"INTERRUPTED" in stdout
    assert listing(tmp_path) == {"long.arrow", "partial.json"}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_during_compare(sig, tmp_path):
    trace = long_trace(tmp_path, 3000)
    out = tmp_path / "partial.json"
    child = mmreplay("compare", trace, "--policies", "kernel,align-ge-pmd", "--touch", "full",
                     "--repeat", "3", "-o", out, "--progress")
    # compare's bar moves when the (warm-up) run 1 is done
    stdout = interrupt_replaying(child, sig)
    document = json.loads(out.read_text())
    assert document["interrupted"] == sig.name
    # Results for the first configurations in order (a run stopped during the warm-up round is
    # kept, marked), the last run stopped by the signal unless it came between two runs.
    results = document["results"]
    assert [r["config"]["policy"] for r in results] == ["kernel", "align-ge-pmd"][:len(results)]
    runs = [run for result in results for run in result["runs"]]
    assert runs and runs[-1]["interrupt_reason"] in (sig.name, None)
    assert all(run["release_failures"] == 0 for run in runs)
    # Whenever the signal landed: partial and warm-up runs are no figures of the table.
    finished = [[run for run in result["runs"]
                 if not run["interrupted"] and not run.get("warmup")] for result in results]
    for result, done in zip(results, finished):
        assert result["summary_of"] == ("finished runs" if done else "partial runs")
    text = stdout.decode()
    assert f"INTERRUPTED ({sig.name}): runs finished of 3 per column: " in text
    if len(finished) == 2 and all(finished):
        assert "%change" in text
    else:
        assert "No table" in text and "%change" not in text, text
    assert listing(tmp_path) == {"long.arrow", "partial.json"}


MAPPING_LOOP = textwrap.dedent("""
    import mmap, signal, time
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # die of the signal, as a C program would
    print("mapping-loop started", flush=True)
    n = 0
    while True:
        m = mmap.mmap(-1, 1 << 20)
        m[0] = 1
        m.close()
        n += 1
        if n == 100:
            print("mapped 100", flush=True)
        time.sleep(0.002)
""")


@needs_strace
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_during_record(sig, tmp_path):
    out = tmp_path / "recorded.arrow"
    program = tmp_path / "loop.py"
    program.write_text(MAPPING_LOOP)
    child = mmreplay("record", "-o", out, "--", sys.executable, program)
    assert child.stdout.readline() == b"mapping-loop started\n"
    assert child.stdout.readline() == b"mapped 100\n"  # a hundred calls recorded
    family = descendants(child.pid)
    assert len(family) >= 2  # strace and the command
    child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == EXIT_BY_SIGNAL[sig], stderr.decode()
    assert b"Traceback" not in stderr
    assert_gone(family)
    table = read_trace(out)
    meta = trace_metadata(table)
    assert meta["interrupted"] is True and meta["signal"] == sig.name
    assert table.num_rows > 10
    assert b"interrupted" in stderr and f"command killed by {sig.name}".encode() in stderr
    assert listing(tmp_path) == {"loop.py", "recorded.arrow"}


def log_lines(first: int, count: int) -> bytes:
    """``count`` mmap/munmap pairs of an strace log (about 100 bytes a line)."""
    lines = []
    for i in range(first, first + count):
        address = 0x7F00_0000_0000 + (i % 1000) * 0x10_0000
        lines.append(f"100  1700000000.{i % 1000000:06d} mmap(NULL, 8192, PROT_READ|PROT_WRITE, "
                     f"MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = {address:#x} <0.000012>\n"
                     f"100  1700000000.{i % 1000000:06d} munmap({address:#x}, 8192) = 0 "
                     "<0.000007>\n")
    return "".join(lines).encode()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_signal_during_import(sig, tmp_path):
    """The log comes through a pipe that this test feeds: the signal is sent once the import
    has read more than its first chunk (8 MiB) and before the rest of the log exists, so the
    import cannot have finished first, however busy the machine."""
    from traces.strace_read import CHUNK_BYTES

    log = tmp_path / "app.log"
    os.mkfifo(log)
    out = tmp_path / "app.arrow"
    head_pairs, tail_pairs = CHUNK_BYTES // 200 + 20_000, 3 * CHUNK_BYTES // 200
    head = log_lines(0, head_pairs)       # a chunk and a bit
    tail = log_lines(10**6, tail_pairs)   # three chunks more
    assert len(head) > CHUNK_BYTES + (1 << 20)  # more than a chunk and a pipe's buffer
    child = mmreplay("import", log, "-o", out)
    head_written, signalled = threading.Event(), threading.Event()

    def feed():
        try:
            with open(log, "wb") as pipe:
                pipe.write(head)  # returns once the import has read all but a pipe's buffer
                head_written.set()
                signalled.wait()
                pipe.write(tail)
        except BrokenPipeError:  # the import stopped reading, as it should
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    wait_for(lambda: head_written.is_set() or child.poll() is not None,
             "the import to read the first chunk")
    assert child.poll() is None, child.communicate()[1].decode()
    child.send_signal(sig)
    signalled.set()
    stdout, stderr = child.communicate(timeout=PATIENCE_S)
    feeder.join()
    assert b"Traceback" not in stderr
    assert child.returncode == EXIT_BY_SIGNAL[sig], stderr.decode()
    assert f"interrupted by {sig.name}".encode() in stderr
    table = read_trace(out)
    meta = trace_metadata(table)
    assert meta["interrupted"] is True and meta["signal"] == sig.name
    assert meta["import"]["interrupted"] == sig.name
    assert 0 < table.num_rows < 2 * (head_pairs + tail_pairs)
    assert listing(tmp_path) == {"app.log", "app.arrow"}


# ---------------------------------------------------------------------------------------------
# A file size limit or a full disk while writing: no partial file under the output name.

def small_log(path: Path, lines: int = 4000) -> Path:
    """Random addresses, so the trace does not compress below a few tens of KiB."""
    r = random.Random(5)
    with open(path, "w") as handle:
        for i in range(lines):
            address = 0x7F00_0000_0000 + r.randrange(1 << 30) * 4096
            handle.write(f"100  1700000000.{i:06d} mmap(NULL, {r.randrange(1, 512) * 4096}, "
                         f"PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = "
                         f"{address:#x} <0.000012>\n")
    return path


def limit_file_size(limit_bytes: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def file_writers(tmp_path: Path, folder: Path):
    """(name, argv, output) for each command that writes a file, outputs in ``folder``."""
    trace = write_trace(buffers_trace(40, MIB), tmp_path / "t.arrow")
    log = small_log(tmp_path / "app.log")
    return [
        ("import", ["import", log, "-o", folder / "app.arrow"], folder / "app.arrow"),
        ("replay", ["replay", trace, "-o", folder / "r.json", "--no-progress"],
         folder / "r.json"),
        ("compare", ["compare", trace, "--repeat", "1", "-o", folder / "c.json",
                     "--no-progress"], folder / "c.json"),
    ]


def test_file_size_limit_leaves_the_old_file_or_nothing(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    for name, args, output in file_writers(tmp_path, folder):
        if name == "import":
            output.write_bytes(b"previous")  # an older file under the name survives intact
        before = listing(folder)
        child = mmreplay(*args, preexec_fn=limit_file_size(4096))
        _, stderr = child.communicate(timeout=PATIENCE_S)
        assert child.returncode == 2, (name, stderr.decode())
        one_line_error(stderr, str(output), "cannot write", "File too large")
        assert listing(folder) == before, name
        if name == "import":
            assert output.read_bytes() == b"previous"


@pytest.fixture
def mount_tmpfs(tmp_path):
    """mount_tmpfs(options) -> a fresh tmpfs folder (unmounted afterwards); skips where mounting
    is not allowed (it needs root with CAP_SYS_ADMIN)."""
    mounted = []

    def mount(options: str) -> Path:
        folder = tmp_path / f"mnt{len(mounted)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'}); "
                        "root with CAP_SYS_ADMIN is needed for this case")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave_bytes: int) -> None:
    """Fill a tmpfs up to ``leave_bytes`` of free space."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    (folder / "filler").write_bytes(b"\0" * max(0, free - leave_bytes))


def test_full_disk_leaves_no_partial_file(tmp_path, mount_tmpfs):
    folder = mount_tmpfs("size=256k")
    fill(folder, 8192)
    for name, args, output in file_writers(tmp_path, folder):
        before = listing(folder)
        child = mmreplay(*args)
        _, stderr = child.communicate(timeout=PATIENCE_S)
        assert child.returncode == 2, (name, stderr.decode())
        one_line_error(stderr, str(output), "cannot write", "No space left on device")
        assert listing(folder) == before == {"filler"}, name


@needs_strace
def test_record_on_a_full_disk(tmp_path, mount_tmpfs):
    """strace's own log goes next to the output: on a full disk the recording ends in an error
    (after strace's own complaints, which are its output, not mmreplay's), leaves no file and no
    process behind."""
    folder = mount_tmpfs("size=256k")
    fill(folder, 8192)
    program = tmp_path / "loop.py"
    program.write_text("import mmap\nfor _ in range(3000):\n    mmap.mmap(-1, 1 << 16).close()\n")
    child = mmreplay("record", "-o", folder / "t.arrow", "--", sys.executable, program)
    _, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 2, stderr.decode()
    assert b"Traceback" not in stderr
    last = stderr.decode().splitlines()[-1]
    assert last == f"Error: {folder / 't.arrow'}: cannot write: No space left on device", last
    assert listing(folder) == {"filler"}
    assert_gone(descendants(child.pid))


# ---------------------------------------------------------------------------------------------
# A read-only output folder: a clear error before any work.

def test_read_only_folder_is_refused_before_any_work(tmp_path, mount_tmpfs):
    folder = mount_tmpfs("ro,size=64k")
    damaged = tmp_path / "damaged.arrow"
    damaged.write_bytes(b"ARROW1\0\0 not a trace")
    log = small_log(tmp_path / "app.log", 10)
    marker = tmp_path / "the-command-ran"
    cases = [
        # The trace is damaged: an error about the output proves the output was checked first.
        (["replay", damaged, "-o", folder / "r.json"], folder / "r.json"),
        (["compare", damaged, "-o", folder / "c.json"], folder / "c.json"),
        (["info", damaged, "--png", folder / "i.png"], folder / "i.png"),
        (["import", log, "-o", folder / "app.arrow"], folder / "app.arrow"),
    ]
    if shutil.which("strace"):  # (without it, record says so first)
        cases.append((["record", "-o", folder / "t.arrow", "--", "touch", marker],
                      folder / "t.arrow"))
    for args, output in cases:
        child = mmreplay(*args)
        _, stderr = child.communicate(timeout=PATIENCE_S)
        assert child.returncode == 2, (args, stderr.decode())
        one_line_error(stderr, str(output), "cannot write in", "Read-only file system")
    assert not marker.exists(), "record ran the command before checking its output"
    assert listing(folder) == set()
