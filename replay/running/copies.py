"""--copies: N independent replays of the same program at once, as separate processes (stress).

will-it-scale runs one loop in 1..N processes and reports operations per task: fault-time
zeroing, zone-lock and mmap-lock contention only show when many tasks allocate at once. Here
the loop is a compiled op program. The parent reads and compiles the trace and loads the numba
engine once, then forks the copies (they inherit both); each copy runs the same runs as a
single replay (``session.run_item``), with its own measurements: getrusage, /proc/self/smaps and
perf counters are per process, so each copy's faults, THP pages and layout are its own.

Every run starts at a barrier: the parent sends "go" to every copy of the step at once, once
all of them have reported ready (start-up and JIT load are never inside a run), and waits for
all of them before the next run. So the N copies of a step really run together, and the
system-wide /proc/vmstat delta of a step (measured once, by the parent) belongs to that step.

A copy that fails or is killed is reported with its reason (exit status, signal); the others'
runs are kept and later runs go on without it. Ctrl-C (or SIGTERM) reaches every copy (they
share the terminal's process group, and the parent forwards the signal): each copy stops at its
next chunk boundary and sends its partial run, which is kept, marked interrupted. A second
Ctrl-C kills the copies. Copies die with the parent (PR_SET_PDEATHSIG), and the parent waits
for every one of them before it returns: no process is left behind.

With a list of counts (``--copies 1,2,4``) the parent forks the largest count once; a step with
n copies runs copies 1..n while the others wait. Steps are interleaved (each round runs every
count for every configuration), as compare interleaves configurations, so that drift of the
machine hits every count alike.

This module runs inside a VM guest too (``--kernel``): numpy and the standard library only.
"""

from __future__ import annotations

import fnmatch
import gc
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

from traces.errors import MmreplayError

# More copies than this measure fork and the scheduler, not mm (will-it-scale's largest runs
# use one task per CPU, a few hundred at most).
MAX_COPIES = 256
STOPPED_WITH_THE_OTHERS = "stopped with the other copies"
PR_SET_PDEATHSIG = 1
# /proc/vmstat counts every process on the machine: one delta per step, measured by the parent,
# under the key the runs use; each copy's own delta (which holds the other copies') is dropped.
SYSTEM_WIDE_KEYS = ("vmstat", "vmstat_system_wide")


# ---------------------------------------------------------------------------------------------
# The option


def parse_counts(text: str | None) -> list[int] | None:
    """``--copies`` text -> the copy counts, ascending: "4" -> [4], "1..4" -> [1, 2, 3, 4],
    "1,2,4,8" -> [1, 2, 4, 8] (ranges and values can mix: "1..4,8"). None -> None."""
    if text is None:
        return None
    counts: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        match = re.fullmatch(r"(\d{1,6})(?:\.\.(\d{1,6}))?", part)
        if not match:
            raise MmreplayError(f"bad --copies {text[:40]!r} (expected N, A..B or a list such "
                                f"as 1,2,4,8)")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if not 1 <= low <= high <= MAX_COPIES:
            raise MmreplayError(f"bad --copies {text[:40]!r}: counts go from 1 to {MAX_COPIES}, "
                                "ranges low..high")
        counts.extend(range(low, high + 1))
    if len(set(counts)) != len(counts):
        raise MmreplayError(f"--copies {text[:40]!r}: the same count is listed twice")
    return sorted(counts)


def check_budget(items, counts: list[int]) -> None:
    """Refuse, before anything runs, when the largest count of copies would not fit in the memory
    budget: ``--max-live`` (each item's ``max_live_bytes``) covers all copies together."""
    from traces.units import fmt_bytes

    largest = max(counts)
    for item in items:
        together = largest * item.program.peak_live_bytes
        if together > item.max_live_bytes:
            raise MmreplayError(
                f"{largest} copies keep {fmt_bytes(together)} live together at their peak "
                f"({fmt_bytes(item.program.peak_live_bytes)} each), more than the memory budget "
                f"of {fmt_bytes(item.max_live_bytes)} (--max-live covers all copies): give "
                f"fewer copies or a larger --max-live")


# ---------------------------------------------------------------------------------------------
# Running


