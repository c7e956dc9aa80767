"""Multi-threaded replay: each recorded thread's calls on an OS thread of its own.

Within a thread, calls keep trace order. Across threads, a call waits only where it depends on
another thread's call, as glibc's trace_run does with its sync points:
- it unmaps, remaps, advises or protects a mapping whose previous call was made by another
  thread (each mapping's calls form a chain in trace order);
- it maps over an address range another thread unmapped just before (the kernel's choice of
  address depends on what had been freed).
``--order strict`` makes every call wait for the call before it in the trace instead.

Dependencies always point to earlier calls of the global order, so the thread holding the
earliest pending call can always run: no deadlock is possible.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from traces import MmreplayError
from traces.format import column_np
from traces.liveset import LiveSet
from traces.summary import page_round

from .engine import N_COUNTERS, NOT_ADDITIVE, C_RNG
from .program import (CLEANUP, OP_MADVISE, OP_MMAP, OP_MMAP_FIXED_IN, OP_MPROTECT, OP_MREMAP,
                      OP_MUNMAP, OpProgram)


@dataclass
class ThreadPlan:
    """How the trace part of a program is spread over OS threads."""
    thread_of_op: np.ndarray   # int32, per op (cleanup ops: 0)
    orders: list               # per OS thread: int64 global op indices, ascending
    position: np.ndarray       # int32, per op: its index inside its thread's order
    dep_thread: np.ndarray     # int32, per op: OS thread it waits on, -1 for none
    dep_pos: np.ndarray        # int32, per op: position in that thread it waits for
    tids: list                 # per OS thread: the recorded tids it runs
    tid_of_op: np.ndarray      # int64, per op: recorded tid (-1 for cleanup)
    dependencies: int          # ops that wait on another thread

    @property
    def threads(self) -> int:
        return len(self.orders)


def assign_threads(tids_of_rows: np.ndarray, mode: str) -> tuple[np.ndarray, list]:
    """OS thread index for each trace row, and the recorded tids of each OS thread."""
    unique, first_seen = np.unique(tids_of_rows, return_index=True)
    by_appearance = unique[np.argsort(first_seen)]
    rank = {int(t): r for r, t in enumerate(by_appearance)}
    count = len(by_appearance) if mode == "recorded" else int(mode)
    if count < 1:
        raise MmreplayError("--threads must be at least 1")
    thread_of_tid = {tid: r % count for tid, r in rank.items()}
    lookup = np.array([thread_of_tid[int(t)] for t in tids_of_rows.tolist()], np.int32) \
        if len(tids_of_rows) else np.zeros(0, np.int32)
    groups = [[] for _ in range(max(count, 1))]
    for tid, r in rank.items():
        groups[r % count].append(tid)
    return lookup, groups


def plan_threads(program: OpProgram, table: pa.Table, mode: str, order: str = "deps") -> ThreadPlan:
    """Assign ops to OS threads and compute the cross-thread dependencies, once, before running."""
    rows_tid = column_np(table, "tid").astype(np.int64)
    thread_of_row, groups = assign_threads(rows_tid, mode)
    n = program.ops
    trace_ops = program.cleanup_start
    rows = program.trace_row[:trace_ops]
    thread_of_op = np.zeros(n, np.int32)
    thread_of_op[:trace_ops] = thread_of_row[rows] if trace_ops else 0
    tid_of_op = np.full(n, -1, np.int64)
    tid_of_op[:trace_ops] = rows_tid[rows] if trace_ops else 0
    orders = [np.flatnonzero(thread_of_op[:trace_ops] == t).astype(np.int64)
              for t in range(len(groups))]
    position = np.zeros(n, np.int32)
    for order_t in orders:
        position[order_t] = np.arange(len(order_t), dtype=np.int32)

    dep = _dependencies(program, table, thread_of_op, order)
    dep_thread = np.full(n, -1, np.int32)
    dep_pos = np.zeros(n, np.int32)
    cross = (dep >= 0)
    cross[cross] = thread_of_op[dep[cross]] != thread_of_op[cross]
    dep_thread[cross] = thread_of_op[dep[cross]]
    dep_pos[cross] = position[dep[cross]]
    return ThreadPlan(thread_of_op, orders, position, dep_thread, dep_pos, groups, tid_of_op,
                      int(cross.sum()))


def _dependencies(program: OpProgram, table: pa.Table, thread_of_op: np.ndarray,
                  order: str) -> np.ndarray:
    """For each trace op, the global index of the op it must follow (-1: none)."""
    trace_ops = program.cleanup_start
    dep = np.full(program.ops, -1, np.int64)
    if order == "strict":
        dep[1:trace_ops] = np.arange(trace_ops - 1)
        return dep
    addr = column_np(table, "addr").tolist()
    length = page_round(column_np(table, "length")).tolist()
    code = program.code.tolist()
    map_id = program.map_id.tolist()
    ref_id = program.ref_id.tolist()
    rows = program.trace_row.tolist()
    threads = thread_of_op.tolist()
    last_op_on = [-1] * program.ids
    freed = LiveSet()  # trace address ranges unmapped, tagged with the unmapping op
    for i in range(trace_ops):
        c, m, row = code[i], map_id[i], rows[i]
        if c == OP_MMAP:
            start, end = addr[row], addr[row] + length[row]
            foreign = [p.map_id for p in freed.overlapping(start, end) if p.prot != threads[i]]
            if foreign:
                dep[i] = max(foreign)
            freed.unmap(start, end)
            last_op_on[m] = i
        elif c == OP_MMAP_FIXED_IN:
            dep[i] = last_op_on[ref_id[i]]
            last_op_on[ref_id[i]] = i
            last_op_on[m] = i
        elif c in (OP_MUNMAP, OP_MADVISE, OP_MPROTECT, OP_MREMAP):
            dep[i] = last_op_on[m]
            last_op_on[m] = i
            if c == OP_MREMAP:
                last_op_on[ref_id[i]] = i
            if c == OP_MUNMAP or c == OP_MREMAP:
                freed.map(addr[row], addr[row] + length[row], i, threads[i], True)
    return dep


def run_threaded(state, plan: ThreadPlan, start: int, stop: int, stop_flag: np.ndarray,
                 thread_counters: list, progress: np.ndarray, interrupt=None) -> list:
    """Run global ops [start, stop) of the trace part on ``plan.threads`` OS threads; join them.

    Returns, per thread, the position reached in its order.
    """
    reached = [0] * plan.threads
    workers = []
    for t, order_t in enumerate(plan.orders):
        kstart = int(np.searchsorted(order_t, start))
        kstop = int(np.searchsorted(order_t, stop))
        reached[t] = kstart
        if kstart == kstop:
            continue

        def work(t=t, order_t=order_t, kstart=kstart, kstop=kstop):
            reached[t] = state.run_thread(thread_counters[t], order_t, kstart, kstop, plan,
                                          progress, t, stop_flag)

        workers.append(threading.Thread(target=work, name=f"mmreplay-replay-{t}", daemon=True))
    for worker in workers:
        worker.start()
    for worker in workers:
        while worker.is_alive():
            worker.join(0.05)  # wake up now and then so Ctrl-C reaches the signal handler
            if interrupt:
                stop_flag[0] = 1  # the engine threads see it before their next op
    return reached


def merged_counters(base_counters: np.ndarray, thread_counters: list) -> np.ndarray:
    merged = base_counters.copy()
    for counters in thread_counters:
        for index in range(N_COUNTERS):
            if index not in NOT_ADDITIVE:
                merged[index] += counters[index]
    return merged


def new_thread_counters(plan: ThreadPlan, seed_counters: np.ndarray) -> list:
    out = []
    for t in range(plan.threads):
        counters = np.zeros(N_COUNTERS, np.int64)
        counters[C_RNG] = (int(seed_counters[C_RNG]) + 7919 * (t + 1)) & 0x7FFFFFFFFFFFFFFF
        out.append(counters)
    return out


def executed_mask(plan: ThreadPlan, progress: np.ndarray, program: OpProgram) -> np.ndarray:
    """Which ops ran: each thread's first progress[t] ops (trace part only)."""
    done = np.zeros(program.ops, bool)
    for t, order_t in enumerate(plan.orders):
        done[order_t[: int(progress[t])]] = True
    return done


