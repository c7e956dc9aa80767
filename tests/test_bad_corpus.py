"""The bad-input corpus (tests/data/bad/make_corpus.py) through the real CLI, every case with its
exact outcome: one `Error: <file>: ...` line and exit status 2, or exit 0 with every skipped or
changed event counted in the result. Never a traceback, and nothing written but the output asked
for (the folder's listing is compared before and after)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from processes import PATIENCE_S
from pathlib import Path

import pytest
from click.testing import CliRunner

from replay.cli import cli
from traces import read_trace

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "data" / "bad"))
import make_corpus as corpus  # noqa: E402

CASES = {case.name: case for case in corpus.CASES}


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    corpus.write_corpus(folder)
    return folder


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="mmreplay")


def listing(folder: Path) -> set[str]:
    return set(os.listdir(folder))


def assert_refused(result, path: Path, fragments) -> str:
    """Exit 2, nothing on stdout, one stderr line `Error: <path>: ...` with every fragment."""
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"Error: {path}: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def dotted(document: dict, path: str):
    for key in path.split("."):
        document = document[key]
    return document


@pytest.fixture
def workdir(tmp_path, corpus_dir):
    """A fresh folder holding only the case's file, so any stray write shows in its listing."""
    def make(case) -> Path:
        folder = tmp_path / "work"
        folder.mkdir()
        target = folder / case.name
        target.write_bytes((corpus_dir / case.name).read_bytes())
        return target
    return make


