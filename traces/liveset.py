"""The traced process's live mappings, as an interval map from address to the mapping it belongs to.

``info`` walks a trace through it to find peak live bytes and partial munmaps; the replay's op
compiler walks it to resolve every munmap/madvise/mprotect/mremap to (mapping id, offset,
length) pieces. Pieces never overlap; a mapping split by a partial munmap or mprotect becomes
several pieces that keep their mapping id and their offset inside it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass


@dataclass
class Piece:
    start: int
    end: int
    map_id: int
    map_offset: int  # offset of ``start`` inside mapping ``map_id``
    prot: int
    anon: bool

    @property
    def length(self) -> int:
        return self.end - self.start


class LiveSet:
    """Non-overlapping live pieces keyed by start address."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._pieces: dict[int, Piece] = {}
        self.live_bytes = 0
        self.live_anon_bytes = 0

    def __len__(self) -> int:
        return len(self._starts)

    def pieces(self) -> list[Piece]:
        return [self._pieces[s] for s in self._starts]

    def _add(self, piece: Piece) -> None:
        index = bisect_left(self._starts, piece.start)
        self._starts.insert(index, piece.start)
        self._pieces[piece.start] = piece
        self._count(piece, +1)

    def _remove(self, start: int) -> Piece:
        index = bisect_left(self._starts, start)
        del self._starts[index]
        piece = self._pieces.pop(start)
        self._count(piece, -1)
        return piece

    def _count(self, piece: Piece, sign: int) -> None:
        self.live_bytes += sign * piece.length
        if piece.anon:
            self.live_anon_bytes += sign * piece.length

    def _split_at(self, address: int) -> None:
        """Make ``address`` a piece boundary if it falls inside a piece."""
        index = bisect_right(self._starts, address) - 1
        if index < 0:
            return
        piece = self._pieces[self._starts[index]]
        if piece.start < address < piece.end:
            self._remove(piece.start)
            cut = address - piece.start
            self._add(Piece(piece.start, address, piece.map_id, piece.map_offset, piece.prot, piece.anon))
            self._add(Piece(address, piece.end, piece.map_id, piece.map_offset + cut, piece.prot,
                            piece.anon))

    def overlapping(self, start: int, end: int) -> list[Piece]:
        """Pieces that intersect [start, end), in address order (not clipped)."""
        if end <= start:
            return []
        index = max(bisect_right(self._starts, start) - 1, 0)
        found = []
        while index < len(self._starts):
            piece = self._pieces[self._starts[index]]
            if piece.start >= end:
                break
            if piece.end > start:
                found.append(piece)
            index += 1
        return found

    def covered_bytes(self, start: int, end: int) -> int:
        return sum(min(p.end, end) - max(p.start, start) for p in self.overlapping(start, end))

    def isolate(self, start: int, end: int) -> list[Piece]:
        """Split pieces at ``start`` and ``end``; return the pieces now exactly inside the range."""
        self._split_at(start)
        self._split_at(end)
        return self.overlapping(start, end)

    def unmap(self, start: int, end: int) -> list[Piece]:
        """Remove [start, end); return the removed pieces (clipped to the range)."""
        removed = self.isolate(start, end)
        for piece in removed:
            self._remove(piece.start)
        return removed

    def map(self, start: int, end: int, map_id: int, prot: int, anon: bool,
            map_offset: int = 0) -> list[Piece]:
        """Add a mapping; whatever it overlaps is unmapped first (as MAP_FIXED does)."""
        displaced = self.unmap(start, end)
        if end > start:
            self._add(Piece(start, end, map_id, map_offset, prot, anon))
        return displaced

    def protect(self, start: int, end: int, prot: int) -> list[Piece]:
        """Set ``prot`` on the live parts of [start, end); return the affected pieces."""
        pieces = self.isolate(start, end)
        for piece in pieces:
            piece.prot = prot
        return pieces
