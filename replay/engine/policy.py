"""Placement policies: where anonymous mappings start, as different kernels decide it.

The rules (see ../shared/context/kernel-thp-alignment.md):
- ``no-align`` (Linux <= 6.6): a private anonymous mapping goes where the plain top-down search
  puts it (the highest free gap below mmap_base that fits); it starts 2 MiB-aligned only by
  chance, and a freed hole of exactly its size is reused.
- ``align-ge-pmd`` (6.7-6.11, efa7df3e3bb5 plus the 6.8 top-down fix): a private anonymous mapping
  of 2 MiB or more gets a 2 MiB-aligned start. The kernel searches for length + 2 MiB and leaves
  the unused padding as a hole; when the window found is already aligned the mapping goes 2 MiB
  higher, flush against its upper neighbour. A hint is kept when the whole padded window fits
  there; otherwise the call is aligned elsewhere, even if the hint alone would have fitted.
- ``align-pmd-multiple`` (6.12+, d4148aeab412): the same, but only for lengths that are exact
  multiples of 2 MiB and, as in 6.13+ ("mm: respect mmap hint address when aligning for THP",
  also in 6.12.y), only without a hint.
- ``kernel``: whatever the running kernel does with the recorded call.

File mappings are replayed as anonymous memory, but under every policy they keep the placement
the recording host gave them: where the recorded start was congruent to the file offset modulo
2 MiB and the mapping covers a whole 2 MiB-aligned stretch of the file (the rule of
thp_get_unmapped_area() for files on THP-capable file systems, in 6.1 as in 6.18), the start is
placed by that rule; otherwise by the plain search.

The emulation runs the kernel's own search, never a model of it, and never uses MAP_FIXED over
memory the replay does not own:
- plain: mmap() with a hint inside a mapping that exists (always refused), so the running kernel
  falls back to its plain top-down search. On 6.13+ a hint disables THP alignment and on
  <= 6.6 there is none, so this is exactly the <= 6.6 search, in one call.
- aligned: the padded window is claimed PROT_NONE by the same plain search, the mapping is made
  with MAP_FIXED inside it, and the padding is unmapped (see engine._map_aligned).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

from traces.schema import (MAP, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED,
                           MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE, PMD_SIZE)

from replay.engine.program import PLACE_ALIGNED, PLACE_KERNEL, PLACE_PLAIN

MAP_HUGETLB, MAP_32BIT, MAP_NORESERVE = MAP["MAP_HUGETLB"], MAP["MAP_32BIT"], MAP["MAP_NORESERVE"]
MAP_STACK = MAP["MAP_STACK"]
POLICIES = ("kernel", "no-align", "align-ge-pmd", "align-pmd-multiple")
# What each rule is, and of which kernel (the --policy help and the README table).
POLICY_HELP = {
    "kernel": "this kernel's own rule (the call as recorded)",
    "no-align": "Linux <= 6.6: plain top-down placement",
    "align-ge-pmd": "6.7-6.11 (efa7df3e3bb5): >= 2 MiB starts 2 MiB-aligned",
    # The help prints these in a block kept as written: a second line is indented under the first.
    "align-pmd-multiple": ("6.12.y/6.13+ (d4148aeab412 + hint fix): only exact\n" + " " * 22
                           + "multiples of 2 MiB; hinted calls never (6.12.0: some)"),
}
# Kernels whose emulated THP placement has the 6.8 top-down fix (an already aligned window puts
# the mapping at its top); no-align stands for 6.1-6.6, which align only files, without it.
TOPDOWN_FIX = {"no-align": False, "align-ge-pmd": True, "align-pmd-multiple": True}


def emulated_flags(policy: str, flags: int) -> int:
    """The mmap flags that give, on this kernel, the mapping the emulated kernel made.

    Before 6.7.5 MAP_STACK did nothing; since "mm: mmap: map MAP_STACK to VM_NOHUGEPAGE" a
    MAP_STACK mapping is VM_NOHUGEPAGE: no THP, and no merging with its anonymous neighbours.
    ``no-align`` (<= 6.6) therefore maps thread stacks without it."""
    if policy == "no-align":
        return flags & ~MAP_STACK
    return flags


def file_was_thp_aligned(recorded_addr: int, length: int, offset: int) -> bool:
    """Whether the recording host placed a file mapping by the THP rule for files: the mapping
    covers a whole 2 MiB-aligned stretch of the file and starts congruent to its offset."""
    off_align = -(-offset // PMD_SIZE) * PMD_SIZE
    covers = offset + length - off_align >= PMD_SIZE
    return covers and (recorded_addr - offset) % PMD_SIZE == 0


def placement(policy: str, length: int, flags: int, hint: int, replayed_anon: bool,
              recorded_addr: int = 0, file_offset: int = 0) -> tuple[int, int]:
    """How the engine places one mmap under ``policy``: (PLACE_* mode, start residue mod 2 MiB).

    Shared, MAP_FIXED_NOREPLACE, MAP_32BIT and hugetlb calls always go to the kernel as recorded:
    the anonymous THP alignment rule never applied to them in the kernels emulated (hugetlb
    mappings cannot be trimmed by 4 KiB either). ``replayed_anon`` is False for a file mapping
    replayed as anonymous memory, whose recorded start and offset decide its placement.
    """
    if flags & (MAP_SHARED | MAP_FIXED_NOREPLACE | MAP_HUGETLB | MAP_32BIT):
        return PLACE_KERNEL, 0
    if not replayed_anon:
        if file_was_thp_aligned(recorded_addr, length, file_offset):
            return PLACE_ALIGNED, file_offset % PMD_SIZE
        return (PLACE_KERNEL if hint else PLACE_PLAIN), 0
    if policy == "kernel":
        return PLACE_KERNEL, 0
    if policy == "align-ge-pmd" and length >= PMD_SIZE:
        return PLACE_ALIGNED, 0
    if hint:
        return PLACE_KERNEL, 0  # <= 6.6 and 6.13+: a free hint is granted, else plain search
    if policy == "align-pmd-multiple" and length % PMD_SIZE == 0:
        return PLACE_ALIGNED, 0
    return PLACE_PLAIN, 0


def remap_placement(policy: str, length: int, new_length: int, remap_flags: int,
                    replayed_anon: bool) -> int:
    """How the engine places an mremap (PLACE_*): one that may move an anonymous mapping goes
    where the emulated kernel's get_unmapped_area() put the new length (no hint, no file, no
    MAP_SHARED: the same rule as a hint-less anonymous mmap), unless it grows in place."""
    if (policy == "kernel" or not replayed_anon or not remap_flags & MREMAP_MAYMOVE
            or remap_flags & MREMAP_FIXED):
        return PLACE_KERNEL
    if new_length <= length and not remap_flags & MREMAP_DONTUNMAP:
        return PLACE_KERNEL  # shrinks in place
    return placement(policy, new_length, MAP_PRIVATE | MAP_ANONYMOUS, 0, True)[0]


def release_at_least(release: str, major: int, minor: int) -> bool:
    """Whether a kernel release string such as '6.18.44-fc' is major.minor or later."""
    numbers = []
    for part in release.split("-", 1)[0].split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits) if digits else 0)
    while len(numbers) < 2:
        numbers.append(0)
    return tuple(numbers) >= (major, minor)


class KernelAlignment:
    """What this kernel does with private anonymous mmaps, measured with real calls."""

    def __init__(self, aligns_pmd_multiples: bool, aligns_large: bool, samples: int,
                 plain_by_hint: bool = False, plain_by_zero: bool = False,
                 release: str | None = None):
        self.aligns_pmd_multiples = aligns_pmd_multiples
        self.aligns_large = aligns_large
        self.samples = samples
        # A hint inside an existing mapping makes this kernel run its plain top-down search
        # with no THP alignment (<= 6.6, 6.13+): the emulation's way to place as <= 6.6 did.
        self.plain_by_hint = plain_by_hint
        # A private mapping of /dev/zero gets the plain search (6.7-6.12: the anonymous THP
        # rule never applied to files): the way when hints do not work.
        self.plain_by_zero = plain_by_zero
        self.release = release if release is not None else os.uname().release
        # Whether this kernel's THP placement (files) has the 6.8 top-down fix.
        self.topdown_fix = release_at_least(self.release, 6, 8)

    def as_dict(self) -> dict:
        return {"aligns_pmd_multiples": self.aligns_pmd_multiples,
                "aligns_large_non_multiples": self.aligns_large, "samples": self.samples,
                "plain_search_by_occupied_hint": self.plain_by_hint,
                "plain_search_by_dev_zero": self.plain_by_zero}

    def emulation(self, policy: str) -> dict:
        """Whether ``policy`` can be emulated exactly here, how, and why not when it cannot."""
        files = ("file mappings (replayed as anonymous) keep the THP alignment the recording "
                 "host gave them")
        if policy == "kernel":
            return {"emulated": True, "how": f"this kernel's own placement; {files}"}
        if self.plain_by_hint:
            how = ("the kernel's own plain top-down search (mmap with a hint inside an existing "
                   "mapping, which the kernel refuses)")
        elif self.plain_by_zero:
            how = ("the kernel's own plain top-down search (a PROT_NONE window mapped from "
                   "/dev/zero, a file mapping the anonymous THP rule never applied to, then the "
                   "mapping made with MAP_FIXED inside it)")
        elif self.aligns_large:
            return {"emulated": False,
                    "why": "this kernel aligns every anonymous mmap >= 2 MiB, hinted or not, and "
                           "/dev/zero mappings too, so a plain top-down placement of large "
                           "mappings cannot be obtained"}
        else:
            how = ("plain mmap; a 2 MiB multiple is searched one page longer and the page given "
                   "back (a freed hole of exactly that size is then not reused)")
        how += ("; a THP-aligned start: a PROT_NONE window of length + 2 MiB found by that "
                "search, the mapping made with MAP_FIXED inside it, the padding unmapped")
        return {"emulated": True, "how": f"{how}; {files}"}


_libc = None


def _libc_mmap():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.mmap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                               ctypes.c_int, ctypes.c_long]
        _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return _libc


MAP_FAILED = ctypes.c_void_p(-1).value


_zero_fd: int | None = None


def dev_zero_fd() -> int:
    """A descriptor of /dev/zero kept open for the process (-1 if it cannot be opened): the
    engine maps its windows from it where that gets the plain search."""
    global _zero_fd
    if _zero_fd is None:
        try:
            _zero_fd = os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            _zero_fd = -1
    return _zero_fd
