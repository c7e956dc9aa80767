"""Run an op program: chunks of native execution, with /proc sampled, progress and Ctrl-C between.

One call of ``run_program`` is one run; it returns the run's measurements as a plain dict (the
``runs[]`` entries of the result JSON). Whatever happens (Ctrl-C, SIGTERM, the memory budget), the
replay's own mappings are released before it returns.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Callable

import numpy as np

from replay.running.config import ACCESS_CODE, TOUCH_CODE, ReplayConfig
from replay.engine.engine import (C_ACCESS_BYTES, C_ACCESS_NS, C_ACCESS_READS, C_ENGINE_NS,
                                  C_HEAP_MINFLT, C_HEAP_TOUCH_BYTES, C_LIVE_BYTES, C_POLICY_CALLS,
                                  C_POLICY_NS, C_RUNTIME_SKIPPED, C_THP_ADVICE_FAILED,
                                  C_TOUCH_BYTES, C_TOUCH_NS, C_WAIT_NS, N_PARAMS, P_ACCESS_AMOUNT,
                                  P_ACCESS_KIND, P_PAD_PMD_MULTIPLES, P_HEAP_HINT, P_PLAIN_BY_HINT,
                                  P_THP_ADVICE, P_TOPDOWN_FIX, P_TOUCH, P_ZERO_FD, EngineState)
from replay.engine.model import live_pieces
from replay.engine.policy import TOPDOWN_FIX, KernelAlignment, dev_zero_fd
from replay.engine.region import FreshAddressSpace
from replay.measure.probes import (FAULT_PERF_COUNTERS, HARDWARE_PERF_COUNTERS, PerfCounters,
                                   layout_metrics, own_page_bytes, read_smaps, read_vmstat,
                                   rss_bytes, rusage_faults, vmstat_delta)
from replay.measure.cgroup import OwnCgroup
from replay.measure.collapse import collapse
from replay.measure.probes import read_rollup
from replay.engine.program import OpProgram
from replay.measure.run_stats import (alignment_by_size, large_mapping_alignment, op_stats,
                                      thread_stats)
from replay.results.result_types import AccessFigures, CgroupFigures, HeapFigures, RunMeasurements

MAX_CHUNK_OPS = 4096
TARGET_CHUNKS = 100
THREADED_CHUNKS = 10  # threads meet at every chunk boundary: few, so they mostly run freely
BUDGET_SLACK_BYTES = 64 << 20
THP_ADVICE = {"as-recorded": -1, "always": 14, "never": 15}  # MADV_HUGEPAGE / MADV_NOHUGEPAGE


class Interrupt:
    """Set by SIGINT/SIGTERM (or the budget check); the run stops at the next chunk boundary."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def __bool__(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason


@contextlib.contextmanager
def catch_signals(interrupt: Interrupt):
    """Turn SIGINT/SIGTERM into ``interrupt`` for the duration (main thread only)."""
    previous = {}

    def handler(signum, _frame):
        interrupt.request(signal.Signals(signum).name)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield interrupt
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def engine_params(config: ReplayConfig, alignment: KernelAlignment) -> np.ndarray:
    params = np.zeros(N_PARAMS, np.int64)
    params[P_TOUCH] = TOUCH_CODE[config.touch]
    params[P_ACCESS_KIND] = ACCESS_CODE[config.access.kind]
    params[P_ACCESS_AMOUNT] = config.access.amount
    params[P_THP_ADVICE] = THP_ADVICE[config.thp]
    params[P_PAD_PMD_MULTIPLES] = int(alignment.aligns_pmd_multiples)
    params[P_PLAIN_BY_HINT] = int(alignment.plain_by_hint)
    params[P_ZERO_FD] = dev_zero_fd() if alignment.plain_by_zero and not alignment.plain_by_hint \
        else -1
    params[P_TOPDOWN_FIX] = int(TOPDOWN_FIX.get(config.policy, alignment.topdown_fix))
    return params


def chunk_bounds(program: OpProgram, stop_op: int | None = None,
                 chunks: int = TARGET_CHUNKS, max_ops: int | None = MAX_CHUNK_OPS) -> list[int]:
    """Chunk boundaries: a fixed count per trace (so lockstep sweeps are deterministic), plus the
    peak and the end of the trace, where /proc is sampled."""
    trace_ops = program.cleanup_start if stop_op is None else stop_op
    size = max(1, math.ceil(trace_ops / chunks))
    if max_ops:
        size = min(size, max_ops)
    bounds = set(range(0, trace_ops, size)) | {program.peak_op if program.peak_op <= trace_ops
                                               else 0, trace_ops}
    if stop_op is None:
        bounds.add(program.ops)
    return sorted(bounds)


