"""Running ``mmreplay replay`` from a test and reading back what it measured."""

from __future__ import annotations

import json
from pathlib import Path


def first_run(run_cli, trace, result: Path, *options) -> dict:
    """Replay ``trace`` with ``options`` (``run_cli`` is conftest's fixture), writing the result
    to ``result``; the result's first run."""
    done = run_cli("replay", trace, "-o", result, *options)
    assert done.exit_code == 0, done.output
    return json.loads(result.read_text())["runs"][0]
