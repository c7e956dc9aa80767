"""The result JSON, the types that name its fields (replay/results/result_types.py) and its documentation
(docs/result-format.md) say the same thing: real results of real replays go through the types
and come back as the same JSON text, and every key they hold is documented (and every documented
key is in them, apart from the few that need a VM guest or --copies)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from replay.results.result import result_json
from replay.results.result_types import CompareDocument, ResultDocument, RunMeasurements
from strategies import brk, mmap, munmap

DOC = Path(__file__).resolve().parent.parent / "docs" / "result-format.md"
MIB = 1 << 20
HEAP = 0x5555_5560_3000
ANON_AT = 0x7F00_0000_0000

# Documented keys these tests cannot produce cheaply, and where they are checked instead.
RESULT_KEYS_ELSEWHERE = {"vm",       # --kernel: tests/test_vm_boot.py
                         "copies"}   # --copies: tests/test_copies.py
RUN_KEYS_ELSEWHERE = {"warmup"}      # a warm-up run kept when --copies is stopped: test_copies.py
# One of the two, as the machine allows a memory cgroup or not.
CGROUP_KEYS = {"cgroup", "cgroup_unavailable"}


def documented_keys(heading: str) -> set[str]:
    """Top-level keys of the table under ``heading`` (`ops.<op>` -> ops)."""
    text = DOC.read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    keys = set()
    for line in text[start:end if end > 0 else None].splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            keys |= {name.split(".")[0] for name in re.findall(r"`([^`]+)`", first_cell)}
    return keys


@pytest.fixture(scope="module")
def threaded_heap_result(tmp_path_factory) -> dict:
    """A real replay with the keys a plain replay leaves out: --threads, a brk heap, --collapse
    and a trace whose recorded duration is known."""
    from click.testing import CliRunner

    from replay.cli import cli
    from traces import new_metadata, write_trace
    from strategies import table_from_rows

    folder = tmp_path_factory.mktemp("typed")
    rows = [brk(0, HEAP, tid=1), brk(HEAP + 4 * MIB, HEAP + 4 * MIB, tid=1),
            mmap(ANON_AT, 4 * MIB, tid=1), mmap(ANON_AT + 8 * MIB, 4 * MIB, tid=2),
            munmap(ANON_AT, 4 * MIB, tid=2), munmap(ANON_AT + 8 * MIB, 4 * MIB, tid=1)]
    trace = write_trace(table_from_rows(rows, new_metadata("test")), folder / "t.arrow")
    out = folder / "r.json"
    done = CliRunner().invoke(cli, ["replay", str(trace), "--threads", "recorded", "--collapse",
                                    "madvise", "--touch", "full", "-o", str(out), "--no-progress"],
                              prog_name="mmreplay")
    assert done.exit_code == 0, done.output
    return json.loads(out.read_text())


def round_trips(document: dict) -> None:
    """The document, its runs and (for a compare) its results, through the types: same JSON."""
    if "mmreplay_compare" in document:
        typed = CompareDocument.from_dict(document)
        assert result_json(typed.as_dict()) == result_json(document)
        for result in typed.results:
            round_trips(result)
        return
    typed = ResultDocument.from_dict(document)
    assert result_json(typed.as_dict()) == result_json(document)
    for run in document["runs"]:
        typed_run = RunMeasurements.from_dict(run)
        assert list(typed_run.as_dict()) == list(run)
        assert result_json(typed_run.as_dict()) == result_json(run)


def test_real_results_go_through_the_types_unchanged(suite_results, threaded_heap_result):
    for name in ("a.json", "c.json"):
        round_trips(json.loads((suite_results / name).read_text()))
    round_trips(threaded_heap_result)
    run = threaded_heap_result["runs"][0]
    assert {"heap", "threads", "collapse", "trace_wall_s"} <= set(run)


def test_a_key_the_types_do_not_name_is_refused(suite_results):
    run = json.loads((suite_results / "a.json").read_text())["runs"][0]
    with pytest.raises(ValueError, match="new_figure"):
        RunMeasurements.from_dict({**run, "new_figure": 1})


def test_every_key_of_real_results_is_documented_and_every_documented_key_is_there(
        suite_results, threaded_heap_result):
    replayed = json.loads((suite_results / "a.json").read_text())
    compared = json.loads((suite_results / "c.json").read_text())
    results = [replayed, threaded_heap_result, *compared["results"]]
    result_keys = {key for result in results for key in result}
    run_keys = {key for result in results for run in result["runs"] for key in run}

    documented = documented_keys("## The result document")
    assert result_keys - documented == set(), "result keys missing from docs/result-format.md"
    assert documented - result_keys == RESULT_KEYS_ELSEWHERE

    documented = documented_keys("## A run (`runs[]`)")
    assert run_keys - documented == set(), "run keys missing from docs/result-format.md"
    assert len(run_keys & CGROUP_KEYS) == 1
    assert documented - run_keys == RUN_KEYS_ELSEWHERE | (CGROUP_KEYS - run_keys)

    documented = documented_keys("## The compare document (`compare -o`)")
    assert set(compared) - documented == set()
    assert documented - set(compared) == {"copies"}  # --copies
