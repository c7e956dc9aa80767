"""Figures of one run computed from the engine's state after it (pure numpy, no kernel): latency
percentiles per trace op and per recorded thread, and how many of the mappings the replay created
are 2 MiB-aligned. ``session.run_program`` puts them in the run (docs/result-format.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from traces.schema import MM_OPS, OPS, PMD_SIZE
from traces.units import SIZE_BUCKETS

from replay.engine.program import CLEANUP, ENGINE_OP_NAMES, ID_MAPPED, OP_MMAP, OpProgram

if TYPE_CHECKING:
    from replay.engine.engine import EngineState
    from replay.engine.threads import ThreadPlan


def percentile_ns(values: np.ndarray, q: float) -> int | None:
    return int(np.percentile(values, q)) if len(values) else None


def op_stats(program: OpProgram, state: EngineState, ran: np.ndarray) -> dict:
    """count, failed, p50_ns, p99_ns per trace op name over the trace's ops that ran (no cleanup).

    ``ran`` marks the ops that were executed."""
    from_trace = (program.trace_row != CLEANUP) & ran
    err = state.err
    stats = {}
    for name in MM_OPS:
        codes = [c for c, n in enumerate(ENGINE_OP_NAMES) if n == name]
        chosen = np.isin(program.code, codes) & from_trace & (err >= 0)
        latencies = state.latency[chosen & (err == 0)]
        stats[name] = {"count": int(chosen.sum()), "failed": int((chosen & (err > 0)).sum()),
                       "p50_ns": percentile_ns(latencies, 50), "p99_ns": percentile_ns(latencies, 99)}
    return stats


def large_mapping_alignment(program: OpProgram, state: EngineState, ran: np.ndarray) -> tuple[int, int]:
    """(mappings >= 2 MiB the replay created with mmap, how many start 2 MiB-aligned)."""
    created = program.map_id[ran & (program.code == OP_MMAP)]
    created = created[(state.id_state[created] & ID_MAPPED) != 0]
    large = created[program.id_length[created] >= PMD_SIZE]
    return int(len(large)), int((state.base[large] % PMD_SIZE == 0).sum())


def alignment_by_size(program: OpProgram, state: EngineState, ran: np.ndarray) -> dict:
    """For each mmap size bucket of ``info``: mappings the replay created with mmap and how many
    start on a 2 MiB boundary. The claim "512 KiB-1.5 MiB buffers got aligned" is checked here."""
    created = program.map_id[ran & (program.code == OP_MMAP)]
    created = created[(state.id_state[created] & ID_MAPPED) != 0]
    lengths = program.id_length[created]
    bounds = np.array([lower for _, lower in SIZE_BUCKETS[1:]], np.int64)
    bucket = np.searchsorted(bounds, lengths, side="right")
    aligned = state.base[created] % PMD_SIZE == 0
    return {label: {"mappings": int((bucket == index).sum()),
                    "pmd_aligned": int((aligned & (bucket == index)).sum())}
            for index, (label, _) in enumerate(SIZE_BUCKETS)}


def group_percentiles(keys: np.ndarray, values: np.ndarray, qs=(50, 99)) -> dict:
    """{key: (count, {q: percentile})} for each distinct key, in one sort (np.percentile's linear
    interpolation, truncated to int like ``percentile_ns``)."""
    if len(keys) == 0:
        return {}
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order].astype(np.float64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    found = {}
    for q in qs:
        position = (counts - 1) * (q / 100.0)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, counts - 1)
        fraction = position - low
        a, b = values[starts + low], values[starts + high]
        found[q] = (a + (b - a) * fraction).astype(np.int64)
    return {int(k): (int(n), {q: int(found[q][i]) for q in qs})
            for i, (k, n) in enumerate(zip(keys[starts].tolist(), counts.tolist()))}


def thread_stats(program: OpProgram, state, plan: ThreadPlan, ran_mask: np.ndarray,
                 wait_ns: list) -> dict:
    """{recorded tid: {ops: {op: {count, p50_ns, p99_ns}}, wait_s, os_thread}}.

    Grouped by (tid, op) with one sort: a trace may hold a hundred thousand threads."""
    names = tuple(dict.fromkeys(ENGINE_OP_NAMES))
    name_of_code = np.array([names.index(n) for n in ENGINE_OP_NAMES], np.int64)
    calls = np.isin(program.code, [c for c, n in enumerate(ENGINE_OP_NAMES) if n in OPS])
    counted = np.flatnonzero(ran_mask & calls & (program.trace_row != CLEANUP) & (state.err >= 0))
    tids = plan.tid_of_op[counted]
    # One key per (tid, op name); tids are 32-bit in the format.
    keys = (tids - np.int64(-(1 << 31))) * len(names) + name_of_code[program.code[counted]]
    ok = state.err[counted] == 0
    totals = group_percentiles(keys, np.zeros(len(keys), np.int64), qs=())
    timed = group_percentiles(keys[ok], state.latency[counted][ok])
    by_tid: dict = {}
    for key, (count, _) in totals.items():
        tid, name = divmod(key, len(names))
        tid += -(1 << 31)
        _, quantiles = timed.get(key, (0, {}))
        by_tid.setdefault(tid, {})[names[name]] = {
            "count": count, "p50_ns": quantiles.get(50), "p99_ns": quantiles.get(99)}
    out = {}
    for t, group in enumerate(plan.tids):
        for tid in group:
            out[str(tid)] = {"ops": by_tid.get(int(tid), {}), "wait_s": wait_ns[t] / 1e9,
                             "os_thread": t}
    return out
