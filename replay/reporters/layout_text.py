"""The ASCII picture of a captured ``Layout``, for a mail (``mmreplay layout``).

The picture wraps the address space into rows that each start on a 2 MiB boundary and cover a
whole number of 2 MiB blocks, so one ruler of ``|`` ticks marks every 2 MiB boundary of every
row. Long stretches without replay memory are folded into a ``~ 1.20 GiB unused ~`` line and
runs of identical rows into a ``*`` line (as hexdump does).
"""

from __future__ import annotations

import textwrap

import numpy as np

from traces.errors import MmreplayError
from traces.host import describe_thp
from traces.units import fmt_bytes, plural

from replay.reporters.layout_geometry import (Coverage, Geometry, Layout, Segment, choose_segments,
                                              other_vmas_between, plan_segments)
from replay.measure.probes import merge_ranges

MIB = 1 << 20

# Characters of the ASCII picture.
START, HUGE, MAPPED, OTHER, FREE, TICK, RESERVED = "[", "#", "=", "x", ".", "|", "-"
COLUMNS_PER_PMD = (32, 16, 8, 4, 2)  # scales tried, finest first (2 is the least that shows ticks)
MIN_PMDS_PER_ROW = 4                # rows hold a power of two of 2 MiB blocks (the PNG's too)
MIN_WIDTH = 40
MAX_WIDTH = 1000  # columns of the ASCII picture; wider is no picture a terminal or mail shows
DEFAULT_WIDTH = 72
DEFAULT_MAX_ROWS = 40               # lines of drawing (top ruler, rows, folds, separators)
#                                     before a coarser scale is tried
BOTTOM_RULER_ROWS = 24              # repeat the ruler under drawings longer than this
RENDER_BLOCK_ROWS = 4096            # rows computed at once (a 1 TiB reservation is 16k rows)


