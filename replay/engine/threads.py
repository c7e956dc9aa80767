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

At most ``MAX_OS_THREADS`` OS threads run: recorded threads beyond that share them. Every wait
here can be interrupted (Ctrl-C, SIGTERM), and a thread that cannot be started or that fails
stops the run with the reason, instead of leaving the others waiting on it.
"""

from __future__ import annotations

import _thread
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from traces import MmreplayError
from traces.liveset import LiveSet

if TYPE_CHECKING:  # planning reads the trace; running a plan (inside a VM guest too) does not
    import pyarrow as pa

from replay.running.config import MAX_OS_THREADS
from replay.engine.engine import N_COUNTERS, NOT_ADDITIVE, C_RNG
from replay.engine.program import (OP_HEAP_FREE, OP_HEAP_GROW, OP_HEAP_RESERVE, OP_MADVISE,
                                   OP_MMAP, OP_MMAP_FIXED_IN, OP_MPROTECT, OP_MREMAP, OP_MUNMAP,
                                   OP_TOUCH, OpProgram)


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
    count = min(len(by_appearance), MAX_OS_THREADS) if mode == "recorded" else int(mode)
    if not 1 <= count <= MAX_OS_THREADS:
        raise MmreplayError(f"--threads must be from 1 to {MAX_OS_THREADS}")
    # Vectorised: a trace may hold a hundred thousand recorded threads.
    rank_of_unique = np.empty(len(unique), np.int64)
    rank_of_unique[np.argsort(first_seen, kind="stable")] = np.arange(len(unique))
    lookup = (rank_of_unique[np.searchsorted(unique, tids_of_rows)] % count).astype(np.int32) \
        if len(tids_of_rows) else np.zeros(0, np.int32)
    groups = [[] for _ in range(max(count, 1))]
    for tid, r in rank.items():
        groups[r % count].append(tid)
    return lookup, groups


def plan_threads(program: OpProgram, table: pa.Table, mode: str, order: str = "deps") -> ThreadPlan:
    """Assign ops to OS threads and compute the cross-thread dependencies, once, before running."""
    from traces.format import column_np

    rows_tid = column_np(table, "tid").astype(np.int64)
    thread_of_row, groups = assign_threads(rows_tid, mode)
    n = program.ops
    trace_ops = program.cleanup_start
    # A touch runs on the thread whose call made the memory usable (its arg), not on the
    # thread whose call came next.
    rows = np.where(program.code[:trace_ops] == OP_TOUCH, program.arg[:trace_ops],
                    program.trace_row[:trace_ops])
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
    from traces.format import column_np
    from traces.summary import page_round

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
        elif c == OP_HEAP_RESERVE:
            last_op_on[m] = i  # address space of its own: it follows nobody's unmap
        elif c == OP_MMAP_FIXED_IN:
            dep[i] = last_op_on[ref_id[i]]
            last_op_on[ref_id[i]] = i
            last_op_on[m] = i
        elif c in (OP_MUNMAP, OP_MADVISE, OP_MPROTECT, OP_MREMAP, OP_TOUCH, OP_HEAP_GROW,
                   OP_HEAP_FREE):
            dep[i] = last_op_on[m]
            last_op_on[m] = i
            if c == OP_MREMAP:
                last_op_on[ref_id[i]] = i
            if c == OP_MUNMAP or c == OP_MREMAP:
                freed.map(addr[row], addr[row] + length[row], i, threads[i], True)
    return dep


_PENDING, _RUNNING, _CANCELLED = 0, 1, 2


def run_threaded(state, plan: ThreadPlan, start: int, stop: int, stop_flag: np.ndarray,
                 thread_counters: list, progress: np.ndarray, interrupt=None) -> list:
    """Run global ops [start, stop) of the trace part on ``plan.threads`` OS threads; join them.

    Returns, per thread, the position reached in its order. A thread that cannot start or that
    raises (MemoryError under an address-space limit) raises the stop flag, so the others stop
    at their next op, and requests ``interrupt`` with the reason (MmreplayError without one).

    Threads are started with ``_thread`` and joined through a lock each, always with a timeout:
    ``threading.Thread.start`` waits without one for the new thread to report, and a thread that
    dies before it does (MemoryError in its bootstrap) left the replay waiting forever, deaf to
    Ctrl-C.
    """
    reached = [0] * plan.threads
    status = [_PENDING] * plan.threads
    failure: list = []
    gate = threading.Lock()
    running = []  # (thread index, lock released when it is done)

    def fail(reason: str) -> None:
        stop_flag[0] = 1  # the engine threads see it before their next op, and while waiting
        if not failure:
            failure.append(reason)

    for t, order_t in enumerate(plan.orders):
        kstart = int(np.searchsorted(order_t, start))
        kstop = int(np.searchsorted(order_t, stop))
        reached[t] = kstart
        if kstart == kstop:
            continue
        done = threading.Lock()
        done.acquire()

        def work(t=t, order_t=order_t, kstart=kstart, kstop=kstop, done=done):
            try:
                with gate:
                    if status[t] == _CANCELLED:
                        return
                    status[t] = _RUNNING
                reached[t] = state.run_thread(thread_counters[t], order_t, kstart, kstop, plan,
                                              progress, t, stop_flag)
            except BaseException as exc:  # noqa: BLE001 - reported as the run's stop reason
                fail(f"replay thread {t} failed: {type(exc).__name__}")
            finally:
                done.release()

        try:
            _thread.start_new_thread(work, ())
        except (RuntimeError, MemoryError) as exc:
            fail(f"cannot start replay thread {t + 1} of {plan.threads} "
                 f"({exc or type(exc).__name__}); try fewer with --threads N")
            break
        running.append((t, done))
    for t, done in running:
        while not done.acquire(timeout=0.05):  # the signal handler runs between waits
            if interrupt or failure:
                stop_flag[0] = 1
                with gate:
                    if status[t] == _PENDING:  # never started: it never will run an op
                        status[t] = _CANCELLED
                if status[t] == _CANCELLED:
                    break
    if failure:
        if interrupt is None:
            raise MmreplayError(failure[0])
        interrupt.request(failure[0])
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