def sample_layout(state: EngineState, pieces: np.ndarray, group: OwnCgroup | None = None) -> dict:
    """Layout figures of the replay's live pieces; those of the brk heap alone under "heap",
    the whole process's smaps_rollup under "process", the replay's cgroup under "cgroup"."""
    vmas = read_smaps()
    sample = layout_metrics(vmas, state.ranges(pieces), own_page_bytes)
    heap = state.program.heap_id
    if heap >= 0:
        sample["heap"] = layout_metrics(vmas, state.ranges(pieces[pieces[:, 0] == heap]),
                                        own_page_bytes)
    sample["process"] = read_rollup()
    if group is not None and group.folder is not None:
        sample["cgroup"] = group.stats()
    return sample


def run_program(program: OpProgram, config: ReplayConfig, alignment: KernelAlignment,
                interrupt: Interrupt | None = None, budget_bytes: int | None = None,
                on_progress: Callable[[int], None] | None = None,
                stop_op: int | None = None, on_stop: Callable | None = None,
                plan=None, recorded_duration_ns: int | None = None,
                on_released: Callable | None = None, perf_faults: bool = False) -> dict:
    """Run ``program`` once and measure it.

    ``plan`` (a ``threads.ThreadPlan``) spreads the trace's ops over OS threads; without it the
    replay is serial. ``stop_op`` runs only ops [0, stop_op) and calls ``on_stop(state, pieces)``
    there, before everything is released (``layout --at``). ``on_released(state)`` is called
    once the replay's memory has been given back.
    """
    from replay.engine import threads as mt

    interrupt = Interrupt() if interrupt is None else interrupt
    state = EngineState(program, engine_params(config, alignment))
    # Load the engine's native code now: JIT memory mapped after the placeholders would take the
    # place of the replay's first mapping.
    state.warm()
    threaded = plan is not None and plan.threads > 0 and program.cleanup_start > 0
    bounds = (chunk_bounds(program, stop_op, THREADED_CHUNKS, None) if threaded
              else chunk_bounds(program, stop_op))
    trace_end = program.cleanup_start if stop_op is None else stop_op
    if threaded:
        progress = np.zeros(plan.threads, np.int64)
        stop_flag = np.zeros(1, np.int64)
        thread_counters = mt.new_thread_counters(plan, state.counters)
    samples: dict = {}
    collapsed: dict | None = None
    perf = PerfCounters(HARDWARE_PERF_COUNTERS + (FAULT_PERF_COUNTERS if perf_faults else ()))
    rss_before = rss_bytes()
    vmstat_before = read_vmstat()
    minflt_before, majflt_before = rusage_faults()
    wall_start = time.perf_counter()
    trace_wall_s = None
    address_space = FreshAddressSpace(program.top_residue).claim()
    state.params[P_HEAP_HINT] = address_space.heap_hint
    perf.start()
    ran = 0  # global ops [0, ran) are done (serial and at chunk boundaries)
    threads_wall_s = 0.0  # wall time with the replay threads running
    stopped_inside_chunk = False
    # The replay's own memory cgroup (its THP and fault counts), for the length of the run.
    group = OwnCgroup().__enter__()
    try:
        for start, stop in zip(bounds, bounds[1:]):
            if threaded and stop <= program.cleanup_start:
                threads_start = time.perf_counter()
                reached = mt.run_threaded(state, plan, start, stop, stop_flag, thread_counters,
                                          progress, interrupt)
                threads_wall_s += time.perf_counter() - threads_start
                if any(r < int(np.searchsorted(o, stop)) for r, o in zip(reached, plan.orders)):
                    stopped_inside_chunk = True
                    break
                ran = stop
            else:
                ran = state.run(start, stop)
            if config.access.kind == "lockstep" and stop <= trace_end:
                state.lockstep(config.access.amount)
            if stop == program.peak_op and stop_op is None and stop > 0:
                samples["peak"] = sample_layout(state, program.peak_pieces, group)
                if config.collapse != "none":
                    # What khugepaged or MADV_COLLAPSE make of the peak's layout (--collapse).
                    collapsed = collapse(config.collapse, state.ranges(program.peak_pieces),
                                         interrupt)
                    samples["peak_collapsed"] = sample_layout(state, program.peak_pieces, group)
            if stop == trace_end:
                trace_wall_s = time.perf_counter() - wall_start - (
                    collapsed["seconds"] if collapsed else 0)
                pieces = program.end_pieces if stop_op is None else live_pieces(program, stop)
                samples["end"] = sample_layout(state, pieces, group)
                if on_stop is not None:
                    on_stop(state, pieces)
                if stop_op is not None:
                    break
            if on_progress is not None and stop <= trace_end:
                on_progress(int(program.trace_row[stop - 1]) + 1 if stop else 0)
            if budget_bytes is not None and rss_bytes() - rss_before > budget_bytes + BUDGET_SLACK_BYTES:
                interrupt.request("memory budget")
            if interrupt:
                break
    finally:
        perf_values = perf.stop()
        perf.close()
        if stopped_inside_chunk:
            executed = mt.executed_mask(plan, progress, program)
        else:
            executed = np.zeros(program.ops, bool)
            executed[:ran] = True
        finished = bool(executed.all())
        release_failures = 0
        if not finished:
            # Stopped early: release exactly what the replay still has mapped.
            release_failures = state.release(live_pieces(program, ran, executed))
        placeholders_kept = address_space.release()
        if on_released is not None:
            on_released(state)
        cgroup_counts = group.stats()
        group.__exit__(None, None, None)
    wall_s = time.perf_counter() - wall_start
    minflt_after, majflt_after = rusage_faults()
    counters = state.counters
    wait_by_thread = None
    if threaded:
        wait_by_thread = [int(c[C_WAIT_NS]) for c in thread_counters]
        counters = mt.merged_counters(counters, thread_counters)
    engine_s = counters[C_ENGINE_NS] / 1e9
    if threaded:
        # Threads' loop times overlap: the engine time is the wall time they ran, plus the
        # serial part (cleanup) the main thread ran itself.
        thread_loop_s = sum(int(c[C_ENGINE_NS]) for c in thread_counters) / 1e9
        engine_s = engine_s - thread_loop_s + threads_wall_s
    # The emulator's own calls (padding windows, trims) are not the workload's: its time is
    # reported apart (policy_extra_s) and left out of engine_s and events/s.
    policy_s = counters[C_POLICY_NS] / 1e9
    if threaded and thread_loop_s > 0:
        # Threads overlap: take out the share of their wall time their loops spent on it.
        engine_s -= threads_wall_s * min(policy_s / thread_loop_s, 1.0)
    else:
        engine_s -= policy_s
    engine_s = max(engine_s, 0.0)
    trace_executed = executed[: program.cleanup_start]
    events_done = program.events if finished else (
        int(program.trace_row[: program.cleanup_start][trace_executed].max()) + 1
        if trace_executed.any() else 0)
    large, aligned = large_mapping_alignment(program, state, executed)
    peak = samples.get("peak") or samples.get("end") or {}
    end = samples.get("end") or {}
    skipped = dict(program.skipped)
    if counters[C_RUNTIME_SKIPPED]:
        skipped["target_mapping_failed_earlier"] = int(counters[C_RUNTIME_SKIPPED])
    access_ns = counters[C_ACCESS_NS]
    run = RunMeasurements(
        wall_s=wall_s,
        engine_s=engine_s,
        events=events_done,
        events_per_s=events_done / engine_s if engine_s > 0 else None,
        ops=op_stats(program, state, executed),
        minflt=minflt_after - minflt_before,
        majflt=majflt_after - majflt_before,
        # /proc/vmstat counts every process on the machine: other jobs' THP faults show here.
        vmstat_system_wide=vmstat_delta(vmstat_before, read_vmstat()),
        perf=perf_values,
        perf_unavailable=perf.unavailable,
        peak_vmas=max(peak.get("vmas", 0), end.get("vmas", 0)),
        peak_live_bytes=program.peak_live_bytes,
        peak_rss_bytes=peak.get("rss_bytes"),
        peak_anon_huge_bytes=peak.get("anon_huge_bytes"),
        end_anon_huge_bytes=end.get("anon_huge_bytes"),
        large_mappings=large,
        pmd_aligned_large_mappings=aligned,
        pmd_aligned_by_size=alignment_by_size(program, state, executed),
        holes=peak.get("holes"),
        hole_bytes=peak.get("hole_bytes"),
        thp_eligible_bytes=peak.get("thp_eligible_bytes"),
        touch_gbps=counters[C_TOUCH_BYTES] / counters[C_TOUCH_NS] if counters[C_TOUCH_NS] else None,
        touch_bytes=int(counters[C_TOUCH_BYTES]),
        access=AccessFigures(
            pattern=str(config.access),
            gbps=counters[C_ACCESS_BYTES] / access_ns if access_ns else None,
            ns_per_read=access_ns / counters[C_ACCESS_READS] if counters[C_ACCESS_READS] else None,
            bytes=int(counters[C_ACCESS_BYTES]), reads=int(counters[C_ACCESS_READS])),
        samples=samples,
        address_space=dict(address_space.as_dict(), release_failures=placeholders_kept),
        policy_extra_calls=int(counters[C_POLICY_CALLS]),
        policy_extra_s=policy_s,
        thp_advice_failed=int(counters[C_THP_ADVICE_FAILED]),
        release_failures=release_failures,
        live_bytes_at_stop=int(counters[C_LIVE_BYTES]),
        skipped=skipped,
        replayed_differently=dict(program.notes),
        interrupted=interrupt.reason is not None,
        interrupt_reason=interrupt.reason,
        process_peak_anon_huge_bytes=(peak.get("process") or {}).get("anon_huge_bytes"),
    )
    peak_collapsed = samples.get("peak_collapsed") or {}
    if group.unavailable is None:
        run.cgroup = CgroupFigures(
            version=group.version,
            thp_fault_alloc=cgroup_counts.get("thp_fault_alloc"),
            thp_collapse_alloc=cgroup_counts.get("thp_collapse_alloc"),
            pgfault=cgroup_counts.get("pgfault"),
            peak_anon_thp_bytes=(peak.get("cgroup") or {}).get("anon_thp_bytes"),
            end_anon_thp_bytes=(end.get("cgroup") or {}).get("anon_thp_bytes"))
        if peak_collapsed:
            run.cgroup.collapsed_anon_thp_bytes = (
                peak_collapsed.get("cgroup") or {}).get("anon_thp_bytes")
    else:
        run.cgroup_unavailable = group.unavailable
    if collapsed is not None:
        run.collapse = collapsed
        run.collapsed_anon_huge_bytes = peak_collapsed.get("anon_huge_bytes")
    if program.heap_id >= 0:
        peak_heap, end_heap = peak.get("heap") or {}, end.get("heap") or {}
        run.heap = HeapFigures(
            peak_bytes=program.heap_peak_bytes,
            grown_bytes=program.heap_grown_bytes,
            minflt=int(counters[C_HEAP_MINFLT]),
            touch_bytes=int(counters[C_HEAP_TOUCH_BYTES]),
            peak_rss_bytes=peak_heap.get("rss_bytes"),
            peak_anon_huge_bytes=peak_heap.get("anon_huge_bytes"),
            end_rss_bytes=end_heap.get("rss_bytes"),
            end_anon_huge_bytes=end_heap.get("anon_huge_bytes"),
            vmas_at_peak=peak_heap.get("vmas"))
        if peak_collapsed:
            run.heap.collapsed_anon_huge_bytes = (
                peak_collapsed.get("heap") or {}).get("anon_huge_bytes")
    if trace_wall_s and recorded_duration_ns:
        run.trace_wall_s = trace_wall_s
        run.speed_vs_recorded = recorded_duration_ns / 1e9 / trace_wall_s
    if threaded:
        run.threads = thread_stats(program, state, plan, executed, wait_by_thread)
        run.os_threads = plan.threads
        run.cross_thread_dependencies = plan.dependencies
        run.wait_s = sum(wait_by_thread) / 1e9
        run.thread_loop_s = thread_loop_s
    return run.as_dict()


