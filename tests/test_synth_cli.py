"""mmreplay synth on the command line: acceptance, spec files, presets, every bad input."""

from __future__ import annotations

import json
import shlex
import sys

import numpy as np
import pytest

from replays import first_run
from synth.presets import PRESETS
from synth.spec import Spec, read_spec, spec_to_toml
from traces import read_trace, trace_metadata
from traces.format import column_np, op_names
from traces.schema import OP_CODE

KIB, MIB = 1 << 10, 1 << 20
MMAP, MUNMAP = OP_CODE["mmap"], OP_CODE["munmap"]
EVENT_COLUMNS = ("ts_ns", "tid", "op", "addr", "length", "new_addr", "new_length", "hint", "prot",
                 "flags", "fd", "offset", "advice", "errno", "duration_ns")


def events(path) -> dict:
    table = read_trace(path)
    return {name: table.column(name).combine_chunks() for name in EVENT_COLUMNS}


def live_counts(path) -> np.ndarray:
    op = op_names(read_trace(path))
    return np.cumsum((op == MMAP).astype(np.int64) - (op == MUNMAP).astype(np.int64))


def test_acceptance_same_command_same_events_and_info_shows_how_to_regenerate(run_cli, tmp_path):
    a, b = tmp_path / "a.arrow", tmp_path / "b.arrow"
    for path in (a, b):
        result = run_cli("synth", "--count", "1000", "--seed", "1", "-o", path)
        assert result.exit_code == 0, result.output
    assert events(a) == events(b)

    info = run_cli("info", a)
    assert info.exit_code == 0
    assert "regenerate   mmreplay synth --count 1000 --size uniform:512K,1536K" in info.output
    histogram = json.loads(run_cli("info", a, "--json").output)["size_histogram"]
    # uniform 512 KiB-1.5 MiB requests plus glibc's header page: a few reach 1.5 MiB + 4 KiB.
    assert histogram["512K-1.5M"]["count"] + histogram["1.5M-2M"]["count"] == 1000
    assert histogram["1.5M-2M"]["count"] < 10
    lengths = column_np(read_trace(a), "length")
    assert lengths.min() >= 516 * KIB and lengths.max() <= 1540 * KIB

    meta = trace_metadata(read_trace(a))
    assert meta["source"] == "synth" and meta["seed"] == 1
    assert meta["spec"]["count"] == 1000 and meta["spec"]["size"] == "uniform:512K,1536K"
    assert meta["command"] == ["mmreplay", "synth", "--count", "1000", "--seed", "1", "-o", str(a)]


def test_the_regenerate_command_regenerates_the_same_events(run_cli, tmp_path):
    first = tmp_path / "first.arrow"
    result = run_cli("synth", "--preset", "cactusbssn", "--lifetime", "random", "--live", "30",
                     "--madvise", "hugepage", "--threads", "3", "--seed", "9", "-o", first)
    assert result.exit_code == 0, result.output
    command = shlex.split(trace_metadata(read_trace(first))["regenerate"])
    assert command[:2] == ["mmreplay", "synth"] and command[-2:] == ["-o", str(first)]
    again = tmp_path / "again.arrow"
    result = run_cli(*command[1:-1], again)
    assert result.exit_code == 0, result.output
    assert events(first) == events(again)


def test_spec_file_preset_and_options_combine(run_cli, tmp_path):
    spec_path = tmp_path / "spec.toml"
    printed = run_cli("synth", "--preset", "malloc1", "--print-spec")
    assert printed.exit_code == 0
    spec_path.write_text(printed.output)
    assert read_spec(spec_path) == PRESETS["malloc1"].spec

    from_preset, from_file = tmp_path / "p.arrow", tmp_path / "f.arrow"
    assert run_cli("synth", "--preset", "malloc1", "--count", "50", "-o", from_preset).exit_code == 0
    assert run_cli("synth", spec_path, "--count", "50", "-o", from_file).exit_code == 0
    assert events(from_preset) == events(from_file)
    assert trace_metadata(read_trace(from_file))["spec"]["count"] == 50