def thread_stats(program: OpProgram, state, plan: ThreadPlan, ran_mask: np.ndarray,
                 wait_ns: list) -> dict:
    """{recorded tid: {ops: {op: {count, p50_ns, p99_ns}}, wait_s, os_thread}}."""
    from .session import percentile_ns
    from .program import ENGINE_OP_NAMES

    out = {}
    names = np.array(ENGINE_OP_NAMES)[program.code]
    counted = ran_mask & (program.trace_row != CLEANUP) & (state.err >= 0)
    # Ops grouped by recorded tid once: a trace may hold a hundred thousand threads.
    indices = np.flatnonzero(counted)
    indices = indices[np.argsort(plan.tid_of_op[indices], kind="stable")]
    tids_sorted = plan.tid_of_op[indices]
    for t, tids in enumerate(plan.tids):
        for tid in tids:
            mine = indices[np.searchsorted(tids_sorted, tid, "left"):
                           np.searchsorted(tids_sorted, tid, "right")]
            ops = {}
            for name in ("mmap", "munmap", "mremap", "madvise", "mprotect"):
                these = mine[names[mine] == name]
                ok = these[state.err[these] == 0]
                if len(these):
                    ops[name] = {"count": int(len(these)),
                                 "p50_ns": percentile_ns(state.latency[ok], 50),
                                 "p99_ns": percentile_ns(state.latency[ok], 99)}
            out[str(tid)] = {"ops": ops, "wait_s": wait_ns[t] / 1e9, "os_thread": t}
    return out
