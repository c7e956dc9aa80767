"""LiveSet against the simplest possible model: a dict from page number to what lives there."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from traces.liveset import LiveSet

PAGE = 4096
SPACE_PAGES = 48  # a small address space makes overlaps, splits and exact fits common
BASE = 0x7F00_0000_0000  # realistic addresses: the model must not depend on small numbers


def page_range(start_page: int, end_page: int) -> tuple[int, int]:
    return BASE + start_page * PAGE, BASE + end_page * PAGE


class Model:
    """page -> (map_id, offset of the page inside its mapping, prot, anon)."""

    def __init__(self) -> None:
        self.pages: dict[int, tuple[int, int, int, bool]] = {}

    def in_range(self, start_page: int, end_page: int) -> dict:
        return {p: self.pages[p] for p in range(start_page, end_page) if p in self.pages}

    def unmap(self, start_page: int, end_page: int) -> dict:
        removed = self.in_range(start_page, end_page)
        for page in removed:
            del self.pages[page]
        return removed

    def map(self, start_page, end_page, map_id, prot, anon, map_offset) -> dict:
        displaced = self.unmap(start_page, end_page)
        for page in range(start_page, end_page):
            self.pages[page] = (map_id, map_offset + (page - start_page) * PAGE, prot, anon)
        return displaced

    def protect(self, start_page, end_page, prot) -> dict:
        touched = self.in_range(start_page, end_page)
        for page, (map_id, offset, _, anon) in touched.items():
            self.pages[page] = (map_id, offset, prot, anon)
        return self.in_range(start_page, end_page)


def expand(pieces) -> dict:
    """Pieces as the model's page dict (each page once, or the test fails)."""
    pages = {}
    for piece in pieces:
        assert piece.start % PAGE == 0 and piece.end % PAGE == 0 and piece.end > piece.start
        for address in range(piece.start, piece.end, PAGE):
            page = (address - BASE) // PAGE
            assert page not in pages, "two pieces hold the same page"
            pages[page] = (piece.map_id, piece.map_offset + address - piece.start, piece.prot,
                           piece.anon)
    return pages


def check_same(live: LiveSet, model: Model) -> None:
    pieces = live.pieces()
    assert [p.start for p in pieces] == sorted(p.start for p in pieces)
    assert all(a.end <= b.start for a, b in zip(pieces, pieces[1:])), "pieces overlap"
    assert expand(pieces) == model.pages
    assert live.live_bytes == PAGE * len(model.pages)
    assert live.live_anon_bytes == PAGE * sum(anon for *_, anon in model.pages.values())
    assert len(live) == len(pieces)


ranges = st.tuples(st.integers(0, SPACE_PAGES), st.integers(0, SPACE_PAGES))
operations = st.one_of(
    st.tuples(st.just("map"), ranges, st.integers(0, 7), st.booleans(), st.integers(0, 64)),
    st.tuples(st.just("unmap"), ranges),
    st.tuples(st.just("protect"), ranges, st.integers(0, 7)),
    st.tuples(st.just("isolate"), ranges),
    st.tuples(st.just("query"), ranges),
)


@settings(max_examples=300)
@given(st.lists(operations, max_size=40))
def test_liveset_matches_a_page_model(ops):
    live, model = LiveSet(), Model()
    for map_id, (name, (start_page, end_page), *args) in enumerate(ops):
        start, end = page_range(start_page, end_page)
        if name == "map":
            prot, anon, offset_pages = args
            returned = live.map(start, end, map_id, prot, anon, map_offset=offset_pages * PAGE)
            expected = model.map(start_page, end_page, map_id, prot, anon, offset_pages * PAGE)
            assert expand(returned) == expected  # what MAP_FIXED displaced, clipped to the range
        elif name == "unmap":
            assert expand(live.unmap(start, end)) == model.unmap(start_page, end_page)
        elif name == "protect":
            (prot,) = args
            assert expand(live.protect(start, end, prot)) == model.protect(start_page, end_page, prot)
        elif name == "isolate":
            # Splitting changes pieces, never what is live.
            assert expand(live.isolate(start, end)) == model.in_range(start_page, end_page)
        else:
            found = live.overlapping(start, end)
            assert [p.start for p in found] == sorted(p.start for p in found)
            assert all(p.start < end and p.end > start for p in found)
            clipped = {page: value for page, value in expand(found).items()
                       if start_page <= page < end_page}
            assert clipped == model.in_range(start_page, end_page)
            assert live.covered_bytes(start, end) == PAGE * len(model.in_range(start_page, end_page))
        check_same(live, model)


def test_a_partial_unmap_keeps_offsets_inside_the_mapping():
    live = LiveSet()
    live.map(BASE, BASE + 10 * PAGE, map_id=7, prot=3, anon=True)
    removed = live.unmap(BASE + 2 * PAGE, BASE + 5 * PAGE)
    assert [(p.start - BASE, p.end - BASE, p.map_offset) for p in removed] == [(2 * PAGE, 5 * PAGE,
                                                                              2 * PAGE)]
    assert [(p.start - BASE, p.map_id, p.map_offset) for p in live.pieces()] == [
        (0, 7, 0), (5 * PAGE, 7, 5 * PAGE)]
    assert live.live_bytes == live.live_anon_bytes == 7 * PAGE


def test_empty_and_reversed_ranges_change_nothing():
    live = LiveSet()
    live.map(BASE, BASE + 4 * PAGE, map_id=1, prot=3, anon=False)
    assert live.map(BASE + PAGE, BASE + PAGE, map_id=2, prot=1, anon=True) == []
    assert live.unmap(BASE + 3 * PAGE, BASE + PAGE) == []
    assert live.overlapping(BASE + 3 * PAGE, BASE + PAGE) == []
    assert live.live_bytes == 4 * PAGE and live.live_anon_bytes == 0
    assert {p.map_id for p in live.pieces()} == {1}