def test_spec_file_keys_and_relative_empirical_path(run_cli, tmp_path):
    (tmp_path / "data").mkdir()
    source = tmp_path / "data" / "source.arrow"
    assert run_cli("synth", "--size", "choice:8K,3M@1,1", "--no-malloc-overhead", "--count", "40",
                   "-o", source).exit_code == 0
    spec_path = tmp_path / "resample.toml"
    spec_path.write_text('count = 200\nsize = "empirical:data/source.arrow"\n'
                         'malloc_overhead = false\nlive_bytes = "64M"\nlifetime = "exp:5"\n'
                         'madvise = "nohugepage:0.5"\nseed = 4\n')
    out = tmp_path / "out.arrow"
    result = run_cli("synth", spec_path, "-o", out)
    assert result.exit_code == 0, result.output
    table = read_trace(out)
    lengths = column_np(table, "length")[op_names(table) == MMAP]
    assert set(lengths.tolist()) == {8 * KIB, 3 * MIB}
    assert trace_metadata(table)["spec"]["size"] == f"empirical:{tmp_path}/data/source.arrow"


def test_presets_have_their_shape(run_cli, tmp_path):
    cactus, malloc1, buffers = tmp_path / "c.arrow", tmp_path / "m.arrow", tmp_path / "b.arrow"
    assert run_cli("synth", "--preset", "cactusbssn", "-o", cactus).exit_code == 0
    assert run_cli("synth", "--preset", "malloc1", "-o", malloc1).exit_code == 0
    assert run_cli("synth", "--preset", "seed-buffers", "-o", buffers).exit_code == 0

    table = read_trace(cactus)
    assert set(column_np(table, "length").tolist()) == {4632 * KIB}
    assert live_counts(cactus).max() == 128  # all alive together
    table = read_trace(malloc1)
    assert set(column_np(table, "length").tolist()) == {128 * MIB + 4 * KIB}
    assert live_counts(malloc1).max() == 1 and (op_names(table) == MMAP).sum() == 1000
    assert live_counts(buffers).max() == 1000


def test_help_documents_every_preset_with_its_source(run_cli):
    text = run_cli("synth", "--help").output
    for name in PRESETS:
        assert f"{name}:" in text
    assert "SUSE bz 1229012" in text and "LKP" in text and "LKML" in text


def test_json_output(run_cli, tmp_path):
    result = run_cli("synth", "--count", "5", "--brk-calls", "2", "-o", tmp_path / "j.arrow",
                     "--json")
    written = json.loads(result.output)
    assert written["events"] == 12 and written["ops"] == {"mmap": 5, "munmap": 5, "brk": 2}
    assert written["spec"]["brk_calls"] == 2


def test_toml_round_trip_of_every_key():
    spec = Spec(count=7, size="choice:4K,2M@3,1", malloc_overhead=False, live=3, live_bytes=5 << 30,
                lifetime="exp:12.5", keep_at_end=2, threads=4, madvise="hugepage:0.5,dontneed:2",
                guard_pages=0.25, brk_calls=3, brk_step=8192, seed=2**64 - 1)
    from synth.spec import tomllib

    from synth.spec import spec_from_dict
    assert spec_from_dict(tomllib.loads(spec_to_toml(spec, ["a comment"]))) == spec


BAD = [
    (["--size", "gamma:1M"], "unknown size distribution 'gamma'"),
    (["--size", "uniform:-1M,2M"], "negative"),
    (["--size", "const:0"], "zero"),
    (["--size", "uniform:2M,1M"], "low 2M is above high 1M"),
    (["--size", "lognormal:1M,1,8M,2M"], "min 8M is above max 2M"),
    (["--count", "0"], "count = 0"),
    (["--count", "-5"], "count = -5"),
    (["--live", "0"], "live = 0"),
    (["--live-bytes", "-1G"], "negative"),
    (["--live-bytes", "0"], "at least 1 byte"),
    (["--lifetime", "oldest"], "lifetime 'oldest'"),
    (["--lifetime", "exp:-3"], "MEAN must be a positive number"),
    (["--madvise", "hugepages"], "unknown advice 'hugepages'"),
    (["--madvise", "hwpoison"], "unknown advice 'hwpoison'"),
    (["--madvise", "hugepage:x"], "is not a number"),
    (["--guard-pages", "1.5"], "guard_pages = 1.5"),
    (["--threads", "0"], "threads = 0"),
    (["--preset", "nosuch"], "unknown preset 'nosuch'"),
    (["--size", "const:8M", "--live-bytes", "4M"], "smaller than a mapping"),
    (["--size", "const:1T", "--count", "100", "--no-malloc-overhead"], "does not fit"),
    (["--count", "2000000000"], "of memory to build"),
]


