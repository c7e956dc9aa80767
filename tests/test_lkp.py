"""The lkp-tests program (integrations/lkp-tests): parse turns real results into lkp stat lines,
run replays a job's parameters and prints what parse reads, and every job file validates
against the program's meta.yaml."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from replay.running.config import THP_MODES, TOUCH_MODES, Access
from replay.engine.policy import POLICIES
from replay.results.result import flatten_numbers
from synth.presets import PRESETS
from traces.bundled import DATA

LKP = Path(__file__).resolve().parent.parent / "integrations" / "lkp-tests"
PROGRAM = LKP / "programs" / "mmreplay"
JOBS = sorted((LKP / "jobs" / "mmreplay").glob("*.yaml"))
# What lkp's dump-stat accepts: a name without whitespace, ": ", a number (a '.' unless integer).
STAT_LINE = re.compile(r"^(?P<name>[^\s:]+): (?P<value>-?\d+(\.\d+(e[-+]?\d+)?)?)$")


def parse(text: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROGRAM / "parse")], input=text, text=True,
                          capture_output=True)


def stats(text: str) -> list[tuple[str, str]]:
    """The (name, value) pairs parse prints for ``text``; every line must be a valid stat."""
    done = parse(text)
    assert done.returncode == 0, done.stderr
    pairs = []
    for line in done.stdout.splitlines():
        match = STAT_LINE.match(line)
        assert match, f"not an lkp stat line: {line!r}"
        pairs.append((match["name"], match["value"]))
    return pairs


def meta() -> dict:
    return yaml.safe_load((PROGRAM / "meta.yaml").read_text())


def test_parse_prints_every_number_of_the_runs_as_their_median(suite_results):
    text = (suite_results / "a.json").read_text()
    result = json.loads(text)
    # lkp's log holds the command line log_cmd echoes before the JSON.
    pairs = stats(f"2026-12-02 05:00:00 {result['command']}\n{text}")
    printed = dict(pairs)
    assert len(printed) == len(pairs), "a stat printed twice for one result"
    per_run = [flatten_numbers(run) for run in result["runs"]]
    # The names are the result's own (its summary's), so new figures flow through.
    assert set(printed) == set(per_run[0]) | {"runs"} == set(result["summary"]) | {"runs"}
    assert printed["runs"] == "2"
    for name, value in printed.items():
        if name == "runs":
            continue
        runs = [numbers[name] for numbers in per_run]
        assert float(value) == pytest.approx(statistics.median(runs), rel=1e-12), name
        if all(isinstance(v, int) for v in runs) and statistics.median(runs) % 1 == 0:
            assert "." not in value, name
    # What the trace holds: 64 mappings of 4632 KiB, each >= 2 MiB; align-ge-pmd aligns them all.
    assert printed["large_mappings"] == "64"
    assert printed["pmd_aligned_large_mappings"] == "64"
    assert printed["pmd_aligned_by_size.4M-16M.mappings"] == "64"
    for stat in meta()["results"]:
        assert stat.removeprefix("mmreplay.") in printed, f"meta.yaml lists {stat}, not printed"


def test_parse_gives_one_record_per_result_of_a_compare_document(suite_results):
    document = json.loads((suite_results / "c.json").read_text())
    pairs = stats((suite_results / "c.json").read_text())
    records = [value for name, value in pairs if name == "events_per_s"]
    assert len(records) == len(document["results"]) == 2
    for value, result in zip(records, document["results"]):
        assert float(value) == pytest.approx(result["runs"][0]["events_per_s"], rel=1e-12)


def test_parse_leaves_interrupted_runs_out_and_counts_them(suite_results):
    result = json.loads((suite_results / "b.json").read_text())
    result["runs"][1]["interrupted"] = True
    result["runs"][1]["interrupt_reason"] = "SIGINT"
    printed = dict(stats(json.dumps(result, indent=1)))
    assert printed["runs"] == "1" and printed["interrupted_runs"] == "1"
    assert float(printed["events_per_s"]) == pytest.approx(result["runs"][0]["events_per_s"])


def test_parse_without_a_result_fails_with_one_line():
    done = parse("2026-12-02 05:00:00 mmreplay replay x.arrow\nError: x.arrow: no such file\n")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "no mmreplay result" in done.stderr


def test_small_floats_keep_a_decimal_point():
    """lkp's dump-stat reads a value without '.' as an integer: 1e-05 must print as 1.0e-05."""
    loader = importlib.machinery.SourceFileLoader("lkp_parse", str(PROGRAM / "parse"))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("lkp_parse", loader))
    loader.exec_module(module)
    assert module.stat_value(1e-05) == "1.0e-05"
    assert module.stat_value(2.5e-07) == "2.5e-07"
    assert module.stat_value(1e+20) == "1.0e+20"
    assert module.stat_value(7) == "7" and module.stat_value(3.5) == "3.5"


# ---------------------------------------------------------------------------------------------
# run: the job's parameters -> mmreplay replay -> the JSON parse reads


