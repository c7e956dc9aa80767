"""mmreplay fit: fitted specs are small and synthesize traces like the one they were fitted to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synth.fit import MAX_SPEC_BYTES, anon_profile, compare_traces, fit_trace, ks_distance
from synth.generate import generate
from synth.spec import Spec, read_spec, validate_spec
from traces import build_table, new_metadata, read_trace, write_trace

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "traces" / "data" / "buffers-4632k.arrow"
BERT_TRACES = sorted((ROOT / "traces" / "data").glob("bert-*.arrow"))


def assert_fit_quality(quality: dict) -> None:
    """The issue's targets for a trace synthesized from a fitted spec."""
    assert quality["ks_mmap_lengths"] <= 0.05, quality
    low, high = quality["peak_live_bytes"]
    assert abs(high - low) <= 0.10 * low, quality
    assert quality["mmaps"][0] == quality["mmaps"][1], quality
    assert quality["op_mix_max_difference"] <= 0.05, quality
    if "info_peak_live_bytes" in quality:
        low, high = quality["info_peak_live_bytes"]
        assert abs(high - low) <= 0.10 * low, quality


def fit_and_resynthesize(table, seed: int = 0) -> tuple[dict, str]:
    result = fit_trace(table, "original", seed=seed)
    assert len(result.toml.encode()) <= MAX_SPEC_BYTES
    assert read_spec_text(result.toml) == result.spec
    synthetic = generate(result.spec)
    return compare_traces(table, synthetic), result.toml


def read_spec_text(text: str) -> Spec:
    from synth.spec import tomllib

    from synth.spec import spec_from_dict
    return spec_from_dict(tomllib.loads(text))