@dataclass(frozen=True)
class Step:
    """One barrier: ``copies`` copies run item ``item`` once, together."""
    index: int
    round: int       # warm-up rounds first
    item: int
    copies: int
    warmup: bool


def schedule(items: int, counts: list[int], repeat: int, warmup: int) -> list[Step]:
    """Every round runs every count for every item (interleaved)."""
    steps = []
    for round_index in range(warmup + repeat):
        for copies in counts:
            for item in range(items):
                steps.append(Step(len(steps), round_index, item, copies, round_index < warmup))
    return steps


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL when the parent dies, whatever kills it (a parent that died before this call is
    seen by getppid)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _copy_main(number: int, parent_pid: int, items: list, commands, reports,
               perf_faults: bool, inherited: list) -> None:
    """A copy: report ready, then run an item at every "go" until "stop" (or the parent's end)."""
    from replay.running import session

    _die_with_parent(parent_pid)
    for connection in inherited:  # other copies' pipes, inherited through fork
        connection.close()
    interrupt = session.Interrupt()

    def on_signal(signum, _frame):
        interrupt.request(STOPPED_WITH_THE_OTHERS if signum == signal.SIGUSR1
                          else signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, on_signal)
    try:
        reports.send(("ready", os.getpid()))
        while True:
            try:
                message = commands.recv()
            except EOFError:
                break
            if message[0] != "go":
                break
            _, step_index, item_index, budget = message

            def report(done, step_index=step_index):
                reports.send(("progress", step_index, done))

            run = session.run_item(items[item_index], interrupt, perf_faults, report, budget)
            reports.send(("run", step_index, run))
    except BrokenPipeError:  # the parent is gone; PR_SET_PDEATHSIG ends this process too
        sys.exit(1)
    except Exception as exc:  # reported as this copy's failure, in one line
        try:
            reports.send(("failed", " ".join(str(exc).split()) or type(exc).__name__))
        except OSError:
            pass
        sys.exit(1)


class _Copy:
    def __init__(self, number: int, process, commands, reports):
        self.number = number
        self.process = process
        self.commands = commands   # parent -> copy
        self.reports = reports     # copy -> parent
        self.pid = process.pid
        self.ready = False
        self.error: str | None = None     # what the copy said when it failed
        self.failed: dict | None = None   # set once it is gone: reason and when

    @property
    def alive(self) -> bool:
        return self.failed is None

    def end_reason(self) -> str:
        code = self.process.exitcode
        if self.error:
            return f"error: {self.error}"
        if code is None:
            return "stopped answering"
        if code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exit status {code}"


def _exit_description(process) -> str:
    code = process.exitcode
    if code is None:
        return "running"
    if code < 0:
        return f"killed by signal {signal.Signals(-code).name}"
    return f"exit status {code}"


class _Signals:
    """Wakes the parent's wait when a signal arrives (signal.set_wakeup_fd), and counts SIGINT
    and SIGTERM: the first asks the copies to stop, the second kills them."""

    def __init__(self):
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self.previous = None
        self.installed = False
        self.count = 0

    def __enter__(self):
        try:
            self.previous = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
            self.installed = True
        except ValueError:  # not the main thread: the wait polls instead
            pass
        return self

    def drain(self) -> None:
        try:
            data = os.read(self.read_fd, 4096)
        except BlockingIOError:
            return
        self.count += sum(1 for byte in data if byte in (signal.SIGINT, signal.SIGTERM))

    def __exit__(self, *exc):
        if self.installed:
            signal.set_wakeup_fd(self.previous)
        os.close(self.read_fd)
        os.close(self.write_fd)
        return False


