"""Format v2 on disk: the compact columns a trace file stores, and the logical table they stand for.

Version 1 files stored the logical table as it is. Most of their bytes went into absolute
nanosecond times (strace records microseconds) and into null bitmaps that only repeat what the
op already says. A v2 file keeps every value exactly, in columns zstd compresses well:

- ``dt_us`` (or ``dt_ns``): the time since the previous row (row 0: since the time origin), in
  microseconds when every timestamp is a whole microsecond, else in nanoseconds; int32 when every
  delta fits, else int64. ``ts_ns = cumsum(dt) * unit``.
- ``duration_us`` (or ``duration_ns``): the same choice of unit and width for durations.
- No null bitmaps on the nullable arguments: a value is null where its op does not take that
  argument (``schema.OP_TAKES``) unless bit i of the row's ``null_flips`` (uint16) says the
  opposite, i being the column's place in ``schema.NULLABLE_COLUMNS``. Absent values are 0.
- Every other column is the logical one, unchanged; extra columns are stored as they are.
- The metadata JSON lives in the file footer (``pyarrow.ipc.open_file(path).metadata``), stored
  once; the schema metadata holds only the format version.

``decode`` works chunk by chunk on what the IPC reader returns, with Arrow compute kernels on
bitmaps, so that reading costs little more than Arrow's own decompression.
"""

from __future__ import annotations

import concurrent.futures
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import TraceError
from .schema import (COLUMNS, MM_OPS, NULLABLE_COLUMNS, OP_TAKES, OP_TYPE, OPS, REQUIRED_BY_OP,
                     SCHEMA)

TIME_COLUMNS = ("dt_us", "dt_ns")
DURATION_COLUMNS = ("duration_us", "duration_ns")
FLIPS = "null_flips"
PHYSICAL_NAMES = frozenset(TIME_COLUMNS + DURATION_COLUMNS + (FLIPS,))
# Logical columns stored unchanged (with their nulls re-derived for the nullable ones).
STORED_AS_IS = tuple((name, typ) for name, typ, _ in COLUMNS if name not in ("ts_ns", "duration_ns"))
# Their stored types: the logical ones (the op column may be any string or dictionary encoding).
STORED_TYPES = {name: typ for name, typ in STORED_AS_IS if name != "op"}
FLIP_BIT = {name: 1 << index for index, name in enumerate(NULLABLE_COLUMNS)}
KNOWN_FLIP_BITS = (1 << len(NULLABLE_COLUMNS)) - 1
I64_MAX = np.iinfo(np.int64).max
I32 = np.iinfo(np.int32)
NS_PER_US = 1000
# What decoding can prove, so that validation need not look again (format.validate(proven=)).
PROVEN_TIMES = "times"          # ts_ns >= 0 and nondecreasing (hence per thread too)
PROVEN_OP_FIELDS = "op_fields"  # every op has the fields REQUIRED_BY_OP lists
# More chunks than this (per million rows, plus a few) and decoding works on one combined chunk:
# a hostile file of one-row batches must not cost one Python round per row.
MAX_CHUNKS_PER_MILLION = 256


def is_v2(table: pa.Table) -> bool:
    """A table in v2's physical form (the file's columns), rather than the logical one."""
    names = set(table.schema.names)
    return "ts_ns" not in names and bool(names & set(TIME_COLUMNS))


# ---------------------------------------------------------------------------------------------
# Writing

def _narrowest(values: np.ndarray) -> pa.Array:
    if not len(values) or (values.min() >= I32.min and values.max() <= I32.max):
        return pa.array(values.astype(np.int32), pa.int32())
    return pa.array(values, pa.int64())


def _whole_microseconds(values: np.ndarray) -> bool:
    return not np.any(values % NS_PER_US)


def _op_codes(table: pa.Table) -> np.ndarray:
    """The canonical op codes of a validated logical table (its op column is canonical)."""
    column = table.column("op")
    if not column.num_chunks:
        return np.zeros(0, np.int8)
    return np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in column.chunks])