@st.composite
def workloads(draw) -> Spec:
    count = draw(st.integers(20, 2500))
    return validate_spec(Spec(
        count=count,
        size=draw(st.sampled_from(["uniform:512K,1536K", "lognormal:300K,1.5,4K,256M",
                                   "choice:4632K,1M,64K@3,2,5", "const:128M",
                                   "quantiles:4K,8K,1M,1M,40M"])),
        malloc_overhead=draw(st.booleans()),
        live=draw(st.none() | st.integers(1, 200)),
        lifetime=draw(st.sampled_from(["fifo", "lifo", "random", "exp:3", "exp:40", "exp:400"])),
        keep_at_end=draw(st.integers(0, count // 3)),
        threads=draw(st.integers(1, 8)),
        madvise=draw(st.sampled_from(["none", "hugepage", "nohugepage:0.3",
                                      "hugepage:0.5,dontneed:1.5"])),
        guard_pages=draw(st.sampled_from([0.0, 0.05, 1.0])),
        brk_calls=draw(st.integers(0, count)),
        seed=draw(st.integers(0, 2**32))))


@given(workloads(), st.integers(0, 1000))
@settings(max_examples=30)
def test_fitted_specs_reproduce_synthetic_workloads(spec, fit_seed):
    quality, _ = fit_and_resynthesize(generate(spec), seed=fit_seed)
    assert_fit_quality(quality)
    assert quality["threads"][0] == quality["threads"][1]


def test_fit_of_the_bundled_trace():
    table = read_trace(BUNDLED)
    result = fit_trace(table, BUNDLED.name)
    assert result.spec.size == "const:4632K" and result.spec.count == 64
    assert result.spec.lifetime == "fifo" and not result.spec.malloc_overhead
    quality, _ = fit_and_resynthesize(table)
    assert_fit_quality(quality)
    assert quality["ks_mmap_lengths"] == 0 and quality["peak_live_ratio"] == 1


@pytest.mark.skipif(not BERT_TRACES, reason="no traces/data/bert-*.arrow recorded yet")
@pytest.mark.parametrize("path", BERT_TRACES, ids=[p.name for p in BERT_TRACES])
def test_fit_of_the_bundled_bert_traces(path):
    quality, toml = fit_and_resynthesize(read_trace(path))
    assert_fit_quality(quality)
    assert len(toml.encode()) <= MAX_SPEC_BYTES


def test_many_distinct_sizes_become_quantiles_within_4_kib():
    table = generate(Spec(count=20_000, size="lognormal:1M,2.0,1,1T", live=500,
                          lifetime="random", seed=11))
    result = fit_trace(table)
    assert result.spec.size.startswith("quantiles:")
    assert len(result.toml.encode()) <= MAX_SPEC_BYTES
    assert_fit_quality(result.quality)


WORKLOAD = """
import random
random.seed(1)
keep = []
for i in range(600):
    buffer = bytearray(random.randint(100 * 1024, 3 * 1024 * 1024))
    if random.random() < 0.4:
        keep.append(buffer)
    if len(keep) > 25:
        keep.pop(random.randrange(len(keep)))
"""


@pytest.fixture(scope="module")
def recorded_python_trace(tmp_path_factory) -> Path:
    """A real process's mm calls: CPython growing and freeing buffers through glibc malloc."""
    if not shutil.which("strace"):
        pytest.skip("needs strace")
    from traces.strace import import_logs

    folder = tmp_path_factory.mktemp("recorded")
    log = folder / "python.log"
    # A fixed threshold keeps glibc from moving the buffers to the heap after the first frees.
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
    subprocess.run(["strace", "-f", "-ttt", "-T", "-o", str(log), "-e",
                    "trace=mmap,munmap,mremap,madvise,mprotect,brk",
                    sys.executable, "-S", "-c", WORKLOAD], check=True, env=env)
    path = folder / "python.arrow"
    write_trace(import_logs([log]).table, path, new_metadata("strace"))
    return path


def test_fit_of_a_recorded_process(recorded_python_trace):
    table = read_trace(recorded_python_trace)
    profile = anon_profile(table)
    assert profile.count > 100 and profile.op_counts.get("brk", 0) > 0  # glibc used both
    quality, _ = fit_and_resynthesize(table)
    assert_fit_quality(quality)


def test_fit_then_synth_on_the_command_line(run_cli, recorded_python_trace, tmp_path):
    spec_path, out = tmp_path / "fitted.toml", tmp_path / "synthetic.arrow"
    result = run_cli("fit", recorded_python_trace, "-o", spec_path, "--seed", "5")
    assert result.exit_code == 0, result.output
    assert f"wrote        {spec_path}" in result.output and "KS distance" in result.output
    assert spec_path.stat().st_size <= MAX_SPEC_BYTES
    assert read_spec(spec_path).seed == 5
    result = run_cli("synth", spec_path, "-o", out)
    assert result.exit_code == 0, result.output
    assert_fit_quality(compare_traces(read_trace(recorded_python_trace), read_trace(out)))


def test_fit_prints_the_spec_without_output_and_json_on_request(run_cli):
    result = run_cli("fit", BUNDLED)
    assert result.exit_code == 0
    assert 'size            = "const:4632K"' in result.stdout
    assert "KS distance" in result.stderr  # the report stays out of the TOML on stdout
    data = json.loads(run_cli("fit", BUNDLED, "--json").stdout)
    assert data["spec"]["count"] == 64 and data["quality"]["mmaps"] == [64, 64]
    assert data["spec_bytes"] <= MAX_SPEC_BYTES


def test_fit_of_a_trace_without_anonymous_mmaps_is_one_line_exit_2(run_cli, tmp_path):
    path = tmp_path / "files.arrow"
    table = build_table({"ts_ns": [0, 1], "tid": [1, 1], "op": ["mmap", "brk"],
                         "addr": [1 << 30, 0], "length": [8192, 0], "new_addr": [None, 1 << 20],
                         "prot": [1, None], "flags": [2, None], "fd": [3, None], "errno": [0, 0]})
    write_trace(table, path, new_metadata("test"))
    result = run_cli("fit", path, "-o", tmp_path / "spec.toml")
    assert result.exit_code == 2
    assert "no successful anonymous mmaps, nothing to fit" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "spec.toml").exists()
    missing = run_cli("fit", tmp_path / "missing.arrow")
    assert missing.exit_code == 2 and "no such file" in missing.stderr


@pytest.mark.parametrize("rows", [
    # found by hypothesis: a successful mmap of 2^64 - 8 KiB overflowed the profile (traceback)
    {"op": ["mmap"], "addr": [0x1000], "length": [(1 << 64) - 8192], "new_length": [None]},
    {"op": ["mmap", "mremap"], "addr": [0x7000_0000_0000] * 2, "length": [4096, 4096],
     "new_length": [None, (1 << 64) - 8192]},
])
def test_fit_refuses_a_forged_length_in_one_line(run_cli, tmp_path, rows):
    path = tmp_path / "forged.arrow"
    count = len(rows["op"])
    table = build_table({"ts_ns": list(range(count)), "tid": [1] * count, "errno": [0] * count,
                         "prot": [3] * count, "flags": [0x22, 1][:count], "fd": [-1] * count,
                         "new_addr": [None, 0x7000_0000_0000][:count], **rows})
    write_trace(table, path, new_metadata("test"))
    result = run_cli("fit", path, "-o", tmp_path / "spec.toml")
    assert result.exit_code == 2, result.output + result.stderr
    assert "more than any address space holds" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "spec.toml").exists()


def test_ks_distance():
    assert ks_distance([1, 2, 3], [1, 2, 3]) == 0
    assert ks_distance([1, 1], [2, 2]) == 1
    assert ks_distance([1, 2, 3, 4], [1, 2, 3, 5]) == pytest.approx(0.25)
