"""Fit a Spec to a recorded trace, and measure how alike two traces are.

The fit models the process's anonymous memory, the part whose placement the THP-alignment rules
change: anonymous mmaps, the munmap/madvise/mprotect/mremap calls that touch them, and brk.
File-backed mappings (the loader mapping libraries) and calls on them are not synthesized and are
left out of every figure below, on both sides of a comparison.

What the fitted spec carries (at most ``MAX_SPEC_BYTES`` of TOML):
- sizes: the page-rounded anonymous mmap lengths, as ``choice`` with the exact count of every
  distinct length when that fits, else as ``quantiles`` at evenly spaced probabilities;
- ``count`` (anonymous mmaps), ``live_bytes`` (their peak live bytes), ``threads``;
- lifetime: ``fifo`` or ``lifo`` when >= 90% of unmaps take the oldest or newest live mapping,
  else ``exp:MEAN`` from the censored-exponential estimate of lifetimes (in later mmaps),
  lengthened by simulation until the synthetic peak live bytes reach the trace's; when that
  policy cannot get within 3% of the trace's peak, the closest of fifo, lifo and random;
- ``keep_at_end`` so the munmap count matches; madvise rates per advice; ``guard_pages`` from the
  mprotect count; ``brk_calls`` and the median ``brk_step``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from traces.errors import MmreplayError
from traces.jit import njit
from traces.liveset import LiveSet, successful_calls
from traces.schema import MAP_ANONYMOUS, OP_CODE, OPS
from traces.summary import walk_live_bytes

from .generate import build_table, make_plan, schedule
from .placement import BRK_ROOM
from .spec import (ADVICE, ADVICE_NAME, MAX_MADVISE_RATE, MAX_THREADS, Spec, format_madvise,
                   spec_to_toml, validate_spec)

MAX_SPEC_BYTES = 4096
CHOICE_MAX_VALUES = 400  # exact counts are tried up to this many distinct lengths
QUANTILE_POINTS = (129, 65, 33, 17)  # then quantiles, until the spec fits MAX_SPEC_BYTES
ORDER_POLICY_SHARE = 0.9  # share of unmaps that must take the oldest (newest) for fifo (lifo)
CALIBRATION_SEEDS = 8  # seeds tried when no lifetime policy reaches PEAK_TARGET with the first
PEAK_TARGET = 0.97  # the simulated peak live bytes must reach this share of the trace's
DEFAULT_BRK_STEP = 132 << 10


@dataclass
class AnonProfile:
    """The anonymous-memory facts of a trace that a spec is fitted to and compared on."""

    lengths: np.ndarray  # page-rounded length of each successful anonymous mmap, in order
    op_counts: dict  # op name -> anonymous-memory events of that op
    threads: int
    peak_live_bytes: int
    end_live: int  # anonymous mappings (partly) alive at the end
    madvise: dict  # advice name -> calls on anonymous memory
    oldest_unmaps: int  # mappings whose death took the oldest live anonymous mapping
    newest_unmaps: int
    lifetimes: list = field(default_factory=list)  # later mmaps each dead mapping lived
    exposure_alive: int = 0  # later mmaps summed over mappings still alive at the end
    brk_steps: list = field(default_factory=list)  # positive break increments

    @property
    def count(self) -> int:
        return len(self.lengths)

    def op_mix(self) -> dict:
        total = sum(self.op_counts.values())
        return {op: (self.op_counts.get(op, 0) / total if total else 0.0) for op in OPS}


# No address space is larger (x86-64 with 5-level paging): a successful call that claims more
# comes from a forged trace, and its length would overflow the profile's int64 arrays.
ADDRESS_SPACE_BYTES = 1 << 57


def _refuse_impossible_lengths(rows, calls) -> None:
    for name in ("length", "new_length"):
        values = calls[name]
        if values and max(values) > ADDRESS_SPACE_BYTES:
            i = next(i for i, value in enumerate(values) if value > ADDRESS_SPACE_BYTES)
            raise MmreplayError(
                f"row {rows[i]}: a successful {OPS[calls['op'][i]]} of {values[i]:,} bytes "
                f"({name}), more than any address space holds; fit models real traces only")


def anon_profile(table: pa.Table) -> AnonProfile:
    """Walk a validated trace's successful calls through a LiveSet, keeping anonymous memory."""
    rows, calls = successful_calls(table)
    _refuse_impossible_lengths(rows, calls)
    op, addr, length, new_length = calls["op"], calls["addr"], calls["length"], calls["new_length"]
    flags, prot, tid = calls["flags"], calls["prot"], calls["tid"]

    live = LiveSet()
    births: dict[int, int] = {}  # live anonymous mapping id -> its mmap ordinal
    live_bytes: dict[int, int] = {}
    alive: set[int] = set()  # mmap ordinals of live anonymous mappings
    oldest: list[int] = []  # heaps over ``alive``, cleaned lazily
    newest: list[int] = []
    profile = AnonProfile(lengths=np.empty(0, np.int64), op_counts={}, threads=0,
                          peak_live_bytes=0, end_live=0, madvise={}, oldest_unmaps=0,
                          newest_unmaps=0)
    lengths: list[int] = []
    threads: set[int] = set()
    last_break = None
    mmap_code, munmap_code, mremap_code = OP_CODE["mmap"], OP_CODE["munmap"], OP_CODE["mremap"]
    madvise_code, mprotect_code, brk_code = OP_CODE["madvise"], OP_CODE["mprotect"], OP_CODE["brk"]

    def count(name: str, thread: int) -> None:
        profile.op_counts[name] = profile.op_counts.get(name, 0) + 1
        threads.add(thread)

    def drop(pieces, ranked: bool, keep_id: int = -1) -> None:
        """Pieces left the live set; a mapping whose last piece went is dead."""
        for piece in pieces:
            if piece.map_id not in live_bytes or piece.map_id == keep_id:
                continue
            live_bytes[piece.map_id] -= piece.length
            if live_bytes[piece.map_id] > 0:
                continue
            born = births.pop(piece.map_id)
            del live_bytes[piece.map_id]
            profile.lifetimes.append(len(lengths) - born)
            if ranked:
                while oldest[0] not in alive:
                    heapq.heappop(oldest)
                while -newest[0] not in alive:
                    heapq.heappop(newest)
                profile.oldest_unmaps += oldest[0] == born
                profile.newest_unmaps += -newest[0] == born
            alive.discard(born)

    for i, code in enumerate(op):
        start = addr[i]
        if code == mmap_code:
            anon = bool(flags[i] & MAP_ANONYMOUS) or calls["fd"][i] < 0
            drop(live.map(start, start + length[i], i, prot[i], anon), ranked=False)
            if anon:
                count("mmap", tid[i])
                births[i] = len(lengths)
                live_bytes[i] = length[i]
                alive.add(len(lengths))
                heapq.heappush(oldest, len(lengths))
                heapq.heappush(newest, -len(lengths))
                lengths.append(length[i])
        elif code == brk_code:
            count("brk", tid[i])
            if last_break is not None and calls["new_addr"][i] > last_break:
                profile.brk_steps.append(calls["new_addr"][i] - last_break)
            last_break = calls["new_addr"][i]
        elif code in (munmap_code, madvise_code, mprotect_code, mremap_code):
            end = start + length[i]
            touched = live.overlapping(start, end)
            if any(piece.anon for piece in touched):
                count(OPS[code], tid[i])
            if code == munmap_code:
                drop(live.unmap(start, end), ranked=True)
            elif code == madvise_code:
                if any(piece.anon for piece in touched):
                    advice = calls["advice"][i]
                    name = ADVICE_NAME.get(advice, f"advice{advice}")
                    profile.madvise[name] = profile.madvise.get(name, 0) + 1
            elif code == mprotect_code:
                live.protect(start, end, prot[i])
            elif touched:  # mremap: the mapping keeps its id at its new place
                first = touched[0]
                new_start = calls["new_addr"][i]
                _, removed, displaced = live.mremap(start, end, new_start,
                                                    new_start + new_length[i], flags[i])
                if first.map_id in live_bytes:
                    live_bytes[first.map_id] += new_length[i] - sum(
                        p.length for p in removed if p.map_id == first.map_id)
                drop(removed + displaced, ranked=False, keep_id=first.map_id)
        profile.peak_live_bytes = max(profile.peak_live_bytes, live.live_anon_bytes)

    profile.lengths = np.asarray(lengths, dtype=np.int64)
    profile.threads = len(threads)
    profile.end_live = len(births)
    profile.exposure_alive = sum(len(lengths) - born for born in births.values())
    return profile


