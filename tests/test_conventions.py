"""One command-line convention for every command, checked through the real CLI: `--json` is a
flag that prints JSON, `-o FILE` writes the output and `-` is stdout (never a file named '-'),
`--progress/--no-progress` wherever a bar is drawn, a bar per run, unknown options refused."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import click
import pyarrow as pa
import pytest

from processes import PATIENCE_S, run_on_a_terminal
from replay.cli import cli
from traces import write_trace
from tracegen import buffers_trace

MIB = 1 << 20
BAR_COMMANDS = {"replay", "compare", "layout", "import", "record"}


def mmreplay_in(folder, *args) -> subprocess.CompletedProcess:
    """The real command in ``folder`` (bytes kept: stdout may be a trace or an image)."""
    script = os.path.join(os.path.dirname(sys.executable), "mmreplay")
    return subprocess.run([script, *map(str, args)], cwd=folder, capture_output=True,
                          timeout=PATIENCE_S)


@pytest.fixture
def small(tmp_path):
    return write_trace(buffers_trace(8, MIB), tmp_path / "small.arrow")


def small_log(path):
    path.write_text("".join(f"100  1700000000.{i:06d} mmap(NULL, 8192, PROT_READ|PROT_WRITE, "
                            f"MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = {0x7f0000000000 + i * 8192:#x}\n"
                            for i in range(50)))
    return path


def options(name: str) -> dict[str, click.Option]:
    return {opt: param for param in cli.commands[name].params
            if isinstance(param, click.Option) for opt in param.opts + param.secondary_opts}


def test_json_is_a_flag_and_o_writes_a_file_on_every_command():
    for name in cli.commands:
        found = options(name)
        if "--json" in found:
            assert found["--json"].is_flag, f"{name} --json takes a value"
        if "-o" in found:
            assert found["--output"] is found["-o"], name
    for name in ("info", "import", "layout", "replay", "compare", "report", "synth", "fit"):
        assert "--json" in options(name) and "-o" in options(name), name


def test_every_command_that_draws_a_bar_can_be_told_not_to():
    for name in BAR_COMMANDS:
        found = options(name)
        assert "--progress" in found and "--no-progress" in found, name


def test_replay_and_compare_print_json_with_a_bare_json_flag(small, tmp_path):
    done = mmreplay_in(tmp_path, "replay", small, "--json", "--touch", "none")
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["mmreplay_result"] == 1
    done = mmreplay_in(tmp_path, "compare", small, "--policies", "kernel,no-align", "--repeat",
                       "1", "--warmup", "0", "--touch", "none", "--json")
    assert done.returncode == 0, done.stderr.decode()
    assert len(json.loads(done.stdout)["results"]) == 2


def test_the_old_json_file_form_says_what_to_use(small, tmp_path):
    done = mmreplay_in(tmp_path, "replay", small, "--json", "a.json")
    assert done.returncode == 2 and b"-o FILE" in done.stderr
    assert not (tmp_path / "a.json").exists()


def test_dash_is_stdout_wherever_a_file_is_written(small, tmp_path):
    """Each writer, with '-': the output comes on stdout, the report on stderr, and no file
    named '-' is ever created."""
    work = tmp_path / "work"
    work.mkdir()
    log = small_log(tmp_path / "app.log")
    result = tmp_path / "r.json"
    assert mmreplay_in(work, "replay", small, "--touch", "none", "-o", result).returncode == 0

    def trace_rows(data: bytes) -> int:
        return pa.ipc.open_file(io.BytesIO(data)).read_all().num_rows

    cases = [
        (["import", log, "-o", "-"], lambda out: trace_rows(out) == 50, b"mm calls"),
        (["synth", "--count", "4", "-o", "-"], lambda out: trace_rows(out) == 8, b"wrote"),
        (["fit", small, "-o", "-"], lambda out: b"[sizes]" in out or b"size" in out, b"KS"),
        (["replay", small, "--touch", "none", "-o", "-"],
         lambda out: json.loads(out)["mmreplay_result"] == 1, b"events/s"),
        (["compare", small, "--policies", "kernel,no-align", "--repeat", "1", "--warmup", "0",
          "--touch", "none", "-o", "-"], lambda out: len(json.loads(out)["results"]) == 2,
         b"%change"),
        (["report", result, result, "-o", "-"], lambda out: b"%change" in out, b""),
        (["info", small, "-o", "-"], lambda out: b"\nevents       16" in out, b""),
        (["info", small, "--png", "-"], lambda out: out.startswith(b"\x89PNG"), b"\nevents"),
        (["layout", small, "--png", "-"], lambda out: out.startswith(b"\x89PNG"), b"MiB"),
    ]
    for args, stdout_ok, on_stderr in cases:
        done = mmreplay_in(work, *args)
        assert done.returncode == 0, (args, done.stderr.decode())
        assert stdout_ok(done.stdout), (args, done.stdout[:200])
        assert on_stderr in done.stderr, (args, done.stderr.decode())
        assert os.listdir(work) == [], (args, os.listdir(work))


@pytest.mark.parametrize("args", [("info", "{trace}", "--json"),
                                  ("slice", "{trace}", "--events", "0:10", "-o", "-"),
                                  ("share", "{trace}")])
def test_a_full_stdout_is_one_line_not_a_traceback(small, args):
    """/dev/full: every write fails with ENOSPC, as on a full disk behind `> file`."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "replay.cli",
                               *(a.format(trace=small) for a in args)],
                              stdout=full, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 1
    assert done.stderr == "Error: No space left on device\n"


