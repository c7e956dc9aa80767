"""--kernel for real: Debian's 6.1 image booted under QEMU (TCG here) with virtme-ng.

Booting is the expensive part, so the module's guests boot together, in the background, as
soon as the first one has prepared the guest's Python (its numba cache and engine library,
built on the host in a cache directory private to this module: the guest compiles nothing):
- one guest runs the replay that every check of the first group reads (--copies 2 and a guest
  sysfs write in one boot);
- ``layout --kernel`` and a real guest OOM (compare) boot guests of their own;
- the faults boot guests that never start Python: a real panic early in boot (``mem=8M``: the
  kernel cannot set up its first caches), the same panic left hanging (``panic=0``) until
  --vm-timeout, and Ctrl-C while booting.
Each test then waits for its own guest's command: none waits for a time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.processes import PATIENCE_S, wait_for

IMAGE = "/boot/vmlinuz-6.1.0-50-amd64"
RELEASE = "6.1.0-50-amd64"


def _missing() -> str | None:
    if not os.path.exists(IMAGE):
        return f"{IMAGE} is not installed (apt-get install linux-image-6.1.0-50-amd64)"
    if not shutil.which("qemu-system-x86_64"):
        return "QEMU is not installed (apt-get install qemu-system-x86)"
    if not (Path(sys.executable).parent / "vng").exists() and not shutil.which("vng"):
        return "virtme-ng is not installed (pip install -e '.[test]')"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def _command(*args) -> list[str]:
    script = Path(sys.executable).with_name("mmreplay")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "replay.cli"]
    return [*base, *map(str, args)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A private mmreplay cache: the guest's Python and numba cache are built here, on the host."""
    return {**os.environ, "MMREPLAY_CACHE_DIR": str(tmp_path_factory.mktemp("mmreplay-cache"))}


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory, env):
    path = tmp_path_factory.mktemp("vm") / "buffers.arrow"
    subprocess.run(_command("synth", "--count", "48", "--size", "uniform:512K,5M", "--seed", "7",
                            "-o", path), env=env, check=True, capture_output=True)
    return path


def _our_qemus(tag: str) -> list[int]:
    """QEMU processes whose kernel command line carries ``tag`` (given with --vm-append)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in cmdline and tag.encode() in cmdline:
            found.append(int(entry))
    return found


# A safety net for a guest's whole command (several guests boot at once, on a busy machine):
# it fails a hung test, and is never how a passing test is told from a failing one.
GUEST_PATIENCE_S = 1800
# The kernel cannot set up its first caches in 8 MiB: a real panic seconds into the boot
# ("Kernel panic - not syncing: Attempted to kill the idle task!"), before any initramfs.
EARLY_PANIC = "mem=8M"


class Guest:
    """One mmreplay command that boots a guest, run in the background; output in files."""

    def __init__(self, name: str, args: list, env: dict, directory: Path):
        self.tag = f"mmreplay_test={uuid.uuid4().hex[:12]}"
        self.stdout_path, self.stderr_path = directory / f"{name}.out", directory / f"{name}.err"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.process = subprocess.Popen(
                _command(*args, "--vm-append", self.tag, "--no-progress"), env=env,
                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.done: subprocess.CompletedProcess | None = None

    def wait(self) -> subprocess.CompletedProcess:
        """The finished command; no QEMU of its guest is left."""
        if self.done is None:
            self.process.wait(timeout=GUEST_PATIENCE_S)
            self.done = subprocess.CompletedProcess(self.process.args, self.process.returncode,
                                                    self.stdout_path.read_text(),
                                                    self.stderr_path.read_text())
            assert _our_qemus(self.tag) == []
            assert "Traceback" not in self.done.stderr
        return self.done

    def stop(self) -> None:
        """SIGTERM (mmreplay then stops its VM), SIGKILL if that does not end it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=PATIENCE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def guests(small_trace, env, tmp_path_factory):
    """Every guest of the module, booting at once. The first prepares the guest's Python; the
    others start when it is there (each would otherwise say it prepares it too)."""
    directory = tmp_path_factory.mktemp("vm-guests")
    trace = Path(__file__).resolve().parent.parent / "traces/data/buffers-4632k.arrow"
    started = {"replay": Guest("replay", [
        "replay", small_trace, "--kernel", IMAGE, "--touch", "none",
        "--guest-sysfs", "transparent_hugepage/enabled=madvise", "--copies", "2",
        "-o", directory / "result.json"], env, directory)}
    pyroots = Path(env["MMREPLAY_CACHE_DIR"]) / "pyroot"
    try:
        wait_for(lambda: any(pyroots.glob("*.tar")) or started["replay"].process.poll() is not None,
                 "the guest's Python to be prepared", GUEST_PATIENCE_S)
        others = {
            "layout": ["layout", small_trace, "--kernel", IMAGE, "--touch", "none", "--json"],
            # A real OOM kill inside the guest. The guest is planned at 1 GiB (the trace's
            # 290 MiB fit), but mem=400M leaves its kernel far less, so touching every byte runs
            # it out of memory.
            "oom": ["compare", trace, "--kernels", f"host,{IMAGE}", "--touch", "full",
                    "--vm-memory", "1024M", "--vm-append", "mem=400M",
                    "-o", directory / "compare.json"],
            "panic": ["replay", small_trace, "--kernel", IMAGE, "--vm-append", EARLY_PANIC],
            # The same panic with panic=0 (wait forever instead of rebooting): the guest never
            # starts its command; the timeout ends it.
            "hang": ["replay", small_trace, "--kernel", IMAGE, "--vm-timeout", "10",
                     "--vm-append", EARLY_PANIC, "--vm-append", "panic=0"],
        }
        for name, args in others.items():
            started[name] = Guest(name, args, env, directory)
        yield started
    finally:
        for guest in started.values():
            guest.stop()


