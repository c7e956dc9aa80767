"""Placement policies: where anonymous mappings start, as different kernels decide it.

The rules (see ../shared/context/kernel-thp-alignment.md):
- ``no-align`` (Linux <= 6.6): a private anonymous mapping goes where the plain top-down search
  puts it; it starts 2 MiB-aligned only by chance.
- ``align-ge-pmd`` (6.7-6.11, efa7df3e3bb5 plus the 6.8 top-down fix): a private anonymous mapping
  of 2 MiB or more with no hint gets a 2 MiB-aligned start. The kernel searches for length + 2 MiB
  and leaves the unused padding as a hole; when the window found is already aligned the mapping
  goes 2 MiB higher, flush against its upper neighbour.
- ``align-pmd-multiple`` (6.12+, d4148aeab412): the same, but only for lengths that are exact
  multiples of 2 MiB.
- ``kernel``: whatever the running kernel does with the recorded call.

They are emulated in user space without MAP_FIXED over anything the replay does not own: a
"plain" placement maps the length (plus one page when this kernel would otherwise align it, the
extra page being unmapped at once), an "aligned" placement maps length + 2 MiB the plain way and
unmaps the padding on each side, which reproduces the kernel's arithmetic exactly.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from traces.schema import MAP, MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_SHARED, PMD_SIZE

from .program import PLACE_ALIGNED, PLACE_KERNEL, PLACE_PLAIN

MAP_HUGETLB = MAP["MAP_HUGETLB"]
POLICIES = ("kernel", "no-align", "align-ge-pmd", "align-pmd-multiple")
POLICY_HELP = {
    "kernel": "plain mmap(hint, ...) as recorded: whatever this kernel does",
    "no-align": "as Linux <= 6.6: no anonymous mapping is aligned on purpose",
    "align-ge-pmd": "as 6.7-6.11 (efa7df3e3bb5): anonymous >= 2 MiB start 2 MiB-aligned",
    "align-pmd-multiple": "as 6.12+ (d4148aeab412): only exact 2 MiB multiples aligned",
}


def placement(policy: str, length: int, flags: int, hint: int, replayed_anon: bool) -> int:
    """How the engine places one mmap under ``policy`` (PLACE_KERNEL, PLACE_PLAIN, PLACE_ALIGNED).

    Hinted, shared, MAP_FIXED_NOREPLACE and hugetlb calls always go to the kernel as recorded:
    the anonymous THP alignment rule never applied to them in the kernels being emulated.
    """
    if policy == "kernel" or hint or flags & (MAP_SHARED | MAP_FIXED_NOREPLACE | MAP_HUGETLB):
        # hugetlb mappings cannot be trimmed by 4 KiB: the emulation's padding does not apply.
        return PLACE_KERNEL
    if not replayed_anon:
        return PLACE_PLAIN
    if policy == "align-ge-pmd" and length >= PMD_SIZE:
        return PLACE_ALIGNED
    if policy == "align-pmd-multiple" and length % PMD_SIZE == 0:
        return PLACE_ALIGNED
    return PLACE_PLAIN


class KernelAlignment:
    """What this kernel does with hint-less private anonymous mmaps, measured with real calls."""

    def __init__(self, aligns_pmd_multiples: bool, aligns_large: bool, samples: int):
        self.aligns_pmd_multiples = aligns_pmd_multiples
        self.aligns_large = aligns_large
        self.samples = samples

    def as_dict(self) -> dict:
        return {"aligns_pmd_multiples": self.aligns_pmd_multiples,
                "aligns_large_non_multiples": self.aligns_large, "samples": self.samples}

    def emulation(self, policy: str) -> dict:
        """Whether ``policy`` can be emulated exactly here, and why not when it cannot."""
        if policy == "kernel":
            return {"emulated": True, "how": "this kernel's own placement"}
        if self.aligns_large:
            return {"emulated": False,
                    "why": "this kernel aligns every anonymous mmap >= 2 MiB (6.7-6.11 rule), so a "
                           "plain top-down placement of large mappings cannot be obtained"}
        return {"emulated": True, "how": "user-space placement: plain mmap, or length + 2 MiB "
                                         "then the padding unmapped (no MAP_FIXED)"}


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


def _all_aligned(length: int, samples: int) -> bool:
    libc = _libc_mmap()
    addresses = []
    try:
        for _ in range(samples):
            address = libc.mmap(None, length, 0, 0x02 | MAP_ANONYMOUS, -1, 0)  # PROT_NONE, private
            if address in (None, ctypes.c_void_p(-1).value):
                return False
            addresses.append(address)
        return all(a % PMD_SIZE == 0 for a in addresses)
    finally:
        for address in addresses:
            libc.munmap(address, length)


_probed: KernelAlignment | None = None


def probe_kernel_alignment(samples: int = 8) -> KernelAlignment:
    """Map a few PROT_NONE regions and look at their starts (cached for the process)."""
    global _probed
    if _probed is None:
        _probed = KernelAlignment(aligns_pmd_multiples=_all_aligned(4 * PMD_SIZE, samples),
                                  aligns_large=_all_aligned(4 * PMD_SIZE + 4096, samples),
                                  samples=samples)
    return _probed