def lkp_shell_libs(root: Path) -> Path:
    """The three lkp-tests shell functions run uses, with lkp's behaviour: die stops, log_cmd
    echoes the command with a date on stdout and runs it, cd_benchmark enters the suite's
    folder under BENCHMARK_ROOT."""
    lib = root / "lib"
    lib.mkdir(parents=True)
    (lib / "debug.sh").write_text('die() { echo "$@" >&2; exit 1; }\n')
    (lib / "reproduce-log.sh").write_text('log_cmd() { echo "$(date +"%F %T") $*"; "$@"; }\n')
    (lib / "run.sh").write_text('cd_benchmark() { cd "$BENCHMARK_ROOT/$suite" || exit 1; }\n')
    return root


def benchmark_root(root: Path) -> Path:
    """/lkp/benchmarks/mmreplay as pkg/PKGBUILD lays it out, with this checkout's mmreplay."""
    home = root / "mmreplay"
    (home / "bin").mkdir(parents=True)
    (home / "traces").mkdir()
    script = Path(sys.executable).with_name("mmreplay")
    (home / "bin" / "mmreplay").write_text(f'#!/bin/sh\nexec "{script}" "$@"\n')
    (home / "bin" / "mmreplay").chmod(0o755)
    shutil.copy(DATA / "buffers-4632k.arrow", home / "traces")
    return root


def test_run_replays_the_job_parameters_and_parse_reads_its_output(tmp_path):
    result_root = tmp_path / "result"
    result_root.mkdir()
    env = {**os.environ, "LKP_SRC": str(lkp_shell_libs(tmp_path / "lkp-src")),
           "BENCHMARK_ROOT": str(benchmark_root(tmp_path / "benchmarks")), "suite": "mmreplay",
           "TMP_RESULT_ROOT": str(result_root), "trace": "buffers-4632k",
           "policy": "align-ge-pmd", "touch": "first", "thp": "as-recorded", "repeat": "1"}
    done = subprocess.run(["bash", str(PROGRAM / "run")], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    saved = json.loads((result_root / "mmreplay-result" / "result.json").read_text())
    assert saved["config"]["policy"] == "align-ge-pmd" and saved["config"]["touch"] == "first"
    assert saved["trace"]["name"] == "buffers-4632k.arrow" and len(saved["runs"]) == 1
    printed = dict(stats(done.stdout))
    assert printed["runs"] == "1"
    assert float(printed["events_per_s"]) == pytest.approx(saved["runs"][0]["events_per_s"])
    assert printed["pmd_aligned_large_mappings"] == "64"

    missing = subprocess.run(["bash", str(PROGRAM / "run")], env={**env, "trace": "no-such"},
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "no trace" in missing.stderr


# ---------------------------------------------------------------------------------------------
# meta.yaml and the job files


def test_meta_yaml_offers_exactly_what_mmreplay_accepts():
    parameters = meta()["parameters"]
    assert set(parameters) == {"trace", "policy", "touch", "access", "thp", "repeat"}
    assert parameters["policy"] == list(POLICIES)
    assert parameters["touch"] == list(TOUCH_MODES)
    assert parameters["thp"] == list(THP_MODES)
    bundled = [p.stem for p in sorted(DATA.glob("*.arrow"))]
    assert sorted(parameters["trace"]) == sorted(bundled + list(PRESETS))
    # run documents its parameters as lkp programs do ("# - name") and uses each of them.
    run = (PROGRAM / "run").read_text()
    assert re.findall(r"^# - (\w+)$", run, re.M) == list(parameters)
    for name in parameters:
        assert f"${name}" in run or f"${{{name}" in run, name
    # pkg/PKGBUILD synthesizes every preset a job may name.
    build = (PROGRAM / "pkg" / "PKGBUILD").read_text()
    assert re.search(r"^PRESETS=\(([^)]*)\)", build, re.M)[1].split() == list(PRESETS)


def allowed(name: str, value, parameters: dict) -> bool:
    choices = parameters[name]
    if isinstance(choices, list):
        return value in choices
    if name == "access":
        Access.parse(str(value))  # raises on a bad value
        return True
    if name == "repeat":
        return isinstance(value, int) and value >= 1
    return False


@pytest.mark.parametrize("job", JOBS, ids=lambda path: path.name)
def test_job_validates_against_meta_yaml(job):
    parameters = meta()["parameters"]
    content = yaml.safe_load(job.read_text())
    assert content["suite"] == content["testcase"] == "mmreplay"
    assert content["category"] == "benchmark"
    assert set(content) == {"suite", "testcase", "category", "mmreplay"}
    params = content["mmreplay"]
    assert "trace" in params
    for name, value in params.items():
        assert name in parameters, f"{job.name}: {name} is not a parameter of meta.yaml"
        for item in value if isinstance(value, list) else [value]:
            assert allowed(name, item, parameters), f"{job.name}: {name}: {item!r}"


def test_jobs_cover_every_bundled_trace_and_preset():
    traces = set()
    for job in JOBS:
        value = yaml.safe_load(job.read_text())["mmreplay"]["trace"]
        traces.update(value if isinstance(value, list) else [value])
    assert traces == {p.stem for p in DATA.glob("*.arrow")} | set(PRESETS)
