"""Size distributions for synthetic mappings: the ``--size`` grammar, sampling and glibc's overhead.

Grammar (sizes take K/M/G suffixes, binary units):

    uniform:LOW,HIGH                  every byte count in [LOW, HIGH] equally likely
    lognormal:MEDIAN,SIGMA[,MIN,MAX]  exp(N(ln MEDIAN, SIGMA^2)) truncated to [MIN, MAX]
                                      (defaults 1 byte, 16T)
    choice:A,B,...[@WA,WB,...]        one of the listed sizes, with optional relative weights
    const:SIZE                        always SIZE
    empirical:TRACE.arrow             the trace's anonymous mmap lengths, resampled
    quantiles:Q0,Q1,...,Qm            piecewise linear between m+1 evenly spaced quantiles
                                      (what ``mmreplay fit`` writes)

Every distribution is sampled through its quantile function, by stratified sampling: each block of
``STRATUM_BLOCK`` consecutive mappings takes exactly one draw from each 1/block slice of the
distribution, in random order. A synthetic trace therefore follows its distribution to within
1/count (Kolmogorov-Smirnov) even when it is short, which is what makes fitted specs faithful.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from traces.errors import MmreplayError
from traces.schema import PAGE_SIZE
from traces.units import fmt_size_short, parse_size

KINDS = ("uniform", "lognormal", "choice", "const", "empirical", "quantiles")
MAX_SIZE_BYTES = 1 << 44  # 16 TiB: room for the huge PROT_NONE reservations some runtimes make
STRATUM_BLOCK = 1 << 16
_BELOW_ONE = np.nextafter(1.0, 0.0)

# glibc x86-64 (malloc/malloc.c): SIZE_SZ 8, MALLOC_ALIGNMENT 16 (== CHUNK_HDR_SZ), MINSIZE 32.
GLIBC_SIZE_SZ, GLIBC_ALIGN_MASK, GLIBC_MINSIZE = 8, 15, 32


def glibc_mapped_length(request_bytes: np.ndarray) -> np.ndarray:
    """What glibc mmaps for malloc(N) when N is served by mmap (N >= the mmap threshold).

    glibc malloc.c, sysmalloc_mmap(): with MALLOC_ALIGNMENT == CHUNK_HDR_SZ (x86-64),
    size = ALIGN_UP(nb + SIZE_SZ, pagesize), where nb = request2size(N) =
    max(MINSIZE, (N + SIZE_SZ + MALLOC_ALIGN_MASK) & ~MALLOC_ALIGN_MASK). So 128 MiB maps as
    128 MiB + 4 KiB, and any N maps as about N + 16..31 bytes rounded up to 4 KiB.
    """
    n = np.asarray(request_bytes, dtype=np.int64)
    chunk = np.maximum((n + (GLIBC_SIZE_SZ + GLIBC_ALIGN_MASK)) & ~np.int64(GLIBC_ALIGN_MASK),
                       GLIBC_MINSIZE)
    return (chunk + GLIBC_SIZE_SZ + (PAGE_SIZE - 1)) & ~np.int64(PAGE_SIZE - 1)


def stratified_uniforms(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` numbers in [0, 1): each block of STRATUM_BLOCK has one in each 1/block slice."""
    u = np.empty(n, dtype=np.float64)
    full, rest = divmod(n, STRATUM_BLOCK)
    if full:
        slots = np.tile(np.arange(STRATUM_BLOCK, dtype=np.float64), (full, 1))
        rng.permuted(slots, axis=1, out=slots)
        slots += rng.random((full, STRATUM_BLOCK))
        slots /= STRATUM_BLOCK
        u[:full * STRATUM_BLOCK] = slots.ravel()
    if rest:
        u[full * STRATUM_BLOCK:] = (rng.permutation(rest) + rng.random(rest)) / rest
    # (slot + almost 1) / block can round up to exactly 1.0
    return np.minimum(u, _BELOW_ONE, out=u)


# Peter Acklam's rational approximation of the standard normal quantile (relative error < 1.2e-9).
_ACKLAM_A = (-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00)
_ACKLAM_B = (-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
             6.680131188771972e+01, -1.328068155288572e+01)
_ACKLAM_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00)
_ACKLAM_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
             3.754408661907416e+00)
_ACKLAM_LOW = 0.02425


def _poly(coefficients, x):
    result = np.zeros_like(x)
    for c in coefficients:
        result = result * x + c
    return result


