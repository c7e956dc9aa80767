"""How fast `mmreplay import` reads a long strace log, next to the plain per-line parser.

Builds a log of at least 1 M lines by repeating a real recorded log (the raw log of a bundled
BERT trace, or a fresh recording of a small multi-threaded program) with shifted pids and
timestamps, then imports it twice in the same run:

  importer   the default path: numba tokenizer for the common line forms, the reference
             parser for the rest, vectorized assembly, streamed in bounded chunks
  baseline   the reference parser (one compiled regex per line form, plain Python) on every
             line, with the same assembly

Targets (issue 3): >= 1 M lines/s and >= 3x the baseline on a 2-core machine.

    python benchmarks/import_speed.py [--lines 1000000] [--log RAW.log(.xz)]
"""

from __future__ import annotations

import argparse
import lzma
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from traces.strace import import_logs  # noqa: E402

PROGRAM = r"""
import mmap, threading
def work(t):
    for k in range(300):
        m = mmap.mmap(-1, (1 + (t + k) % 8) << 20); m[0] = 1; m.close()
threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
for thread in threads: thread.start()
for thread in threads: thread.join()
"""
LINE = re.compile(rb"^(\d+)( +)(\d+)\.(\d{6}) (.*)$")


def source_log(explicit: str | None, workdir: Path) -> tuple[bytes, str]:
    if explicit:
        data = Path(explicit).read_bytes()
        return (lzma.decompress(data) if explicit.endswith(".xz") else data), explicit
    bundled = sorted((ROOT / "tests" / "data" / "strace").glob("bert-*.log.xz"))
    if bundled:
        return lzma.decompress(bundled[-1].read_bytes()), str(bundled[-1].relative_to(ROOT))
    strace = shutil.which("strace")
    if not strace:
        sys.exit("needs strace (apt-get install strace) or --log RAW.log")
    log = workdir / "fresh.log"
    subprocess.run([strace, "-f", "-ttt", "-T", "-e",
                    "trace=mmap,munmap,mremap,madvise,mprotect,brk", "-o", str(log),
                    sys.executable, "-c", PROGRAM], check=True)
    return log.read_bytes(), "a fresh recording of 4 threads mapping 1-8 MiB buffers"


def build_log(raw: bytes, min_lines: int, path: Path) -> int:
    """Repeat ``raw`` with pids and timestamps shifted so each copy is a new stretch of time."""
    parsed = []
    for line in raw.splitlines():
        match = LINE.match(line)
        if match:
            pid, pad, sec, usec, body = match.groups()
            parsed.append((int(pid), pad, int(sec) * 1_000_000 + int(usec), body))
    if not parsed:
        sys.exit("the source log has no `strace -f -ttt` lines")
    span_us = parsed[-1][2] - parsed[0][2] + 1000
    lines = 0
    with open(path, "wb") as out:
        copy = 0
        while lines < min_lines:
            pid_shift, ts_shift = copy * 1_000_000 % 2_000_000_000, copy * span_us
            out.write(b"".join(
                b"%d%s%d.%06d %s\n" % (pid + pid_shift, pad, (ts + ts_shift) // 1_000_000,
                                       (ts + ts_shift) % 1_000_000, body)
                for pid, pad, ts, body in parsed))
            lines += len(parsed)
            copy += 1
    return lines


def timed_import(path: Path, fast: bool) -> tuple[float, float, dict]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = import_logs([path], fast=fast)
    return time.perf_counter() - wall, time.process_time() - cpu, result.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--log", help="raw `strace -f -ttt -T` log to repeat (.xz allowed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmreplay-bench-") as tmp:
        workdir = Path(tmp)
        raw, origin = source_log(args.log, workdir)
        big = workdir / "big.log"
        lines = build_log(raw, args.lines, big)
        size_mb = big.stat().st_size / 1e6
        print(f"log          {lines} lines, {size_mb:.1f} MB, repeating {origin}")
        print(f"machine      {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f} at start")

        warm = workdir / "warm.log"
        warm.write_bytes(raw[: 1 << 20])
        import_logs([warm], fast=True)  # load the compiled tokenizer (numba cache) once
        rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        fast_runs = [timed_import(big, True) for _ in range(2)]
        fast_wall, fast_cpu, report = min(fast_runs)
        rss_after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        base_wall, base_cpu, base_report = timed_import(big, False)
        assert base_report["mm_calls"] == report["mm_calls"], "the two parsers disagree"

        print(f"imported     {report['mm_calls_total']} mm calls, "
              f"{report['unparsed']['count']} unparsed lines, {report['threads']} threads")
        print(f"importer     {lines / fast_wall:>12,.0f} lines/s wall  "
              f"{lines / fast_cpu:>12,.0f} lines/s CPU  ({fast_wall:.2f} s, "
              f"{size_mb / fast_wall:.0f} MB/s)")
        print(f"baseline     {lines / base_wall:>12,.0f} lines/s wall  "
              f"{lines / base_cpu:>12,.0f} lines/s CPU  ({base_wall:.2f} s; plain per-line "
              "regex parser)")
        print(f"ratio        {base_wall / fast_wall:.1f}x wall, {base_cpu / fast_cpu:.1f}x CPU "
              "(importer / baseline)")
        print(f"memory       peak RSS {rss_after_kb / 1024:.0f} MiB after the importer "
              f"(+{(rss_after_kb - rss_before_kb) / 1024:.0f} MiB over the warm-up; the log is "
              f"{size_mb:.0f} MB, read in 8 MiB chunks)")
        target = lines / fast_wall >= 1e6 and base_wall / fast_wall >= 3
        print(f"target       >= 1,000,000 lines/s and >= 3x: {'met' if target else 'NOT met'}"
              f" (wall clock)")


if __name__ == "__main__":
    main()
