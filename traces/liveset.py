"""The traced process's live mappings, as an interval map from address to the mapping it belongs to.

``info`` walks a trace through it to find peak live bytes and partial munmaps; the replay's op
compiler walks it to resolve every munmap/madvise/mprotect/mremap to (mapping id, offset,
length) pieces. Pieces never overlap; a mapping split by a partial munmap or mprotect becomes
several pieces that keep their mapping id and their offset inside it.

Starts are kept in a ``sortedcontainers.SortedList`` (logarithmic inserts and removals): a plain
list's inserts made a trace of mappings at falling addresses quadratic to walk.
"""

from __future__ import annotations

from dataclasses import dataclass

from sortedcontainers import SortedList


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
        self._starts = SortedList()
        self._pieces: dict[int, Piece] = {}
        self.live_bytes = 0
        self.live_anon_bytes = 0

    def __len__(self) -> int:
        return len(self._starts)

    def pieces(self) -> list[Piece]:
        return [self._pieces[s] for s in self._starts]

    def _add(self, piece: Piece) -> None:
        self._starts.add(piece.start)
        self._pieces[piece.start] = piece
        self._count(piece, +1)

    def _remove(self, start: int) -> Piece:
        self._starts.remove(start)
        piece = self._pieces.pop(start)
        self._count(piece, -1)
        return piece

    def _count(self, piece: Piece, sign: int) -> None:
        self.live_bytes += sign * piece.length
        if piece.anon:
            self.live_anon_bytes += sign * piece.length

    def _split_at(self, address: int) -> None:
        """Make ``address`` a piece boundary if it falls inside a piece."""
        piece = self.piece_at(address)
        if piece is not None and piece.start < address:
            self._remove(piece.start)
            cut = address - piece.start
            self._add(Piece(piece.start, address, piece.map_id, piece.map_offset, piece.prot, piece.anon))
            self._add(Piece(address, piece.end, piece.map_id, piece.map_offset + cut, piece.prot,
                            piece.anon))

    def piece_at(self, address: int) -> Piece | None:
        """The piece holding ``address``, if any."""
        index = self._starts.bisect_right(address) - 1
        if index < 0:
            return None
        piece = self._pieces[self._starts[index]]
        return piece if address < piece.end else None

    def overlapping(self, start: int, end: int) -> list[Piece]:
        """Pieces that intersect [start, end), in address order (not clipped)."""
        if end <= start:
            return []
        found = []
        first = self.piece_at(start)
        if first is not None and first.start < start:
            found.append(first)
        for key in self._starts.irange(start, end, inclusive=(True, False)):
            found.append(self._pieces[key])
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
