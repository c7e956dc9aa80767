"""Boot a kernel image with virtme-ng, run a job in the guest, bring its results back.

One call of ``run_guest`` is one guest: it boots the image (``vng --run``) with the host's root
filesystem visible read-only, a private job directory and the generic numba cache shared
read-write, runs ``guest.py`` on the job, and returns what the guest wrote. Everything that can
go wrong ends in a ``VmError`` with one line saying what happened (no kernel image, a panic, a
guest out of memory, a guest that stopped making progress, Ctrl-C while booting), and on every
path out, normal or not, the whole process group of the guest (vng, QEMU) is killed and reaped.

Speed under TCG (``benchmarks/vm_startup.py`` measures it):
- The guest's udev is skipped when we are root: vng runs in a private mount namespace where
  /usr/lib/systemd (udevd) and the tmpfiles.d directories are hidden. virtme-ng's init then
  skips udev's coldplug, which under TCG costs more than the rest of the boot (40-70 s here),
  and the replay needs no device but virtio-serial and 9p, which the initramfs loads itself.
- The guest's files come over 9p (``--force-9p``): virtme-ng would first try virtiofsd, three
  times per boot where it cannot start, 10 s here.
- The guest has a Nehalem CPU (x86-64-v2, which numpy needs) without AVX and with few
  QEMU default devices: emulating AVX is slower, and every device costs a driver probe.
- Python starts with -S and an explicit PYTHONPATH, imports no pyarrow, no click and no numba:
  the engine is a shared library the host built from numba's code (``native.py``; where it
  could not, the guest loads numba and the generic numba cache, ``cache.py``).
"""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from traces.errors import MmreplayError
from traces.host import host_metadata, meminfo_bytes
from traces.units import fmt_bytes

from replay.measure.probes import process_age_s
from replay.vm.accel import Accel, choose_accel, remember_kvm
from replay.vm.cache import guest_environment, numba_generic_dir
from replay.vm.guest import MARKER
from replay.vm.image import KernelImage
from replay.vm.jobs import LAYOUT_FILE, RESULT_FILE, STOP_FILE, write_job
from replay.vm.pyroot import PyRoot, prepare

MIB = 1 << 20
GUEST_RESERVED_MIB = 512      # the guest's kernel, Python, numba and page cache
MIN_MEMORY_MIB = 1024
DEFAULT_CPUS = 2
DEFAULT_TIMEOUT_S = 600       # longest a guest may go without a sign of progress
KVM_PROBE_S = 90              # an untried KVM guest must start its command within this
STOP_GRACE_S = 120            # after Ctrl-C: how long a replaying guest gets to write its result
TCG_CPU = "Nehalem"
QEMU_TRIM = "-machine sata=off,smbus=off,i8042=off,vmport=off -nodefaults"
HIDDEN_FROM_GUEST = ("/usr/lib/systemd", "/lib/systemd", "/usr/lib/tmpfiles.d", "/etc/tmpfiles.d")
GUEST_HOSTNAME = "mmreplay-vm"
OOM_MARKER = "@mmreplay-oom "


class VmError(MmreplayError):
    """A guest that could not give a result; the message is one line."""