@pytest.fixture(scope="module")
def guest_run(guests):
    """One boot: replay the small trace inside 6.1 with a guest sysfs write, as two copies at
    once (--copies: processes forked in the guest)."""
    done = guests["replay"].wait()
    assert done.returncode == 0, done.stderr
    result_path = Path(done.args[done.args.index("-o") + 1])
    return json.loads(result_path.read_text()), done, guests["replay"].tag


def test_ctrl_c_while_booting_stops_the_vm(small_trace, env, guests):
    # First: it runs while the other guests boot in the background.
    tag = f"mmreplay_test={uuid.uuid4().hex[:12]}"
    child = subprocess.Popen(_command("replay", small_trace, "--kernel", IMAGE, "--vm-append", tag,
                                      "--no-progress"),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _our_qemus(tag) or child.poll() is not None, "QEMU to start")
        assert child.poll() is None
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=PATIENCE_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, stderr
    assert stderr.strip().splitlines() == [
        "Error: interrupted (SIGINT) while the guest was booting; the VM was stopped and nothing "
        "was measured"]
    assert _our_qemus(tag) == []


def test_the_guest_runs_the_image_it_was_given(guest_run):
    result, done, _ = guest_run
    vm = result["vm"]
    assert vm["kernel_release"] == RELEASE
    assert result["host"]["kernel"] == RELEASE  # the guest's own view of the machine
    assert vm["image"]["header_release"] == RELEASE
    assert vm["accel"] in ("kvm", "tcg") and vm["accel_reason"]
    assert "virtme" in vm["cmdline"] and vm["memory_mib"] >= 1024 and vm["cpus"] == 2
    assert vm["runner"]["kernel"] == os.uname().release  # the machine that ran QEMU
    assert f"Linux {RELEASE}" in done.stdout
    if vm["accel"] == "tcg":
        assert "times are not comparable with native runs" in done.stdout


def test_guest_sysfs_is_written_and_recorded(guest_run):
    result, _, _ = guest_run
    assert result["vm"]["guest_sysfs"]["transparent_hugepage/enabled"]["reads"] \
        == "always [madvise] never"
    assert result["host"]["thp"]["enabled"] == "madvise"


def test_6_1_aligns_as_the_no_align_emulation_does(guest_run, small_trace, env, tmp_path):
    """Linux 6.1 predates efa7df3e3bb5: its 2 MiB-aligned counts per size bucket are the ones
    the host gets emulating the pre-6.7 rule."""
    result, _, _ = guest_run
    out = tmp_path / "host.json"
    subprocess.run(_command("replay", small_trace, "--policy", "no-align", "--touch", "none",
                            "-o", out, "--no-progress"), env=env, check=True, capture_output=True)
    host = json.loads(out.read_text())
    host_buckets = host["runs"][0]["pmd_aligned_by_size"]
    for copy in result["copies"]["stages"][0]["per_copy"]:  # each copy: its own address space
        guest_buckets = copy["runs"][0]["pmd_aligned_by_size"]
        assert guest_buckets == host_buckets
        assert sum(b["mappings"] for b in guest_buckets.values()) == 48


def test_copies_run_together_inside_the_guest(guest_run):
    result, done, _ = guest_run
    [stage] = result["copies"]["stages"]
    copies = stage["per_copy"]
    assert len({copy["pid"] for copy in copies}) == 2 and result["copies"]["failed"] == []
    [aggregate] = result["runs"]
    assert aggregate["copies_finished"] == 2
    for key in ("events", "minflt", "large_mappings", "pmd_aligned_large_mappings"):
        assert aggregate[key] == sum(copy["runs"][0][key] for copy in copies), key
    assert aggregate["pmd_aligned_by_size"]["2M-4M"]["mappings"] == sum(
        copy["runs"][0]["pmd_aligned_by_size"]["2M-4M"]["mappings"] for copy in copies)
    assert "sum of 2 copies" in done.stdout


