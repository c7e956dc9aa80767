"""--copies: N replays at once as separate processes (issue 18). Real processes, real faults:
each copy's figures must be its own, their sums the aggregate, and no copy may outlive the
command, whatever stops it."""

from __future__ import annotations

import json
import os
import re
import signal

import pytest
from click.testing import CliRunner

from processes import (PATIENCE_S, assert_gone, descendants, mmreplay, read_stderr_until,
                       wait_until_replaying)
from replay.cli import cli
from replay.running.copies import parse_counts
from traces import MmreplayError, write_trace
from tracegen import buffers_trace

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20


def test_counts_are_a_number_a_range_or_a_list():
    assert parse_counts("4") == [4]
    assert parse_counts("1..4") == [1, 2, 3, 4]
    assert parse_counts("8,1,2,4") == [1, 2, 4, 8]
    assert parse_counts("1..3,8") == [1, 2, 3, 8]
    for bad in ("0", "a", "2..1", "1,1", "1..2,2", "100000", "", "1.5"):
        with pytest.raises(MmreplayError):
            parse_counts(bad)


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory):
    """16 buffers of 1 MiB alive together: 4096 pages written by each copy."""
    return write_trace(buffers_trace(16, MIB), tmp_path_factory.mktemp("copies") / "t.arrow")


