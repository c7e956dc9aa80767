"""What a new user reads: error messages that say what is wrong and what to do, help that
says what each option means, and output that lines up. Through the real CLI."""

from __future__ import annotations

import os
import re
import shutil
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


# ---------------------------------------------------------------------------------------------
# Output that lines up (item 10).


def test_compare_and_report_headers_line_up_in_72_columns(run_cli, tmp_path):
    trace = write_trace(buffers_trace(4, MIB), tmp_path / "t.arrow")
    result = tmp_path / "r.json"
    assert run_cli("replay", trace, "--touch", "none", "--threads", "recorded",
                   "-o", result).exit_code == 0
    for text in (run_cli("report", result, result).stdout,
                 run_cli("compare", trace, "--policies", "kernel,no-align", "--repeat", "1",
                         "--warmup", "0", "--touch", "none").stdout):
        header = text.split("\n\n")[0].splitlines()[1:]
        assert all(len(line) <= 72 for line in text.splitlines()), text
        # every value starts in column 8, the full sha256 on one line
        assert all(line[7] == " " and line[8] != " " or line.startswith(" " * 8)
                   for line in header), header
        assert any(re.fullmatch(r"sha256  [0-9a-f]{64}", line) for line in header), header


def test_replay_config_line_names_the_threads(run_cli, tmp_path):
    trace = write_trace(buffers_trace(4, MIB), tmp_path / "t.arrow")
    text = run_cli("replay", trace, "--touch", "none", "--threads", "recorded",
                   "--repeat", "2").stdout  # median, min and max columns
    config = " ".join(text[text.index("\nconfig  "):].split("\n\n")[0].split())
    assert "threads=recorded order=deps" in config, text
    assert all(len(line) <= 72 for line in text.splitlines()), text


def test_info_fits_72_columns(run_cli):
    for trace in sorted((ROOT / "traces" / "data").glob("*.arrow")):
        text = run_cli("info", trace).stdout
        assert all(len(line) <= 72 for line in text.splitlines()), (trace, text)


@pytest.mark.skipif(not shutil.which("strace"), reason="strace is not installed")
def test_record_says_1_thread(run_cli, tmp_path):
    result = run_cli("record", "-o", tmp_path / "t.arrow", "--", sys.executable, "-c",
                     "import mmap; mmap.mmap(-1, 1 << 20).close()")
    assert result.exit_code == 0, result.output
    assert ", 1 thread;" in result.stderr and "1 threads" not in result.stderr, result.stderr


def test_the_ascii_and_png_pictures_have_the_same_rows(tmp_path):
    """Far-apart mappings give 6-digit row labels: the ASCII rows used to be 62 MiB, the PNG's
    64 MiB. Both now hold the same power of two of 2 MiB blocks."""
    pytest.importorskip("matplotlib")
    from test_layout import made_up_layout

    from replay.reporters.layout_text import render_ascii
    from replay.reporters.pictures import plot_layout

    a = 0x7F00_0000_0000
    layout = made_up_layout([(a + i * 7 * MIB, a + i * 7 * MIB + 5 * MIB) for i in range(200)]
                            + [(a + 300_000 * MIB, a + 300_040 * MIB)])
    text = render_ascii(layout)
    row_mib = int(re.search(r"1 row = (\d+) MiB", " ".join(text.split())).group(1))
    assert row_mib == 64, text
    assert plot_layout(layout, tmp_path / "x.png") == row_mib * MIB
