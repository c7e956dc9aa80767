"""The one door every trace-reading command goes through: from what the user named to trace bytes.

A trace file (Arrow IPC, format v1 or v2) is memory-mapped as it is. Text is looked through for
traces (``traces.mail``): a saved message with a share block inline or a trace attached, an
mbox of several messages, any text holding a block, quoted in a reply or not. Anything else is
identified from its first bytes, so that a Parquet file, an IPC stream or an strace log gets a
one-line explanation rather than an Arrow error.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .errors import TraceError
from .files import open_input

ARROW_MAGIC = b"ARROW1"
# Mail and text inputs are read whole: a lore thread is a few megabytes.
MAX_TEXT_BYTES = 256 << 20
# What text (mail in any 8-bit charset) is made of: no control characters but tab and line ends.
TEXT_BYTES = bytes([9, 10, 11, 12, 13, *range(32, 127), *range(128, 256)])
SNIFF_BYTES = 4096
# Compressed files (strace logs travel compressed): first bytes -> compression.
COMPRESSION_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"),
                     (b"\x28\xb5\x2f\xfd", "zstd"), (b"BZh", "bzip2"))


@dataclass
class TraceSource:
    """The bytes of one trace file and how to name it in messages."""
    data: pa.Buffer
    label: str
    where: str | None = None  # inside a mail: "message 2 (...), block at line 40"

    def sha256(self) -> str:
        return hashlib.sha256(memoryview(self.data)).hexdigest()


def _kind_of(head: bytes) -> str | None:
    """What a file that is not an Arrow IPC file is; None for text (mail, mbox, a block)."""
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith(b"\xff\xff\xff\xff") or head.startswith(b"\x00\x00\x00\x00"):
        return "an Arrow IPC stream (write traces as IPC files: pyarrow.feather.write_feather)"
    compression = compression_of(head)
    if compression:
        return f"{'an' if compression == 'xz' else 'a'} {compression}-compressed file"
    if not head.translate(None, TEXT_BYTES):
        return None
    return "not an Arrow IPC file"


def compression_of(head: bytes) -> str | None:
    """gzip, xz, zstd or bzip2 from a file's first bytes; None for anything else."""
    return next((name for magic, name in COMPRESSION_MAGIC if head.startswith(magic)), None)


def import_hint(path) -> str:
    """What to do with a text or compressed file that holds no trace."""
    return f"; if it is an strace log: mmreplay import {path}"


def open_trace(path: str | os.PathLike, pick: int | None = None) -> TraceSource:
    """The trace ``path`` names; ``pick`` (1-based) chooses one when the input holds several."""
    path = Path(path)
    with open_input(path, "a trace file", TraceError) as handle:
        try:
            head = handle.read(SNIFF_BYTES)
            if not head:
                raise TraceError(f"{path}: empty file, not a trace")
            kind = None if head.startswith(ARROW_MAGIC) else _kind_of(head)
            if kind is not None:
                raise TraceError(f"{path}: {kind}, not an mmreplay trace (Arrow IPC file)"
                                 + (import_hint(path) if compression_of(head) else ""))
            # Text is read on from the same handle: a pipe cannot be opened twice.
            text = None if head.startswith(ARROW_MAGIC) else \
                head + handle.read(MAX_TEXT_BYTES + 1 - len(head))
        except OSError as exc:  # /proc/self/mem and the like
            raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if text is not None:
        return _from_text(path, text, pick)
    if pick not in (None, 1):
        raise TraceError(f"{path}: --pick {pick}, but a trace file holds one trace")
    try:
        data = pa.memory_map(str(path), "r").read_buffer()
    except (OSError, pa.ArrowException) as exc:
        raise TraceError(f"{path}: cannot read: {exc}") from None
    return TraceSource(data, str(path))


def _from_text(path: Path, data: bytes, pick: int | None) -> TraceSource:
    """The trace in a mail, an mbox or a text (see traces.mail)."""
    from .mail import traces_in

    if len(data) > MAX_TEXT_BYTES:
        raise TraceError(f"{path}: a text file of more than {MAX_TEXT_BYTES >> 20} MiB; too large "
                         "to look for a trace in")
    what, found = traces_in(path, data)
    good, seen = [], set()
    for item in found:
        if item.data is not None:
            digest = hashlib.sha256(item.data).hexdigest()
            if digest not in seen:  # the same trace quoted again in a reply is one trace
                seen.add(digest)
                good.append(item)
    if not good:
        damaged = [item for item in found if item.problem]
        if damaged:
            first = damaged[0]
            more = f" (and {len(damaged) - 1} more block(s) like it)" if len(damaged) > 1 else ""
            raise TraceError(f"{path}: {first.where}: {first.problem}{more}")
        hint = import_hint(path) if what == "a text file" else ""
        raise TraceError(f"{path}: {what} with no mmreplay trace in it: no share block and no "
                         f"trace attached{hint}")
    if pick is None and len(good) > 1:
        listing = "; ".join(f"[{n}] {item.where}: {item.description}"
                            for n, item in enumerate(good, start=1))
        raise TraceError(f"{path}: {what} holding {len(good)} different traces; choose one with "
                         f"--pick N: {listing}")
    if pick is not None and not 1 <= pick <= len(good):
        raise TraceError(f"{path}: --pick {pick}, but {what} holds {len(good)} trace(s)")
    chosen = good[(pick or 1) - 1]
    return TraceSource(pa.py_buffer(chosen.data), f"{path}: {chosen.where}", chosen.where)