class CopiesRun:
    """The processes of one ``run_copies`` call and what they sent."""

    def __init__(self, items, counts, perf_faults, interrupt, notify=None):
        self.notify = notify
        self.items = items
        self.counts = counts
        self.perf_faults = perf_faults
        self.interrupt = interrupt
        self.copies: list[_Copy] = []
        self.failures: list[dict] = []
        self.forwarded = False

    # -- processes

    def start(self) -> None:
        import multiprocessing

        context = multiprocessing.get_context("fork")
        sys.stdout.flush()
        sys.stderr.flush()
        # Objects the copies inherit stay where they are: the copies' garbage collector does
        # not visit (and so copy) them.
        gc.freeze()
        try:
            for number in range(1, max(self.counts) + 1):
                commands_read, commands_write = context.Pipe(duplex=False)
                reports_read, reports_write = context.Pipe(duplex=False)
                inherited = [c for copy in self.copies for c in (copy.commands, copy.reports)]
                process = context.Process(
                    target=_copy_main, name=f"mmreplay-copy-{number}", daemon=True,
                    args=(number, os.getpid(), self.items, commands_read, reports_write,
                          self.perf_faults, inherited))
                process.start()
                commands_read.close()
                reports_write.close()
                self.copies.append(_Copy(number, process, commands_write, reports_read))
        finally:
            gc.unfreeze()

    def stop(self) -> None:
        """Every copy told to stop, then waited for; one that does not end is killed."""
        for copy in self.copies:
            try:
                copy.commands.send(("stop",))
            except OSError:
                pass
            copy.commands.close()
        for copy in self.copies:
            copy.process.join(timeout=60)
            if copy.process.exitcode is None:
                copy.process.kill()
                copy.process.join()
            copy.reports.close()

    def kill(self) -> None:
        for copy in self.copies:
            if copy.process.exitcode is None:
                copy.process.kill()

    def forward(self, reason: str) -> None:
        """Ask every copy to stop its run at the next chunk boundary: the parent's signal, or
        SIGUSR1 for another reason (the memory budget of one copy, a stop request)."""
        if self.forwarded:
            return
        self.forwarded = True
        sig = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}.get(reason, signal.SIGUSR1)
        for copy in self.copies:
            if copy.process.exitcode is None:
                try:
                    os.kill(copy.pid, sig)
                except ProcessLookupError:
                    pass

    def _fail(self, copy: _Copy, when: str) -> None:
        if copy.failed is None:
            copy.process.join(timeout=60)
            copy.failed = {"copy": copy.number, "pid": copy.pid, "reason": copy.end_reason(),
                           "when": when}
            self.failures.append(copy.failed)
            if self.notify is not None and not self.interrupt:
                self.notify(f"copy {copy.number} (pid {copy.pid}) ended: {copy.failed['reason']} "
                            f"({when}); the other copies go on")

    # -- waiting

    def _read(self, copy: _Copy, pending: dict, on_message) -> None:
        """Handle what ``copy`` sent so far (stops once ``on_message`` says it is done)."""
        while copy.number in pending:
            try:
                if not copy.reports.poll():
                    return
                message = copy.reports.recv()
            except (EOFError, OSError):
                return
            if message[0] == "failed":
                copy.error = message[1]
            elif on_message(copy, message):
                del pending[copy.number]

    def _wait(self, copies: list[_Copy], signals: _Signals, on_message, when: str) -> None:
        """Until every copy in ``copies`` is done (``on_message`` returned True) or gone."""
        from multiprocessing.connection import wait

        pending = {copy.number: copy for copy in copies if copy.alive}
        while pending:
            by_reports = {copy.reports: copy for copy in pending.values()}
            by_sentinel = {copy.process.sentinel: copy for copy in pending.values()}
            ready = wait([*by_reports, *by_sentinel, signals.read_fd],
                         None if signals.installed else 0.2)
            if signals.read_fd in ready:
                signals.drain()
            for connection in [r for r in ready if r in by_reports]:
                self._read(by_reports[connection], pending, on_message)
            for sentinel in [r for r in ready if r in by_sentinel]:
                copy = by_sentinel[sentinel]
                self._read(copy, pending, on_message)  # what it sent before it ended
                if copy.number in pending:
                    del pending[copy.number]
                    self._fail(copy, when)
            if self.interrupt:
                self.forward(self.interrupt.reason)
                if signals.count > 1:  # a second Ctrl-C: do not wait for chunk boundaries
                    self.kill()

    def wait_ready(self, signals: _Signals) -> None:
        def on_message(copy, message):
            copy.ready = copy.ready or message[0] == "ready"
            return copy.ready

        self._wait(self.copies, signals, on_message, "start-up")

    def run_step(self, step: Step, signals: _Signals, on_progress) -> dict:
        """Release the step's copies together and wait for them: {"runs": {copy number: run}
        of the copies that finished, "wall_s": the step's wall time, "vmstat": its system-wide
        /proc/vmstat delta}."""
        from replay.measure.probes import read_vmstat, vmstat_delta

        item = self.items[step.item]
        budget = item.max_live_bytes // step.copies
        copies = [copy for copy in self.copies[: step.copies] if copy.alive]
        done = {copy.number: 0 for copy in copies}
        shown = [0]
        runs: dict = {}
        vmstat_before = read_vmstat()
        start = time.perf_counter()
        for copy in copies:
            try:
                copy.commands.send(("go", step.index, step.item, budget))
            except OSError:
                pass  # it has ended: its sentinel says so

        def on_message(copy, message):
            kind, step_index = message[0], message[1]
            if step_index != step.index:
                return False
            if kind == "progress":
                done[copy.number] = message[2]
                replaying = [done[n] for n in done if n not in runs and self.copies[n - 1].alive]
                # The slowest copy's position: the first report means every copy is replaying.
                if on_progress is not None and replaying and min(replaying) > shown[0]:
                    shown[0] = min(replaying)
                    on_progress(step, shown[0])
                return False
            run = message[2]
            runs[copy.number] = run
            if run.get("interrupted") and not self.interrupt:
                self.interrupt.request(run.get("interrupt_reason") or STOPPED_WITH_THE_OTHERS)
            return True

        when = (f"{'warm-up ' if step.warmup else ''}round {step.round + 1}, "
                f"{step.copies} cop{'y' if step.copies == 1 else 'ies'}")
        self._wait(copies, signals, on_message, when)
        return {"runs": runs, "wall_s": time.perf_counter() - start,
                "vmstat": vmstat_delta(vmstat_before, read_vmstat())}