@njit(cache=True)
def _order_of_deaths(code, slot, ref, free_code, realloc_code, slots):
    """For each death (free, realloc of a live pointer), in order: whether it took the oldest
    or the newest live allocation, and its lifetime in later allocations."""
    birth = np.full(slots, -1, np.int64)
    alive = np.zeros(slots + 1, np.bool_)
    oldest_heap = [np.int64(0)] * 0
    newest_heap = [np.int64(0)] * 0
    oldest = 0
    newest = 0
    lifetimes = np.zeros(len(code), np.int64)
    deaths = 0
    born = 0
    for i in range(len(code)):
        c = code[i]
        if (c == free_code or c == realloc_code) and ref[i] >= 0:
            b = birth[ref[i]]
            while len(oldest_heap) and not alive[oldest_heap[0]]:
                heapq.heappop(oldest_heap)
            while len(newest_heap) and not alive[-newest_heap[0]]:
                heapq.heappop(newest_heap)
            if len(oldest_heap) and oldest_heap[0] == b:
                oldest += 1
            if len(newest_heap) and -newest_heap[0] == b:
                newest += 1
            alive[b] = False
            lifetimes[deaths] = born - b
            deaths += 1
        if slot[i] >= 0:
            birth[slot[i]] = born
            alive[born] = True
            heapq.heappush(oldest_heap, born)
            heapq.heappush(newest_heap, -born)
            born += 1
    exposure = 0
    for b in range(born):
        if alive[b]:
            exposure += born - b
    return oldest, newest, lifetimes[:deaths], exposure


