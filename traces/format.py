"""Read, write and validate trace files (format v1).

Traces arrive by email from strangers, so reading is defensive: the magic bytes are checked
before Arrow sees the file, Arrow's full validation runs before any value is used, and every
failure becomes one ``TraceError`` line naming the file and the problem.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import __version__
from .errors import TraceError
from .files import atomic_output, open_input
from .ipc_guard import check_ipc_sizes
from .schema import (COLUMNS, FORMAT_MAJOR, FORMAT_MINOR, METADATA_KEY, OP_TYPE, OPS, SCHEMA)

MAX_METADATA_BYTES = 1 << 20
ARROW_MAGIC = b"ARROW1"
BATCH_ROWS = 1 << 16

# Fields each op must carry (beyond the always-required columns), as recorded by strace.
REQUIRED_BY_OP = {
    "mmap": ("prot", "flags", "fd"),
    "mremap": ("new_length", "flags"),
    "madvise": ("advice",),
    "mprotect": ("prot",),
}


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


def _canonical_op_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Any string or dictionary-of-string op column, re-encoded with mmreplay's fixed dictionary."""
    values = column.combine_chunks()
    if isinstance(values, pa.DictionaryArray):
        values = values.dictionary_decode()
    codes = pc.index_in(values.cast(pa.utf8()), value_set=pa.array(OPS))
    indices = pc.fill_null(codes, 0).cast(pa.int8())
    return pa.chunked_array([pa.DictionaryArray.from_arrays(indices, pa.array(OPS))], OP_TYPE)


def validate(table: pa.Table) -> pa.Table:
    """Check a table against format v1; return it with the op column in canonical form.

    Raises ``TraceError`` naming the first offending row (whatever kind of problem it has) and
    its column.
    """
    names = table.schema.names
    missing = [name for name in SCHEMA.names if name not in names]
    if missing:
        raise TraceError(f"not an mmreplay trace: missing column(s) {', '.join(missing)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TraceError(f"column {repeated[0]} appears {names.count(repeated[0])} times")
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
    raw_op = table.column("op").combine_chunks()
    if isinstance(raw_op, pa.DictionaryArray):
        raw_op = raw_op.dictionary_decode()  # a null may hide in the dictionary itself
    raw_op = raw_op.cast(pa.utf8())
    for name, _, nullable in COLUMNS:
        column = raw_op if name == "op" else table.column(name)
        if not nullable and column.null_count:
            checks.append((name, _mask(pc.is_null(column)), "missing value in a required column"))

    op_column = table.column("op")
    if op_column.type != OP_TYPE or len(op_column.chunks) > 1 or _dictionary_differs(op_column):
        # An unknown name must be reported as it was written, so look it up before re-encoding.
        unknown = pc.invert(pc.is_in(raw_op, value_set=pa.array(OPS)))
        checks.append(("op", _mask(unknown) & ~_mask(pc.is_null(raw_op)), lambda row: (
            f"unknown op {raw_op[row].as_py()!r} (expected one of {', '.join(OPS)})")))
        table = table.set_column(names.index("op"), pa.field("op", OP_TYPE, nullable=False),
                                 _canonical_op_column(op_column))
    codes = op_names(table)

    ts = column_np(table, "ts_ns")
    tid = column_np(table, "tid")
    errno = column_np(table, "errno")
    checks += [
        ("ts_ns", ts < 0, "negative timestamp"),
        ("tid", tid < 0, "negative thread id"),
        ("errno", (errno < 0) | (errno > 4095), "errno outside 0..4095"),
        ("fd", column_np(table, "fd", 0) < -1, "fd below -1"),
        ("duration_ns", column_np(table, "duration_ns", 0) < 0, "negative duration"),
        ("prot", column_np(table, "prot", 0) < 0, "negative prot bits"),
        ("advice", column_np(table, "advice", 0) < 0, "negative advice"),
        ("offset", column_np(table, "offset", 0) < 0, "negative file offset"),
    ]
    for op, fields in REQUIRED_BY_OP.items():
        is_op = codes == OPS.index(op)
        for field in fields:
            checks.append((field, is_op & _mask(pc.is_null(table.column(field))),
                           f"{op} row without {field}"))
    checks.append(("ts_ns", _backwards_timestamps(tid, ts),
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


def _dictionary_differs(column: pa.ChunkedArray) -> bool:
    return any(chunk.dictionary.to_pylist() != list(OPS) for chunk in column.chunks)


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
        raise TraceError(f"metadata format_version {version!r} is not a version number") from None
    if major != FORMAT_MAJOR:
        raise TraceError(f"trace format version {version} is not supported (this mmreplay reads "
                         f"version {FORMAT_MAJOR}.x); upgrade mmreplay")
    return meta


def _check_magic(path: Path) -> None:
    with open_input(path, "a trace file", TraceError) as handle:
        head = handle.read(8)
    if not head:
        raise TraceError(f"{path}: empty file, not a trace")
    if head.startswith(ARROW_MAGIC):
        return
    if head.startswith(b"PAR1"):
        kind = "a Parquet file"
    elif head.startswith(b"\xff\xff\xff\xff") or head.startswith(b"\x00\x00\x00\x00"):
        kind = "an Arrow IPC stream (write traces as IPC files: pyarrow.feather.write_feather)"
    elif all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        kind = "a text file (an strace log? use `mmreplay import`)"
    else:
        kind = "not an Arrow IPC file"
    raise TraceError(f"{path}: {kind}, not an mmreplay trace (Arrow IPC file)")


def read_trace(path: str | os.PathLike) -> pa.Table:
    """Read and validate a trace; return a ``pyarrow.Table`` with its schema metadata."""
    path = Path(path)
    _check_magic(path)
    try:
        data = pa.memory_map(str(path), "r").read_buffer()
        # Claimed row counts and inflated sizes are checked before Arrow allocates anything.
        check_ipc_sizes(data)
        table = pa.ipc.open_file(data).read_all()
        # Full validation before anything looks at values: offsets, dictionary indices, lengths.
        table.validate(full=True)
    except TraceError as exc:
        raise TraceError(f"{path}: {exc}") from None
    except (pa.ArrowException, OSError, ValueError, MemoryError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(f"{path}: damaged or truncated Arrow file ({detail[:200]})") from None
    try:
        trace_metadata(table)
        return validate(table)
    except TraceError as exc:
        raise TraceError(f"{path}: {exc}") from None


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


def write_trace(table: pa.Table, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Validate ``table`` and write it atomically as a zstd-compressed Arrow IPC file.

    ``metadata`` replaces the table's own mmreplay metadata when given.
    """
    table = validate(table)
    if metadata is None:
        metadata = trace_metadata(table) or new_metadata("unknown")
    columns = [table.column(name) for name in SCHEMA.names]
    extra = [name for name in table.schema.names if name not in SCHEMA.names]
    fields = list(SCHEMA) + [table.schema.field(name) for name in extra]
    ordered = pa.Table.from_arrays(columns + [table.column(n) for n in extra], schema=pa.schema(fields))
    ordered = with_metadata(ordered, metadata)
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with atomic_output(path) as handle:
        with pa.ipc.new_file(handle, ordered.schema, options=options) as writer:
            for batch in ordered.to_batches(max_chunksize=BATCH_ROWS):
                writer.write_batch(batch)
    return Path(path)


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