def load_engine(items) -> None:
    """Load the numba engine (from its cache, or compile it) in the parent, so that no copy
    pays it, nor counts it."""
    from replay.engine.engine import EngineState
    from replay.running.session import engine_params

    for item in items:
        EngineState(item.program, engine_params(item.config, item.alignment)).run(0, 0)


def run_copies(items: list, counts: list[int], repeat: int, warmup: int = 0, interrupt=None,
               perf_faults: bool = False,
               on_progress: Callable[[Step, int], None] | None = None,
               on_step: Callable[[Step], None] | None = None,
               notify: Callable[[str], None] | None = None) -> list[tuple[list[dict], dict]]:
    """Run every item ``warmup + repeat`` times in 1..max(counts) processes, per the schedule.

    Returns, per item, (the aggregate runs of the largest count, the ``copies`` section of its
    result). ``on_progress(step, events)``: the slowest copy of the step has replayed
    ``events`` events (so the first call means every copy is replaying); ``on_step(step)``
    after each step; ``notify(text)`` hears of a copy that ended early. Items are
    ``runs.Prepared`` (or a guest's copies of them).
    """
    from replay.running.session import Interrupt

    interrupt = Interrupt() if interrupt is None else interrupt
    counts = sorted(counts)
    load_engine(items)
    steps = schedule(len(items), counts, repeat, warmup)
    # [item][count] -> {"aggregate": [...], "per_copy": {number: [...]}}; the current warm-up
    # round apart (an interrupt during warm-up keeps that round's runs, marked, as run_rounds)
    measured = [{n: _empty_stage() for n in counts} for _ in items]
    warm: list = []
    pool = CopiesRun(items, counts, perf_faults, interrupt, notify)
    key = None
    try:
        pool.start()
        with _Signals() as signals:
            pool.wait_ready(signals)
            if interrupt:
                raise _interrupted_at_start(interrupt.reason)
            if not any(copy.alive for copy in pool.copies):
                raise MmreplayError("no copy started: " + "; ".join(
                    f"copy {f['copy']}: {f['reason']}" for f in pool.failures))
            for step in steps:
                if step.warmup and step.item == 0 and step.copies == counts[0]:
                    warm = [{n: _empty_stage() for n in counts} for _ in items]
                outcome = pool.run_step(step, signals, on_progress)
                key = key or _vmstat_key(outcome["runs"].values())
                stage = (warm if step.warmup else measured)[step.item][step.copies]
                if outcome["runs"]:
                    stage["aggregate"].append(aggregate(
                        outcome["runs"], step.copies, outcome["wall_s"], outcome["vmstat"],
                        key or "vmstat", interrupt.reason))
                    for number, run in outcome["runs"].items():
                        stage["per_copy"].setdefault(number, []).append(_own(run))
                if on_step is not None:
                    on_step(step)
                if interrupt:
                    if step.warmup:
                        measured = _marked_warmup(warm)
                    break
    except BaseException:
        pool.kill()
        raise
    finally:
        pool.stop()
    pids = {copy.number: copy.pid for copy in pool.copies}
    processes = [{"copy": copy.number, "pid": copy.pid,
                  "end": _exit_description(copy.process)} for copy in pool.copies]
    out = []
    for per_count in measured:
        stages = []
        for n in counts:
            stage = per_count[n]
            stages.append({"copies": n, "aggregate": stage["aggregate"],
                           "per_copy": [{"copy": number, "pid": pids[number], "runs": runs,
                                         "summary": _summary(runs)}
                                        for number, runs in sorted(stage["per_copy"].items())]})
        section = {"counts": counts, "base": counts[0], "stages": stages,
                   "processes": processes, "failed": pool.failures,
                   "system_wide": key or "vmstat"}
        out.append((stages[-1]["aggregate"], section))
    return out