def test_record_refuses_stdout_for_its_trace(tmp_path):
    done = mmreplay_in(tmp_path, "record", "-o", "-", "--", "true")
    assert done.returncode == 2 and b"Error: -o -:" in done.stderr
    assert os.listdir(tmp_path) == []


def test_two_outputs_cannot_both_be_stdout(small, tmp_path):
    done = mmreplay_in(tmp_path, "layout", small, "-o", "-", "--png", "-")
    assert done.returncode == 2 and b"only one output" in done.stderr


def test_a_binary_output_is_not_written_to_a_terminal(small, tmp_path):
    import pty

    master, slave = pty.openpty()
    script = os.path.join(os.path.dirname(sys.executable), "mmreplay")
    done = subprocess.run([script, "synth", "--count", "4", "-o", "-"], stdout=slave,
                          stderr=subprocess.PIPE, cwd=tmp_path, timeout=PATIENCE_S)
    os.close(slave)
    os.close(master)
    assert done.returncode == 2 and b"terminal" in done.stderr


def test_an_unknown_record_option_is_an_option_error(tmp_path):
    marker = tmp_path / "ran"
    done = mmreplay_in(tmp_path, "record", "--no-such-option", "-o", "x.arrow", "--", "touch",
                       marker)
    assert done.returncode == 2, done.stderr.decode()
    assert b"Error: No such option '--no-such-option'" in done.stderr
    assert b"command not found" not in done.stderr
    assert not marker.exists() and not (tmp_path / "x.arrow").exists()
    # a near miss gets a suggestion
    done = mmreplay_in(tmp_path, "record", "--outpt", "x.arrow", "--", "true")
    assert done.returncode == 2 and b"--output" in done.stderr


def bar_frames(shown: str) -> list[tuple[str, int, int, float]]:
    """(label, done, total, share of the bar filled) of each progress bar a terminal showed,
    in order (click redraws a bar after '\r' and hides the cursor meanwhile)."""
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", shown)
    frames = []
    for match in re.finditer(r"^(\S[^\[\n\r]*?)\s+\[([#-]*)\]\s+(\d+)/(\d+)", text,
                             re.MULTILINE):
        bar = match.group(2)
        frames.append((match.group(1).strip(), int(match.group(3)), int(match.group(4)),
                       bar.count("#") / len(bar)))
    return frames


def test_each_run_of_replay_repeat_gets_its_own_bar_from_zero(tmp_path):
    trace = write_trace(buffers_trace(3000, 64 << 10, alive_together=False), tmp_path / "t.arrow")
    code, _, shown = run_on_a_terminal("replay", trace, "--repeat", "2", "--touch", "none")
    assert code == 0, shown
    frames = bar_frames(shown)
    for label, done, total, filled in frames:
        # what the bar shows is what the count says (within one of its cells)
        assert abs(filled - done / total) <= 1 / 30, (label, done, total, filled)
    labels = list(dict.fromkeys(frame[0] for frame in frames))
    # a bar per run, after the uncounted warm-up run's
    assert labels == ["warming up", "replaying run 1 of 2", "replaying run 2 of 2"], labels
    second = [(done, total) for label, done, total, _ in frames if label == labels[1]]
    assert second[0][0] < second[0][1] and second[-1][0] == second[-1][1]


def test_import_and_layout_draw_a_bar_unless_told_not_to(tmp_path, small):
    log = small_log(tmp_path / "app.log")
    for args, label in ((["import", log, "-o", tmp_path / "a.arrow"], "importing"),
                        (["layout", small], "replaying")):
        code, _, shown = run_on_a_terminal(*args)
        assert code == 0, shown
        assert any(frame[0] == label for frame in bar_frames(shown)), shown
        code, _, shown = run_on_a_terminal(*args, "--no-progress")
        assert code == 0, shown
        assert bar_frames(shown) == [], shown
