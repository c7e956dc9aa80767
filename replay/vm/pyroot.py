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

from replay.vm.cache import cache_dir, guest_python_path, numba_generic_dir, package_roots, stamp

KEEP_ROOTS = 2
# Larger files (libllvmlite.so, 179 MB) are linked to the original instead of copied: unpacking
# them costs more under TCG than the 9p reads of the pages the guest really touches.
COPY_LIMIT_BYTES = 32 << 20
NOTE = "mmreplay-copy.json"  # in the copy: how the guest runs the engine, its library dirs


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
            except (NotImplementedError, ValueError):  # this Python keeps no bytecode cache
                continue
            if os.path.exists(cached):
                files.add(cached)
    from replay.measure.probes import read_named_maps
    try:
        files.update(name for _, _, name in read_named_maps()
                     if name.startswith("/") and not name.endswith(")"))
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
        copied = [self.inside(p) for p in guest_python_path()]
        note = self.note()
        # The copy's shared libraries (libpython, libc, libffi...) before the system's: the
        # loader would otherwise read the originals page by page over 9p.
        libraries = [self.inside(d) for d in note.get("library_dirs") or
                     [os.path.join(sys.base_prefix, "lib")]]
        # The originals come last: a module the copy lacks is still found, only slower.
        environment = {"PYTHONHOME": home,
                       "PYTHONPATH": os.pathsep.join(copied + guest_python_path()),
                       "LD_LIBRARY_PATH": os.pathsep.join(libraries),
                       "MMREPLAY_PYROOT": str(self.root)}
        if note.get("engine") == "native library":
            from replay.vm.native_env import NATIVE_ENV
            environment[NATIVE_ENV] = str(self.native)
        return environment

    def size_bytes(self) -> int:
        return self.tar.stat().st_size if self.tar.exists() else 0

    @property
    def native(self) -> Path:
        """The engine library's manifest (native.py), inside the copy."""
        return self.root / "mmreplay-native" / "engine.json"

    def note(self) -> dict:
        """What the build recorded: ``engine`` ("native library" or "numba (why)") and the
        ``library_dirs`` holding the copy's shared libraries."""
        try:
            return json.loads((self.root / NOTE).read_text())
        except (OSError, ValueError):
            return {}

    def engine(self) -> str:
        return self.note().get("engine", "numba")

    def reused(self) -> dict:
        return {"built": False, "seconds": 0.0, "bytes": self.size_bytes(),
                "engine": self.engine()}


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
        return pyroot, pyroot.reused()
    roots.mkdir(parents=True, exist_ok=True)
    with open(roots / "lock", "w") as lock:  # one builder at a time; the others wait, then reuse
        fcntl.flock(lock, fcntl.LOCK_EX)
        if pyroot.tar.exists():
            return pyroot, pyroot.reused()
        return pyroot, _build(pyroot, job_dir, features, timeout_s)


def _is_shared_library(path: str) -> bool:
    """A library the loader finds by name (libc.so.6), not a Python extension module."""
    name = os.path.basename(path)
    return name.startswith("lib") and ".so" in name and ".cpython-" not in name


def _link_names(original: str, target: Path) -> None:
    """The names the loader asks for (libz.so.1), as symlinks next to the copied file
    (libz.so.1.2.13): the same links the original's directory has."""
    real = os.path.realpath(original)
    try:
        entries = list(os.scandir(os.path.dirname(original)))
    except OSError:
        return
    for entry in entries:
        if entry.name != target.name and entry.is_symlink() \
                and os.path.realpath(entry.path) == real:
            link = target.with_name(entry.name)
            if not link.exists() and not link.is_symlink():
                link.symlink_to(target.name)


def _libpython() -> str | None:
    import sysconfig

    name, libdir = sysconfig.get_config_var("LDLIBRARY"), sysconfig.get_config_var("LIBDIR")
    if not name or not libdir or not name.endswith(".so") and ".so." not in name:
        return None
    return os.path.realpath(os.path.join(libdir, name))


