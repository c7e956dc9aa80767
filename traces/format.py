"""Read, write and validate trace files (format v2 written; v1 and v2 read).

Traces arrive by email from strangers, so reading is defensive: the input is identified before
Arrow sees it (``traces.inputs``), claimed sizes are checked before anything is allocated,
Arrow's full validation runs before any value is used, and every failure becomes one
``TraceError`` line naming the file and the problem. The on-disk columns of v2 and how they map
to the logical table are in ``traces.encoding``.
"""

from __future__ import annotations

import collections

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import TraceError
from .encoding import (PROVEN_OP_FIELDS, PROVEN_TIMES, canonical_op_column, check_physical,
                       decode, encode, format_minor, is_v2, op_is_canonical, op_strings,
                       unknown_ops, widened_op_column)
from .files import atomic_output
from .inputs import open_trace
from .ipc_guard import check_ipc_sizes
from .text import escape
from .version import __version__
from .schema import (COLUMNS, FORMAT_MAJOR, FORMAT_MINOR, METADATA_KEY, OP_TYPE, OPS,
                     READABLE_MAJORS, REQUIRED_BY_OP, SCHEMA)

MAX_METADATA_BYTES = 1 << 20
BATCH_ROWS = 1 << 20
# zstd levels by trace size (zstd_level): measured on the bundled traces and a 1 M-event synth
# trace (benchmarks/README.md, "trace_size.py").
SMALL_TRACE_ROWS = 1 << 17
SMALL_TRACE_LEVEL = 22
LARGE_TRACE_LEVEL = 3



def column_np(table: pa.Table, name: str, fill=0) -> np.ndarray:
    """A column as a numpy array with nulls replaced by ``fill`` (keeps uint64 exact)."""
    column = table.column(name)
    if column.null_count:
        column = pc.fill_null(column, pa.scalar(fill, column.type))
    return column.to_numpy()


def op_names(table: pa.Table) -> np.ndarray:
    """The op column as an array of canonical codes (index into ``schema.OPS``)."""
    column = table.column("op").combine_chunks()
    if isinstance(column, pa.DictionaryArray):
        lookup = np.array([OPS.index(v) if v in OPS else -1 for v in column.dictionary.to_pylist()],
                          dtype=np.int8)
        indices = pc.fill_null(column.indices, 0).to_numpy(zero_copy_only=False)
        return lookup[indices] if len(lookup) else np.full(len(column), -1, np.int8)
    encoded = pc.index_in(column, value_set=pa.array(OPS))
    return pc.fill_null(encoded, -1).to_numpy(zero_copy_only=False).astype(np.int8)


