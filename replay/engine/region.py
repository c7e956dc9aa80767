"""An address space of the replay's own: what a fresh process would offer the recorded calls.

The replay runs inside a Python process whose interpreter, numba and libraries already hold
mappings, with free gaps between them. A top-down search would drop the replay's first mappings
into those gaps, whose places depend on this interpreter's history, on ASLR and on how this
kernel placed the interpreter's own mappings (a 6.18 host aligns its 2 MiB multiples, 6.1 does
not). The replay's layout, and every alignment count, would then differ from run to run and from
one kernel to another for reasons that have nothing to do with the trace.

So, for the length of a run, every free gap between the interpreter's mappings is filled with a
PROT_NONE placeholder (MAP_FIXED_NOREPLACE: it fails rather than touch anything), and the space
below the lowest of them down to a chosen 2 MiB residue as well. The maps are read again until
no gap is left: reading them allocates, and an arena of the interpreter can take a gap meanwhile.
The kernel's top-down search, whatever kernel runs it and whichever policy is emulated, then
starts the replay's first mapping right below that floor, and every later one where a fresh
process would have had it. The floor's residue modulo 2 MiB is the recorded process's own (the
end of its first kernel-placed mmap), so chance alignments come out as they did when the trace
was recorded, with ASLR on or off.

Placeholders cost no memory (PROT_NONE, MAP_NORESERVE, never touched) and are unmapped after the
run. Mappings the interpreter makes while the replay runs go below the floor, among the replay's
own, as they would in the real kernel running the same interpreter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from traces.schema import MAP_ANONYMOUS, MAP_FIXED_NOREPLACE, MAP_PRIVATE, PMD_SIZE

from replay.engine.policy import MAP_FAILED, MAP_NORESERVE, _libc_mmap
from replay.measure.probes import read_named_maps

# A gap this large ends the interpreter's mmap area: below it lie the program's heap and its
# executable (tens of TiB away on x86-64, with or without ASLR).
MMAP_AREA_GAP = 1 << 40
PLACEHOLDER_FLAGS = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE


def plan_placeholders(vmas: list[tuple[int, int, str]], floor_residue: int,
                      floor: int | None = None) -> list[tuple[int, int]]:
    """The free ranges (start, end) to fill: the gaps of the mmap area (below the stack, down to
    the first gap of MMAP_AREA_GAP or more) and the space below its lowest mapping down to the
    next address below it congruent to ``floor_residue`` modulo 2 MiB: at least a page, so that
    the replay's first mapping never adjoins (and merges with) a mapping of the interpreter.
    ``floor`` is the bottom of the placeholders already placed: when it is the area's lowest
    mapping, nothing more is needed below."""
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
    if lowest != floor:
        ranges.append((lowest - ((lowest - floor_residue) % PMD_SIZE or PMD_SIZE), lowest))
    return ranges


# Rounds of (read the maps, fill what is free). Reading and planning allocate Python objects: a
# new arena of the interpreter's object allocator can land in a gap after the maps were read
# and before its placeholder is placed; the next round fills around it.
CLAIM_ROUNDS = 8


def heap_hint(vmas: list[tuple[int, int, str]]) -> int:
    """Where the replay asks for its brk heap's reservation: the middle of the gap between the
    program's own heap and the mmap area (the first gap of MMAP_AREA_GAP or more below the
    stack, 2 MiB-aligned), as far from the replay's mmaps as a real program's brk heap is, so it
    moves none of them; 0 (anywhere) without such a gap."""
    stack_start = min((start for start, _, name in vmas if name == "[stack]"), default=None)
    area = [(start, end) for start, end, _ in vmas if stack_start is None or end <= stack_start]
    for (_, below_end), (above_start, _) in zip(reversed(area[:-1]), reversed(area[1:])):
        if above_start - below_end >= MMAP_AREA_GAP:
            return (below_end + above_start) // 2 // PMD_SIZE * PMD_SIZE
    return 0


@dataclass
class FreshAddressSpace:
    """The placeholders of one run; ``release()`` unmaps exactly them."""
    floor_residue: int
    placed: list = field(default_factory=list)
    refused: int = 0  # placeholders the kernel would not place where asked (left unfilled)
    raced: int = 0  # gaps taken by the interpreter while planning (filled around next round)
    rounds: int = 0
    unfilled: int = 0  # free ranges still open after CLAIM_ROUNDS rounds
    heap_hint: int = 0  # where the brk heap's reservation is asked for (region.heap_hint)

    def claim(self) -> "FreshAddressSpace":
        """Fill the free gaps until a fresh look at the maps finds none (at most CLAIM_ROUNDS
        looks): a gap left open would take the replay's first mapping that fits, at an
        address that depends on ASLR and on the interpreter's history."""
        plan: list = []
        for self.rounds in range(1, CLAIM_ROUNDS + 1):
            vmas = read_named_maps()
            if self.rounds == 1:
                self.heap_hint = heap_hint(vmas)
            plan = plan_placeholders(vmas, self.floor_residue, self.floor)
            if not plan or not all([self._place(start, end) for start, end in plan]):
                break
        self.unfilled = len(plan_placeholders(read_named_maps(), self.floor_residue,
                                              self.floor)) if plan else 0
        return self

    @property
    def floor(self) -> int | None:
        """The lowest placeholder's start: the replay's first mapping goes right below it."""
        return min((start for start, _ in self.placed), default=None)

    def _place(self, start: int, end: int) -> bool:
        """One placeholder over [start, end); False when this kernel cannot place one at a
        chosen address without replacing (then nothing more is tried)."""
        libc = _libc_mmap()
        address = libc.mmap(start, end - start, 0, PLACEHOLDER_FLAGS, -1, 0)
        if address in (None, MAP_FAILED):
            # EEXIST: something was mapped inside since the maps were read; ENOMEM: the map
            # count limit. The next round sees which.
            self.raced += 1
            return True
        if address != start:
            # A kernel without MAP_FIXED_NOREPLACE (< 4.17) treats it as a hint: give it back.
            libc.munmap(address, end - start)
            self.refused += 1
            return False
        self.placed.append((start, end))
        return True

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
                "raced": self.raced, "rounds": self.rounds, "unfilled": self.unfilled,
                "placeholder_bytes": sum(end - start for start, end in self.placed),
                "floor": self.floor,
                "floor_residue": self.floor_residue, "heap_hint": self.heap_hint}
