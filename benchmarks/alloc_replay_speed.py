"""Speed of the allocation replay loop against a C loop making the same calls.

Issue 16: the numba loop of ``mmreplay replay --allocator`` (replay/alloc/alloc_engine.py, in its child
process) must make the calls of an allocation program at >= 0.95x the calls/s of a C loop doing
the same malloc/free sequence (benchmarks/alloc_c_replayer.c, built here with the system C
compiler as a library the same replay child calls in place of the numba loop, so that both loops
start from the same allocator state), with ``--touch none`` (allocator-bound) and
``--touch pages`` (fault-bound). Both loops time every call with rdtsc; calls/s is calls made
(cleanup frees included) / seconds inside the loop, each loop's own clock. Runs alternate
(numba, C, numba, C, ...) so that the machine's load drifts over both alike.

    python benchmarks/alloc_replay_speed.py TRACE [--allocators glibc,jemalloc] [--repeats 5]

TRACE is an allocation-level recording; none is bundled (the BERT torch inference makes ~1M
allocation calls per batch, 13 MB of trace for 4 batches). Make one with

    mmreplay record --malloc -o bert-torch-malloc.arrow -- \
        python examples/hf_inference.py --engine torch --batches 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from replay.alloc.alloc_program import compile_allocations  # noqa: E402
from replay.alloc.alloc_runs import (TOUCH_CODE, child_environment, resolve_allocator,  # noqa: E402
                               run_child, write_job)
from replay.running.session import Interrupt  # noqa: E402
from traces import read_trace  # noqa: E402

C_SOURCE = Path(__file__).resolve().parent / "alloc_c_replayer.c"
TARGET_RATIO = 0.95


def build_c_library(folder: Path) -> Path:
    library = folder / "alloc_c_loop.so"
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not compiler:
        sys.exit("needs a C compiler (cc/gcc)")
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-DALLOC_C_LIBRARY", "-o",
                    str(library), str(C_SOURCE)], check=True)
    return library


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", type=Path, help="an allocation-level trace (record --malloc)")
    parser.add_argument("--allocators", default="glibc,jemalloc")
    parser.add_argument("--touch", default="none,pages")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    program = compile_allocations(read_trace(args.trace))
    print(f"trace        {args.trace} ({program.events} allocation calls, {program.ops} with the "
          "cleanup frees)")
    print(f"machine      {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print(f"{'allocator':<10}{'touch':<7}{'numba calls/s':>15}{'C calls/s':>15}{'ratio':>8}"
          f"{'target':>8}")
    with tempfile.TemporaryDirectory(prefix="mmreplay-alloc-speed-") as tmp:
        folder = Path(tmp)
        c_library = build_c_library(folder)
        for allocator in args.allocators.split(","):
            name, library = resolve_allocator(allocator)
            env = child_environment(library, [])
            for touch in args.touch.split(","):
                job = {"touch_code": TOUCH_CODE[touch], "library": library, "max_live_bytes": None}
                numba_rates, c_rates = [], []
                for _ in range(args.repeats):
                    # the same child, the same history before the loop: only the loop differs
                    write_job(folder, program, job)
                    numba_rates.append(run_child(folder, env, Interrupt())["calls_per_s"])
                    write_job(folder, program, {**job, "loop": "c", "c_library": str(c_library)})
                    c_rates.append(run_child(folder, env, Interrupt())["calls_per_s"])
                numba, c = statistics.median(numba_rates), statistics.median(c_rates)
                ratio = numba / c
                print(f"{name:<10}{touch:<7}{numba:>15,.0f}{c:>15,.0f}{ratio:>7.2f}x"
                      f"{'ok' if ratio >= TARGET_RATIO else 'MISSED':>8}", flush=True)
    print(f"medians of {args.repeats} alternating runs; target: numba >= {TARGET_RATIO}x C")
    print(f"machine      load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
