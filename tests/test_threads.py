"""Multi-threaded replay: same outcome as serial, dependencies honoured, never a deadlock."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
from processes import PATIENCE_S
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.engine.compile import compile_trace
from replay.running.config import ReplayConfig
from replay.measure.probes import probe_kernel_alignment, read_maps
from replay.running.session import run_program
from replay.engine.threads import plan_threads
from test_engine import covered_bytes
from tracegen import random_trace


def with_tids(table: pa.Table, seed: int, threads: int) -> pa.Table:
    tids = np.random.default_rng(seed).integers(100, 100 + threads, table.num_rows).astype(np.int32)
    return table.set_column(1, pa.field("tid", pa.int32(), nullable=False), pa.array(tids))


def run_bounded(program, config, plan, seconds=PATIENCE_S):
    """Run in a thread so that a deadlock fails the test instead of hanging it."""
    outcome = {}

    def on_stop(state, pieces):
        ranges = state.ranges(pieces)
        outcome["covered"] = covered_bytes(ranges, read_maps())
        outcome["expected"] = int(pieces[:, 2].sum()) if len(pieces) else 0

    def work():
        outcome["run"] = run_program(program, config, probe_kernel_alignment(), plan=plan,
                                     on_stop=on_stop)
        outcome["err"] = None

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the threaded replay did not finish: deadlock"
    return outcome


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(1, 200), threads=st.integers(1, 5),
       mode=st.sampled_from(["recorded", "2", "3"]), order=st.sampled_from(["deps", "strict"]))
def test_threaded_replay_matches_serial(seed, steps, threads, mode, order):
    table = with_tids(random_trace(seed, steps), seed, threads)
    config = ReplayConfig(threads=mode, order=order, touch="pages")
    program = compile_trace(table, config)
    plan = plan_threads(program, table, mode, order)
    outcome = run_bounded(program, config, plan)
    run = outcome["run"]
    # The live set at the end of the trace is exactly the serial one (the program's end pieces)
    # and the kernel agrees.
    assert outcome["covered"] == outcome["expected"] == int(program.end_pieces[:, 2].sum())
    # No call ran before the call that created its mapping: that would have found no mapping
    # (runtime skip) or failed.
    assert run["skipped"].get("target_mapping_failed_earlier", 0) == 0
    assert all(s["failed"] == 0 for s in run["ops"].values())
    assert run["events"] == program.events and not run["interrupted"]
    expected_threads = len(np.unique(table.column("tid"))) if mode == "recorded" else int(mode)
    assert run["os_threads"] == min(expected_threads, expected_threads)
    assert set(run["threads"]) == {str(t) for t in np.unique(table.column("tid")).tolist()}


def test_dependencies_follow_mappings_across_threads():
    # tid 1 maps, tid 2 unmaps the same mapping: the munmap must wait on the mmap.
    from traces import build_table

    table = build_table({
        "ts_ns": [0, 10, 20, 30], "tid": [1, 2, 1, 2],
        "op": ["mmap", "munmap", "mmap", "munmap"],
        "addr": [0x7F0000000000, 0x7F0000000000, 0x7E0000000000, 0x7E0000000000],
        "length": [1 << 20] * 4, "errno": [0] * 4,
        "prot": [3, None, 3, None], "flags": [0x22, None, 0x22, None], "fd": [-1, None, -1, None],
    })
    program = compile_trace(table, ReplayConfig(threads="recorded"))
    plan = plan_threads(program, table, "recorded")
    assert plan.threads == 2
    assert plan.dep_thread.tolist()[:4] == [-1, 0, -1, 0]
    assert plan.dep_pos.tolist()[:4] == [0, 0, 0, 1]
    strict = plan_threads(program, table, "recorded", "strict")
    assert strict.dep_thread.tolist()[:4] == [-1, 0, 1, 0]


def test_bundled_onnxruntime_trace_replays_one_thread_per_recorded_thread(tmp_path):
    import json

    from click.testing import CliRunner

    from replay.cli import cli
    from traces import read_trace
    from traces.bundled import bundled

    trace = bundled("bert-onnxruntime.arrow")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(cli, ["replay", str(trace), "--threads", "recorded", "-o",
                                      str(out), "--touch", "first"])
    assert result.exit_code == 0, result.output
    run = json.loads(out.read_text())["runs"][0]
    tids = {str(t) for t in np.unique(read_trace(trace).column("tid")).tolist()}
    assert set(run["threads"]) == tids and run["os_threads"] == len(tids) > 1
    busiest = max(run["threads"].values(), key=lambda t: t["ops"].get("mmap", {}).get("count", 0))
    assert busiest["ops"]["mmap"]["count"] > 100 and busiest["ops"]["mmap"]["p99_ns"] > 0
    assert all(entry["wait_s"] >= 0 for entry in run["threads"].values())
    assert run["skipped"].get("target_mapping_failed_earlier", 0) == 0
    assert run["speed_vs_recorded"] > 0
