"""Fuzz the two doors strangers' files come through: the Arrow trace reader and the strace importer.

Hypothesis draws the inputs (byte-level mutations of good seed files, generated strace lines and
generated hostile traces); each one goes through what mmreplay does with a file it is handed:

- arrow:  ``read_trace`` -> ``summarize`` (``mmreplay info``) -> ``compile_trace`` -> a native
  replay of the program under a 64 MiB budget (``mmreplay replay``);
- strace: ``import_logs`` with the reference parser, with the numba fast path and with tiny
  chunks, which must agree; the trace it makes must pass ``validate`` and compile;
- hostile: generated traces in the shapes of issue 12's attacks (hugetlb and MAP_HUGE_* bits
  inside the replay's own mappings, shared anonymous mremap, protection splits followed by
  mremap, hidden footer batches, many threads and the VMA limit), replayed with touching and
  reading (``--access stream``/``random``) under every policy. A serial replay must leave
  /proc/self/maps exactly as it found it (foreign memory untouched); a threaded one must end.

A refusal (``MmreplayError``: one clear line) is the expected answer to a bad input. A finding is
anything else: another exception, a disagreement, an imported trace that does not validate, a
crash (the worker process dies) or a hang (one input running longer than ``--hang-s``). The
worker runs in a child process, under an address-space limit, so that a crash or a runaway
allocation is observed instead of taking the fuzzer (or the machine) down.

    python fuzz/fuzz_inputs.py --seconds 600                 # both targets, 10 minutes
    python fuzz/fuzz_inputs.py --seconds 60 --target strace --out /tmp/findings
    python fuzz/fuzz_inputs.py --executions 200 --seed 7     # 200 inputs per target, any speed

It prints the executions per target, the refusals, and every finding (saved with its input
under ``--out``). Exit status 1 when there are findings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

STATS_EVERY_S = 2.0
BATCH_EXAMPLES = 50  # examples per hypothesis run; the targets take turns between runs
WORKER_ADDRESS_SPACE_BYTES = 16 << 30   # numba and pyarrow reserve a few GiB of address space
REPLAY_BUDGET_BYTES = 64 << 20


# ---------------------------------------------------------------------------------------------
# Seeds.

def arrow_seeds() -> list[bytes]:
    """Good traces in the shapes a writer may produce: zstd, lz4, uncompressed, several batches,
    string op column, extra columns, nulls, hostile values."""
    import pyarrow as pa

    from traces.format import build_table, new_metadata, with_metadata
    from tracegen import random_trace

    sys.path.insert(0, str(ROOT / "tests" / "data" / "bad"))
    import make_corpus as corpus

    seeds = []
    small = random_trace(1, 12)
    for compression in ("zstd", "lz4", None):
        seeds.append(corpus.arrow_bytes(small, compression))
    several = pa.concat_tables([small.slice(0, 5), small.slice(5)])
    seeds.append(corpus.arrow_bytes(several))
    strings = small.set_column(small.schema.get_field_index("op"), "op",
                               small.column("op").cast(pa.utf8()))
    seeds.append(corpus.arrow_bytes(strings, None))
    extra = small.append_column("rss_bytes", pa.array(range(small.num_rows), pa.int64()))
    seeds.append(corpus.arrow_bytes(with_metadata(extra, new_metadata("fuzz", minor=3)), None))
    for case in corpus.HOSTILE_CASES[:11]:
        seeds.append(case.make())
    seeds.append(corpus.arrow_bytes(build_table({"ts_ns": [], "tid": [], "op": [], "addr": [],
                                                 "length": [], "errno": []},
                                                new_metadata("fuzz")), None))
    return seeds


STRACE_SEED = """\
4414  1795826565.085056 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f67c81ec000 <0.000037>
4414  1795826565.085100 munmap(0x7f67c81ec000, 8192) = 0 <0.000010>
[pid  4508] 1795826589.804855 mmap(NULL, 2097152, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE, -1, 0 <unfinished ...>
[pid  4509] 1795826589.804860 madvise(0x7fd4f2761000, 4096, MADV_DONTNEED) = 0 <0.000003>
[pid  4508] 1795826589.804903 <... mmap resumed>) = 0x7fd4f2761000 <0.000040>
4414  1795826589.805000 mremap(0x7fd4f2761000, 1048576, 2097152, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7fd4f2961000) = 0x7fd4f2961000 <0.000011>
4414  1795826589.805100 madvise(0x7fd4f2961000, 4096, 0x42 /* MADV_??? */) = -1 EINVAL (Invalid argument) <0.000002>
4414  1795826589.805200 mprotect(0x7fd4f2961000, 4096, PROT_READ) = 0 <0.000004>
4414  1795826589.805300 brk(NULL) = 0x5555555a9000 <0.000002>
4414  1795826589.805400 mmap(0x200000000, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE, -1, 0) = 0x200000000 <0.000030>
4414  1795826589.805500 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, 3</usr/lib/libc.so.6>, 0) = 0x7f0000000000 <0.000010>
4414  1795826589.805600 openat(AT_FDCWD, "x", O_RDONLY) = 3 <0.000010>
4414  1795826589.805700 --- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED} ---
4414  1795826589.805800 mmap(NULL, 4096, PROT_READ, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0 <unfinished ...>) = ?
strace: Process 4508 attached
4414  1795826589.806000 +++ exited with 0 +++
"""

PROT_TEXT = ["PROT_READ|PROT_WRITE", "PROT_NONE", "0x7", "PROT_EXEC|0x80"]
MAP_TEXT = ["MAP_PRIVATE|MAP_ANONYMOUS", "MAP_SHARED", "MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS",
            "MAP_HUGETLB|21<<MAP_HUGE_SHIFT", "0x4000022",
            "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED_NOREPLACE"]
FD_TEXT = ["-1", "3", "4</tmp/x>", "0xffffffff", "-7"]
MREMAP_TEXT = ["MREMAP_MAYMOVE", "MREMAP_MAYMOVE|MREMAP_FIXED", "0",
               "MREMAP_DONTUNMAP|MREMAP_MAYMOVE"]
MADV_TEXT = ["MADV_DONTNEED", "MADV_HUGEPAGE", "0x42 /* MADV_??? */", "MADV_HWPOISON"]
MPROTECT_TEXT = ["PROT_READ", "PROT_NONE", "PROT_READ|PROT_WRITE|PROT_EXEC", "0x1000000"]
# Arguments of each mm call, from a random.Random ``r`` and a number source ``n``.
OPS_ARGS = {
    "mmap": lambda r, n: (f"{r.choice(['NULL', hex(n()), str(n())])}, {n()}, "
                          f"{r.choice(PROT_TEXT)}, {r.choice(MAP_TEXT)}, {r.choice(FD_TEXT)}, "
                          f"{n()}"),
    "munmap": lambda r, n: f"{hex(n())}, {n()}",
    "mremap": lambda r, n: (f"{hex(n())}, {n()}, {n()}, {r.choice(MREMAP_TEXT)}"
                            + r.choice(["", f", {hex(n())}", ", NULL"])),
    "madvise": lambda r, n: f"{hex(n())}, {n()}, {r.choice(MADV_TEXT + [str(n())])}",
    "mprotect": lambda r, n: f"{hex(n())}, {n()}, {r.choice(MPROTECT_TEXT)}",
    "brk": lambda r, n: r.choice(["NULL", hex(n())]),
}
# Huge page size bits (MAP_HUGE_SHIFT = 26): none (the default size), 2 MiB, 1 GiB, 16 GiB (not
# a size this kernel has) and whatever a stranger sends.
HUGE_BITS = [0, 21 << 26, 30 << 26, 34 << 26]
HOSTILE_BASE = 0x7F00_0000_0000


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def hostile_rows(r: random.Random) -> list[dict]:
    """A trace in the shapes of issue 12's attacks, built from the trace's own mappings."""
    sys.path.insert(0, str(ROOT / "tests" / "data" / "bad"))
    import make_corpus as c

    page, mib = 4096, 1 << 20
    rows, live = [], []  # live: (address, length) of the trace's mappings
    top = HOSTILE_BASE
    tids = [1] if r.random() < 0.5 else list(range(1, r.choice([3, 17, 200]) + 1))

    def pick_range():
        address, length = r.choice(live)
        start = address + r.randrange(0, length, page) if r.random() < 0.7 else address
        size = r.choice([page, 2 * page, 2 * mib, r.randrange(page, 4 * mib + 1, page),
                         length, length + page])
        return start, size

    for _ in range(r.randint(1, 24)):
        shape = r.random()
        tid = r.choice(tids)
        if not live or shape < 0.2:
            length = r.choice([page, 4 * page, 2 * mib, 2 * mib + page, 4 * mib,
                               r.randrange(page, 8 * mib, page)])
            shared = r.random() < 0.3
            flags = (c.MAP_SHARED if shared else c.MAP_PRIVATE) | c.MAP_ANONYMOUS
            rows.append(c.mmap(top, length, flags=flags, prot=r.choice([3, 3, 1, 0]), tid=tid))
            live.append((top, length))
            top += length + r.choice([0, page, 2 * mib])
        elif shape < 0.4:  # hugetlb with MAP_FIXED inside (or across) an own mapping
            start, size = pick_range()
            bits = r.choice(HUGE_BITS + [r.randrange(64) << 26])
            fixed = c.MAP_FIXED if r.random() < 0.8 else 0
            flags = _int32(c.ANON | c.MAP_HUGETLB | fixed | bits
                           | (c.MAP_NORESERVE if r.random() < 0.2 else 0))
            rows.append(c.mmap(start, size, flags=flags, tid=tid))
        elif shape < 0.6:  # mprotect split, then mremap over the pieces
            start, size = pick_range()
            rows.append(c.mprotect(start, size, r.choice([0, 1, 3, 2, 4]), tid=tid))
            start, size = pick_range()
            new_size = r.choice([size // 2 // page * page or page, size, 2 * size, size + page])
            target = r.choice([start, top + 64 * mib, c.FIXED_TARGET])
            flags = r.choice([0, c.MREMAP_MAYMOVE, c.MREMAP_MAYMOVE | c.MREMAP_FIXED,
                              c.MREMAP_MAYMOVE | 4])
            rows.append(c.mremap(start, size, target, new_size, flags=flags, tid=tid))
            live.append((target, new_size))
        elif shape < 0.75:  # partial munmap / madvise that may cut a huge page
            start, size = pick_range()
            if r.random() < 0.5:
                rows.append(c.munmap(start, size, tid=tid))
            else:
                rows.append(c.madvise(start, size, r.choice([4, 8, 9, 14, 15, 102]), tid=tid))
        else:  # mremap growth, shrink or move of a whole mapping (shared ones included)
            address, length = r.choice(live)
            new_size = r.choice([length * 2, length + page, max(page, length // 2 // page * page)])
            target = top + r.choice([0, 32 * mib])
            rows.append(c.mremap(address, length, target, new_size,
                                 flags=r.choice([c.MREMAP_MAYMOVE, 0,
                                                 c.MREMAP_MAYMOVE | c.MREMAP_FIXED]), tid=tid))
            live.append((target, new_size))
            top += new_size + 32 * mib
    return rows


def hostile_trace(r: random.Random) -> bytes:
    sys.path.insert(0, str(ROOT / "tests" / "data" / "bad"))
    import make_corpus as c

    choice = r.random()
    if choice < 0.05:
        return c.hidden_footer_batch(r.choice([4096, 1 << 20, 2 << 20]), r.randint(1, 64))
    if choice < 0.07:  # more live mappings than vm.max_map_count allows, on many threads
        n = 70_000
        return c.trace_bytes([c.mmap(HOSTILE_BASE + i * 8192, 4096, prot=1 + i % 2,
                                     tid=1 + i % 300) for i in range(n)])
    return c.trace_bytes(hostile_rows(r))


INTERESTING = [0, 1, 4095, 4096, 8192, 1 << 20, 2 << 20, (1 << 31) - 1, 1 << 31, (1 << 32) - 1,
               1 << 47, (1 << 63) - 1, 1 << 63, (1 << 64) - 4096, (1 << 64) - 1, 1 << 64,
               0x7F00_0000_0000, 0xFFFF_8880_0000_0000]


def strace_line(r: random.Random) -> str:
    """One strace-like line: mostly well-formed, with hostile numbers and every line form."""
    def number():
        return r.choice(INTERESTING) if r.random() < 0.6 else r.randrange(0, 1 << r.choice(
            (12, 24, 47, 64, 70)))
    pid = r.choice(["", f"{r.randrange(1, 5)}  ", f"[pid {r.randrange(1, 5):5d}] ",
                    f"{r.choice([0, 4294967296, 99999999999])} "])
    ts = r.choice(["", f"1795826565.{r.randrange(10**6):06d} ", f"00:44:{r.randrange(70):02d}."
                   f"{r.randrange(10**6):06d} ", f"{number()}.{number()} ", "25:61:99 "])
    op = r.choice(list(OPS_ARGS))
    args = OPS_ARGS[op](r, number)
    result = r.choice([hex(number()), str(number()), "-1 ENOMEM (Cannot allocate memory)",
                       "-1 EBOGUS (No)", "?", "-1 ERESTARTSYS (To be restarted)"])
    duration = r.choice(["", f" <0.{r.randrange(10**6):06d}>", f" <{number()}.1>"])
    form = r.random()
    if form < 0.55:
        body = f"{op}({args}) = {result}{duration}"
    elif form < 0.65:
        body = f"{op}({args} <unfinished ...>"
    elif form < 0.75:
        body = f"<... {op} resumed>) = {result}{duration}"
    elif form < 0.8:
        body = r.choice(["--- SIGSEGV {si_signo=SIGSEGV} ---", "+++ exited with 0 +++",
                         "+++ killed by SIGKILL (core dumped) +++", "+++ exited with 999 +++"])
    elif form < 0.85:
        body = f"{r.choice(['write', 'openat', 'x'])}(1, \"{'a' * r.randrange(0, 300)}\", 3) = 3"
    elif form < 0.9:
        body = "strace: Process 12 attached"
    else:
        cut = f"{op}({args}) = {result}{duration}"
        body = cut[: r.randrange(0, len(cut) + 1)]
    return pid + ts + body


def mutate(data: bytes, r: random.Random, rounds: int) -> bytes:
    """Byte-level mutations: bit flips, interesting integers, cuts, splices, insertions."""
    out = bytearray(data)
    for _ in range(rounds):
        if not out:
            out += r.randbytes(r.randrange(1, 64))
            continue
        at = r.randrange(len(out))
        kind = r.randrange(7)
        if kind == 0:
            out[at] ^= 1 << r.randrange(8)
        elif kind == 1:
            out[at] = r.choice((0, 0xFF, 0x7F, 0x80, r.randrange(256)))
        elif kind == 2:
            width = r.choice((2, 4, 8))
            value = r.choice((0, -1, 1 << 31, (1 << 31) - 1, 1 << 62, r.randrange(1 << 16)))
            out[at:at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
        elif kind == 3:
            del out[r.randrange(len(out)):]
        elif kind == 4:
            end = min(len(out), at + r.randrange(1, 256))
            del out[at:end]
        elif kind == 5:
            end = min(len(out), at + r.randrange(1, 256))
            out[r.randrange(len(out)):r.randrange(len(out))] = out[at:end]
        else:
            out[at:at] = r.randbytes(r.randrange(1, 32))
    return bytes(out)


# ---------------------------------------------------------------------------------------------
# The worker: runs inputs, counts them, records findings.

class Finding(Exception):
    """An input mmreplay did not handle as promised (not a one-line refusal, not a success)."""


def scratch_folder(out: Path) -> Path:
    """Where each input is written before it runs: memory (/dev/shm) when there is one, since
    opening files on some container file systems costs milliseconds."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix="mmreplay-fuzz-", dir=base))
    return folder


