"""compare and report: the A/B table people paste into linux-mm replies."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from replay.cli import cli
from replay.running.compare import split_axis
from traces import MmreplayError, write_trace
from tracegen import buffers_trace


@pytest.fixture(scope="module")
def cactus_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("cmp") / "cactus.arrow"
    return write_trace(buffers_trace(48, 4632 * 1024), path)


def table_row(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if line.rstrip().endswith(label))


def leading_numbers(line: str) -> list[float]:
    # "   48           -93.8%*          3        peak VMAs" -> [48, 3]
    cells = re.findall(r"(?<![+\-\d])(\d[\d,]*(?:\.\d+)?)(?![\d%])", line)
    return [float(c.replace(",", "")) for c in cells]


def test_compare_policies_shows_vma_contrast_marked_significant(cactus_trace, tmp_path):
    out = tmp_path / "cmp.json"
    result = CliRunner().invoke(cli, ["compare", str(cactus_trace), "--policies",
                                      "align-ge-pmd,align-pmd-multiple", "--repeat", "2",
                                      "--touch", "none", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = result.output
    assert all(len(line) <= 72 for line in text.splitlines())
    assert text.isascii()
    vmas = table_row(text, "peak VMAs")
    base, new = leading_numbers(vmas)
    assert base >= 48 and new <= 8
    assert "%*" in vmas  # zero-variance counts that differ: significant
    aligned = table_row(text, "of them 2 MiB-aligned")
    assert leading_numbers(aligned) == [48, 0] or leading_numbers(aligned)[0] == 48
    # The header names the kernel, THP settings, trace hash and the command.
    for label in ("kernel  Linux", "thp     enabled=", "sha256  ", "command mmreplay"):
        assert f"\n{label}" in text, label
    document = json.loads(out.read_text())
    assert document["axis"] == "policy" and len(document["results"]) == 2
    assert [len(r["runs"]) for r in document["results"]] == [2, 2]


def test_report_rebuilds_the_table_and_warns_on_mismatch(cactus_trace, tmp_path):
    runner = CliRunner()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, policy in ((a, "align-ge-pmd"), (b, "align-pmd-multiple")):
        done = runner.invoke(cli, ["replay", str(cactus_trace), "--policy", policy, "--touch",
                                   "none", "-o", str(path), "--no-progress"])
        assert done.exit_code == 0, done.output
    report = runner.invoke(cli, ["report", str(a), str(b)])
    assert report.exit_code == 0, report.output
    assert "configs differ: policy align-ge-pmd vs align-pmd-multiple" in report.output
    assert leading_numbers(table_row(report.output, "peak VMAs"))[0] >= 48
    # A result of another trace: a warning naming both hashes.
    other_trace = write_trace(buffers_trace(4, 1 << 20), tmp_path / "other.arrow")
    c = tmp_path / "c.json"
    runner.invoke(cli, ["replay", str(other_trace), "-o", str(c), "--touch", "none"])
    mismatch = runner.invoke(cli, ["report", str(a), str(c)])
    assert mismatch.exit_code == 0
    assert "WARNING: the results come from different traces" in mismatch.output
    markdown = runner.invoke(cli, ["report", str(a), str(b), "--format", "markdown"])
    assert "| peak VMAs |" in markdown.output


def test_report_bad_inputs_exit_2(tmp_path):
    runner = CliRunner()
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    for args in (["report", str(junk), str(junk)], ["report", str(other), str(other)],
                 ["report", str(tmp_path / "missing.json"), str(junk)]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 2
        assert result.output.count("\n") == 1 and result.output.startswith("Error:")


def test_compare_varies_one_axis_at_a_time():
    assert split_axis({"policy": "a,b", "thp": "always"})[:2] == ("policy", ["a", "b"])
    with pytest.raises(MmreplayError, match="one option at a time"):
        split_axis({"policy": "a,b", "thp": "always,never"})
    result = CliRunner().invoke(cli, ["compare", "--policies", "kernel", "--repeat", "1"])
    assert result.exit_code == 2 and "nothing to compare" in result.output


def test_a_partial_run_is_never_compared_as_if_complete(tmp_path):
    """A real run stopped by Ctrl-C, in a real compare document: report leaves it out of every
    figure and says so; a column with no finished run is left out of the table."""
    import signal

    from processes import interrupt_replaying, mmreplay

    trace = write_trace(buffers_trace(20000, 1 << 20, alive_together=False), tmp_path / "t.arrow")
    whole = tmp_path / "whole.json"
    done = CliRunner().invoke(cli, ["compare", str(trace), "--policies", "kernel,no-align",
                                    "--repeat", "2", "--warmup", "0", "--touch", "none",
                                    "-o", str(whole)])
    assert done.exit_code == 0, done.output
    stopped = tmp_path / "stopped.json"
    child = mmreplay("replay", trace, "--policy", "no-align", "--touch", "full", "--warmup", "0",
                     "-o", stopped, "--progress")
    interrupt_replaying(child, signal.SIGINT)
    partial = json.loads(stopped.read_text())["runs"][-1]
    assert partial["interrupted"] and partial["events"] < 40000

    document = json.loads(whole.read_text())
    no_align = document["results"][1]
    kept = no_align["runs"][0]
    no_align["runs"][1] = partial
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps(document))
    text = CliRunner().invoke(cli, ["report", str(mixed)]).output
    assert "Partial runs left out of every figure: no-align 1" in text, text
    faults = table_row(text, "minor faults")
    assert leading_numbers(faults)[-1] == kept["minflt"], (faults, kept["minflt"])
    assert "runs    1/2 finished per column" in text

    no_align["runs"] = [partial]
    only_partial = tmp_path / "only-partial.json"
    only_partial.write_text(json.dumps(document))
    text = CliRunner().invoke(cli, ["report", str(only_partial)]).output
    assert "Left out, no run finished: no-align" in text
    assert "No table" in text and "%change" not in text
