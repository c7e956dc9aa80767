"""mmreplay record: real commands under real strace; exit statuses, signals, attaching, errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from replay.cli import cli
from traces import read_trace, trace_metadata
from traces.errors import MmreplayError
from traces.record import record, seccomp_supported, strace_command
from traces.strace import import_logs

STRACE = shutil.which("strace")
pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed")
MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent

# Allocates and frees 3, 5 and 7 MiB (+ one page each, so the lengths are unmistakable).
ALLOCATE = ("import mmap\n"
            "for n in (3, 5, 7):\n"
            "    m = mmap.mmap(-1, n * (1 << 20) + 4096)\n"
            "    m[0] = 1\n"
            "    m.close()\n")
LOOP = ("import mmap, sys, time\n"
        "print('ready', flush=True)\n"
        "n = 0\n"
        "while True:\n"
        "    m = mmap.mmap(-1, (1 << 20) + 8192); m[0] = 1; m.close(); time.sleep(0.005)\n"
        "    n += 1\n"
        "    if n == 5: print('mapped 5', flush=True)\n")
# The same loop for a process strace attaches to: it says 'traced 5' after 5 mmaps made while
# strace had it under syscall tracing (seen by a second thread as the main thread's tracing
# stop, 't' in /proc), so the test waits for that, not for some time.
ATTACHED_LOOP = """
import mmap, threading, time
main = threading.get_native_id()
traced = threading.Event()

