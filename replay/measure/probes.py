"""What the kernel did: /proc/self/smaps and maps, /proc/vmstat, PAGEMAP_SCAN, getrusage, perf
counters, and what this kernel does with anonymous mmaps (``probe_kernel_alignment``).

Reading the kernel (this module) is kept apart from computing on what was read
(``layout_metrics``), so the arithmetic is testable on any arrays.
Metric names follow the kernel's own: AnonHugePages, Rss, thp_fault_alloc, ...
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import os
import resource
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from traces.schema import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PMD_SIZE

from replay.engine.policy import (MAP_FAILED, MAP_NORESERVE, KernelAlignment, _libc_mmap,
                                  dev_zero_fd)


@dataclass
class Vmas:
    """VMAs of this process from /proc/self/smaps, sorted by start (bytes)."""
    start: np.ndarray
    end: np.ndarray
    rss: np.ndarray
    anon_huge: np.ndarray
    thp_eligible: np.ndarray  # the THPeligible field (0/1)


def read_smaps(path: str = "/proc/self/smaps") -> Vmas:
    starts, ends, rss, huge, eligible = [], [], [], [], []
    skip = True
    with open(path, "rb") as handle:
        for line in handle:
            first = line[:1]
            if first in b"0123456789abcdef" and b"-" in line.split(b" ", 1)[0]:
                lo, hi = line.split(b" ", 1)[0].split(b"-")
                if len(lo) > 15:  # [vsyscall] in the kernel half: never ours, beyond int64
                    skip = True
                    continue
                skip = False
                starts.append(int(lo, 16))
                ends.append(int(hi, 16))
                rss.append(0)
                huge.append(0)
                eligible.append(0)
            elif skip:
                continue
            elif line.startswith(b"Rss:"):
                rss[-1] = int(line.split()[1]) * 1024
            elif line.startswith(b"AnonHugePages:"):
                huge[-1] = int(line.split()[1]) * 1024
            elif line.startswith(b"THPeligible:"):
                eligible[-1] = int(line.split()[1])
    return Vmas(np.array(starts, np.int64), np.array(ends, np.int64), np.array(rss, np.int64),
                np.array(huge, np.int64), np.array(eligible, np.int8))


def read_maps(path: str = "/proc/self/maps") -> np.ndarray:
    """(n, 2) int64 VMA ranges from /proc/self/maps (cheaper than smaps)."""
    rows = []
    with open(path, "rb") as handle:
        for line in handle:
            lo, hi = line.split(b" ", 1)[0].split(b"-")
            if len(lo) <= 15:  # skip [vsyscall] in the kernel half
                rows.append((int(lo, 16), int(hi, 16)))
    return np.array(rows, np.int64).reshape(-1, 2)


def read_named_maps(path: str = "/proc/self/maps") -> list[tuple[int, int, str]]:
    """(start, end, name) of each VMA in user space, sorted by start."""
    rows = []
    with open(path) as handle:
        for line in handle:
            fields = line.split(maxsplit=5)
            lo, hi = fields[0].split("-")
            if len(lo) > 12:  # [vsyscall], in the kernel half
                continue
            rows.append((int(lo, 16), int(hi, 16), fields[5].strip() if len(fields) > 5 else ""))
    rows.sort()
    return rows


def maps_snapshot() -> list[str]:
    """Address ranges with permissions and names, to check that foreign mappings are untouched."""
    with open("/proc/self/maps") as handle:
        return [line.rstrip("\n") for line in handle]


class MapsReader:
    """/proc/self/maps captured into buffers allocated beforehand, for checks around a replay:
    ``capture(slot)`` maps nothing, and the text is only decoded (``lines(slot)``) once every
    capture is taken. A malloc arena mapped while reading or decoding lands anywhere, even in a
    range the replay just freed, and would show up as a change."""

    def __init__(self, slots: int = 2, slot_bytes: int = 16 << 20):
        self.fd = os.open("/proc/self/maps", os.O_RDONLY)
        self.buffers = [bytearray(slot_bytes) for _ in range(slots)]
        self.sizes = [0] * slots

    def capture(self, slot: int) -> None:
        os.lseek(self.fd, 0, os.SEEK_SET)
        view, got = memoryview(self.buffers[slot]), 0
        while True:
            n = os.readv(self.fd, [view[got:]])
            if n == 0:
                break
            got += n
        self.sizes[slot] = got

    def lines(self, slot: int) -> list[str]:
        text = bytes(memoryview(self.buffers[slot])[: self.sizes[slot]]).decode()
        return [line.rstrip("\n") for line in text.splitlines()]

    def close(self) -> None:
        os.close(self.fd)


def owned_mask(vma_start: np.ndarray, vma_end: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Which VMAs intersect any of the sorted, non-overlapping replay ``ranges`` (n, 2)."""
    if len(ranges) == 0 or len(vma_start) == 0:
        return np.zeros(len(vma_start), bool)
    # The last range starting before each VMA's end is the only candidate that can intersect it
    # (ranges do not overlap, and they are sorted by start).
    idx = np.searchsorted(ranges[:, 0], vma_end, side="left") - 1
    valid = idx >= 0
    candidate_end = np.where(valid, ranges[np.maximum(idx, 0), 1], 0)
    return valid & (candidate_end > vma_start)