def _empty_stage() -> dict:
    return {"aggregate": [], "per_copy": {}}


def _interrupted_at_start(reason: str) -> MmreplayError:
    error = MmreplayError(f"interrupted ({reason}) before the copies started: nothing measured")
    error.exit_code = 128 + int(signal.Signals[reason]) if reason in ("SIGINT", "SIGTERM") else 1
    return error


def _marked_warmup(warm: list) -> list:
    """The stages of the warm-up round an interrupt stopped, each run marked ``warmup``."""
    return [{n: {"aggregate": [{**run, "warmup": True} for run in stage["aggregate"]],
                 "per_copy": {number: [{**run, "warmup": True} for run in runs]
                              for number, runs in stage["per_copy"].items()}}
             for n, stage in item_warm.items()} for item_warm in warm]


def _vmstat_key(runs) -> str | None:
    for run in runs:
        for key in SYSTEM_WIDE_KEYS:
            if key in run:
                return key
    return None


def _own(run: dict) -> dict:
    """A copy's run without the system-wide figures (they are the step's, in the aggregate)."""
    return {key: value for key, value in run.items() if key not in SYSTEM_WIDE_KEYS}


def _summary(runs: list[dict]) -> dict:
    from replay.results.flat import summarize_runs

    return summarize_runs(runs)


# ---------------------------------------------------------------------------------------------
# The aggregate run: the figures of all copies of one step together

# How each figure of a run combines over the copies (dotted paths, * matches one key). A figure
# not listed is left out: a percentile or a per-copy ratio has no sum, and a figure added to runs
# later is not summed until someone says it may be.
SUMMED = (
    "events", "events_per_s", "minflt", "majflt", "touch_bytes", "touch_gbps",
    "access.bytes", "access.reads", "access.gbps", "peak_live_bytes", "peak_rss_bytes",
    "peak_anon_huge_bytes", "end_anon_huge_bytes", "process_peak_anon_huge_bytes",
    "collapsed_anon_huge_bytes", "thp_eligible_bytes", "large_mappings",
    "pmd_aligned_large_mappings", "pmd_aligned_by_size.*.*", "holes", "hole_bytes", "peak_vmas",
    "ops.*.count", "ops.*.failed", "perf.*", "cgroup.thp_fault_alloc",
    "cgroup.thp_collapse_alloc", "cgroup.pgfault", "cgroup.*_anon_thp_bytes", "heap.*",
    "policy_extra_calls", "policy_extra_s", "thp_advice_failed", "release_failures",
    "live_bytes_at_stop", "skipped.*", "replayed_differently.*", "wait_s", "thread_loop_s",
)
LONGEST = ("engine_s", "trace_wall_s")   # the step lasts as long as its slowest copy
SAME = ("access.pattern", "perf_unavailable", "os_threads", "cross_thread_dependencies",
        "cgroup.version", "cgroup_unavailable")


