"""write_trace/read_trace: lossless round trips, a plain-Arrow file, atomic replacement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pytest
from hypothesis import given, settings

from strategies import mmap, munmap, table_from_rows, trace_metadata_dicts, valid_tables
from traces import (MmreplayError, TraceError, build_table, new_metadata, read_trace, trace_metadata,
                    write_trace)
from traces.format import METADATA_KEY, with_metadata
from traces.schema import ALLOC_OPS, FORMAT_MAJOR, FORMAT_MINOR, MM_OPS, OP_TYPE, SCHEMA

ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
# The writer stamps its own format version into the metadata it is given: the file is v2.


def writer_version(table) -> dict:
    """2.1 for a trace holding allocation calls, 2.0 (as 2.0 wrote it) for mm calls only."""
    allocations = set(table.column("op").to_pylist()) & set(ALLOC_OPS)
    return {"format_version": FORMAT_MAJOR, "format_minor": FORMAT_MINOR if allocations else 0}


def assert_same_trace(read: pa.Table, original: pa.Table) -> None:
    """Same rows, same values, same extra columns (format columns first, in schema order)."""
    extra = [name for name in original.schema.names if name not in SCHEMA.names]
    assert read.schema.names == SCHEMA.names + extra
    for field in SCHEMA:
        assert read.schema.field(field.name).type == field.type
    assert read.column("op").type == OP_TYPE
    for name in extra:
        assert read.schema.field(name).type == original.schema.field(name).type
    for name in read.schema.names:
        assert read.column(name).to_pylist() == original.column(name).to_pylist(), name


@settings(max_examples=60)
@given(valid_tables(), trace_metadata_dicts())
def test_any_valid_table_round_trips_with_its_metadata(table, metadata):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.arrow"
        write_trace(table, path, metadata)
        read = read_trace(path)
        assert sorted(os.listdir(folder)) == ["t.arrow"]
    assert_same_trace(read, table)
    assert trace_metadata(read) == {**json.loads(json.dumps(metadata)), **writer_version(table)}


@settings(max_examples=30)
@given(valid_tables())
def test_without_metadata_argument_the_tables_own_metadata_is_kept(table):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.arrow"
        write_trace(table, path)
        read = read_trace(path)
    assert trace_metadata(read) == {**trace_metadata(table), **writer_version(table)}
    assert_same_trace(read, table)


def write_in_batches(table: pa.Table, path: Path) -> Path:
    """``table`` as plain pyarrow writes it: an IPC file of 7-row batches, no compression."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=7):
            writer.write_batch(batch)
    return path


@settings(max_examples=30)
@given(valid_tables())
def test_files_from_other_arrow_writers_are_read(table):
    """A plain pyarrow IPC file (any op encoding, several batches, no compression) is a trace."""
    with tempfile.TemporaryDirectory() as folder:
        read = read_trace(write_in_batches(table, Path(folder) / "foreign.arrow"))
    for name in table.schema.names:
        assert read.column(name).to_pylist() == table.column(name).to_pylist()
    assert read.column("op").type == OP_TYPE


@settings(max_examples=30)
@given(valid_tables())
def test_a_v2_file_in_many_batches_reads_as_written(table):
    """Format v2 columns written by plain pyarrow in batches of 7 rows: times summed across
    batches (chunk by chunk, on several threads) and nulls rebuilt per batch are the table's."""
    from traces.encoding import encode
    from traces.format import validate

    stored = encode(validate(table)).replace_schema_metadata(
        {METADATA_KEY: json.dumps({"format_version": 2}).encode()})
    with tempfile.TemporaryDirectory() as folder:
        read = read_trace(write_in_batches(stored, Path(folder) / "v2.arrow"))
    for name in table.schema.names:
        assert read.column(name).to_pylist() == table.column(name).to_pylist(), name


def test_a_table_without_metadata_gets_the_standard_block(tmp_path):
    table = table_from_rows([mmap(0x10000, 4096)]).replace_schema_metadata(None)
    write_trace(table, tmp_path / "t.arrow")
    meta = trace_metadata(read_trace(tmp_path / "t.arrow"))
    assert meta["format_version"] == FORMAT_MAJOR and meta["source"] == "unknown"
    assert {"format_minor", "created", "tool_version"} <= set(meta)


def test_a_trace_without_mmreplay_metadata_is_still_a_trace(tmp_path):
    table = table_from_rows([mmap(0x10000, 4096), munmap(0x10000, 4096)]).replace_schema_metadata(None)
    feather.write_feather(table, tmp_path / "bare.arrow")
    read = read_trace(tmp_path / "bare.arrow")
    assert trace_metadata(read) == {} and read.num_rows == 2


