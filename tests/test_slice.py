"""mmreplay slice: a shorter valid trace whose calls never refer to memory it did not map.

The checks walk the parent and the slice independently (a LiveSet each): every call the slice
keeps that acted on memory live in the parent acts on memory live in the slice, and the replay
compiler, run on the slice, finds no range it never mapped that the parent did not have.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from replay.engine.compile import compile_trace
from replay.running.config import ReplayConfig
from traces import read_trace, trace_metadata
from traces.format import events_sha256
from traces.liveset import LiveSet
from traces.slice import page_end

DATA = Path(__file__).resolve().parent.parent / "traces" / "data"
TORCH = DATA / "bert-torch.arrow"
ORT = DATA / "bert-onnxruntime.arrow"


def coverage(table) -> list[bool | None]:
    """Per row: whether the memory it acts on (munmap, mprotect, madvise, mremap's old range)
    was wholly live just before it; None for rows that act on no existing memory."""
    live = LiveSet()
    out = []
    for row in table.to_pylist():
        op, addr, length = row["op"], row["addr"], row["length"]
        end = page_end(addr, length)
        ok = row["errno"] == 0 and end > addr
        if op in ("munmap", "mprotect", "madvise", "mremap") and ok:
            out.append(live.covered_bytes(addr, end) == end - addr)
        else:
            out.append(None)
        if not ok or end >= 1 << 64:
            continue
        if op == "mmap":
            live.map(addr, end, 0, row["prot"], True)
        elif op == "munmap":
            live.unmap(addr, end)
        elif op == "mremap":
            live.unmap(addr, end)
            new_end = page_end(row["new_addr"], row["new_length"])
            if new_end > row["new_addr"]:
                live.map(row["new_addr"], new_end, 0, 0, True)
    return out


def slice_of(run_cli, tmp_path, trace, *args, name="s.arrow"):
    out = tmp_path / name
    result = run_cli("slice", trace, *args, "-o", out)
    assert result.exit_code == 0, (result.output, result.exception)
    table = read_trace(out)
    return table, trace_metadata(table)["slice"], result


def kept_rows(parent, record) -> list[int]:
    first, stop = record["rows"]
    return list(range(first, stop))


def assert_calls_see_their_memory(parent, sliced, parent_rows: list[int]):
    """Every kept call that found its memory live in the parent finds it live in the slice."""
    synthetic = set(trace_metadata(sliced)["slice"]["synthetic_rows"])
    slice_rows = [i for i in range(sliced.num_rows) if i not in synthetic]
    assert len(slice_rows) == len(parent_rows)
    before, after = coverage(parent), coverage(sliced)
    checked = 0
    for p, s in zip(parent_rows, slice_rows):
        if before[p]:
            assert after[s], (p, s, parent.slice(p, 1).to_pylist())
            checked += 1
    return checked


def test_an_event_range_recreates_what_was_alive_and_keeps_every_call(run_cli, tmp_path):
    parent = read_trace(TORCH)
    sliced, record, result = slice_of(run_cli, tmp_path, TORCH, "--events", "5000:9000")
    first, stop = record["rows"]
    assert (first, stop) == (5000, 9000) and record["kept_events"] == 4000
    synthetic = record["synthetic_rows"]
    assert synthetic == list(range(len(synthetic))) and synthetic  # all at the start
    # The kept rows are the parent's, times rebased.
    kept = sliced.slice(len(synthetic))
    original = parent.slice(5000, 4000)
    for name in parent.column_names:
        if name != "ts_ns":
            assert kept.column(name).to_pylist() == original.column(name).to_pylist(), name
    ts = original.column("ts_ns").to_numpy()
    assert kept.column("ts_ns").to_numpy().tolist() == (ts - ts.min()).tolist()
    # The memory alive at the cut is alive, with the same bytes, once the synthetic rows ran.
    walk = LiveSet()
    for row in parent.slice(0, 5000).to_pylist():
        _apply(walk, row)
    head = LiveSet()
    for row in sliced.slice(0, len(synthetic)).to_pylist():
        assert row["op"] in ("mmap", "madvise", "brk")
        _apply(head, row)
    assert head.live_bytes == walk.live_bytes and len(head) == len(walk)
    assert [(p.start, p.end, p.prot) for p in head.pieces()] == \
        [(p.start, p.end, p.prot) for p in walk.pieces()]
    assert assert_calls_see_their_memory(parent, sliced, list(range(5000, 9000))) > 1000
    # The compiler agrees: no munmap/mremap/mprotect/madvise of memory the slice never mapped.
    skipped = compile_trace(sliced, ReplayConfig(touch="none")).skipped
    assert not {k: v for k, v in skipped.items() if k.endswith("_unknown_range")}, skipped
    assert f"{sliced.num_rows} events, 4000 kept of 16560" in result.stderr + result.stdout


def _apply(live: LiveSet, row: dict) -> None:
    if row["errno"]:
        return
    end = page_end(row["addr"], row["length"])
    if row["op"] == "mmap" and end > row["addr"]:
        live.map(row["addr"], end, 0, row["prot"], True)
    elif row["op"] == "munmap" and end > row["addr"]:
        live.unmap(row["addr"], end)
    elif row["op"] == "mprotect" and end > row["addr"]:
        live.protect(row["addr"], end, row["prot"])
    elif row["op"] == "mremap":
        old = live.overlapping(row["addr"], end)
        live.unmap(row["addr"], end)
        new_end = page_end(row["new_addr"], row["new_length"])
        live.map(row["new_addr"], new_end, 0, old[0].prot if old else 0, True)


def test_info_says_where_a_slice_came_from(run_cli, tmp_path):
    sliced, record, _ = slice_of(run_cli, tmp_path, ORT, "--events", "1000:2000")
    assert record["parent"] == "bert-onnxruntime.arrow"
    assert record["parent_sha256"] == __import__("hashlib").sha256(ORT.read_bytes()).hexdigest()
    assert record["events_sha256"] == events_sha256(read_trace(ORT))
    assert record["asked"] == {"events": [1000, 2000]}
    text = run_cli("info", tmp_path / "s.arrow").stdout
    assert "slice of     bert-onnxruntime.arrow (sha256 " in text
    assert "events 1000:2000: 1000 events kept" in " ".join(text.split())
    # A slice of a slice keeps the first record.
    again, record2, _ = slice_of(run_cli, tmp_path, tmp_path / "s.arrow", "--events", ":10",
                                 name="t.arrow")
    assert record2["parent"] == "s.arrow" and record2["parent_slice"] == record


def test_threads_keep_their_rows_and_get_the_memory_others_mapped(run_cli, tmp_path):
    parent = read_trace(ORT)
    tids = parent.column("tid").to_numpy()
    workers = [4280, 4302]
    sliced, record, _ = slice_of(run_cli, tmp_path, ORT, "--threads", "4280,4302")
    assert record["asked"] == {"threads": workers} and record["rows"] is None
    parent_rows = np.flatnonzero(np.isin(tids, workers)).tolist()
    assert record["kept_events"] == len(parent_rows)
    assert set(sliced.column("tid").to_pylist()) == set(workers)
    # The workers touch a stack the main thread mapped: re-created just before, by the worker.
    assert record["synthetic_rows"]
    assert assert_calls_see_their_memory(parent, sliced, parent_rows) >= 10
    skipped = compile_trace(sliced, ReplayConfig(touch="none")).skipped
    assert not {k: v for k, v in skipped.items() if k.endswith("_unknown_range")}, skipped


def test_a_time_range_keeps_the_rows_between(run_cli, tmp_path):
    parent = read_trace(TORCH)
    ts = parent.column("ts_ns").to_numpy()
    sliced, record, _ = slice_of(run_cli, tmp_path, TORCH, "--time", "5s:6500ms")
    first, stop = record["rows"]
    inside = np.flatnonzero((ts >= 5 * 10**9) & (ts < 6_500_000_000))
    assert (first, stop) == (inside[0], inside[-1] + 1)
    assert record["asked"] == {"time_ns": [5 * 10**9, 6_500_000_000]}
    assert assert_calls_see_their_memory(parent, sliced, list(range(first, stop))) >= 10


def test_a_slice_travels_by_mail_with_its_record(run_cli, tmp_path):
    sliced, record, _ = slice_of(run_cli, tmp_path, ORT, "--events", "-500:")
    block = run_cli("share", tmp_path / "s.arrow", "--keep", "hostname,paths,tids")
    assert block.exit_code == 0
    (tmp_path / "mail.txt").write_text("> " + block.stdout.replace("\n", "\n> "))
    document = json.loads(run_cli("info", tmp_path / "mail.txt", "--json").stdout)
    assert document["events_sha256"] == events_sha256(sliced)
    assert document["metadata"]["slice"] == record


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of --events A:B, --time A:B and --threads T,..."),
    (["--events", "1:2", "--threads", "1"], "give exactly one of"),
    (["--events", "5"], "--events '5': expected A:B"),
    (["--events", "a:b"], "--events 'a:b'"),
    (["--time", "1x:2"], "--time '1x:2': bad time '1x'"),
    (["--time", "0.5ns:"], "not a whole number of nanoseconds"),
    (["--threads", "1,x"], "--threads '1,x': expected thread ids"),
    (["--threads", "99"], "--threads: no thread 99 in the trace (its threads: 1)"),
])
def test_bad_slices_are_one_line(run_cli, tmp_path, args, message):
    result = run_cli("slice", DATA / "buffers-4632k.arrow", *args, "-o", tmp_path / "o.arrow")
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and len(result.stderr.splitlines()) == 1
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "o.arrow").exists()