def format_minor(table: pa.Table) -> int:
    """The minor version a validated logical table is written as: 1 once it holds allocation
    calls (format 2.1), else 0, so that a trace of mm calls only stays a 2.0 file, byte for byte
    what 2.0 wrote, which a 2.0 reader reads."""
    codes = _op_codes(table)
    return 1 if len(codes) and int(codes.max()) >= len(MM_OPS) else 0


def encode(table: pa.Table) -> pa.Table:
    """The v2 columns of a validated logical table (see the module docstring)."""
    extra = [name for name in table.schema.names if name not in SCHEMA.names]
    clash = sorted(set(extra) & PHYSICAL_NAMES)
    if clash:
        raise TraceError(f"extra column {clash[0]} has the name of a format v2 column; rename it")
    n = table.num_rows
    table = table.combine_chunks()  # one chunk per column: the writer cuts even batches from it
    codes = _op_codes(table)
    ts = table.column("ts_ns").to_numpy()
    dt = np.diff(ts, prepend=np.int64(0)) if n else np.zeros(0, np.int64)
    microseconds = _whole_microseconds(ts)
    arrays = {("dt_us" if microseconds else "dt_ns"): _narrowest(dt // NS_PER_US if microseconds else dt)}
    flips = np.zeros(n, np.uint16)
    for name, typ in STORED_AS_IS:
        column = table.column(name)
        if name in FLIP_BIT:
            column = _absent_as_zero(column, codes, name, flips)
        arrays[name] = column
    duration = _absent_as_zero(table.column("duration_ns"), codes, "duration_ns", flips).to_numpy()
    microseconds = _whole_microseconds(duration)
    arrays["duration_us" if microseconds else "duration_ns"] = _narrowest(
        duration // NS_PER_US if microseconds else duration)
    arrays[FLIPS] = pa.array(flips, pa.uint16())
    if not (len(codes) and int(codes.max()) >= len(MM_OPS)):
        # no allocation call: 2.0's dictionary (the same codes), as a 2.0 writer stored it
        arrays["op"] = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int8()), pa.array(MM_OPS))
    fields = [pa.field(name, arrays[name].type, nullable=False) for name in arrays]
    columns = list(arrays.values()) + [table.column(name) for name in extra]
    fields += [table.schema.field(name) for name in extra]
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def _absent_as_zero(column: pa.ChunkedArray, codes: np.ndarray, name: str,
                    flips: np.ndarray) -> pa.ChunkedArray:
    """``column`` with nulls stored as 0; rows whose null state differs from what the op implies
    get the column's bit in ``flips``."""
    taken = np.isin(codes, [OPS.index(op) for op in OP_TAKES[name]])
    present = pc.is_valid(column).to_numpy(zero_copy_only=False) if column.null_count else True
    flips[present != taken] |= np.uint16(FLIP_BIT[name])
    # fill_null writes zeros under the nulls: whatever a writer left there is not carried along.
    return pc.fill_null(column, pa.scalar(0, column.type)) if column.null_count else column


# ---------------------------------------------------------------------------------------------
# Reading

def _first_row(mask) -> int:
    return int(np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))[0])


