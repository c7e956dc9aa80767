"""Refuse oversized Arrow IPC files before Arrow decompresses them.

A hostile trace can claim a billion rows, or a compressed buffer that inflates to gigabytes, in
a file of a few kilobytes. Arrow would allocate whatever the file claims. Here the blocks the
file's footer lists (record batches and dictionaries: exactly what ``pyarrow.ipc.open_file``
reads, not the stream, which an end-of-stream marker can cut short) have their metadata (a
flatbuffer) read without decompressing the bodies: the row count, and for compressed buffers the
uncompressed size stored in their first 8 bytes, are checked against limits first, and so is
the total they would take once read (with a per-batch overhead: many one-row batches cost more
than their bytes) against the memory this process can still have.
"""

from __future__ import annotations

import struct

import pyarrow as pa

from .errors import TraceError
from .host import available_memory_bytes
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


# Memory one record batch costs once read, beyond its buffers (Arrow arrays and Python objects
# per column and chunk): 200,000 one-row batches took 2.6 GB, ~13 KB each, measured.
BATCH_OVERHEAD_BYTES = 16 << 10
_BLOCK = struct.Struct("<qi4xq")  # Block: offset, metaDataLength, (padding), bodyLength
_MESSAGE_RECORD_BATCH, _MESSAGE_DICTIONARY_BATCH = 3, 2  # MessageHeader union types


def _damaged(detail: str) -> TraceError:
    return TraceError(f"damaged or truncated Arrow file ({detail})")


def _footer_blocks(data: bytes) -> tuple[list, list]:
    """The (offset, metadata length) of every dictionary and record batch block the file's footer
    lists: exactly the messages ``pyarrow.ipc.open_file`` reads, whatever the stream between
    holds (an end-of-stream marker there hides later messages from a stream reader)."""
    if len(data) < 18 or bytes(data[-6:]) != b"ARROW1":
        raise _damaged("no Arrow file footer")
    (footer_length,) = struct.unpack_from("<i", data, len(data) - 10)
    footer_start = len(data) - 10 - footer_length
    if footer_length <= 0 or footer_start < 8:
        raise _damaged(f"Arrow file footer of {footer_length} bytes does not fit the file")
    footer = data[footer_start:footer_start + footer_length]
    (root,) = struct.unpack_from("<I", footer, 0)
    table = _Table(footer, root)
    dictionaries = [_BLOCK.unpack_from(footer, at)[:2] for at in table.struct_vector(2, 24)]
    batches = [_BLOCK.unpack_from(footer, at)[:2] for at in table.struct_vector(3, 24)]
    return dictionaries, batches


def _message_at(data: bytes, offset: int, metadata_length: int):
    """(Message flatbuffer bytes, its root table, the body as a memoryview) of one block."""
    if offset < 8 or metadata_length < 8 or offset + metadata_length > len(data):
        raise _damaged(f"a block at offset {offset} lies outside the file")
    (marker,) = struct.unpack_from("<I", data, offset)
    flatbuffer_at = offset + 8 if marker == 0xFFFFFFFF else offset + 4
    meta = bytes(data[flatbuffer_at:offset + metadata_length])
    (root,) = struct.unpack_from("<I", meta, 0)
    message = _Table(meta, root)
    body_length = message.scalar(3, "<q")  # Message.bodyLength
    body_start = offset + metadata_length
    if body_length < 0 or body_start + body_length > len(data):
        raise _damaged(f"the message at offset {offset} claims a body past the end of the file")
    return meta, message, memoryview(data)[body_start:body_start + body_length]


def _inflated_bytes(meta: bytes, batch: _Table, body) -> int:
    """What a record batch's buffers take once read: compressed buffers at the size their first
    8 bytes declare, the others at their size."""
    compressed = batch.table(3) is not None  # RecordBatch.compression
    total = 0
    for item in batch.struct_vector(2, 16):  # RecordBatch.buffers: [Buffer]
        offset, size = struct.unpack_from("<qq", meta, item)
        if size < 0 or offset < 0 or offset + size > len(body):
            raise _damaged("a record batch buffer lies outside its message body")
        declared = 0
        if compressed and size >= 8:
            (declared,) = struct.unpack_from("<q", body, offset)
        total += max(declared, size)
    return total


def check_ipc_sizes(data, max_events: int = MAX_EVENTS,
                    max_bytes_per_row: int = MAX_BYTES_PER_ROW) -> int:
    """Total rows claimed by the record batches of an Arrow IPC *file* held in ``data``.

    Walks the blocks the footer lists (record batches and dictionaries), which are what Arrow
    will read. Raises TraceError when the rows exceed ``max_events``, a batch's buffers would
    inflate beyond ``max_bytes_per_row`` per row, or all of it (buffers and per-batch overhead)
    would take more than half the memory available. Malformed metadata raises TraceError too.
    """
    try:
        if isinstance(data, pa.Buffer):
            data = memoryview(data)
        dictionaries, batches = _footer_blocks(data)
        available = available_memory_bytes()
        total = (len(dictionaries) + len(batches)) * BATCH_OVERHEAD_BYTES
        rows = 0

        def check_total() -> None:
            if available is not None and total > available // 2:
                raise TraceError(f"read and decompressed, the file would take at least "
                                 f"{fmt_bytes(total)}, more "
                                 f"than half of the {fmt_bytes(available)} of memory available; "
                                 "refusing to load it")

        check_total()  # many tiny batches: refused before reading any of them
        for kind, blocks in ((_MESSAGE_DICTIONARY_BATCH, dictionaries),
                             (_MESSAGE_RECORD_BATCH, batches)):
            for offset, metadata_length in blocks:
                meta, message, body = _message_at(data, offset, metadata_length)
                if message.scalar(1, "<B") != kind:  # Message.header_type
                    raise _damaged(f"the block at offset {offset} is not the message its "
                                     "footer entry says")
                header = message.table(2)  # Message.header
                if header is None:
                    raise _damaged("batch message without a header")
                batch = header.table(1) if kind == _MESSAGE_DICTIONARY_BATCH else header
                if batch is None:
                    raise _damaged("dictionary batch without data")
                length = batch.scalar(0, "<q")  # RecordBatch.length
                if length < 0:
                    raise TraceError(f"a batch claims {length} rows")
                if kind == _MESSAGE_RECORD_BATCH:
                    rows += length
                    if rows > max_events:
                        raise TraceError(f"the file claims more than {max_events} events; "
                                         "refusing to load it")
                inflated = _inflated_bytes(meta, batch, body)
                if inflated > length * max_bytes_per_row + MAX_BATCH_OVERHEAD_BYTES:
                    raise TraceError(f"a batch of {length} rows claims {inflated} bytes once "
                                     "decompressed; refusing to load it")
                total += inflated
                check_total()
        return rows
    except TraceError:
        raise
    except (pa.ArrowException, struct.error, ValueError, OSError, IndexError) as exc:
        raise TraceError(f"damaged or truncated Arrow file ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