class VmInterrupted(VmError):
    """Ctrl-C (or SIGTERM) before the guest had started replaying: nothing was measured."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason
        self.exit_code = 128 + int(getattr(signal.Signals, reason, signal.SIGINT))


@dataclass
class VmOptions:
    memory_mib: int | None = None   # None: sized from the trace
    cpus: int = DEFAULT_CPUS
    timeout_s: float = DEFAULT_TIMEOUT_S
    accel: str = "auto"
    sysfs: tuple = ()               # ((path relative to /sys/kernel/mm, value), ...)
    append: tuple = ()              # extra kernel command-line arguments


@dataclass
class GuestOutput:
    document: dict                  # the guest's result.json
    vm: dict                        # the result's ``vm`` section
    layout_arrays: dict | None = None
    markers: list = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Before booting


def parse_guest_sysfs(settings) -> tuple:
    """``transparent_hugepage/enabled=always`` -> (("transparent_hugepage/enabled", "always"),)."""
    parsed = []
    for text in settings or ():
        path, sep, value = str(text).partition("=")
        path = path.strip().removeprefix("/sys/kernel/mm/")
        normalized = os.path.normpath(os.path.join("/sys/kernel/mm", path))
        if not sep or not path or not normalized.startswith("/sys/kernel/mm/"):
            raise MmreplayError(f"--guest-sysfs {text}: expected PATH=VALUE with PATH under "
                                "/sys/kernel/mm, e.g. transparent_hugepage/enabled=always")
        parsed.append((os.path.relpath(normalized, "/sys/kernel/mm"), value.strip()))
    return tuple(parsed)


def plan_memory(peak_live_bytes: int, options: VmOptions, python_bytes: int = 0) -> tuple[int, int]:
    """(guest memory in MiB, the replay's budget inside it in bytes); refuses before booting when
    the trace's peak live bytes cannot fit. ``python_bytes``: the guest's Python copy in RAM."""
    reserved = GUEST_RESERVED_MIB + -(-python_bytes // MIB)
    need_mib = -(-peak_live_bytes // MIB) + reserved
    if options.memory_mib is not None:
        memory = options.memory_mib
        if memory < MIN_MEMORY_MIB // 2:
            raise MmreplayError(f"--vm-memory {memory}M: a guest needs at least "
                                f"{MIN_MEMORY_MIB // 2} MiB to boot and run Python")
        if need_mib > memory:
            raise MmreplayError(
                f"the trace keeps {fmt_bytes(peak_live_bytes)} live at its peak; a guest of "
                f"{memory} MiB holds at most {fmt_bytes(max(memory - reserved, 0) * MIB)} "
                f"(the rest is the guest's kernel and Python): give --vm-memory {need_mib}M or more")
    else:
        memory = max(MIN_MEMORY_MIB, -(-need_mib // 256) * 256)
        available = (meminfo_bytes("MemAvailable") or 0) // MIB
        if available and memory > available * 3 // 4:
            raise MmreplayError(
                f"the trace keeps {fmt_bytes(peak_live_bytes)} live at its peak and needs a guest "
                f"of {memory} MiB; this machine has {available} MiB available")
    return memory, (memory - reserved) * MIB


def _tool(name: str, hint: str) -> str:
    here = Path(sys.executable).parent / name  # the venv's own vng
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise VmError(f"--kernel needs {name}: {hint}")
    return found


def qemu_version(qemu: str) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def _can_hide_udev() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and shutil.which("mount") \
        is not None


def guest_script(job_dir: Path, numba_dir: Path, pyroot: PyRoot) -> str:
    """What the guest runs: route its stdout/stderr to virtme's ports by name (without udev there
    are no /dev/virtio-ports links), unpack the Python copy into RAM at its own path, run the
    replay, report how Python exited and any OOM kill."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in
                   {**guest_environment(numba_dir), **pyroot.environment()}.items())
    root, tar = shlex.quote(str(pyroot.root)), shlex.quote(str(pyroot.tar))
    python = shlex.quote(pyroot.executable)
    fallback = shlex.quote(sys.executable)
    plain_env = " ".join(f"{k}={shlex.quote(v)}" for k, v in guest_environment(numba_dir).items())
    job = shlex.quote(str(job_dir))
    return f"""#!/bin/sh
for port in /sys/class/virtio-ports/*; do
    read -r name < "$port/name"
    case "$name" in
        virtme.stdout) exec 1>"/dev/${{port##*/}}" ;;
        virtme.stderr) exec 2>"/dev/${{port##*/}}" ;;
    esac
done
echo '{MARKER}{{"event": "started"}}'
cd {job}  # not a directory of modules: python -m puts the working directory first on sys.path
if mount -t tmpfs -o size={pyroot.size_bytes() // MIB + 64}m mmreplay-python {root} && tar -xf {tar} -C {root}; then
    echo '{MARKER}{{"event": "unpacked"}}'
    {env} {python} -S -m replay.vm.guest {job}
else
    echo '{MARKER}{{"event": "unpacked", "failed": true}}'
    {plain_env} {fallback} -S -m replay.vm.guest {job}
fi
code=$?
oom=$(dmesg 2>/dev/null | grep -m1 -o 'Out of memory: Killed process [0-9]* ([^)]*)')
[ -n "$oom" ] && echo "{OOM_MARKER}$oom"
echo "{MARKER}{{\\"event\\": \\"exit\\", \\"code\\": $code}}"
"""


