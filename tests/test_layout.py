"""`mmreplay layout`: real replays read back from /proc/self/smaps and PAGEMAP_SCAN, the ASCII
picture checked against the captured addresses, and the pure drawing code on any layout."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.running.config import ReplayConfig
from replay.running.layout import capture_layout, parse_at
from replay.reporters.layout_geometry import (Coverage, Layout, clip_ranges, estimate_huge_ranges,
                                    layout_from, plan_segments, subtract_ranges)
from replay.reporters.layout_text import COLUMNS_PER_PMD, render_ascii
from replay.measure.probes import Vmas, merge_ranges, read_maps
from strategies import mmap, munmap, table_from_rows
from tracegen import buffers_trace
from traces import MmreplayError, new_metadata, write_trace
from traces.host import thp_settings
from traces.schema import PMD_SIZE

KIB, MIB, GIB = 1 << 10, 1 << 20, 1 << 30
PAGE = 4096
BUFFER = 4632 * KIB
COUNT = 24


# ---------------------------------------------------------------------------------------------
# Reading the ASCII picture back.


class Drawing:
    """The rows of an ASCII layout: (row start in MiB from the base, cell characters)."""

    def __init__(self, text: str):
        self.text = text
        lines = text.splitlines()
        self.ruler_at = next(i for i, line in enumerate(lines)
                             if "|" in line and set(line.strip()) <= {"|", " "})
        self.ruler = lines[self.ruler_at]
        self.ticks = [i for i, c in enumerate(self.ruler) if c == "|"]
        self.first_cell = self.ticks[0]
        self.columns_per_pmd = self.ticks[1] - self.ticks[0]
        self.column_bytes = PMD_SIZE // self.columns_per_pmd
        self.base = int(re.search(r"from\s+(0x[0-9a-f]+)", text).group(1), 16)
        self.rows: list[tuple[int, str]] = []
        self.body: list[str] = []  # rows, folds and separators
        for line in lines[self.ruler_at + 1:]:
            if line == self.ruler or not line:
                break
            self.body.append(line)
            label = line[: self.first_cell].strip()
            if label.isdigit():
                self.rows.append((int(label), line[self.first_cell:]))

    def starts(self):
        """(address range of the cell, column) of every '[' drawn."""
        for offset_mib, cells in self.rows:
            row_start = self.base + offset_mib * MIB
            for column, char in enumerate(cells):
                if char == "[":
                    low = row_start + column * self.column_bytes
                    yield (low, low + self.column_bytes), column


def check_picture(text: str, layout: Layout, width: int) -> Drawing:
    """What every picture must hold: ASCII, narrow enough, a tick on every 2 MiB boundary, and
    only true things drawn."""
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    assert text.isascii()
    drawing = Drawing(text)
    cpp = drawing.columns_per_pmd
    assert cpp in COLUMNS_PER_PMD
    # Rows start on 2 MiB boundaries and hold a power of two of whole 2 MiB blocks (as the PNG's
    # rows do), so the ruler's ticks fall on every 2 MiB boundary of every row, the row's
    # closing boundary included where the width leaves a column for it.
    assert drawing.base % PMD_SIZE == 0 and drawing.base <= layout.replay[0, 0]
    assert drawing.ticks == list(range(drawing.first_cell, drawing.ticks[-1] + 1, cpp))
    row_mib = int(re.search(r"1 row = (\d+) MiB", " ".join(text.split())).group(1))
    pmds = row_mib // 2
    assert pmds & (pmds - 1) == 0 and len(drawing.ticks) in (pmds, pmds + 1)
    for offset_mib, cells in drawing.rows:
        assert offset_mib % 2 == 0
        assert len(cells) <= pmds * cpp
    # Every '[' drawn has a replay mapping starting inside its cell.
    starts = layout.replay[:, 0]
    for (low, high), _ in drawing.starts():
        assert ((starts >= low) & (starts < high)).any(), hex(low)
    return drawing


# ---------------------------------------------------------------------------------------------
# Real replays.


@pytest.fixture(scope="module")
def buffers_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("layout") / "buffers.arrow"
    write_trace(buffers_trace(COUNT, BUFFER), path, new_metadata("test"))
    return path


@pytest.fixture(scope="module")
def layouts(buffers_path):
    """Layouts at peak under both placements the 6.7 -> 6.12 change is about (cached)."""
    cache = {}

    def get(policy, thp="as-recorded"):
        key = (policy, thp)
        if key not in cache:
            cache[key] = capture_layout(str(buffers_path), ReplayConfig(policy=policy, thp=thp))
        return cache[key]
    return get


def test_aligned_buffers_start_on_a_tick(layouts):
    layout = layouts("align-ge-pmd")
    assert len(layout.mapping_start) == COUNT
    assert layout.large_mappings() == (COUNT, COUNT)  # 6.7-6.11: every one 2 MiB-aligned
    assert len(layout.holes()) >= COUNT // 2  # padding holes beside the aligned mappings
    text = render_ascii(layout)
    drawing = check_picture(text, layout, 72)
    starts = list(drawing.starts())
    assert len(starts) >= COUNT // 2
    for _, column in starts:
        assert column % drawing.columns_per_pmd == 0  # on a tick of the ruler
    # The holes are drawn: each aligned buffer is followed by unmapped cells.
    assert any("." in cells for _, cells in drawing.rows)


def test_unaligned_buffers_mostly_miss_the_ticks(layouts):
    layout = layouts("align-pmd-multiple")
    large, aligned = layout.large_mappings()
    # The replay starts in a region of its own (replay/engine/region.py): the top-down search puts each
    # buffer right below the one before, leaving no hole, and the kernel merges neighbouring
    # anonymous mappings of equal flags. Only a mapping the interpreter made meanwhile (a
    # pymalloc arena) can come between two buffers and split them.
    assert len(layout.holes()) == 0
    foreign = int((~layout.vma_replay).sum())
    runs = layout.metrics["vmas"]
    assert 1 <= runs <= 1 + foreign
    # 4632 KiB is 536 KiB over a multiple of 2 MiB: within one contiguous run, starts step by
    # 536 KiB modulo 2 MiB and repeat only after 256 buffers, so at most one per run is aligned.
    assert large == COUNT and aligned <= runs
    drawing = check_picture(render_ascii(layout), layout, 72)
    columns = [column for _, column in drawing.starts()]
    assert columns
    assert sum(c % drawing.columns_per_pmd == 0 for c in columns) <= len(columns) // 2


@pytest.mark.parametrize("width", [40, 57, 100])
def test_every_line_fits_the_width(layouts, width):
    layout = layouts("align-ge-pmd")
    text = render_ascii(layout, width)
    check_picture(text, layout, width)
    assert "VMAs holding replay memory" in text and "2 MiB boundary" in text


def test_huge_pages_are_drawn_where_the_kernel_put_them(layouts):
    if thp_settings().get("enabled") not in ("always", "madvise"):
        pytest.skip("THP is disabled on this machine")
    layout = layouts("align-ge-pmd", "always")
    assert layout.huge_source == "pagemap"  # PAGEMAP_SCAN is there on Linux 6.7+
    huge_bytes = int((layout.huge[:, 1] - layout.huge[:, 0]).sum())
    assert huge_bytes > 0
    # Two kernel interfaces agree: PMD-mapped ranges from pagemap and AnonHugePages from smaps.
    assert huge_bytes == layout.metrics["anon_huge_bytes"]
    assert (layout.huge % PMD_SIZE == 0).all()
    drawing = check_picture(render_ascii(layout), layout, 72)
    huge = Coverage(layout.huge)
    for offset_mib, cells in drawing.rows:
        row_start = drawing.base + offset_mib * MIB
        for column, char in enumerate(cells):
            low = row_start + column * drawing.column_bytes
            covered = int(huge.per_cell(np.array([low, low + drawing.column_bytes]))[0])
            if char == "#":
                assert covered * 2 >= drawing.column_bytes
            elif char != "[":
                assert covered * 2 < drawing.column_bytes


def test_at_event_and_end(buffers_path):
    config = ReplayConfig(policy="align-ge-pmd")
    after_three = capture_layout(str(buffers_path), config, at="3")
    assert after_three.events_replayed == 4 and len(after_three.mapping_start) == 4
    assert "after event 3 of" in render_ascii(after_three)
    end = capture_layout(str(buffers_path), config, at="end")  # every buffer unmapped by then
    assert end.empty and end.events_replayed == 2 * COUNT
    assert "No replay mapping is live" in render_ascii(end)


def test_everything_is_released_afterwards(layouts, buffers_path):
    layout = capture_layout(str(buffers_path), ReplayConfig(policy="align-ge-pmd"))
    maps = read_maps()
    total = int((layout.replay[:, 1] - layout.replay[:, 0]).sum())
    still = 0
    for start, end in layout.replay:
        overlap = np.minimum(maps[:, 1], end) - np.maximum(maps[:, 0], start)
        still += int(overlap[overlap > 0].sum())
    assert still < total // 10  # only whatever Python mapped there since


def test_far_apart_mappings_fold_the_empty_stretches(tmp_path):
    # Hinted mmaps 7 GiB apart: the kernel honours free hints, so the replay spreads as widely.
    base = 0x3E00_0000_0000
    rows = [mmap(base + i * 7 * GIB, 4 * MIB + PAGE, hint=base + i * 7 * GIB) for i in range(5)]
    path = write_trace(table_from_rows(rows + [munmap(r["addr"], r["length"]) for r in rows]),
                       tmp_path / "wide.arrow")
    layout = capture_layout(str(path), ReplayConfig())
    if layout.replay[-1, 1] - layout.replay[0, 0] < 20 * GIB:
        pytest.skip("the kernel did not honour the hints here")
    text = render_ascii(layout, 60)
    drawing = check_picture(text, layout, 60)
    assert text.count("unused ~") + text.count("without replay memory") >= 4
    assert len(drawing.rows) <= 3 * 5  # a few rows per mapping, nothing for the empty GiBs


# ---------------------------------------------------------------------------------------------
# The CLI.


def test_cli_layout_text_json_and_png(run_cli, buffers_path, tmp_path):
    png = tmp_path / "layout.png"
    result = run_cli("layout", buffers_path, "--policy", "align-ge-pmd", "--width", "64",
                     "--png", png)
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 64 for line in result.stdout.splitlines())
    assert "policy=align-ge-pmd" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = run_cli("layout", buffers_path, "--policy", "align-ge-pmd", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["figures"]["large_mappings"] == COUNT
    assert document["figures"]["pmd_aligned_large_mappings"] == COUNT
    assert all(m["pmd_aligned"] for m in document["mappings"])
    assert {v["owner"] for v in document["vmas"]} <= {"replay", "other"}
    assert len(document["holes"]) == document["figures"]["holes"]


@pytest.mark.parametrize("args, fragment", [
    (["--at", "middle"], "bad --at 'middle'"),
    (["--at", "-3"], "bad --at '-3'"),
    (["--at", "1.5"], "bad --at '1.5'"),
    (["--at", "100000"], "has 48 events, numbered 0 to 47"),
    (["--width", "20"], "--width 20"),
    (["--policy", "kernel", "--png", "/no/such/folder/x.png"], "does not exist"),
])
def test_cli_bad_input_is_one_line_and_exit_2(run_cli, buffers_path, args, fragment):
    result = run_cli("layout", buffers_path, *args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], lines


# ---------------------------------------------------------------------------------------------
# The drawing alone, on made-up layouts (no kernel).


def made_up_layout(replay, others=(), huge=(), name="made-up.arrow") -> Layout:
    """A Layout whose VMAs are exactly the replay ranges plus ``others``."""
    replay = np.array(sorted(replay), np.int64).reshape(-1, 2)
    vmas = np.array(sorted([tuple(r) for r in replay.tolist()] + list(others)), np.int64).reshape(-1, 2)
    zeros = np.zeros(len(vmas), np.int64)
    huge = np.array(huge, np.int64).reshape(-1, 2)
    covered = Coverage(merge_ranges(huge))  # AnonHugePages as the kernel would count it
    anon_huge = covered.below(vmas[:, 1]) - covered.below(vmas[:, 0])
    return layout_from(Vmas(vmas[:, 0], vmas[:, 1], zeros, anon_huge, zeros.astype(np.int8)),
                       replay, huge, replay[:, 0],
                       replay[:, 1] - replay[:, 0], trace_name=name, trace_events=10,
                       config=ReplayConfig().as_dict(), at="peak", events_replayed=5,
                       host={"kernel": "6.18.0", "thp": {"enabled": "madvise"}})


@st.composite
def address_spaces(draw):
    """Sorted, non-overlapping page-aligned ranges: clustered, far apart, tiny or huge."""
    count = draw(st.integers(1, 60))
    address = draw(st.integers(1 << 20, 1 << 30)) * PAGE
    ranges = []
    for _ in range(count):
        address += draw(st.sampled_from([0, PAGE, 64 * KIB, 3 * MIB, 700 * MIB, 5 * GIB, 3 << 40]))
        length = draw(st.sampled_from([PAGE, 12 * KIB, 1 * MIB, BUFFER, 2 * MIB, 64 * MIB, 3 * GIB]))
        ranges.append((address, address + length))
        address += length
    return ranges


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ranges=address_spaces(), width=st.integers(40, 140), max_rows=st.integers(8, 60))
def test_any_layout_draws_within_bounds(ranges, width, max_rows):
    layout = made_up_layout(ranges)
    text = render_ascii(layout, width, max_rows)
    drawing = check_picture(text, layout, width)
    # The drawing (rulers included) keeps to max_rows lines.
    assert len(drawing.body) + 2 <= max_rows


def test_a_huge_reservation_folds_into_a_few_lines():
    layout = made_up_layout([(0x7000_0000_0000, 0x7000_0000_0000 + 64 * GIB)])
    text = render_ascii(layout)
    check_picture(text, layout, 72)
    assert re.search(r"\* +\d+ more rows like this", text)
    assert len(text.splitlines()) < 25


def test_too_many_segments_keeps_the_largest_with_a_note():
    ranges = [(i * 64 * GIB, i * 64 * GIB + (i + 1) * MIB) for i in range(1, 200)]
    layout = made_up_layout(ranges)
    text = render_ascii(layout, 72, max_rows=30)
    drawing = check_picture(text, layout, 72)
    assert "segments drawn (the largest" in text
    # The largest mapping (the last) is drawn; the smallest is not.
    drawn_offsets = {offset for offset, _ in drawing.rows}
    assert (ranges[-1][0] - drawing.base) // MIB // 2 * 2 in drawn_offsets
    assert (ranges[0][0] - drawing.base) // MIB not in drawn_offsets


def test_other_memory_and_holes_are_drawn():
    a = 0x7F00_0000_0000
    layout = made_up_layout([(a, a + 4 * MIB), (a + 8 * MIB, a + 12 * MIB)],
                            others=[(a + 4 * MIB, a + 6 * MIB)], huge=[(a, a + 2 * MIB)])
    drawing = check_picture(render_ascii(layout), layout, 72)
    cells = "".join(c for _, c in drawing.rows)
    per_mib = MIB // drawing.column_bytes
    assert cells.startswith("[" + "#" * (2 * per_mib - 1) + "=" * (2 * per_mib)
                            + "x" * (2 * per_mib) + "." * (2 * per_mib) + "[")
    # As ``replay`` counts them, a hole lies between two replay VMAs with nothing in between and
    # is at most 2 MiB wide (alignment padding); wider gaps separate regions.
    assert layout.metrics["holes"] == 0 and len(layout.holes()) == 0
    without_other = made_up_layout([(a, a + 4 * MIB), (a + 6 * MIB, a + 12 * MIB)])
    assert without_other.holes().tolist() == [[a + 4 * MIB, a + 6 * MIB]]
    assert without_other.metrics["holes"] == 1 and without_other.metrics["hole_bytes"] == 2 * MIB
    far_apart = made_up_layout([(a, a + 4 * MIB), (a + 8 * MIB, a + 12 * MIB)])
    assert len(far_apart.holes()) == 0 and far_apart.metrics["holes"] == 0


def test_names_that_are_not_ascii_stay_out_of_the_mail():
    layout = made_up_layout([(1 << 40, (1 << 40) + MIB)], name="trace-\u00e4\u2013\n\x1b[31m.arrow")
    text = render_ascii(layout)
    check_picture(text, layout, 72)
    assert "trace-??" in text and "\x1b" not in text


def test_a_trace_without_mappings(run_cli, tmp_path):
    path = write_trace(table_from_rows([munmap(0x7F00_0000_0000, PAGE)]), tmp_path / "none.arrow")
    result = run_cli("layout", path)
    assert result.exit_code == 0, result.output
    assert "No replay mapping is live at this point." in result.stdout


def test_parse_at():
    assert parse_at("peak") == "peak" and parse_at(" END ") == "end" and parse_at("12") == 12
    for bad in ("", "-1", "1e3", "peak2", "0x10"):
        with pytest.raises(MmreplayError):
            parse_at(bad)


def test_width_below_minimum_is_refused():
    with pytest.raises(MmreplayError, match="--width 39"):
        render_ascii(made_up_layout([(1 << 40, (1 << 40) + MIB)]), 39)


# Interval helpers against a brute-force model on small integers.

small_ranges = st.lists(st.tuples(st.integers(0, 60), st.integers(1, 12)), max_size=12).map(
    lambda pairs: [(s, s + n) for s, n in pairs])


def as_set(ranges) -> set[int]:
    return {x for s, e in ranges for x in range(s, e)}


@given(small_ranges, small_ranges)
def test_interval_helpers_match_sets(a, b):
    merged = merge_ranges(np.array(a, np.int64).reshape(-1, 2))
    assert as_set(merged.tolist()) == as_set(a)
    assert all(merged[1:, 0] > merged[:-1, 1])  # sorted, and neighbours do not touch
    assert as_set(subtract_ranges(np.array(a).reshape(-1, 2), np.array(b).reshape(-1, 2)).tolist()) \
        == as_set(a) - as_set(b)
    assert as_set(clip_ranges(merged, 10, 40).tolist()) == {x for x in as_set(a) if 10 <= x < 40}
    coverage = Coverage(merged)
    edges = np.arange(0, 80, 7)
    assert coverage.per_cell(edges).tolist() == [len(as_set(a) & set(range(lo, hi)))
                                                 for lo, hi in zip(edges[:-1], edges[1:])]


def test_segments_split_only_on_long_empty_stretches():
    row = 16 * MIB
    ranges = np.array([[0, MIB], [2 * MIB, 3 * MIB], [3 * MIB + 5 * row, 4 * MIB + 5 * row]])
    segments = plan_segments(ranges, row, split_rows=4)
    assert [(s.start, s.ranges, s.bytes) for s in segments] == [(0, 2, 2 * MIB),
                                                                (2 * MIB + 5 * row, 1, MIB)]


def test_estimated_huge_ranges_use_whole_blocks():
    vmas = np.array([[PMD_SIZE - PAGE, 5 * PMD_SIZE], [9 * PMD_SIZE, 10 * PMD_SIZE]])
    estimate = estimate_huge_ranges(vmas, np.array([2 * PMD_SIZE, 0]))
    assert estimate.tolist() == [[PMD_SIZE, 3 * PMD_SIZE]]


# ---------------------------------------------------------------------------------------------
# The huge zero page: memory read but never written, in a MADV_HUGEPAGE range.


def pagemap_scan(start: int, end: int, mask: int, inverted: int = 0) -> list[tuple[int, int]]:
    """PAGEMAP_SCAN over our own [start, end): ranges whose pages have all ``mask`` categories."""
    import ctypes
    import fcntl
    import os

    from replay.measure.probes import PAGEMAP_SCAN, PM_SCAN_ARG_BYTES

    regions = (ctypes.c_uint64 * (3 * 64))()
    arg = (ctypes.c_uint64 * 12)(PM_SCAN_ARG_BYTES, 0, start, end, 0, ctypes.addressof(regions),
                                 64, 0, inverted, mask, 0, mask)
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        count = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
    finally:
        os.close(fd)
    return [(regions[3 * k], regions[3 * k + 1]) for k in range(count)]


def test_the_huge_zero_page_is_not_counted_as_a_huge_page():
    """Read faults in a MADV_HUGEPAGE range map the shared huge zero page: PMD-mapped, but no
    THP (smaps counts it in neither Rss nor AnonHugePages). Real memory of this process: half
    read, half written; only the written half may come back as huge."""
    import ctypes
    import mmap

    from replay.measure.probes import PAGE_IS_HUGE, huge_ranges
    from replay.measure.probes import read_smaps

    page_is_pfnzero = 1 << 5  # include/uapi/linux/fs.h

    if thp_settings().get("enabled") not in ("always", "madvise"):
        pytest.skip("THP is disabled on this machine")
    area = mmap.mmap(-1, 10 * MIB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    area.madvise(mmap.MADV_HUGEPAGE)
    pointer = ctypes.c_char.from_buffer(area)
    try:
        start = ctypes.addressof(pointer)
        base = -(-start // PMD_SIZE) * PMD_SIZE
        offset = base - start
        for page in range(0, 4 * MIB, PAGE):            # read: the huge zero page
            area[offset + page]
        for page in range(4 * MIB, 8 * MIB, PAGE):      # written: real pages, THPs if any
            area[offset + page] = 1
        read_half = (base, base + 4 * MIB)
        zero = pagemap_scan(*read_half, PAGE_IS_HUGE | page_is_pfnzero)
        if sum(e - s for s, e in zero) != 4 * MIB:
            pytest.skip("the kernel did not map the huge zero page here (use_zero_page=0?)")
        huge = huge_ranges(np.array([[start, start + 10 * MIB]]))
        vmas = read_smaps()
        inside = (vmas.start <= start) & (vmas.end >= start + 10 * MIB)
        anon_huge = int(vmas.anon_huge[inside][0])
    finally:
        del pointer
        area.close()
    assert huge is not None
    huge_bytes = int((huge[:, 1] - huge[:, 0]).sum()) if len(huge) else 0
    assert not any(s < read_half[1] and e > read_half[0] for s, e in huge.tolist()), huge
    assert huge_bytes == anon_huge <= 4 * MIB


def test_layout_huge_ranges_add_up_to_at_most_anon_huge_pages(run_cli, tmp_path):
    """A read-only anonymous mapping (touched by reading) next to a written one, replayed with
    --thp always: no VMA holds more huge-page bytes in the layout than its AnonHugePages."""
    from tracegen import TracedProcess

    if thp_settings().get("enabled") not in ("always", "madvise"):
        pytest.skip("THP is disabled on this machine")
    process = TracedProcess(1)
    process.mmap(16 * MIB, prot=1)   # PROT_READ: the replay reads it, as the trace's program could
    process.mmap(16 * MIB, prot=3)
    trace = write_trace(process.table(), tmp_path / "t.arrow")
    result = run_cli("layout", trace, "--thp", "always", "--at", "end", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    huge = np.array(document["huge_ranges"], np.int64).reshape(-1, 2)
    covered = Coverage(merge_ranges(huge))
    for vma in document["vmas"]:
        inside = int(covered.below(np.array([vma["end"]]))[0] - covered.below(np.array([vma["start"]]))[0])
        assert inside <= vma["anon_huge_bytes"], vma
    figures = document["figures"]
    assert figures["huge_bytes"] <= figures["anon_huge_bytes"] <= figures["rss_bytes"]


def test_pagemap_ranges_beyond_anon_huge_pages_fall_back_to_smaps():
    """A kernel whose PAGEMAP_SCAN does not flag the huge zero page reports more PMD-mapped
    bytes in a VMA than its AnonHugePages: then only smaps is trusted (placed by estimate)."""
    a = 0x7F00_0000_0000
    vmas = Vmas(np.array([a]), np.array([a + 8 * MIB]), np.array([2 * MIB]),
                np.array([2 * MIB]), np.array([1], np.int8))
    layout = layout_from(vmas, np.array([[a, a + 8 * MIB]]), np.array([[a, a + 8 * MIB]]),
                         np.array([a]), np.array([8 * MIB]), trace_name="t.arrow",
                         trace_events=2, config=ReplayConfig().as_dict(), at="peak",
                         events_replayed=1, host={"kernel": "6.8.0"})
    assert layout.huge_source == "smaps"
    assert layout.huge.tolist() == [[a, a + 2 * MIB]]
    assert "placed by estimate" in render_ascii(layout)