def _rule(path: str) -> str | None:
    for rule, patterns in (("sum", SUMMED), ("max", LONGEST), ("same", SAME)):
        if any(fnmatch.fnmatchcase(path, pattern) for pattern in patterns):
            return rule
    return None


def _holds_rules(path: str) -> bool:
    """Some rule names a figure inside the dict at ``path`` (kept, even when empty)."""
    parts = path.split(".") if path else []
    for pattern in SUMMED + LONGEST + SAME:
        segments = pattern.split(".")
        if len(segments) > len(parts) and all(
                fnmatch.fnmatchcase(part, segment) for part, segment in zip(parts, segments)):
            return True
    return False


def _combine(values: list, prefix: str = ""):
    """The runs' values at ``prefix`` combined by their rule; None when it has none."""
    first = values[0]
    path = prefix.rstrip(".")
    if isinstance(first, dict) and _rule(path) != "same":
        if not _holds_rules(path):
            return None
        out = {}
        keys = dict.fromkeys(k for value in values if isinstance(value, dict) for k in value)
        for key in keys:
            combined = _combine([value.get(key) for value in values if isinstance(value, dict)
                                 and key in value], f"{prefix}{key}.")
            if combined is not None:
                out[key] = combined
        return out
    rule = _rule(prefix.rstrip("."))
    if rule == "same":
        return first
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if rule is None or not numbers:
        return None
    return sum(numbers) if rule == "sum" else max(numbers)


def aggregate(runs: dict, copies: int, wall_s: float, system_vmstat: dict,
              vmstat_key: str = "vmstat", interrupt_reason: str | None = None) -> dict:
    """One run standing for ``runs`` ({copy number: run}) of one step: figures summed over the
    copies (events/s, faults, THP bytes, calls), the longest engine time, the step's wall time
    and its system-wide /proc/vmstat delta, both measured by the parent."""
    ordered = [runs[number] for number in sorted(runs)]
    combined = _combine(ordered)
    combined.update({
        "copies": copies,
        "copies_finished": len(ordered),
        "wall_s": wall_s,
        vmstat_key: system_vmstat,
        "interrupted": interrupt_reason is not None or any(r.get("interrupted") for r in ordered),
        "interrupt_reason": interrupt_reason or next(
            (r.get("interrupt_reason") for r in ordered if r.get("interrupted")), None),
    })
    return combined


# ---------------------------------------------------------------------------------------------
# One entry point for replay, compare and the guest


def measure(items: list, repeat: int, warmup: int, interrupt, perf_faults: bool = False,
            counts: list[int] | None = None, on_progress=None,
            on_run=None, notify=None) -> list[tuple[list[dict], dict]]:
    """Per item, (its runs, what its result adds): ``session.run_rounds`` in this process, or
    with ``counts`` the copies (runs are then the aggregate runs of the largest count, and the
    result adds the ``copies`` section).

    ``on_progress(item, round, events_done, copies)`` and ``on_run(item, round, copies)``;
    ``copies`` is None without counts."""
    from replay.running.session import run_rounds

    if not counts:
        report = run = None
        if on_progress is not None:
            def report(item, round_index, done):
                on_progress(item, round_index, done, None)
        if on_run is not None:
            def run(item, round_index):
                on_run(item, round_index, None)
        runs = run_rounds(items, repeat, warmup, interrupt, perf_faults, report, run)
        return [(item_runs, {}) for item_runs in runs]

    step_progress = step_done = None
    if on_progress is not None:
        def step_progress(step, done):
            on_progress(step.item, step.round, done, step.copies)
    if on_run is not None:
        def step_done(step):
            on_run(step.item, step.round, step.copies)
    outcome = run_copies(items, counts, repeat, warmup, interrupt, perf_faults, step_progress,
                         step_done, notify)
    return [(runs, {"copies": section}) for runs, section in outcome]
