"""How mmap/munmap latency and throughput change with replay threads (issue 8).

Synthesizes the same churn workload with T = 1, 2 and 4 worker streams (`mmreplay synth
--threads T`), replays each with one OS thread per recorded thread (`--threads recorded`), and
prints events/s, mmap/munmap p50/p99 and the time threads spent waiting on each other. The
baseline is T = 1 measured in the same run; every ratio is against it.

    python benchmarks/threads_scaling.py [--count 20000] [--repeat 3]

mmap and munmap take the process's mmap lock for writing, so on a 2-core machine more threads
mostly add contention: expect p99 to grow and events/s to stay flat or fall.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from replay.running.config import ReplayConfig
from replay.running.runs import Prepared
from replay.running.session import run_program


def synth_trace(folder: Path, threads: int, count: int) -> Path:
    out = folder / f"churn-{threads}.arrow"
    subprocess.run([sys.executable, "-m", "replay.cli", "synth", "--count", str(count),
                    "--size", "uniform:64K,1M", "--live", "64", "--lifetime", "random",
                    "--threads", str(threads), "--seed", "7", "-o", str(out)],
                   check=True, capture_output=True)
    return out


def measure(trace: Path, repeat: int) -> dict:
    prepared = Prepared(trace, ReplayConfig(threads="recorded", touch="first"))
    runs = [run_program(prepared.program, prepared.config, prepared.alignment,
                        plan=prepared.plan) for _ in range(repeat + 1)][1:]  # first: warm-up

    def median(path):
        values = []
        for run in runs:
            value = run
            for key in path.split("."):
                value = value[key]
            values.append(value)
        return statistics.median(values)

    return {"events_per_s": median("events_per_s"), "mmap_p50": median("ops.mmap.p50_ns"),
            "mmap_p99": median("ops.mmap.p99_ns"), "munmap_p50": median("ops.munmap.p50_ns"),
            "munmap_p99": median("ops.munmap.p99_ns"), "wait_s": median("wait_s"),
            "engine_s": median("engine_s"), "os_threads": runs[0]["os_threads"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000, help="mmaps per workload")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs (median)")
    args = parser.parse_args()
    print(f"host: {os.uname().release}, {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.2f}; {args.count} mmaps of 64 KiB-1 MiB, 64 alive, random "
          f"unmap order, --touch first; median of {args.repeat} runs after a warm-up")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for threads in (1, 2, 4):
            rows.append((threads, measure(synth_trace(Path(folder), threads, args.count),
                                          args.repeat)))
    base = rows[0][1]
    print(f"{'threads':>7} {'events/s':>10} {'x base':>7} {'mmap p50 ns':>12} {'p99 ns':>9} "
          f"{'munmap p50 ns':>14} {'p99 ns':>9} {'wait s':>7}")
    for threads, r in rows:
        print(f"{threads:>7} {r['events_per_s']:>10,.0f} {r['events_per_s'] / base['events_per_s']:>6.2f}x "
              f"{r['mmap_p50']:>12,.0f} {r['mmap_p99']:>9,.0f} {r['munmap_p50']:>14,.0f} "
              f"{r['munmap_p99']:>9,.0f} {r['wait_s']:>7.3f}")
    print("baseline: the 1-thread row; events/s = trace events / seconds inside the replay loops; "
          "wait s = time threads spent waiting on another thread's call (summed over threads)")


if __name__ == "__main__":
    main()
