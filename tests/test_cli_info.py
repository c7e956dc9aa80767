"""`mmreplay info` through the real CLI: figures, --json keys, and every kind of bad file."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from strategies import KIB, MIB, brk, madvise, mmap, mprotect, mremap, munmap, table_from_rows
from traces import new_metadata, read_trace
from traces.format import with_metadata
from traces.schema import OPS
from traces.summary import SIZE_BUCKETS, summarize

A, C, F = 0x7F00_0000_0000, 0x7F02_0000_0000, 0x7F05_0000_0000
STABLE_KEYS = {"events", "ops", "failed", "threads", "duration_ns", "peak_live_bytes",
               "peak_live_event", "anon_mmaps", "file_mmaps", "pmd_multiple_mmaps",
               "pmd_unaligned_large_mmaps", "size_histogram", "partial_munmaps", "metadata"}
ROWS = [
    mmap(A, 1 * MIB, tid=10, ts_ns=1000),
    mmap(F, 64 * KIB, anon=False, tid=10, ts_ns=2000),
    mmap(0, 8 * MIB, errno=12, tid=11, ts_ns=1500),
    munmap(F, 64 * KIB, tid=11, ts_ns=3000),
    madvise(A, 1 * MIB, 14, tid=12, ts_ns=500),
    mprotect(A, 4 * KIB, 0, tid=10, ts_ns=9000),
    brk(0, 0x5555_5555_9000, tid=12, ts_ns=2500),
    munmap(0x1000, 4 * KIB, errno=22, tid=12, ts_ns=7500),
    mremap(A, 1 * MIB, C, 2 * MIB, tid=11, ts_ns=4000),
]


def assert_one_line_error(result, path, *fragments) -> str:
    """Exit status 2, nothing on stdout, one stderr line naming the file, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ") and str(path) in lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Good traces.

def test_info_text(run_cli, trace_file):
    path = trace_file(ROWS, metadata=new_metadata("test", command=["prog", "--arg"]))
    result = run_cli("info", path)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"trace        {path}"
    for expected in [
        "command      prog --arg",
        "events       9 (mmap 3, munmap 2, mremap 1, madvise 1, mprotect 1, brk 1)",
        "failed calls 2 (mmap 1, munmap 1)",
        "threads      3",
        "duration     8.5 us",
        "mmaps        1 anonymous, 1 file-backed (successful)",
        "peak live    2.00 MiB anonymous, first at event 8",
        "2 MiB        0 anonymous mmaps are exact multiples of 2 MiB",
        "partial      0 munmaps left part of a mapping alive",
        "  512K-1.5M                     1       1.00 MiB",
    ]:
        assert expected in lines
    assert max(len(line) for line in lines) <= 80
    assert result.stderr == ""


