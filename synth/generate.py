"""Turn a Spec into a trace table (format v1): vectorized sampling, one sequential numba pass.

1. ``make_plan`` draws everything random up front with numpy's ``Generator(PCG64(seed))``:
   request sizes (stratified, see distributions.py), mmap lengths, exponential death times,
   which mappings get a guard page and how many madvise calls of each kind.
2. ``_schedule`` (numba) walks the mappings in order: before mapping i it unmaps the mappings
   whose time has come and, while the live limits would be exceeded, the one the lifetime policy
   names; then it places mapping i with the top-down first-fit model of placement.py and emits
   its mmap, mprotect and madvise rows. After the last mmap it unmaps all but ``keep_at_end``.
3. ``build_table`` turns the (op, mapping) event list into Arrow columns with numpy.

``schedule_python`` is the same pass in plain Python: the reference the tests compare against
and the baseline ``benchmarks/synth_speed.py`` measures.

Same spec and seed, same events, on every run and machine: randomness comes only from PCG64
seeded by the spec and from SplitMix64, never from a hash, a clock or the number of cores, and
uniform/const/choice/quantiles/empirical sizes with fifo/lifo/random lifetimes use only integer
and exactly rounded float arithmetic. Lognormal sizes and exp lifetimes also go through exp/log,
so they are identical wherever those round identically (they do on every x86-64 build seen).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from traces.errors import MmreplayError
from traces.format import build_table as _build_table
from traces.format import new_metadata, write_trace
from traces.host import meminfo_bytes
from traces.jit import njit
from traces.schema import MAP_ANONYMOUS, MAP_PRIVATE, OP_CODE, PAGE_SIZE, PROT_READ, PROT_WRITE
from traces.units import fmt_bytes

from .distributions import glibc_mapped_length, parse_distribution
from .placement import (BRK_BASE, BRK_ROOM, MMAP_FLOOR, MMAP_TOP, PAGE_SHIFT, GapList, _leaf_jit,
                        gaps_alloc, gaps_new, gaps_release, splitmix64)
from .spec import ADVICE, Spec, regenerate_command, validate_spec

FIFO, LIFO, RANDOM, EXP = 0, 1, 2, 3
POLICY_CODE = {"fifo": FIFO, "lifo": LIFO, "random": RANDOM, "exp": EXP}
MMAP, MUNMAP, MADVISE, MPROTECT, BRK = (OP_CODE[name] for name in
                                        ("mmap", "munmap", "madvise", "mprotect", "brk"))
EVENT_SPACING_NS = 1000  # synthetic clock: one event per microsecond
MALLOC_GRANULE = 16  # malloc level: the address model's unit (glibc's chunk alignment)
PROT_RW = PROT_READ | PROT_WRITE
ANON_PRIVATE = MAP_PRIVATE | MAP_ANONYMOUS
_U53 = 1.0 / (1 << 53)


@dataclass
class Plan:
    """Everything random about a synthetic trace, drawn before the sequential pass."""

    spec: Spec
    lengths: np.ndarray  # int64 mmap length argument (malloc level: the request) per mapping
    pages: np.ndarray  # int64 units of ``unit`` bytes each mapping takes in the address model
    death: np.ndarray  # float64 death time per mapping (in mmaps) for exp:MEAN, else empty
    extras: np.ndarray  # int16 [mappings, 1 + advice kinds]: guard page flag, madvise calls
    advice: tuple  # MADV_* number of each advice kind
    victim_seed: int
    tree_seed: int
    rng: np.random.Generator  # continues with the brk placement after the pass
    unit: int = PAGE_SIZE  # bytes per address-model unit: a page, or a malloc granule


@dataclass
class Schedule:
    """The sequential pass's result: events as (op code, mapping, advice kind) plus addresses."""

    plan: Plan
    op: np.ndarray  # int8 OP_CODE per event
    mapping: np.ndarray  # int64 mapping index per event
    advice_kind: np.ndarray  # int8 index into plan.advice (madvise rows)
    start_page: np.ndarray  # int64 first page of each mapping

    def live_pages_curve(self) -> np.ndarray:
        """Live mapped pages after each event (int64)."""
        delta = np.zeros(len(self.op), dtype=np.int64)
        pages = self.plan.pages[self.mapping]
        delta[self.op == MMAP] = pages[self.op == MMAP]
        delta[self.op == MUNMAP] = -pages[self.op == MUNMAP]
        return np.cumsum(delta)

    def peak_live_bytes(self) -> int:
        curve = self.live_pages_curve()
        return int(curve.max()) * self.plan.unit if len(curve) else 0