def test_the_startup_is_measured(guest_run):
    timings = guest_run[0]["vm"]["timings"]
    assert 0 < timings["command_to_guest_command_s"] < timings["command_to_first_event_s"]
    assert guest_run[0]["vm"]["numba_cache"]["built"] is True  # on the host, before the boot


def test_no_qemu_is_left_behind(guest_run):
    assert _our_qemus(guest_run[2]) == []


def test_the_guest_ran_the_engine_library(guest_run):
    assert guest_run[0]["vm"]["numba_cache"]["engine"] == "native library"


COUNTS = ("events", "peak_vmas", "large_mappings", "pmd_aligned_large_mappings",
          "pmd_aligned_by_size", "touch_bytes", "policy_extra_calls", "thp_advice_failed",
          "release_failures", "live_bytes_at_stop", "skipped", "interrupted")


def test_the_engine_library_replays_as_numba_does(guest_run, small_trace, env, tmp_path):
    """The library the guest ran (replay/vm/native.py) against numba, both on this host's
    kernel: the same job as a guest runs it, with touches, reads and the emulated placement."""
    from replay.running.config import Access, ReplayConfig
    from replay.running.runs import Prepared
    from replay.vm.cache import guest_environment
    from replay.vm.guest import NATIVE_ENV
    from replay.vm.jobs import RESULT_FILE, write_job

    [library] = Path(env["MMREPLAY_CACHE_DIR"]).glob("pyroot/*/mmreplay-native/engine.json")
    config = ReplayConfig(policy="align-ge-pmd", touch="pages", access=Access.parse("random:4"))
    write_job(tmp_path, [Prepared(small_trace, config, 1 << 30)],
              {"kind": "runs", "repeat": 1, "warmup": 0, "sysfs": []})
    generic = {**env, **guest_environment(Path(env["MMREPLAY_CACHE_DIR"]) / "numba-generic")}
    runs = {}
    for engine, extra in (("numba", {}), ("native", {NATIVE_ENV: str(library)})):
        done = subprocess.run([sys.executable, "-S", "-m", "replay.vm.guest", str(tmp_path)],
                              env={**generic, **extra}, cwd=tmp_path, capture_output=True,
                              text=True, timeout=PATIENCE_S)
        assert done.returncode == 0, done.stderr
        runs[engine] = json.loads((tmp_path / RESULT_FILE).read_text())["items"][0]["runs"][0]
    numba_run, native_run = runs["numba"], runs["native"]
    assert numba_run["events"] == 96 and numba_run["touch_bytes"] > 0
    for key in COUNTS:
        assert native_run[key] == numba_run[key], key
    for key in ("bytes", "reads"):
        assert native_run["access"][key] == numba_run["access"][key] > 0
    assert {op: s["count"] for op, s in native_run["ops"].items()} \
        == {op: s["count"] for op, s in numba_run["ops"].items()}


def test_layout_inside_the_guest(guests):
    """layout --kernel: the picture of the replay's address space as 6.1 placed it."""
    done = guests["layout"].wait()
    assert done.returncode == 0, done.stderr
    layout = json.loads(done.stdout)
    assert layout["host"]["kernel"] == RELEASE
    assert layout["vm"]["kernel_release"] == RELEASE
    # At the peak every one of the trace's mappings is live (synth: each lives to the end).
    assert len(layout["mappings"]) == 48 and layout["figures"]["vmas"] >= 1
    assert layout["figures"]["large_mappings"] == sum(
        m["length"] >= 2 << 20 for m in layout["mappings"])


# ---------------------------------------------------------------------------------------------
# Faults: guests that never start the replay


def test_a_kernel_that_panics_ends_in_one_line(guests):
    done = guests["panic"].wait()
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the guest kernel panicked: Kernel panic")


def test_a_guest_that_hangs_is_stopped_by_the_timeout(guests):
    done = guests["hang"].wait()
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: the guest made no progress for 10 s while booting "
                               "(--vm-timeout); it was stopped")


def test_a_guest_out_of_memory_fails_its_column_and_keeps_the_others(guests):
    """The guest's kernel runs out of memory (mem=400M in a guest planned at 1 GiB); compare
    keeps the host's column and marks the guest's failed with the reason."""
    done = guests["oom"].wait()
    assert done.returncode == 0, done.stderr
    document = json.loads(Path(done.args[done.args.index("-o") + 1]).read_text())
    [failed] = document["failed"]
    assert failed["value"] == RELEASE
    assert failed["reason"].startswith("the guest ran out of memory (Out of memory: Killed "
                                       "process"), failed["reason"]
    assert failed["reason"].endswith("give it more with --vm-memory")
    [kept] = document["results"]  # the host's column
    assert document["labels"] == ["host"] and kept["runs"][0]["events"] == 128
    assert f"FAILED {RELEASE}: the guest ran out of memory" in " ".join(done.stdout.split())
