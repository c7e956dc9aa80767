"""One allocation-level recording through four allocators, each allocator's mm calls under three
placement policies: the allocator x policy table of issue 16 (docs/findings.md).

Step 1, per allocator (a child process on this host's kernel, THP as this host has it):

    mmreplay replay TRACE --allocator A --repeat R --mm-trace DIR/mm-A.arrow -o DIR/A.json

gives calls/s, malloc/free latency (rdtsc per call), minor faults, peak RSS growth and the
allocator's own mappings at the peak of requested bytes; the last run, under strace, writes the
mm calls the allocator made (DIR/mm-A.arrow).

Step 2, per allocator, that mm trace under each policy with THP always (MADV_HUGEPAGE on every
mapping, so that khugepaged may also collapse):

    mmreplay compare DIR/mm-A.arrow --policies no-align,align-ge-pmd,align-pmd-multiple \\
        --thp always --repeat R -o DIR/cmp-A.json

gives peak Rss, minor faults, mappings >= 2 MiB and how many the policy 2 MiB-aligned, peak
AnonHugePages, THP faults and collapses. brk calls are not replayed at the mm level (the
replaying process's heap belongs to Python): glibc's main-arena heap is in step 1 only.

    python benchmarks/allocator_policies.py TRACE [--allocators glibc,jemalloc,mimalloc,tcmalloc]
        [--policies no-align,align-ge-pmd,align-pmd-multiple] [--repeat 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

MIB = 1 << 20


def run(command: list[str]) -> None:
    print("$ " + shlex.join(command), flush=True)
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {done.stderr.strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", help="an allocation-level trace (mmreplay record --malloc)")
    parser.add_argument("--allocators", default="glibc,jemalloc,mimalloc,tcmalloc")
    parser.add_argument("--policies", default="no-align,align-ge-pmd,align-pmd-multiple")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mmreplay", default=str(Path(sys.executable).with_name("mmreplay")))
    parser.add_argument("--keep", metavar="DIR", help="keep the results and mm traces here")
    parser.add_argument("--reuse", action="store_true",
                        help="with --keep: print the tables from the results already there")
    args = parser.parse_args()
    allocators = args.allocators.split(",")
    print(f"machine      {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="mmreplay-alloc-pol-"))
    folder.mkdir(parents=True, exist_ok=True)
    level, mm = {}, {}
    for allocator in allocators:
        mm_trace, result = folder / f"mm-{allocator}.arrow", folder / f"{allocator}.json"
        if args.reuse and result.exists() and (folder / f"cmp-{allocator}.json").exists():
            level[allocator] = json.loads(result.read_text())
            mm[allocator] = json.loads((folder / f"cmp-{allocator}.json").read_text())
            continue
        run([args.mmreplay, "replay", args.trace, "--allocator", allocator, "--repeat",
             str(args.repeat), "--mm-trace", str(mm_trace), "-o", str(result), "--no-progress"])
        level[allocator] = json.loads(result.read_text())
        compared = folder / f"cmp-{allocator}.json"
        run([args.mmreplay, "compare", str(mm_trace), "--policies", args.policies, "--thp",
             "always", "--repeat", str(args.repeat), "-o", str(compared), "--no-progress"])
        mm[allocator] = json.loads(compared.read_text())

    print("\nAllocation level: the recorded calls through each allocator, on this host "
          f"(Linux {level[allocators[0]]['host']['kernel']}, "
          "THP as the host has it); medians of the runs")
    print(f"{'allocator':<10}{'calls/s':>10}{'malloc p50/p99/mean ns':>24}{'free p50/p99/mean ns':>22}"
          f"{'minor faults':>13}{'peak RSS+ MiB':>14}{'mm calls':>9}{'mmaps>=2M':>10}"
          f"{'PMD mult.':>10}")
    for allocator in allocators:
        doc = level[allocator]
        s = {k: v["median"] for k, v in doc["summary"].items()}
        calls = sum(doc["mm_trace"]["ops"].values())
        print(f"{allocator:<10}{s['calls_per_s']:>10,.0f}"
              f"{s['ops.malloc.p50_ns']:>10,.0f}/{s['ops.malloc.p99_ns']:,.0f}/"
              f"{s['ops.malloc.mean_ns']:<8,.0f}"
              f"{s['ops.free.p50_ns']:>8,.0f}/{s['ops.free.p99_ns']:,.0f}/{s['ops.free.mean_ns']:<8,.0f}"
              f"{s['minflt']:>13,.0f}{s['peak_rss_growth_bytes'] / MIB:>14.1f}{calls:>9,}"
              f"{doc['mm_trace']['large_mmaps']:>10}{doc['mm_trace']['pmd_multiple_mmaps']:>10}")

    print("\nmm level: each allocator's own mm calls replayed under each placement policy, "
          "--thp always, --touch pages; medians of the runs")
    print(f"{'allocator':<10}{'policy':<19}{'peak Rss MiB':>13}{'minor faults':>13}"
          f"{'maps>=2M':>9}{'aligned':>8}{'AnonHuge MiB':>13}{'THP faults':>11}{'collapses':>10}")
    for allocator in allocators:
        for result in mm[allocator]["results"]:
            s = {k: v["median"] for k, v in result["summary"].items()}
            if not s.get("ops.mmap.count"):
                skipped = result["runs"][0].get("skipped", {})
                print(f"{allocator:<10}{result['config']['policy']:<19}  no mmap to place "
                      f"({skipped.get('brk', 0)} brk calls: its heap is the program break)")
                continue
            print(f"{allocator:<10}{result['config']['policy']:<19}"
                  f"{s['peak_rss_bytes'] / MIB:>13.1f}{s['minflt']:>13,.0f}"
                  f"{s['large_mappings']:>9.0f}{s['pmd_aligned_large_mappings']:>8.0f}"
                  f"{s['peak_anon_huge_bytes'] / MIB:>13.1f}"
                  f"{s.get('vmstat.thp_fault_alloc', 0):>11,.0f}"
                  f"{s.get('vmstat.thp_collapse_alloc', 0):>10,.0f}")
    print("\nlatency: rdtsc around each call, in ns; two back-to-back rdtsc reads take ~10 ns "
          "on this VM, so a p50 of 10 is the timer's floor.")
    print("peak RSS+: growth of the replaying child's RSS over its RSS before the first call; "
          "mm calls/mmaps>=2M/PMD mult.: the allocator's mm trace (mmaps >= 2 MiB, of them exact "
          "multiples of 2 MiB); aligned: mappings >= 2 MiB the policy placed 2 MiB-aligned; THP "
          "faults and collapses are system-wide vmstat deltas during each run (other processes' "
          "included). brk calls are not replayed at the mm level; no placement rule moves the "
          "program break.")
    print(f"results in {folder}")
    print(f"machine      load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
