"""numba's ``njit`` for every compiled function of mmreplay, with an on-disk cache any user can use.

numba caches compiled code next to the source (``__pycache__``) or in ``~/.cache/numba``. A user
who can write to neither (the package installed by another user, no writable HOME) would get
"RuntimeError: cannot cache function ...: no locator available" when the first compiled module
is imported. Then the cache goes to a private folder in the temporary directory; where there is
none, compiled code is not cached (a slower start, the same results). One line on stderr says so.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile

import numba
from numba.core import config


def _probe() -> int:
    return 0


def _can_cache() -> bool:
    """numba finds a writable cache folder for this package (decorating compiles nothing)."""
    try:
        numba.njit(cache=True)(_probe)
    except RuntimeError:
        return False
    return True


def _private_folder() -> str | None:
    """A cache folder in the temporary directory that only this user can write, or None.

    numba loads what it finds there as code: a folder someone else made (or a symlink) is not
    used."""
    try:
        path = os.path.join(tempfile.gettempdir(), f"mmreplay-numba-cache-{os.getuid()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(path)
    except OSError:  # no usable temporary directory at all
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
        return None
    return path


def _choose_cache() -> bool:
    """True when compiled code can be cached on disk (setting numba's cache folder if needed)."""
    if _can_cache():
        return True
    folder = _private_folder()
    if folder is not None:
        config.CACHE_DIR = folder
        if _can_cache():
            print(f"note: numba cannot cache compiled code next to mmreplay or in ~/.cache; "
                  f"caching it in {folder}", file=sys.stderr)
            return True
        config.CACHE_DIR = ""
    print("note: numba cannot cache compiled code anywhere here (no writable cache folder); "
          "compiling it afresh in every run", file=sys.stderr)
    return False


CACHING = _choose_cache()


def njit(*args, **kwargs):
    """``numba.njit``; ``cache=True`` is dropped when no cache folder can be written."""
    if not CACHING:
        kwargs.pop("cache", None)
    return numba.njit(*args, **kwargs)
