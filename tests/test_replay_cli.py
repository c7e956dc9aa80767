"""`mmreplay replay` end to end: the main job, the result JSON contract, Ctrl-C and SIGTERM."""

from __future__ import annotations

import json
import signal

import numpy as np
from click.testing import CliRunner

from replay.cli import cli
from replay.engine.compile import compile_trace
from replay.running.config import ReplayConfig
from replay.measure.probes import probe_kernel_alignment, read_maps
from replay.engine.program import ID_MAPPED
from replay.running.session import Interrupt, run_program
from processes import interrupt_replaying, mmreplay
from test_engine import covered_bytes
from traces import write_trace
from tracegen import buffers_trace

RUN_KEYS = {"wall_s", "engine_s", "events_per_s", "ops", "minflt", "majflt", "vmstat_system_wide",
            "peak_vmas", "peak_live_bytes", "peak_rss_bytes", "peak_anon_huge_bytes",
            "end_anon_huge_bytes", "large_mappings", "pmd_aligned_large_mappings", "holes",
            "hole_bytes", "thp_eligible_bytes", "touch_gbps", "access", "skipped", "interrupted"}


def test_main_job_replays_the_bundled_trace(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["replay", "-o", str(out), "--repeat", "2"])
    assert result.exit_code == 0, result.output
    assert "events/s" in result.output and "peak VMAs" in result.output
    document = json.loads(out.read_text())
    assert document["mmreplay_result"] == 1
    assert set(document["trace"]) >= {"path", "sha256", "events", "source"}
    assert set(document["config"]) >= {"policy", "thp", "touch", "access", "files", "repeat"}
    assert document["host"]["kernel"] and "thp" in document["host"]
    assert document["command"] == f"mmreplay replay -o {out} --repeat 2"
    assert len(document["runs"]) == 2
    for run in document["runs"]:
        assert RUN_KEYS <= set(run)
        assert set(run["access"]) >= {"pattern", "gbps", "ns_per_read"}
        for stats in run["ops"].values():
            assert set(stats) == {"count", "failed", "p50_ns", "p99_ns"}
        assert run["interrupted"] is False
    assert {"median", "min", "max", "stdev"} <= set(document["summary"]["events_per_s"])


def test_bad_options_exit_2_with_one_line(tmp_path):
    runner = CliRunner()
    trace = write_trace(buffers_trace(2, 1 << 20), tmp_path / "t.arrow")
    for args in (["replay", str(trace), "--access", "zigzag:3"],
                 ["replay", str(trace), "--max-live", "1M"],
                 ["replay", str(tmp_path / "missing.arrow")],
                 ["replay", str(trace), "-o", str(tmp_path / "no" / "such" / "dir.json")],
                 ["replay", str(trace), "--threads", "recorded", "--access", "lockstep:1"]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("Error:") and result.output.count("\n") == 1, result.output


def test_interrupt_releases_exactly_the_replays_memory():
    table = buffers_trace(200, 1 << 20)
    program = compile_trace(table, ReplayConfig(touch="pages"))
    interrupt = Interrupt()
    seen = []

    def progress(done):
        seen.append(done)
        if len(seen) == 3:
            interrupt.request("SIGINT")

    state_box = {}
    run = run_program(program, ReplayConfig(touch="pages"), probe_kernel_alignment(), interrupt,
                      on_progress=progress, on_released=lambda state: state_box.update(state=state))
    state = state_box["state"]
    assert run["interrupted"] and run["interrupt_reason"] == "SIGINT"
    assert 0 < run["events"] < program.events
    assert run["release_failures"] == 0
    mapped = np.flatnonzero(state.id_state & ID_MAPPED)
    ranges = np.stack([state.base[mapped], state.base[mapped] + program.id_length[mapped]], axis=1)
    assert covered_bytes(ranges, read_maps()) == 0


def test_sigint_and_sigterm_write_a_partial_result(tmp_path):
    trace = write_trace(buffers_trace(30000, 1 << 20, alive_together=False), tmp_path / "long.arrow")
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        out = tmp_path / f"partial-{code}.json"
        # The signal goes once the bar shows the replay under way (not after some seconds);
        # no warm-up run first (one whole run of the long trace before the bar moves).
        child = mmreplay("replay", trace, "--touch", "full", "--warmup", "0", "-o", out,
                         "--progress")
        stdout = interrupt_replaying(child, sig)
        assert child.returncode == code
        run = json.loads(out.read_text())["runs"][-1]
        assert run["interrupted"] is True and run["interrupt_reason"] == sig.name
        assert 0 < run["events"] < 60000
        assert run["release_failures"] == 0
        assert b"INTERRUPTED" in stdout


def test_perf_faults_counts_the_replays_page_faults(tmp_path):
    trace = write_trace(buffers_trace(16, 1 << 20), tmp_path / "t.arrow")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["replay", str(trace), "--perf-faults", "-o", str(out)])
    assert result.exit_code == 0, result.output
    run = json.loads(out.read_text())["runs"][0]
    # 16 MiB touched one byte per page: at least 4096 faults, seen by perf and by getrusage.
    assert run["perf"]["page_faults"] >= 4096 and run["minflt"] >= 4096
    plain = tmp_path / "plain.json"
    CliRunner().invoke(cli, ["replay", str(trace), "-o", str(plain)])
    assert "page_faults" not in json.loads(plain.read_text())["runs"][0]["perf"]
