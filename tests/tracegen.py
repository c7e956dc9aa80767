"""Consistent random traces for engine tests: a tiny traced-process simulator.

It keeps its own map of the traced process's live mappings and only emits calls a real process
could have made (munmaps of live or never-mapped ranges, partial ones, mremaps of whole mappings,
MAP_FIXED inside its own mappings), so the replay of the trace must never fail.
"""

from __future__ import annotations

import random

from traces import build_table, new_metadata

PAGE = 4096
MIB = 1 << 20
TOP = 0x7F00_0000_0000


class TracedProcess:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.live: dict[int, int] = {}  # start -> length (whole mappings; pieces split on munmap)
        self.prot: dict[int, int] = {}
        self.next_address = TOP
        self.rows: list[dict] = []
        self.ts = 0

    def _row(self, **fields):
        self.ts += 1000
        row = {"ts_ns": self.ts, "tid": 1, "errno": 0}
        row.update(fields)
        self.rows.append(row)

    def _place(self, length: int) -> int:
        self.next_address -= length + PAGE * self.rng.choice((0, 0, 1, 16))
        return self.next_address

    def mmap(self, length: int | None = None, prot: int = 3):
        if length is None:
            length = self.rng.choice((1, 3, 64, 256, 511, 512, 513, 1024, 1158)) * PAGE
        start = self._place(length)
        self.live[start] = length
        self.prot[start] = prot
        self._row(op="mmap", addr=start, length=length, hint=0, prot=prot, flags=0x22, fd=-1,
                  offset=0)

    def pick(self):
        start = self.rng.choice(sorted(self.live))
        return start, self.live[start]

    def munmap(self, partial: bool):
        start, length = self.pick()
        pages = length // PAGE
        if partial and pages >= 3:
            cut = self.rng.randrange(1, pages - 1) * PAGE
            kind = self.rng.choice(("head", "tail", "middle"))
            if kind == "head":
                self._row(op="munmap", addr=start, length=cut)
                self.live[start + cut] = length - cut
                self.prot[start + cut] = self.prot[start]
                del self.live[start], self.prot[start]
            elif kind == "tail":
                self._row(op="munmap", addr=start + cut, length=length - cut)
                self.live[start] = cut
            else:
                self._row(op="munmap", addr=start + PAGE, length=cut - PAGE if cut > PAGE else PAGE)
                hole_end = start + PAGE + (cut - PAGE if cut > PAGE else PAGE)
                self.live[start] = PAGE
                if hole_end < start + length:
                    self.live[hole_end] = start + length - hole_end
                    self.prot[hole_end] = self.prot[start]
        else:
            self._row(op="munmap", addr=start, length=length)
            del self.live[start], self.prot[start]

    def mremap(self):
        start, length = self.pick()
        new_length = max(PAGE, length + self.rng.choice((-2, -1, 1, 2, 256)) * PAGE)
        target = self._place(new_length) if self.rng.random() < 0.7 else start
        if target == start and new_length > length:
            target = self._place(new_length)  # growing in place would need free space above
        self._row(op="mremap", addr=start, length=length, new_addr=target, new_length=new_length,
                  flags=1, hint=0)
        prot = self.prot.pop(start)
        del self.live[start]
        self.live[target] = new_length
        self.prot[target] = prot

    def madvise(self):
        start, length = self.pick()
        advice = self.rng.choice((4, 14, 15, 8, 3))
        self._row(op="madvise", addr=start, length=length, advice=advice)

    def mprotect(self):
        start, length = self.pick()
        prot = self.rng.choice((0, 1, 3))
        self._row(op="mprotect", addr=start, length=length, prot=prot)
        self.prot[start] = prot

    def fixed_inside(self):
        start, length = self.pick()
        if length < 2 * PAGE:
            return
        self._row(op="mmap", addr=start + PAGE, length=PAGE, hint=start + PAGE, prot=3,
                  flags=0x32, fd=-1, offset=0)
        # The traced process now has three pieces; model them as separate mappings.
        self.live[start] = PAGE
        self.live[start + PAGE] = PAGE
        self.prot[start + PAGE] = 3
        if length > 2 * PAGE:
            self.live[start + 2 * PAGE] = length - 2 * PAGE
            self.prot[start + 2 * PAGE] = self.prot[start]

    def foreign_munmap(self):
        self._row(op="munmap", addr=0x5555_0000_0000, length=PAGE)

    def step(self):
        if not self.live or self.rng.random() < 0.35:
            self.mmap()
            return
        action = self.rng.choice((self.munmap, self.munmap, self.mremap, self.madvise,
                                  self.mprotect, self.fixed_inside, self.foreign_munmap))
        if action == self.munmap:
            action(partial=self.rng.random() < 0.4)
        else:
            action()

    def table(self):
        columns = {name: [r.get(name) for r in self.rows] for name in
                   ("ts_ns", "tid", "op", "addr", "length", "new_addr", "new_length", "hint",
                    "prot", "flags", "fd", "offset", "advice", "errno")}
        return build_table(columns, new_metadata("test"))


def random_trace(seed: int, steps: int):
    process = TracedProcess(seed)
    for _ in range(steps):
        process.step()
    return process.table()


def buffers_trace(count: int, length: int, alive_together: bool = True):
    """count mmaps of ``length`` then their munmaps (or each mmap followed by its munmap)."""
    process = TracedProcess(0)
    starts = []
    for _ in range(count):
        process.mmap(length)
        starts.append(process.next_address)
        if not alive_together:
            process._row(op="munmap", addr=starts[-1], length=length)
    if alive_together:
        for start in starts:
            process._row(op="munmap", addr=start, length=length)
    return process.table()