def _copy(original: str, target: Path) -> None:
    """Copy one file into the copy: large ones linked instead; the interpreter's own library
    without its debugging sections (pyenv's libpython: 23 MB with them, 6.5 MB without, the
    same code; other libraries are left alone: stripping breaks some wheels' libraries)."""
    if os.path.getsize(original) > COPY_LIMIT_BYTES:
        target.symlink_to(original)
        return
    strip = shutil.which("strip")
    if strip and original == _libpython():
        done = subprocess.run([strip, "--strip-debug", "-o", str(target), original],
                              capture_output=True)
        if done.returncode == 0:
            shutil.copystat(original, target)
            return
    shutil.copy2(original, target)


def _build(pyroot: PyRoot, job_dir: Path, features: list[str], timeout_s: float) -> dict:
    from replay.vm.cache import guest_environment
    from replay.vm.native_env import NATIVE_BUILD_ENV, NATIVE_ENV, NATIVE_FAILED
    from replay.vm.native import LIBRARY, MANIFEST

    roots = pyroot.root.parent
    start = time.monotonic()
    numba_dir = numba_generic_dir()
    numba_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(pyroot.root, ignore_errors=True)
    environment = guest_environment(numba_dir)
    native_dir = job_dir / "native"
    native_dir.mkdir(exist_ok=True)
    manifest = job_dir / "manifest.json"
    # 1. numba, with the guest's settings: fills the generic cache (the guest's fallback) and
    #    builds the engine library from what it compiled.
    _run_warm(sys.executable, {**environment, NATIVE_BUILD_ENV: str(native_dir)}, job_dir,
              manifest, timeout_s)
    native = None
    if (native_dir / MANIFEST).exists():
        # 2. the same job with the library instead of numba: the files that path loads.
        try:
            _run_warm(sys.executable, {**environment, NATIVE_ENV: str(native_dir / MANIFEST)},
                      job_dir, manifest, timeout_s)
            native = "native library"
        except MmreplayError as exc:
            native = f"numba ({exc})"
    else:
        failed = native_dir / NATIVE_FAILED
        native = f"numba ({failed.read_text() if failed.exists() else 'no library built'})"
    # mmreplay's own packages whole (small), whatever the warm-up imported of them.
    own = [str(path) for root in package_roots() for package in ("replay", "traces")
           for path in (root / package).rglob("*.py")]
    library_dirs = []
    for path in sorted(set(json.loads(manifest.read_text())) | set(own)):
        if path.startswith(str(job_dir)) or path.startswith(str(roots)):
            continue
        target = Path(pyroot.inside(path))
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy(os.path.realpath(path), target)
        if _is_shared_library(path):
            _link_names(path, target)
            if os.path.dirname(path) not in library_dirs:
                library_dirs.append(os.path.dirname(path))
    (pyroot.root / NOTE).write_text(json.dumps({"engine": native, "library_dirs": library_dirs}))
    copy_environment = {**environment, **pyroot.environment()}
    if native == "native library":
        pyroot.native.parent.mkdir(parents=True)
        for name in (LIBRARY, MANIFEST):
            shutil.copy2(native_dir / name, pyroot.native.parent / name)
        copy_environment[NATIVE_ENV] = str(pyroot.native)
    _run_warm(pyroot.executable, copy_environment, job_dir, None, timeout_s)
    temporary = pyroot.tar.with_name(pyroot.tar.name + f".{os.getpid()}.tmp")
    with tarfile.open(temporary, "w") as archive:
        archive.add(pyroot.root, arcname=".")
    os.replace(temporary, pyroot.tar)
    for old in sorted(roots.glob("*.tar"), key=lambda p: p.stat().st_mtime)[:-KEEP_ROOTS]:
        old.unlink(missing_ok=True)
        shutil.rmtree(old.with_suffix(""), ignore_errors=True)
    return {"built": True, "seconds": time.monotonic() - start, "bytes": pyroot.size_bytes(),
            "engine": native}
