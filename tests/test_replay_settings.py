"""Warm-up, host metadata and presets' replay settings (issue 19, item 7).

- `replay` runs one uncounted warm-up round by default, as `compare` does: the counted run's
  page faults are then the replay's own (one per page touched), not the JIT's start-up.
- Host metadata records every file under /sys/kernel/mm/transparent_hugepage, knobs this code
  does not know included (this kernel has anon_beside_full).
- A preset carries the replay settings it needs (malloc1: --touch first --thp always), which
  `replay` uses unless told otherwise, and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tracegen import buffers_trace
from traces import read_trace, trace_metadata, write_trace
from traces.host import THP_SYSFS, host_metadata

MIB, PAGE = 1 << 20, 4096


def replay_json(tmp_path: Path, *args) -> dict:
    """`mmreplay replay` in a fresh process (so the JIT loads in it), its result document."""
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, "-m", "replay.cli", "replay", *map(str, args),
                           "-o", str(out), "--no-progress"], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text()) | {"stdout": done.stdout}


def test_the_counted_run_takes_the_replays_faults_not_the_jits(tmp_path):
    path = write_trace(buffers_trace(4, MIB), tmp_path / "t.arrow")  # 1024 pages written
    warm = replay_json(tmp_path, path)  # the default: one warm-up run
    assert warm["warmup"] == 1 and "after 1 uncounted warm-up run" in warm["stdout"]
    run = warm["runs"][0]
    pages = 4 * MIB // PAGE
    # One fault per page written, plus a few of the replay's own bookkeeping: nothing of the
    # engine's start-up or of the first run's first touches.
    assert pages <= run["minflt"] < pages + 128
    assert replay_json(tmp_path, path, "--warmup", "0")["warmup"] == 0


def test_host_metadata_records_every_thp_sysfs_file():
    if not THP_SYSFS.is_dir():
        return  # a kernel without THP: nothing to record (host_metadata keeps {})
    recorded = host_metadata()["thp"]["sysfs"]
    on_disk = {os.path.relpath(os.path.join(folder, name), THP_SYSFS)
               for folder, _, names in os.walk(THP_SYSFS) for name in names}
    assert set(recorded) == on_disk
    for name in ("enabled", "defrag", "khugepaged/max_ptes_none", "hugepages-2048kB/enabled"):
        assert name in recorded
    if (THP_SYSFS / "anon_beside_full").exists():
        assert recorded["anon_beside_full"] == int((THP_SYSFS / "anon_beside_full").read_text())


def test_a_presets_replay_settings_apply_unless_told_otherwise(run_cli, tmp_path):
    path = tmp_path / "malloc1.arrow"
    done = run_cli("synth", "--preset", "malloc1", "--count", "20", "-o", path)
    assert done.exit_code == 0, done.output
    assert trace_metadata(read_trace(path))["replay_settings"] == {"touch": "first",
                                                                    "thp": "always"}
    runs = {}
    for policy in ("no-align", "align-ge-pmd"):
        document = replay_json(tmp_path, path, "--policy", policy, "--warmup", "0")
        assert document["config"]["touch"] == "first" and document["config"]["thp"] == "always"
        assert document["config"]["from_trace"] == {"touch": "first", "thp": "always"}
        said = " ".join(document["stdout"].split())
        assert "from the trace's recommended replay settings (preset malloc1" in said
        runs[policy] = document["runs"][0]
    # Its effect: the chunk header's fault maps a huge page only when the chunk is aligned.
    assert runs["no-align"]["peak_anon_huge_bytes"] == 0
    assert runs["align-ge-pmd"]["peak_anon_huge_bytes"] == 2 * MIB
    told = replay_json(tmp_path, path, "--touch", "pages", "--warmup", "0")
    assert told["config"]["touch"] == "pages" and told["config"]["from_trace"] == {"thp": "always"}