def alloc_profile(table: pa.Table) -> AnonProfile:
    """The allocation level of a trace as the same profile: request sizes (not rounded), peak
    live requested bytes, which live allocation each free took and how long it lived."""
    from traces.alloc_walk import A_FREE, A_REALLOC, R_PEAK_BYTES, Walk

    walk = Walk(table)
    creating = walk.slot >= 0
    ending = (walk.ref >= 0) & ((walk.code == A_FREE) | (walk.code == A_REALLOC))
    oldest, newest, lifetimes, exposure = _order_of_deaths(
        walk.code, walk.slot, walk.ref, A_FREE, A_REALLOC, max(walk.slots, 1))
    return AnonProfile(
        lengths=walk.size[creating].astype(np.int64),
        op_counts={"malloc": int(creating.sum()), "free": int(ending.sum())},
        threads=int(len(np.unique(walk.tid))), peak_live_bytes=walk.counter(R_PEAK_BYTES),
        end_live=int(creating.sum() - ending.sum()), madvise={}, oldest_unmaps=int(oldest),
        newest_unmaps=int(newest), lifetimes=lifetimes.tolist(), exposure_alive=int(exposure))


# -- fitting -------------------------------------------------------------------------------

def _rate(calls: int, count: int) -> float:
    """calls / count, written short but exact enough that round(rate * count) == calls."""
    for digits in range(4, 18):
        rate = float(f"{calls / count:.{digits}g}")
        if round(rate * count) == calls:
            return rate
    return calls / count


def size_texts(lengths: np.ndarray):
    """Fitted size distributions, most faithful first: every distinct length with its exact
    count (``const``/``choice``), then quantiles at fewer and fewer evenly spaced probabilities.
    ``fit_trace`` keeps the first whose spec fits ``MAX_SPEC_BYTES``."""
    from traces.units import fmt_size_short

    values, counts = np.unique(lengths, return_counts=True)
    if len(values) == 1:
        yield f"const:{fmt_size_short(int(values[0]))}"
        return
    if len(values) <= CHOICE_MAX_VALUES:
        yield (f"choice:{','.join(fmt_size_short(int(v)) for v in values)}"
               f"@{','.join(str(int(c)) for c in counts)}")
    ordered = np.sort(lengths)
    for points in QUANTILE_POINTS:
        probabilities = np.arange(points) / (points - 1)
        # Generalized inverse of the empirical CDF: the smallest length whose share reaches p.
        index = np.clip(np.ceil(probabilities * len(ordered)).astype(np.int64) - 1, 0,
                        len(ordered) - 1)
        yield "quantiles:" + ",".join(fmt_size_short(int(v)) for v in ordered[index])


