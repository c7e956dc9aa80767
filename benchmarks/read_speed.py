"""How long `read_trace` takes, with every safety check, next to plain pyarrow on the same file.

The file is a 10 M-event synthetic trace, made in this run with

    mmreplay synth --count 5000000 --size uniform:4K,64K -o F

(or the file given with --trace). Both readers load it in the same process, alternately, after
one uncounted warm-up each (the first reads fault in fresh memory):

  baseline   pyarrow.feather.read_table(F): decompress, nothing else
  read_trace what every mmreplay command does: identify the input, check claimed sizes before
             Arrow allocates, Arrow's full validation, rebuild the logical table from format
             v2's columns, and validate every value (types, nulls, ranges, per-op fields,
             per-thread clocks)

Target (issue 13): read_trace <= 1.3x the baseline. The table gives the best and the median run
of each and the ratio of the medians (the figure the target is about) and of the bests. Other
work on the machine makes every figure noisier; the load average is printed.

    python benchmarks/read_speed.py [--rounds 7] [--trace F]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pyarrow.feather as feather  # noqa: E402

from traces import read_trace  # noqa: E402

TARGET = 1.3
SYNTH = ["synth", "--count", "5000000", "--size", "uniform:4K,64K"]


def timed(read, path) -> float:
    gc.collect()
    started = time.perf_counter()
    table = read(path)
    elapsed = time.perf_counter() - started
    del table
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed runs of each reader")
    parser.add_argument("--trace", help="read this trace instead of making the 10 M-event one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.trace) if args.trace else Path(folder) / "synth-10m.arrow"
        if not args.trace:
            command = [sys.executable, "-m", "replay.cli", *SYNTH, "-o", str(path)]
            print("making the trace:", " ".join(["mmreplay", *SYNTH, "-o", path.name]), flush=True)
            subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        events = read_trace(path).num_rows
        print(f"trace: {events:,} events, {path.stat().st_size:,} bytes; 1-minute load average "
              f"{os.getloadavg()[0]:.2f} at start", flush=True)
        readers = {"pyarrow.feather.read_table": feather.read_table, "read_trace": read_trace}
        times = {name: [] for name in readers}
        for name, read in readers.items():  # warm-up, not counted
            timed(read, path)
        for _ in range(args.rounds):
            for name, read in readers.items():
                times[name].append(timed(read, path))
    base, ours = times["pyarrow.feather.read_table"], times["read_trace"]
    print(f"{'reader':<28} {'best s':>8} {'median s':>9}  runs")
    for name, values in times.items():
        print(f"{name:<28} {min(values):>8.3f} {statistics.median(values):>9.3f}  {len(values)}")
    median_ratio = statistics.median(ours) / statistics.median(base)
    best_ratio = min(ours) / min(base)
    print(f"read_trace / read_table: {median_ratio:.2f}x (medians), {best_ratio:.2f}x (bests); "
          f"target <= {TARGET}x: {'met' if median_ratio <= TARGET else 'NOT met'}; load average "
          f"{os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