def watch():
    while not traced.is_set():
        with open(f"/proc/self/task/{main}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "t":
                traced.set()
        time.sleep(0.0005)

threading.Thread(target=watch, daemon=True).start()
print("ready", flush=True)
after = 0
while True:
    m = mmap.mmap(-1, (1 << 20) + 8192); m[0] = 1; m.close(); time.sleep(0.001)
    if traced.is_set():
        after += 1
        if after == 5:
            print("traced 5", flush=True)
"""


def lengths(table, op):
    return [r["length"] for r in table.to_pylist() if r["op"] == op]


def test_record_a_python_snippet(tmp_path):
    out = tmp_path / "t.arrow"
    recording = record([sys.executable, "-c", ALLOCATE], out)
    assert recording.exit_code == 0 and not recording.interrupted
    table = read_trace(out)
    wanted = [n * MiB + 4096 for n in (3, 5, 7)]
    assert [n for n in lengths(table, "mmap") if n in wanted] == wanted
    assert [n for n in lengths(table, "munmap") if n in wanted] == wanted
    meta = trace_metadata(table)
    assert meta["source"] == "strace" and meta["command"] == [sys.executable, "-c", ALLOCATE]
    assert meta["exit_status"] == 0 and meta["signal"] is None and meta["interrupted"] is False
    assert meta["host"]["kernel"] == os.uname().release
    assert "thp" in meta["host"] and meta["strace_version"]
    assert meta["strace_mode"] == ("seccomp-bpf" if seccomp_supported(STRACE) else "ptrace")
    assert meta["import"]["unparsed"]["count"] == 0
    assert meta["timestamps"] == "epoch"


def test_import_progress_covers_the_whole_log(tmp_path):
    seen = []
    record([sys.executable, "-c", ALLOCATE], tmp_path / "t.arrow",
           progress=lambda done, total: seen.append((done, total)))
    totals = {total for _, total in seen}
    done = [done for done, _ in seen]
    assert len(totals) == 1 and done == sorted(done) and done[-1] == totals.pop() > 0


def test_readme_acceptance_record_then_info(tmp_path):
    out = tmp_path / "t.arrow"
    runner = CliRunner()
    result = runner.invoke(cli, ["record", "-o", str(out), "--", sys.executable, "-c", ALLOCATE])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    info = runner.invoke(cli, ["info", str(out)])
    assert info.exit_code == 0
    assert "command" in info.output and "-c" in info.output
    assert "thp          enabled=" in info.output
    summary = json.loads(runner.invoke(cli, ["info", str(out), "--json"]).output)
    assert summary["ops"]["mmap"] >= 3 and summary["ops"]["munmap"] >= 3
    assert summary["size_histogram"]["2M-4M"]["count"] >= 1   # the 3 MiB buffer
    assert summary["size_histogram"]["4M-16M"]["count"] >= 2   # 5 and 7 MiB


def test_exit_status_becomes_ours(tmp_path):
    out = tmp_path / "t.arrow"
    result = CliRunner().invoke(cli, ["record", "-o", str(out), "--", sys.executable, "-c",
                                      ALLOCATE + "raise SystemExit(3)"])
    assert result.exit_code == 3
    meta = trace_metadata(read_trace(out))
    assert meta["exit_status"] == 3
    assert len([n for n in lengths(read_trace(out), "mmap") if n == 7 * MiB + 4096]) == 1


def test_a_killed_command_still_leaves_a_valid_trace(tmp_path):
    out = tmp_path / "t.arrow"
    code = ALLOCATE + "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    recording = record([sys.executable, "-c", code], out)
    assert recording.exit_code == 128 + signal.SIGKILL
    meta = trace_metadata(read_trace(out))
    assert meta["signal"] == "SIGKILL" and meta["exit_status"] is None
    assert 7 * MiB + 4096 in lengths(read_trace(out), "munmap")


def _start_mmreplay(tmp_path, *args):
    command = [sys.executable, "-m", "replay.cli", "record", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=tmp_path, start_new_session=True)
    return process


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_mmreplay_goes_to_the_command_and_the_trace_is_written(tmp_path, signum):
    out = tmp_path / "t.arrow"
    process = _start_mmreplay(tmp_path, "-o", str(out), "--", sys.executable, "-c", LOOP)
    assert process.stdout.readline().strip() == "ready"
    assert process.stdout.readline().strip() == "mapped 5"
    process.send_signal(signum)
    _, stderr = process.communicate()
    # Python dies of SIGTERM; on SIGINT it raises KeyboardInterrupt and re-kills itself
    assert process.returncode == 128 + signum, stderr
    table = read_trace(out)
    meta = trace_metadata(table)
    assert meta["interrupted"] is True and meta["signal"] == signal.Signals(signum).name
    assert lengths(table, "mmap").count(MiB + 8192) >= 5
    assert "Traceback" not in stderr.split("KeyboardInterrupt")[-1]


def test_attach_to_a_running_process_until_ctrl_c(tmp_path):
    target = subprocess.Popen([sys.executable, "-c", ATTACHED_LOOP], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert target.stdout.readline().strip() == "ready"
        out = tmp_path / "server.arrow"
        recorder = _start_mmreplay(tmp_path, "--pid", str(target.pid), "-o", str(out))
        assert target.stdout.readline().strip() == "traced 5"
        recorder.send_signal(signal.SIGINT)  # detaches; the process runs on
        _, stderr = recorder.communicate()
        assert recorder.returncode == 0, stderr
        assert target.poll() is None
        table = read_trace(out)
        ours = [r["tid"] for r in table.to_pylist()
                if r["op"] == "mmap" and r["length"] == MiB + 8192]
        assert len(ours) >= 5 and set(ours) == {target.pid}
        meta = trace_metadata(table)
        assert meta["attached_pid"] == target.pid and meta["interrupted"] is True
        assert meta["strace_mode"] == "ptrace" and "exit_status" not in meta
    finally:
        target.kill()
        target.wait()


def test_attach_for_a_duration_detaches_by_itself(tmp_path):
    target = subprocess.Popen([sys.executable, "-c", LOOP], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout.readline().strip() == "ready"
        out = tmp_path / "server.arrow"
        recording = record([], out, pid=target.pid, duration_s=0.6)
        assert target.poll() is None  # strace detached; the process runs on
        meta = trace_metadata(read_trace(out))
        assert meta["attached_pid"] == target.pid and meta["duration_s"] == 0.6
        assert meta["interrupted"] is False and meta["wall_time_s"] >= 0.6
        assert recording.exit_code == 0
    finally:
        target.kill()
        target.wait()


def test_keep_log_compressed_and_reimportable(tmp_path):
    out, log = tmp_path / "t.arrow", tmp_path / "t.log.xz"
    record([sys.executable, "-c", ALLOCATE], out, keep_log=log)
    assert log.read_bytes()[:6] == b"\xfd7zXZ\x00"
    again = import_logs([log])
    assert again.table.equals(read_trace(out).replace_schema_metadata(None))
    assert not list(tmp_path.glob(".t.arrow.*"))  # the temporary strace log is gone


def test_seccomp_modes(tmp_path):
    if not seccomp_supported(STRACE):
        with pytest.raises(MmreplayError, match="seccomp"):
            record([sys.executable, "-c", "pass"], tmp_path / "a.arrow", seccomp="yes")
    else:
        record([sys.executable, "-c", "pass"], tmp_path / "a.arrow", seccomp="yes")
        assert trace_metadata(read_trace(tmp_path / "a.arrow"))["strace_mode"] == "seccomp-bpf"
    record([sys.executable, "-c", "pass"], tmp_path / "b.arrow", seccomp="no")
    meta = trace_metadata(read_trace(tmp_path / "b.arrow"))
    assert meta["strace_mode"] == "ptrace" and "--seccomp-bpf" not in meta["strace_command"]
    assert strace_command("strace", "L", seccomp=True, argv=["x"])[-3:] == ["--seccomp-bpf",
                                                                           "--", "x"]


def test_without_strace_the_message_says_how_to_install_it(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no strace on this PATH
    done = subprocess.run([sys.executable, "-m", "replay.cli", "record", "-o",
                           str(tmp_path / "t.arrow"), "--", sys.executable, "-c", "pass"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "apt-get install strace" in done.stderr
    result = CliRunner().invoke(cli, ["record", "--strace", "/nonexistent/strace", "--", "true"])
    assert result.exit_code == 2 and "apt-get install strace" in result.output


@pytest.mark.parametrize("args, message", [
    (["record", "-o", "{tmp}/t.arrow", "--", "no-such-command-xyz"], "command not found"),
    (["record", "-o", "{tmp}/t.arrow"], "nothing to record"),
    (["record", "--pid", "1", "-o", "{tmp}/t.arrow", "--", "true"], "not both"),
    (["record", "--duration", "2", "-o", "{tmp}/t.arrow", "--", "true"], "--duration needs"),
    (["record", "--pid", "999999999", "-o", "{tmp}/t.arrow"], "no such process"),
    (["record", "-o", "/nonexistent/dir/t.arrow", "--", "true"], "does not exist"),
])
def test_bad_record_requests_are_one_line(tmp_path, args, message):
    result = CliRunner().invoke(cli, [a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output


BUNDLED = sorted((ROOT / "traces" / "data").glob("bert-*.arrow"))


@pytest.mark.skipif(len(BUNDLED) != 2, reason="the bundled BERT traces are not recorded yet")
@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_bundled_real_traces(path):
    assert path.stat().st_size <= 2 * MiB
    table = read_trace(path)
    meta = trace_metadata(table)
    assert meta["source"] == "strace" and "examples/hf_inference.py" in " ".join(meta["command"])
    assert meta["exit_status"] == 0 and meta["host"]["thp"]["enabled"]
    assert meta["import"]["unparsed"]["count"] == 0
    assert table.num_rows > 1000
    assert len(set(table.column("tid").to_pylist())) >= 2  # multi-threaded
    info = CliRunner().invoke(cli, ["info", str(path)])
    assert info.exit_code == 0 and "peak live" in info.output
    assert (ROOT / "traces" / "data" / "README.md").read_text().count(path.name) >= 1
