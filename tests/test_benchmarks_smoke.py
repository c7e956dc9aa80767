"""The C reference replayer of benchmarks/engine_speed.py builds and replays an op program to the
same outcome as the engine (correctness only: the speed comparison lives in the benchmark)."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from replay.engine.compile import compile_trace
from replay.running.config import ReplayConfig
from replay.engine.engine import C_LIVE_BYTES, C_TOUCH_BYTES, EngineState
from replay.engine.model import live_pieces
from replay.measure.probes import probe_kernel_alignment, read_maps
from replay.engine.program import (ID_MAPPED, OP_MADVISE, OP_MMAP_FIXED_IN, OP_MPROTECT, OP_MREMAP,
                            OP_TOUCH)
from replay.running.session import engine_params
from tracegen import random_trace

BENCHMARK = Path(__file__).resolve().parent.parent / "benchmarks" / "engine_speed.py"
PAGE = 4096

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="no system C compiler (cc)")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("engine_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def c_replayer(bench, tmp_path_factory):
    return bench.build_c_replayer(tmp_path_factory.mktemp("c_replayer"))


def pages_of(ranges) -> set:
    return {page for start, end in ranges for page in range(int(start) // PAGE, int(end) // PAGE)}


def read_maps_text(text: str, folder: Path) -> np.ndarray:
    path = folder / "c_maps.txt"
    path.write_text(text)
    return read_maps(str(path))


def run_both(bench, binary, program, config, stop, folder):
    """C replayer and engine on ops [0, stop); the engine's state is returned unreleased."""
    params = engine_params(config, probe_kernel_alignment())
    path = bench.dump_program(program, params, folder / "program.bin")
    c_run = bench.run_c(binary, path, program, folder, stop_op=stop)
    state = EngineState(program, params)
    state.run(0, stop)
    return c_run, state


@pytest.mark.parametrize("seed", [3, 17, 2024])
@pytest.mark.parametrize("touch", ["none", "pages"])
def test_c_replayer_reaches_the_engines_live_set(bench, c_replayer, tmp_path, seed, touch):
    config = ReplayConfig(touch=touch)
    program = compile_trace(random_trace(seed, 80), config)
    codes = set(program.code.tolist())
    assert {OP_MMAP_FIXED_IN, OP_MREMAP, OP_MADVISE, OP_MPROTECT} <= codes, "the program exercises every op kind"
    stop = program.cleanup_start  # end of the trace, before the compiler's cleanup ops
    c_run, state = run_both(bench, c_replayer, program, config, stop, tmp_path)
    try:
        pieces = live_pieces(program, stop)
        expected_bytes = int(pieces[:, 2].sum()) if len(pieces) else 0
        # Same per-op outcome (errno or skip), same mappings created, same live and touched bytes.
        np.testing.assert_array_equal(c_run["err"], state.err)
        assert (c_run["err"][:stop] == 0).all(), "a consistent trace replays cleanly"
        np.testing.assert_array_equal(c_run["id_state"], state.id_state)
        assert c_run["counters"]["live_bytes"] == state.counters[C_LIVE_BYTES] == expected_bytes
        assert c_run["counters"]["touch_bytes"] == state.counters[C_TOUCH_BYTES]
        # Every call the C loop made was timed (touches are not calls).
        calls = program.code[:stop] != OP_TOUCH
        assert (c_run["latency"][:stop][calls] > 0).all()
        # The C process's own /proc/self/maps: every live piece is mapped there, and nothing is
        # left of what the replay released.
        c_maps = read_maps_text(c_run["maps"], tmp_path)
        c_pages = pages_of(c_maps)
        base = c_run["base"]
        live = pages_of([(base[m] + off, base[m] + off + ln) for m, off, ln in pieces.tolist()])
        assert live <= c_pages
        created = np.flatnonzero(c_run["id_state"] & ID_MAPPED)
        ever = pages_of([(base[m], base[m] + program.id_length[m]) for m in created.tolist()])
        assert not (ever - live) & c_pages
    finally:
        state.release(pieces)


def test_c_replayer_runs_a_benchmark_trace_to_the_end(bench, c_replayer, tmp_path):
    config = ReplayConfig(touch="pages")
    program = compile_trace(bench.syscall_bound_trace(400), config)
    params = engine_params(config, probe_kernel_alignment())
    path = bench.dump_program(program, params, tmp_path / "program.bin")
    c_run = bench.run_c(c_replayer, path, program, tmp_path)
    assert c_run["stdout"].startswith(f"events={program.events} ops={program.ops} ")
    assert c_run["events_per_s"] > 0
    assert c_run["counters"]["live_bytes"] == 0
    assert c_run["counters"]["touch_bytes"] == 200 * 64 * 1024
    assert (c_run["err"] == 0).all()
