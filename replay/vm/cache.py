"""mmreplay's cache directory and the CPU-generic numba cache guests load instead of compiling.

numba keys its on-disk cache by the CPU it compiled for. The host's cache targets the host CPU,
which a QEMU guest does not have, so a guest would compile the whole engine itself: minutes under
TCG. Guests and the host's warm-up runs (pyroot.py) instead use ``NUMBA_CPU_NAME=generic``
(baseline x86-64 code, no CPU-specific features) and a cache directory of their own,
``numba-generic`` in the mmreplay cache directory, shared read-write into every guest. The host
fills it by running the guest's job itself, stopped after its first op (``guest.py --warm``), so
exactly the functions and types the guest will call are compiled, once per ``stamp``; numba
itself still checks each function against its source.
"""

from __future__ import annotations

import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path


def cache_dir() -> Path:
    """mmreplay's cache: $MMREPLAY_CACHE_DIR, else $XDG_CACHE_HOME/mmreplay (~/.cache/mmreplay)."""
    if os.environ.get("MMREPLAY_CACHE_DIR"):
        return Path(os.environ["MMREPLAY_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmreplay"


def numba_generic_dir() -> Path:
    return cache_dir() / "numba-generic"


def package_roots() -> list[Path]:
    """Where the replay, synth and traces packages live (one directory for an install, the
    checkout for an editable one)."""
    import replay
    import traces

    return sorted({Path(replay.__file__).resolve().parent.parent,
                   Path(traces.__file__).resolve().parent.parent})


def guest_python_path() -> list[str]:
    """sys.path entries the guest's Python needs, so it can run with -S (no site.py, no .pth
    processing: each skipped file read is worth seconds under TCG)."""
    entries = [str(p) for p in package_roots()]
    for entry in sys.path:
        if entry and os.path.isdir(entry) and entry not in entries:
            entries.append(entry)
    return entries


def guest_environment(numba_dir: Path) -> dict:
    # One OpenBLAS thread: numpy starts a pool per CPU at import, which the replay never uses.
    return {"NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(numba_dir),
            "PYTHONPATH": os.pathsep.join(guest_python_path()), "PYTHONDONTWRITEBYTECODE": "1",
            "OPENBLAS_NUM_THREADS": "1"}


def stamp(features: list[str]) -> str:
    """Changes whenever the code the guest runs, Python or numba change."""
    digest = hashlib.sha256()
    for root in package_roots():
        for package in ("replay", "traces"):
            for path in sorted((root / package).rglob("*.py")):
                stat = path.stat()
                digest.update(f"{path}:{stat.st_mtime_ns}:{stat.st_size}\n".encode())
    digest.update(f"{sys.version} numba {metadata.version('numba')} {sorted(features)}".encode())
    return digest.hexdigest()[:24]