def _lifetime(profile: AnonProfile) -> str:
    deaths = len(profile.lifetimes)
    if deaths and profile.oldest_unmaps >= ORDER_POLICY_SHARE * deaths:
        return "fifo"
    if deaths and profile.newest_unmaps >= ORDER_POLICY_SHARE * deaths:
        return "lifo"
    if not deaths:
        return "fifo"
    mean = (sum(profile.lifetimes) + profile.exposure_alive) / deaths
    return f"exp:{max(mean, 1.0):.6g}"


def _lengthen(spec: Spec, target_peak_bytes: int) -> tuple[Spec, int]:
    """exp lifetimes: raise MEAN until the simulated peak live bytes reach the trace's."""
    kind, mean = spec.lifetime_policy()
    peak = schedule(make_plan(spec)).peak_live_bytes()
    while kind == "exp" and peak < PEAK_TARGET * target_peak_bytes and mean < 1e12:
        mean *= 1.5
        spec = spec.replace(lifetime=f"exp:{mean:.6g}")
        peak = schedule(make_plan(spec)).peak_live_bytes()
    return spec, peak


def _calibrate(spec: Spec, target_peak_bytes: int) -> Spec:
    """The lifetime (and seed) whose simulated peak live bytes come closest to the trace's.

    The policy read from the unmap order comes first and is kept when it gets within
    1 - PEAK_TARGET; otherwise (a few large mappings, where the order in which the live-bytes
    limit evicts them decides the peak) the other policies are tried. With few mappings no
    policy may get that close for one seed (the peak is a sum of a handful of lengths), so the
    next seeds are tried too, up to CALIBRATION_SEEDS, and the closest is kept.
    """
    tried = []
    for step in range(CALIBRATION_SEEDS):
        seeded = spec.replace(seed=spec.seed + step)
        for rank, lifetime in enumerate(dict.fromkeys([spec.lifetime, "fifo", "lifo", "random"])):
            candidate, peak = _lengthen(seeded.replace(lifetime=lifetime), target_peak_bytes)
            miss = abs(peak / target_peak_bytes - 1) if target_peak_bytes else 0.0
            if step == 0 and rank == 0 and miss <= 1 - PEAK_TARGET:
                return candidate
            tried.append((miss, step, rank, candidate))
        best = min(tried, key=lambda item: item[:3])
        if best[0] <= 1 - PEAK_TARGET:
            break
    return best[3]


@dataclass
class FitResult:
    spec: Spec
    toml: str
    profile: AnonProfile
    quality: dict


