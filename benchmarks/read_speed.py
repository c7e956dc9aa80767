"""How long `read_trace` takes, with every safety check, next to plain pyarrow on the same file.

The file is a 10 M-event synthetic trace, made in this run with

    mmreplay synth --count 5000000 --size uniform:4K,64K -o F

(or the file given with --trace). Each timed read runs in a fresh Python process, as a command
reads a trace once: a process that already read and freed a large table leaves its memory to be
returned or reused, and in one process the next reader, whichever it is, pays for that (on this
machine most of a read's time is the kernel clearing fresh pages). Every child imports all three
readers' modules before the clock starts; the readers take turns, in reverse order every other
round:

  baseline   pyarrow.feather.read_table(F): decompress, nothing else
  ipc        pyarrow.ipc.open_file(pyarrow.memory_map(F)).read_all(): the reading read_trace
             itself does, for reference (not the target's baseline)
  read_trace what every mmreplay command does: identify the input, check claimed sizes before
             Arrow allocates, Arrow's full validation, rebuild the logical table from format
             v2's columns, and validate every value (types, nulls, ranges, per-op fields,
             per-thread clocks)

Target (issue 13): read_trace <= 1.3x the baseline, wall clock. The table gives the best and
the median read of each and the ratios of the medians (the figure the target is about) and of
the bests; and the medians of user and system CPU time (every thread of the child: Arrow
decompresses on several) and of the peak resident memory the read added, whose ratios other
work on the machine disturbs less than the wall clock's.
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
READERS = {"pyarrow.feather.read_table": "feather", "read_trace": "read_trace",
           "pyarrow.ipc (memory map)": "ipc"}

# One timed read in a fresh process: prints {"rows", "wall_s", "user_s", "system_s", "rss_mib"}.
CHILD = """
import gc, json, resource, sys, time
sys.path.insert(0, sys.argv[3])
import pyarrow.feather
from traces import read_trace
import pyarrow.ipc
readers = {"feather": pyarrow.feather.read_table, "read_trace": read_trace,
           "ipc": lambda path: pyarrow.ipc.open_file(pyarrow.memory_map(path)).read_all()}
read = readers[sys.argv[1]]
gc.collect()
before, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
table = read(sys.argv[2])
wall, after = time.perf_counter() - wall, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"rows": table.num_rows, "wall_s": wall,
                  "user_s": after.ru_utime - before.ru_utime,
                  "system_s": after.ru_stime - before.ru_stime,
                  "rss_mib": (after.ru_maxrss - before.ru_maxrss) / 1024}))
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
            order = list(READERS) if round_ % 2 == 0 else list(READERS)[::-1]  # no fixed neighbour
            for name in order:
                runs[name].append(timed(READERS[name], path))
    rows = {run["rows"] for values in runs.values() for run in values}
    if len(rows) != 1:
        raise SystemExit(f"the readers disagree on the number of events: {sorted(rows)}")
    print(f"events: {rows.pop():,}; each read in a fresh process, {args.rounds} of each")

    def figures(key: str) -> dict[str, list[float]]:
        return {name: [run[key] for run in values] for name, values in runs.items()}

    wall, user, system, rss = figures("wall_s"), figures("user_s"), figures("system_s"), \
        figures("rss_mib")
    print(f"{'reader':<28} {'wall best s':>11} {'median s':>9} {'user median s':>14} "
          f"{'system median s':>16} {'memory MiB':>11}")
    for name in READERS:
        print(f"{name:<28} {min(wall[name]):>11.3f} {statistics.median(wall[name]):>9.3f} "
              f"{statistics.median(user[name]):>14.3f} {statistics.median(system[name]):>16.3f} "
              f"{statistics.median(rss[name]):>11.0f}")
    base, ours, ipc = list(READERS)

    def ratio(values: dict, pick=statistics.median, base: str = base) -> float:
        """ours / base; nan when the base measured 0 (a tiny trace)."""
        below = pick(values[base])
        return pick(values[ours]) / below if below else float("nan")

    median_ratio = ratio(wall)
    print(f"read_trace / read_table: wall {median_ratio:.2f}x (medians), {ratio(wall, min):.2f}x "
          f"(bests); user CPU {ratio(user):.2f}x; system CPU {ratio(system):.2f}x; memory "
          f"{ratio(rss):.2f}x (medians)")
    print("(user CPU: the readers' own work; system CPU: mostly the kernel clearing the fresh "
          "pages of the table, which other work on the machine slows most; memory: peak "
          "resident growth during the read)")
    print(f"read_trace / {ipc}: wall {ratio(wall, base=ipc):.2f}x, user CPU "
          f"{ratio(user, base=ipc):.2f}x "
          "(medians: the same decompression as read_trace's, so the rest is the checks and the "
          "decoding)")
    print(f"target <= {TARGET}x wall (medians): {'met' if median_ratio <= TARGET else 'NOT met'}; "
          f"1-minute load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
