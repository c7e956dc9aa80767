"""Parse and print sizes and durations the way mm people write them (4632K, 1.5M, 2 MiB)."""

from __future__ import annotations

import re

from .errors import MmreplayError

KIB, MIB = 1 << 10, 1 << 20
# (label, lower bound inclusive) of the mmap length histogram of ``info`` and of the results'
# alignment per size; each bucket ends at the next bound.
SIZE_BUCKETS = (("<128K", 0), ("128K-512K", 128 * KIB), ("512K-1.5M", 512 * KIB),
                ("1.5M-2M", 1536 * KIB), ("2M-4M", 2 * MIB), ("4M-16M", 4 * MIB), (">=16M", 16 * MIB))

_SUFFIX = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
           "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40,
           "TIB": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str) -> int:
    """'4632K' -> 4743168; binary units (K = KiB). Raises MmreplayError on anything else."""
    match = _SIZE.match(str(text))
    if not match or match.group(2).upper() not in _SUFFIX:
        raise MmreplayError(f"bad size {text!r} (expected e.g. 4096, 512K, 1.5M, 2G)")
    value = float(match.group(1)) * _SUFFIX[match.group(2).upper()]
    if value != int(value):
        raise MmreplayError(f"bad size {text!r}: not a whole number of bytes")
    return int(value)


def fmt_bytes(n: float | int | None) -> str:
    """2097152 -> '2.00 MiB'."""
    if n is None:
        return "n/a"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(n) < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} EiB"


def fmt_size_short(n: int) -> str:
    """Exact short form for spec files and labels: 4743168 -> '4632K', 2097152 -> '2M'."""
    for unit, factor in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def plural(count: int, noun: str) -> str:
    """'1 thread', '7 threads'."""
    return f"{count} {noun}" + ("" if count == 1 else "s")


def fmt_duration_ns(ns: float | int | None) -> str:
    if ns is None:
        return "n/a"
    ns = float(ns)
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f} us"
    if ns < 1e9:
        return f"{ns / 1e6:.1f} ms"
    return f"{ns / 1e9:.2f} s"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|)\s*$")
_NS_PER = {"ns": 1, "us": 1000, "ms": 1000_000, "s": 1000_000_000, "": 1000_000_000}


def parse_duration_ns(text: str) -> int:
    """'1.5s' -> 1500000000, '250ms', '40us', '7ns'; seconds without a unit. Exact: a value that
    is not a whole number of nanoseconds is an error."""
    from decimal import Decimal

    match = _DURATION.match(str(text))
    if not match:
        raise MmreplayError(f"bad time {text!r} (expected e.g. 1.5s, 250ms, 40us, 7ns)")
    value = Decimal(match.group(1)) * _NS_PER[match.group(2)]
    if value != value.to_integral_value():
        raise MmreplayError(f"bad time {text!r}: not a whole number of nanoseconds")
    return int(value)
