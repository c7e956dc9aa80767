"""Safe output files: every writer goes through a temporary file that is renamed into place."""

from __future__ import annotations

import contextlib
import os
import select
import stat
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from .errors import MmreplayError


def _existing_kind(out: Path) -> str | None:
    """None when nothing is at ``out``, else 'file', 'stream' (a FIFO or a character device:
    written directly, as a shell redirection would) or what it is (refused)."""
    try:
        mode = out.stat().st_mode  # through symlinks: what the bytes would land in
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MmreplayError(f"{out}: cannot write: {exc.strerror}") from None
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        return "stream"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a block device" if stat.S_ISBLK(mode) else "a socket or special file"


def check_writable(path: str | os.PathLike) -> Path:
    """Fail early, before any work, when the output's folder does not exist or cannot take a file.

    A real probe file is created and removed: permission bits lie to root, a read-only mount does
    not. A FIFO or a character device (a pipe from the shell, /dev/null) is written directly;
    any other existing non-regular file is refused. ``-`` is stdout (see ``atomic_output``) and
    always writable.
    """
    out = Path(path)
    if is_stdout(path):
        return out
    kind = _existing_kind(out)
    if kind == "stream":
        if not os.access(out, os.W_OK):
            raise MmreplayError(f"{out}: cannot write: permission denied")
        return out
    if kind == "a folder":
        raise MmreplayError(f"{out}: is a folder, expected a file name")
    if kind not in (None, "file"):
        raise MmreplayError(f"{out}: is {kind}, not a file: refusing to write to it")
    out = Path(os.path.realpath(out)) if kind == "file" else out  # a symlink keeps pointing there
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir():
        raise MmreplayError(f"{out}: folder {folder} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=folder)
    except OSError as exc:
        raise MmreplayError(f"{out}: cannot write in {folder}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)
    return out


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "wb") -> Iterator:
    """Yield a file object; on success it is flushed, synced and renamed to ``path``.

    On any exception (full disk, RLIMIT_FSIZE, Ctrl-C) the temporary file is removed, so a file
    under ``path`` is always either the old one or a complete new one. A file replaced keeps its
    permissions (and, for root, its owner); a new one gets the umask's. A FIFO or a character
    device is written directly (there is nothing to replace atomically).

    ``-`` is stdout, never a file of that name; binary data is refused on a terminal.
    """
    if is_stdout(path):
        stream = _stdout(mode)
        yield stream
        stream.flush()
        return
    out = check_writable(path)
    if _existing_kind(out) == "stream":
        try:
            with open(out, mode) as handle:
                yield handle
        except OSError as exc:
            raise MmreplayError(f"{out}: cannot write: {exc.strerror or exc}") from None
        return
    try:
        old = out.stat()
    except OSError:
        old = None
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if old is not None:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
            if os.geteuid() == 0:
                os.chown(tmp, old.st_uid, old.st_gid)
        else:
            os.chmod(tmp, _new_file_mode())
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
        return KeepOpen(sys.stdout)
    if sys.stdout.isatty():
        raise MmreplayError("-: will not write binary data to a terminal (redirect stdout to a "
                            "file or a pipe)")
    sys.stdout.flush()
    return KeepOpen(sys.stdout.buffer)


class KeepOpen:
    """A file handed to a writer that may close it when done (pyarrow closes the file it writes
    through): flushed, never closed, so that its owner can go on with it (stdout; a file
    atomic_output has yet to sync and rename)."""

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


def open_input(path: str | os.PathLike, what: str, error: type = MmreplayError,
               pipes: bool = False, interrupted=None):
    """Open ``path`` for binary reading, or raise ``error`` with one line: a folder, a missing
    file, a refused open, or anything but a regular file (a device, a socket; a FIFO too unless
    ``pipes``). The type is checked before opening: opening a FIFO blocks until a writer comes,
    deaf to signals whose handler only takes note. So a FIFO (``<(zcat log)``) is opened without
    blocking and waited on in short polls, until its writer has written or gone, or until
    ``interrupted()`` (then ``error``; without it, Ctrl-C raises KeyboardInterrupt as usual).
    ``what`` names the expected content ("a trace file")."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{path}: no such file") from None
    except OSError as exc:
        raise error(f"{path}: cannot open: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{path}: is a folder, not {what}")
    try:
        if stat.S_ISFIFO(mode) and pipes:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            waiting = select.poll()
            waiting.register(fd, select.POLLIN | select.POLLHUP)
            while not waiting.poll(100):  # Linux reports no POLLHUP before a first writer
                if interrupted is not None and interrupted():
                    os.close(fd)
                    raise error(f"{path}: interrupted while waiting for a writer on this FIFO")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        if not stat.S_ISREG(mode):
            kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device or special file"
            raise error(f"{path}: is {kind}, not {what} (a regular file)")
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
