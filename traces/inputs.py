"""The one door every trace-reading command goes through: from what the user named to trace bytes.

A trace file (Arrow IPC, format v1 or v2) is memory-mapped as it is. Anything else is identified
from its first bytes, so that a Parquet file, an IPC stream or an strace log gets a one-line
explanation rather than an Arrow error.
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


@dataclass
class TraceSource:
    """The bytes of one trace file and how to name it in messages."""
    data: pa.Buffer
    label: str

    def sha256(self) -> str:
        return hashlib.sha256(memoryview(self.data)).hexdigest()


def _kind_of(head: bytes) -> str:
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith(b"\xff\xff\xff\xff") or head.startswith(b"\x00\x00\x00\x00"):
        return "an Arrow IPC stream (write traces as IPC files: pyarrow.feather.write_feather)"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "a text file (an strace log? use `mmreplay import`)"
    return "not an Arrow IPC file"


def open_trace(path: str | os.PathLike, pick: int | None = None) -> TraceSource:
    """The trace ``path`` names; ``pick`` (1-based) chooses one when the input holds several."""
    path = Path(path)
    with open_input(path, "a trace file", TraceError) as handle:
        try:
            head = handle.read(8)
        except OSError as exc:  # /proc/self/mem and the like
            raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise TraceError(f"{path}: empty file, not a trace")
    if head.startswith(ARROW_MAGIC):
        if pick not in (None, 1):
            raise TraceError(f"{path}: --pick {pick}, but a trace file holds one trace")
        try:
            data = pa.memory_map(str(path), "r").read_buffer()
        except (OSError, pa.ArrowException) as exc:
            raise TraceError(f"{path}: cannot read: {exc}") from None
        return TraceSource(data, str(path))
    raise TraceError(f"{path}: {_kind_of(head)}, not an mmreplay trace (Arrow IPC file)")