@pytest.mark.parametrize("args, message", BAD)
def test_bad_options_are_one_line_and_exit_2_with_no_output(run_cli, tmp_path, args, message):
    out = tmp_path / "out.arrow"
    result = run_cli("synth", *args, "-o", out)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize("text, message", [
    ("count = 10\nsizes = 'const:1M'\n", "unknown key 'sizes'"),
    ("count = 10\n[extra]\nx = 1\n", "unknown table [extra]"),
    ("count = \n", "not valid TOML"),
    ("count = '10'\n", "count = '10': expected a whole number"),
    ("malloc_overhead = 1\n", "expected true or false"),
    ("size = 'uniform:1M'\n", "uniform takes LOW,HIGH"),
])
def test_bad_spec_files_are_one_line_and_exit_2(run_cli, tmp_path, text, message):
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    result = run_cli("synth", spec, "-o", tmp_path / "out.arrow")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and str(spec) in result.stderr
    assert result.stderr.count("\n") == 1


def test_other_bad_invocations(run_cli, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text("count = 3\n")
    cases = [
        (["synth", spec, "--preset", "malloc1", "-o", tmp_path / "x.arrow"], "not both"),
        (["synth", "--count", "3"], "no output"),
        (["synth", tmp_path / "missing.toml", "-o", tmp_path / "x.arrow"], "no such spec file"),
        (["synth", "--count", "3", "-o", tmp_path / "no" / "dir.arrow"], "does not exist"),
    ]
    for args, message in cases:
        result = run_cli(*args)
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)


def test_an_existing_output_survives_a_failed_run(run_cli, tmp_path):
    out = tmp_path / "keep.arrow"
    assert run_cli("synth", "--count", "3", "-o", out).exit_code == 0
    before = out.read_bytes()
    assert run_cli("synth", "--size", "const:0", "-o", out).exit_code == 2
    assert out.read_bytes() == before


@pytest.mark.skipif(sys.platform != "linux", reason="the console script is installed on Linux CI")
def test_the_installed_command_runs(tmp_path):
    import shutil
    import subprocess

    exe = shutil.which("mmreplay") or str(__import__("pathlib").Path(sys.executable).with_name("mmreplay"))
    out = tmp_path / "cli.arrow"
    done = subprocess.run([exe, "synth", "--preset", "malloc1", "--count", "3", "-o", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and out.exists()
    bad = subprocess.run([exe, "synth", "--size", "weird:1", "-o", str(out)], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def replay_run(run_cli, trace, folder, *options) -> dict:
    return first_run(run_cli, trace, folder / "result.json", "--touch", "none", *options)


def test_cactusbssn_replays_as_many_large_mappings_alive_together(run_cli, tmp_path):
    trace = tmp_path / "cactus.arrow"
    assert run_cli("synth", "--preset", "cactusbssn", "-o", trace).exit_code == 0
    aligned = replay_run(run_cli, trace, tmp_path, "--policy", "align-ge-pmd")
    assert aligned["peak_live_bytes"] == 128 * 4632 * KIB and aligned["large_mappings"] == 128
    # 6.7-6.11 placement: every one 2 MiB-aligned, separate VMAs with holes between them...
    assert aligned["peak_vmas"] == 128 and aligned["pmd_aligned_large_mappings"] == 128
    assert aligned["holes"] > 100
    # ... while unaligned neighbours merge into a few VMAs, as they did before 6.7 and since 6.12
    # (a few more where the top-down search fills holes earlier tests left in this process).
    merged = replay_run(run_cli, trace, tmp_path, "--policy", "no-align")
    assert merged["peak_live_bytes"] == 128 * 4632 * KIB and merged["peak_vmas"] < 128 // 4


def test_malloc1_replays_as_one_mapping_at_a_time(run_cli, tmp_path):
    trace = tmp_path / "malloc1.arrow"
    assert run_cli("synth", "--preset", "malloc1", "--count", "50", "-o", trace).exit_code == 0
    run = replay_run(run_cli, trace, tmp_path, "--policy", "align-ge-pmd")
    assert run["peak_vmas"] == 1 and run["large_mappings"] == 50
    assert run["peak_live_bytes"] == 128 * MIB + 4 * KIB