def vng_command(kernel: KernelImage, accel: Accel, job_dir: Path, memory_mib: int,
                options: VmOptions) -> list[str]:
    vng = _tool("vng", "pip install 'mmreplay[vm]' (virtme-ng)")
    # --force-9p: the guest's files come over 9p, which the guest's Python copy in RAM is
    # planned around; where virtiofsd cannot start (here: FUSE refuses), virtme-ng tries it
    # three times per boot first (10 s) before falling back to 9p anyway.
    command = [vng, "--run", str(kernel.boot_path), "--force-9p", "--user", "root",
               "--name", GUEST_HOSTNAME, "--memory", f"{memory_mib}M", "--cpus", str(options.cpus),
               "--rwdir", str(job_dir), "--rwdir", str(numba_generic_dir()), "--verbose"]
    qemu_opts = QEMU_TRIM
    if accel.name == "tcg":
        command.append("--disable-kvm")
        qemu_opts = f"-cpu {TCG_CPU} {qemu_opts}"
    command.append(f"--qemu-opts={qemu_opts}")  # "=": the value starts with a dash
    # Only errors and worse on the console (a panic, the OOM killer): the log stays short and
    # the emulated serial port is not kept busy.
    command += ["--append", "loglevel=4"]
    for extra in options.append:  # one kernel argument per --append (vng quotes spaces)
        for argument in shlex.split(extra):
            command += ["--append", argument]
    command += ["--", f"sh {shlex.quote(str(job_dir / 'guest.sh'))}"]
    if _can_hide_udev():
        hidden = sorted({os.path.realpath(d) for d in HIDDEN_FROM_GUEST if os.path.isdir(d)})
        mounts = "".join(f"mount -t tmpfs -o ro,size=4k,mode=755 mmreplay-hidden {shlex.quote(d)}; "
                         for d in hidden)
        command = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                   f'{mounts}exec "$@"', "mmreplay-vm", *command]
    return command


# ---------------------------------------------------------------------------------------------
# The guest session