def merge_ranges(ranges: np.ndarray) -> np.ndarray:
    """Sorted (n, 2) ranges with touching or overlapping neighbours joined."""
    ranges = np.asarray(ranges, np.int64).reshape(-1, 2)
    if len(ranges) == 0:
        return ranges
    ranges = ranges[np.argsort(ranges[:, 0], kind="stable")]
    reach = np.maximum.accumulate(ranges[:, 1])
    new = np.ones(len(ranges), bool)
    new[1:] = ranges[1:, 0] > reach[:-1]
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(ranges)) - 1
    return np.stack([ranges[first, 0], reach[last]], axis=1)


MAX_HOLE_BYTES = PMD_SIZE


def own_parts(vmas: Vmas, ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The replay's ``ranges`` cut at VMA boundaries: (n, 2) parts, and for each the index of its
    VMA in ``vmas``. Parts of ranges outside every VMA (unmapped) are left out."""
    ranges = merge_ranges(ranges)
    parts, owner = [], []
    for index in np.flatnonzero(owned_mask(vmas.start, vmas.end, ranges)).tolist():
        lo, hi = int(vmas.start[index]), int(vmas.end[index])
        first = max(int(np.searchsorted(ranges[:, 1], lo, side="right")), 0)
        for start, end in ranges[first:].tolist():
            if start >= hi:
                break
            parts.append((max(start, lo), min(end, hi)))
            owner.append(index)
    return (np.asarray(parts, np.int64).reshape(-1, 2), np.asarray(owner, np.int64))


def layout_metrics(vmas: Vmas, ranges: np.ndarray,
                   scan: "Callable[[np.ndarray], tuple[int, int] | None] | None" = None) -> dict:
    """Layout of the replay's own mappings: VMAs, THP coverage, holes, alignment.

    A VMA can hold memory that is not the replay's (a neighbour with the same flags merges with
    it). smaps gives Rss and AnonHugePages per VMA only, so for such shared VMAs
    ``scan(parts) -> (rss_bytes, anon_huge_bytes)`` measures just the replay's parts
    (``own_page_bytes``, PAGEMAP_SCAN); without it, or where it cannot, the whole VMA counts and
    ``shared_vmas`` says how many did. THP-eligible blocks are counted in the replay's parts."""
    owned = owned_mask(vmas.start, vmas.end, ranges)
    start, end = vmas.start[owned], vmas.end[owned]
    parts, owner = own_parts(vmas, ranges)
    pmd = PMD_SIZE
    whole_blocks = np.maximum(parts[:, 1] // pmd - (parts[:, 0] + pmd - 1) // pmd, 0)
    covered = np.bincount(owner, weights=parts[:, 1] - parts[:, 0], minlength=len(vmas.start))
    shared = owned & (covered < vmas.end - vmas.start)
    rss, huge = int(vmas.rss[owned].sum()), int(vmas.anon_huge[owned].sum())
    measured = None
    if shared.any() and scan is not None:
        measured = scan(parts[shared[owner]])
    if measured is not None:
        rss = int(vmas.rss[owned & ~shared].sum()) + measured[0]
        huge = int(vmas.anon_huge[owned & ~shared].sum()) + measured[1]
    # A hole: free address space of at most 2 MiB between two of our VMAs with nothing in
    # between: the padding THP alignment leaves. Wider gaps separate unrelated regions.
    order = np.argsort(vmas.start)
    owned_sorted = owned[order]
    gap = vmas.start[order][1:] - vmas.end[order][:-1]
    hole = owned_sorted[1:] & owned_sorted[:-1] & (gap > 0) & (gap <= MAX_HOLE_BYTES)
    return {
        "vmas": int(owned.sum()),
        "rss_bytes": rss,
        "anon_huge_bytes": huge,
        "thp_eligible_bytes": int(whole_blocks.sum() * pmd),
        "holes": int(hole.sum()),
        "hole_bytes": int(gap[hole].sum()),
        "mapped_bytes": int((end - start).sum()),
        "shared_vmas": int(shared.sum()) if measured is None else 0,
    }


# PAGEMAP_SCAN (Linux 6.7+): ranges of our own address space whose pages have given categories.
PAGE_IS_PRESENT = 1 << 3
PAGE_IS_PFNZERO = 1 << 5          # the shared zero page (a read fault): not in Rss
PAGE_IS_HUGE = 1 << 6             # PMD-mapped THP (or hugetlb)
PM_SCAN_ARG_BYTES = 96            # struct pm_scan_arg: twelve u64 fields
PAGEMAP_SCAN = (3 << 30) | (PM_SCAN_ARG_BYTES << 16) | (ord("f") << 8) | 16  # _IOWR('f', 16, ...)
SCAN_REGIONS = 1024               # struct page_region slots per ioctl call


def scan_pages(ranges: np.ndarray, required: int, absent: int = 0,
               pagemap: str = "/proc/self/pagemap") -> np.ndarray | None:
    """The parts of ``ranges`` (ours, live) whose pages have every category in ``required``
    and none in ``absent`` (PAGE_IS_*), from PAGEMAP_SCAN; None where the ioctl does not exist
    (Linux < 6.7)."""
    regions = (ctypes.c_uint64 * (3 * SCAN_REGIONS))()
    found: list[tuple[int, int]] = []
    try:
        fd = os.open(pagemap, os.O_RDONLY)
    except OSError:
        return None
    try:
        for start, end in merge_ranges(ranges).tolist():
            while start < end:
                # size, flags, start, end, walk_end, vec, vec_len, max_pages, category_inverted,
                # category_mask, category_anyof_mask, return_mask
                arg = (ctypes.c_uint64 * 12)(PM_SCAN_ARG_BYTES, 0, start, end, 0,
                                             ctypes.addressof(regions), SCAN_REGIONS, 0, absent,
                                             required | absent, 0, required)
                try:
                    count = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
                except OSError:
                    return None
                found.extend((regions[3 * k], regions[3 * k + 1]) for k in range(count))
                walk_end = int(arg[4])
                if walk_end >= end or walk_end <= start:
                    break
                start = walk_end  # the region buffer filled up: go on from where the walk stopped
    finally:
        os.close(fd)
    return merge_ranges(found)


def huge_ranges(ranges: np.ndarray, pagemap: str = "/proc/self/pagemap") -> np.ndarray | None:
    """The parts of ``ranges`` (ours, live) mapped by transparent huge pages, from PAGEMAP_SCAN:
    PMD-mapped and not the huge zero page.

    Returns None where the ioctl does not exist (Linux < 6.7): smaps only gives a total per VMA.
    """
    return scan_pages(ranges, PAGE_IS_HUGE, PAGE_IS_PFNZERO, pagemap=pagemap)


def own_page_bytes(parts: np.ndarray) -> tuple[int, int] | None:
    """(Rss, AnonHugePages) bytes of ``parts`` alone: pages present (not the zero page) and
    pages mapped huge, by PAGEMAP_SCAN; None where it is missing."""
    present = scan_pages(parts, PAGE_IS_PRESENT, PAGE_IS_PFNZERO)
    huge = scan_pages(parts, PAGE_IS_HUGE, PAGE_IS_PFNZERO)  # not the huge zero page
    if present is None or huge is None:
        return None
    return (int((present[:, 1] - present[:, 0]).sum()), int((huge[:, 1] - huge[:, 0]).sum()))


def read_rollup(path: str = "/proc/self/smaps_rollup") -> dict:
    """The whole process's totals from smaps_rollup (the replay's mappings and Python's own)."""
    try:
        fields = smaps_rollup(path)
    except OSError:
        return {}
    names = {"Rss": "rss_bytes", "AnonHugePages": "anon_huge_bytes"}
    return {key: fields[name] for name, key in names.items() if name in fields}


def status_bytes(field: str) -> int | None:
    """A size field of /proc/self/status (``VmHWM``, ``VmRSS``) in bytes; None where missing."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (clear_refs 5, Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def smaps_rollup(path: str = "/proc/self/smaps_rollup") -> dict:
    """Every size field of smaps_rollup (the whole process) in bytes, by the kernel's name."""
    out = {}
    with open(path) as handle:
        for line in handle:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                out[parts[0][:-1]] = int(parts[1]) * 1024
    return out


def read_vmstat() -> dict:
    counters = {}
    with open("/proc/vmstat") as handle:
        for line in handle:
            name, value = line.split()
            if name.startswith(("thp_", "pgfault", "pgmajfault", "compact_")) or name in (
                    "nr_anon_transparent_hugepages",):
                counters[name] = int(value)
    return counters


def vmstat_delta(before: dict, after: dict) -> dict:
    """Deltas of event counters; nr_* gauges are reported as their value after."""
    out = {}
    for name, value in after.items():
        out[name] = value if name.startswith("nr_") else value - before.get(name, 0)
    return out


KHUGEPAGED = Path("/sys/kernel/mm/transparent_hugepage/khugepaged")


def khugepaged_counter(name: str) -> int | None:
    """One of khugepaged's system-wide counters (``full_scans``, ``pages_collapsed``); None where
    it cannot be read."""
    try:
        return int((KHUGEPAGED / name).read_text())
    except (OSError, ValueError):
        return None


def process_age_s() -> float | None:
    """Seconds since this process started (/proc/self/stat and /proc/uptime); None if unreadable."""
    try:
        with open("/proc/self/stat") as handle:
            start_ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as handle:
            uptime = float(handle.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def rusage_faults() -> tuple[int, int]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt, usage.ru_majflt


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# perf_event_open: software counters always, hardware ones where the machine exposes them.
PERF_TYPE_HARDWARE, PERF_TYPE_SOFTWARE, PERF_TYPE_HW_CACHE = 0, 1, 3
PERF_COUNTERS = {
    "page_faults": (PERF_TYPE_SOFTWARE, 2),
    "minor_faults": (PERF_TYPE_SOFTWARE, 5),
    "major_faults": (PERF_TYPE_SOFTWARE, 6),
    "cycles": (PERF_TYPE_HARDWARE, 0),
    "instructions": (PERF_TYPE_HARDWARE, 1),
    # dTLB (3) | read (0 << 8) | miss (1 << 16)
    "dtlb_load_misses": (PERF_TYPE_HW_CACHE, 3 | (0 << 8) | (1 << 16)),
}
SYS_perf_event_open = 298  # x86-64
PERF_ATTR_SIZE = 128
PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_DISABLE = 0x2400, 0x2401


# Hardware counters cost nothing on the fault path. A software page-fault counter makes every
# fault ~3% slower (measured on fault-bound replays) while getrusage gives the same count for
# free, so it is opened only on request (--perf-faults).
HARDWARE_PERF_COUNTERS = ("cycles", "instructions", "dtlb_load_misses")
FAULT_PERF_COUNTERS = ("page_faults",)
DEFAULT_PERF_COUNTERS = HARDWARE_PERF_COUNTERS


class PerfCounters:
    """Counts events of this process (all threads it creates later included) between start/stop."""

    def __init__(self, names=DEFAULT_PERF_COUNTERS):
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._libc.syscall.restype = ctypes.c_long
        self.fds: dict[str, int] = {}
        self.unavailable: dict[str, str] = {}
        for name in names:
            kind, config = PERF_COUNTERS[name]
            fd = self._open(kind, config)
            if fd < 0:
                self.unavailable[name] = os.strerror(ctypes.get_errno())
            else:
                self.fds[name] = fd

    def _open(self, kind: int, config: int) -> int:
        # struct perf_event_attr: type u32, size u32, config u64, sample_period u64,
        # sample_type u64, read_format u64, flags u64 (disabled=1, inherit=2, exclude_hv=64) ...
        flags = 1 | 2 | 64
        attr = struct.pack("IIQQQQQ", kind, PERF_ATTR_SIZE, config, 0, 0, 0, flags)
        buffer = ctypes.create_string_buffer(attr.ljust(PERF_ATTR_SIZE, b"\0"))
        return self._libc.syscall(SYS_perf_event_open, buffer, 0, -1, -1, 0)

    def _ioctl_all(self, request: int) -> None:
        import fcntl
        for fd in self.fds.values():
            fcntl.ioctl(fd, request, 0)

    def start(self) -> None:
        self._ioctl_all(PERF_EVENT_IOC_ENABLE)

    def stop(self) -> dict:
        self._ioctl_all(PERF_EVENT_IOC_DISABLE)
        values: dict = {}
        for name, fd in self.fds.items():
            values[name] = struct.unpack("Q", os.read(fd, 8))[0]
        for name, why in self.unavailable.items():
            values[name] = None
        return values

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}


def vma_count() -> int:
    """How many VMAs this process has now (lines of /proc/self/maps); 0 where unreadable."""
    try:
        with open("/proc/self/maps", "rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# What this kernel does with anonymous mmaps (policy.KernelAlignment): real calls, looked at.

PROBE_FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE


def _all_aligned(length: int, samples: int) -> bool:
    libc = _libc_mmap()
    addresses = []
    try:
        for _ in range(samples):
            address = libc.mmap(None, length, 0, PROBE_FLAGS, -1, 0)  # PROT_NONE
            if address in (None, MAP_FAILED):
                return False
            addresses.append(address)
        return all(a % PMD_SIZE == 0 for a in addresses)
    finally:
        for address in addresses:
            libc.munmap(address, length)


def _gives_plain_search(search) -> bool:
    """Whether ``search(hint, length)`` (a PROT_NONE mmap) is the plain top-down search.

    Find the gap the plain search would use (map length + 8 KiB hint-less, never aligned on a
    kernel that aligns only multiples, and give it back), put a page of ours at its top such that
    the top left is off any 2 MiB boundary, then search for a 2 MiB multiple with that page as the
    hint: the plain search puts it right below the page, off any boundary; a search with THP
    alignment puts it on one."""
    libc = _libc_mmap()
    for length in (4 * PMD_SIZE, 3 * PMD_SIZE, 5 * PMD_SIZE):
        first = libc.mmap(None, length + 8192, 0, PROBE_FLAGS, -1, 0)
        if first in (None, MAP_FAILED):
            return False
        libc.munmap(first, length + 8192)
        top = first + length + 8192
        page = top - (8192 if (top - 4096) % PMD_SIZE == 0 else 4096)
        if libc.mmap(page, 4096, 0, PROBE_FLAGS | MAP_FIXED_NOREPLACE, -1, 0) != page:
            continue  # taken meanwhile (or no MAP_FIXED_NOREPLACE: the page went elsewhere)
        try:
            found = search(page, length)
            if found in (None, MAP_FAILED):
                return False
            libc.munmap(found, length)
        finally:
            libc.munmap(page, 4096)
        if found == page - length:
            return True
        # Elsewhere: aligned by this kernel, or a higher gap of exactly this length: ask again.
    return False


def _occupied_hint_gives_plain_search() -> bool:
    """An anonymous mmap with a hint inside an existing mapping (6.13+ and <= 6.6: yes)."""
    libc = _libc_mmap()
    return _gives_plain_search(lambda hint, length: libc.mmap(hint, length, 0, PROBE_FLAGS, -1, 0))


def _dev_zero_gives_plain_search() -> bool:
    """A private mapping of /dev/zero, no hint (6.7-6.12 and <= 6.6: yes; 6.18 aligns it)."""
    libc, fd = _libc_mmap(), dev_zero_fd()
    if fd < 0:
        return False
    return _gives_plain_search(lambda hint, length: libc.mmap(
        None, length, 0, MAP_PRIVATE | MAP_NORESERVE, fd, 0))


_probed: KernelAlignment | None = None


def probe_kernel_alignment(samples: int = 8) -> KernelAlignment:
    """Map a few PROT_NONE regions and look at their starts (cached for the process)."""
    global _probed
    if _probed is None:
        _probed = KernelAlignment(aligns_pmd_multiples=_all_aligned(4 * PMD_SIZE, samples),
                                  aligns_large=_all_aligned(4 * PMD_SIZE + 4096, samples),
                                  samples=samples,
                                  plain_by_hint=_occupied_hint_gives_plain_search(),
                                  plain_by_zero=_dev_zero_gives_plain_search())
    return _probed
