"""validate(): every valid table passes; a malformed one fails naming its first bad row and column."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from strategies import COLUMN_TYPE, mmap, munmap, table_from_rows, valid_rows, valid_tables
from traces import TraceError, validate
from traces.format import REQUIRED_BY_OP
from traces.schema import COLUMN_NAMES, COLUMNS, OP_TYPE, OPS

REQUIRED = [name for name, _, nullable in COLUMNS if not nullable]
# A wrong type for every column: what a foreign writer might plausibly produce instead.
WRONG_TYPES = {
    "ts_ns": [pa.int32(), pa.uint64(), pa.float64(), pa.timestamp("ns")],
    "tid": [pa.int64(), pa.uint32(), pa.utf8()],
    "op": [pa.int8(), pa.dictionary(pa.int8(), pa.int32()), pa.binary()],
    "addr": [pa.int64(), pa.uint32(), pa.float64()],
    "length": [pa.int64(), pa.utf8()],
    "new_addr": [pa.int64()],
    "new_length": [pa.int64()],
    "hint": [pa.int64()],
    "prot": [pa.int64(), pa.uint32()],
    "flags": [pa.int64(), pa.uint32()],
    "fd": [pa.int64()],
    "offset": [pa.uint64(), pa.int32()],
    "advice": [pa.int8()],
    "errno": [pa.int64(), pa.uint16()],
    "duration_ns": [pa.float64(), pa.uint64()],
}
# Values outside the ranges format v1 allows: (column, bad value).
OUT_OF_RANGE = [("errno", -1), ("errno", 4096), ("fd", -2), ("duration_ns", -1), ("prot", -1),
                ("advice", -1), ("offset", -1), ("tid", -1)]
ROW_DEFECTS = ["unknown_op", "negative_ts", "backwards_ts", "null_required", "op_field_missing",
               "out_of_range"]


def columns_of(table: pa.Table) -> dict[str, list]:
    table = validate(table)
    return {name: table.column(name).to_pylist() for name in COLUMN_NAMES}


def rebuild(columns: dict[str, list]) -> pa.Table:
    arrays = {}
    for name in COLUMN_NAMES:
        typ = pa.utf8() if name == "op" else COLUMN_TYPE[name]
        arrays[name] = pa.array(columns[name], typ)
    return pa.table(arrays)


def eligible_rows(columns: dict[str, list], kind: str) -> list[int]:
    """Rows where ``kind`` can be injected as the only problem of that row."""
    rows = range(len(columns["ts_ns"]))
    if kind == "backwards_ts":
        last_ts: dict[int, int] = {}
        eligible = []
        for row in rows:
            tid = columns["tid"][row]
            if (last_ts.get(tid) or 0) >= 1:  # None: a null injected earlier
                eligible.append(row)
            last_ts[tid] = columns["ts_ns"][row]
        return eligible
    if kind == "op_field_missing":
        return [row for row in rows if columns["op"][row] in REQUIRED_BY_OP]
    return list(rows)


def inject(draw, columns: dict[str, list], kind: str, row: int) -> str:
    """Break ``row`` (one of ``eligible_rows``) as ``kind`` says; return the column to be named."""
    if kind == "unknown_op":
        columns["op"][row] = draw(st.text(max_size=10).filter(lambda s: s not in OPS))
        return "op"
    if kind == "negative_ts":
        columns["ts_ns"][row] = draw(st.integers(-(1 << 63), -1))
        return "ts_ns"
    if kind == "backwards_ts":
        tid = columns["tid"][row]
        previous = max(r for r in range(row) if columns["tid"][r] == tid)
        columns["ts_ns"][row] = draw(st.integers(0, columns["ts_ns"][previous] - 1))
        return "ts_ns"
    if kind == "null_required":
        column = draw(st.sampled_from(REQUIRED))
        columns[column][row] = None
        return column
    if kind == "op_field_missing":
        column = draw(st.sampled_from(REQUIRED_BY_OP[columns["op"][row]]))
        columns[column][row] = None
        return column
    if kind == "out_of_range":
        column, value = draw(st.sampled_from(OUT_OF_RANGE))
        columns[column][row] = value
        return column
    raise AssertionError(kind)


def first_error(table: pa.Table) -> str:
    with pytest.raises(TraceError) as caught:
        validate(table)
    message = str(caught.value)
    assert "\n" not in message
    return message


@given(valid_tables())
def test_valid_tables_pass_and_come_back_canonical(table):
    checked = validate(table)
    assert checked.column("op").type == OP_TYPE
    assert checked.column("op").to_pylist() == table.column("op").to_pylist()
    assert checked.schema.names == table.schema.names
    for name in checked.schema.names:
        if name != "op":
            assert checked.column(name).equals(table.column(name))


def test_timestamps_may_go_backwards_across_threads():
    rows = [mmap(0x10000, 4096, ts_ns=5000, tid=1), munmap(0x10000, 4096, ts_ns=10, tid=2),
            munmap(0x10000, 4096, ts_ns=5000, tid=1), munmap(0x20000, 4096, ts_ns=10, tid=2)]
    assert validate(table_from_rows(rows)).num_rows == 4


def test_the_strategy_does_produce_clocks_going_backwards_across_threads():
    """So the property tests here also cover interleaved threads that each have their own clock."""
    seen = []

    @settings(max_examples=50, derandomize=True, database=None)
    @given(valid_rows(min_rows=2))
    def collect(columns):
        pairs = list(zip(columns["tid"], columns["ts_ns"]))
        if any(t1 != t2 and ts2 < ts1 for (t1, ts1), (t2, ts2) in zip(pairs, pairs[1:])):
            assert validate(rebuild(columns)).num_rows == len(pairs)
            seen.append(columns)

    collect()
    assert seen


def test_equal_timestamps_within_a_thread_are_fine():
    rows = [mmap(0x10000, 4096, ts_ns=7), munmap(0x10000, 4096, ts_ns=7)]
    assert validate(table_from_rows(rows)).num_rows == 2


@pytest.mark.parametrize("column", COLUMN_NAMES)
@settings(max_examples=10)
@given(table=valid_tables())
def test_missing_column_is_named(table, column):
    message = first_error(table.drop_columns([column]))
    assert "missing column" in message and column in message


@pytest.mark.parametrize("column", COLUMN_NAMES)
@settings(max_examples=10)
@given(table=valid_tables(), data=st.data())
def test_wrong_type_is_named(table, data, column):
    wrong = data.draw(st.sampled_from(WRONG_TYPES[column]))
    if pa.types.is_dictionary(wrong):
        replacement = pa.DictionaryArray.from_arrays(pa.array([0] * table.num_rows, pa.int8()),
                                                     pa.array([1], pa.int32()))
    elif pa.types.is_string(wrong) or pa.types.is_binary(wrong):
        replacement = pa.array(["0"] * table.num_rows, wrong)
    else:
        replacement = pa.array([0] * table.num_rows, pa.int64()).cast(wrong)
    index = table.schema.get_field_index(column)
    message = first_error(table.set_column(index, column, replacement))
    assert f"column {column}: type {wrong}" in message


@pytest.mark.parametrize("kind", ROW_DEFECTS)
@settings(max_examples=40)
@given(table=valid_tables(min_rows=1), data=st.data())
def test_each_row_defect_names_its_row_and_column(table, data, kind):
    columns = columns_of(table)
    eligible = eligible_rows(columns, kind)
    assume(eligible)
    row = data.draw(st.sampled_from(eligible))
    column = inject(data.draw, columns, kind, row)
    message = first_error(rebuild(columns))
    assert message.startswith(f"row {row}, column {column}: "), message


@settings(max_examples=200)
@given(valid_tables(min_rows=2), st.data())
def test_the_first_bad_row_is_reported_whatever_the_kinds(table, data):
    """Two defects: the earlier row wins even when its kind is checked later than the other's."""
    columns = columns_of(table)
    later_kind = data.draw(st.sampled_from(ROW_DEFECTS))
    first_kind = data.draw(st.sampled_from(ROW_DEFECTS))
    later_rows = [row for row in eligible_rows(columns, later_kind) if row > 0]
    assume(later_rows)
    later_row = data.draw(st.sampled_from(later_rows))
    inject(data.draw, columns, later_kind, later_row)
    first_rows = [row for row in eligible_rows(columns, first_kind) if row < later_row]
    assume(first_rows)
    first_row = data.draw(st.sampled_from(first_rows))
    column = inject(data.draw, columns, first_kind, first_row)
    message = first_error(rebuild(columns))
    assert message.startswith(f"row {first_row}, column {column}: "), message


