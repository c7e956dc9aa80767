"""Hostile-input scaling: small inputs must cost linear time and bounded, predicted memory.

Issue 12, finding 9. Each shape is built at n, 2n and 4n and timed in this run; the figure is the
time ratio per doubling (2.0 is linear, 4.0 quadratic), so the machine's speed cancels out:

  info        ``traces.summary.summarize`` (``mmreplay info``) on n mmaps at falling addresses,
              each below the last: the shape that made the live set's list inserts quadratic
  compile     ``replay.engine.compile.compile_trace`` on n events: mmaps at falling addresses, each
              unmapped 30,000 calls later (the compiler refuses more live mappings than
              vm.max_map_count allows, so the live set is kept below that)
  validate    ``traces.format.validate`` on a trace with n extra columns (the repeated-name check)

And the compiler's memory: the peak Python heap (tracemalloc) while compiling, per event, next
to ``COMPILE_BYTES_PER_EVENT``, the estimate the compiler checks against the memory available
before it starts. The estimate must not be below what is measured.

    python benchmarks/hostile_scaling.py [--events 125000]
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from replay.engine.compile import COMPILE_BYTES_PER_EVENT, compile_trace  # noqa: E402
from replay.running.config import ReplayConfig  # noqa: E402
from traces.format import build_table, validate  # noqa: E402
from traces.schema import MAP_ANONYMOUS, MAP_PRIVATE, OPS  # noqa: E402
from traces.summary import summarize  # noqa: E402

TOP = 0x7F00_0000_0000


def falling_mmaps(n: int) -> pa.Table:
    """n 4 KiB mmaps, each one 8 KiB below the previous, never unmapped."""
    return build_table({
        "ts_ns": np.arange(1, n + 1, dtype=np.int64) * 1000,
        "tid": np.ones(n, np.int32),
        "op": np.full(n, OPS.index("mmap"), np.int8),
        "addr": (TOP - np.arange(n, dtype=np.uint64) * 8192).astype(np.uint64),
        "length": np.full(n, 4096, np.uint64),
        "prot": np.full(n, 3, np.int32),
        "flags": np.full(n, MAP_PRIVATE | MAP_ANONYMOUS, np.int32),
        "fd": np.full(n, -1, np.int32),
        "errno": np.zeros(n, np.int32),
    })


def falling_window(n: int, window: int = 30_000) -> pa.Table:
    """n mmaps at falling addresses, each unmapped ``window`` calls later: the live set holds
    ``window`` pieces (below vm.max_map_count, which the compiler refuses to pass) and every new
    one goes in front of them all."""
    maps = np.arange(n, dtype=np.int64)
    order = np.argsort(np.r_[maps * 2, (maps + window) * 2 + 1], kind="stable")
    index = np.r_[maps, maps][order]
    is_map = np.r_[np.ones(n, bool), np.zeros(n, bool)][order]
    total = 2 * n
    return build_table({
        "ts_ns": np.arange(1, total + 1, dtype=np.int64) * 1000,
        "tid": np.ones(total, np.int32),
        "op": np.where(is_map, OPS.index("mmap"), OPS.index("munmap")).astype(np.int8),
        "addr": (TOP - index.astype(np.uint64) * 8192).astype(np.uint64),
        "length": np.full(total, 4096, np.uint64),
        "prot": np.full(total, 3, np.int32),
        "flags": np.full(total, MAP_PRIVATE | MAP_ANONYMOUS, np.int32),
        "fd": np.full(total, -1, np.int32),
        "errno": np.zeros(total, np.int32),
    })


def with_extra_columns(n: int) -> pa.Table:
    """A small trace with n extra (null) columns."""
    table = falling_mmaps(8)
    names = table.schema.names + [f"extra{index}" for index in range(n)]
    return pa.Table.from_arrays(table.columns + [pa.nulls(8, pa.int8())] * n, names=names)


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=125_000, help="n (the sizes are n, 2n, 4n)")
    args = parser.parse_args()
    sizes = [args.events, 2 * args.events, 4 * args.events]
    config = ReplayConfig(touch="none")
    rows = {"info": [], "compile": [], "validate": []}
    per_event = []
    for n in sizes:
        rows["info"].append(timed(summarize, falling_mmaps(n)))
        table = falling_window(n // 2)  # n events
        rows["compile"].append(timed(compile_trace, table, config, None))
        tracemalloc.start()
        compile_trace(table, config, None)
        per_event.append(tracemalloc.get_traced_memory()[1] / table.num_rows)
        tracemalloc.stop()
        rows["validate"].append(timed(validate, with_extra_columns(n // 4)))
    print(f"{'shape':<10}" + "".join(f"{f'n={n:,}':>14}" for n in sizes)
          + f"{'time ratio per doubling':>26}")
    for shape, seconds in rows.items():
        ratios = [b / a for a, b in zip(seconds, seconds[1:])]
        label = "extra cols n/4" if shape == "validate" else shape
        print(f"{label:<10}" + "".join(f"{s:>13.2f}s" for s in seconds)
              + f"{'  '.join(f'{r:.2f}' for r in ratios):>26}")
    print(f"compile peak Python heap per event (tracemalloc): "
          + ", ".join(f"{b:,.0f} B" for b in per_event)
          + f"; estimate checked before compiling: {COMPILE_BYTES_PER_EVENT:,} B")
    if max(per_event) > COMPILE_BYTES_PER_EVENT:
        print("ESTIMATE TOO LOW: the compiler can take more memory than it checks for")


if __name__ == "__main__":
    main()