def test_info_json_has_the_stable_keys_and_the_library_figures(run_cli, trace_file):
    path = trace_file(ROWS)
    result = run_cli("info", path, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert STABLE_KEYS <= set(document)
    assert list(document["ops"]) == list(OPS)
    assert list(document["size_histogram"]) == [label for label, _ in SIZE_BUCKETS]
    assert all(set(cell) == {"count", "bytes"} for cell in document["size_histogram"].values())
    assert document == json.loads(json.dumps(summarize(read_trace(path))))
    assert (document["events"], document["failed"], document["threads"]) == (9, 2, 3)
    assert (document["peak_live_bytes"], document["peak_live_event"]) == (2 * MIB, 8)
    assert document["duration_ns"] == 8500
    assert document["metadata"]["source"] == "test"


def test_info_on_the_bundled_trace(run_cli, bundled_trace):
    result = run_cli("info", bundled_trace, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["pmd_unaligned_large_mmaps"] == 64


def test_newer_minor_version_and_extra_columns_are_accepted(run_cli, tmp_path):
    table = table_from_rows(ROWS).append_column("rss_bytes", pa.array(range(len(ROWS)), pa.int64()))
    meta = {**new_metadata("other-tool"), "format_minor": 7, "unknown_field": {"a": 1}}
    feather.write_feather(with_metadata(table, meta), tmp_path / "newer.arrow")
    result = run_cli("info", tmp_path / "newer.arrow", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metadata"]["format_minor"] == 7


def test_help_lists_info_and_shows_examples(run_cli):
    top = run_cli("--help")
    assert top.exit_code == 0 and "info" in top.stdout
    info = run_cli("info", "--help")
    assert info.exit_code == 0
    assert "Examples:" in info.stdout and "--json" in info.stdout


def test_png_either_works_or_says_why_on_one_line(run_cli, trace_file, tmp_path):
    path = trace_file(ROWS)
    result = run_cli("info", path, "--png", tmp_path / "sizes.png")
    if result.exit_code == 0:
        assert (tmp_path / "sizes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert_one_line_error(result, tmp_path / "sizes.png", "--png")
        assert not (tmp_path / "sizes.png").exists()


# ---------------------------------------------------------------------------------------------
# Bad files: one line naming the file and the problem, exit status 2, no traceback.

def _good_bytes(tmp_path: Path) -> bytes:
    from traces import write_trace
    write_trace(table_from_rows(ROWS), tmp_path / "good.arrow")
    return (tmp_path / "good.arrow").read_bytes()


def _columns() -> dict[str, list]:
    table = table_from_rows(ROWS)
    return {name: table.column(name).to_pylist() for name in table.schema.names}


def _plain_arrow(path: Path, columns: dict[str, list], types: dict) -> None:
    """Write columns with plain pyarrow (no validation), as a foreign or hostile tool would."""
    feather.write_feather(pa.table({name: pa.array(values, types.get(name))
                                    for name, values in columns.items()}), path)


def _types() -> dict:
    schema = table_from_rows([]).schema
    return {field.name: field.type for field in schema if field.name != "op"}


@pytest.mark.parametrize("cut", [8, 64, "half", -64, -6, -1])
def test_truncated_file(run_cli, tmp_path, cut):
    data = _good_bytes(tmp_path)
    end = len(data) // 2 if cut == "half" else cut
    path = tmp_path / "cut.arrow"
    path.write_bytes(data[:end])
    assert_one_line_error(run_cli("info", path), path, "damaged or truncated")


@pytest.mark.parametrize("with_magic", [False, True])
def test_random_bytes(run_cli, tmp_path, with_magic):
    noise = random.Random(with_magic).randbytes(4096)
    path = tmp_path / "noise.arrow"
    path.write_bytes((b"ARROW1\x00\x00" if with_magic else b"") + noise)
    assert_one_line_error(run_cli("info", path), path, "not an mmreplay trace" if not with_magic
                          else "damaged or truncated")


def test_parquet_file(run_cli, tmp_path):
    path = tmp_path / "trace.parquet"
    pq.write_table(table_from_rows(ROWS), path)
    assert_one_line_error(run_cli("info", path), path, "Parquet")


def test_csv_file(run_cli, tmp_path):
    path = tmp_path / "trace.csv"
    table = table_from_rows(ROWS)
    pacsv.write_csv(table.set_column(2, "op", table.column("op").cast(pa.utf8())), path)
    assert_one_line_error(run_cli("info", path), path, "text file")


def test_empty_file(run_cli, tmp_path):
    path = tmp_path / "empty.arrow"
    path.write_bytes(b"")
    assert_one_line_error(run_cli("info", path), path, "empty file")


def test_arrow_stream_instead_of_file(run_cli, tmp_path):
    path = tmp_path / "stream.arrow"
    table = table_from_rows(ROWS)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    assert_one_line_error(run_cli("info", path), path, "IPC stream")


def test_wrong_schema(run_cli, tmp_path):
    path = tmp_path / "other.arrow"
    feather.write_feather(pa.table({"name": ["a", "b"], "value": [1.5, 2.5]}), path)
    assert_one_line_error(run_cli("info", path), path, "missing column(s) ts_ns, tid, op")


def test_wrong_type(run_cli, tmp_path):
    path = tmp_path / "float-ts.arrow"
    types = _types()
    types["ts_ns"] = pa.float64()
    _plain_arrow(path, _columns(), types)
    assert_one_line_error(run_cli("info", path), path, "column ts_ns: type double, expected int64")


def test_unknown_op(run_cli, tmp_path):
    columns = _columns()
    columns["op"][4] = "madvice"
    path = tmp_path / "op.arrow"
    _plain_arrow(path, columns, _types())
    assert_one_line_error(run_cli("info", path), path, "row 4, column op: unknown op 'madvice'")


def test_negative_timestamp(run_cli, tmp_path):
    columns = _columns()
    columns["ts_ns"][3] = -1
    path = tmp_path / "negative.arrow"
    _plain_arrow(path, columns, _types())
    assert_one_line_error(run_cli("info", path), path, "row 3, column ts_ns: negative timestamp")


def test_unknown_major_version(run_cli, tmp_path):
    path = tmp_path / "v2.arrow"
    feather.write_feather(with_metadata(table_from_rows(ROWS),
                                        {**new_metadata("test"), "format_version": 2}), path)
    assert_one_line_error(run_cli("info", path), path, "format version 2 is not supported")


def test_missing_file_and_folder(run_cli, tmp_path):
    assert_one_line_error(run_cli("info", tmp_path / "nope.arrow"), tmp_path / "nope.arrow",
                          "no such file")
    assert_one_line_error(run_cli("info", tmp_path), tmp_path)


def _mmreplay_command() -> list[str]:
    script = Path(sys.executable).with_name("mmreplay")
    if script.exists():
        return [str(script)]
    found = shutil.which("mmreplay")
    return [found] if found else [sys.executable, "-m", "replay.cli"]


@pytest.mark.parametrize("kind", ["truncated", "parquet"])
def test_bad_file_through_the_installed_command(tmp_path, kind):
    """The real process: exit status 2 and one stderr line naming the file, no traceback."""
    path = tmp_path / f"{kind}.arrow"
    if kind == "truncated":
        path.write_bytes(_good_bytes(tmp_path)[:-100])
    else:
        pq.write_table(table_from_rows(ROWS), path)
    done = subprocess.run([*_mmreplay_command(), "info", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and str(path) in done.stderr
    assert "Traceback" not in done.stderr
