"""The bad-input corpus: every case is one file, the command that reads it, and its exact outcome.

Traces arrive by email from strangers, so each case is something a broken tool, a damaged disk or
a hostile sender could produce. The outcome is one of:

- ``Refused(fragments)``: exit status 2 and ONE stderr line ``Error: <file>: ...`` holding every
  fragment (never a traceback);
- ``Replayed(skipped, changed)``: ``mmreplay replay -o FILE`` exits 0 and reports exactly these
  counts of trace events not replayed (``skipped``) and replayed differently (``changed``);
- ``Imported(events, report)``: ``mmreplay import --json`` exits 0, writes a trace of ``events``
  rows, and its import report holds these exact counts (dotted paths into the report).

Nothing is committed but this script: the files are generated (deterministically) into a folder,
by the tests into a temporary one, or by hand:

    python tests/data/bad/make_corpus.py OUTDIR     # writes every case, prints name and outcome
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import email.policy
import gzip
import hashlib
import io
import json
import lzma
import random
import struct
import sys
import zlib
from email.message import EmailMessage
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

if __package__ in (None, ""):  # run as a script from anywhere: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from traces.encoding import encode  # noqa: E402
from traces.format import build_table, validate, with_metadata  # noqa: E402
from traces.share_trace import share_block  # noqa: E402
from traces.schema import (COLUMN_NAMES, COLUMNS, MADV, MAP, MAP_ANONYMOUS,  # noqa: E402
                           MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED, MREMAP_FIXED,
                           MREMAP_MAYMOVE)

KIB, MIB, GIB, TIB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
U64_MAX = (1 << 64) - 1
RW, ANON = 3, MAP_PRIVATE | MAP_ANONYMOUS
MAP_HUGETLB, MAP_NORESERVE = MAP["MAP_HUGETLB"], MAP["MAP_NORESERVE"]
# Fixed metadata (no creation time) so that every generated file is the same from run to run.
METADATA = {"format_version": 1, "format_minor": 0, "source": "bad-corpus",
            "created": "2025-01-01T00:00:00+00:00", "tool_version": "0.1.0"}

# Addresses the hostile traces aim at. test_foreign_memory.py places sentinel mappings of known
# content at each of them before replaying: the replay must leave them alone.
LOW_FIXED = 0x10000                 # MAP_FIXED at a low address (just above mmap_min_addr)
FOREIGN = 0x2000_0000_0000          # never mapped by the trace: munmap/madvise/mprotect/mremap here
FIXED_TARGET = 0x2100_0000_0000     # mremap MREMAP_FIXED target
KERNEL_HALF = 0xFFFF_8880_0000_0000
TRACE_BASE = 0x7F00_0000_0000       # where the traced process's own mappings were
SENTINEL_ADDRESSES = (LOW_FIXED, FOREIGN, FIXED_TARGET)


# ---------------------------------------------------------------------------------------------
# Outcomes.

@dataclass(frozen=True)
class Refused:
    fragments: tuple[str, ...]
    # The commands that must refuse the file: every reader for a damaged trace, only replay
    # for a trace that is valid but too big to replay here.
    by: tuple[str, ...] = ("info", "replay")


@dataclass(frozen=True)
class Replayed:
    skipped: dict = field(default_factory=dict)   # trace events not replayed, by reason
    changed: dict = field(default_factory=dict)   # trace events replayed differently, by reason
    failed: dict = field(default_factory=dict)    # replayed calls the kernel refused, by op


@dataclass(frozen=True)
class Imported:
    events: int
    report: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str                     # file name inside the corpus folder
    group: str                    # "arrow", "hostile" or "strace"
    what: str                     # one line: what the file is
    make: Callable[[], bytes]
    outcome: Refused | Replayed | Imported

    @property
    def command(self) -> str:
        """The mmreplay command that meets the file: import for logs, replay for traces (and for
    mails carrying them)."""
        return "import" if self.group == "strace" else "replay"


def refused(*fragments: str, by: tuple[str, ...] = ("info", "replay")) -> Refused:
    return Refused(tuple(fragments), by)


# ---------------------------------------------------------------------------------------------
# Rows and Arrow bytes.

def mmap(addr, length, *, flags=ANON, hint=0, prot=RW, fd=-1, errno=0, **extra):
    return dict(op="mmap", addr=addr, length=length, hint=hint, prot=prot, flags=flags, fd=fd,
                offset=0, errno=errno, **extra)


def munmap(addr, length, **extra):
    return dict(op="munmap", addr=addr, length=length, errno=0, **extra)


def mremap(addr, length, new_addr, new_length, flags=MREMAP_MAYMOVE, hint=0, **extra):
    return dict(op="mremap", addr=addr, length=length, new_addr=new_addr, new_length=new_length,
                flags=flags, hint=hint, errno=0, **extra)


def madvise(addr, length, advice, **extra):
    return dict(op="madvise", addr=addr, length=length, advice=advice, errno=0, **extra)


def mprotect(addr, length, prot, **extra):
    return dict(op="mprotect", addr=addr, length=length, prot=prot, errno=0, **extra)


def brk(argument, returned, **extra):
    return dict(op="brk", addr=argument, length=0, new_addr=returned, errno=0, **extra)


def table(rows: list[dict], metadata: dict | None = METADATA) -> pa.Table:
    """A format v1 table (not validated): ts_ns = 1000 * (row + 1) unless given, tid 1."""
    columns = {name: [] for name in COLUMN_NAMES}
    for index, row in enumerate(rows):
        full = {"ts_ns": 1000 * (index + 1), "tid": 1, **row}
        for name in COLUMN_NAMES:
            columns[name].append(full.get(name))
    return build_table(columns, metadata)


def arrow_bytes(tbl: pa.Table, compression: str | None = "zstd") -> bytes:
    """An Arrow IPC file, exactly as pyarrow writes it (no mmreplay validation on the way)."""
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    with pa.ipc.new_file(sink, tbl.schema, options=options) as writer:
        writer.write_table(tbl)
    return sink.getvalue().to_pybytes()


def trace_bytes(rows: list[dict], **kw) -> bytes:
    return arrow_bytes(table(rows), **kw)


# A small good trace the damaged-file cases start from; row 3's timestamp is unique in the file.
GOOD_ROWS = [
    mmap(TRACE_BASE, 1 * MIB, ts_ns=0x5A5A_0001),
    mmap(TRACE_BASE + 4 * MIB, 64 * KIB, ts_ns=0x5A5A_0002),
    madvise(TRACE_BASE, 1 * MIB, MADV["MADV_HUGEPAGE"], ts_ns=0x5A5A_0003),
    munmap(TRACE_BASE + 4 * MIB, 64 * KIB, ts_ns=0x1234_5678_9ABC),
    mremap(TRACE_BASE, 1 * MIB, TRACE_BASE + 8 * MIB, 2 * MIB, ts_ns=0x1234_5678_9ABD),
    mprotect(TRACE_BASE + 8 * MIB, 4 * KIB, 1, ts_ns=0x1234_5678_9ABE),
    munmap(TRACE_BASE + 8 * MIB, 2 * MIB, ts_ns=0x1234_5678_9ABF),
]
ROW3_TS = GOOD_ROWS[3]["ts_ns"]


def good(compression: str | None = "zstd") -> bytes:
    return trace_bytes(GOOD_ROWS, compression=compression)


def flip(data: bytes, offset: int, bit: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def _find_once(data: bytes, needle: bytes, start: int = 0) -> int:
    at = data.find(needle, start)
    if at < 0:
        raise ValueError(f"{needle!r} not found")
    return at


# Arrow IPC file layout: "ARROW1\0\0", messages (0xFFFFFFFF, int32 metadata size, flatbuffer
# Message, body), footer, int32 footer size, "ARROW1". Enough flatbuffer reading to find fields.

def _fb_table(buf: bytes, position: int) -> tuple[int, int, int]:
    (vtable_offset,) = struct.unpack_from("<i", buf, position)
    vtable = position - vtable_offset
    (vtable_size,) = struct.unpack_from("<H", buf, vtable)
    return position, vtable, vtable_size


def _fb_field(buf: bytes, table: tuple[int, int, int], field_id: int) -> int | None:
    """Absolute position of a field's value, or None when it is absent."""
    position, vtable, vtable_size = table
    entry = 4 + 2 * field_id
    if entry >= vtable_size:
        return None
    (offset,) = struct.unpack_from("<H", buf, vtable + entry)
    return position + offset if offset else None