# Peak memory while a trace is built and written (Arrow columns, validity bitmaps, the pass's
# arrays, write_trace's validation): about 140 bytes per event measured, rounded up here.
BYTES_PER_EVENT, BYTES_PER_MAPPING = 160, 96


def expected_events(spec: Spec) -> int:
    per_mapping = 2 + spec.guard_pages + sum(rate for _, rate in spec.madvise_rates())
    return int(spec.count * per_mapping) + spec.brk_calls


def check_memory(spec: Spec, available_bytes: int | None = None) -> None:
    """Refuse, in one line, a trace that cannot be built in this machine's free memory."""
    if available_bytes is None:
        available_bytes = meminfo_bytes("MemAvailable")
    needed = expected_events(spec) * BYTES_PER_EVENT + spec.count * BYTES_PER_MAPPING
    if available_bytes is not None and needed > available_bytes:
        raise MmreplayError(
            f"{expected_events(spec)} events need about {fmt_bytes(needed)} of memory to build, "
            f"more than the {fmt_bytes(available_bytes)} available; lower --count")


def make_plan(spec: Spec, base_dir=None) -> Plan:
    spec = validate_spec(spec, base_dir)
    check_memory(spec)
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    n = spec.count
    requests = parse_distribution(spec.size, base_dir).sample(rng, n)
    if spec.level == "malloc":
        # malloc/free rows: the requests themselves, placed in 16-byte granules (names only:
        # the allocator replayed decides where they go)
        lengths, unit = requests, MALLOC_GRANULE
        pages = np.maximum((requests + (unit - 1)) // unit, 1)
    else:
        lengths = glibc_mapped_length(requests) if spec.malloc_overhead else requests
        pages, unit = (lengths + (PAGE_SIZE - 1)) >> PAGE_SHIFT, PAGE_SIZE
    if spec.live_bytes is not None and int(pages.max()) * unit > spec.live_bytes:
        raise MmreplayError(f"live_bytes {fmt_bytes(spec.live_bytes)} is smaller than a mapping of "
                            f"{fmt_bytes(int(pages.max()) * unit)} the size distribution "
                            "produced; raise --live-bytes or lower the sizes")
    if spec.brk_calls * spec.brk_step > BRK_ROOM:
        raise MmreplayError(f"brk_calls x brk_step grows the heap past the {fmt_bytes(BRK_ROOM)} "
                            "room below the mappings")
    policy, mean = spec.lifetime_policy()
    death = np.arange(n, dtype=np.float64) + rng.exponential(mean, n) if policy == "exp" \
        else np.empty(0, dtype=np.float64)
    rates = spec.madvise_rates()
    extras = np.zeros((n, 1 + len(rates)), dtype=np.int16)
    extras[_choose(rng, n, round(spec.guard_pages * n)), 0] = 1
    for kind, (_, rate) in enumerate(rates, start=1):
        # round(rate * n) calls in all: every mapping gets the whole part, some one more.
        whole = int(rate)
        extras[:, kind] = whole
        extras[_choose(rng, n, round(rate * n) - whole * n), kind] += 1
    victim_seed, tree_seed = (int(x) for x in rng.integers(0, 1 << 62, size=2))
    return Plan(spec, lengths, pages, death, extras, tuple(ADVICE[name] for name, _ in rates),
                victim_seed, tree_seed, rng, unit)


def _choose(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """``k`` distinct mapping indices out of ``n``, so op counts are exact, not binomial."""
    k = min(max(int(k), 0), n)
    return rng.choice(n, size=k, replace=False, shuffle=False) if k else np.empty(0, np.int64)


# exp:MEAN lifetimes: the live mappings queued by death time. Deaths are known at birth and lie
# ahead of the current mmap, so a timing wheel (one bucket per whole mmap index, a window of
# WHEEL_MEANS mean lifetimes) finds the earliest in amortized O(1); the rare deaths beyond the
# window wait in a binary min-heap. Ties go to the lower mapping index, so the order is the one
# heapq gives on (death, mapping) pairs (schedule_python).
WHEEL_MEANS = 8
WHEEL_MAX_SLOTS = 1 << 22
CURSOR, WHEEL_COUNT, OVERFLOW = range(3)


def wheel_slots(mean: float) -> int:
    slots = 64
    while slots < WHEEL_MEANS * mean and slots < WHEEL_MAX_SLOTS:
        slots *= 2
    return slots


@_leaf_jit(inline="always")
def _before(key_a, id_a, key_b, id_b):
    """The heaps' order: by key, equal keys by id."""
    return key_a < key_b or (key_a == key_b and id_a < id_b)


@_leaf_jit
def _heap_push(keys, ids, size, key, ident):
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if _before(keys[parent], ids[parent], key, ident):
            break
        keys[i], ids[i] = keys[parent], ids[parent]
        i = parent
    keys[i], ids[i] = key, ident


@_leaf_jit
def _heap_pop(keys, ids, size):
    """Remove the top of a heap of ``size`` entries."""
    size -= 1
    key, ident = keys[size], ids[size]
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _before(keys[right], ids[right], keys[child], ids[child]):
            child = right
        if _before(key, ident, keys[child], ids[child]):
            break
        keys[i], ids[i] = keys[child], ids[child]
        i = child
    keys[i], ids[i] = key, ident


@_leaf_jit
def _deaths_push(death, head, nxt, state, heap_key, heap_id, ident, now):
    """Queue mapping ``ident``, born at mmap ``now``, by its death time."""
    d = death[ident]
    if d < now + head.shape[0] - 1:
        bucket = np.int64(d)
        slot = bucket & (head.shape[0] - 1)
        nxt[ident] = head[slot]
        head[slot] = ident
        if state[WHEEL_COUNT] == 0 or bucket < state[CURSOR]:
            state[CURSOR] = bucket
        state[WHEEL_COUNT] += 1
    else:
        _heap_push(heap_key, heap_id, state[OVERFLOW], d, ident)
        state[OVERFLOW] += 1


@_leaf_jit
def _deaths_first(death, head, nxt, state, heap_key, heap_id, now):
    """The live mapping that dies first; -1 when none is queued.

    Every death <= now - 1 was handled before mmap ``now``, so the wheel's deaths all lie in
    [now - 1, now - 1 + slots): one lap, and the first non-empty bucket holds the earliest.
    """
    best = -1
    if state[WHEEL_COUNT] > 0:
        mask = head.shape[0] - 1
        if state[CURSOR] < now - 1:
            state[CURSOR] = now - 1
        while head[state[CURSOR] & mask] == -1:
            state[CURSOR] += 1
        best = head[state[CURSOR] & mask]
        x = nxt[best]
        while x != -1:
            if death[x] < death[best] or (death[x] == death[best] and x < best):
                best = x
            x = nxt[x]
    if state[OVERFLOW] > 0:
        top = heap_id[0]
        if best == -1 or heap_key[0] < death[best] or (heap_key[0] == death[best] and top < best):
            best = top
    return best


@_leaf_jit
def _deaths_remove(head, nxt, state, heap_key, heap_id, ident):
    """Dequeue ``ident``, which ``_deaths_first`` just returned."""
    if state[OVERFLOW] > 0 and heap_id[0] == ident:
        _heap_pop(heap_key, heap_id, state[OVERFLOW])
        state[OVERFLOW] -= 1
        return
    slot = state[CURSOR] & (head.shape[0] - 1)
    if head[slot] == ident:
        head[slot] = nxt[ident]
    else:
        x = head[slot]
        while nxt[x] != ident:
            x = nxt[x]
        nxt[x] = nxt[ident]
    state[WHEEL_COUNT] -= 1


@njit(cache=True)
def _schedule(pages, policy, live_limit, live_pages_limit, death, keep_at_end, extras,
              victim_seed, tree_seed, floor_page, top_page, gap_capacity, slots):
    n = pages.shape[0]
    kinds = extras.shape[1]
    capacity = 2 * n
    for i in range(n):
        for k in range(kinds):
            capacity += extras[i, k]
    ev_op = np.empty(capacity, np.int8)
    ev_map = np.empty(capacity, np.int64)
    ev_aux = np.zeros(capacity, np.int8)
    start_page = np.full(n, -1, np.int64)
    nodes, meta, free = gaps_new(floor_page, top_page, gap_capacity, tree_seed)
    rng = np.array([victim_seed], np.int64)
    live_ids = np.empty(n if policy == LIFO or policy == RANDOM else 0, np.int64)
    # exp:MEAN: the death queue (np.empty: pages behind unused room are never touched)
    wheel_head = np.full(slots if policy == EXP else 0, -1, np.int64)
    wheel_next = np.empty(n if policy == EXP else 0, np.int64)
    heap_key = np.empty(n if policy == EXP else 0, np.float64)
    heap_id = np.empty(n if policy == EXP else 0, np.int64)
    queue = np.zeros(3, np.int64)
    first = -1
    head = 0
    live_count = 0
    live_pages = 0
    e = 0
    for i in range(n + 1):
        while live_count > 0:
            if policy == EXP:
                first = _deaths_first(death, wheel_head, wheel_next, queue, heap_key, heap_id, i)
            if i == n:
                if live_count <= keep_at_end:
                    break
            elif not ((policy == EXP and death[first] <= i)
                      or (live_limit > 0 and live_count >= live_limit)
                      or (live_pages_limit > 0 and live_pages + pages[i] > live_pages_limit)):
                break
            if policy == FIFO:
                victim = head
                head += 1
            elif policy == LIFO:
                victim = live_ids[live_count - 1]
            elif policy == RANDOM:
                u = np.float64(splitmix64(rng, 0) >> np.uint64(11)) * _U53
                j = np.int64(u * live_count)
                victim = live_ids[j]
                live_ids[j] = live_ids[live_count - 1]
            else:
                victim = first
                _deaths_remove(wheel_head, wheel_next, queue, heap_key, heap_id, victim)
            live_count -= 1
            live_pages -= pages[victim]
            gaps_release(nodes, meta, free, start_page[victim], pages[victim])
            ev_op[e] = MUNMAP
            ev_map[e] = victim
            e += 1
        if i == n:
            break
        start = gaps_alloc(nodes, meta, free, pages[i])
        if start < 0:
            return ev_op[:e], ev_map[:e], ev_aux[:e], start_page, i
        start_page[i] = start
        if policy == LIFO or policy == RANDOM:
            live_ids[live_count] = i
        elif policy == EXP:
            _deaths_push(death, wheel_head, wheel_next, queue, heap_key, heap_id, i, i)
        live_count += 1
        live_pages += pages[i]
        ev_op[e] = MMAP
        ev_map[e] = i
        e += 1
        if extras[i, 0]:
            ev_op[e] = MPROTECT
            ev_map[e] = i
            e += 1
        for k in range(1, kinds):
            for _ in range(extras[i, k]):
                ev_op[e] = MADVISE
                ev_map[e] = i
                ev_aux[e] = k - 1
                e += 1
    return ev_op[:e], ev_map[:e], ev_aux[:e], start_page, -1


def _limits(spec: Spec, unit: int = PAGE_SIZE) -> tuple[int, int]:
    live = spec.live or 0
    live_pages = (spec.live_bytes // unit) if spec.live_bytes else 0
    return live, live_pages


def _most_alive(plan: Plan) -> int:
    """An upper bound on the mappings alive at once (sizes the gap tree)."""
    live, live_pages = _limits(plan.spec, plan.unit)
    bound = len(plan.pages)
    if live:
        bound = min(bound, live)
    if live_pages:
        bound = min(bound, live_pages // int(plan.pages.min()))
    return bound


def schedule(plan: Plan, engine: str = "numba", slots: int | None = None) -> Schedule:
    """Run the sequential pass (``engine`` "numba", or "python" for the reference).

    ``slots`` overrides the death wheel's size (a power of two; the tests use a tiny one so the
    overflow heap is exercised); it never changes the result.
    """
    spec = plan.spec
    policy = POLICY_CODE[spec.lifetime_policy()[0]]
    live, live_pages = _limits(spec, plan.unit)
    args = (plan.pages, policy, live, live_pages, plan.death, spec.keep_at_end, plan.extras,
            plan.victim_seed, plan.tree_seed, MMAP_FLOOR >> PAGE_SHIFT, MMAP_TOP >> PAGE_SHIFT,
            _most_alive(plan) + 2, slots or wheel_slots(spec.lifetime_policy()[1]))
    runner = _schedule if engine == "numba" else schedule_python
    op, mapping, aux, start_page, failed_at = runner(*args)
    if failed_at >= 0:
        raise MmreplayError(
            f"mapping {failed_at} does not fit: the live mappings outgrew the "
            f"{fmt_bytes(MMAP_TOP - MMAP_FLOOR)} of address space the model gives them; "
            "lower --count, --live or --live-bytes")
    return Schedule(plan, op, mapping, aux, start_page)


def schedule_python(pages, policy, live_limit, live_pages_limit, death, keep_at_end, extras,
                    victim_seed, tree_seed, floor_page, top_page, gap_capacity=0, slots=0):
    """``_schedule`` in plain Python (lists, heapq, a sorted gap list): same inputs, same output."""
    n = len(pages)
    pages_list = pages.tolist()
    death_list = death.tolist()
    extras_list = extras.tolist()
    gaps = GapList(floor_page, top_page)
    state = victim_seed
    mask = (1 << 64) - 1
    ops, maps, aux = [], [], []
    start_page = [-1] * n
    live_ids, heap = [], []
    head = live_count = live_pages = 0
    for i in range(n + 1):
        while live_count > 0:
            if i == n:
                if live_count <= keep_at_end:
                    break
            elif not ((policy == EXP and heap[0][0] <= i)
                      or (live_limit > 0 and live_count >= live_limit)
                      or (live_pages_limit > 0 and live_pages + pages_list[i] > live_pages_limit)):
                break
            if policy == FIFO:
                victim = head
                head += 1
            elif policy == LIFO:
                victim = live_ids.pop()
            elif policy == RANDOM:
                state = (state + 0x9E3779B97F4A7C15) & mask
                z = state
                z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
                z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
                z ^= z >> 31
                j = int(float(z >> 11) * _U53 * live_count)
                victim = live_ids[j]
                live_ids[j] = live_ids[-1]
                live_ids.pop()
            else:
                victim = heapq.heappop(heap)[1]
            live_count -= 1
            live_pages -= pages_list[victim]
            gaps.release(start_page[victim], pages_list[victim])
            ops.append(MUNMAP)
            maps.append(victim)
            aux.append(0)
        if i == n:
            break
        start = gaps.alloc(pages_list[i])
        if start < 0:
            return (np.array(ops, np.int8), np.array(maps, np.int64), np.array(aux, np.int8),
                    np.array(start_page, np.int64), i)
        start_page[i] = start
        if policy == LIFO or policy == RANDOM:
            live_ids.append(i)
        elif policy == EXP:
            heapq.heappush(heap, (death_list[i], i))
        live_count += 1
        live_pages += pages_list[i]
        ops.append(MMAP)
        maps.append(i)
        aux.append(0)
        row = extras_list[i]
        if row[0]:
            ops.append(MPROTECT)
            maps.append(i)
            aux.append(0)
        for k in range(1, len(row)):
            for _ in range(row[k]):
                ops.append(MADVISE)
                maps.append(i)
                aux.append(k - 1)
    return (np.array(ops, np.int8), np.array(maps, np.int64), np.array(aux, np.int8),
            np.array(start_page, np.int64), -1)


class _Columns:
    """Arrow arrays over numpy buffers, sharing zero buffers and validity bitmaps (no copies).

    Fresh memory costs a page fault per 4 KiB on first touch, as much as the rest of the work,
    so every all-zero column (hint, offset, errno, tid of one thread, ...) is the same buffer.
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.zeros = np.zeros(total, dtype=np.int64)
        self._zero_bits = None

    def zero(self, dtype) -> np.ndarray:
        return self.zeros.view(dtype)[:self.total]

    def bitmap(self, valid: np.ndarray) -> tuple[pa.Buffer, int]:
        return pa.py_buffer(np.packbits(valid, bitorder="little")), int(len(valid) - valid.sum())

    def masked(self, values: np.ndarray, typ: pa.DataType, bitmap: tuple[pa.Buffer, int]) -> pa.Array:
        buffer, nulls = bitmap
        return pa.Array.from_buffers(typ, self.total, [buffer, pa.py_buffer(values)], null_count=nulls)

    def all_null(self, typ: pa.DataType) -> pa.Array:
        if self._zero_bits is None:
            self._zero_bits = (pa.py_buffer(self.zero(np.uint8)[:(self.total + 7) // 8]), self.total)
        return self.masked(self.zero(typ.to_pandas_dtype()), typ, self._zero_bits)


def _malloc_table(sched: Schedule) -> pa.Table:
    """malloc level: a malloc per mapping, a free per unmap (pointers are the model's
    addresses: distinct while live, reused once freed, as a heap's are)."""
    plan = sched.plan
    is_malloc = sched.op == MMAP
    op = np.where(is_malloc, np.int8(OP_CODE["malloc"]), np.int8(OP_CODE["free"]))
    addr = sched.start_page[sched.mapping].astype(np.uint64) * np.uint64(plan.unit)
    length = np.where(is_malloc, plan.lengths[sched.mapping], 0).astype(np.uint64)
    tid = ((sched.mapping % plan.spec.threads).astype(np.int32) if plan.spec.threads > 1
           else np.zeros(len(op), np.int32))
    return _build_table({"ts_ns": np.arange(len(op), dtype=np.int64) * EVENT_SPACING_NS,
                         "tid": tid, "op": op, "addr": addr, "length": length,
                         "errno": np.zeros(len(op), np.int32)})


def build_table(sched: Schedule) -> pa.Table:
    """The trace columns of a schedule, with the spec's brk calls spread among the events."""
    if sched.plan.spec.level == "malloc":
        return _malloc_table(sched)
    plan, spec = sched.plan, sched.plan.spec
    events = len(sched.op)
    total = events + spec.brk_calls
    if spec.brk_calls:
        is_brk = np.zeros(total, dtype=bool)
        is_brk[plan.rng.choice(total, size=spec.brk_calls, replace=False, shuffle=False)] = True
        rows = np.flatnonzero(~is_brk)
        op = np.full(total, BRK, dtype=np.int8)
        op[rows] = sched.op
    else:  # the common case: every row is a mapping event, no scatter needed
        is_brk = None
        rows = slice(None)
        op = sched.op
    mapping = sched.mapping
    is_mmap, is_mprotect, is_madvise = op == MMAP, op == MPROTECT, op == MADVISE

    addr = np.zeros(total, dtype=np.uint64)
    addr[rows] = sched.start_page[mapping].astype(np.uint64) << np.uint64(PAGE_SHIFT)
    length = np.empty(total, dtype=np.uint64)
    length[rows] = plan.lengths[mapping].astype(np.uint64)
    length[is_mprotect] = PAGE_SIZE  # the guard page at the mapping's start
    columns = _Columns(total)
    tid = columns.zero(np.int32)
    if spec.threads > 1:
        tid = np.zeros(total, dtype=np.int32)
        tid[rows] = (mapping % spec.threads).astype(np.int32)

    mmap_bits = columns.bitmap(is_mmap)
    new_addr = columns.all_null(pa.uint64())
    if is_brk is not None:
        # brk: the first call queries the break, each later one grows it by brk_step.
        brk_break = BRK_BASE + spec.brk_step * np.arange(spec.brk_calls, dtype=np.uint64)
        values = np.zeros(total, dtype=np.uint64)
        values[is_brk] = brk_break
        new_addr = columns.masked(values, pa.uint64(), columns.bitmap(is_brk))
        brk_break[:1] = 0
        addr[is_brk] = brk_break
        length[is_brk] = 0
    if plan.advice:
        advice = np.zeros(total, dtype=np.int32)
        advice[rows] = np.asarray(plan.advice, dtype=np.int32)[sched.advice_kind]
    prot = np.where(is_mmap, np.int32(PROT_RW), np.int32(0))  # mprotect rows: PROT_NONE
    table_columns = {
        "ts_ns": np.arange(total, dtype=np.int64) * EVENT_SPACING_NS,
        "tid": tid,
        "op": op,
        "addr": addr,
        "length": length,
        "new_addr": new_addr,
        "new_length": columns.all_null(pa.uint64()),
        "hint": columns.masked(columns.zero(np.uint64), pa.uint64(), mmap_bits),
        "prot": columns.masked(prot, pa.int32(), columns.bitmap(is_mmap | is_mprotect)),
        "flags": columns.masked(np.full(total, ANON_PRIVATE, np.int32), pa.int32(), mmap_bits),
        "fd": columns.masked(np.full(total, -1, np.int32), pa.int32(), mmap_bits),
        "offset": columns.masked(columns.zero(np.int64), pa.int64(), mmap_bits),
        "advice": (columns.masked(advice, pa.int32(), columns.bitmap(is_madvise))
                   if plan.advice else columns.all_null(pa.int32())),
        "errno": columns.zero(np.int32),
        "duration_ns": columns.all_null(pa.int64()),
    }
    return _build_table(table_columns)


def generate(spec: Spec, base_dir=None, engine: str = "numba") -> pa.Table:
    """The synthetic trace table of ``spec`` (without metadata)."""
    return build_table(schedule(make_plan(spec, base_dir), engine))


def synth_metadata(spec: Spec, output: str, argv: list[str] | None = None,
                   extra: dict | None = None) -> dict:
    return new_metadata("synth", spec=spec.to_dict(), seed=spec.seed,
                        regenerate=regenerate_command(spec, output),
                        command=list(argv) if argv is not None else None, **(extra or {}))


def write_synth(spec: Spec, output: str, argv: list[str] | None = None, base_dir=None,
                extra_metadata: dict | None = None) -> dict:
    """Generate ``spec`` and write it to ``output``; return what was written (for the CLI).

    ``extra_metadata`` joins the trace's metadata (a preset's recommended replay settings)."""
    spec = validate_spec(spec, base_dir)
    sched = schedule(make_plan(spec, base_dir))
    table = build_table(sched)
    meta = synth_metadata(spec, output, argv, extra_metadata)
    if meta["command"] is None:
        del meta["command"]
    write_trace(table, output, meta)
    ops = {name: int((table.column("op").combine_chunks().indices.to_numpy() == code).sum())
           for name, code in OP_CODE.items()}
    return {"output": str(output), "events": table.num_rows,
            "ops": {name: n for name, n in ops.items() if n},
            "peak_live_bytes": sched.peak_live_bytes(), "spec": spec.to_dict(),
            "regenerate": meta["regenerate"]}