def check_physical(table: pa.Table) -> None:
    """The v2 columns are there, once each, with the types v2 allows and no missing values
    where none may be missing. Raises TraceError naming the column (and the first bad row)."""
    names = table.schema.names
    for group in (TIME_COLUMNS, DURATION_COLUMNS):
        found = [name for name in group if name in names]
        if len(found) != 1:
            raise TraceError(f"format v2 trace needs exactly one of the columns {', '.join(group)} "
                             f"(found {', '.join(found) or 'none'})")
    expected = [name for name, _ in STORED_AS_IS] + [FLIPS]
    missing = [name for name in expected if name not in names]
    if missing:
        raise TraceError(f"not an mmreplay trace: missing column(s) {', '.join(missing)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TraceError(f"column {repeated[0]} appears {names.count(repeated[0])} times")
    for name in names:
        actual = table.schema.field(name).type
        if name in TIME_COLUMNS or name in DURATION_COLUMNS:
            if actual not in (pa.int32(), pa.int64()):
                raise TraceError(f"column {name}: type {actual}, expected int32 or int64")
        elif name == FLIPS:
            if actual != pa.uint16():
                raise TraceError(f"column {name}: type {actual}, expected uint16")
        elif name in STORED_TYPES and actual != STORED_TYPES[name]:
            # Checked here, before decoding lays validity bitmaps over the stored buffers.
            raise TraceError(f"column {name}: type {actual}, expected {STORED_TYPES[name]}")
    for name in (*[n for n in TIME_COLUMNS if n in names], FLIPS):
        column = table.column(name)
        if column.null_count:
            raise TraceError(f"row {_first_row(pc.is_null(column))}, column {name}: "
                             "missing value in a required column")


def _chunk_layout(column: pa.ChunkedArray) -> list[int]:
    return [len(chunk) for chunk in column.chunks]


def _aligned(table: pa.Table) -> pa.Table:
    """Every column in the same chunks (as an IPC reader returns them), few enough to loop over."""
    layouts = {tuple(_chunk_layout(column)) for column in table.columns}
    chunks = max((len(layout) for layout in layouts), default=0)
    too_many = chunks > MAX_CHUNKS_PER_MILLION * (table.num_rows // 1_000_000 + 1)
    if len(layouts) > 1 or too_many or any(
            chunk.offset for column in table.columns for chunk in column.chunks):
        return table.combine_chunks()
    return table


def op_is_canonical(column: pa.ChunkedArray) -> bool:
    """The op column already uses mmreplay's dictionary (what mmreplay writes), in every chunk.

    A file written before ops were added has a dictionary that is a prefix of today's (the same
    codes): it is canonical too."""
    if column.type != OP_TYPE:
        return False
    for chunk in column.chunks:
        dictionary = chunk.dictionary
        if len(dictionary) > len(OPS) or not dictionary.equals(_CANONICAL[len(dictionary)]):
            return False
    return True


_CANONICAL = [pa.array(OPS[:n]) for n in range(len(OPS) + 1)]


def op_strings(column: pa.ChunkedArray) -> pa.Array:
    """Any string or dictionary-of-string op column as one utf8 array (names as written)."""
    values = column.combine_chunks()
    if isinstance(values, pa.DictionaryArray):
        values = values.dictionary_decode()  # a null may hide in the dictionary itself
    return values.cast(pa.utf8())


def unknown_ops(names: pa.Array) -> pa.Array:
    """True where an op name is not one of OPS (False for nulls)."""
    return pc.and_(pc.invert(pc.is_in(names, value_set=pa.array(OPS))), pc.is_valid(names))


def widened_op_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A canonical op column with today's whole dictionary (a 2.0 file's holds the mm ops only:
    the same codes), so that tables read from 2.0 and 2.1 files compare equal."""
    if all(len(chunk.dictionary) == len(OPS) for chunk in column.chunks):
        return column
    full = pa.array(OPS)
    return pa.chunked_array([pa.DictionaryArray.from_arrays(chunk.indices, full)
                             for chunk in column.chunks], OP_TYPE)


def canonical_op_column(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Any string or dictionary-of-string op column, re-encoded with mmreplay's fixed dictionary
    (unknown names and nulls become code 0: check them first)."""
    codes = pc.index_in(op_strings(column), value_set=pa.array(OPS))
    indices = pc.fill_null(codes, 0).cast(pa.int8())
    return pa.chunked_array([pa.DictionaryArray.from_arrays(indices, pa.array(OPS))], OP_TYPE)


def _int64_buffer(n: int) -> tuple[pa.Buffer, np.ndarray]:
    """An int64 buffer from Arrow's memory pool (reused between reads, unlike a fresh numpy
    allocation that the kernel must fault in page by page) and a numpy view to fill it."""
    buffer = pa.allocate_buffer(n * 8, memory_pool=pa.default_memory_pool())
    return buffer, np.frombuffer(buffer, dtype=np.int64, count=n)


def _time_column(table: pa.Table) -> tuple[pa.ChunkedArray, bool]:
    """ts_ns rebuilt from dt_us/dt_ns, refusing sums that would not fit a 64-bit clock; and
    whether every delta is >= 0 (then every time is >= 0 and no thread's clock goes back)."""
    name = next(n for n in TIME_COLUMNS if n in table.schema.names)
    dt = table.column(name)
    n = len(dt)
    unit = NS_PER_US if name == "dt_us" else 1
    low = high = 0
    if n:
        low, high = (v.as_py() for v in pc.min_max(dt).values())
        # |ts| <= n * max|dt| * unit: when that bound fits, no sum can overflow (the usual case).
        # Otherwise the sums are checked in floating point, with a factor of 2 to spare.
        if max(abs(low), abs(high)) * n * unit >= I64_MAX:
            sums = np.cumsum(dt.to_numpy().astype(np.float64))
            if np.abs(sums).max() >= 2.0 ** 62 / unit:
                raise TraceError(f"column {name}: times this large would overflow the 64-bit "
                                 "nanosecond clock")
    buffer, ts = _int64_buffer(n)
    # Each chunk's first time is the sum of the deltas before it; with those known, the chunks
    # are summed on separate threads (numpy lets go of the GIL; the kernel clears the fresh
    # pages of each part on the thread that first writes them).
    parts, at, carry = [], 0, 0
    for chunk in dt.chunks:
        values = chunk.to_numpy()
        parts.append((values, ts[at:at + len(values)], carry * unit))
        carry += int(values.sum(dtype=np.int64))
        at += len(values)
    _on_threads(lambda part: _running_times(*part, unit), parts)
    return pa.chunked_array([pa.Array.from_buffers(pa.int64(), n, [None, buffer])]), low >= 0


TIME_BLOCK_ROWS = 1 << 16  # summed and scaled while in cache


def _running_times(dt: np.ndarray, out: np.ndarray, start_ns: int, unit: int) -> None:
    """out = start_ns + cumsum(dt * unit), block by block."""
    for at in range(0, len(dt), TIME_BLOCK_ROWS):
        block = out[at:at + TIME_BLOCK_ROWS]
        np.multiply(dt[at:at + TIME_BLOCK_ROWS], unit, out=block, dtype=np.int64,
                    casting="unsafe")
        block[0] += start_ns
        np.cumsum(block, out=block)
        start_ns = int(block[-1])


def _on_threads(work, items: list) -> None:
    """``work(item)`` for every item, on as many threads as there are CPUs (one item: here)."""
    threads = min(len(items), os.cpu_count() or 1)
    if threads <= 1:
        for item in items:
            work(item)
        return
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(work, items):  # re-raises the first failure
            pass


def _all_null_int64(n: int, data: pa.Buffer) -> pa.ChunkedArray:
    """n nulls of type int64 over ``data`` (any buffer of n * 8 bytes: ts_ns's), without
    allocating and zero-filling n * 8 bytes as pa.nulls does. Values under nulls are undefined
    in Arrow and never read; the writer stores them as 0."""
    validity = pa.py_buffer(bytes((n + 7) // 8))
    return pa.chunked_array([pa.Array.from_buffers(pa.int64(), n, [validity, data], null_count=n)])


def _duration_values(column: pa.ChunkedArray, name: str) -> pa.ChunkedArray:
    """duration_us/duration_ns as int64 nanoseconds (absent values included; nulls come later),
    in the same chunks."""
    unit = NS_PER_US if name == "duration_us" else 1
    if unit != 1 and column.type == pa.int64() and len(column):
        low, high = (v.as_py() for v in pc.min_max(column).values())
        if high > I64_MAX // unit or low < -(I64_MAX // unit):
            raise TraceError(f"column {name}: durations this large would overflow 64-bit "
                             "nanoseconds")
    if unit == 1 and column.type == pa.int64():
        return column
    chunks = []
    for chunk in column.chunks:
        buffer, values = _int64_buffer(len(chunk))
        np.multiply(chunk.to_numpy(), unit, out=values, dtype=np.int64, casting="unsafe")
        chunks.append(pa.Array.from_buffers(pa.int64(), len(chunk), [None, buffer]))
    return pa.chunked_array(chunks, pa.int64())


def _with_validity(values: pa.ChunkedArray, valid: list | None, typ: pa.DataType) -> pa.ChunkedArray:
    """``values`` with nulls where the validity bitmaps ``valid`` (one per chunk) are clear."""
    if valid is None:
        return values if values.type == typ else values.cast(typ)
    lengths = [len(chunk) for chunk in values.chunks]
    chunks = []
    for data, bitmap, length in zip(values.chunks, valid, lengths):
        if data.offset or data.null_count:
            # A sliced chunk, or a native null from another writer (it stays null): the slow,
            # general way.
            ok = pa.Array.from_buffers(pa.bool_(), length, [None, bitmap])
            if data.null_count:
                ok = pc.and_(ok, pc.is_valid(data))
            chunks.append(pc.if_else(ok, data, pa.scalar(None, data.type)).cast(typ))
        else:
            chunks.append(pa.Array.from_buffers(typ, length, [bitmap, data.buffers()[1]]))
    return pa.chunked_array(chunks, typ)


def decode(table: pa.Table) -> tuple[pa.Table, frozenset]:
    """The logical table (format v1 columns, then extra columns) for a table of v2 columns, and
    the checks of ``format.validate`` that the decoding itself proved (``PROVEN_*``).

    ``check_physical`` must have accepted it. Raises TraceError for values that cannot stand
    for a logical table (flip bits v2 does not define, sums overflowing the clock).
    """
    table = _aligned(table)
    n = table.num_rows
    if not op_is_canonical(table.column("op")):
        # Another writer's op encoding: the op decides which values are null, so unknown names
        # and nulls are refused here, by name, before anything is derived from them.
        names = op_strings(table.column("op"))
        if names.null_count:
            raise TraceError(f"row {_first_row(pc.is_null(names))}, column op: missing value in a "
                             "required column")
        unknown = unknown_ops(names)
        if pc.any(unknown).as_py():
            row = _first_row(unknown)
            raise TraceError(f"row {row}, column op: unknown op {names[row].as_py()!r} (expected "
                             f"one of {', '.join(OPS)})")
        table = table.combine_chunks()
        table = table.set_column(table.schema.names.index("op"), pa.field("op", OP_TYPE, False),
                                 canonical_op_column(table.column("op")))
    op = table.column("op")
    if op.null_count:
        raise TraceError(f"row {_first_row(pc.is_null(op))}, column op: missing value in a "
                         "required column")
    # Per chunk, the op codes as numpy (canonical dictionary: 0..5, Arrow's full validation
    # checked the indices): numpy compares and packs bits ~10x faster than Arrow's kernels here.
    codes = [chunk.indices.to_numpy(zero_copy_only=False) for chunk in op.chunks]

    flips = table.column(FLIPS)
    flip_np = [chunk.to_numpy(zero_copy_only=False) for chunk in flips.chunks]
    any_flip = int(np.bitwise_or.reduce([np.bitwise_or.reduce(a) for a in flip_np if len(a)] or [0]))
    all_flip = int(np.bitwise_and.reduce([np.bitwise_and.reduce(a) for a in flip_np if len(a)]
                                         or [0]))
    if any_flip & ~KNOWN_FLIP_BITS:
        unknown = pc.not_equal(pc.bit_wise_and(flips, ~KNOWN_FLIP_BITS & 0xFFFF), 0)
        raise TraceError(f"row {_first_row(unknown)}, column {FLIPS}: bits format v2 does not "
                         "define")

    # One scratch array per shape, reused: fresh temporaries cost a page fault per 4 KiB.
    longest = max((len(chunk) for chunk in codes), default=0)
    scratch_bool = np.empty(longest, bool)
    scratch_any = np.empty(longest, bool)
    scratch_bits = np.empty(longest, np.uint16)
    bitmaps: dict[tuple, list] = {}

    def bitmap_of(key: tuple, fill) -> list[pa.Buffer]:
        """Per chunk, ``fill(chunk_index, out)`` packed into a validity bitmap (cached by key)."""
        if key not in bitmaps:
            packed = []
            for index, chunk in enumerate(codes):
                out = scratch_bool[:len(chunk)]
                fill(index, out)
                packed.append(pa.py_buffer(np.packbits(out, bitorder="little")))
            bitmaps[key] = packed
        return bitmaps[key]

    def taken_into(ops: tuple, index: int, out: np.ndarray) -> None:
        """``out`` = True where the op is one of ``ops``."""
        wanted = [OPS.index(o) for o in ops]
        np.equal(codes[index], wanted[0], out=out)
        for code in wanted[1:]:
            np.equal(codes[index], code, out=scratch_any[:len(out)])
            out |= scratch_any[:len(out)]

    def flipped_into(bit: int, index: int, out: np.ndarray) -> None:
        """``out`` = True where the row's flip bit ``bit`` is set."""
        bits = scratch_bits[:len(out)]
        np.bitwise_and(flip_np[index], bit, out=bits)
        np.not_equal(bits, 0, out=out)

    def validity(name: str) -> list | None:
        """Per chunk, the validity bitmap: set where the value is present (the op takes it,
        unless its flip bit says otherwise); None when present on every row."""
        ops, bit = OP_TAKES[name], FLIP_BIT[name]
        everywhere = len(ops) == len(OPS)
        if not any_flip & bit:
            return None if everywhere else bitmap_of(ops, lambda i, out: taken_into(ops, i, out))

        def present(index: int, out: np.ndarray) -> None:
            if everywhere:
                flipped_into(bit, index, out)
                np.logical_not(out, out=out)
                return
            flipped = np.empty(len(out), bool)  # flips are rare: no scratch kept for them
            flipped_into(bit, index, flipped)
            taken_into(ops, index, out)  # (uses scratch_any for its second op)
            np.logical_xor(out, flipped, out=out)

        return bitmap_of((name, "flipped"), present)

    columns, fields = [], []
    for name, typ, nullable in COLUMNS:
        if name == "ts_ns":
            column, nondecreasing = _time_column(table)
        elif name == "duration_ns":
            stored = next(n for n in DURATION_COLUMNS if n in table.schema.names)
            if all_flip & FLIP_BIT[name]:  # no duration anywhere (a log without -T, synth)
                column = _all_null_int64(n, columns[0].chunk(0).buffers()[1])
            else:
                column = _with_validity(_duration_values(table.column(stored), stored),
                                        validity(name), pa.int64())
        elif name in FLIP_BIT:
            column = _with_validity(table.column(name), validity(name), typ)
        else:
            column = table.column(name)
        columns.append(column)
        fields.append(pa.field(name, typ, nullable=nullable))
    extra = [name for name in table.schema.names
             if name not in SCHEMA.names and name not in PHYSICAL_NAMES]
    columns += [table.column(name) for name in extra]
    fields += [table.schema.field(name) for name in extra]
    proven = set()
    if nondecreasing:  # every delta >= 0: no negative time, no clock going back in any thread
        proven.add(PROVEN_TIMES)
    required = {field for fields in REQUIRED_BY_OP.values() for field in fields}
    if not any_flip & sum(FLIP_BIT[f] for f in required) and not any(
            table.column(f).null_count for f in required):
        proven.add(PROVEN_OP_FIELDS)  # OP_TAKES covers every field REQUIRED_BY_OP asks for
    return pa.Table.from_arrays(columns, schema=pa.schema(fields)), frozenset(proven)
