"""Speed of `mmreplay synth`: events/s of spec -> trace table, against a plain-Python baseline.

Issue 5, "Speed and determinism": generation must reach >= 5 M events/s on the project's 2-core
machine. events/s = trace events / seconds of ``synth.generate.generate(spec)`` (sampling, the
sequential pass, building the Arrow table; not writing the file, timed on its own line).

The baseline, measured in the same run on the same specs, is the same generator with its
sequential pass (lifetime queue, top-down first-fit placement, event emission) in plain Python
(``synth.generate.schedule_python``, which the tests hold to identical output); the ratio is
numba / baseline. Each figure is the median of the repeats after a warm-up run (JIT cache load,
first touch of fresh memory); the warm-up's own figure is printed as "first run". Other jobs on a
shared 2-core machine stretch wall-clock time, so the rate per second of this process's own CPU
time is printed beside it, with the load average before and after.

    python benchmarks/synth_speed.py            # 1 M mappings per workload (about 2 minutes)
    python benchmarks/synth_speed.py --quick    # 200 k mappings, 3 repeats
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from synth.generate import build_table, make_plan, schedule  # noqa: E402
from synth.spec import Spec, validate_spec  # noqa: E402
from traces.format import new_metadata, write_trace  # noqa: E402

TARGET_EVENTS_PER_S = 5e6


def workloads(count: int) -> list[tuple[str, Spec]]:
    return [
        ("seed-buffers: uniform 512K-1.5M, all alive, fifo",
         Spec(count=count, seed=1)),
        ("churn: random unmap, live 1000, madvise hugepage",
         Spec(count=count, live=1000, lifetime="random", madvise="hugepage", seed=2)),
        ("lifetimes: lognormal, exp:500, live 1G, 4 threads, brk",
         Spec(count=count, size="lognormal:1M,1.0,4K,64M", live_bytes=1 << 30,
              lifetime="exp:500", threads=4, brk_calls=count // 10, seed=3)),
        ("malloc1: 128M + 4K, one alive at a time",
         Spec(count=count, size="const:128M", live=1, seed=4)),
    ]


def generate_once(spec: Spec, engine: str) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, events) of one spec -> table generation."""
    wall, cpu = time.perf_counter(), time.process_time()
    table = build_table(schedule(make_plan(spec), engine))
    return time.perf_counter() - wall, time.process_time() - cpu, table.num_rows


def rate(spec: Spec, engine: str, repeat: int) -> dict:
    first_s, _, events = generate_once(spec, engine)
    runs = [generate_once(spec, engine) for _ in range(repeat)]
    return {"events": events, "first": events / first_s,
            "median": events / statistics.median(wall for wall, _, _ in runs),
            "cpu": events / statistics.median(cpu for _, cpu, _ in runs)}


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def write_rate(spec: Spec) -> float:
    table = build_table(schedule(make_plan(spec)))
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_trace(table, Path(folder) / "bench.arrow", new_metadata("synth"))
        return table.num_rows / (time.perf_counter() - start)


def fmt_rate(events_per_s: float) -> str:
    return f"{events_per_s / 1e6:.2f} M/s"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 k mappings, 3 repeats")
    parser.add_argument("--count", type=int, help="mappings per workload")
    parser.add_argument("--repeat", type=int, help="timed runs after the warm-up")
    args = parser.parse_args(argv)
    count = args.count or (200_000 if args.quick else 1_000_000)
    repeat = args.repeat or (3 if args.quick else 5)

    generate_once(validate_spec(Spec(count=10, lifetime="random", live=2)), "numba")  # JIT load
    print(f"host: {platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{count} mappings per workload, median of {repeat} runs after a warm-up")
    print(f"load average before: {load_average()} (1, 5, 15 min)")
    print(f"target: numba generation >= {fmt_rate(TARGET_EVENTS_PER_S)} "
          "(events/s = trace events / seconds from spec to Arrow table)")
    print()
    header = (f"{'workload':<56} {'events':>9} {'numba':>11} {'numba CPU':>11} "
              f"{'first run':>11} {'python':>11} {'ratio':>7}  target")
    print(header)
    print("-" * len(header))
    worst = float("inf")
    for name, spec in workloads(count):
        spec = validate_spec(spec)
        fast = rate(spec, "numba", repeat)
        slow = rate(spec, "python", 1)
        worst = min(worst, fast["median"])
        verdict = "ok" if fast["median"] >= TARGET_EVENTS_PER_S else "BELOW"
        print(f"{name:<56} {fast['events']:>9} {fmt_rate(fast['median']):>11} "
              f"{fmt_rate(fast['cpu']):>11} {fmt_rate(fast['first']):>11} "
              f"{fmt_rate(slow['median']):>11} {fast['median'] / slow['median']:>6.1f}x  {verdict}")
    print()
    print(f"writing the seed-buffers trace (zstd Arrow file): "
          f"{fmt_rate(write_rate(validate_spec(workloads(count)[0][1])))} (events written / s)")
    print(f"load average after: {load_average()}")
    print("columns: numba = events / wall second; numba CPU = events / CPU second of this process; "
          "python = the plain-Python baseline, events / wall second; ratio = numba / python")
    print(f"slowest workload: {fmt_rate(worst)} "
          f"({'meets' if worst >= TARGET_EVENTS_PER_S else 'misses'} the "
          f"{fmt_rate(TARGET_EVENTS_PER_S)} target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