def _fb_subtable(buf: bytes, table, field_id: int):
    at = _fb_field(buf, table, field_id)
    (target,) = struct.unpack_from("<I", buf, at)
    return _fb_table(buf, at + target)


@dataclass
class Message:
    header_type: int       # 1 schema, 2 dictionary batch, 3 record batch
    meta_start: int        # absolute offset of the flatbuffer Message
    body_start: int
    body_length: int

    def header(self, data: bytes):
        return _fb_subtable(data, _fb_table(data, self.meta_start + struct.unpack_from(
            "<I", data, self.meta_start)[0]), 2)


def messages(data: bytes) -> list[Message]:
    found, position = [], 8
    while position + 8 <= len(data):
        marker, size = struct.unpack_from("<Ii", data, position)
        if marker != 0xFFFFFFFF or size <= 0:
            break
        meta_start = position + 8
        root = _fb_table(data, meta_start + struct.unpack_from("<I", data, meta_start)[0])
        header_type = data[_fb_field(data, root, 1)]
        at = _fb_field(data, root, 3)
        body_length = struct.unpack_from("<q", data, at)[0] if at else 0
        found.append(Message(header_type, meta_start, meta_start + size, body_length))
        position = meta_start + size + body_length
    return found


def record_batch(data: bytes) -> Message:
    return next(m for m in messages(data) if m.header_type == 3)


def with_claimed_rows(data: bytes, rows: int) -> bytes:
    """The first record batch claims ``rows`` rows (its buffers are unchanged)."""
    batch = record_batch(data)
    out = bytearray(data)
    struct.pack_into("<q", out, _fb_field(data, batch.header(data), 0), rows)
    return bytes(out)


def with_inflated_buffer(data: bytes, declared: int) -> bytes:
    """The first compressed buffer of the first record batch declares ``declared`` bytes once
    decompressed (the 8-byte prefix of Arrow's compressed buffers)."""
    out = bytearray(data)
    struct.pack_into("<q", out, first_compressed_buffer(data), declared)
    return bytes(out)


def first_compressed_buffer(data: bytes) -> int:
    """Absolute offset of the first compressed buffer of the first record batch: an int64
    uncompressed length, then the zstd frame (magic 28 b5 2f fd)."""
    batch = record_batch(data)
    at = _fb_field(data, batch.header(data), 2)
    vector = at + struct.unpack_from("<I", data, at)[0]
    (count,) = struct.unpack_from("<I", data, vector)
    for index in range(count):
        offset, size = struct.unpack_from("<qq", data, vector + 4 + 16 * index)
        if size >= 12:
            return batch.body_start + offset
    raise ValueError("no compressed buffer")


def hidden_footer_batch(blob_bytes: int = 2 * MIB, rows: int = 16) -> bytes:
    """A trace whose second record batch is hidden from a stream reader but read through the
    footer: an end-of-stream marker is put before it and the footer's block offset moved past
    the marker. The hidden batch has an extra binary column of ``rows`` x ``blob_bytes`` zeros
    (a few KB of zstd, ``rows * blob_bytes`` once read)."""
    first = table(GOOD_ROWS)
    hidden = table([mmap(A + (i + 16) * MIB, 4 * KIB, ts_ns=ROW3_TS + 0x1000 + i)
                    for i in range(rows)])
    blob = pa.field("blob", pa.binary())
    first = first.append_column(blob, pa.array([b""] * first.num_rows, pa.binary()))
    hidden = hidden.append_column(blob, pa.array([bytes(blob_bytes)] * rows, pa.binary()))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, first.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        w.write_table(first)
        w.write_table(hidden)
    data = sink.getvalue().to_pybytes()
    batches = [m for m in messages(data) if m.header_type == 3]
    hidden_at = batches[1].meta_start - 8   # its continuation marker
    footer_length = struct.unpack_from("<i", data, len(data) - 10)[0]
    footer_start = len(data) - 10 - footer_length
    footer = bytearray(data[footer_start:len(data) - 10])
    root = _fb_table(footer, struct.unpack_from("<I", footer, 0)[0])
    at = _fb_field(footer, root, 3)  # Footer.recordBatches: [Block]
    vector = at + struct.unpack_from("<I", footer, at)[0]
    for index in range(struct.unpack_from("<I", footer, vector)[0]):
        entry = vector + 4 + 24 * index
        if struct.unpack_from("<q", footer, entry)[0] == hidden_at:
            struct.pack_into("<q", footer, entry, hidden_at + 8)
    end_of_stream = struct.pack("<Ii", 0xFFFFFFFF, 0)
    return (data[:hidden_at] + end_of_stream + data[hidden_at:footer_start] + bytes(footer)
            + data[len(data) - 10:])


def footer_size_at(data: bytes) -> int:
    return len(data) - 10


# ---------------------------------------------------------------------------------------------
# Arrow files that are not valid traces.

def _plain(columns: dict, types: dict | None = None, metadata=METADATA) -> bytes:
    """A table with the given columns, as a foreign tool would write it."""
    types = types or {}
    arrays = {name: pa.array(values, types.get(name)) for name, values in columns.items()}
    tbl = pa.table(arrays)
    if metadata is not None:
        tbl = with_metadata(tbl, metadata)
    return arrow_bytes(tbl)


def _good_columns() -> dict:
    tbl = table(GOOD_ROWS)
    columns = {name: tbl.column(name).to_pylist() for name in tbl.schema.names}
    return columns


def _good_types() -> dict:
    return {name: typ for name, typ, _ in COLUMNS if name != "op"}


def _with_column(name: str, values, typ) -> bytes:
    columns, types = _good_columns(), _good_types()
    columns[name] = values
    types[name] = typ
    return _plain(columns, types)


def _op_indices_out_of_range() -> bytes:
    tbl = table(GOOD_ROWS)
    indices = pa.array([0, 0, 3, 9, 2, 4, 1], pa.int8())  # the dictionary has 6 entries
    op = pa.DictionaryArray.from_arrays(indices, pa.array(["mmap", "munmap", "mremap", "madvise",
                                                           "mprotect", "brk"]), safe=False)
    return arrow_bytes(tbl.set_column(tbl.schema.get_field_index("op"), "op", op))


def _metadata_raw(raw: bytes) -> bytes:
    tbl = table(GOOD_ROWS).replace_schema_metadata({b"mmreplay": raw})
    return arrow_bytes(tbl)


def _stream() -> bytes:
    sink = pa.BufferOutputStream()
    tbl = table(GOOD_ROWS)
    with pa.ipc.new_stream(sink, tbl.schema) as writer:
        writer.write_table(tbl)
    return sink.getvalue().to_pybytes()


def _parquet() -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table(GOOD_ROWS), sink)
    return sink.getvalue().to_pybytes()


