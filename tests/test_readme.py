"""The README's two set-up commands are the project's contract with new users and with CI."""

from pathlib import Path

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
