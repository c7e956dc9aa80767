"""Refuse oversized Arrow IPC files before Arrow decompresses them.

A hostile trace can claim a billion rows, or a compressed buffer that inflates to gigabytes, in
a file of a few kilobytes. Arrow would allocate whatever the file claims. Here every record
batch's metadata (a flatbuffer) is read without touching the bodies: the row count, and for
compressed buffers the uncompressed size stored in their first 8 bytes, are checked against
limits first, and so is the total they would take once decompressed against the memory this
process can still have (a few kilobytes of zstd can hold gigabytes of constant columns).
"""

from __future__ import annotations

import resource
import struct

import pyarrow as pa

from .errors import TraceError
from .host import meminfo_bytes
from .units import fmt_bytes

MAX_EVENTS = 200_000_000
# A row of format v1 is ~70 bytes uncompressed; allow generous room for extra columns.
MAX_BYTES_PER_ROW = 1024
MAX_BATCH_OVERHEAD_BYTES = 1 << 20


class _Table:
    """Minimal flatbuffer table reader: scalar fields and sub-tables by field id."""

    def __init__(self, data: bytes, position: int):
        self.data = data
        self.position = position
        (vtable_offset,) = struct.unpack_from("<i", data, position)
        self.vtable = position - vtable_offset
        self.vtable_size, _ = struct.unpack_from("<HH", data, self.vtable)

    def _field(self, field_id: int) -> int:
        entry = 4 + 2 * field_id
        if entry >= self.vtable_size:
            return 0
        (offset,) = struct.unpack_from("<H", self.data, self.vtable + entry)
        return offset

    def scalar(self, field_id: int, fmt: str, default=0):
        offset = self._field(field_id)
        return struct.unpack_from(fmt, self.data, self.position + offset)[0] if offset else default

    def table(self, field_id: int) -> "_Table | None":
        offset = self._field(field_id)
        if not offset:
            return None
        at = self.position + offset
        (target,) = struct.unpack_from("<I", self.data, at)
        return _Table(self.data, at + target)

    def struct_vector(self, field_id: int, item_size: int):
        offset = self._field(field_id)
        if not offset:
            return
        at = self.position + offset
        (target,) = struct.unpack_from("<I", self.data, at)
        start = at + target
        (count,) = struct.unpack_from("<I", self.data, start)
        for index in range(count):
            yield start + 4 + index * item_size


def available_memory_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, or less under an address-space limit
    (RLIMIT_AS). None when neither is known."""
    available = meminfo_bytes("MemAvailable")
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as handle:
                used = int(handle.read().split()[0]) * resource.getpagesize()
        except (OSError, ValueError, IndexError):
            used = 0
        room = max(0, limit - used)
        available = room if available is None else min(available, room)
    return available


def check_ipc_sizes(data, max_events: int = MAX_EVENTS) -> int:
    """Total rows claimed by the record batches of an Arrow IPC *file* held in ``data``.

    Raises TraceError when the rows exceed ``max_events`` or the buffers would inflate beyond
    what that many rows can need. Malformed metadata raises TraceError too.
    """
    try:
        buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
        reader = pa.ipc.MessageReader.open_stream(buffer[8:])
        rows = 0
        total_inflated = 0
        available = available_memory_bytes()
        while True:
            try:
                message = reader.read_next_message()
            except StopIteration:
                break
            if message.type != "record batch":
                continue
            meta = message.metadata.to_pybytes()
            (root,) = struct.unpack_from("<I", meta, 0)
            header = _Table(meta, root).table(2)  # Message.header
            if header is None:
                raise TraceError("record batch message without a header")
            length = header.scalar(0, "<q")  # RecordBatch.length
            if length < 0:
                raise TraceError(f"record batch claims {length} rows")
            rows += length
            if rows > max_events:
                raise TraceError(f"the file claims more than {max_events} events; refusing to "
                                 "load it")
            compressed = header.table(3) is not None  # RecordBatch.compression
            if compressed and message.body is not None:
                body = message.body.to_pybytes()
                inflated = 0
                for item in header.struct_vector(2, 16):  # RecordBatch.buffers: [Buffer]
                    offset, size = struct.unpack_from("<qq", meta, item)
                    if size >= 8 and 0 <= offset <= len(body) - 8:
                        (declared,) = struct.unpack_from("<q", body, offset)
                        inflated += max(declared, size)
                if inflated > length * MAX_BYTES_PER_ROW + MAX_BATCH_OVERHEAD_BYTES:
                    raise TraceError(f"a record batch of {length} rows claims {inflated} bytes "
                                     "once decompressed; refusing to load it")
                total_inflated += inflated
                if available is not None and total_inflated > available // 2:
                    raise TraceError(f"decompressed, the file would take at least "
                                     f"{fmt_bytes(total_inflated)}, more than half of the "
                                     f"{fmt_bytes(available)} of memory available; refusing to "
                                     "load it")
        return rows
    except TraceError:
        raise
    except (pa.ArrowException, struct.error, ValueError, OSError) as exc:
        raise TraceError(f"damaged or truncated Arrow file ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