class _Cells:
    """Per-cell characters for any stretch of rows."""

    def __init__(self, layout: Layout, geometry: Geometry):
        self.geometry = geometry
        self.replay = Coverage(merge_ranges(layout.replay))
        self.vmas = Coverage(merge_ranges(layout.vmas))
        self.huge = Coverage(layout.huge)
        self.reserved = Coverage(layout.heap_reservation())
        self.starts = np.unique(layout.replay[:, 0]) if len(layout.replay) else np.zeros(0, np.int64)

    def rows(self, first_row_start: int, count: int) -> list[str]:
        g = self.geometry
        n = count * g.cells
        edges = first_row_start + np.arange(n + 1, dtype=np.int64) * g.column_bytes
        replay = self.replay.per_cell(edges)
        vmas = self.vmas.per_cell(edges)
        huge = self.huge.per_cell(edges)
        chars = np.full(n, FREE, "S1")
        chars[vmas > replay] = OTHER           # memory of the process that is not the replay's
        chars[self.reserved.per_cell(edges) > replay] = RESERVED  # the heap's room to grow
        chars[replay > 0] = MAPPED             # a replay mapping never vanishes, however small
        chars[2 * huge >= g.column_bytes] = HUGE
        lo, hi = np.searchsorted(self.starts, [edges[0], edges[-1]])
        chars[(self.starts[lo:hi] - edges[0]) // g.column_bytes] = START
        return [row.tobytes().decode("ascii") for row in chars.reshape(count, g.cells)]


def _segment_lines(cells: _Cells, segment: Segment, base: int, label_width: int, width: int,
                   budget: int) -> list[str]:
    """The rows of one segment, runs of identical rows folded into a '*' line; stops as soon as
    there are more than ``budget`` lines (the segment will not fit anyway)."""
    g = cells.geometry
    total = segment.rows(g.row_bytes)
    lines: list[str] = []
    previous, repeats = None, 0

    def fold() -> None:
        if repeats == 1:
            row_start = segment.start + (row - 1) * g.row_bytes
            lines.append(_row_line((row_start - base) // MIB, previous, label_width))
        elif repeats > 1:
            lines.extend(_label_wrap("*", f"{repeats} more rows like this "
                                          f"({fmt_bytes(repeats * g.row_bytes)})", label_width,
                                     width))

    row = 0
    for block in range(0, total, RENDER_BLOCK_ROWS):
        count = min(RENDER_BLOCK_ROWS, total - block)
        for offset, text in enumerate(cells.rows(segment.start + block * g.row_bytes, count)):
            row = block + offset
            if text == previous:
                repeats += 1
                continue
            fold()
            lines.append(_row_line((segment.start + row * g.row_bytes - base) // MIB, text,
                                   label_width))
            previous, repeats = text, 0
            if len(lines) > budget:
                return lines
    row = total
    fold()
    return lines


def _row_line(offset_mib: int, cells: str, label_width: int) -> str:
    return f"{offset_mib:>{label_width}}  {cells}"


def _label_wrap(label: str, text: str, label_width: int, width: int) -> list[str]:
    """A note in the drawing: ``label`` in the row-label column, ``text`` wrapped beside it."""
    indent = " " * (label_width + 2)
    return textwrap.wrap(text, width, initial_indent=f"{label:>{label_width}}  ",
                         subsequent_indent=indent, break_on_hyphens=False)


def _pack(items: list[str], width: int, gap: str = "   ") -> list[str]:
    """Legend items side by side, as many per line as fit."""
    lines: list[str] = []
    for item in items:
        if lines and len(lines[-1]) + len(gap) + len(item) <= width:
            lines[-1] += gap + item
        else:
            lines.append(item[:width])
    return lines


def _ruler(geometry: Geometry, label_width: int, width: int) -> list[str]:
    """Two lines: in-row MiB offsets of the ticks, and a '|' on every 2 MiB boundary (the row's
    closing boundary too, where a column is left for it)."""
    cpp = geometry.columns_per_pmd
    closing = label_width + 2 + geometry.cells + 1 <= width
    ticks = [" "] * (geometry.cells + int(closing))
    labels = [" "] * width
    free_from = 0
    for k in range(geometry.pmds_per_row + int(closing)):
        ticks[k * cpp] = TICK
        text = f"+{2 * k}"
        column = label_width + 2 + k * cpp
        if column >= free_from and column + len(text) <= width:
            labels[column:column + len(text)] = text
            free_from = column + len(text) + 1
    head = f"{'MiB':>{label_width}}  "
    return [head + "".join(labels[len(head):]).rstrip(),
            (" " * (label_width + 2) + "".join(ticks)).rstrip()]


def _size(n: int) -> str:
    """Exact binary sizes as people say them: 262144 -> '256 KiB'."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return fmt_bytes(n)


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width, subsequent_indent=indent, break_on_hyphens=False) or [""]


def _outside(left_out: list[Segment], where: str, label_width: int, width: int) -> list[str]:
    return _label_wrap("", f"~ {plural(len(left_out), 'segment')} {where} not drawn "
                           f"({fmt_bytes(sum(s.bytes for s in left_out))}) ~", label_width, width)


def _separator(layout: Layout, skipped: list[Segment], previous: Segment, segment: Segment,
               label_width: int, width: int) -> list[str]:
    """The line standing for the stretch between two drawn segments (``skipped``: the segments
    between them that are not drawn)."""
    gap = fmt_bytes(segment.start - previous.end)
    if skipped:
        text = (f"~ {gap}: {plural(len(skipped), 'segment')} not drawn "
                f"({fmt_bytes(sum(s.bytes for s in skipped))}) ~")
    else:
        others = other_vmas_between(layout, previous.end, segment.start)
        text = f"~ {gap}, {plural(others, 'other VMA')} ~" if others else f"~ {gap} unused ~"
    return _label_wrap("", text, label_width, width)


def _draw(layout: Layout, geometry: Geometry, label_width: int, width: int,
          max_rows: int, truncate: bool) -> tuple[list[str], list[str]] | None:
    """(drawing lines, notes) at one scale; None when the drawing is longer than ``max_rows``
    lines and ``truncate`` is off. With ``truncate`` the largest segments that fit are drawn and
    a note says what was left out."""
    base = layout.base
    cells = _Cells(layout, geometry)
    segments = plan_segments(layout.replay, geometry.row_bytes)
    ruler = _ruler(geometry, label_width, width)
    budget = max(1, max_rows - len(ruler))
    drawn: list[tuple[Segment, list[str]]] = []
    used = 0
    for segment in segments:
        separator = len(_separator(layout, [], drawn[-1][0], segment, label_width,
                                   width)) if drawn else 0
        allowance = budget if truncate else budget - used - separator
        lines = _segment_lines(cells, segment, base, label_width, width, max(0, allowance))
        used += len(lines) + separator
        drawn.append((segment, lines))
        if used > budget and not truncate:
            return None
    kept = list(range(len(drawn)))
    notes: list[str] = []
    if used > budget:
        # Two lines are kept for the segments left out below the first and above the last.
        kept = choose_segments([len(lines) for _, lines in drawn],
                               [segment.bytes for segment, _ in drawn], budget - 2)
        left_out = [drawn[i][0] for i in range(len(drawn)) if i not in set(kept)]
        if left_out:
            notes.append(f"{len(kept)} of {len(drawn)} segments drawn (the largest by replay "
                         f"bytes); the other {len(left_out)} hold "
                         f"{fmt_bytes(sum(s.bytes for s in left_out))} in "
                         f"{sum(s.ranges for s in left_out)} replay ranges (see --json, --png)")
    body: list[str] = []
    previous: Segment | None = None
    last_drawn = -1
    for n, i in enumerate(kept):
        segment, lines = drawn[i]
        separator = (_separator(layout, segments[kept[n - 1] + 1:i], previous, segment,
                                label_width, width) if previous is not None else [])
        room = budget - len(body) - len(separator)
        if room < min(len(lines), 2):
            notes.append(f"{plural(len(kept) - n, 'more segment')} not drawn: no room left")
            break
        body.extend(separator)
        if len(lines) > room:
            body.extend(lines[:room - 1])
            body.extend(_label_wrap("", "... (rest not drawn)", label_width, width))
        else:
            body.extend(lines)
        previous, last_drawn = segment, i
    # Say what lies below the first and above the last segment drawn, where there is room.
    if previous is not None:
        if kept[0] > 0:
            lines = _outside(segments[:kept[0]], "below", label_width, width)
            if len(body) + len(lines) <= budget:
                body[:0] = lines
        if last_drawn < len(segments) - 1:
            lines = _outside(segments[last_drawn + 1:], "above", label_width, width)
            if len(body) + len(lines) <= budget:
                body.extend(lines)
    drawing = ruler + body
    if len(body) > BOTTOM_RULER_ROWS:
        drawing += ruler[::-1]
    return drawing, notes


def _scale_and_draw(layout: Layout, width: int, max_rows: int):
    """(geometry, drawing lines, notes) at the finest scale whose drawing fits ``max_rows``."""
    label_width = max(3, len(str((int(layout.replay[-1, 1]) - layout.base) // MIB)))
    room = width - label_width - 2  # cells; the closing tick takes one more column if free

    def pmds(cpp: int) -> int:  # a power of two of 2 MiB blocks per row
        return 1 << ((room // cpp).bit_length() - 1) if room // cpp else 0

    # Rows of at least a few 2 MiB blocks show neighbours side by side; finer scales first.
    scales = ([c for c in COLUMNS_PER_PMD if pmds(c) >= MIN_PMDS_PER_ROW]
              or [c for c in COLUMNS_PER_PMD if pmds(c) >= 1])
    for index, cpp in enumerate(scales):
        geometry = Geometry(cpp, pmds(cpp))
        drawn = _draw(layout, geometry, label_width, width, max_rows,
                      truncate=index == len(scales) - 1)
        if drawn is not None:
            return (geometry, *drawn)
    raise AssertionError("the coarsest scale always draws")  # pragma: no cover


def ascii_row_bytes(layout: Layout, width: int = DEFAULT_WIDTH) -> int:
    """The address range of one row of the ASCII picture (the PNG draws the same rows)."""
    return _scale_and_draw(layout, width, DEFAULT_MAX_ROWS)[0].row_bytes


def render_ascii(layout: Layout, width: int = DEFAULT_WIDTH, max_rows: int = DEFAULT_MAX_ROWS) -> str:
    """The layout as plain ASCII text for a mail, every line at most ``width`` columns."""
    if width < MIN_WIDTH:
        raise MmreplayError(f"--width {width}: the picture needs at least {MIN_WIDTH} columns")
    cfg = layout.config
    head = _wrap(f"mmreplay layout: {layout.trace_name} {layout.at_text()}", width, "  ")
    head += _wrap(f"policy={cfg.get('policy')} thp={cfg.get('thp')} touch={cfg.get('touch')} "
                  f"access={cfg.get('access')} files={cfg.get('files')}", width, "  ")
    head += _wrap(f"Linux {layout.host.get('kernel', '?')}; THP {describe_thp(layout.host)}",
                  width, "  ")
    if layout.vm:
        head += _wrap(f"in a QEMU {str(layout.vm.get('accel')).upper()} guest booted from "
                      f"{(layout.vm.get('image') or {}).get('given')}", width, "  ")
    if layout.empty:
        return _ascii("\n".join(head + ["", "No replay mapping is live at this point."]) + "\n")

    geometry, drawing, notes = _scale_and_draw(layout, width, max_rows)
    head += _wrap(f"1 column = {_size(geometry.column_bytes)}, 1 row = "
                  f"{_size(geometry.row_bytes)}; rows labelled in MiB from {layout.base:#x}",
                  width, "  ")
    for note in notes:
        head += _wrap(f"NOTE: {note}", width, "  ")
    estimated = ", placed by estimate" if layout.huge_source == "smaps" else ""
    legend = _pack([f"{START} a replay mapping starts", f"{MAPPED} replay memory, 4 KiB pages",
                    f"{HUGE} THP-backed (PMD-mapped{estimated})",
                    f"{OTHER} other memory of this process", f"{FREE} unmapped",
                    f"{TICK} 2 MiB boundary"]
                   + ([f"{RESERVED} the brk heap's reservation (PROT_NONE)"] if layout.heap
                      else []), width)
    return _ascii("\n".join(head + [""] + drawing + [""] + legend + [""]
                            + figure_lines(layout, width)) + "\n")


def _ascii(text: str) -> str:
    """Mail-safe: names from the trace or the host that are not printable ASCII become '?'."""
    return "".join(c if c == "\n" or " " <= c <= "~" else "?" for c in text)


def figure_lines(layout: Layout, width: int = DEFAULT_WIDTH) -> list[str]:
    """The few figures under the picture, each naming its unit."""
    m = layout.metrics
    large, aligned = layout.large_mappings()
    huge_bytes = int((layout.huge[:, 1] - layout.huge[:, 0]).sum())
    lines = _wrap(f"VMAs holding replay memory: {m['vmas']} ({fmt_bytes(m['mapped_bytes'])}); "
                  f"holes between them: {m['holes']} ({fmt_bytes(m['hole_bytes'])})", width, "  ")
    lines += _wrap(f"THP: AnonHugePages {fmt_bytes(m['anon_huge_bytes'])} of Rss "
                   f"{fmt_bytes(m['rss_bytes'])}; whole 2 MiB blocks inside the VMAs: "
                   f"{fmt_bytes(m['thp_eligible_bytes'])}", width, "  ")
    if layout.huge_source == "pagemap" and huge_bytes != m["anon_huge_bytes"]:
        lines += _wrap(f"     PMD-mapped in the replay's ranges (PAGEMAP_SCAN): "
                       f"{fmt_bytes(huge_bytes)}", width, "  ")
    files = layout.large_file_mappings()
    lines += _wrap(f"anonymous mappings >= 2 MiB: {large} live, {aligned} of them start 2 MiB-"
                   f"aligned" + (f" (and {plural(files, 'file mapping')} >= 2 MiB replayed as "
                                 f"anonymous)" if files else ""), width, "  ")
    done = layout.collapse
    if done:
        what = (f"MADV_COLLAPSE on {plural(done['calls'], 'range')} ({done['failed']} failed)"
                if done["how"] == "madvise" else
                f"waited {done['seconds']:.0f} s for khugepaged: {done.get('full_scans', 0)} full "
                f"scans, {done.get('pages_collapsed', 0)} pages collapsed (system-wide)")
        lines += _wrap(f"collapse before this picture: {what}", width, "  ")
    heap = layout.heap
    if heap:
        lines += _wrap(f"brk heap: {fmt_bytes(heap['bytes'])} at {heap['start']:#x} in "
                       f"{plural(heap['vmas'], 'VMA')}, AnonHugePages "
                       f"{fmt_bytes(heap['anon_huge_bytes'])}; reserved up to "
                       f"{fmt_bytes(heap['reserved_bytes'])} (its largest size in the trace), the "
                       f"rest PROT_NONE and not counted as replay memory", width, "  ")
    return lines