class Worker:
    def __init__(self, out: Path, scratch: Path, deadline: float | None, targets: list[str],
                 seed: int | None = None, budget: dict[str, int] | None = None):
        self.out = out
        self.seed = seed
        self.deadline = deadline  # None: no time limit
        self.budget = budget      # executions still wanted per target (None: no limit)
        self.targets = targets
        self.stats = {t: {"executions": 0, "accepted": 0, "refused": 0} for t in targets}
        self.findings: dict[str, dict] = {}
        self.last_stats = 0.0
        self.scratch = scratch
        self.current = scratch / "current.bin"
        self.current_target = scratch / "current.target"

    # -- bookkeeping ------------------------------------------------------------------------
    def begin(self, target: str, data: bytes) -> None:
        # Written before every execution: if the worker dies, the parent knows which input.
        self.current_target.write_text(target)
        self.current.write_bytes(data)

    def finish(self, target: str, accepted: bool) -> None:
        stats = self.stats[target]
        stats["executions"] += 1
        stats["accepted" if accepted else "refused"] += 1
        now = time.monotonic()
        if now - self.last_stats > STATS_EVERY_S:
            self.save_stats()
            self.last_stats = now

    def wants(self, target: str) -> bool:
        """More executions of ``target`` are wanted (its budget is not spent)."""
        return self.budget is None or self.stats[target]["executions"] < self.budget[target]

    def going_on(self) -> bool:
        in_time = self.deadline is None or time.monotonic() < self.deadline
        return in_time and any(self.wants(target) for target in self.targets)

    def warm_up(self) -> None:
        """Import and compile (numba) everything once before the first input, so that the
        first input is not mistaken for a hang on a slow or busy machine with a cold cache."""
        from replay.engine.compile import compile_trace
        from replay.running.config import ReplayConfig
        from replay.engine.engine import EngineState
        from replay.measure.probes import probe_kernel_alignment
        from replay.running.session import engine_params
        from traces.strace import import_logs
        from tracegen import buffers_trace

        config = ReplayConfig(touch="pages")
        program = compile_trace(buffers_trace(2, 1 << 16), config,
                                max_live_bytes=REPLAY_BUDGET_BYTES)
        EngineState(program, engine_params(config, probe_kernel_alignment())).run(0, program.ops)
        path = self.scratch / "warm.log"
        path.write_bytes(STRACE_SEED.encode())
        import_logs([path], fast=True)
        import_logs([path], fast=False)

    def save_stats(self) -> None:
        tmp = self.out / "stats.json.tmp"
        tmp.write_text(json.dumps({"stats": self.stats, "findings": self.findings}))
        os.replace(tmp, self.out / "stats.json")

    def record(self, target: str, data: bytes, kind: str, detail: str) -> None:
        last_line = detail.strip().splitlines()[-1][:200] if detail.strip() else kind
        key = hashlib.sha256(f"{target}|{kind}|{last_line}".encode()).hexdigest()[:12]
        if key not in self.findings:
            name = f"{target}-{kind}-{key}"
            (self.out / f"{name}.bin").write_bytes(data)
            (self.out / f"{name}.txt").write_text(detail)
            self.findings[key] = {"target": target, "kind": kind, "file": f"{name}.bin",
                                  "summary": last_line, "count": 0}
        self.findings[key]["count"] += 1

    # -- targets ----------------------------------------------------------------------------
    def run_arrow(self, data: bytes) -> None:
        from replay.engine.compile import compile_trace
        from replay.running.config import ReplayConfig
        from replay.engine.engine import EngineState
        from replay.measure.probes import probe_kernel_alignment
        from replay.running.session import engine_params
        from traces import MmreplayError, read_trace
        from traces.summary import summarize

        if not self.wants("arrow"):  # the rest of a batch once the budget is spent
            return
        self.begin("arrow", data)
        path = self.scratch / "input.arrow"
        path.write_bytes(data)
        try:
            table = read_trace(path)
            summarize(table)
            config = ReplayConfig(touch="pages")
            program = compile_trace(table, config, max_live_bytes=REPLAY_BUDGET_BYTES)
        except MmreplayError as exc:
            if "\n" in str(exc):
                self.record("arrow", data, "multiline-error", str(exc))
            self.finish("arrow", False)
            return
        except Exception:
            self.record("arrow", data, "exception", traceback.format_exc())
            self.finish("arrow", False)
            return
        state = EngineState(program, engine_params(config, probe_kernel_alignment()))
        state.run(0, program.ops)
        self.finish("arrow", True)

    def run_hostile(self, data: bytes, r: random.Random) -> None:
        from replay.engine.compile import compile_trace
        from replay.running.config import Access, ReplayConfig
        from replay.engine.engine import EngineState
        from replay.measure.probes import probe_kernel_alignment
        from replay.measure.probes import MapsReader
        from replay.running.session import engine_params, run_program
        from replay.engine.threads import plan_threads
        from traces import MmreplayError, read_trace

        self.begin("hostile", data)
        path = self.scratch / "input.arrow"
        path.write_bytes(data)
        threaded = r.random() < 0.3
        config = ReplayConfig(policy=r.choice(["kernel", "align-ge-pmd", "align-pmd-multiple"]),
                              touch=r.choice(["pages", "full", "first"]),
                              access=Access.parse(r.choice(["stream:1", "random:64", "none"])),
                              threads="recorded" if threaded else "1")
        try:
            table = read_trace(path)
            program = compile_trace(table, config, max_live_bytes=REPLAY_BUDGET_BYTES)
            plan = plan_threads(program, table, "recorded") if threaded else None
        except MmreplayError as exc:
            if "\n" in str(exc):
                self.record("hostile", data, "multiline-error", str(exc))
            self.finish("hostile", False)
            return
        except Exception:
            self.record("hostile", data, "exception", traceback.format_exc())
            self.finish("hostile", False)
            return
        alignment = probe_kernel_alignment()
        if threaded:
            run = run_program(program, config, alignment, plan=plan)
            if run["interrupted"]:
                self.record("hostile", data, "threaded-run-stopped", str(run["interrupt_reason"]))
        else:
            state = EngineState(program, engine_params(config, alignment))
            state.run(0, 0)  # numba's dispatch done before the snapshot
            maps = MapsReader()  # reading maps nothing: no arena of ours shows up as a change
            try:
                maps.capture(0)
                state.run(0, program.ops)
                maps.capture(1)
                before, after = maps.lines(0), maps.lines(1)
            finally:
                maps.close()
            if after != before:
                changed = sorted(set(after) ^ set(before))
                self.record("hostile", data, "address-space-changed", "\n".join(changed[:20]))
        self.finish("hostile", True)

    def run_strace(self, text: bytes, chunk_bytes: int) -> None:
        import numpy as np

        from replay.engine.compile import compile_trace
        from replay.running.config import ReplayConfig
        from traces import MmreplayError
        from traces.format import validate
        from traces.strace import import_logs

        if not self.wants("strace"):
            return
        self.begin("strace", text)
        # Lines longer than 4 chunks are cut on purpose (a "line" of tens of MB is not strace
        # output), so tiny chunks are only compared on logs whose lines they can hold.
        chunk_bytes = max(chunk_bytes, max(map(len, text.split(b"\n"))) // 3 + 1)
        path = self.scratch / "input.log"
        path.write_bytes(text)
        try:
            reference = import_logs([path], fast=False)
        except MmreplayError as exc:
            try:
                import_logs([path], fast=True)
            except MmreplayError:
                self.finish("strace", False)
                return
            except Exception:
                self.record("strace", text, "fast-exception", traceback.format_exc())
                self.finish("strace", False)
                return
            self.record("strace", text, "disagree", f"reference refused ({exc}), fast accepted")
            self.finish("strace", False)
            return
        except Exception:
            self.record("strace", text, "exception", traceback.format_exc())
            self.finish("strace", False)
            return
        try:
            others = {"fast": import_logs([path], fast=True),
                      f"chunks of {chunk_bytes} bytes": import_logs([path], fast=False,
                                                                    chunk_bytes=chunk_bytes)}
        except Exception:
            self.record("strace", text, "fast-or-chunked-exception", traceback.format_exc())
            self.finish("strace", True)
            return
        for name, other in others.items():
            if not other.table.equals(reference.table):
                self.record("strace", text, "disagree", f"{name} and the reference parser give "
                            f"different traces ({other.table.num_rows} vs "
                            f"{reference.table.num_rows} rows)")
            elif other.report["line_kinds"] != reference.report["line_kinds"]:
                self.record("strace", text, "disagree", f"{name} counts line kinds "
                            f"{other.report['line_kinds']} vs {reference.report['line_kinds']}")
        try:
            validate(reference.table)
            compile_trace(reference.table, ReplayConfig(), max_live_bytes=1 << 62)
        except MmreplayError as exc:
            self.record("strace", text, "invalid-import", f"imported trace refused: {exc}")
        except Exception:
            self.record("strace", text, "exception", traceback.format_exc())
        del np
        self.finish("strace", True)

    # -- the hypothesis-driven loop ---------------------------------------------------------
    def loop(self) -> None:
        from hypothesis import HealthCheck, Phase, given, seed, settings
        from hypothesis import strategies as st

        from strategies import valid_tables

        sys.path.insert(0, str(ROOT / "tests" / "data" / "bad"))
        import make_corpus as corpus

        seeds = arrow_seeds()
        seed_log = STRACE_SEED.encode()
        common = settings(max_examples=BATCH_EXAMPLES, database=None, deadline=None,
                          phases=[Phase.generate], derandomize=False,
                          suppress_health_check=list(HealthCheck))

        @common
        @given(seed=st.sampled_from(seeds), r=st.randoms(use_true_random=False),
               rounds=st.integers(1, 8))
        def arrow_mutated(seed, r, rounds):
            self.run_arrow(mutate(seed, r, rounds))

        @common
        @given(tbl=valid_tables(max_rows=40), compression=st.sampled_from(["zstd", "lz4", None]))
        def arrow_generated(tbl, compression):
            self.run_arrow(corpus.arrow_bytes(tbl, compression))

        @common
        @given(r=st.randoms(use_true_random=False), lines=st.integers(1, 60),
               newline=st.sampled_from(["\n", "\r\n"]), final=st.booleans(),
               chunk=st.integers(16, 4096))
        def strace_generated(r, lines, newline, final, chunk):
            text = newline.join(strace_line(r) for _ in range(lines)) + (newline if final else "")
            self.run_strace(text.encode("utf-8", "surrogateescape"), chunk)

        @common
        @given(r=st.randoms(use_true_random=False), rounds=st.integers(1, 12),
               chunk=st.integers(16, 4096))
        def strace_mutated(r, rounds, chunk):
            self.run_strace(mutate(seed_log, r, rounds), chunk)

        @common
        @given(r=st.randoms(use_true_random=False))
        def hostile_generated(r):
            self.run_hostile(hostile_trace(r), r)

        batches = []
        if "hostile" in self.targets:
            batches += [("hostile", hostile_generated)]
        if "arrow" in self.targets:
            batches += [("arrow", arrow_mutated), ("arrow", arrow_generated)]
        if "strace" in self.targets:
            batches += [("strace", strace_generated), ("strace", strace_mutated)]
        index = 0
        self.warm_up()
        while self.going_on():
            target, batch = batches[index % len(batches)]
            if self.seed is not None:
                seed(self.seed * 1_000_003 + index)(batch)  # a new, reproducible seed per batch
            if self.wants(target):
                batch()
            index += 1
        self.save_stats()


def worker_main(args) -> int:
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_ADDRESS_SPACE_BYTES, WORKER_ADDRESS_SPACE_BYTES))
    deadline = time.monotonic() + args.seconds if args.seconds else None
    worker = Worker(Path(args.out), Path(args.scratch), deadline, args.target, args.seed,
                    json.loads(args.budget) if args.budget else None)
    try:
        worker.loop()
    finally:
        worker.save_stats()
    return 0


