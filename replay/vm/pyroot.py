"""The guest's Python in RAM: a copy of exactly the files the in-guest replay loads.

Under TCG every file operation on the guest's 9p root is a round trip through the emulated
virtio device and QEMU's 9p server: measured here at 20-35 ms per stat or open on a busy
machine, so importing numpy and numba (thousands of stats and opens) took minutes. Streaming one
large file is fast (a 178 MB read takes about 3 s). So the host keeps a copy of the files the
guest's Python loads (interpreter, libpython, stdlib modules, numpy, numba, llvmlite, mmreplay:
the list comes from a real run of the guest's job on the host), with their modification times,
under ``pyroot/<stamp>/`` in the mmreplay cache, and a tar of it. The guest mounts a tmpfs on that
same directory (it exists in the guest, since the host's files are visible there) and unpacks the
tar into it: one sequential read, then every import is local. The paths are the same on both
sides, so the numba cache compiled on the host from the copy matches in the guest; anything the
copy lacks is still found on the 9p root, later on the path.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from traces.errors import MmreplayError

from .cache import cache_dir, guest_python_path, numba_generic_dir, package_roots, stamp

KEEP_ROOTS = 2
# Larger files (libllvmlite.so, 179 MB) are linked to the original instead of copied: unpacking
# them costs more under TCG than the 9p reads of the pages the guest really touches.
COPY_LIMIT_BYTES = 32 << 20


def loaded_files() -> list[str]:
    """Every file this process has loaded: module sources and their .pyc, extension modules and
    shared libraries (from /proc/self/maps)."""
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not os.path.isabs(path):
            continue
        files.add(path)
        if path.endswith(".py"):
            try:
                cached = importlib.util.cache_from_source(path)
            except (NotImplementedError, ValueError):
                continue
            if os.path.exists(cached):
                files.add(cached)
    try:
        for line in Path("/proc/self/maps").read_text().splitlines():
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/") and not parts[5].endswith(")"):
                files.add(parts[5])
    except OSError:
        pass
    return sorted(f for f in files if os.path.isfile(f))


def write_manifest(path: str) -> None:
    Path(path).write_text(json.dumps(loaded_files()))


class PyRoot:
    """Where the copy is, and how to run the guest's Python from it."""

    def __init__(self, root: Path):
        self.root = root
        self.tar = root.with_name(root.name + ".tar")

    @classmethod
    def for_features(cls, features: list[str]) -> "PyRoot":
        return cls(cache_dir() / "pyroot" / stamp(features))

    @classmethod
    def exists_for(cls, features: list[str]) -> bool:
        return cls.for_features(features).tar.exists()

    def inside(self, path: str) -> str:
        return str(self.root) + os.path.realpath(path)

    @property
    def executable(self) -> str:
        return self.inside(sys.executable)

    def environment(self) -> dict:
        home = self.inside(sys.base_prefix)
        libpython = os.path.join(sys.base_prefix, "lib")
        copied = [self.inside(p) for p in guest_python_path()]
        # The originals come last: a module the copy lacks is still found, only slower.
        return {"PYTHONHOME": home,
                "PYTHONPATH": os.pathsep.join(copied + guest_python_path()),
                "LD_LIBRARY_PATH": self.inside(libpython), "MMREPLAY_PYROOT": str(self.root)}

    def size_bytes(self) -> int:
        return self.tar.stat().st_size if self.tar.exists() else 0


def _run_warm(executable: str, env: dict, job_dir: Path, manifest: Path | None,
              timeout_s: float) -> None:
    env = {**os.environ, **env}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the copy gets its .pyc files written here
    if manifest is not None:
        env["MMREPLAY_MANIFEST"] = str(manifest)
    try:
        done = subprocess.run([executable, "-S", "-m", "replay.vm.guest", "--warm", str(job_dir)],
                              env=env, capture_output=True, text=True, timeout=timeout_s,
                              cwd=job_dir)  # python -m puts the working directory on sys.path
    except subprocess.TimeoutExpired:
        raise MmreplayError(f"preparing the guest's Python took more than {timeout_s:.0f} s") \
            from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise MmreplayError(f"preparing the guest's Python failed: {last}")


def prepare(job_dir: Path, features: list[str], timeout_s: float = 900) -> tuple[PyRoot, dict]:
    """The copy for this mmreplay, Python and numba, built if missing; and what it cost.

    Building it runs the job's first op twice on the host with the guest's numba settings: from
    the original files (to learn which files are loaded) and from the copy (which compiles the
    generic numba cache for the copy's paths and writes its .pyc files)."""
    pyroot = PyRoot.for_features(features)
    roots = pyroot.root.parent
    if pyroot.tar.exists():
        return pyroot, {"built": False, "seconds": 0.0, "bytes": pyroot.size_bytes()}
    roots.mkdir(parents=True, exist_ok=True)
    with open(roots / "lock", "w") as lock:  # one builder at a time; the others wait, then reuse
        fcntl.flock(lock, fcntl.LOCK_EX)
        if pyroot.tar.exists():
            return pyroot, {"built": False, "seconds": 0.0, "bytes": pyroot.size_bytes()}
        return pyroot, _build(pyroot, job_dir, features, timeout_s)


def _build(pyroot: PyRoot, job_dir: Path, features: list[str], timeout_s: float) -> dict:
    from .cache import guest_environment

    roots = pyroot.root.parent
    start = time.monotonic()
    numba_dir = numba_generic_dir()
    numba_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(pyroot.root, ignore_errors=True)
    manifest = job_dir / "manifest.json"
    _run_warm(sys.executable, guest_environment(numba_dir), job_dir, manifest, timeout_s)
    # mmreplay's own packages whole (small), whatever the warm-up imported of them.
    own = [str(path) for root in package_roots() for package in ("replay", "traces")
           for path in (root / package).rglob("*.py")]
    for path in sorted(set(json.loads(manifest.read_text())) | set(own)):
        if path.startswith(str(job_dir)) or path.startswith(str(roots)):
            continue
        target = Path(pyroot.inside(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        original = os.path.realpath(path)
        if os.path.getsize(original) > COPY_LIMIT_BYTES:
            target.symlink_to(original)
        else:
            shutil.copy2(original, target)
    _run_warm(pyroot.executable, {**guest_environment(numba_dir), **pyroot.environment()},
              job_dir, None, timeout_s)
    temporary = pyroot.tar.with_name(pyroot.tar.name + f".{os.getpid()}.tmp")
    with tarfile.open(temporary, "w") as archive:
        archive.add(pyroot.root, arcname=".")
    os.replace(temporary, pyroot.tar)
    for old in sorted(roots.glob("*.tar"), key=lambda p: p.stat().st_mtime)[:-KEEP_ROOTS]:
        old.unlink(missing_ok=True)
        shutil.rmtree(old.with_suffix(""), ignore_errors=True)
    return {"built": True, "seconds": time.monotonic() - start, "bytes": pyroot.size_bytes()}
