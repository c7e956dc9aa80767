"""The README's two set-up commands are the project's contract with new users and with CI."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line.strip() for line in lines[1:6] if line.startswith("    ")]


def test_readme_starts_with_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2
    assert "mmreplay" in commands[0] and "pip install" in commands[0]
    assert "pytest" in commands[1] and "pip install" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci


# ---------------------------------------------------------------------------------------------
# The README's output blocks are real output: a line "..." marks where lines were left out.

CUT = "..."


def readme_outputs() -> dict[str, list[str]]:
    """Each `    $ COMMAND` of the README -> the indented lines printed under it."""
    outputs: dict[str, list[str]] = {}
    current = None
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("    $ "):
            current = outputs.setdefault(line[6:].split("  #")[0].strip(), [])
        elif current is not None and (line.startswith("    ") or not line.strip()):
            current.append(line[4:])
        else:
            current = None
    for lines in outputs.values():
        while lines and not lines[-1].strip():
            lines.pop()
    return outputs


def shown_as_printed(shown: list[str], printed: list[str]) -> str | None:
    """None when ``shown`` is ``printed`` with runs of lines left out only where a line "..."
    stands; else what differs."""
    at, may_skip = 0, False
    for line in shown:
        if line.strip() == CUT:
            may_skip = True
            continue
        if may_skip:
            found = [k for k in range(at, len(printed)) if printed[k].rstrip() == line.rstrip()]
            if not found:
                return f"not printed (after line {at}): {line!r}"
            at = found[0] + 1
        elif at >= len(printed) or printed[at].rstrip() != line.rstrip():
            return f"line {at} is {printed[at] if at < len(printed) else None!r}, shown {line!r}"
        else:
            at += 1
        may_skip = False
    if at < len(printed) and not may_skip:
        return f"lines left out without a mark: {printed[at:]!r}"
    return None


def test_the_cut_check_needs_a_mark():
    printed = ["a", "b", "c", "d"]
    assert shown_as_printed(["a", "b", "c", "d"], printed) is None
    assert shown_as_printed(["a", CUT, "c", CUT], printed) is None
    assert shown_as_printed(["a", "c", "d"], printed) is not None     # "b" cut without a mark
    assert shown_as_printed(["a", "b"], printed) is not None          # the end cut unmarked
    assert shown_as_printed(["a", "x", CUT], printed) is not None


@pytest.mark.parametrize("command", [
    "mmreplay import tests/data/strace/bert-onnxruntime.log.xz -o ort.arrow",
    "mmreplay info traces/data/bert-torch.arrow",
    "mmreplay fit traces/data/bert-torch.arrow -o bert.toml",
])
def test_readme_output_is_what_the_command_prints(command, tmp_path):
    """Run from a directory where the README's relative paths resolve, stdout and stderr as a
    terminal shows them. (Not layout: under load, a few of its buffers have been seen placed
    1.19 GiB away from the others, which moves every row of the picture.)"""
    shown = readme_outputs()[command]
    for name in ("traces", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    script = Path(sys.executable).with_name("mmreplay")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "replay.cli"]
    done = subprocess.run(program + shlex.split(command)[1:], cwd=tmp_path, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert done.returncode == 0, done.stdout
    problem = shown_as_printed(shown, done.stdout.splitlines())
    assert problem is None, f"{problem}\n--- printed:\n{done.stdout}"