def fit_trace(table: pa.Table, name: str = "trace", seed: int = 0, check: bool = True,
              level: str = "mmap") -> FitResult:
    """Fit a spec to a validated trace; with ``check``, also synthesize it and compare.

    ``level`` "malloc" fits the allocation calls (record --malloc) instead of the anonymous
    mmaps: request sizes, peak live requested bytes, the free order and lifetimes."""
    profile = alloc_profile(table) if level == "malloc" else anon_profile(table)
    if profile.count == 0:
        raise MmreplayError(f"{name}: no successful allocation calls, nothing to fit" if
                            level == "malloc" else
                            f"{name}: no successful anonymous mmaps, nothing to fit")
    count = profile.count
    munmaps = profile.op_counts.get("free" if level == "malloc" else "munmap", 0)
    # Advice numbers Linux does not name are dropped; rates beyond what synth emits are capped.
    madvise = format_madvise([(advice, min(_rate(calls, count), MAX_MADVISE_RATE))
                              for advice, calls in sorted(profile.madvise.items(),
                                                          key=lambda item: -item[1])
                              if advice in ADVICE])
    brk_calls = profile.op_counts.get("brk", 0)
    brk_step = int(np.median(profile.brk_steps)) if profile.brk_steps else DEFAULT_BRK_STEP
    brk_step = max(1, min(brk_step, BRK_ROOM // max(brk_calls, 1)))
    if level == "malloc":
        madvise, brk_calls = "none", 0
    base = dict(count=count, level=level, malloc_overhead=False,
                live_bytes=profile.peak_live_bytes,
                lifetime=_lifetime(profile), keep_at_end=max(0, count - munmaps),
                threads=min(max(profile.threads, 1), MAX_THREADS), madvise=madvise,
                guard_pages=_rate(min(profile.op_counts.get("mprotect", 0), count), count),
                brk_calls=brk_calls, brk_step=brk_step, seed=seed)
    for size in size_texts(profile.lengths):
        spec = validate_spec(Spec(size=size, **base))
        text = spec_to_toml(spec, _comments(name, profile, spec))
        if len(text.encode()) <= MAX_SPEC_BYTES - 32:  # room for a longer calibrated lifetime
            spec = _calibrate(spec, profile.peak_live_bytes)
            text = spec_to_toml(spec, _comments(name, profile, spec))
            break
    else:  # pragma: no cover - 17 quantiles always fit
        raise MmreplayError(f"{name}: the fitted spec does not fit in {MAX_SPEC_BYTES} bytes")
    profiler = alloc_profile if level == "malloc" else anon_profile
    quality = compare_profiles(profile, profiler(build_table(schedule(make_plan(spec))))) \
        if check else {}
    return FitResult(spec, text, profile, quality)


def _comments(name: str, profile: AnonProfile, spec: Spec) -> list[str]:
    from traces.units import fmt_bytes

    mix = ", ".join(f"{op} {n}" for op, n in sorted(profile.op_counts.items()))
    if spec.level == "malloc":
        return [f"mmreplay synth spec fitted by `mmreplay fit --level malloc` to {name}",
                f"its allocation calls (a realloc counts as a free and a malloc): {mix}",
                f"its peak live requested memory: {fmt_bytes(profile.peak_live_bytes)}",
                "sizes are the bytes requested; replay with: mmreplay replay OUT.arrow "
                "--allocator NAME",
                "use: mmreplay synth THIS.toml -o OUT.arrow", ""]
    return [f"mmreplay synth spec fitted by `mmreplay fit` to {name}",
            f"its anonymous-memory calls: {mix}",
            f"its peak live anonymous memory: {fmt_bytes(profile.peak_live_bytes)}",
            "file-backed mappings are not modelled; sizes are mmap lengths (no malloc overhead)",
            "use: mmreplay synth THIS.toml -o OUT.arrow", ""]


# -- comparing ------------------------------------------------------------------------------

def ks_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov distance: largest gap between the empirical CDFs."""
    a, b = np.sort(np.asarray(a)), np.sort(np.asarray(b))
    if not len(a) or not len(b):
        return 1.0 if len(a) != len(b) else 0.0
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(np.abs(cdf_a - cdf_b).max())


def compare_profiles(original: AnonProfile, synthetic: AnonProfile) -> dict:
    """The fit-quality figures (see the module docstring for what is counted)."""
    mix_a, mix_b = original.op_mix(), synthetic.op_mix()
    worst = max(OPS, key=lambda op: abs(mix_a[op] - mix_b[op]))
    return {
        "ks_mmap_lengths": ks_distance(original.lengths, synthetic.lengths),
        "mmaps": [original.count, synthetic.count],
        "peak_live_bytes": [original.peak_live_bytes, synthetic.peak_live_bytes],
        "peak_live_ratio": (synthetic.peak_live_bytes / original.peak_live_bytes
                            if original.peak_live_bytes else 1.0),
        "op_mix": {op: [round(mix_a[op], 6), round(mix_b[op], 6)] for op in OPS},
        "op_mix_max_difference": abs(mix_a[worst] - mix_b[worst]),
        "op_mix_worst_op": worst,
        "threads": [original.threads, synthetic.threads],
    }


def compare_traces(original: pa.Table, synthetic: pa.Table) -> dict:
    """Fit-quality figures of two traces; peak live bytes as ``mmreplay info`` computes them."""
    quality = compare_profiles(anon_profile(original), anon_profile(synthetic))
    peaks = [walk_live_bytes(original)["peak_live_bytes"], walk_live_bytes(synthetic)["peak_live_bytes"]]
    quality["info_peak_live_bytes"] = peaks
    return quality