def normal_quantile(p: np.ndarray) -> np.ndarray:
    """Standard normal quantile for p in (0, 1), vectorized (numpy has none, scipy is not needed)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1 - 1e-16)
    z = np.empty_like(p)
    low, high = p < _ACKLAM_LOW, p > 1 - _ACKLAM_LOW
    mid = ~(low | high)
    q = p[mid] - 0.5
    r = q * q
    z[mid] = q * _poly(_ACKLAM_A, r) / (_poly(_ACKLAM_B, r) * r + 1)
    for mask, sign, tail in ((low, 1.0, p[low]), (high, -1.0, 1 - p[high])):
        t = np.sqrt(-2 * np.log(tail))
        z[mask] = sign * _poly(_ACKLAM_C, t) / (_poly(_ACKLAM_D, t) * t + 1)
    return z


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


@dataclass(frozen=True)
class SizeDistribution:
    """A parsed ``--size`` value: request sizes in bytes, sampled through ``quantile``."""

    kind: str
    low: int  # smallest size it can produce
    high: int  # largest size it can produce
    text: str  # canonical spelling (what specs, metadata and the regenerate command carry)

    def quantile(self, u: np.ndarray) -> np.ndarray:  # pragma: no cover - every kind overrides
        raise MmreplayError(f"size distribution {self.kind} cannot be sampled")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` request sizes (int64 bytes), stratified (see the module docstring)."""
        sizes = self.quantile(stratified_uniforms(rng, n)).astype(np.int64)
        # Float rounding must never step outside the declared bounds.
        return np.clip(sizes, self.low, self.high, out=sizes)


@dataclass(frozen=True)
class Const(SizeDistribution):
    def quantile(self, u):
        return np.full(len(u), self.low, dtype=np.int64)


@dataclass(frozen=True)
class Uniform(SizeDistribution):
    def quantile(self, u):
        span = self.high - self.low + 1
        return self.low + np.floor(u * span).astype(np.int64)


@dataclass(frozen=True)
class LogNormal(SizeDistribution):
    median: float = 1.0
    sigma: float = 0.0

    def _bounds_z(self) -> tuple[float, float]:
        return (math.log(self.low / self.median) / self.sigma,
                math.log(self.high / self.median) / self.sigma)

    def quantile(self, u):
        if self.sigma == 0:
            return np.full(len(u), int(min(max(self.median, self.low), self.high)), np.int64)
        z_low, z_high = self._bounds_z()
        p_low, p_high = _normal_cdf(z_low), _normal_cdf(z_high)
        z = normal_quantile(p_low + u * (p_high - p_low))
        return np.floor(self.median * np.exp(self.sigma * z)).astype(np.int64)


@dataclass(frozen=True)
class Choice(SizeDistribution):
    values: tuple = ()
    weights: tuple = ()

    def quantile(self, u):
        cumulative = np.cumsum(np.asarray(self.weights, dtype=np.float64))
        cumulative /= cumulative[-1]
        index = np.searchsorted(cumulative, u, side="right")
        return np.asarray(self.values, dtype=np.int64)[np.minimum(index, len(self.values) - 1)]