def run_item(item, interrupt: Interrupt | None = None, perf_faults: bool = False,
             on_progress: Callable[[int], None] | None = None,
             budget_bytes: int | None = None) -> dict:
    """One run of ``item`` (see ``run_rounds``); ``budget_bytes`` lowers its memory budget
    (a copy of ``--copies`` gets its share)."""
    return run_program(item.program, item.config, item.alignment, interrupt,
                       item.max_live_bytes if budget_bytes is None else budget_bytes,
                       on_progress, plan=item.plan, recorded_duration_ns=item.recorded_duration_ns,
                       perf_faults=perf_faults)


def run_rounds(items, repeat: int, warmup: int = 0, interrupt: Interrupt | None = None,
               perf_faults: bool = False,
               on_progress: Callable[[int, int, int], None] | None = None,
               on_run: Callable[[int, int], None] | None = None) -> list[list[dict]]:
    """Run every item ``warmup + repeat`` times, interleaved (A B C A B C ...); the runs of each.

    An item has ``program``, ``config``, ``alignment``, ``max_live_bytes``, ``plan`` and
    ``recorded_duration_ns`` (a ``runs.Prepared``, or its copy inside a VM guest). Warm-up runs
    are not returned, except when an interrupt stops a warm-up round: that round's runs are kept,
    marked ``warmup``, so that a partial result has something to show.
    ``on_progress(item, round, events_done)`` is called between chunks, ``on_run(item, round)``
    after each run.
    """
    interrupt = Interrupt() if interrupt is None else interrupt
    runs: list[list[dict]] = [[] for _ in items]
    for round_index in range(warmup + repeat):
        this_round = []
        for index, item in enumerate(items):
            report = None
            if on_progress is not None:
                def report(done, index=index, round_index=round_index):
                    on_progress(index, round_index, done)
            run = run_item(item, interrupt, perf_faults, report)
            this_round.append(run)
            if round_index >= warmup:
                runs[index].append(run)
            if on_run is not None:
                on_run(index, round_index)
            if interrupt:
                break
        if interrupt:
            if round_index < warmup:
                for index, run in enumerate(this_round):
                    runs[index].append({**run, "warmup": True})
            break
    return runs