def test_two_copies_report_their_own_figures_and_the_aggregate_is_their_sum(small_trace, tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["replay", str(small_trace), "--copies", "2", "--repeat", "2",
                                      "--thp", "never", "-o", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    section = document["copies"]
    assert section["counts"] == [2] and section["failed"] == []
    [stage] = section["stages"]
    copies = stage["per_copy"]
    assert [c["copy"] for c in copies] == [1, 2]
    pids = {c["pid"] for c in copies}
    assert len(pids) == 2 and os.getpid() not in pids  # two processes, neither this one
    assert all(p["end"] == "exit status 0" for p in section["processes"])
    pages = 16 * MIB // PAGE
    for index, aggregate in enumerate(document["runs"]):
        runs = [c["runs"][index] for c in copies]
        assert aggregate["copies"] == aggregate["copies_finished"] == 2
        for key in ("minflt", "events", "peak_rss_bytes", "touch_bytes", "peak_vmas"):
            assert aggregate[key] == sum(run[key] for run in runs), key
        assert aggregate["events_per_s"] == pytest.approx(sum(r["events_per_s"] for r in runs))
        assert aggregate["ops"]["mmap"]["count"] == 2 * 16
        assert aggregate["engine_s"] == max(run["engine_s"] for run in runs)
        for run in runs:
            # Each copy wrote its own 4096 pages: its getrusage counts them (at least), and
            # not the other copy's too (fewer than twice as many).
            assert pages <= run["minflt"] < 2 * pages
            assert run["touch_bytes"] == 16 * MIB  # every page of its own buffers
            assert "vmstat_system_wide" not in run  # once per step, in the aggregate
        assert "thp_fault_alloc" in aggregate["vmstat_system_wide"]
    assert document["summary"]["minflt"]["n"] == 2
    assert "sum of 2 copies" in result.output and "system-wide" in result.output


def test_a_list_of_counts_prints_the_scalability_table(small_trace, tmp_path):
    out = tmp_path / "c.json"
    result = CliRunner().invoke(cli, ["compare", str(small_trace), "--copies", "1,2",
                                      "--policies", "no-align,align-ge-pmd", "--thp", "never",
                                      "--repeat", "2", "--warmup", "0", "-o", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["copies"] == [1, 2]
    for compared in document["results"]:
        stages = compared["copies"]["stages"]
        assert [s["copies"] for s in stages] == [1, 2]
        assert [len(s["per_copy"]) for s in stages] == [1, 2]
        assert compared["runs"] == stages[-1]["aggregate"]  # the table compares 2 copies
        assert all(len(s["aggregate"]) == 2 for s in stages)
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Scalability"))
    table = lines[start:]
    assert any("no-align" in line and "align-ge-pmd" in line for line in table)
    rows = [line for line in table if line.strip()[:1].isdigit()]
    assert [row.split()[0] for row in rows] == ["1", "2"]
    # per row: "copies  value +-N%  ratio  value +-N%  ratio" (a ratio has two decimals)
    ratios = [re.findall(r"\s(\d+\.\d\d|n/a)[*!]*(?=\s|$)", row) for row in rows]
    assert ratios[0] == ["1.00", "1.00"]  # the base's ratio to itself, in both columns
    assert all(len(r) == 2 and r[0] != "n/a" for r in ratios)
    assert max(len(line) for line in lines) <= 72


def test_copies_that_would_not_fit_the_budget_are_refused_before_starting(small_trace):
    # 16 MiB live per copy: 3 copies need 48 MiB; 40 MiB fits two copies only.
    result = CliRunner().invoke(cli, ["replay", str(small_trace), "--copies", "3",
                                      "--max-live", "40M"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: 3 copies keep 48.00 MiB live together")
    assert result.output.count("\n") == 1
    assert CliRunner().invoke(cli, ["replay", str(small_trace), "--copies", "2",
                                    "--max-live", "40M", "--touch", "none"]).exit_code == 0


@pytest.fixture(scope="module")
def long_trace(tmp_path_factory):
    """Runs long enough to be interrupted: 30000 mmap/munmap pairs of 1 MiB."""
    return write_trace(buffers_trace(30000, MIB, alive_together=False),
                       tmp_path_factory.mktemp("copies-long") / "long.arrow")


def _copies_of(pid: int) -> dict:
    copies = descendants(pid)
    assert len(copies) == 2, copies  # the copies, and nothing else
    return copies


def test_ctrl_c_stops_every_copy_writes_the_partial_result_and_leaves_no_process(long_trace,
                                                                                 tmp_path):
    out = tmp_path / "partial.json"
    # --warmup 0: the bar moves in the first run, not after a whole uncounted one
    child = mmreplay("replay", long_trace, "--copies", "2", "--repeat", "1000", "--touch", "full",
                     "--warmup", "0", "-o", out, "--progress")
    # The bar moves once the slowest copy has replayed a chunk: both copies are replaying.
    seen = wait_until_replaying(child)
    copies = _copies_of(child.pid)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 130, (seen + stderr).decode()
    assert b"Traceback" not in seen + stderr
    assert_gone(copies)
    document = json.loads(out.read_text())
    last = document["runs"][-1]
    assert last["interrupted"] and last["interrupt_reason"] == "SIGINT"
    assert len(document["runs"]) < 1000
    for copy in document["copies"]["stages"][0]["per_copy"]:
        run = copy["runs"][-1]
        assert run["interrupted"] and run["release_failures"] == 0
        assert 0 < run["events"] < 60000
    assert b"INTERRUPTED" in stdout


def test_a_killed_copy_is_reported_and_the_others_go_on(long_trace, tmp_path):
    out = tmp_path / "killed.json"
    child = mmreplay("replay", long_trace, "--copies", "2", "--repeat", "1000", "--warmup", "0",
                     "-o", out, "--progress")
    seen = wait_until_replaying(child)
    copies = _copies_of(child.pid)
    victim = max(copies)  # forked last: copy 2
    os.kill(victim, signal.SIGKILL)
    seen += read_stderr_until(child, b"the other copies go on")
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 130, (seen + stderr).decode()
    assert_gone(copies)
    document = json.loads(out.read_text())
    [failed] = document["copies"]["failed"]
    assert failed["pid"] == victim and failed["copy"] == 2
    assert failed["reason"] == "killed by signal SIGKILL"
    [stage] = document["copies"]["stages"]
    survivor = stage["per_copy"][0]
    assert survivor["copy"] == 1 and survivor["runs"]
    # From the kill on, the sums hold one copy; the survivor's last run is the last sum.
    last = document["runs"][-1]
    assert last["copies"] == 2 and last["copies_finished"] == 1
    assert last["minflt"] == survivor["runs"][-1]["minflt"]
    assert b"FAILED  copy 2" in stdout
