"""Build the allocation recorder (``traces/shim/mmreplay_malloc.c``) with the system's C compiler.

The shared library is built the first time ``record --malloc`` needs it, never at import, into
``~/.cache/mmreplay/shim/<hash>/`` (``$XDG_CACHE_HOME`` is honoured); the hash covers the source,
the compiler and its flags, so a new mmreplay or another compiler builds afresh. A user who cannot
write there gets a private folder in the temporary directory.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import MmreplayError

SOURCE = Path(__file__).resolve().parent / "shim" / "mmreplay_malloc.c"
LIBRARY_NAME = "mmreplay_malloc.so"
FLAGS = ("-O2", "-g", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-builtin",
         "-Wall", "-Wextra")
LIBS = ("-ldl", "-pthread")
INSTALL_HINT = "install one with `apt-get install gcc` (Debian/Ubuntu) or set CC"


def find_compiler() -> str:
    """$CC, else cc, else gcc; MmreplayError with install instructions when there is none."""
    wanted = os.environ.get("CC")
    for name in ([wanted] if wanted else ["cc", "gcc"]):
        found = shutil.which(name)
        if found:
            return found
    raise MmreplayError("recording allocations needs a C compiler to build its LD_PRELOAD "
                        f"library, and {wanted or 'cc/gcc'} was not found; {INSTALL_HINT}")


@functools.lru_cache(maxsize=4)
def _compiler_identity(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        raise MmreplayError(f"cannot run the C compiler {compiler}: {exc}") from None
    return (done.stdout.splitlines() or [""])[0]


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mmreplay" / "shim"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def shim_library(compiler: str | None = None) -> Path:
    """The path of the built recorder library, building it when no cached build matches."""
    compiler = compiler or find_compiler()
    source = SOURCE.read_bytes()
    digest = hashlib.sha256()
    for part in (source, compiler.encode(), _compiler_identity(compiler).encode(),
                 " ".join(FLAGS + LIBS).encode()):
        digest.update(part + b"\0")
    key = digest.hexdigest()[:16]
    folder = _cache_root() / key
    if not _writable(folder):
        folder = Path(tempfile.gettempdir()) / f"mmreplay-shim-{os.getuid()}" / key
        if not _writable(folder):
            raise MmreplayError(f"no writable folder to build the allocation recorder in "
                                f"({_cache_root()} or {folder.parent})")
    library = folder / LIBRARY_NAME
    if library.is_file():
        return library
    fd, partial = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    command = [compiler, *FLAGS, "-o", partial, str(SOURCE), *LIBS]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            detail = " ".join((done.stderr or done.stdout).strip().splitlines()[:3])
            raise MmreplayError(f"building the allocation recorder failed ({' '.join(command)}): "
                                f"{detail[:500]}")
        os.replace(partial, library)  # atomic: a concurrent build of the same key is identical
    except (OSError, subprocess.SubprocessError) as exc:
        raise MmreplayError(f"cannot build the allocation recorder: {exc}") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library