@pytest.mark.parametrize("name", list(CASES))
def test_case(name, workdir):
    case = CASES[name]
    source = workdir(case)
    folder = source.parent
    before = listing(folder)
    outcome = case.outcome

    if isinstance(outcome, corpus.Refused):
        for command in outcome.by:
            if command == "import":
                result = invoke("import", source, "-o", folder / "out.arrow")
            elif command == "replay":
                result = invoke("replay", source, "-o", folder / "result.json", "--no-progress")
            else:
                result = invoke(command, source)
            assert_refused(result, source, outcome.fragments)
            assert listing(folder) == before, command

    elif isinstance(outcome, corpus.Replayed):
        out = folder / "result.json"
        result = invoke("replay", source, "-o", out, "--no-progress")
        assert result.exit_code == 0, (result.output, result.exception)
        assert listing(folder) == before | {out.name}
        document = json.loads(out.read_text())
        run = document["runs"][-1]
        assert run["skipped"] == outcome.skipped
        assert run["replayed_differently"] == outcome.changed
        assert {op: s["failed"] for op, s in run["ops"].items() if s["failed"]} == outcome.failed
        assert run["interrupted"] is False and run["release_failures"] == 0
        assert run["events"] == document["trace"]["events"] == read_trace(source).num_rows
        # The compiler's counts are the run's, less what only the run could find out.
        runtime_only = {"target_mapping_failed_earlier"}
        assert document["program"]["skipped"] == {k: v for k, v in outcome.skipped.items()
                                                  if k not in runtime_only}
        # ...and the text report says so, each count with its reason.
        text = result.stdout.splitlines()
        for label, counts in (("skipped", outcome.skipped), ("changed", outcome.changed)):
            lines = [line for line in text if line.startswith(label + " ")]
            expected = [f"{label} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))]
            assert lines == (expected if counts else [])

    else:
        out = folder / "out.arrow"
        result = invoke("import", source, "-o", out, "--json")
        assert result.exit_code == 0, (result.output, result.exception)
        assert listing(folder) == before | {out.name}
        report = json.loads(result.stdout)
        assert report["mm_calls_total"] == outcome.events
        for path, expected in outcome.report.items():
            assert dotted(report, path) == expected, path
        assert read_trace(out).num_rows == outcome.events
        # Whatever the log held, the trace it made is a valid one that replays.
        replayed = invoke("replay", out, "--no-progress")
        assert replayed.exit_code == 0, (replayed.output, replayed.exception)
        assert listing(folder) == before | {out.name}


def test_the_corpus_covers_the_issue():
    groups = {}
    for case in corpus.CASES:
        groups.setdefault(case.group, []).append(case)
        assert case.what and case.name.split(".")[-1] in ("arrow", "log", "gz", "txt", "eml",
                                                          "mbox")
    assert len(corpus.CASES) >= 30
    assert len(groups["arrow"]) >= 15 and len(groups["hostile"]) >= 12
    assert len(groups["strace"]) >= 6
    # Issue 13: every new door (blocks, mails, mboxes) and format v2's stored columns.
    assert len(groups["mail"]) >= 12
    assert sum(case.name.startswith("v2-") for case in groups["arrow"]) >= 6
    names = set(CASES)
    for required in ("truncated-64.arrow", "truncated-half.arrow", "truncated-footer.arrow",
                     "bitflip-compressed-data.arrow", "bitflip-metadata-json.arrow",
                     "other-schema.arrow", "wrong-type-ts.arrow",
                     "dictionary-index-out-of-range.arrow", "metadata-invalid-json.arrow",
                     "metadata-huge.arrow", "bitflip-row-count.arrow", "parquet.arrow",
                     "csv.arrow", "empty.arrow", "length-zero.arrow", "length-2p63.arrow",
                     "length-2p64-1.arrow", "kernel-half.arrow", "map-fixed-low.arrow",
                     "overlapping-mappings.arrow", "munmap-never-mapped.arrow",
                     "mremap-fixed.arrow", "claims-1e9-rows.arrow", "peak-live-above-ram.arrow",
                     "timestamps-backwards.arrow", "binary-garbage.log", "lines-cut-mid-call.log",
                     "resumed-without-start.log", "pids-reused.log", "extremely-long-line.log",
                     "invalid-utf8.log"):
        assert required in names, required


def test_generation_is_deterministic(tmp_path, corpus_dir):
    """The script run by hand writes the same files the tests use."""
    done = subprocess.run([sys.executable, str(HERE / "data" / "bad" / "make_corpus.py"),
                           str(tmp_path)], capture_output=True, text=True, timeout=PATIENCE_S,
                          cwd="/")
    assert done.returncode == 0, done.stderr
    assert f"{len(corpus.CASES)} cases written" in done.stdout
    for case in corpus.CASES:
        assert (tmp_path / case.name).read_bytes() == (corpus_dir / case.name).read_bytes(), \
            case.name


def _mmreplay() -> list[str]:
    script = Path(sys.executable).with_name("mmreplay")
    return [str(script)] if script.exists() else [sys.executable, "-m", "replay.cli"]


@pytest.mark.parametrize("name, command", [
    ("metadata-deep.arrow", "info"),              # was a RecursionError traceback
    ("dictionary-index-out-of-range.arrow", "info"),
    ("claims-1e9-rows.arrow", "replay"),
    ("peak-live-above-ram.arrow", "replay"),
    ("binary-garbage.log", "import"),
])
def test_the_real_process_says_one_line(name, command, workdir):
    """A separate process: exit status 2, one stderr line naming the file, no traceback, in time."""
    source = workdir(CASES[name])
    args = [*_mmreplay(), command, str(source)]
    if command == "import":
        args += ["-o", str(source.parent / "out.arrow")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=PATIENCE_S)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {source}: "), done.stderr
    assert listing(source.parent) == {source.name}


def test_import_from_a_pipe(tmp_path):
    """`mmreplay import <(xzcat app.log.xz)`: a log read from a pipe imports, or is refused with
    one line; never a traceback."""
    import threading

    fifo = tmp_path / "app.log"
    os.mkfifo(fifo)
    log = CASES["unfinished-never-resumed.log"].make()
    writer = threading.Thread(target=lambda: fifo.write_bytes(log), daemon=True)
    writer.start()
    done = subprocess.run([*_mmreplay(), "import", str(fifo), "-o", str(tmp_path / "app.arrow")],
                          capture_output=True, text=True, timeout=PATIENCE_S)
    if writer.is_alive():  # the command never opened the pipe: release the writer
        with open(fifo, "rb") as handle:
            handle.read()
    assert "Traceback" not in done.stderr, done.stderr
    if done.returncode == 0:
        assert read_trace(tmp_path / "app.arrow").num_rows == 4
    else:
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr


FUZZ_EXECUTIONS = 30


def test_the_fuzz_script_runs_and_reports(tmp_path):
    """fuzz/fuzz_inputs.py, briefly and with a fixed seed: every target fuzzed, figures printed,
    no finding (the long runs are reported by hand; see the script's docstring)."""
    script = HERE.parent / "fuzz" / "fuzz_inputs.py"
    # A number of inputs, not of seconds: a busy machine gets the same work done, only later.
    # --hang-s is generous for the same reason (a real hang still ends the run).
    done = subprocess.run([sys.executable, str(script), "--executions", str(FUZZ_EXECUTIONS),
                           "--seed", "7", "--hang-s", "600", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["crashes"] == summary["hangs"] == 0 and summary["findings"] == []
    for target in ("arrow", "strace", "hostile"):
        stats = summary["executions"][target]
        assert stats["executions"] == stats["accepted"] + stats["refused"] >= FUZZ_EXECUTIONS
        assert f"{stats['executions']} executions" in done.stdout
