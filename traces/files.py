"""Safe output files: every writer goes through a temporary file that is renamed into place."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import MmreplayError


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any work, when the output's folder does not exist or cannot take a file.

    A real probe file is created and removed: permission bits lie to root, a read-only mount does not.
    ``-`` is stdout (see ``atomic_output``) and always writable.
    """
    out = Path(path)
    if is_stdout(path):
        return out
    folder = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise MmreplayError(f"{out}: is a folder, expected a file name")
    if not folder.is_dir():
        raise MmreplayError(f"{out}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise MmreplayError(f"{out}: cannot write in {folder}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    return out


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Yield a file object; on success it is flushed, synced and renamed to ``path``.

    On any exception (full disk, RLIMIT_FSIZE, Ctrl-C) the temporary file is removed, so a file
    under ``path`` is always either the old one or a complete new one.

    ``-`` is stdout, never a file of that name; binary data is refused on a terminal.
    """
    if is_stdout(path):
        stream = _stdout(mode)
        yield stream
        stream.flush()
        return
    out = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise MmreplayError(f"{out}: cannot write: {exc.strerror or exc}") from None
        raise


def is_stdout(path) -> bool:
    """``-`` as an output name means stdout (the convention of sqlite-utils and most tools)."""
    return str(path) == "-"


def _stdout(mode: str):
    if "b" not in mode:
        return _Unclosed(sys.stdout)
    if sys.stdout.isatty():
        raise MmreplayError("-: will not write binary data to a terminal (redirect stdout to a "
                            "file or a pipe)")
    sys.stdout.flush()
    return _Unclosed(sys.stdout.buffer)


class _Unclosed:
    """stdout for a writer that may close its file when done: flushed, never closed."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, data):
        return self._stream.write(data)

    def flush(self):
        self._stream.flush()

    def close(self):
        self._stream.flush()

    @property
    def closed(self) -> bool:
        return False

    def __getattr__(self, name):
        return getattr(self._stream, name)


def open_input(path: str | os.PathLike, what: str, error: type = MmreplayError):
    """Open ``path`` for binary reading, or raise ``error`` with one line: a folder, a missing
    file or a refused open. ``what`` names the expected content ("a trace file")."""
    try:
        return open(path, "rb")
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not {what}") from None
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot open: {exc.strerror}") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_output(path, "w") as handle:
        handle.write(text)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path, "wb") as handle:
        handle.write(data)