def test_messages_say_what_is_wrong():
    rows = [mmap(0x10000, 4096), munmap(0x10000, 4096)]
    columns = columns_of(table_from_rows(rows))
    columns["op"][1] = "munmap2"
    assert first_error(rebuild(columns)) == (
        "row 1, column op: unknown op 'munmap2' (expected one of mmap, munmap, mremap, madvise, "
        "mprotect, brk, malloc, free, calloc, realloc, posix_memalign, aligned_alloc, memalign, "
        "valloc, pvalloc)")
    columns = columns_of(table_from_rows(rows))
    columns["ts_ns"][1] = -3
    assert first_error(rebuild(columns)) == "row 1, column ts_ns: negative timestamp"
    columns = columns_of(table_from_rows(rows))
    columns["ts_ns"] = [10, 9]
    assert first_error(rebuild(columns)) == "row 1, column ts_ns: timestamp goes backwards for tid 1"
    columns = columns_of(table_from_rows(rows))
    columns["prot"][0] = None
    assert first_error(rebuild(columns)) == "row 0, column prot: mmap row without prot"


def test_a_duplicated_column_is_an_error_not_a_crash():
    table = table_from_rows([mmap(0x10000, 4096)])
    message = first_error(table.append_column("ts_ns", table.column("ts_ns")))
    assert "ts_ns" in message


def test_an_op_dictionary_holding_a_null_is_a_missing_value():
    table = table_from_rows([mmap(0x10000, 4096), munmap(0x10000, 4096)])
    op = pa.DictionaryArray.from_arrays(pa.array([0, 2], pa.int8()), pa.array(["mmap", "munmap", None]))
    message = first_error(table.set_column(table.schema.get_field_index("op"), "op", op))
    assert message.startswith("row 1, column op: ")
