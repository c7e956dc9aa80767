"""Assembling strace records into trace rows: one file's records -> rows, per chunk, with
unfinished calls carried across chunks and paired with their resumed lines per thread; then the
rows of every file in replay order, and the trace table.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa

from .format import build_table
from .schema import OPS
from .strace_read import COMPRESSED_SUFFIXES
from .strace_grammar import (BRK, DAY_NS, FIRST_LINES_KEPT, F_ADDR, F_ADVICE, F_DUR, F_ERRNO, F_FD,
                             F_FLAGS, F_HAS_HINT, F_HINT, F_KIND, F_LEN, F_NEW_LEN, F_OFFSET, F_OP,
                             F_PID, F_POS, F_PROT, F_RES, F_RET, F_TS, F_TS_KIND, I32_MAX, K_ATTACH,
                             K_CALL, K_EXIT, K_IGNORED, K_IGNORED_RESUMED, K_RESUMED, K_SIGNAL,
                             K_UNFINISHED, K_UNPARSED, MADVISE, MMAP, MPROTECT, MREMAP_OP, NFIELDS,
                             N_KINDS, REMOVAL_OPS, RES_OK, RES_UNKNOWN, TS_NONE, TS_WALL)

# Row columns, with the dtype each is kept in. pos: the line the row is placed at; place_ts:
# when the call took effect (orders rows across -ff files); tid stays int64 until pid-less
# lines are resolved.
ROW_DTYPES = {
    "pos": np.int64, "place_ts": np.int64, "tid": np.int64, "op": np.int8,
    "addr": np.uint64, "length": np.uint64, "new_addr": np.uint64, "new_addr_ok": np.bool_,
    "new_length": np.uint64, "hint": np.uint64, "hint_ok": np.bool_, "prot": np.int32,
    "flags": np.int32, "fd": np.int32, "offset": np.int64, "advice": np.int32,
    "errno": np.int32, "ts": np.int64, "duration": np.int64,
}
_CALL_LIKE = np.zeros(N_KINDS, bool)
_CALL_LIKE[[K_CALL, K_UNFINISHED, K_RESUMED, K_IGNORED, K_IGNORED_RESUMED, K_SIGNAL,
            K_EXIT]] = True
_REMOVAL = np.zeros(len(OPS) + 1, bool)  # indexed by op code (-1 wraps to the last slot)
_REMOVAL[REMOVAL_OPS] = True
FF_SUFFIX = re.compile(r"\.([0-9]{1,10})\Z")


def ff_pid_of(path: str | Path) -> int | None:
    """The PID of an `strace -ff -o LOG` file named LOG.PID (compression suffix allowed)."""
    name = Path(path).name
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    match = FF_SUFFIX.search(name)
    return int(match.group(1)) if match and int(match.group(1)) <= I32_MAX else None


def empty_rows() -> dict:
    return {name: np.empty(0, dtype) for name, dtype in ROW_DTYPES.items()}


def concat_rows(parts: list[dict]) -> dict:
    if not parts:
        return empty_rows()
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in ROW_DTYPES}


def take_rows(rows: dict, index: np.ndarray) -> dict:
    return {name: values[index] for name, values in rows.items()}


class FileImport:
    """Streaming state for one log file."""

    def __init__(self, name: str):
        self.name = name
        self.counts = np.zeros(N_KINDS, np.int64)
        self.lines = 0
        self.ts_kind: int | None = None
        self.durations = False
        self.prev_wall_ns: int | None = None
        self.days = 0
        self.carry = np.empty((NFIELDS, 0), np.int64)
        self.parts: list[dict] = []
        self.row_count = 0  # rows in parts
        self.rows = empty_rows()
        self.first = {"unparsed": [], "unknown": [], "unmatched": []}
        self.unparsed_mm = 0
        self.unknown_by_op = np.zeros(len(OPS), np.int64)
        self.unmatched_unfinished = 0
        self.unmatched_resumed = 0
        self.seen_pids: set[int] = set()
        self.attached: set[int] = set()
        self.leader: int | None = None
        self.first_pid: int | None = None
        self.exits: dict[int, tuple[int, int]] = {}  # pid -> (result state, status or signal)
        self.default_tid: tuple[int, str] | None = None

    def _note(self, which: str, positions: np.ndarray) -> None:
        """Keep the first few line numbers of each kind of problem, for the report."""
        if positions.size:
            kept = self.first[which]
            kept.extend(np.sort(positions)[:FIRST_LINES_KEPT].tolist())
            kept.sort()
            del kept[FIRST_LINES_KEPT:]

    def feed(self, m: np.ndarray) -> None:
        """Take one chunk's records (NFIELDS x lines, F_POS holding line numbers)."""
        kind = m[F_KIND]
        call_like = _CALL_LIKE[kind]
        if call_like.any():
            if self.ts_kind is None:
                self.ts_kind = int(m[F_TS_KIND, np.argmax(call_like)])
            # A file keeps one timestamp format; a line in another one is not understood.
            odd = call_like & (m[F_TS_KIND] != self.ts_kind)
            if odd.any():
                kind[odd] = K_UNPARSED
                call_like &= ~odd
        counts = np.bincount(kind, minlength=N_KINDS)
        self.counts += counts
        self.lines += m.shape[1]
        if counts[K_UNPARSED]:
            unparsed = kind == K_UNPARSED
            self.unparsed_mm += int((unparsed & (m[F_OP] >= 0)).sum())
            self._note("unparsed", m[F_POS, unparsed])
        if counts[K_EXIT] or counts[K_ATTACH] or self.leader is None:
            self._track_processes(m, kind, call_like)
        if self.ts_kind == TS_WALL and call_like.any():
            self._unwrap_midnight(m, call_like)
        self._assemble(m, kind, counts)

    def _track_processes(self, m, kind, call_like) -> None:
        """First pid, exit statuses, and the leader of a `strace -f` log written to stderr.

        There, lines without a [pid N] prefix belong to the traced command's first process
        (strace omits the prefix while it traces one process): the leader is the prefixed pid
        that strace never announced as 'Process N attached'.
        """
        for i in np.flatnonzero(kind == K_EXIT).tolist():
            # pid -1: a log without pids, or the last process of a [pid N] log
            value = m[F_RET, i] if m[F_RES, i] == RES_OK else m[F_ERRNO, i]
            self.exits.setdefault(int(m[F_PID, i]), (int(m[F_RES, i]), int(value)))
        with_pid = call_like & (m[F_PID] >= 0)
        attach = np.flatnonzero(kind == K_ATTACH)
        if not with_pid.any() and not attach.size:
            return
        pids, first_rows = np.unique(m[F_PID, with_pid], return_index=True)
        positions = m[F_POS, with_pid][first_rows]
        events = [(int(pos), 1, int(pid)) for pid, pos in zip(pids, positions)
                  if int(pid) not in self.seen_pids]
        events += [(int(m[F_POS, i]), 0, int(m[F_RET, i])) for i in attach.tolist()]
        for _, is_line, pid in sorted(events):
            if not is_line:
                self.attached.add(pid)
                continue
            self.seen_pids.add(pid)
            if self.first_pid is None:
                self.first_pid = pid
            if self.leader is None and pid not in self.attached:
                self.leader = pid

    def _unwrap_midnight(self, m, call_like) -> None:
        lines = np.flatnonzero(call_like)
        wall = m[F_TS, lines]
        previous = np.empty_like(wall)
        previous[0] = wall[0] if self.prev_wall_ns is None else self.prev_wall_ns
        previous[1:] = wall[:-1]
        # A clock that jumps back by more than half a day crossed midnight.
        days = self.days + np.cumsum(wall < previous - DAY_NS // 2)
        m[F_TS, lines] = wall + days * DAY_NS
        self.prev_wall_ns = int(wall[-1])
        self.days = int(days[-1])

    def _assemble(self, m: np.ndarray, kind: np.ndarray, counts: np.ndarray) -> None:
        if counts[K_CALL]:
            # Complete calls need no pairing: straight from the chunk to rows.
            calls = m if counts[K_CALL] == m.shape[1] else m[:, kind == K_CALL]
            self._emit(calls, calls, paired=False)
        if not (counts[K_UNFINISHED] or counts[K_RESUMED] or self.carry.shape[1]):
            return
        # The split calls are few: copy them, after the ones still waiting from earlier chunks.
        split = m[:, (kind == K_UNFINISHED) | (kind == K_RESUMED)]
        if self.carry.shape[1]:
            split = np.concatenate([self.carry, split], axis=1)
        key = split[F_PID].copy()  # thread of each line, for pairing
        if self.leader is not None:
            key[key < 0] = self.leader
        order = np.argsort(key, kind="stable")  # per thread, in line order
        k, kd, op = key[order], split[F_KIND, order], split[F_OP, order]
        same = k[1:] == k[:-1]
        match = same & (kd[:-1] == K_UNFINISHED) & (kd[1:] == K_RESUMED) & (op[:-1] == op[1:])
        matched = np.zeros(len(order), bool)
        matched[:-1] |= match
        matched[1:] |= match
        last_of_thread = np.ones(len(order), bool)
        last_of_thread[:-1] = ~same
        waiting = ~matched & (kd == K_UNFINISHED)
        self.carry = split[:, np.sort(order[waiting & last_of_thread])]  # may resume later
        lost = order[(waiting & ~last_of_thread) | (~matched & (kd == K_RESUMED))]
        if lost.size:
            self.unmatched_unfinished += int((split[F_KIND, lost] == K_UNFINISHED).sum())
            self.unmatched_resumed += int((split[F_KIND, lost] == K_RESUMED).sum())
            self._note("unmatched", split[F_POS, lost])
        if match.any():
            self._emit(split[:, order[:-1][match]], split[:, order[1:][match]], paired=True)

    def _emit(self, a: np.ndarray, b: np.ndarray, paired: bool) -> None:
        """Rows from argument records ``a`` and result records ``b`` (the same for complete
        calls); calls whose result is '?' are counted, not imported."""
        unknown = b[F_RES] == RES_UNKNOWN
        if unknown.any():
            np.add.at(self.unknown_by_op, a[F_OP, unknown], 1)
            self._note("unknown", b[F_POS, unknown])
            a = a[:, ~unknown]
            b = a if not paired else b[:, ~unknown]
        if a.shape[1]:
            self.parts.append(file_rows(a, b, paired))
            self.row_count += a.shape[1]

    def finish(self, tid: int | None, path: Path) -> dict:
        if self.carry.shape[1]:
            self.unmatched_unfinished += self.carry.shape[1]
            self._note("unmatched", self.carry[F_POS])
            self.carry = self.carry[:, :0]
        rows = concat_rows(self.parts)
        self.parts = []
        if len(rows["pos"]) > 1 and (np.diff(rows["pos"]) < 0).any():
            rows = take_rows(rows, np.argsort(rows["pos"], kind="stable"))
        pidless = rows["tid"] < 0
        if pidless.any():
            if tid is not None:
                value, source = tid, "--tid"
            elif self.leader is not None:
                value, source = self.leader, "leader of the [pid N] lines"
            elif (suffix := ff_pid_of(path)) is not None:
                value, source = suffix, "file name suffix (strace -ff)"
            else:
                value, source = 0, "unknown (no pid in the log; pass --tid)"
            rows["tid"][pidless] = value
            self.default_tid = (value, source)
        self.rows = rows
        self.durations = bool((rows["duration"] >= 0).any())
        return {"tid_for_lines_without_pid": None if self.default_tid is None
                else {"tid": self.default_tid[0], "source": self.default_tid[1]}}


def file_rows(a: np.ndarray, b: np.ndarray, paired: bool) -> dict:
    """Trace rows (typed columns) from argument records ``a`` and result records ``b``."""
    op = a[F_OP]
    ok = b[F_RES] == RES_OK
    is_mmap = op == MMAP
    removal = _REMOVAL[op]
    ts, dur = a[F_TS], b[F_DUR]
    if paired:
        place_pos = np.where(removal, a[F_POS], b[F_POS])
        place_ts = np.where(removal, ts, b[F_TS])
    else:
        place_pos = a[F_POS].copy()
        place_ts = np.where(removal, ts, ts + np.maximum(dur, 0))
    return {
        "pos": place_pos,
        "place_ts": place_ts,
        "tid": a[F_PID].copy(),
        "op": op.astype(np.int8),
        # np.where makes new arrays: reinterpret their int64 bit patterns in place
        "addr": np.where(is_mmap, np.where(ok, b[F_RET], 0), a[F_ADDR]).view(np.uint64),
        "length": np.where(op == BRK, 0, a[F_LEN]).view(np.uint64),
        "new_addr": b[F_RET].astype(np.uint64),
        "new_addr_ok": ((op == MREMAP_OP) | (op == BRK)) & ok,
        "new_length": a[F_NEW_LEN].astype(np.uint64),
        "hint": np.where(is_mmap, a[F_ADDR], a[F_HINT]).view(np.uint64),
        "hint_ok": is_mmap | ((op == MREMAP_OP) & (a[F_HAS_HINT] == 1)),
        "prot": a[F_PROT].astype(np.int32),
        "flags": a[F_FLAGS].astype(np.int32),
        "fd": a[F_FD].astype(np.int32),
        "offset": a[F_OFFSET].copy(),
        "advice": a[F_ADVICE].astype(np.int32),
        "errno": b[F_ERRNO].astype(np.int32),
        "ts": ts.copy(),
        "duration": dur.copy(),
    }


def order_rows(files: list[FileImport], ts_kind: int) -> dict:
    """All rows in replay order: line order within a file; across files (strace -ff), by the
    time each call took effect (start for removals, completion for creations)."""
    if len(files) <= 1:
        return files[0].rows if files else empty_rows()
    rows = concat_rows([state.rows for state in files])
    if ts_kind == TS_NONE:
        return rows  # files in the order given, each in line order
    file_index = np.concatenate([np.full(len(state.rows["pos"]), index, np.int64)
                                 for index, state in enumerate(files)])
    # Placement times, made non-decreasing within each file so a file's own order survives.
    place = np.concatenate([np.maximum.accumulate(state.rows["place_ts"])
                            if len(state.rows["pos"]) else state.rows["place_ts"]
                            for state in files])
    return take_rows(rows, np.lexsort((rows["pos"], file_index, place)))


def clamp_per_thread(tid: np.ndarray, ts: np.ndarray) -> int:
    """Make each thread's timestamps non-decreasing in row order (in place); return rows moved.

    strace's clock can step back slightly between the lines of different threads' calls that
    the assembly puts in a new order; the replay needs a monotonic clock per thread.
    """
    if len(ts) < 2:
        return 0
    order = np.argsort(tid, kind="stable")
    grouped_tid = tid[order]
    bounds = np.flatnonzero(grouped_tid[1:] != grouped_tid[:-1]) + 1
    moved = 0
    for segment in np.split(order, bounds):
        values = ts[segment]
        fixed = np.maximum.accumulate(values)
        changed = fixed != values
        if changed.any():
            moved += int(changed.sum())
            ts[segment] = fixed
    return moved


def trace_table(rows: dict, ts_kind: int) -> tuple[pa.Table, int]:
    n = len(rows["pos"])
    op = rows["op"]
    if ts_kind == TS_NONE or not n:
        ts = np.arange(n, dtype=np.int64)
    else:
        ts = rows["ts"] - rows["ts"].min()
    tid = rows["tid"].astype(np.int32)
    clamped = clamp_per_thread(tid, ts)

    def masked(values, valid, typ):
        return pa.array(values, typ, mask=~valid)

    is_mmap, is_mremap = op == MMAP, op == MREMAP_OP
    duration = rows["duration"]
    columns = {
        "ts_ns": ts,
        "tid": tid,
        "op": op,
        "addr": rows["addr"],
        "length": rows["length"],
        "new_addr": masked(rows["new_addr"], rows["new_addr_ok"], pa.uint64()),
        "new_length": masked(rows["new_length"], is_mremap, pa.uint64()),
        "hint": masked(rows["hint"], rows["hint_ok"], pa.uint64()),
        "prot": masked(rows["prot"], is_mmap | (op == MPROTECT), pa.int32()),
        "flags": masked(rows["flags"], is_mmap | is_mremap, pa.int32()),
        "fd": masked(rows["fd"], is_mmap, pa.int32()),
        "offset": masked(rows["offset"], is_mmap, pa.int64()),
        "advice": masked(rows["advice"], op == MADVISE, pa.int32()),
        "errno": rows["errno"],
        "duration_ns": masked(duration, duration >= 0, pa.int64()),
    }
    return build_table(columns), clamped
