"""Test data for traces: hypothesis strategies for valid tables, and builders for hand-made rows.

``valid_tables()`` draws tables that ``traces.validate`` must accept, with everything the format
allows a writer to do: nulls where a column is nullable, interleaved threads each with its own
clock (so timestamps go backwards *across* threads), extra columns, several chunks, the op column
as plain strings or as a dictionary in another order, and random JSON metadata.

The row builders (``mmap``, ``munmap``, ``mremap``, ...) give one row dict each with realistic
defaults; ``table_from_rows`` numbers their timestamps and builds a format v1 table.
"""

from __future__ import annotations

import pyarrow as pa
from hypothesis import strategies as st

from traces import build_table, new_metadata
from traces.encoding import PHYSICAL_NAMES
from traces.format import REQUIRED_BY_OP, with_metadata
from traces.schema import (COLUMN_NAMES, COLUMNS, MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE,
                           MREMAP_MAYMOVE, OPS, PAGE_SIZE, PROT_READ, PROT_WRITE)

U64_MAX = (1 << 64) - 1
I32 = (-(1 << 31), (1 << 31) - 1)
I64_MAX = (1 << 63) - 1
COLUMN_TYPE = {name: typ for name, typ, _ in COLUMNS}
NULLABLE = {name for name, _, nullable in COLUMNS if nullable}
KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30

# ---------------------------------------------------------------------------------------------
# Row builders for hand-made traces (values as strace would record them on x86-64).

RW = PROT_READ | PROT_WRITE
ANON = MAP_PRIVATE | MAP_ANONYMOUS


def mmap(addr: int, length: int, *, anon: bool = True, flags: int | None = None, fd: int | None = None,
         hint: int = 0, prot: int = RW, errno: int = 0, **fields) -> dict:
    """A mmap row: ``addr`` is the address returned (0 when it failed)."""
    if flags is None:
        flags = ANON if anon else MAP_PRIVATE
    if fd is None:
        fd = -1 if anon else 3
    return dict(op="mmap", addr=addr, length=length, hint=hint, prot=prot, flags=flags, fd=fd,
                offset=0, errno=errno, **fields)


def mmap_fixed(addr: int, length: int, **kw) -> dict:
    anon = kw.pop("anon", True)
    flags = (ANON if anon else MAP_PRIVATE) | MAP_FIXED
    return mmap(addr, length, anon=anon, flags=flags, hint=addr, **kw)


def munmap(addr: int, length: int, errno: int = 0, **fields) -> dict:
    return dict(op="munmap", addr=addr, length=length, errno=errno, **fields)


def mremap(old_addr: int, old_length: int, new_addr: int, new_length: int,
           flags: int = MREMAP_MAYMOVE, hint: int = 0, errno: int = 0, **fields) -> dict:
    return dict(op="mremap", addr=old_addr, length=old_length, new_addr=new_addr,
                new_length=new_length, flags=flags, hint=hint, errno=errno, **fields)


def madvise(addr: int, length: int, advice: int, errno: int = 0, **fields) -> dict:
    return dict(op="madvise", addr=addr, length=length, advice=advice, errno=errno, **fields)


def mprotect(addr: int, length: int, prot: int, errno: int = 0, **fields) -> dict:
    return dict(op="mprotect", addr=addr, length=length, prot=prot, errno=errno, **fields)


def brk(argument: int, returned: int, errno: int = 0, **fields) -> dict:
    return dict(op="brk", addr=argument, length=0, new_addr=returned, errno=errno, **fields)


def table_from_rows(rows: list[dict], metadata: dict | None = None, tid: int = 1) -> pa.Table:
    """A format v1 table from row dicts; missing ``ts_ns`` = 1000 * row index, ``tid`` = ``tid``."""
    columns: dict[str, list] = {name: [] for name in COLUMN_NAMES}
    for index, row in enumerate(rows):
        unknown = set(row) - set(COLUMN_NAMES)
        if unknown:
            raise ValueError(f"row {index}: unknown field(s) {sorted(unknown)}")
        full = {"ts_ns": 1000 * index, "tid": tid, **row}
        for name in COLUMN_NAMES:
            columns[name].append(full.get(name))
    return build_table(columns, metadata if metadata is not None else new_metadata("test"))


# ---------------------------------------------------------------------------------------------
# Hypothesis strategies.

def _u64() -> st.SearchStrategy[int]:
    # Mostly page-multiples of plausible sizes, sometimes anything a hostile writer could put there.
    return st.one_of(st.integers(0, 1 << 20).map(lambda pages: pages * PAGE_SIZE),
                     st.integers(0, U64_MAX), st.sampled_from([0, 1, U64_MAX, 1 << 63]))