def _csv() -> bytes:
    columns = _good_columns()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(columns))
    for row in zip(*columns.values()):
        writer.writerow(["" if v is None else v for v in row])
    return out.getvalue().encode()


def _duplicate_column() -> bytes:
    tbl = table(GOOD_ROWS)
    return arrow_bytes(tbl.append_column("ts_ns", tbl.column("ts_ns")))


def _null_in_required() -> bytes:
    columns = _good_columns()
    columns["tid"][2] = None
    return _plain(columns, _good_types())


def _random(seed: int, size: int, prefix: bytes = b"") -> bytes:
    return prefix + random.Random(seed).randbytes(size)


ARROW_CASES = [
    Case("empty.arrow", "arrow", "a 0-byte file", lambda: b"", refused("empty file, not a trace")),
    Case("magic-only.arrow", "arrow", "the 8 magic bytes and nothing else",
         lambda: b"ARROW1\x00\x00", refused("damaged or truncated Arrow file")),
    Case("truncated-64.arrow", "arrow", "a good trace cut after 64 bytes (inside the schema)",
         lambda: good()[:64], refused("damaged or truncated Arrow file")),
    Case("truncated-half.arrow", "arrow", "a good trace cut in half (inside a record batch)",
         lambda: good()[: len(good()) // 2], refused("damaged or truncated Arrow file")),
    Case("truncated-footer.arrow", "arrow", "a good trace cut 64 bytes before its end (footer)",
         lambda: good()[:-64], refused("damaged or truncated Arrow file")),
    Case("truncated-magic.arrow", "arrow", "a good trace missing its last byte (closing magic)",
         lambda: good()[:-1], refused("damaged or truncated Arrow file")),
    Case("noise.arrow", "arrow", "4 KiB of random bytes", lambda: _random(1, 4096),
         refused("not an Arrow IPC file, not an mmreplay trace")),
    Case("noise-after-magic.arrow", "arrow", "Arrow magic then 4 KiB of random bytes",
         lambda: _random(2, 4096, b"ARROW1\x00\x00"), refused("damaged or truncated Arrow file")),
    Case("bitflip-compressed-data.arrow", "arrow",
         "one bit flipped in a zstd-compressed column buffer (its frame magic)",
         lambda: flip(good(), first_compressed_buffer(good()) + 8, 3),
         refused("damaged or truncated Arrow file")),
    Case("bitflip-timestamp.arrow", "arrow",
         "uncompressed file, the sign bit of row 3's ts_ns flipped",
         lambda: flip(good(None), _find_once(good(None), struct.pack("<q", ROW3_TS)) + 7, 7),
         refused("row 3, column ts_ns: negative timestamp")),
    Case("bitflip-row-count.arrow", "arrow",
         "one bit flipped in a record batch's row count (7 -> 2^40 + 7 rows)",
         lambda: flip(good(), _fb_field(good(), record_batch(good()).header(good()), 0) + 5, 0),
         refused("claims more than 200000000 events")),
    Case("bitflip-footer-size.arrow", "arrow", "one bit flipped in the footer size",
         lambda: flip(good(), footer_size_at(good()) + 2, 4),
         refused("damaged or truncated Arrow file")),
    Case("bitflip-metadata-json.arrow", "arrow",
         "one bit flipped in the JSON metadata ('{' becomes '}')",
         lambda: flip(good(), good().rfind(b'{"created"'), 1),
         refused("metadata is not valid JSON")),
    Case("bitflip-column-name.arrow", "arrow",
         "one bit flipped in the footer's schema: column ts_ns becomes ts_os",
         lambda: flip(good(), good().rfind(b"ts_ns") + 3, 0),
         refused("missing column(s) ts_ns")),
    Case("other-schema.arrow", "arrow", "a valid Arrow file of another schema",
         lambda: _plain({"name": ["a", "b"], "value": [1.5, 2.5]}, metadata=None),
         refused("not an mmreplay trace: missing column(s) ts_ns, tid, op")),
    Case("wrong-type-ts.arrow", "arrow", "ts_ns stored as float64",
         lambda: _with_column("ts_ns", [float(v) for v in _good_columns()["ts_ns"]],
                              pa.float64()),
         refused("column ts_ns: type double, expected int64")),
    Case("wrong-type-addr.arrow", "arrow", "addr stored as signed int64",
         lambda: _with_column("addr", [v & ((1 << 63) - 1) for v in _good_columns()["addr"]],
                              pa.int64()),
         refused("column addr: type int64, expected uint64")),
    Case("wrong-type-op.arrow", "arrow", "op stored as integer codes",
         lambda: _with_column("op", [0, 0, 3, 1, 2, 4, 1], pa.int32()),
         refused("column op: type int32, expected dictionary<values=string, indices=int8")),
    Case("dictionary-index-out-of-range.arrow", "arrow",
         "op dictionary index 9 in a 6-entry dictionary",
         _op_indices_out_of_range, refused("damaged or truncated Arrow file",
                                           "out of bounds")),
    Case("duplicate-column.arrow", "arrow", "ts_ns twice",
         _duplicate_column, refused("column ts_ns appears 2 times")),
    Case("null-in-required-column.arrow", "arrow", "a null thread id",
         _null_in_required, refused("row 2, column tid: missing value in a required column")),
    Case("metadata-invalid-json.arrow", "arrow", "metadata that is not JSON",
         lambda: _metadata_raw(b'{"format_version": 1, "source": '),
         refused("metadata is not valid JSON")),
    Case("metadata-not-utf8.arrow", "arrow", "metadata bytes that are not UTF-8",
         lambda: _metadata_raw(b'{"source": "\xff\xfe"}'), refused("metadata is not valid JSON")),
    Case("metadata-huge.arrow", "arrow", "2 MiB of JSON metadata",
         lambda: _metadata_raw(json.dumps({**METADATA, "pad": "x" * (2 * MIB)}).encode()),
         refused("metadata is 2097", "bytes, more than the 1048576 allowed")),
    Case("metadata-deep.arrow", "arrow", "JSON metadata nested 100000 levels deep",
         lambda: _metadata_raw(b"[" * 100_000 + b"]" * 100_000),
         refused("metadata is not valid JSON")),
    Case("metadata-array.arrow", "arrow", "JSON metadata that is a list",
         lambda: _metadata_raw(b"[1, 2, 3]"), refused("metadata is not a JSON object")),
    Case("format-version-3.arrow", "arrow", "a trace of format version 3",
         lambda: _metadata_raw(json.dumps({**METADATA, "format_version": 3}).encode()),
         refused("trace format version 3 is not supported")),
    Case("claims-1e9-rows.arrow", "hostile",
         "10^9 tiny mappings: a 1 KiB file whose record batch claims a billion rows",
         lambda: with_claimed_rows(good(), 10**9), refused("claims more than 200000000 events")),
    Case("claims-huge-inflation.arrow", "arrow",
         "a compressed buffer that says it inflates to 1 TiB",
         lambda: with_inflated_buffer(good(), TIB), refused("once decompressed; refusing")),
    Case("claims-200-gib.arrow", "arrow",
         "2*10^8 rows declared to inflate to 200 GB in a 1 KiB file",
         lambda: with_inflated_buffer(with_claimed_rows(good(), 199_000_000), 199_000_000 * 1000),
         refused("decompressed", "more than")),
    Case("arrow-stream.arrow", "arrow", "an Arrow IPC stream instead of a file",
         _stream, refused("an Arrow IPC stream")),
    Case("parquet.arrow", "arrow", "a Parquet file of a good trace", _parquet,
         refused("a Parquet file")),
    Case("csv.arrow", "arrow", "a CSV file of a good trace", _csv,
         refused("a text file with no mmreplay trace in it", "if it is an strace log: "
                 "mmreplay import")),
    Case("gzip.arrow", "arrow", "a gzip-compressed trace", lambda: gzip.compress(good(), mtime=0),
         refused("a gzip-compressed file", "not an mmreplay trace")),
]


# ---------------------------------------------------------------------------------------------
# Valid traces with hostile content: the replay skips or relocates, counts, and goes on.

def _huge_pages_available() -> bool:
    """Whether a 2 MiB hugetlb mapping can be reserved here (the one host-dependent outcome)."""
    fields = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, value = line.partition(":")
            fields[name] = value.split()[0] if value.split() else "0"
    try:
        overcommit = int(Path("/proc/sys/vm/nr_overcommit_hugepages").read_text())
    except (OSError, ValueError):
        overcommit = 0
    return (fields.get("Hugepagesize") == str(2 * 1024)
            and (int(fields.get("HugePages_Free", "0")) >= 1 or overcommit > 0))


def _hugetlb_outcome(changed: dict, skipped: dict) -> Replayed:
    """A trace whose one hugetlb mmap is kernel-placed: it fails (counted) without huge pages."""
    if _huge_pages_available():
        return Replayed(changed=changed, skipped=skipped)
    return Replayed(changed=changed, failed={"mmap": 1},
                    skipped={**skipped, "target_mapping_failed_earlier":
                             skipped.get("target_mapping_failed_earlier", 0) + 1})


def _hostile(rows: list[dict]) -> Callable[[], bytes]:
    return lambda: trace_bytes(rows)


A = TRACE_BASE
HOSTILE_CASES = [
    Case("length-zero.arrow", "hostile", "mmap, munmap, madvise and mprotect of 0 bytes",
         _hostile([mmap(A, 0), mmap(A + MIB, 64 * KIB), munmap(A + MIB, 0),
                   madvise(A + MIB, 0, MADV["MADV_DONTNEED"]), mprotect(A + MIB, 0, 0),
                   munmap(A + MIB, 64 * KIB)]),
         Replayed(skipped={"bad_length": 4})),
    Case("length-2p63.arrow", "hostile", "mmap and mremap of 2^63 bytes, munmap of 2^63 bytes",
         _hostile([mmap(A, 1 << 63), mmap(A, 64 * KIB), mremap(A, 64 * KIB, A, 1 << 63),
                   munmap(1 << 63, 1 << 63), munmap(A, 64 * KIB)]),
         Replayed(skipped={"bad_length": 2, "munmap_unknown_range": 1})),
    Case("length-2p64-1.arrow", "hostile", "lengths of 2^64-1 for every op",
         _hostile([mmap(A, U64_MAX), mmap(A, 64 * KIB), munmap(A, U64_MAX),
                   madvise(A, U64_MAX, MADV["MADV_DONTNEED"]), mprotect(A, U64_MAX, 0),
                   mremap(A, U64_MAX, A, 64 * KIB), mremap(A, 64 * KIB, A, U64_MAX),
                   munmap(A, 64 * KIB)]),
         Replayed(skipped={"bad_length": 6})),
    Case("address-wraps.arrow", "hostile", "a mapping whose end passes 2^64",
         _hostile([mmap(U64_MAX - 4095, 8192), munmap(U64_MAX - 4095, 8192)]),
         Replayed(skipped={"bad_length": 2})),
    Case("kernel-half.arrow", "hostile",
         "addresses in the kernel half: returned by mmap, as a hint, and never mapped",
         _hostile([mmap(KERNEL_HALF, 2 * MIB), mmap(A, 64 * KIB, hint=KERNEL_HALF + 4 * MIB),
                   madvise(KERNEL_HALF, 2 * MIB, MADV["MADV_DONTNEED"]),
                   munmap(0xFFFF_FFFF_FF60_0000, 4096), mprotect(0xFFFF_FFFF_8100_0000, 4096, 7),
                   madvise(0xFFFF_FFFF_8100_0000, 4096, MADV["MADV_DONTNEED"]),
                   munmap(KERNEL_HALF, 2 * MIB), munmap(A, 64 * KIB)]),
         Replayed(skipped={"munmap_unknown_range": 1, "mprotect_unknown_range": 1,
                           "madvise_unknown_range": 1},
                  changed={"hint_outside_user_space_dropped": 1})),
    Case("map-fixed-low.arrow", "hostile", "MAP_FIXED at low addresses (page 0 and 0x10000)",
         _hostile([mmap(LOW_FIXED, 64 * KIB, flags=ANON | MAP_FIXED, hint=LOW_FIXED),
                   mmap(0, 4096, flags=ANON | MAP_FIXED, hint=0),
                   munmap(LOW_FIXED, 64 * KIB), munmap(0, 4096)]),
         Replayed(changed={"fixed_relocated": 2})),
    Case("map-fixed-noreplace-low.arrow", "hostile",
         "MAP_FIXED_NOREPLACE at page 0 and at 0x10000",
         _hostile([mmap(LOW_FIXED, 64 * KIB, flags=ANON | MAP_FIXED_NOREPLACE, hint=LOW_FIXED),
                   mmap(0, 4096, flags=ANON | MAP_FIXED_NOREPLACE, hint=0),
                   munmap(LOW_FIXED, 64 * KIB), munmap(0, 4096)]),
         Replayed(changed={"fixed_noreplace_as_hint": 2})),
    Case("map-fixed-foreign.arrow", "hostile",
         "MAP_FIXED over a range the trace never mapped, then over half of its own mapping",
         _hostile([mmap(FOREIGN, 64 * KIB, flags=ANON | MAP_FIXED, hint=FOREIGN),
                   mmap(A, 64 * KIB),
                   mmap(A + 32 * KIB, 64 * KIB, flags=ANON | MAP_FIXED, hint=A + 32 * KIB),
                   munmap(A, 96 * KIB), munmap(FOREIGN, 64 * KIB)]),
         Replayed(changed={"fixed_relocated": 2})),
    Case("overlapping-mappings.arrow", "hostile",
         "mmap returning ranges that overlap live mappings (no munmap between)",
         _hostile([mmap(A, MIB), mmap(A + 512 * KIB, MIB), mmap(A + 256 * KIB, 128 * KIB),
                   munmap(A, 2 * MIB)]),
         Replayed(changed={"overlap_implicit_unmap": 2})),
    Case("munmap-never-mapped.arrow", "hostile",
         "munmap, madvise(DONTNEED), mprotect and mremap of ranges the trace never mapped",
         _hostile([munmap(FOREIGN, 64 * KIB), munmap(0x40_0000, 4 * MIB),
                   munmap(0x7FFF_F000_0000, 16 * MIB),
                   madvise(FOREIGN, 64 * KIB, MADV["MADV_DONTNEED"]),
                   mprotect(FOREIGN, 64 * KIB, 0),
                   mremap(FOREIGN, 64 * KIB, FIXED_TARGET, 128 * KIB)]),
         Replayed(skipped={"munmap_unknown_range": 3, "madvise_unknown_range": 1,
                           "mprotect_unknown_range": 1, "mremap_unknown_range": 1})),
    Case("mremap-fixed.arrow", "hostile", "mremap to a fixed address (MREMAP_FIXED)",
         _hostile([mmap(A, MIB), mremap(A, MIB, FIXED_TARGET, 2 * MIB,
                                        flags=MREMAP_MAYMOVE | MREMAP_FIXED, hint=FIXED_TARGET),
                   munmap(FIXED_TARGET, 2 * MIB)]),
         Replayed(changed={"mremap_fixed_relocated": 1})),
    Case("unsafe-madvise.arrow", "hostile",
         "MADV_HWPOISON, MADV_SOFT_OFFLINE and an unknown advice on the trace's own mapping",
         _hostile([mmap(A, MIB), madvise(A, 4096, MADV["MADV_HWPOISON"]),
                   madvise(A, 4096, MADV["MADV_SOFT_OFFLINE"]), madvise(A, 4096, 0x42),
                   munmap(A, MIB)]),
         Replayed(skipped={"madvise_unsafe_advice": 3})),
    Case("unknown-map-flags.arrow", "hostile", "mmap flags with unknown high bits set",
         _hostile([mmap(A, MIB, flags=ANON | 0x0200_0000 | 0x0080_0000), munmap(A, MIB)]),
         Replayed(changed={"unknown_map_flags_dropped": 1})),
    Case("map-flags-bit31.arrow", "hostile", "mmap flags with bit 31 set (a negative int32)",
         _hostile([mmap(A, MIB, flags=ANON - (1 << 31)), munmap(A, MIB)]),
         Replayed()),
    Case("hugetlb-noreserve.arrow", "hostile",
         "MAP_HUGETLB|MAP_NORESERVE: touching unreserved huge pages with none free is a SIGBUS",
         _hostile([mmap(A, 2 * MIB, flags=ANON | MAP_HUGETLB | MAP_NORESERVE), munmap(A, 2 * MIB)]),
         Replayed(changed={"hugetlb_noreserve_dropped": 1}) if _huge_pages_available()
         else Replayed(changed={"hugetlb_noreserve_dropped": 1}, failed={"mmap": 1},
                       skipped={"target_mapping_failed_earlier": 1})),
    Case("hugetlb-fixed-past-own-mapping.arrow", "hostile",
         "a 4 KiB MAP_FIXED|MAP_HUGETLB at the last page of a replay mapping: the kernel unmaps a "
         "whole huge page there, past the mapping, even when the call then fails",
         _hostile([mmap(A, 4 * MIB), mremap(A, 4 * MIB, A, 4 * MIB + 4 * KIB),
                   mmap(A + 4 * MIB, 4 * KIB, flags=ANON | MAP_FIXED | MAP_HUGETLB),
                   munmap(A, 4 * MIB + 4 * KIB)]),
         _hugetlb_outcome(changed={"hugetlb_fixed_kernel_placed": 1},
                          skipped={"hugetlb_unaligned": 1})),
    Case("hugetlb-size-bits-inside-own-mapping.arrow", "hostile",
         "MAP_FIXED|MAP_HUGETLB with MAP_HUGE_2MB and MAP_HUGE_1GB bits inside a replay mapping, "
         "then partial munmap, madvise and mprotect cutting the huge page",
         _hostile([mmap(A, 8 * MIB),
                   mmap(A + 2 * MIB, 4 * KIB, flags=ANON | MAP_FIXED | MAP_HUGETLB | (21 << 26)),
                   mmap(A + 4 * MIB, 4 * KIB, flags=ANON | MAP_FIXED | MAP_HUGETLB | (30 << 26)),
                   munmap(A + 2 * MIB, 4 * KIB), madvise(A + 3 * MIB, 4 * KIB, 4),
                   mprotect(A + 2 * MIB + 8 * KIB, MIB, 1), mremap(A + 2 * MIB, 2 * MIB, 0, 4 * MIB),
                   munmap(A, 8 * MIB)]),
         _hugetlb_outcome(changed={"hugetlb_fixed_kernel_placed": 1},
                          skipped={"hugetlb_unaligned": 4, "hugetlb_mremap": 1})),
    Case("hugetlb-size-unknown-here.arrow", "hostile",
         "MAP_FIXED|MAP_HUGETLB with a huge page size this kernel lacks (16 GiB) over a 100 MiB "
         "replay mapping: the kernel refuses it before unmapping anything",
         _hostile([mmap(A, 100 * MIB),
                   mmap(A, 100 * MIB, flags=ANON | MAP_FIXED | MAP_HUGETLB | (34 << 26) - (1 << 32)),
                   munmap(A, 100 * MIB)]),
         Replayed(skipped={"hugetlb_size_unsupported": 1})),
    Case("map-fixed-refused-early.arrow", "hostile",
         "MAP_FIXED inside a replay mapping with neither MAP_PRIVATE nor MAP_SHARED: the kernel "
         "refuses it (EINVAL) before unmapping; the replay unmaps the target itself",
         _hostile([mmap(A, 4 * MIB), mmap(A, 4 * MIB, flags=MAP_ANONYMOUS | MAP_FIXED),
                   munmap(A, 4 * MIB)]),
         Replayed(failed={"mmap": 1}, skipped={"target_mapping_failed_earlier": 1})),
    Case("shared-anon-mremap-growth.arrow", "hostile",
         "a shared anonymous mapping grown by mremap (touching the growth is a SIGBUS), and one "
         "grown read-only then made writable",
         _hostile([mmap(A, 4 * KIB, flags=MAP_SHARED | MAP_ANONYMOUS),
                   mremap(A, 4 * KIB, A + MIB, 8 * KIB), munmap(A + MIB, 8 * KIB),
                   mmap(A, 8 * KIB, prot=1, flags=MAP_SHARED | MAP_ANONYMOUS),
                   mremap(A, 8 * KIB, A + MIB, 16 * KIB), mprotect(A + MIB, 16 * KIB, RW),
                   munmap(A + MIB, 16 * KIB)]),
         Replayed(changed={"shared_growth_not_touched": 2})),
    Case("prot-split-then-mremap.arrow", "hostile",
         "mremap across protection boundaries: shrink and same size (the kernel allows them, the "
         "pieces keep their protections), grow (it refuses: EFAULT)",
         _hostile([mmap(A, 16 * KIB), mprotect(A + 4 * KIB, 12 * KIB, 0),
                   mremap(A, 16 * KIB, A, 8 * KIB, flags=0), munmap(A, 8 * KIB),
                   mmap(A, 16 * KIB), mprotect(A, 4 * KIB, 0),
                   mremap(A, 16 * KIB, A + MIB, 32 * KIB), munmap(A + MIB, 32 * KIB),
                   mmap(A, 16 * KIB), mprotect(A + 8 * KIB, 4 * KIB, 1),
                   mremap(A, 16 * KIB, FIXED_TARGET, 16 * KIB, flags=MREMAP_MAYMOVE | MREMAP_FIXED),
                   munmap(FIXED_TARGET, 16 * KIB)]),
         Replayed(failed={"mremap": 1}, skipped={"target_mapping_failed_earlier": 3},
                  changed={"mremap_fixed_relocated": 1})),
    Case("hidden-footer-batch.arrow", "hostile",
         "a zstd batch of 16 rows x 2 MiB of zeros hidden behind an end-of-stream marker, listed "
         "only in the footer",
         hidden_footer_batch,
         refused("a batch of 16 rows claims", "bytes once decompressed")),
    Case("failed-calls-and-brk.arrow", "hostile",
         "failed calls, and brk (replayed in a heap of the replay's own, never its own break)",
         _hostile([mmap(0, 1 << 46, errno=12), brk(0, 0x5555_5555_9000),
                   brk(0x5555_5557_a000, 0x5555_5557_a000), munmap(A, 4096) | {"errno": 22}]),
         Replayed(skipped={"failed_in_trace": 2, "brk_no_change": 1})),
    Case("brk-by-2-to-the-60.arrow", "hostile", "a brk moving the break up by 2^60 bytes",
         _hostile([brk(0, 0x5555_5555_9000),
                   brk(0x5555_5555_9000 + (1 << 60), 0x5555_5555_9000 + (1 << 60))]),
         Replayed(skipped={"bad_length": 2})),
    Case("brk-over-a-mapping.arrow", "hostile", "the heap grows over a live mapping of the trace",
         _hostile([mmap(0x5555_5560_0000, MIB), brk(0, 0x5555_5555_9000),
                   brk(0x5555_5575_9000, 0x5555_5575_9000), munmap(0x5555_5560_0000, MIB)]),
         Replayed(skipped={"brk_no_change": 1},
                  changed={"overlap_implicit_unmap": 1})),
    Case("peak-live-above-ram.arrow", "hostile", "4096 mappings of 1 GiB each kept live together",
         _hostile([mmap(A - (i + 1) * GIB, GIB) for i in range(4096)]),
         refused("the trace keeps more than the memory budget mapped at event", by=("replay",))),
    Case("one-128-tib-mapping.arrow", "hostile", "a single mapping of 2^47 bytes",
         _hostile([mmap(4096, 1 << 47)]),
         refused("the trace keeps more than the memory budget mapped at event 0",
                 by=("replay",))),
    Case("timestamps-backwards.arrow", "hostile", "a thread's timestamps going backwards",
         lambda: trace_bytes([mmap(A, MIB, ts_ns=5000), munmap(A, MIB, ts_ns=4000)]),
         refused("row 1, column ts_ns: timestamp goes backwards for tid 1")),
    Case("errno-out-of-range.arrow", "hostile", "errno 70000 on a call",
         lambda: trace_bytes([mmap(A, MIB, errno=70000)]),
         refused("row 0, column errno: errno outside 0..4095")),
    Case("unknown-op.arrow", "hostile", "an op name outside the format's vocabulary",
         lambda: _with_column("op", ["mmap", "mmap", "madvise", "munmap", "mremap", "mseal",
                                     "munmap"], pa.utf8()),
         refused("row 5, column op: unknown op 'mseal'")),
    Case("mmap-without-prot.arrow", "hostile", "an mmap row with a null prot",
         lambda: trace_bytes([mmap(A, MIB, prot=None)]),
         refused("row 0, column prot: mmap row without prot")),
]


# ---------------------------------------------------------------------------------------------
# strace logs.

MAP_LINE = ("{pid}  {ts} mmap(NULL, {length}, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, "
            "-1, 0) = {addr:#x} <0.000012>")
UNMAP_LINE = "{pid}  {ts} munmap({addr:#x}, {length}) = 0 <0.000007>"


def _log(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _pair(pid: int, t: int, addr: int, length: int = 8192) -> list[str]:
    return [MAP_LINE.format(pid=pid, ts=f"1700000000.{t:06d}", length=length, addr=addr),
            UNMAP_LINE.format(pid=pid, ts=f"1700000000.{t + 1:06d}", addr=addr, length=length)]


def _cut_lines() -> bytes:
    lines = _pair(100, 10, A) + _pair(100, 20, A + MIB)
    lines[1] = lines[1][:25]        # "100  1700000000.000011 mu": cut mid-call
    text = "\n".join(lines)
    return (text + "\n" + MAP_LINE.format(pid=100, ts="1700000000.000030", length=4096,
                                          addr=A)[:60]).encode()  # cut at end of file


def _resumed_without_start() -> bytes:
    return _log(_pair(100, 10, A) + [
        "100  1700000000.000020 <... munmap resumed>) = 0 <0.000007>",
        "101  1700000000.000021 <... mmap resumed>) = 0x7f0000200000 <0.000020>",
    ] + _pair(100, 30, A))


def _unfinished_never_resumed() -> bytes:
    return _log(_pair(100, 10, A) + [
        "101  1700000000.000020 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS,"
        " -1, 0 <unfinished ...>",
    ] + _pair(100, 30, A))


def _pids_reused() -> bytes:
    # pid 200 maps, exits with a call pending, and the pid comes back as another process whose
    # first line is a resumed call: it must not be paired with the dead process's call.
    return _log([
        MAP_LINE.format(pid=200, ts="1700000000.000010", length=8192, addr=A),
        "200  1700000000.000011 munmap(0x7f0000000000, 8192 <unfinished ...>",
        "200  1700000000.000012 +++ exited with 0 +++",
        "200  1700000000.000020 <... mmap resumed>) = 0x7f0000100000 <0.000020>",
        MAP_LINE.format(pid=200, ts="1700000000.000030", length=8192, addr=A),
        UNMAP_LINE.format(pid=200, ts="1700000000.000031", addr=A, length=8192),
        "200  1700000000.000032 +++ exited with 0 +++",
    ])


def _extremely_long_line() -> bytes:
    # 9 MiB of arguments in one line (more than the importer's 8 MiB chunk), between good lines.
    long_call = '100  1700000000.000015 write(1, "' + "A" * (9 * MIB) + '", 9437184) = 9437184'
    return _log(_pair(100, 10, A)[:1] + [long_call] + _pair(100, 10, A)[1:])


def _invalid_utf8() -> bytes:
    good_lines = _log(_pair(100, 10, A))
    return (good_lines
            + b'100  1700000000.000012 openat(AT_FDCWD, "/tmp/\xff\xfe\xc3(", O_RDONLY) = 3\n'
            + b"100  1700000000.00001\xff munmap(0x7f0000000000, 8192) = 0\n"
            + b"\xc3\x28\xa0\xa1 mmap\xe2\x82(NULL, 4096) = 0x1000\n"
            + _log(_pair(100, 20, A)))


def _nul_bytes() -> bytes:
    return _log(_pair(100, 10, A)) + b"100  1700000000.000015 mm\x00ap(NULL, 4096\x00) = 0\n" \
        + _log(_pair(100, 20, A))


def _hostile_numbers() -> bytes:
    return _log([
        f"100  1700000000.000010 mmap(NULL, {U64_MAX}, PROT_READ|PROT_WRITE, "
        "MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000 <0.000012>",
        f"100  1700000000.000011 munmap(0xffffffffffffffff, {U64_MAX}) = 0 <0.000007>",
        f"100  1700000000.000012 munmap(0x7f0000000000, {1 << 64}) = 0 <0.000007>",
        "100  1700000000.000013 madvise(0x7f0000000000, 4096, 0x42 /* MADV_??? */) = 0",
    ])


def _timestamps_backwards() -> bytes:
    return _log(_pair(100, 50, A) + _pair(100, 10, A + MIB) + _pair(101, 5, A + 2 * MIB))


def _binary_garbage() -> bytes:
    # Random bytes with no newline-started "name(" by chance (seeded), plus NUL bytes.
    return _random(7, 64 * KIB)


STRACE_CASES = [
    Case("binary-garbage.log", "strace", "64 KiB of random bytes", _binary_garbage,
         refused("not an strace log", by=("import",))),
    Case("empty.log", "strace", "an empty log", lambda: b"",
         refused("empty file, not an strace log", by=("import",))),
    Case("lines-cut-mid-call.log", "strace",
         "a line cut in the middle of a call, and the last line cut at the end of the file",
         _cut_lines,
         Imported(3, {"lines": 5, "mm_calls_total": 3, "unparsed.count": 2, "unparsed.mm": 1})),
    Case("resumed-without-start.log", "strace", "'<... resumed>' lines with no unfinished start",
         _resumed_without_start,
         Imported(4, {"lines": 6, "unmatched.resumed": 2, "unmatched.unfinished": 0})),
    Case("unfinished-never-resumed.log", "strace", "an '<unfinished ...>' call never resumed",
         _unfinished_never_resumed,
         Imported(4, {"lines": 5, "unmatched.unfinished": 1, "unmatched.resumed": 0})),
    Case("pids-reused.log", "strace",
         "a pid that exits with a call pending and comes back as another process",
         _pids_reused,
         Imported(3, {"lines": 7, "exit_lines": 2, "unmatched.unfinished": 1,
                      "unmatched.resumed": 1})),
    Case("extremely-long-line.log", "strace", "a 9 MiB line between two good calls",
         _extremely_long_line,
         Imported(2, {"lines": 3, "mm_calls_total": 2, "ignored_calls": 1})),
    Case("invalid-utf8.log", "strace", "bytes that are not UTF-8 inside and around calls",
         _invalid_utf8,
         Imported(4, {"lines": 7, "mm_calls_total": 4, "unparsed.count": 2, "ignored_calls": 1})),
    Case("nul-bytes.log", "strace", "a NUL byte in the middle of a call", _nul_bytes,
         Imported(4, {"lines": 5, "mm_calls_total": 4, "unparsed.count": 1})),
    Case("hostile-numbers.log", "strace",
         "lengths of 2^64-1 and 2^64, a kernel-half address, an unknown advice",
         _hostile_numbers,
         Imported(3, {"lines": 4, "mm_calls_total": 3, "unparsed.count": 1})),
    Case("timestamps-backwards.log", "strace", "one thread's clock going backwards",
         _timestamps_backwards,
         Imported(6, {"mm_calls_total": 6, "clamped_timestamps": 2})),
    Case("gzip-garbage.log.gz", "strace", "a .gz log that is not gzip data",
         lambda: _random(9, 2048), refused("not an strace log", by=("import",))),
    Case("gzip-truncated.log.gz", "strace", "a gzip log cut in half",
         lambda: gzip.compress(_log(_pair(100, 10, A) * 200), mtime=0)[:300],
         refused("damaged gzip data", by=("import",))),
]

# ---------------------------------------------------------------------------------------------
# Format v2 files whose stored columns lie (the logical table cannot be rebuilt from them).

V2_METADATA = {**METADATA, "format_version": 2}


def _v2(change: Callable[[pa.Table], pa.Table]) -> bytes:
    """The good trace's v2 columns, changed, written with its metadata where v2 puts it."""
    stored = change(encode(validate(table(GOOD_ROWS))))
    stored = stored.replace_schema_metadata({b"mmreplay": b'{"format_version": 2}'})
    sink = pa.BufferOutputStream()
    footer = {b"mmreplay": json.dumps(V2_METADATA).encode()}
    with pa.ipc.new_file(sink, stored.schema, metadata=footer,
                         options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer:
        writer.write_table(stored)
    return sink.getvalue().to_pybytes()


def _set(name: str, values, typ=None) -> Callable[[pa.Table], pa.Table]:
    def change(stored: pa.Table) -> pa.Table:
        array = pa.array(values, typ or stored.schema.field(name).type)
        index = stored.schema.get_field_index(name)
        if index < 0:
            return stored.append_column(name, array)
        return stored.set_column(index, pa.field(name, array.type), array)
    return change


def _time(name: str, values, typ) -> Callable[[pa.Table], pa.Table]:
    """Replace the stored time column (dt_us or dt_ns, whichever the writer chose)."""
    def change(stored: pa.Table) -> pa.Table:
        stored = stored.drop_columns([n for n in ("dt_us", "dt_ns") if n in stored.column_names])
        return _set(name, values, typ)(stored)
    return change


V2_CASES = [
    Case("v2-unknown-null-flip-bit.arrow", "arrow", "format v2: null_flips with bit 12 set",
         lambda: _v2(_set("null_flips", [0, 0, 0, 1 << 12, 0, 0, 0])),
         refused("row 3, column null_flips: bits format v2 does not define")),
    Case("v2-time-overflow.arrow", "arrow",
         "format v2: dt_ns deltas of 2^62 whose sum passes the 64-bit clock",
         lambda: _v2(_time("dt_ns", [1 << 62] * 7, pa.int64())),
         refused("overflow the 64-bit nanosecond clock")),
    Case("v2-two-time-columns.arrow", "arrow", "format v2: both dt_us and dt_ns",
         lambda: _v2(lambda t: _set("dt_us", [1] * 7, pa.int32())(_time("dt_ns", [1] * 7,
                                                                         pa.int64())(t))),
         refused("needs exactly one of the columns dt_us, dt_ns")),
    Case("v2-time-as-float.arrow", "arrow", "format v2: dt_us stored as float64",
         lambda: _v2(_time("dt_us", [1.0] * 7, pa.float64())),
         refused("column dt_us: type double, expected int32 or int64")),
    Case("v2-no-null-flips.arrow", "arrow", "format v2 without its null_flips column",
         lambda: _v2(lambda t: t.drop_columns(["null_flips"])),
         refused("missing column(s) null_flips")),
    Case("v2-negative-delta.arrow", "arrow",
         "format v2: a negative time delta taking row 2 below zero",
         lambda: _v2(_time("dt_us", [5, 5, -20, 5, 5, 5, 5], pa.int32())),
         refused("row 2, column ts_ns: negative timestamp")),
    Case("v2-duration-overflow.arrow", "arrow",
         "format v2: duration_us of 2^62 (2^62 * 1000 ns does not fit 64 bits)",
         lambda: _v2(lambda t: _set("null_flips", [f & ~(1 << 8) for f in  # durations present
                                                   t.column("null_flips").to_pylist()])(
             _set("duration_us", [1 << 62] * 7, pa.int64())(t.drop_columns(
                 [n for n in ("duration_us", "duration_ns") if n in t.column_names])))),
         refused("durations this large would overflow")),
    Case("v2-prot-as-int8.arrow", "arrow",
         "format v2: prot stored as int8 (too short a buffer for the int32 it stands for)",
         lambda: _v2(_set("prot", [3, 3, 0, 0, 0, 1, 0], pa.int8())),
         refused("column prot: type int8, expected int32")),
    Case("v2-tid-as-int64.arrow", "arrow", "format v2: tid stored as int64",
         lambda: _v2(_set("tid", [1] * 7, pa.int64())),
         refused("column tid: type int64, expected int32")),
]


# ---------------------------------------------------------------------------------------------
# Mail: share blocks (mmreplay share) and mails or mboxes carrying them, damaged or lying.

def _good_block() -> str:
    return share_block(validate(table(GOOD_ROWS)), "good.arrow")[0]


def _block_parts(block: str) -> tuple[list[str], list[str], list[str]]:
    """(header lines up to the blank line, payload lines, the checksum and END lines)."""
    lines = block.splitlines()
    blank = lines.index("")
    checksum = next(i for i, line in enumerate(lines) if line.startswith("Checksum:"))
    return lines[:blank + 1], lines[blank + 1:checksum], lines[checksum:]


def _reblock(header: list[str], payload_text: str) -> bytes:
    """A block with this header and payload, its checksum line right (so later checks run)."""
    lines = header + [payload_text[i:i + 72] for i in range(0, len(payload_text), 72)]
    lines.append(f"Checksum: crc32 {zlib.crc32(payload_text.encode()):08x} of {len(payload_text)} "
                 "base64 characters")
    return ("\n".join(lines + ["-----END MMREPLAY TRACE-----"]) + "\n").encode()


def _with_header(field: str, value: str) -> bytes:
    header, payload, _ = _block_parts(_good_block())
    header = [f"{field}: {value}" if line.startswith(f"{field}:") else line for line in header]
    return _reblock(header, "".join(payload))


def _with_payload(data: bytes, size: int | None = None) -> bytes:
    header, _, _ = _block_parts(_good_block())
    header = [line for line in header if not line.startswith(("Size:", "Sha256:"))]
    header[-1:-1] = [f"Size: {len(data) if size is None else size} bytes",
                     f"Sha256: {hashlib.sha256(data).hexdigest()}"]
    return _reblock(header, base64.b64encode(lzma.compress(data)).decode())


def _block_cut() -> bytes:
    lines = _good_block().splitlines()
    return ("\n".join(lines[: len(lines) * 2 // 3]) + "\n").encode()


def _block_bad_character() -> bytes:
    lines = _good_block().splitlines()
    at = lines.index("") + 2
    lines[at] = lines[at][:10] + "~" + lines[at][11:]
    return ("\n".join(lines) + "\n").encode()


def _block_changed_in_transit() -> bytes:
    lines = _good_block().splitlines()
    at = lines.index("") + 2
    swapped = "B" if lines[at][20] != "B" else "C"
    lines[at] = lines[at][:20] + swapped + lines[at][21:]
    return ("\n".join(lines) + "\n").encode()


def _block_line_lost() -> bytes:
    lines = _good_block().splitlines()
    del lines[lines.index("") + 2]
    return ("\n".join(lines) + "\n").encode()


def _block_not_xz() -> bytes:
    header, _, _ = _block_parts(_good_block())
    return _reblock(header, base64.b64encode(b"this is not xz data at all").decode())


def _mail(subject: str, body: str, attachment: tuple[str, bytes] | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Reporter <reporter@example.org>"
    message["To"] = "linux-mm@kvack.org"
    message["Subject"] = subject
    message["Date"] = "Mon, 06 Jan 2025 10:00:00 +0000"
    message["Message-ID"] = f"<{zlib.crc32(subject.encode()):08x}@example.org>"
    message.set_content(body)
    if attachment:
        message.add_attachment(attachment[1], maintype="application", subtype="octet-stream",
                               filename=attachment[0])
        message.set_boundary("mmreplay-bad-corpus")  # not a random one: the corpus is fixed
    return message


def _mbox(*messages: EmailMessage) -> bytes:
    out = io.BytesIO()
    for message in messages:
        out.write(b"From mboxrd@z Thu Jan  1 00:00:00 1970\n")
        for line in message.as_bytes(policy=email.policy.SMTP.clone(linesep="\n")).splitlines():
            out.write((b">" + line if line.startswith((b"From ", b">From ")) else line) + b"\n")
        out.write(b"\n")
    return out.getvalue()


def _quoted(text: str, depth: int = 1) -> str:
    return "".join(">" * depth + " " + line + "\n" for line in text.splitlines())


MAIL_CASES = [
    Case("block-cut.txt", "mail", "a share block cut a third of the way from its end",
         _block_cut, refused("block at line 1: the block is cut short")),
    Case("block-bad-character.txt", "mail", "a share block with a '~' in its base64",
         _block_bad_character, refused("which base64 does not use")),
    Case("block-changed-in-transit.txt", "mail", "a share block with one base64 letter changed",
         _block_changed_in_transit, refused("its checksum does not match")),
    Case("block-line-lost.txt", "mail", "a share block that lost one payload line",
         _block_line_lost, refused("where its checksum line counts")),
    Case("block-wrong-sha256.txt", "mail", "a share block whose Sha256 line names another trace",
         lambda: _with_header("Sha256", "0" * 64),
         refused("does not match its Sha256 line")),
    Case("block-huge-size-claim.txt", "mail",
         "a share block claiming a 1 PB trace (refused before decompressing)",
         lambda: _with_header("Size", f"{10**15} bytes"),
         refused("claims a trace of 1000000000000000 bytes", "refusing to decompress")),
    Case("block-size-lie.txt", "mail", "a share block whose Size is 100 bytes less than its data",
         lambda: _with_payload(trace_bytes(GOOD_ROWS), len(trace_bytes(GOOD_ROWS)) - 100),
         refused("decompresses to more than")),
    Case("block-not-xz.txt", "mail", "a share block whose payload is not xz data",
         _block_not_xz, refused("its xz data does not decompress")),
    Case("block-not-a-trace.txt", "mail", "a share block carrying an strace log, not a trace",
         lambda: _with_payload(b"1 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3, 0) = 0x7f00\n"),
         refused("block at line 1: damaged or truncated Arrow file")),
    Case("block-future-format.txt", "mail", "a share block of a format this mmreplay predates",
         lambda: _with_header("Format", "mmreplay share 2 (zstd, base85)"),
         refused("a newer mmreplay wrote it?")),
    Case("block-invalid-trace.txt", "mail",
         "a share block carrying a trace with a negative timestamp",
         lambda: _with_payload(trace_bytes([mmap(TRACE_BASE, MIB, ts_ns=-5)])),
         refused("block at line 1: row 0, column ts_ns: negative timestamp")),
    Case("mbox-without-trace.mbox", "mail", "an mbox of two messages and no trace",
         lambda: _mbox(_mail("[PATCH] mm: something", "A patch, no trace.\n"),
                       _mail("Re: [PATCH] mm: something", "> A patch, no trace.\nAcked.\n")),
         refused("an mbox of 2 messages with no mmreplay trace in it")),
    Case("mail-without-trace.eml", "mail", "a saved message with neither block nor attachment",
         lambda: _mail("hello", "Just words.\n").as_bytes(),
         refused("a mail with no mmreplay trace in it")),
    Case("reply-quoting-a-cut-block.eml", "mail",
         "a reply that quotes only the first half of a block, > at depth 2",
         lambda: _mail("Re: Re: repro", "You wrote:\n" + _quoted(
             "\n".join(_good_block().splitlines()[:12]), depth=2)).as_bytes(),
         refused("the message (\"Re: Re: repro\"), block at line 2: the block is cut short")),
    Case("two-traces.mbox", "mail", "an mbox whose two messages carry different traces",
         lambda: _mbox(_mail("trace one", _good_block()),
                       _mail("trace two", share_block(validate(table(GOOD_ROWS[:3])),
                                                      "three.arrow")[0])),
         refused("holding 2 different traces; choose one with --pick N", "[1] message 1",
                 "[2] message 2")),
    Case("attached-damaged-trace.eml", "mail", "a mail with a trace attached, cut in half",
         lambda: _mail("trace", "attached", ("t.arrow", good()[: len(good()) // 2])).as_bytes(),
         refused("attachment t.arrow: damaged or truncated Arrow file")),
    Case("block-hostile-trace.txt", "mail",
         "a valid block carrying a trace of zero-length calls (the replay skips them)",
         lambda: _with_payload(HOSTILE_CASES[0].make()),
         HOSTILE_CASES[0].outcome),
]

CASES: list[Case] = ARROW_CASES + V2_CASES + HOSTILE_CASES + STRACE_CASES + MAIL_CASES


def write_corpus(folder: str | Path) -> dict[str, Path]:
    """Write every case into ``folder``; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = [case.name for case in CASES]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"duplicate case names: {sorted(duplicates)}")
    paths = {}
    for case in CASES:
        path = folder / case.name
        path.write_bytes(case.make())
        paths[case.name] = path
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="where to write the corpus files")
    args = parser.parse_args(argv)
    paths = write_corpus(args.folder)
    for case in CASES:
        print(f"{case.name:<40} {paths[case.name].stat().st_size:>9} B  {case.group:<8} "
              f"{type(case.outcome).__name__}: {case.what}")
    print(f"{len(CASES)} cases written to {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
