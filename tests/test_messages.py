"""What a new user reads: error messages that say what is wrong and what to do, help that
says what each option means, and output that lines up. Through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from processes import PATIENCE_S
from tracegen import buffers_trace
from traces import write_trace

ROOT = Path(__file__).resolve().parent.parent
STRACE_LOG = ROOT / "tests" / "data" / "strace" / "bert-onnxruntime.log.xz"
MIB = 1 << 20


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_report_on_a_file_that_is_no_result_says_so(run_cli, tmp_path, bundled_trace):
    binary = tmp_path / "result.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    line = one_error_line(run_cli("report", binary, binary))
    assert "not a result" in line and "codec" not in line, line
    line = one_error_line(run_cli("report", bundled_trace, binary))
    assert "an mmreplay trace, not a result" in line, line


def test_info_on_a_compressed_strace_log_points_to_import(run_cli):
    line = one_error_line(run_cli("info", STRACE_LOG))
    assert f"if it is an strace log: mmreplay import {STRACE_LOG}" in line, line
    assert "an xz-compressed file" in line, line


def test_a_typo_in_compare_policies_names_that_option(run_cli, bundled_trace):
    line = one_error_line(run_cli("compare", bundled_trace, "--policies", "kernel,algn-ge-pmd"))
    assert line.startswith("Error: bad --policies value 'algn-ge-pmd': did you mean "
                           "align-ge-pmd?"), line


def test_compare_varies_another_option_without_naming_policies(run_cli, tmp_path):
    """The help's own example: --thp always,never alone compares THP under one policy."""
    trace = write_trace(buffers_trace(4, MIB), tmp_path / "t.arrow")
    result = run_cli("compare", trace, "--thp", "always,never", "--repeat", "1", "--warmup", "0",
                     "--touch", "none")
    assert result.exit_code == 0, result.output
    assert "mmreplay compare: thp on t.arrow" in result.stdout


def test_the_memory_budget_error_gives_sizes_people_read(run_cli, tmp_path):
    trace = write_trace(buffers_trace(8, 4 * MIB), tmp_path / "t.arrow")
    line = one_error_line(run_cli("replay", trace, "--max-live", "8M"))
    assert "12.00 MiB live > --max-live 8.00 MiB" in line, line


@pytest.mark.parametrize("command", ["replay", "compare", "layout"])
def test_help_says_which_kernel_each_policy_is_and_what_thp_always_does(run_cli, command):
    text = run_cli(command, "--help").stdout
    for policy, kernel in (("no-align", "Linux <= 6.6"), ("align-ge-pmd", "6.7-6.11 (efa7df3e3bb5)"),
                           ("align-pmd-multiple", "6.12.y/6.13+ (d4148aeab412")):
        line = next(line for line in text.splitlines() if line.strip().startswith(policy + " "))
        assert kernel in line, line
    thp = text[text.index("THP (--thp):"):]
    assert "MADV_HUGEPAGE" in thp and "enabled=always" in thp and "enabled=never" in thp
    assert "powers of 1024" in text


def test_every_size_option_says_k_is_1024(run_cli):
    text = " ".join(run_cli("synth", "--help").stdout.split())
    assert "powers of 1024" in text and "2G (GiB)" in text and "(K = KiB)" in text


def test_the_command_list_is_not_cut_off():
    env = dict(os.environ, COLUMNS="80")
    script = Path(sys.executable).with_name("mmreplay")
    text = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env,
                          timeout=PATIENCE_S).stdout
    commands = text[text.index("Commands:"):text.index("Typical journey")]
    assert "..." not in commands and "\u2026" not in commands, commands
    assert all(len(line) <= 80 for line in text.splitlines())