def _fail(row: int, column: str, problem: str) -> TraceError:
    return TraceError(f"row {row}, column {column}: {problem}")


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _op_indices(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """The int8 codes of a canonical op column, chunk by chunk (no copy)."""
    return pa.chunked_array([chunk.indices for chunk in column.chunks], pa.int8())


def validate(table: pa.Table, proven: frozenset = frozenset()) -> pa.Table:
    """Check a logical table against the format; return it with the op column in canonical form.

    Raises ``TraceError`` naming the first offending row (whatever kind of problem it has) and
    its column. Every check first asks a whole-column question (a null count, a minimum), so a
    valid table costs a few passes over its columns; offending rows are looked for only in the
    columns that have one. ``proven`` names checks that decoding a v2 file already made
    (``encoding.PROVEN_*``): they are not made twice.
    """
    names = table.schema.names
    missing = [name for name in SCHEMA.names if name not in names]
    if missing:
        raise TraceError(f"not an mmreplay trace: missing column(s) {', '.join(missing)}")
    counts = collections.Counter(names)  # linear: a file may carry 40,000 extra columns
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if repeated:
        raise TraceError(f"column {escape(repeated[0], 80)} appears {counts[repeated[0]]} times")
    for name, typ, _ in COLUMNS:
        actual = table.schema.field(name).type
        if name == "op":
            value_type = actual.value_type if pa.types.is_dictionary(actual) else actual
            if not (pa.types.is_string(value_type) or pa.types.is_large_string(value_type)):
                raise TraceError(f"column op: type {actual}, expected {typ}")
        elif actual != typ:
            raise TraceError(f"column {name}: type {actual}, expected {typ}")

    # (column, mask of offending rows, problem or row -> problem); on a tie the earlier entry wins.
    checks: list = []
    op_column = table.column("op")
    if op_is_canonical(op_column):
        op_nulls = op_column.null_count
        raw_op = None
        widened = widened_op_column(op_column)
        if widened is not op_column:
            table = table.set_column(names.index("op"), table.schema.field("op"), widened)
    else:
        # An unknown name must be reported as it was written, so look it up before re-encoding.
        raw_op = op_strings(op_column)
        op_nulls = raw_op.null_count
        unknown = unknown_ops(raw_op)
        if pc.any(unknown).as_py():
            checks.append(("op", _mask(unknown), lambda row: (
                f"unknown op {raw_op[row].as_py()!r} (expected one of {', '.join(OPS)})")))
    for name, _, nullable in COLUMNS:
        nulls = op_nulls if name == "op" else table.column(name).null_count
        if not nullable and nulls:
            column = raw_op if (name == "op" and raw_op is not None) else table.column(name)
            checks.append((name, _mask(pc.is_null(column)), "missing value in a required column"))
    if raw_op is not None:
        table = table.set_column(names.index("op"), pa.field("op", OP_TYPE, nullable=False),
                                 canonical_op_column(op_column))

    ranges = (("ts_ns", 0, "negative timestamp"),
                               ("tid", 0, "negative thread id"),
                               ("errno", 0, "errno outside 0..4095"),
                               ("fd", -1, "fd below -1"),
                               ("duration_ns", 0, "negative duration"),
                               ("prot", 0, "negative prot bits"),
                               ("advice", 0, "negative advice"),
                               ("offset", 0, "negative file offset"))
    for name, low, problem in ranges:
        if name == "ts_ns" and PROVEN_TIMES in proven:
            continue
        column = table.column(name)
        smallest, largest = (v.as_py() for v in pc.min_max(column).values())
        high = 4095 if name == "errno" else None
        if (smallest is not None and smallest < low) or (high is not None and largest is not None
                                                        and largest > high):
            bad = pc.less(column, low)
            if high is not None:
                bad = pc.or_(bad, pc.greater(column, high))
            checks.append((name, _mask(bad), problem))

    indices = _op_indices(table.column("op"))
    for op, fields in (REQUIRED_BY_OP.items() if PROVEN_OP_FIELDS not in proven else ()):
        lacking = [field for field in fields if table.column(field).null_count]
        if not lacking:
            continue
        is_op = pc.equal(indices, OPS.index(op))
        for field in lacking:
            mask = pc.and_(is_op, pc.is_null(table.column(field)))
            if pc.any(mask).as_py():
                checks.append((field, _mask(mask), f"{op} row without {field}"))

    ts = column_np(table, "ts_ns") if PROVEN_TIMES not in proven else np.zeros(0, np.int64)
    if len(ts) > 1 and not np.all(ts[1:] >= ts[:-1]):
        # Times may go backwards across threads (each has its own clock), never within one.
        tid = column_np(table, "tid")
        backwards = _backwards_timestamps(tid, ts)
        if backwards.any():
            checks.append(("ts_ns", backwards,
                           lambda row: f"timestamp goes backwards for tid {tid[row]}"))

    bad_row, bad_column, bad_problem = None, "", ""
    for column, mask, problem in checks:
        row = _first(mask)
        if row is not None and (bad_row is None or row < bad_row):
            bad_row, bad_column, bad_problem = row, column, problem
    if bad_row is not None:
        raise _fail(bad_row, bad_column, bad_problem(bad_row) if callable(bad_problem) else bad_problem)
    return table


def _mask(values) -> np.ndarray:
    """A boolean Arrow array or chunked array as a numpy bool array (nulls count as False)."""
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False).astype(bool)