@pytest.mark.parametrize("major", [1, 2])
def test_newer_minor_version_and_extra_columns_are_accepted(tmp_path, major):
    table = table_from_rows([mmap(0x10000, 4096)])
    table = table.append_column("page_faults", pa.array([3], pa.int64()))
    write_trace(table, tmp_path / "t.arrow")
    if major == 1:  # a v1 file: the logical columns as they are, metadata in the schema
        table = read_trace(tmp_path / "t.arrow")
    else:
        table = feather.read_table(tmp_path / "t.arrow")
    meta = new_metadata("test")
    meta.update(format_version=major, format_minor=99, a_field_from_the_future={"x": [1, 2]})
    feather.write_feather(with_metadata(table, meta), tmp_path / "future.arrow")
    read = read_trace(tmp_path / "future.arrow")
    assert read.column("page_faults").to_pylist() == [3]
    assert trace_metadata(read)["a_field_from_the_future"] == {"x": [1, 2]}


@pytest.mark.parametrize("version", [3, "3.0", 0, "1x", None])
def test_unknown_major_version_is_refused(tmp_path, version):
    table = table_from_rows([mmap(0x10000, 4096)])
    feather.write_feather(with_metadata(table, {**new_metadata("test"), "format_version": version}),
                          tmp_path / "future.arrow")
    with pytest.raises(TraceError) as caught:
        read_trace(tmp_path / "future.arrow")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'future.arrow'}: ")
    assert "format_version" in message or "format version" in message


def test_metadata_that_is_not_a_json_object_is_refused(tmp_path):
    table = table_from_rows([mmap(0x10000, 4096)])
    for raw, problem in [(b"{not json", "not valid JSON"), (b"[1, 2]", "not a JSON object"),
                         (b"\xff\xfe", "not valid JSON")]:
        feather.write_feather(table.replace_schema_metadata({METADATA_KEY: raw}), tmp_path / "m.arrow")
        with pytest.raises(TraceError, match=problem):
            read_trace(tmp_path / "m.arrow")


def test_written_file_is_zstd_compressed_arrow_ipc(tmp_path):
    rows = [mmap(0x7f0000000000 + i * (1 << 21), 1 << 21) for i in range(2000)]
    write_trace(table_from_rows(rows), tmp_path / "t.arrow")
    data = (tmp_path / "t.arrow").read_bytes()
    assert data[:6] == b"ARROW1" and data[-6:] == b"ARROW1"
    assert ZSTD_FRAME_MAGIC in data
    assert len(data) < 2000 * 8  # 15 columns x 2000 rows compress to well under a byte per cell


def readme_recipe() -> str:
    """The README's plain-pyarrow recipe for reading a v2 file (its first python code block)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("**Reading a v2 file with plain pyarrow"):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@settings(max_examples=25)
@given(valid_tables(), trace_metadata_dicts())
def test_the_readme_recipe_reads_a_v2_file_without_mmreplay(table, metadata):
    """Acceptance: plain pyarrow + numpy rebuild the logical table and metadata, exactly."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "T.arrow"
        write_trace(table, path, metadata)
        expected = read_trace(path)
        namespace: dict = {}
        exec(compile(readme_recipe(), "README.md", "exec"), namespace)
        plain, meta = namespace["read_v2"](path)
    assert plain.column_names == expected.column_names
    for name in expected.column_names:
        assert plain.column(name).to_pylist() == expected.column(name).to_pylist(), name
    assert meta == trace_metadata(expected)


def test_plain_pyarrow_opens_a_v2_file_and_sees_its_columns(tmp_path):
    """Any Arrow reader opens a trace: no mmreplay import involved, the version in the schema."""
    rows = [mmap(0x10000, 4096, duration_ns=2000), munmap(0x10000, 4096, duration_ns=1000)]
    path = tmp_path / "T.arrow"
    write_trace(table_from_rows(rows), path)
    script = textwrap.dedent(f"""
        import sys
        import pyarrow.feather as f
        print(f.read_table({str(path)!r}).schema)
        print("mmreplay imported:", any(m in sys.modules for m in ("traces", "synth", "replay")))
    """)
    out = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout
    assert "mmreplay imported: False" in out
    lines = [line.strip() for line in out.splitlines()]
    for expected in ("dt_us: int32 not null", "op: dictionary<values=string, indices=int8, "
                     "ordered=0> not null", "addr: uint64 not null", "prot: int32 not null",
                     "duration_us: int32 not null", "null_flips: uint16 not null"):
        assert expected in lines, expected
    assert """mmreplay: '{"format_minor": 0, "format_version": 2}'""" in lines


