"""Start-up of ``--kernel``: the time from the command's start to the first replayed event.

Runs ``mmreplay replay TRACE --kernel IMAGE --touch none`` twice with a private mmreplay cache:
cold (empty: the guest's Python copy and CPU-generic numba cache are built on the host first) and
warm (both reused). Prints each stage as the result's ``vm.timings`` records it, the CPU time
the command and its guest used (user+sys of all its processes: on a busy machine wall times
stretch, this does much less), and the load average, so figures from a busy machine can be
read for what they are. The target: at most 120 s to the first replayed event with a warm cache.

    .venv/bin/python benchmarks/vm_startup.py [--image /boot/vmlinuz-6.1.0-50-amd64] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = (("command_to_boot_start_s", "host ready to boot (cache built or reused)"),
          ("command_to_guest_command_s", "guest command started (boot done)"),
          ("command_to_unpacked_s", "guest's Python copy unpacked in RAM"),
          ("command_to_python_s", "guest Python started"),
          ("command_to_ready_s", "guest imports done, engine loaded"),
          ("command_to_first_event_s", "FIRST REPLAYED EVENT"))


def one_run(image: str, trace: str, cache: str) -> dict:
    out = Path(cache) / "result.json"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "replay.cli", "replay", trace, "--kernel", image,
                           "--touch", "none", "-o", str(out), "--no-progress"],
                          env={**os.environ, "MMREPLAY_CACHE_DIR": cache}, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"replay --kernel failed: {done.stderr.strip()}")
    vm = json.loads(out.read_text())["vm"]
    return {"timings": vm["timings"], "accel": vm["accel"], "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "load_before": load, "load_after": os.getloadavg()[0],
            "cache": vm["numba_cache"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="/boot/vmlinuz-6.1.0-50-amd64")
    parser.add_argument("--trace", default=str(ROOT / "traces/data/buffers-4632k.arrow"))
    parser.add_argument("--runs", type=int, default=1, help="warm runs after the cold one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmreplay-vm-bench-") as cache:
        runs = [("cold cache", one_run(args.image, args.trace, cache))]
        runs += [("warm cache", one_run(args.image, args.trace, cache)) for _ in range(args.runs)]
    for name, run in runs:
        print(f"{name}: {run['accel'].upper()}, load average {run['load_before']:.1f} -> "
              f"{run['load_after']:.1f}; command {run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s "
              f"CPU (all its processes, QEMU included); cache built on the host: "
              f"{run['cache']['built']} ({run['cache']['seconds']:.1f} s); guest engine: "
              f"{run['cache'].get('engine', 'numba')}")
        for key, label in STAGES:
            value = run["timings"].get(key)
            print(f"  {'n/a' if value is None else f'{value:7.1f} s'}  {label}")
    warm = [run["timings"]["command_to_first_event_s"] for name, run in runs if name == "warm cache"]
    if warm:
        print(f"target: first replayed event <= 120 s with a warm cache: {min(warm):.1f} s "
              f"({'met' if min(warm) <= 120 else 'NOT met'} on this run)")


if __name__ == "__main__":
    main()