def kill_group(process: subprocess.Popen) -> None:
    """SIGTERM the guest's process group (vng, QEMU and anything they started), SIGKILL what is
    left after a few seconds, and reap our child."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                try:
                    os.killpg(process.pid, 0)
                except ProcessLookupError:
                    return
            time.sleep(0.05)
    process.poll()


class _Signals:
    """SIGINT/SIGTERM become a flag the session loop reads (main thread only)."""

    def __init__(self):
        self.received: str | None = None
        self.count = 0
        self.previous = {}

    def __enter__(self):
        def handler(signum, _frame):
            self.received = signal.Signals(signum).name
            self.count += 1

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, handler)
        except ValueError:
            pass
        return self

    def __exit__(self, *exc):
        for sig, old in self.previous.items():
            signal.signal(sig, old)


def _tail(path: Path, lines: int = 400) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.rstrip() for line in text.splitlines()[-lines:]]


def _console_line(lines: list[str], *needles: str) -> str | None:
    for line in lines:
        for needle in needles:
            if needle in line:
                return line[line.index(needle):].strip()
    return None


def _vng_complaint(lines: list[str]) -> str | None:
    """virtme-ng's or QEMU's own error line, if it refused to start: the last one that says
    "error" (QEMU's abort under a KVM that cannot run guests follows "error: failed to set MSR
    0x10a" with an assertion that says less), else the last of theirs."""
    found = [line.strip() for line in lines
             if line.strip().startswith(("virtme-run:", "virtme-ng:", "vng:", "qemu-system",
                                         "error:", "Error:", "usage:"))]
    saying_error = [text for text in found if "error" in text.lower()]
    return (saying_error or found or [None])[-1]


class GuestSession:
    """One boot: start it, follow its markers, end it on every path."""

    def __init__(self, command: list[str], job_dir: Path, env: dict):
        self.command = command
        self.job_dir = job_dir
        self.log_path = job_dir / "console.log"
        self.env = env
        self.markers: list[tuple[float, dict]] = []
        self.output: list[str] = []
        self.oom: str | None = None
        self.lines: queue.Queue = queue.Queue()

    def _read(self, stream) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), None))

    def seen(self, event: str) -> float | None:
        for when, marker in self.markers:
            if marker.get("event") == event:
                return when
        return None

    def run(self, timeout_s: float, first_start_s: float | None,
            on_marker=None) -> str:
        """Run the guest to its end. Returns "done"; raises VmError otherwise.

        ``first_start_s``: the guest must start its command within this (an untried KVM)."""
        self.started_at = time.monotonic()
        with open(self.log_path, "wb") as log, _Signals() as signals:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=log, env=self.env,
                                            start_new_session=True)
            reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
            reader.start()
            try:
                return self._follow(timeout_s, first_start_s, signals, on_marker)
            finally:
                kill_group(self.process)
                reader.join(timeout=10)
                self.process.stdout.close()

    def _follow(self, timeout_s, first_start_s, signals, on_marker) -> str:
        last_progress = time.monotonic()
        stopping_since = None
        eof = False
        while True:
            now = time.monotonic()
            if signals.received and stopping_since is None:
                if self.seen("ready") is None or signals.count > 1:
                    raise VmInterrupted(
                        f"interrupted ({signals.received}) while the guest was "
                        f"{'booting' if self.seen('started') is None else 'starting Python'}; "
                        "the VM was stopped and nothing was measured", signals.received)
                (self.job_dir / STOP_FILE).write_text(signals.received)
                stopping_since = now
            if stopping_since is not None and (signals.count > 1 or now - stopping_since > STOP_GRACE_S):
                raise VmInterrupted(f"interrupted ({signals.received}); the guest did not stop "
                                    "in time and was killed", signals.received)
            if first_start_s is not None and self.seen("started") is None \
                    and now - self.started_at > first_start_s:
                raise VmError(f"the guest did not start its command within {first_start_s:.0f} s")
            if now - last_progress > timeout_s:
                phase = ("booting" if self.seen("started") is None else
                         "starting Python" if self.seen("ready") is None else "replaying")
                raise VmError(f"the guest made no progress for {timeout_s:.0f} s while {phase} "
                              f"(--vm-timeout); it was stopped{self._console_hint()}")
            if eof:
                return self._ended()
            try:
                when, line = self.lines.get(timeout=0.25)
            except queue.Empty:
                continue
            if line is None:
                eof = True
                self.process.wait()
                continue
            if line.startswith(MARKER):
                try:
                    marker = json.loads(line[len(MARKER):])
                except ValueError:
                    self.output.append(line)
                    continue
                self.markers.append((when, marker))
                last_progress = when
                if on_marker is not None:
                    on_marker(marker)
            elif line.startswith(OOM_MARKER):
                self.oom = line[len(OOM_MARKER):]
            else:
                self.output.append(line)

    def _console_hint(self) -> str:
        lines = _tail(self.log_path)
        found = _console_line(lines, "Kernel panic", "BUG:", "Oops", "soft lockup", "hung_task")
        return f"; console: {found}" if found else ""

    def _ended(self) -> str:
        exits = [m for _, m in self.markers if m.get("event") == "exit"]
        if self.seen("done") is not None:
            return "done"
        lines = _tail(self.log_path)
        panic = _console_line(lines, "Kernel panic")
        if panic:
            raise VmError(f"the guest kernel panicked: {panic}")
        oom = self.oom or _console_line(lines, "Out of memory")
        if oom:
            raise VmError(f"the guest ran out of memory ({oom}); give it more with --vm-memory")
        try:
            document = json.loads((self.job_dir / RESULT_FILE).read_text())
        except (OSError, ValueError):
            document = {}
        if document.get("error"):
            raise VmError(f"the replay failed inside the guest: {document['error']}")
        if exits:
            code = exits[-1].get("code")
            detail = f" (exit status {code}" + (", killed by SIGKILL" if code == 137 else "") + ")"
            last = [line for line in self.output if line.strip()][-1:]
            raise VmError("mmreplay stopped inside the guest" + detail
                          + (f": {last[0].strip()}" if last else ""))
        if self.seen("started") is None:
            complaint = _vng_complaint(lines)
            if complaint:
                raise VmError(f"virtme-ng could not boot the kernel: {complaint}")
            raise VmError(f"the guest exited before running its command (vng exit status "
                          f"{self.process.returncode}){self._console_hint()}")
        raise VmError(f"the guest exited in the middle of the replay{self._console_hint()}")