def test_allocation_calls_make_a_2_1_file_and_mm_calls_alone_stay_2_0(tmp_path):
    """A 2.0 reader reads a trace of mm calls (its op dictionary, its version) as 2.0 wrote it;
    only a trace holding allocation calls says 2.1 and lists the allocation ops."""
    rows = [mmap(0x10000, 4096), munmap(0x10000, 4096)]
    mm_only, both = tmp_path / "mm.arrow", tmp_path / "both.arrow"
    write_trace(table_from_rows(rows), mm_only)
    table = table_from_rows(rows)
    write_trace(build_table({**table.to_pydict(), "op": ["mmap", "malloc"],
                             "addr": [0x10000, 0x20010], "length": [4096, 100]}), both)
    for path, minor, dictionary in ((mm_only, 0, MM_OPS), (both, FORMAT_MINOR, MM_OPS + ALLOC_OPS)):
        stored = pa.ipc.open_file(str(path)).read_all()
        assert json.loads(stored.schema.metadata[b"mmreplay"]) == {"format_version": 2,
                                                                   "format_minor": minor}
        assert stored.column("op").chunk(0).dictionary.to_pylist() == list(dictionary)
    assert read_trace(both).column("op").to_pylist() == ["mmap", "malloc"]


# ---------------------------------------------------------------------------------------------
# Atomic replacement: a failed write leaves the old file as it was and no temporary file behind.

def _old_trace(folder: Path) -> tuple[Path, bytes]:
    path = folder / "trace.arrow"
    write_trace(table_from_rows([mmap(0x10000, 4096), munmap(0x10000, 4096)]), path)
    return path, path.read_bytes()


def test_an_invalid_table_does_not_touch_the_old_file(tmp_path):
    path, before = _old_trace(tmp_path)
    bad = table_from_rows([mmap(0x10000, 4096, ts_ns=10), munmap(0x10000, 4096, ts_ns=5)])
    with pytest.raises(TraceError, match="backwards"):
        write_trace(bad, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["trace.arrow"]


def test_a_write_cut_short_by_the_file_size_limit_keeps_the_old_file(tmp_path):
    """RLIMIT_FSIZE in a child process: the kernel refuses the write half-way (EFBIG)."""
    path, before = _old_trace(tmp_path)
    limit_bytes = 64 * 1024
    script = textwrap.dedent(f"""
        import resource, signal, sys
        import numpy as np
        from traces import build_table, write_trace, MmreplayError
        n = 200_000
        values = np.random.default_rng(1).integers(0, 2**63, n, dtype=np.uint64)
        table = build_table({{"ts_ns": np.arange(n), "tid": np.zeros(n, np.int32),
                              "op": np.ones(n, np.int8), "addr": values, "length": values,
                              "errno": np.zeros(n, np.int32)}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))
        try:
            write_trace(table, {str(path)!r})
        except MmreplayError as exc:
            print("refused:", exc)
            sys.exit(2)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout.startswith(f"refused: {path}: cannot write: File too large")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["trace.arrow"]


def test_writing_into_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(MmreplayError, match="does not exist"):
        write_trace(table_from_rows([mmap(0x10000, 4096)]), tmp_path / "nowhere" / "t.arrow")


def test_reading_a_folder_or_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(TraceError, match="is a folder"):
        read_trace(tmp_path)
    with pytest.raises(TraceError, match="no such file"):
        read_trace(tmp_path / "missing.arrow")


def test_the_bundled_trace_reads(bundled_trace):
    table = read_trace(bundled_trace)
    assert table.num_rows > 0 and trace_metadata(table)["format_version"] == FORMAT_MAJOR


ROOT = Path(__file__).resolve().parent.parent
RAW_LOGS = sorted((ROOT / "tests" / "data" / "strace").glob("bert-*.log.xz"))


@pytest.mark.skipif(not RAW_LOGS, reason="raw logs of the bundled traces are not in tests/data")
@pytest.mark.parametrize("log", RAW_LOGS, ids=[p.name for p in RAW_LOGS])
def test_a_bundled_trace_is_no_larger_than_xz_9e_of_its_raw_log(log):
    """Issue 13: each bundled trace, as the default writer writes it, is at most the size of
    `xz -9e` of the strace log it was imported from, and holds the same events as a fresh import
    of that log (every field at strace's microsecond precision)."""
    import lzma

    from traces.format import events_sha256, trace_file_bytes
    from traces.strace import import_logs

    raw = lzma.decompress(log.read_bytes())
    xz_9e = len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME))
    path = ROOT / "traces" / "data" / log.name.replace(".log.xz", ".arrow")
    bundled = read_trace(path)
    assert path.stat().st_size <= xz_9e
    assert trace_file_bytes(bundled) == path.read_bytes()  # the default writer's own output
    assert json.loads(pa.ipc.open_file(path).metadata[METADATA_KEY])["format_version"] == 2
    assert events_sha256(import_logs([log]).table) == events_sha256(bundled)
