"""kernels/check_alignment.c on the host: the running kernel's placement rule, seen with real mmaps.

The same program checks the 6.1 kernels that kernels/build.sh makes (outputs in kernels/README.md).
Here it runs on the host, and the host's release says which upstream rule must hold:
<= 6.6 aligns nothing on purpose, >= 6.13 aligns exact 2 MiB multiples mapped with no hint.
Releases in between are skipped: stable and distribution backports make their rule ambiguous.
Only deterministic facts are asserted (placements that can also happen by chance are bounded).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parent.parent / "kernels" / "check_alignment.c"


def _release() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", platform.release()).groups()
    return int(major), int(minor)


def _parse(output: str) -> dict:
    """The rows per length and the `key: value` lines of check_alignment's output."""
    rows, keys = {}, {}
    for line in output.splitlines():
        row = re.match(r"(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.*)$", line)
        if row and not line.startswith("length"):
            gaps = {}
            for part in row.group(5).split(", "):
                value, count = part.rsplit(" x", 1)
                gaps[value] = int(count)
            rows[row.group(1)] = {"count": int(row.group(3)), "aligned": int(row.group(4)),
                                  "gaps": gaps}
        elif ": " in line:
            key, value = line.split(": ", 1)
            keys[key] = value
    return {"rows": rows, **keys}


@pytest.fixture(scope="module")
def host_check(tmp_path_factory) -> dict:
    compiler = os.environ.get("CC", "cc")
    if platform.machine() != "x86_64" or shutil.which(compiler) is None:
        pytest.skip(f"needs x86-64 and a C compiler ({compiler})")
    binary = tmp_path_factory.mktemp("check") / "check_alignment"
    subprocess.run([compiler, "-O2", "-Wall", "-Werror", "-o", str(binary), str(SOURCE)], check=True)
    result = _parse(subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout)
    assert set(result["rows"]) == {"3M+4K", "4M", "1M", "6M+8K", "2M"}
    return result


def test_host_follows_its_release_rule(host_check):
    rows = host_check["rows"]
    if _release() >= (6, 13):
        # Exact multiples: all aligned; each run of them stacks flush except the first mapping,
        # which leaves (top % 2 MiB) above itself.
        for size in ("4M", "2M"):
            assert rows[size]["aligned"] == rows[size]["count"], (size, host_check)
        # Other lengths are placed plainly: abutting neighbours, at most one start aligned by
        # chance (successive starts differ by 4 or 8 KiB modulo 2 MiB).
        for size in ("3M+4K", "6M+8K"):
            assert rows[size]["aligned"] <= 1, (size, host_check)
            assert set(rows[size]["gaps"]) <= {"0", "none"}, (size, host_check)
        # A hint turns THP alignment off (6.13), whether or not it can be granted.
        assert host_check["hint_exact_hole_4M"] == "at hint, aligned no"
        assert int(host_check["hint_occupied_4M"].split()[1].split("/")[0]) <= 1
        # A freed 4 MiB hole cannot take 4 MiB again: the padded search needs 6 MiB.
        assert host_check["refill_4M"] == "new address, aligned yes"
    elif _release() <= (6, 6):
        # Plain top-down placement: everything abuts, holes are reused, hints are honoured.
        for size, row in rows.items():
            assert set(row["gaps"]) <= {"0", "none"}, (size, host_check)
        assert host_check["refill_4M"].startswith("same address")
        assert host_check["hint_exact_hole_4M"].startswith("at hint")
    else:
        pytest.skip(f"host kernel {platform.release()}: 6.7-6.12 rules depend on stable backports")
