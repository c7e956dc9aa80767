"""Fixtures shared by the test files (keep this small: file-specific helpers live in their file).

Test data builders and hypothesis strategies for traces are in ``strategies.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, settings

from strategies import table_from_rows
from traces import write_trace

# The suite runs on 2 busy cores: a wall-clock limit per example would only make property tests flaky.
settings.register_profile("mmreplay", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("mmreplay")

BUNDLED_TRACE = Path(__file__).resolve().parent.parent / "traces" / "data" / "buffers-4632k.arrow"


@pytest.fixture
def run_cli():
    """``run_cli("info", path, "--json")`` -> click Result (stdout and stderr kept apart)."""
    from replay.cli import cli

    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, [str(arg) for arg in args], prog_name="mmreplay")
    return run


@pytest.fixture
def trace_file(tmp_path):
    """``trace_file(rows, name="t.arrow", metadata=None)`` -> path of a trace written by write_trace."""
    def write(rows, name: str = "t.arrow", metadata: dict | None = None) -> Path:
        return write_trace(table_from_rows(rows, metadata), tmp_path / name)
    return write


@pytest.fixture
def bundled_trace() -> Path:
    return BUNDLED_TRACE


@pytest.fixture(scope="session")
def suite_results(tmp_path_factory) -> Path:
    """A folder of real results of the bundled 4632 KiB trace: two replays of two runs each
    (align-ge-pmd, no-align) and a compare document of both policies, as the CLI writes them."""
    from replay.cli import cli

    folder = tmp_path_factory.mktemp("suite-results")
    runner = CliRunner()
    fixed = ["--touch", "first", "--no-progress"]
    for args in (["replay", BUNDLED_TRACE, "--policy", "align-ge-pmd", "--repeat", "2", "-o",
                  folder / "a.json", *fixed],
                 ["replay", BUNDLED_TRACE, "--policy", "no-align", "--repeat", "2", "-o",
                  folder / "b.json", *fixed],
                 ["compare", BUNDLED_TRACE, "--policies", "align-ge-pmd,no-align", "--repeat", "1",
                  "-o", folder / "c.json", *fixed]):
        result = runner.invoke(cli, [str(arg) for arg in args], prog_name="mmreplay")
        assert result.exit_code == 0, result.output
    return folder