def _backwards_timestamps(tid: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Rows whose timestamp is below the previous row of the same thread."""
    backwards = np.zeros(len(ts), dtype=bool)
    if len(ts) < 2:
        return backwards
    order = np.lexsort((np.arange(len(tid)), tid))  # by tid, then by row
    same_thread = tid[order][1:] == tid[order][:-1]
    backwards[order[1:][same_thread & (ts[order][1:] < ts[order][:-1])]] = True
    return backwards


def trace_metadata(table: pa.Table) -> dict:
    """The JSON metadata of a trace ({} when another tool dropped it)."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        return {}
    return parse_metadata(raw)


def parse_metadata(raw: bytes) -> dict:
    """Metadata JSON as written under the ``mmreplay`` key, checked (size, JSON object, version)."""
    if len(raw) > MAX_METADATA_BYTES:
        raise TraceError(f"metadata is {len(raw)} bytes, more than the {MAX_METADATA_BYTES} allowed")
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TraceError(f"metadata is not valid JSON ({exc})") from None
    except RecursionError:
        raise TraceError("metadata is not valid JSON (nested too deeply)") from None
    if not isinstance(meta, dict):
        raise TraceError("metadata is not a JSON object")
    version = meta.get("format_version", FORMAT_MAJOR)
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise TraceError(f"metadata format_version {escape(repr(version), 60)} is not a version "
                         "number") from None
    if major not in READABLE_MAJORS:
        raise TraceError(f"trace format version {escape(version, 60)} is not supported (this "
                         "mmreplay reads "
                         f"versions {' and '.join(f'{v}.x' for v in READABLE_MAJORS)}); "
                         "upgrade mmreplay")
    return meta


def read_trace(path: str | os.PathLike, pick: int | None = None) -> pa.Table:
    """Read and validate a trace; return the logical ``pyarrow.Table`` with its metadata.

    ``path`` is a trace file (format v1 or v2), or a mail, mbox or text holding one
    (``traces.inputs.open_trace``); ``pick`` chooses among several traces in one input.
    """
    source = open_trace(path, pick)
    return parse_trace(source.data, source.label)


def validate_arrow(table: pa.Table) -> None:
    """``table.validate(full=True)``, with the indices of dictionary columns (the op column)
    checked by numpy: Arrow's own check of them took most of the time on a 10 M-event trace.
    Each dictionary is validated in full, then every index (but those under nulls) must be in
    range. Raises ``pa.ArrowInvalid``."""
    for field, column in zip(table.schema, table.columns):  # by position: names may repeat
        if not pa.types.is_dictionary(field.type):
            column.validate(full=True)
            continue
        column.validate()
        for chunk in column.chunks:
            chunk.dictionary.validate(full=True)
            indices = chunk.indices
            indices.validate()
            if indices.null_count == len(indices):
                continue
            if indices.null_count:  # what lies under a null is no index: the slower way
                low, high = (v.as_py() for v in pc.min_max(indices).values())
            else:
                codes = np.frombuffer(indices.buffers()[1], dtype=indices.type.to_pandas_dtype(),
                                      count=len(indices),
                                      offset=indices.offset * indices.type.bit_width // 8)
                low, high = int(codes.min()), int(codes.max())
            if low < 0 or high >= len(chunk.dictionary):
                bad = low if low < 0 else high
                raise pa.ArrowInvalid(f"column {field.name}: dictionary index {bad} out of "
                                      f"bounds for a dictionary of {len(chunk.dictionary)} "
                                      "entries")


def parse_trace(data: pa.Buffer, label: str) -> pa.Table:
    """The validated logical table of the Arrow IPC file held in ``data`` (``label`` names it in
    error messages)."""
    try:
        # Claimed row counts and inflated sizes are checked before Arrow allocates anything.
        check_ipc_sizes(data)
        reader = pa.ipc.open_file(data)
        table = reader.read_all()
        footer = reader.metadata or {}
        # Full validation before anything looks at values: offsets, dictionary indices, lengths.
        validate_arrow(table)
    except TraceError as exc:
        raise TraceError(f"{label}: {exc}") from None
    except (pa.ArrowException, OSError, ValueError, MemoryError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{label}: damaged or truncated Arrow file ({detail[:200]})") from None
    try:
        raw = footer.get(METADATA_KEY) or (table.schema.metadata or {}).get(METADATA_KEY)
        if raw is not None:
            parse_metadata(raw)
        proven = frozenset()
        if is_v2(table):
            check_physical(table)
            table, proven = decode(table)
        table = table.replace_schema_metadata({METADATA_KEY: raw} if raw is not None else None)
        return validate(table, proven)
    except TraceError as exc:
        raise TraceError(f"{label}: {exc}") from None


def new_metadata(source: str, **fields) -> dict:
    """The metadata block every writer starts from."""
    meta = {
        "format_version": FORMAT_MAJOR,
        "format_minor": FORMAT_MINOR,
        "source": source,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_version": __version__,
    }
    meta.update(fields)
    return meta


def with_metadata(table: pa.Table, metadata: dict) -> pa.Table:
    encoded = json.dumps(metadata, sort_keys=True, default=str).encode()
    return table.replace_schema_metadata({METADATA_KEY: encoded})


def zstd_level(rows: int) -> int:
    """Mail-sized traces get zstd's strongest level (a few seconds at most); larger ones a fast
    level, where writing speed matters more than the last 5% of size."""
    return SMALL_TRACE_LEVEL if rows <= SMALL_TRACE_ROWS else LARGE_TRACE_LEVEL


def write_ipc(table: pa.Table, sink, metadata: dict | None = None, compression: str | None = "zstd") -> None:
    """Validate ``table`` and write it to ``sink`` as a format v2 Arrow IPC file.

    ``metadata`` replaces the table's own mmreplay metadata when given; the format version is
    always this writer's. ``compression=None`` leaves the buffers uncompressed (for a container
    that compresses the whole file, as ``mmreplay share`` does).
    """
    table = validate(table)
    if metadata is None:
        metadata = trace_metadata(table) or new_metadata("unknown")
    minor = format_minor(table)
    metadata = {**metadata, "format_version": FORMAT_MAJOR, "format_minor": minor}
    stored = encode(table)
    # The schema carries only the version (a plain reader sees it; an old mmreplay refuses the
    # file by it); the full metadata is stored once, in the footer.
    version = json.dumps({"format_version": FORMAT_MAJOR, "format_minor": minor},
                         sort_keys=True).encode()
    stored = stored.replace_schema_metadata({METADATA_KEY: version})
    codec = pa.Codec("zstd", compression_level=zstd_level(table.num_rows)) if compression else None
    options = pa.ipc.IpcWriteOptions(compression=codec)
    footer = {METADATA_KEY: json.dumps(metadata, sort_keys=True, separators=(",", ":"),
                                       default=str).encode()}
    with pa.ipc.new_file(sink, stored.schema, options=options, metadata=footer) as writer:
        writer.write_table(stored, max_chunksize=BATCH_ROWS)


def write_trace(table: pa.Table, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Validate ``table`` and write it atomically as a format v2, zstd-compressed Arrow IPC file.

    ``metadata`` replaces the table's own mmreplay metadata when given.
    """
    table = validate(table)  # before the output is touched: an invalid table leaves it alone
    with atomic_output(path) as handle:
        write_ipc(table, handle, metadata)
    return Path(path)


def trace_file_bytes(table: pa.Table, metadata: dict | None = None,
                     compression: str | None = "zstd") -> bytes:
    """The bytes ``write_trace`` would write (``compression=None``: uncompressed buffers)."""
    sink = pa.BufferOutputStream()
    write_ipc(table, sink, metadata, compression)
    return sink.getvalue().to_pybytes()


def events_sha256(table: pa.Table) -> str:
    """A content hash of the events: the logical columns' values and nulls, row by row, whatever
    the file format, chunking or op encoding (metadata and extra columns are not included).

    Two traces with the same events have the same hash: a v1 file and its v2 rewrite, a trace
    and the copy read back out of a mail.
    """
    digest = hashlib.sha256(b"mmreplay events v1\0")
    digest.update(np.int64(table.num_rows).tobytes())
    for name, typ, _ in COLUMNS:
        column = table.column(name)
        if name == "op":
            values = op_names(table)
        else:
            values = column_np(table, name).astype(typ.to_pandas_dtype(), copy=False)
        present = (pc.is_valid(column).to_numpy(zero_copy_only=False) if column.null_count
                   else np.ones(len(values), bool))
        digest.update(name.encode() + b"\0")
        digest.update(np.ascontiguousarray(values).tobytes())
        digest.update(np.packbits(present).tobytes())
    return digest.hexdigest()


def build_table(columns: dict, metadata: dict | None = None) -> pa.Table:
    """A trace table from numpy arrays or lists keyed by column name (missing nullable ones = null)."""
    arrays = []
    n = None
    for name, typ, nullable in COLUMNS:
        if name == "op":
            values = columns["op"]
            if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
                indices = pa.array(values.astype(np.int8), pa.int8())
            else:
                indices = pa.array([OPS.index(v) for v in values], pa.int8())
            arrays.append(pa.DictionaryArray.from_arrays(indices, pa.array(OPS)))
        elif name in columns:
            values = columns[name]
            arrays.append(pa.array(values, typ) if not isinstance(values, pa.Array) else values.cast(typ))
        elif nullable:
            arrays.append(None)
        else:
            raise ValueError(f"column {name} is required")
        if arrays[-1] is not None:
            n = len(arrays[-1])
    arrays = [pa.nulls(n or 0, typ) if a is None else a for a, (_, typ, _) in zip(arrays, COLUMNS)]
    table = pa.Table.from_arrays(arrays, schema=SCHEMA)
    return with_metadata(table, metadata) if metadata is not None else table