@dataclass(frozen=True)
class Quantiles(SizeDistribution):
    values: tuple = ()

    def quantile(self, u):
        q = np.asarray(self.values, dtype=np.int64)
        m = len(q) - 1
        position = u * m
        k = np.minimum(position.astype(np.int64), m - 1)
        step = q[k + 1] - q[k]
        if not (q % PAGE_SIZE).any():
            # Quantiles of page-rounded lengths (fitted specs) interpolate in whole pages.
            pages = np.floor((position - k) * (step // PAGE_SIZE)).astype(np.int64)
            return q[k] + pages * PAGE_SIZE
        return q[k] + np.floor((position - k) * step).astype(np.int64)


@dataclass(frozen=True)
class Empirical(SizeDistribution):
    path: str = ""
    lengths: np.ndarray = field(default=None, compare=False, repr=False)

    def quantile(self, u):
        index = np.minimum((u * len(self.lengths)).astype(np.int64), len(self.lengths) - 1)
        return self.lengths[index]


def _size(token: str, what: str) -> int:
    token = token.strip()
    if token.startswith("-"):
        raise MmreplayError(f"size {token} in {what} is negative; sizes are at least 1 byte")
    value = parse_size(token)
    if value <= 0:
        raise MmreplayError(f"size {token} in {what} is zero; sizes are at least 1 byte")
    if value > MAX_SIZE_BYTES:
        raise MmreplayError(f"size {token} in {what} is above the 16T limit for one mapping")
    return value


def _number(token: str, what: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise MmreplayError(f"{what}: {token.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise MmreplayError(f"{what}: {token.strip()!r} is not a finite number")
    return value


def _short(n: int) -> str:
    return fmt_size_short(int(n))


def parse_distribution(text: str, base_dir: str | os.PathLike | None = None) -> SizeDistribution:
    """Parse a ``--size`` value; raise MmreplayError (one line) on anything malformed.

    ``base_dir`` resolves a relative ``empirical:`` path (the folder of the spec file naming it).
    """
    text = re.sub(r"\s+", "", str(text)) if not str(text).startswith("empirical:") else str(text)
    kind, colon, args = text.partition(":")
    what = f"--size {text}"
    if kind not in KINDS:
        raise MmreplayError(f"unknown size distribution {kind!r} in {what!r} "
                            f"(expected one of {', '.join(KINDS)}, e.g. uniform:512K,1536K)")
    if not colon or not args:
        raise MmreplayError(f"{what}: {kind} needs arguments after the colon, e.g. "
                            f"{_EXAMPLES[kind]}")
    if kind == "const":
        size = _size(args, what)
        return Const(kind, size, size, f"const:{_short(size)}")
    if kind == "uniform":
        parts = args.split(",")
        if len(parts) != 2:
            raise MmreplayError(f"{what}: uniform takes LOW,HIGH, e.g. uniform:512K,1536K")
        low, high = (_size(p, what) for p in parts)
        if low > high:
            raise MmreplayError(f"{what}: low {_short(low)} is above high {_short(high)}")
        return Uniform(kind, low, high, f"uniform:{_short(low)},{_short(high)}")
    if kind == "lognormal":
        parts = args.split(",")
        if len(parts) not in (2, 4):
            raise MmreplayError(f"{what}: lognormal takes MEDIAN,SIGMA or MEDIAN,SIGMA,MIN,MAX")
        median = _size(parts[0], what)
        sigma = _number(parts[1], f"{what}: sigma")
        if sigma < 0:
            raise MmreplayError(f"{what}: sigma {parts[1]} is negative")
        low, high = (_size(parts[2], what), _size(parts[3], what)) if len(parts) == 4 \
            else (1, MAX_SIZE_BYTES)
        if low > high:
            raise MmreplayError(f"{what}: min {_short(low)} is above max {_short(high)}")
        canonical = f"lognormal:{_short(median)},{sigma!r},{_short(low)},{_short(high)}"
        dist = LogNormal(kind, low, high, canonical, median=float(median), sigma=sigma)
        if sigma > 0:
            z_low, z_high = dist._bounds_z()
            if _normal_cdf(z_high) - _normal_cdf(z_low) < 1e-9:
                raise MmreplayError(f"{what}: [{_short(low)}, {_short(high)}] holds almost none "
                                    "of this lognormal; widen the bounds or move the median")
        elif not low <= median <= high:
            raise MmreplayError(f"{what}: with sigma 0 the median must lie within [min, max]")
        return dist
    if kind == "choice":
        values_text, at, weights_text = args.partition("@")
        values = tuple(_size(p, what) for p in values_text.split(","))
        if at:
            weights = tuple(_number(w, f"{what}: weight") for w in weights_text.split(","))
            if len(weights) != len(values):
                raise MmreplayError(f"{what}: {len(values)} sizes but {len(weights)} weights")
            if any(w < 0 for w in weights) or sum(weights) <= 0:
                raise MmreplayError(f"{what}: weights must be >= 0 with a positive sum")
            canonical = (f"choice:{','.join(_short(v) for v in values)}"
                         f"@{','.join(_fmt_weight(w) for w in weights)}")
        else:
            weights = (1.0,) * len(values)
            canonical = f"choice:{','.join(_short(v) for v in values)}"
        used = [v for v, w in zip(values, weights) if w > 0]
        return Choice(kind, min(used), max(used), canonical, values=values, weights=weights)
    if kind == "quantiles":
        values = tuple(_size(p, what) for p in args.split(","))
        if len(values) < 2:
            raise MmreplayError(f"{what}: quantiles needs at least two values (min and max)")
        if any(b < a for a, b in zip(values, values[1:])):
            raise MmreplayError(f"{what}: quantiles must not decrease")
        return Quantiles(kind, values[0], values[-1],
                         f"quantiles:{','.join(_short(v) for v in values)}", values=values)
    return _empirical(args, base_dir, what)


def _fmt_weight(w: float) -> str:
    return str(int(w)) if w == int(w) else repr(w)


_EXAMPLES = {"uniform": "uniform:512K,1536K", "lognormal": "lognormal:1M,0.5,4K,64M",
             "choice": "choice:4632K,1M@3,1", "const": "const:128M",
             "empirical": "empirical:traces/data/buffers-4632k.arrow",
             "quantiles": "quantiles:4K,64K,1M,8M"}


def _empirical(path_text: str, base_dir, what: str) -> Empirical:
    from traces.format import column_np, op_names, read_trace
    from traces.schema import MAP_ANONYMOUS, OP_CODE

    path = Path(path_text)
    if base_dir is not None and not path.is_absolute():
        path = Path(base_dir) / path
    table = read_trace(path)
    ok = (op_names(table) == OP_CODE["mmap"]) & (column_np(table, "errno") == 0)
    anon = (column_np(table, "flags") & MAP_ANONYMOUS).astype(bool) | (column_np(table, "fd", -1) < 0)
    lengths = column_np(table, "length")[ok & anon]
    lengths = lengths[(lengths > 0) & (lengths <= MAX_SIZE_BYTES)].astype(np.int64)
    if not len(lengths):
        raise MmreplayError(f"{what}: {path} has no successful anonymous mmaps to resample")
    lengths.sort()
    return Empirical("empirical", int(lengths[0]), int(lengths[-1]), f"empirical:{path}",
                     path=str(path), lengths=lengths)
