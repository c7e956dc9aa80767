"""Aggregate events/s of 1 and 2 copies (`--copies 1,2`) of a syscall-bound trace, against the
single-copy figure measured in the same run (issue 18).

The trace is engine_speed.py's syscall-bound one (100,000 mmap+munmap pairs of 64 KiB, at most
8 live) replayed with --touch none, so each copy spends its time in mmap/munmap. Three figures
come from this one run, interleaved round by round after a warm-up round:

- in-process: the replay as `mmreplay replay` runs it without --copies (the baseline every ratio
  is against);
- 1 copy and 2 copies: `replay.running.copies.run_copies` with counts [1, 2], as `--copies 1,2` runs it
  (forked processes released together at every run; fresh copies each round, each with a
  warm-up run).

    python benchmarks/copies_scaling.py [--events 200000] [--repeat 5]

Two copies are two processes with address spaces and mmap locks of their own: on N free cores
the aggregate should approach N times one copy, minus what they share (the zone lock, the
page allocator, the scheduler). On a busy machine with 2 cores the second copy competes with
everything else running, so the aggregate gain shows how much CPU was free.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from replay.running.config import ReplayConfig  # noqa: E402
from replay.running.copies import run_copies  # noqa: E402
from replay.running.runs import Prepared  # noqa: E402
from replay.running.session import Interrupt, catch_signals, run_rounds  # noqa: E402
from traces import write_trace  # noqa: E402


def syscall_bound_trace(folder: Path, events: int) -> Path:
    """mmap+munmap pairs of 64 KiB, at most 8 live (engine_speed.py's syscall-bound trace)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from engine_speed import syscall_bound_trace as table

    return write_trace(table(events), folder / "syscall-bound.arrow")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="trace events")
    parser.add_argument("--repeat", type=int, default=5, help="measured rounds (median)")
    args = parser.parse_args()
    print(f"host: {os.uname().release}, {os.cpu_count()} CPUs; load average "
          f"{os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory() as folder:
        prepared = Prepared(syscall_bound_trace(Path(folder), args.events),
                            ReplayConfig(touch="none"))
        interrupt = Interrupt()
        single, by_count = [], {1: [], 2: []}
        with catch_signals(interrupt):
            # Rounds that run all three back to back; the first is a warm-up. Each round forks
            # fresh copies, which run a warm-up run of their own before the measured one.
            for round_index in range(args.repeat + 1):
                runs = run_rounds([prepared], 1, 0, interrupt)[0]
                [(_, section)] = run_copies([prepared], [1, 2], 1, 1, interrupt)
                if round_index == 0:
                    continue
                single.append(runs[0]["events_per_s"])
                for stage in section["stages"]:
                    by_count[stage["copies"]].append(stage["aggregate"][0]["events_per_s"])
                if interrupt:
                    break
    base = statistics.median(single)
    print(f"trace: {prepared.program.events:,} events ({args.events // 2:,} mmap+munmap pairs of "
          f"64 KiB, 8 live), --touch none; median of {len(single)} rounds after a warm-up")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    print(f"{'replay':<22} {'aggregate events/s':>19} {'per copy':>10} {'x single':>9}"
          f"  {'rounds: min .. max':>21}")
    rows = [("in-process (single)", 1, single)] + [(f"--copies {n}", n, v) for n, v in by_count.items()]
    for label, count, values in rows:
        median = statistics.median(values)
        print(f"{label:<22} {median:>19,.0f} {median / count:>10,.0f} {median / base:>8.2f}x"
              f"  {min(values):>10,.0f} .. {max(values):>7,.0f}")
    print("events/s = trace events / seconds inside each copy's replay loop, summed over the "
          "copies; x single = aggregate / the in-process single replay of the same rounds; "
          "min .. max = the aggregate's spread over the rounds")

if __name__ == "__main__":
    main()
