"""An address space of the replay's own: what a fresh process would offer the recorded calls.

The replay runs inside a Python process whose interpreter, numba and libraries already hold
mappings, with free gaps between them. A top-down search would drop the replay's first mappings
into those gaps, whose places depend on this interpreter's history, on ASLR and on how this
kernel placed the interpreter's own mappings (a 6.18 host aligns its 2 MiB multiples, 6.1 does
not). The replay's layout, and every alignment count, would then differ from run to run and from
one kernel to another for reasons that have nothing to do with the trace.

So, for the length of a run, every free gap between the interpreter's mappings is filled with a
PROT_NONE placeholder (MAP_FIXED_NOREPLACE: it fails rather than touch anything), and the space
below the lowest of them down to a chosen 2 MiB residue as well. The kernel's top-down search,
whatever kernel runs it and whichever policy is emulated, then starts the replay's first mapping
right below that floor, and every later one where a fresh process would have had it. The floor's
residue modulo 2 MiB is the recorded process's own (the end of its first kernel-placed mmap), so
chance alignments come out as they did when the trace was recorded, with ASLR on or off.

Placeholders cost no memory (PROT_NONE, MAP_NORESERVE, never touched) and are unmapped after the
run. Mappings the interpreter makes while the replay runs go below the floor, among the replay's
own, as they would in the real kernel running the same interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from traces.schema import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PMD_SIZE

from .policy import MAP_FAILED, MAP_NORESERVE, _libc_mmap

# A gap this large ends the interpreter's mmap area: below it lie the program's heap and its
# executable (tens of TiB away on x86-64, with or without ASLR).
MMAP_AREA_GAP = 1 << 40
PLACEHOLDER_FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE


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


def plan_placeholders(vmas: list[tuple[int, int, str]], floor_residue: int) -> list[tuple[int, int]]:
    """The free ranges (start, end) to fill: the gaps of the mmap area (below the stack, down to
    the first gap of MMAP_AREA_GAP or more) and the space below its lowest mapping down to the
    first address congruent to ``floor_residue`` modulo 2 MiB."""
    stack_start = min((start for start, _, name in vmas if name == "[stack]"), default=None)
    area = [(start, end) for start, end, _ in vmas
            if stack_start is None or end <= stack_start]
    if not area:
        return []
    ranges = []
    lowest = area[-1][0]
    for (below_start, below_end), (above_start, _) in zip(reversed(area[:-1]), reversed(area[1:])):
        gap = above_start - below_end
        if gap >= MMAP_AREA_GAP:
            break
        if gap > 0:
            ranges.append((below_end, above_start))
        lowest = below_start
    floor = lowest - ((lowest - floor_residue) % PMD_SIZE)
    if floor < lowest:
        ranges.append((floor, lowest))
    return ranges


@dataclass
class FreshAddressSpace:
    """The placeholders of one run; ``release()`` unmaps exactly them."""
    floor_residue: int
    placed: list = field(default_factory=list)
    refused: int = 0

    def claim(self) -> "FreshAddressSpace":
        libc = _libc_mmap()
        for start, end in plan_placeholders(read_named_maps(), self.floor_residue):
            address = libc.mmap(start, end - start, 0, PLACEHOLDER_FLAGS, -1, 0)
            if address in (None, MAP_FAILED):
                self.refused += 1  # taken meanwhile (or the kernel lacks NOREPLACE): leave it
            elif address != start:
                # A kernel without MAP_FIXED_NOREPLACE (< 4.17) treats it as a hint: give it back.
                libc.munmap(address, end - start)
                self.refused += 1
            else:
                self.placed.append((start, end))
        return self

    released: bool = False

    def release(self) -> int:
        """Unmap the placeholders (once); returns how many munmap calls failed."""
        if self.released:
            return 0
        self.released = True
        libc = _libc_mmap()
        return sum(libc.munmap(start, end - start) != 0 for start, end in self.placed)

    def as_dict(self) -> dict:
        return {"placeholders": len(self.placed), "refused": self.refused,
                "placeholder_bytes": sum(end - start for start, end in self.placed),
                "floor": min((start for start, _ in self.placed), default=None),
                "floor_residue": self.floor_residue}
