"""The traced process's live mappings, as an interval map from address to the mapping it belongs to.

``info`` (``summary.walk_live_bytes``) and ``fit`` (``fit.anon_profile``) walk a trace's
successful calls through it (``successful_calls`` reads them; ``LiveSet.map``/``unmap``/
``protect``/``mremap`` apply each as the kernel did) to find peak live bytes, partial munmaps
and lifetimes; the replay's op compiler walks it to resolve every munmap/madvise/mprotect/mremap
to (mapping id, offset, length) pieces, placing mappings where the replay puts them. Pieces never overlap; a mapping split by a partial munmap or mprotect becomes
several pieces that keep their mapping id and their offset inside it.

Starts are kept in a ``sortedcontainers.SortedList`` (logarithmic inserts and removals): a plain
list's inserts made a trace of mappings at falling addresses quadratic to walk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sortedcontainers import SortedList

from .schema import MREMAP_DONTUNMAP, OP_CODE, PAGE_SIZE


def page_round(length: np.ndarray) -> np.ndarray:
    """Lengths rounded up to whole pages, as the kernel does before placing a mapping."""
    length = np.asarray(length, dtype=np.uint64)
    rounded = (length + np.uint64(PAGE_SIZE - 1)) & ~np.uint64(PAGE_SIZE - 1)
    # Lengths within a page of 2^64 wrap to 0 when rounded; the kernel rejects those, keep them huge.
    return np.where(rounded < length, np.uint64(np.iinfo(np.uint64).max), rounded)


CALL_FIELDS = ("op", "addr", "length", "new_addr", "new_length", "flags", "fd", "prot", "advice",
               "tid")
_NULL_AS = {"fd": -1, "advice": -1}  # other fields read 0 where null


def call_fields(table, rows: np.ndarray | None = None,
                names: tuple[str, ...] = CALL_FIELDS) -> dict:
    """Fields of a validated trace's calls (the rows ``rows``, default all) as Python lists, quick
    to take one call at a time: op (code), addr, length and new_length (rounded up to pages),
    new_addr, flags, fd (-1 where null), prot, advice (-1 where null) and tid, or ``names``
    (any column: errno, hint...)."""
    from .format import column_np, op_names  # here, not above: the engine's guest has no pyarrow

    calls = {}
    for name in names:
        values = op_names(table) if name == "op" else column_np(table, name, _NULL_AS.get(name, 0))
        if rows is not None:
            values = values[rows]
        calls[name] = (page_round(values) if name in ("length", "new_length") else values).tolist()
    return calls


def successful_calls(table, ops: tuple[str, ...] | None = None) -> tuple[np.ndarray, dict]:
    """The rows of a validated trace's successful calls (of ``ops``, default every op) and their
    ``call_fields``."""
    from .format import column_np, op_names

    ok = column_np(table, "errno") == 0
    if ops is not None:
        ok &= np.isin(op_names(table), [OP_CODE[name] for name in ops])
    rows = np.flatnonzero(ok)
    return rows, call_fields(table, rows)


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

    def mremap(self, start: int, end: int, new_start: int, new_end: int, remap_flags: int,
               map_id: int | None = None, keep_pieces: bool = False
               ) -> tuple[list[Piece], list[Piece], list[Piece]]:
        """A successful mremap of [start, end) to [new_start, new_end): the old range's pieces
        leave (unless MREMAP_DONTUNMAP) and the new range becomes one piece with the first old
        piece's prot and kind, under ``map_id`` (default: the first old piece's mapping id).
        With ``keep_pieces`` (the replay's compiler, on an old range that is one mapping) the
        moved part keeps the old pieces, each with its prot at its offset, as the kernel's VMAs
        do, and growth takes the last piece's prot.

        With nothing live in the old range (a mapping from before the recording), the new range
        becomes an anonymous piece with prot 0 when ``map_id`` names it, and nothing happens when
        it does not (there is no mapping to follow). Returns (the old range's pieces before the
        call, the pieces removed, the pieces the new range displaced)."""
        old = self.isolate(start, end) if keep_pieces else self.overlapping(start, end)
        if not old and map_id is None:
            return old, [], []
        first = old[0] if old else Piece(start, end, map_id, 0, 0, True)
        map_id = first.map_id if map_id is None else map_id
        removed = [] if remap_flags & MREMAP_DONTUNMAP else self.unmap(start, end)
        if not (keep_pieces and old):
            return old, removed, self.map(new_start, new_end, map_id, first.prot, first.anon)
        displaced = self.unmap(new_start, new_end)
        size, grown = end - start, new_end - new_start
        for piece in old:
            offset = piece.start - start
            if offset < grown:
                self.map(new_start + offset, new_start + min(offset + piece.length, grown), map_id,
                         piece.prot, first.anon, map_offset=offset)
        if grown > size:
            self.map(new_start + size, new_end, map_id, old[-1].prot, first.anon, map_offset=size)
        return old, removed, displaced

    def protect(self, start: int, end: int, prot: int) -> list[Piece]:
        """Set ``prot`` on the live parts of [start, end); return the affected pieces."""
        pieces = self.isolate(start, end)
        for piece in pieces:
            piece.prot = prot
        return pieces
