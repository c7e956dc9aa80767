"""How long `read_trace` takes, with every safety check, next to plain pyarrow on the same file.

The file is a 10 M-event synthetic trace, made in this run with

    mmreplay synth --count 5000000 --size uniform:4K,64K -o F

(or the file given with --trace). Each timed read runs in a fresh Python process, as a command
reads a trace once: a process that already read and freed a large table leaves its memory to be
returned or reused, and in one process the next reader, whichever it is, pays for that (on this
machine most of a read's time is the kernel clearing fresh pages). Both children import the same
modules before the clock starts; the readers take turns, first one then the other, swapping the
order every round:

  baseline   pyarrow.feather.read_table(F): decompress, nothing else
  read_trace what every mmreplay command does: identify the input, check claimed sizes before
             Arrow allocates, Arrow's full validation, rebuild the logical table from format
             v2's columns, and validate every value (types, nulls, ranges, per-op fields,
             per-thread clocks)

Target (issue 13): read_trace <= 1.3x the baseline, wall clock. The table gives the best and
the median read of each and the ratios of the medians (the figure the target is about) and of
the bests, and the same for CPU time (user + system, every thread of the child: Arrow
decompresses on several), which other work on the machine disturbs less than the wall clock.
The 1-minute load average is printed at start and end.

    python benchmarks/read_speed.py [--rounds 7] [--trace F]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.3
SYNTH = ["synth", "--count", "5000000", "--size", "uniform:4K,64K"]
READERS = {"pyarrow.feather.read_table": "feather", "read_trace": "read_trace"}

# One timed read in a fresh process: prints {"rows", "wall_s", "cpu_s"}.
CHILD = """
import gc, json, sys, time
sys.path.insert(0, sys.argv[3])
import pyarrow.feather
from traces import read_trace
read = pyarrow.feather.read_table if sys.argv[1] == "feather" else read_trace
gc.collect()
wall, cpu = time.perf_counter(), time.process_time()
table = read(sys.argv[2])
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
print(json.dumps({"rows": table.num_rows, "wall_s": wall, "cpu_s": cpu}))
"""


def timed(reader: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, reader, str(path), str(ROOT)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed reads of each reader")
    parser.add_argument("--trace", help="read this trace instead of making the 10 M-event one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(args.trace) if args.trace else Path(folder) / "synth-10m.arrow"
        if not args.trace:
            command = [sys.executable, "-m", "replay.cli", *SYNTH, "-o", str(path)]
            print("making the trace:", " ".join(["mmreplay", *SYNTH, "-o", path.name]), flush=True)
            subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        print(f"trace: {path.stat().st_size:,} bytes; 1-minute load average "
              f"{os.getloadavg()[0]:.2f} at start", flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in READERS}
        for round_ in range(args.rounds):
            order = list(READERS) if round_ % 2 == 0 else list(READERS)[::-1]
            for name in order:
                runs[name].append(timed(READERS[name], path))
    rows = {run["rows"] for values in runs.values() for run in values}
    if len(rows) != 1:
        raise SystemExit(f"the readers disagree on the number of events: {sorted(rows)}")
    print(f"events: {rows.pop():,}; each read in a fresh process, {args.rounds} of each")
    wall = {name: [run["wall_s"] for run in values] for name, values in runs.items()}
    cpu = {name: [run["cpu_s"] for run in values] for name, values in runs.items()}
    print(f"{'reader':<28} {'best s':>8} {'median s':>9} {'CPU best s':>11} {'CPU median s':>13}")
    for name in READERS:
        print(f"{name:<28} {min(wall[name]):>8.3f} {statistics.median(wall[name]):>9.3f} "
              f"{min(cpu[name]):>11.3f} {statistics.median(cpu[name]):>13.3f}")
    base, ours = list(READERS)
    median_ratio = statistics.median(wall[ours]) / statistics.median(wall[base])
    best_ratio = min(wall[ours]) / min(wall[base])
    cpu_median = statistics.median(cpu[ours]) / statistics.median(cpu[base])
    cpu_best = min(cpu[ours]) / min(cpu[base])
    print(f"read_trace / read_table, wall: {median_ratio:.2f}x (medians), {best_ratio:.2f}x "
          f"(bests); CPU: {cpu_median:.2f}x (medians), {cpu_best:.2f}x (bests)")
    print(f"target <= {TARGET}x wall (medians): {'met' if median_ratio <= TARGET else 'NOT met'}; "
          f"1-minute load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