def run_guest(kernel: KernelImage, items: list, job: dict, options: VmOptions,
              peak_live_bytes: int, on_marker=None, notify=None) -> GuestOutput:
    """Boot ``kernel``, run ``job`` (see jobs.py) on ``items`` (``runs.Prepared``), return what the
    guest wrote. ``on_marker(marker)`` sees the guest's progress lines; ``notify(text)`` gets
    one-line status messages (cache warm-up, fallback to TCG)."""
    notify = notify or (lambda text: None)
    qemu = _tool("qemu-system-x86_64", "apt-get install qemu-system-x86")
    accel = choose_accel(options.accel)
    command_start = time.monotonic() - (process_age_s() or 0.0)
    job_dir = Path(tempfile.mkdtemp(prefix="mmreplay-vm-"))
    try:
        features = sorted({"threads" if item.plan is not None else "serial" for item in items}
                          | {"lockstep" for item in items if item.config.access.kind == "lockstep"})
        write_job(job_dir, items, {**job, "sysfs": [list(s) for s in options.sysfs]})
        cache_start = time.monotonic()
        if not PyRoot.exists_for(features):
            notify("preparing the guest's Python and its CPU-generic numba cache (once per "
                   "mmreplay version)")
        pyroot, cache = prepare(job_dir, features)
        cache_s = time.monotonic() - cache_start
        memory_mib, guest_budget = plan_memory(peak_live_bytes, options, pyroot.size_bytes())
        write_job(job_dir, items, {**job, "sysfs": [list(s) for s in options.sysfs]},
                  guest_budget)
        numba_dir = numba_generic_dir()
        (job_dir / "guest.sh").write_text(guest_script(job_dir, numba_dir, pyroot))
        env = {**os.environ,
               "PATH": os.pathsep.join([str(Path(_tool("vng", "")).parent),
                                        os.environ.get("PATH", "")])}
        session = None
        while True:
            command = vng_command(kernel, accel, job_dir, memory_mib, options)
            session = GuestSession(command, job_dir, env)
            try:
                session.run(options.timeout_s, KVM_PROBE_S if accel.probe else None, on_marker)
                break
            except VmInterrupted:
                raise
            except VmError as exc:
                if not accel.probe:
                    raise
                if session.seen("started") is not None:
                    remember_kvm(None)
                    raise
                remember_kvm(str(exc))
                notify(f"KVM failed ({exc}); falling back to TCG")
                accel = Accel("tcg", f"KVM failed on this host, so TCG: {exc}")
                for stale in (RESULT_FILE, LAYOUT_FILE, STOP_FILE):
                    (job_dir / stale).unlink(missing_ok=True)
        if accel.probe:
            remember_kvm(None)
        document = json.loads((job_dir / RESULT_FILE).read_text())
        layout_arrays = None
        if (job_dir / LAYOUT_FILE).exists():
            import numpy as np
            with np.load(job_dir / LAYOUT_FILE) as arrays:
                layout_arrays = dict(arrays)
        vm = vm_section(kernel, accel, options, memory_mib, document, session, qemu,
                        command_start, cache, cache_s)
        vm["replay_budget_bytes"] = guest_budget
        return GuestOutput(document, vm, layout_arrays, session.markers)
    finally:
        shutil.rmtree(job_dir, ignore_errors=True)


def vm_section(kernel, accel, options, memory_mib, document, session, qemu, command_start,
               cache, cache_s) -> dict:
    """The result's ``vm`` block: what ran the guest and how long each stage took."""
    guest_host = document.get("host") or {}

    def since_command(event):
        when = session.seen(event)
        return None if when is None else when - command_start

    first_progress = next((when for when, m in session.markers if m.get("event") == "progress"),
                          None)
    timings = {
        "numba_cache_s": cache_s,
        "command_to_boot_start_s": session.started_at - command_start,
        "boot_s": (session.seen("started") or session.started_at) - session.started_at,
        "command_to_guest_command_s": since_command("started"),
        "command_to_unpacked_s": since_command("unpacked"),
        "command_to_python_s": since_command("python"),
        "command_to_ready_s": since_command("ready"),
        "command_to_first_event_s": (first_progress - command_start) if first_progress else None,
        "guest_session_s": time.monotonic() - session.started_at,
    }
    return {
        "accel": accel.name, "accel_reason": accel.reason,
        "cpus": options.cpus, "memory_mib": memory_mib,
        "kernel_release": guest_host.get("kernel"), "cmdline": document.get("cmdline"),
        "image": kernel.as_dict(),
        "guest_cpu": TCG_CPU if accel.name == "tcg" else "host",
        "udev": "skipped" if _can_hide_udev() else "ran",
        "qemu": qemu_version(qemu), "virtme_ng": _virtme_ng_version(),
        "runner": host_metadata(),
        "numba_cache": cache, "timings": timings,
        "guest_sysfs": document.get("guest_sysfs") or {},
    }


def _virtme_ng_version() -> str:
    from importlib import metadata
    try:
        return metadata.version("virtme-ng")
    except metadata.PackageNotFoundError:
        return "?"