def _nullable(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


# Values each column may take when present; nullable columns are null about half the time.
_FIELD_VALUES = {
    "addr": _u64(),
    "length": _u64(),
    "new_addr": _u64(),
    "new_length": _u64(),
    "hint": _u64(),
    "prot": st.integers(0, I32[1]),
    "flags": st.integers(*I32),
    "fd": st.integers(-1, I32[1]),
    "offset": st.integers(0, I64_MAX),
    "advice": st.integers(0, I32[1]),
    "errno": st.one_of(st.just(0), st.integers(1, 4095)),
    "duration_ns": st.integers(0, I64_MAX),
}


@st.composite
def valid_rows(draw, min_rows: int = 0, max_rows: int = 30) -> dict[str, list]:
    """Column lists (Python values) of a valid trace: per-thread clocks, per-op fields present."""
    n = draw(st.integers(min_rows, max_rows))
    tids = draw(st.lists(st.integers(0, I32[1]), min_size=1, max_size=4, unique=True))
    clock = {tid: draw(st.integers(0, 10**12)) for tid in tids}
    columns: dict[str, list] = {name: [] for name in COLUMN_NAMES}
    for _ in range(n):
        tid = draw(st.sampled_from(tids))
        clock[tid] += draw(st.one_of(st.just(0), st.integers(0, 10**9)))
        op = draw(st.sampled_from(OPS))
        row = {"ts_ns": clock[tid], "tid": tid, "op": op}
        for name, strategy in _FIELD_VALUES.items():
            present = (name not in NULLABLE or name in REQUIRED_BY_OP.get(op, ())
                       or draw(st.booleans()))
            row[name] = draw(strategy) if present else None
        for name in COLUMN_NAMES:
            columns[name].append(row[name])
    return columns


_EXTRA_COLUMN_TYPES = [
    (pa.int64(), st.integers(-(1 << 63), I64_MAX)),
    (pa.float64(), st.floats(allow_nan=False)),
    (pa.utf8(), st.text(max_size=8)),
    (pa.bool_(), st.booleans()),
    (pa.list_(pa.int32()), st.lists(st.integers(*I32), max_size=3)),
]

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
                          st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12))
json_values = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


@st.composite
def trace_metadata_dicts(draw) -> dict:
    """Metadata a writer may produce: the standard block, a newer minor version, any extra fields."""
    extra = draw(st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=5))
    meta = new_metadata(draw(st.sampled_from(["synth", "strace", "record", "test"])))
    meta.update(extra)
    meta["format_version"] = 1
    meta["format_minor"] = draw(st.integers(0, 1000))
    return meta


def _op_column(values: list[str], draw) -> pa.Array:
    """The op column in one of the encodings a foreign writer may use."""
    encoding = draw(st.sampled_from(["canonical", "string", "large_string", "shuffled_dictionary"]))
    if encoding == "canonical":
        return pa.DictionaryArray.from_arrays(pa.array([OPS.index(v) for v in values], pa.int8()),
                                              pa.array(OPS))
    if encoding == "string":
        return pa.array(values, pa.utf8())
    if encoding == "large_string":
        return pa.array(values, pa.large_utf8())
    dictionary = draw(st.permutations(OPS))
    indices = pa.array([dictionary.index(v) for v in values], pa.int32())
    return pa.DictionaryArray.from_arrays(indices, pa.array(dictionary))


@st.composite
def valid_tables(draw, min_rows: int = 0, max_rows: int = 30) -> pa.Table:
    """A table ``validate`` accepts, with metadata, extra columns, odd encodings and chunking."""
    columns = draw(valid_rows(min_rows, max_rows))
    n = len(columns["ts_ns"])
    arrays = {name: pa.array(columns[name], COLUMN_TYPE[name]) for name in COLUMN_NAMES if name != "op"}
    arrays["op"] = _op_column(columns["op"], draw)
    names = draw(st.lists(st.text(min_size=1, max_size=10).filter(
        lambda s: s not in COLUMN_NAMES and s not in PHYSICAL_NAMES), max_size=3, unique=True))
    for name in names:
        typ, values = draw(st.sampled_from(_EXTRA_COLUMN_TYPES))
        arrays[name] = pa.array(draw(st.lists(_nullable(values), min_size=n, max_size=n)), typ)
    order = list(arrays)
    if draw(st.booleans()):
        order = draw(st.permutations(order))
    table = pa.table({name: arrays[name] for name in order})
    if n > 1 and draw(st.booleans()):
        # Several record batches, as a streaming writer produces.
        cuts = sorted(draw(st.lists(st.integers(1, n - 1), max_size=3, unique=True)))
        bounds = [0, *cuts, n]
        table = pa.concat_tables([table.slice(a, b - a) for a, b in zip(bounds, bounds[1:])])
    metadata = draw(trace_metadata_dicts())
    return with_metadata(table, metadata)

