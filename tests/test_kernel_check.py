"""kernels/check_alignment.c: where real kernels put anonymous mmaps, against the upstream rules.

check_alignment makes a fixed sequence of private anonymous mmaps and reports, per length, how
many start 2 MiB-aligned and the gaps between neighbours, plus a freed-and-refilled 4 MiB mapping
and two hinted calls. `rule_violations` says what an output contradicts in each upstream rule.

- On the host, it runs live and the host's release picks the rule (<= 6.6 or >= 6.13; releases in
  between are skipped, as stable and distribution backports make their rule ambiguous).
- kernels/outputs/ holds its output on real kernels booted with kernels/check.sh (Debian's 6.1,
  the three kernels of kernels/build.sh, the 6.18 host): each must satisfy its own rule and
  contradict every other one, which also shows the rules tell the kernels apart.

Only deterministic facts are asserted: starts that can be aligned by chance are bounded, not
counted (successive plain placements of 3 MiB + 4 KiB or 6 MiB + 8 KiB differ by 4 or 8 KiB
modulo 2 MiB, so at most one of them is aligned by chance).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
SOURCE = KERNELS / "check_alignment.c"
RULES = ("no-align", "align-ge-pmd", "align-pmd-multiple-6.12.0", "align-pmd-multiple-6.13")
# Recorded output -> the upstream rule the kernel claims (kernels/README.md).
RECORDED = {
    "vmlinuz-6.1.0-50-amd64.txt": "no-align",
    "6.1-plain.txt": "no-align",
    "6.1-align-ge-pmd.txt": "align-ge-pmd",
    "6.1-align-pmd-multiple.txt": "align-pmd-multiple-6.12.0",
    "host-6.18.txt": "align-pmd-multiple-6.13",
}


def parse(output: str) -> dict:
    """The rows per length ({"count", "aligned", "gaps": {kib or "none": count}}) and the
    `key: value` lines of check_alignment's output."""
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
    assert set(rows) == {"3M+4K", "4M", "1M", "6M+8K", "2M"}, output
    return {"rows": rows, **keys}


def rule_violations(result: dict, rule: str) -> list[str]:
    """What in check_alignment's parsed output contradicts ``rule`` (empty: consistent)."""
    rows, bad = result["rows"], []

    def holeless(size):  # neighbours abut: no gap, or none of ours above
        return set(rows[size]["gaps"]) <= {"0", "none"}

    def stacked(size):  # abut, except possibly the first of the run (its gap is top % 2 MiB)
        return sum(n for gap, n in rows[size]["gaps"].items() if gap not in ("0", "none")) <= 1

    def all_aligned(size):
        return rows[size]["aligned"] == rows[size]["count"]

    hinted = int(result["hint_occupied_4M"].split()[1].split("/")[0])
    if rule == "no-align":
        bad += [f"{s}: a hole beside a mapping" for s in rows if not holeless(s)]
        bad += [f"{s}: more than one aligned" for s in ("3M+4K", "6M+8K") if rows[s]["aligned"] > 1]
        if not result["refill_4M"].startswith("same address"):
            bad.append("the freed 4 MiB hole was not reused")
    elif rule == "align-ge-pmd":
        bad += [f"{s}: not all aligned" for s in ("3M+4K", "4M", "6M+8K", "2M") if not all_aligned(s)]
        bad += [f"{s}: no hole beside each" for s in ("3M+4K", "6M+8K")
                if rows[s]["gaps"].get("0", 0) or rows[s]["gaps"].get("none", 0) > 1]
        bad += [f"{s}: exact multiples not stacked" for s in ("4M", "2M") if not stacked(s)]
    else:  # the 6.12 rule: exact multiples only
        bad += [f"{s}: not all aligned" for s in ("4M", "2M") if not all_aligned(s)]
        bad += [f"{s}: exact multiples not stacked" for s in ("4M", "2M") if not stacked(s)]
        bad += [f"{s}: more than one aligned" for s in ("3M+4K", "6M+8K") if rows[s]["aligned"] > 1]
        bad += [f"{s}: a hole beside a mapping" for s in ("3M+4K", "6M+8K") if not holeless(s)]
    if rule in ("align-ge-pmd", "align-pmd-multiple-6.12.0", "align-pmd-multiple-6.13"):
        # The padded search needs 6 MiB, so the exact 4 MiB hole cannot be reused.
        if result["refill_4M"] != "new address, aligned yes":
            bad.append(f"refill: {result['refill_4M']}")
    if rule in ("align-ge-pmd", "align-pmd-multiple-6.12.0"):
        # A hint that cannot be granted with the padding is aligned elsewhere (fixed in 6.13).
        if hinted != 4:
            bad.append(f"hinted 4 MiB on an occupied address aligned {hinted}/4")
        if result["hint_exact_hole_4M"] != "moved, aligned yes":
            bad.append(f"hint on an exact hole: {result['hint_exact_hole_4M']}")
    else:  # no-align and 6.13+: a hint means no THP alignment
        if hinted > 1:
            bad.append(f"hinted 4 MiB on an occupied address aligned {hinted}/4")
        if result["hint_exact_hole_4M"] != "at hint, aligned no":
            bad.append(f"hint on an exact hole: {result['hint_exact_hole_4M']}")
    return bad


@pytest.mark.parametrize("name", sorted(RECORDED))
def test_each_real_kernel_follows_its_rule_and_no_other(name):
    result = parse((KERNELS / "outputs" / name).read_text())
    assert rule_violations(result, RECORDED[name]) == []
    for other in RULES:
        if other != RECORDED[name]:
            assert rule_violations(result, other), f"{name} also fits {other}"


def _release() -> tuple[int, int]:
    major, minor = re.match(r"(\d+)\.(\d+)", platform.release()).groups()
    return int(major), int(minor)


def test_the_host_follows_its_release_rule(tmp_path):
    compiler = os.environ.get("CC", "cc")
    if platform.machine() != "x86_64" or shutil.which(compiler) is None:
        pytest.skip(f"needs x86-64 and a C compiler ({compiler})")
    if (6, 7) <= _release() < (6, 13):
        pytest.skip(f"host kernel {platform.release()}: 6.7-6.12 rules depend on stable backports")
    rule = "no-align" if _release() < (6, 7) else "align-pmd-multiple-6.13"
    binary = tmp_path / "check_alignment"
    subprocess.run([compiler, "-O2", "-Wall", "-Werror", "-o", str(binary), str(SOURCE)], check=True)
    output = subprocess.run([str(binary)], check=True, capture_output=True, text=True).stdout
    assert rule_violations(parse(output), rule) == [], output
