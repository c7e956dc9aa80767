"""A pure-Python model of an op program: which (mapping id, offset, length) pieces are live.

The engine and this model must agree after every chunk; tests check both against
/proc/self/maps. The replay also uses the model to find what is still mapped when a run stops
early (Ctrl-C, budget), so that exactly the replay's own pieces are released.
"""

from __future__ import annotations

import numpy as np

from traces.liveset import LiveSet
from traces.schema import MREMAP_DONTUNMAP

from replay.engine.program import (OP_HEAP_FREE, OP_HEAP_GROW, OP_MMAP, OP_MMAP_FIXED_IN,
                                   OP_MREMAP, OP_MUNMAP)

ID_SHIFT = 48  # each mapping id owns a 2^48-byte slot of the model's address space


class ProgramModel:
    def __init__(self, id_length: np.ndarray):
        self.id_length = id_length
        self.live = LiveSet()

    @staticmethod
    def _key(map_id: int, offset: int) -> int:
        return (int(map_id) << ID_SHIFT) + int(offset)

    def apply(self, code, map_id, ref_id, offset, length, arg, flags) -> None:
        code, map_id, ref_id = int(code), int(map_id), int(ref_id)
        offset, length, arg = int(offset), int(length), int(arg)
        if code == OP_MMAP:
            self.live.map(self._key(map_id, 0), self._key(map_id, length), map_id, 0, True)
        elif code == OP_MMAP_FIXED_IN:
            self.live.unmap(self._key(ref_id, offset), self._key(ref_id, offset + length))
            self.live.map(self._key(map_id, 0), self._key(map_id, length), map_id, 0, True)
        elif code == OP_MUNMAP or code == OP_HEAP_FREE:
            self.live.unmap(self._key(map_id, offset), self._key(map_id, offset + length))
        elif code == OP_HEAP_GROW:
            self.live.map(self._key(map_id, offset), self._key(map_id, offset + length), map_id,
                          0, True, offset)
        elif code == OP_MREMAP:
            if not int(flags) & MREMAP_DONTUNMAP:
                self.live.unmap(self._key(map_id, offset), self._key(map_id, offset + length))
            self.live.map(self._key(ref_id, 0), self._key(ref_id, arg), ref_id, 0, True)

    def run(self, program, stop: int, executed: np.ndarray | None = None) -> "ProgramModel":
        """Apply ops [0, stop), or, with ``executed``, the ops it marks (in program order)."""
        p = program
        indices = range(stop) if executed is None else np.flatnonzero(executed).tolist()
        for i in indices:
            self.apply(p.code[i], p.map_id[i], p.ref_id[i], p.offset[i], p.length[i], p.arg[i],
                       p.flags[i])
        return self

    @property
    def live_bytes(self) -> int:
        return self.live.live_bytes

    def pieces_array(self) -> np.ndarray:
        """(n, 3) int64 rows: mapping id, offset, length."""
        mask = (1 << ID_SHIFT) - 1
        rows = [(p.start >> ID_SHIFT, p.start & mask, p.length) for p in self.live.pieces()]
        return np.array(rows, np.int64).reshape(-1, 3)


def live_pieces(program, stop: int, executed: np.ndarray | None = None) -> np.ndarray:
    """Pieces live after ops [0, stop) of ``program`` (or after the ``executed`` ones), assuming
    every call succeeded. Each mapping's calls keep their order in any executed subset, so the
    program order gives the right live set even when threads ran them."""
    return ProgramModel(program.id_length).run(program, stop, executed).pieces_array()


def coalesce_pieces(pieces: np.ndarray) -> np.ndarray:
    """(id, offset, length) pieces with each mapping's touching neighbours joined, sorted."""
    pieces = np.asarray(pieces, np.int64).reshape(-1, 3)
    if len(pieces) < 2:
        return pieces
    pieces = pieces[np.lexsort((pieces[:, 1], pieces[:, 0]))]
    ends = pieces[:, 1] + pieces[:, 2]
    new = np.ones(len(pieces), bool)
    new[1:] = (pieces[1:, 0] != pieces[:-1, 0]) | (pieces[1:, 1] != ends[:-1])
    first = np.flatnonzero(new)
    last = np.append(first[1:], len(pieces)) - 1
    return np.stack([pieces[first, 0], pieces[first, 1], ends[last] - pieces[first, 1]], axis=1)