# ---------------------------------------------------------------------------------------------
# The parent: restarts the worker after a crash or a hang, and reports.

def parent_main(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = scratch_folder(out)
    started = time.monotonic()
    deadline = started + args.seconds if args.seconds else None
    totals = {t: {"executions": 0, "accepted": 0, "refused": 0} for t in args.target}
    findings: dict[str, dict] = {}
    crashes = hangs = generations = 0

    def budget() -> dict[str, int] | None:
        if args.executions is None:
            return None
        return {t: max(0, args.executions - totals[t]["executions"]) for t in args.target}

    while ((deadline is None or time.monotonic() < deadline - 1)
           and (budget() is None or any(budget().values()))):
        generations += 1
        (out / "stats.json").unlink(missing_ok=True)
        (scratch / "current.bin").unlink(missing_ok=True)
        command = [sys.executable, __file__, "--worker", "--out", str(out),
                   "--scratch", str(scratch), "--target", *args.target]
        if deadline is not None:
            command += ["--seconds", str(max(1.0, deadline - time.monotonic()))]
        if budget() is not None:
            command += ["--budget", json.dumps(budget())]
        if args.seed is not None:
            # A restarted worker must not replay the inputs before the crash: next seed.
            command += ["--seed", str(args.seed + generations - 1)]
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 start_new_session=True)
        hung = False
        while child.poll() is None:
            time.sleep(0.5)
            current = scratch / "current.bin"
            if current.exists() and time.time() - current.stat().st_mtime > args.hang_s:
                hung = True
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                break
            if deadline is not None and time.monotonic() > deadline + args.hang_s + 60:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                break
        stderr = child.stderr.read().decode(errors="replace")
        stats_file = out / "stats.json"
        if stats_file.exists():
            state = json.loads(stats_file.read_text())
            for target, stats in state["stats"].items():
                for key, value in stats.items():
                    totals[target][key] += value
            for key, finding in state["findings"].items():
                if key in findings:
                    findings[key]["count"] += finding["count"]
                else:
                    findings[key] = finding
        died = child.returncode != 0 and not hung
        if hung or died:
            target = (scratch / "current.target").read_text() \
                if (scratch / "current.target").exists() else "?"
            data = (scratch / "current.bin").read_bytes() \
                if (scratch / "current.bin").exists() else b""
            kind = "hang" if hung else (f"crash-signal-{-child.returncode}"
                                        if child.returncode < 0 else f"exit-{child.returncode}")
            key = hashlib.sha256(data).hexdigest()[:12]
            name = f"{target}-{kind}-{key}"
            (out / f"{name}.bin").write_bytes(data)
            (out / f"{name}.txt").write_text(stderr[-20000:])
            findings[name] = {"target": target, "kind": kind, "file": f"{name}.bin",
                              "summary": (stderr.strip().splitlines() or [kind])[-1][:200],
                              "count": 1}
            if hung:
                hangs += 1
            else:
                crashes += 1
    elapsed = time.monotonic() - started
    (out / "stats.json").unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"fuzz_inputs: {elapsed:.0f} s of fuzzing, {generations} worker process(es)")
    for target, stats in totals.items():
        rate = stats["executions"] / elapsed if elapsed else 0
        print(f"  {target:<7} {stats['executions']:>9} executions ({rate:.0f}/s): "
              f"{stats['accepted']} accepted, {stats['refused']} refused with one line")
    print(f"  crashes {crashes}, hangs (> {args.hang_s:.0f} s) {hangs}, "
          f"unique findings {len(findings)}")
    for name, finding in sorted(findings.items()):
        print(f"  finding [{finding['target']}/{finding['kind']}] x{finding['count']}: "
              f"{finding['summary']}  ({out / finding['file']})")
    summary = {"seconds": round(elapsed, 1), "executions": totals, "crashes": crashes,
               "hangs": hangs, "findings": list(findings.values())}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if findings else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="how long to fuzz (s; default 60 unless --executions is given)")
    parser.add_argument("--executions", type=int, default=None,
                        help="stop once each target has run this many inputs (however long "
                             "it takes: what a test on a busy machine asks for)")
    parser.add_argument("--target", nargs="+", choices=["arrow", "strace", "hostile"],
                        default=["arrow", "strace", "hostile"])
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "mmreplay-fuzz"),
                        help="folder for findings (input + traceback) and summary.json "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=None,
                        help="fixed seed: the same inputs in the same order on every run")
    parser.add_argument("--hang-s", type=float, default=60.0,
                        help="an input running longer than this (s) is a hang")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    parser.add_argument("--budget", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds is None and args.executions is None and not args.worker:
        args.seconds = 60.0
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be positive")
    if args.executions is not None and args.executions <= 0:
        parser.error("--executions must be positive")
    return worker_main(args) if args.worker else parent_main(args)


if __name__ == "__main__":
    sys.exit(main())
