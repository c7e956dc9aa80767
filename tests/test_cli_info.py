"""`mmreplay info` through the real CLI: figures, --json keys, missing files (damaged and hostile
files: the bad-input corpus, test_bad_corpus.py)."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.feather as feather

from strategies import KIB, MIB, brk, madvise, mmap, mprotect, mremap, munmap, table_from_rows
from traces import new_metadata, read_trace
from traces.format import with_metadata
from traces.schema import MM_OPS
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
    # The path wraps at 72 columns like every value (how long it is depends on the temporary
    # folder: pytest-xdist's workers add a folder of their own)
    label = "trace        "
    assert lines[0].startswith(label)
    wrapped = [lines[0]]
    for line in lines[1:]:
        if not line.startswith(" " * len(label)):
            break
        wrapped.append(line)
    assert "".join(line[len(label):] for line in wrapped) == str(path)
    for expected in [
        "command      prog --arg",
        "events       9 (mmap 3, munmap 2, mremap 1, madvise 1, mprotect 1, brk",
        "             1)",  # 72 columns, ready for a mail
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
    assert max(len(line) for line in lines) <= 72
    assert result.stderr == ""


def test_info_json_has_the_stable_keys_and_the_library_figures(run_cli, trace_file):
    path = trace_file(ROWS)
    result = run_cli("info", path, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert STABLE_KEYS <= set(document)
    assert list(document["ops"]) == list(MM_OPS)
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
# Bad files: one line naming the file and the problem, exit status 2, no traceback. Damaged,
# foreign and hostile files (truncated, random bytes, Parquet, CSV, empty, an IPC stream, another
# schema, wrong types, unknown ops, bad values, version 2, ...) are the bad-input corpus:
# tests/data/bad/make_corpus.py, run through info, replay and import by test_bad_corpus.py.

def test_missing_file_and_folder(run_cli, tmp_path):
    assert_one_line_error(run_cli("info", tmp_path / "nope.arrow"), tmp_path / "nope.arrow",
                          "no such file")
    assert_one_line_error(run_cli("info", tmp_path), tmp_path)
