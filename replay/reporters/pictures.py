"""PNG pictures: the replay's address-space layout (``layout --png``) and a trace overview
(``info --png``).

matplotlib is optional (``pip install '.[plot]'`` in a checkout) and imported inside these functions
only. Figures are drawn with the object-oriented API on the Agg canvas (no pyplot, no display),
at an exact pixel size, and written through ``atomic_output``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from traces import MmreplayError
from traces.files import atomic_output
from traces.format import column_np, op_names
from traces.host import describe_thp
from traces.schema import MAP_ANONYMOUS, OP_CODE, PMD_SIZE
from traces.summary import page_round, walk_live_bytes
from traces.units import fmt_bytes, plural

from replay.reporters.layout_geometry import (Layout, choose_segments, clip_ranges,
                                              other_vmas_between, plan_segments, subtract_ranges)
from replay.reporters.layout_text import ascii_row_bytes
from replay.measure.probes import merge_ranges

MIB = 1 << 20
DPI = 100
PX_PER_POINT = DPI / 72
LAYOUT_SIZE_PX = (1400, 900)
TRACE_SIZE_PX = (1400, 560)
MIN_SIZE_PX, MAX_SIZE_PX = (320, 240), (12000, 12000)
MIN_PX_PER_PMD = 5          # 2 MiB grid lines at least this far apart
MIN_PX_PER_ROW = 13
PMDS_PER_ROW = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)

# Colours (colour-blind safe pairs: blue / orange; grey for what is not the replay's).
REPLAY_COLOUR = "#3b75af"
HUGE_COLOUR = "#ef8636"
OTHER_COLOUR = "#a0a0a0"
FREE_COLOUR = "#f2f2f2"
GRID_COLOUR = "#202020"
MARK_COLOUR = "#c0392b"
START_COLOUR = "#10253f"
# Starts of anonymous mappings >= 2 MiB (what the placement rules are about): a filled triangle
# on a 2 MiB boundary, a hollow one off it, so that "did alignment happen?" is read at a glance.
ALIGNED_COLOUR = "#111111"  # not the text's black
UNALIGNED_COLOUR = "#d62728"
GRID_STYLE = (0, (1, 2))  # dotted

# mmreplay is installed from a checkout (it is not on the package index).
INSTALL_PLOT = ("pip install matplotlib (or, in the mmreplay checkout, "
                "pip install '.[plot]')")


def require_matplotlib():
    """(Figure, FigureCanvasAgg), or one clear error when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MmreplayError(f"PNG output needs matplotlib: {INSTALL_PLOT}") from None
    return Figure, FigureCanvasAgg


def _figure(size_px: tuple[int, int], constrained: bool = True):
    width, height = (int(v) for v in size_px)
    if not (MIN_SIZE_PX[0] <= width <= MAX_SIZE_PX[0] and MIN_SIZE_PX[1] <= height <= MAX_SIZE_PX[1]):
        raise MmreplayError(f"PNG size {width}x{height}: expected {MIN_SIZE_PX[0]}x{MIN_SIZE_PX[1]} "
                            f"to {MAX_SIZE_PX[0]}x{MAX_SIZE_PX[1]} pixels")
    Figure, FigureCanvasAgg = require_matplotlib()
    # A hair over the size: Agg truncates width/dpi * dpi, which may land one pixel short.
    figure = Figure(figsize=((width + 0.01) / DPI, (height + 0.01) / DPI), dpi=DPI,
                    layout="constrained" if constrained else None)
    FigureCanvasAgg(figure)
    return figure


def _font_points(size_px: tuple[int, int], reference_px: tuple[int, int]) -> float:
    """Base font size: 10 pt at the default size, scaled with the image (6 to 13 pt)."""
    scale = min(size_px[0] / reference_px[0], size_px[1] / reference_px[1])
    return float(min(13.0, max(6.0, 10.0 * scale)))


def _fit(text: str, size_px: tuple[int, int], points: float) -> str:
    """``text`` wrapped to the image width (DejaVu Sans is about 0.55 em per character)."""
    columns = max(20, int(size_px[0] * 0.95 / (points * PX_PER_POINT * 0.55)))
    return "\n".join(textwrap.wrap(text, columns, break_on_hyphens=False))


def _save(figure, path) -> None:
    with atomic_output(path) as handle:
        figure.savefig(handle, format="png", dpi=DPI)


def _size_label(n: float) -> str:
    """Axis labels for sizes: 4096 -> '4K', 2097152 -> '2M'."""
    for unit, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
    return f"{n:.0f}"


# ---------------------------------------------------------------------------------------------
# layout --png


def _layout_rows(layout: Layout, max_pmds: int, max_rows: int):
    """Pick the row size and the segments to draw: the rows of the ASCII picture (so that a mail
    and its attachment line up), else the finest coarser rows that fit, else the widest rows with
    the largest segments. Returns (row_bytes, kept segments, all segments, truncated)."""
    ascii_pmds = ascii_row_bytes(layout) // PMD_SIZE
    choices = ([p for p in PMDS_PER_ROW if ascii_pmds <= p <= max_pmds]
               or [p for p in PMDS_PER_ROW if p <= max_pmds] or [PMDS_PER_ROW[0]])
    for pmds in choices:
        row_bytes = pmds * PMD_SIZE
        segments = plan_segments(layout.replay, row_bytes)
        rows = sum(s.rows(row_bytes) for s in segments) + len(segments) - 1
        if rows <= max_rows:
            return row_bytes, segments, segments, False
    kept = choose_segments([s.rows(row_bytes) for s in segments], [s.bytes for s in segments],
                           max_rows)
    return row_bytes, [segments[i] for i in kept], segments, True


def plot_layout(layout: Layout, path, size_px: tuple[int, int] = LAYOUT_SIZE_PX) -> int | None:
    """The layout as a PNG: rows of address space starting on 2 MiB boundaries, a grid line on
    every 2 MiB boundary, replay memory coloured by whether huge pages back it. Returns the
    address range of one row (None for an empty layout)."""
    figure = _figure(size_px, constrained=False)  # first: says how to get matplotlib if missing
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    width_px, height_px = size_px
    pt = _font_points(size_px, LAYOUT_SIZE_PX)
    cfg = layout.config
    m = layout.metrics
    large, aligned = layout.large_mappings()
    title = _fit(f"{layout.trace_name}: policy {cfg.get('policy')}, Linux "
                 f"{layout.host.get('kernel', '?')}", size_px, pt * 1.4)
    subtitle = _fit(f"replay {layout.at_text()};  --thp {cfg.get('thp')} --touch "
                    f"{cfg.get('touch')};  THP {describe_thp(layout.host)}", size_px, pt * 0.95)
    figures = (f"{m['vmas']} VMAs ({fmt_bytes(m['mapped_bytes'])}) hold the replay's memory;  "
               f"{m['holes']} holes between them ({fmt_bytes(m['hole_bytes'])});  "
               f"AnonHugePages {fmt_bytes(m['anon_huge_bytes'])} of Rss "
               f"{fmt_bytes(m['rss_bytes'])};  {large} anonymous mappings >= 2 MiB, {aligned} of "
               f"them 2 MiB-aligned")
    estimated = ", placed by estimate" if layout.huge_source == "smaps" else ""
    marker_points = pt * 0.9
    handles = [Patch(color=REPLAY_COLOUR, label="replay memory, 4 KiB pages"),
               Patch(color=HUGE_COLOUR, label=f"THP-backed (PMD-mapped{estimated})"),
               Patch(color=OTHER_COLOUR, label="other memory of the process"),
               Patch(facecolor=FREE_COLOUR, edgecolor="#cccccc", label="unmapped (hole)"),
               Line2D([], [], linewidth=0, marker="v", markersize=marker_points,
                      markerfacecolor=ALIGNED_COLOUR, markeredgecolor=ALIGNED_COLOUR,
                      label=f"mapping >= 2 MiB starts on a 2 MiB boundary ({aligned})"),
               Line2D([], [], linewidth=0, marker="v", markersize=marker_points,
                      markerfacecolor="white", markeredgecolor=UNALIGNED_COLOUR,
                      markeredgewidth=1.5,
                      label=f"mapping >= 2 MiB starts off a boundary ({large - aligned})"),
               Line2D([], [], linewidth=0, marker="|", markersize=pt * 1.1, markeredgewidth=1.5,
                      markeredgecolor=START_COLOUR, label="a smaller mapping starts"),
               Line2D([], [], color=GRID_COLOUR, alpha=0.5, linestyle=GRID_STYLE, linewidth=0.8,
                      label="2 MiB boundary")]
    legend_columns = 4 if width_px >= 1200 else 2

    # Margins in pixels, from the text they hold (no automatic layout: it lets the legend and
    # the title overlap).
    def lines_px(text: str, points: float, spacing: float = 1.3) -> float:
        return (text.count("\n") + 1) * points * spacing * PX_PER_POINT

    pad = 0.8 * pt * PX_PER_POINT
    title_y = pad
    subtitle_y = title_y + lines_px(title, pt * 1.4) + 0.3 * pad
    legend_y = subtitle_y + lines_px(subtitle, pt * 0.95) + 0.3 * pad
    legend_rows = -(-len(handles) // legend_columns)
    top_px = legend_y + legend_rows * pt * 0.9 * 1.75 * PX_PER_POINT + pad
    figures_text = _fit(figures + ";  not all of it drawn", size_px, pt * 0.95)
    xlabel_px = lines_px("x", pt) + 1.8 * pt * 0.9 * PX_PER_POINT  # x label and tick labels
    bottom_px = pad + lines_px(figures_text, pt * 0.95) + 1.5 * pad + xlabel_px
    label_chars = len(f"{(int(layout.replay[-1, 1]) - layout.base) // MIB:,}") if not layout.empty else 1
    left_px = pad + 1.8 * pt * PX_PER_POINT + label_chars * 0.65 * pt * 0.8 * PX_PER_POINT + pad
    right_px = pad + 1.2 * pt * PX_PER_POINT  # room for half the last x tick label
    figure.text(0.5, 1 - title_y / height_px, title, ha="center", va="top", fontsize=pt * 1.4,
                fontweight="bold")
    figure.text(0.5, 1 - subtitle_y / height_px, subtitle, ha="center", va="top",
                fontsize=pt * 0.95, color="#333333")
    if layout.empty:
        figure.text(0.5, 0.5, "No replay mapping is live at this point.", ha="center",
                    fontsize=pt * 1.4)
        _save(figure, path)
        return None
    figure.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - legend_y / height_px),
                  ncol=legend_columns, frameon=False, fontsize=pt * 0.9)
    plot_width_px = width_px - left_px - right_px
    plot_height_px = height_px - top_px - bottom_px
    ax = figure.add_axes((left_px / width_px, bottom_px / height_px, plot_width_px / width_px,
                          plot_height_px / height_px))

    max_pmds = max(1, int(plot_width_px // MIN_PX_PER_PMD))
    max_rows = max(4, int(plot_height_px // max(MIN_PX_PER_ROW, pt * 1.3)))
    row_bytes, segments, every_segment, truncated = _layout_rows(layout, max_pmds, max_rows)
    base = layout.base
    row_mib = row_bytes / MIB
    pixel_mib = row_mib / plot_width_px

    replay = merge_ranges(layout.replay)
    other = subtract_ranges(layout.vmas, replay)
    bars = {name: _Bars() for name in ("free", "other", "replay", "huge")}
    plan = plan_png_rows(layout, row_bytes, segments, every_segment,
                         max_rows if truncated else None)
    large_start = layout.mapping_start[(layout.mapping_length >= PMD_SIZE) & layout.mapping_anon]
    starts = {"small": ([], []), "aligned": ([], []), "unaligned": ([], [])}
    y_labels: list[tuple[int, str]] = []
    breaks: list[tuple[int, str]] = []
    for y, row in enumerate(plan):
        if isinstance(row, str):
            breaks.append((y, row))
            continue
        low, high = row, row + row_bytes
        bars["free"].add(np.array([[low, high]]), low, y)
        for name, ranges in (("other", other), ("replay", replay), ("huge", layout.huge)):
            bars[name].add(clip_ranges(ranges, low, high), low, y, pixel_mib)
        row_large = large_start[(large_start >= low) & (large_start < high)]
        row_starts = layout.replay[(layout.replay[:, 0] >= low) & (layout.replay[:, 0] < high), 0]
        for kind, at in (("small", np.setdiff1d(row_starts, row_large)),
                         ("aligned", row_large[row_large % PMD_SIZE == 0]),
                         ("unaligned", row_large[row_large % PMD_SIZE != 0])):
            starts[kind][0].extend(((at - low) / MIB).tolist())
            starts[kind][1].extend([y] * len(at))
        y_labels.append((y, f"{(low - base) // MIB:,}"))
    rows_total = len(plan)

    # One collection of rectangles per kind, drawn in this order (thousands of bar patches
    # would take seconds); rows are y = 0, 1, ... from the top.
    heights = 0.78
    for z, (name, colour) in enumerate((("free", FREE_COLOUR), ("other", OTHER_COLOUR),
                                        ("replay", REPLAY_COLOUR), ("huge", HUGE_COLOUR))):
        ax.add_collection(bars[name].collection(heights, colour, zorder=1 + z * 0.1))
    small_x, small_y = starts["small"]
    ax.vlines(small_x, np.array(small_y) - heights / 2, np.array(small_y) + heights / 2,
              color=START_COLOUR, linewidth=1.0, zorder=2)
    # Large mappings' starts: triangles pointing at the start, above the row's bar.
    marker_area = marker_points ** 2
    for kind, face, edge in (("aligned", ALIGNED_COLOUR, ALIGNED_COLOUR),
                             ("unaligned", "white", UNALIGNED_COLOUR)):
        x, y_of = starts[kind]
        if x:
            ax.scatter(x, np.array(y_of) - heights / 2, s=marker_area, marker="v",
                       facecolors=face, edgecolors=edge, linewidths=1.5, zorder=3,
                       clip_on=False)
    for y_break, text in breaks:
        ax.text(row_mib / 2, y_break, text, ha="center", va="center", fontsize=pt * 0.9,
                style="italic", color="#555555")

    ax.set_xlim(0, row_mib)
    ax.set_ylim(rows_total - 0.5, -0.5)
    ax.xaxis.set_minor_locator(MultipleLocator(2))
    ax.xaxis.set_major_locator(MultipleLocator(_major_step(row_mib)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"+{v:.0f}"))
    # Boundaries dotted, starts solid: the two must not be mistaken for each other.
    ax.grid(which="minor", axis="x", color=GRID_COLOUR, alpha=0.35, linewidth=0.6,
            linestyle=GRID_STYLE)
    ax.grid(which="major", axis="x", color=GRID_COLOUR, alpha=0.5, linewidth=0.8,
            linestyle=GRID_STYLE)
    ax.set_axisbelow(False)
    ax.tick_params(axis="x", which="minor", length=3)
    step = max(1, int(np.ceil(len(y_labels) / 40)))
    ax.set_yticks([y for y, _ in y_labels[::step]], [t for _, t in y_labels[::step]])
    ax.tick_params(axis="y", length=0, labelsize=pt * 0.8)
    ax.tick_params(axis="x", labelsize=pt * 0.9)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel(_fit(f"MiB within the row (a grid line on every 2 MiB boundary; one row = "
                       f"{row_mib:.0f} MiB)", size_px, pt), fontsize=pt)
    ax.set_ylabel(f"row start, MiB from {base:#x}", fontsize=pt)

    if truncated:
        figures += ";  not all of it drawn"
    figure.text(0.5, pad / height_px, _fit(figures, size_px, pt * 0.95), ha="center",
                va="bottom", fontsize=pt * 0.95, color="#222222")
    _save(figure, path)
    return row_bytes


def plan_png_rows(layout: Layout, row_bytes: int, segments: list, every_segment: list,
                  max_rows: int | None = None) -> list:
    """The picture's rows from the top: an int (a row of address space starting there) or a str
    (a break line). Rows without replay memory are never drawn: a run of them becomes one break
    line saying how much address space and how many other VMAs it holds. ``max_rows`` (when the
    segments were cut to fit) bounds the rows of each segment."""
    replay = merge_ranges(layout.replay)
    plan: list = []

    def not_drawn(left_out) -> str:
        return (f"{plural(len(left_out), 'smaller segment')} not drawn "
                f"({fmt_bytes(sum(s.bytes for s in left_out))} of replay memory)")

    others = layout.vmas[~layout.vma_replay]

    def without_replay(low: int, high: int, within_segment: bool = False) -> str:
        # Between segments: the VMAs lying in the gap; inside one: those the rows cut through.
        count = (int(((others[:, 0] < high) & (others[:, 1] > low)).sum()) if within_segment
                 else other_vmas_between(layout, low, high))
        return f"~ {fmt_bytes(high - low)} without replay memory" + (
            f" ({plural(count, 'other VMA')})" if count else "") + " ~"

    below = [s for s in every_segment if s.end <= segments[0].start]
    if below:
        plan.append(f"~ below: {not_drawn(below)} ~")
    previous = None
    for segment in segments:
        if previous is not None:
            skipped = [s for s in every_segment if previous.end <= s.start < segment.start]
            if skipped:
                plan.append(f"~ {fmt_bytes(segment.start - previous.end)}: {not_drawn(skipped)} ~")
            else:
                plan.append(without_replay(previous.end, segment.start))
        rows = segment.rows(row_bytes)
        if max_rows is not None:
            rows = min(rows, max(1, max_rows - len(plan)))
        empty_from = None
        for r in range(rows + 1):
            low = segment.start + r * row_bytes
            if r < rows and not len(clip_ranges(replay, low, low + row_bytes)):
                empty_from = low if empty_from is None else empty_from
                continue
            if empty_from is not None:
                plan.append(without_replay(empty_from, low, within_segment=True))
                empty_from = None
            if r < rows:
                plan.append(low)
        previous = segment
    above = [s for s in every_segment if s.start >= segments[-1].end]
    if above:
        plan.append(f"~ above: {not_drawn(above)} ~")
    return plan


class _Bars:
    """Rectangles of one kind, in MiB from each row's start."""

    def __init__(self) -> None:
        self.left: list[float] = []
        self.width: list[float] = []
        self.y: list[int] = []

    def collection(self, height: float, colour: str, zorder: float):
        from matplotlib.collections import PolyCollection

        left, width = np.array(self.left).reshape(-1, 1), np.array(self.width).reshape(-1, 1)
        y = np.array(self.y, dtype=np.float64).reshape(-1, 1)
        xs = np.hstack([left, left + width, left + width, left])
        ys = np.hstack([y - height / 2, y - height / 2, y + height / 2, y + height / 2])
        return PolyCollection(np.stack([xs, ys], axis=2), facecolors=colour, linewidths=0,
                              zorder=zorder)

    def add(self, ranges: np.ndarray, row_start: int, y: int, min_width: float = 0.0) -> None:
        """``min_width`` (MiB): about a pixel, so that no mapping vanishes however small."""
        self.left.extend(((ranges[:, 0] - row_start) / MIB).tolist())
        self.width.extend(np.maximum((ranges[:, 1] - ranges[:, 0]) / MIB, min_width).tolist())
        self.y.extend([y] * len(ranges))


def _major_step(row_mib: float) -> int:
    """Labelled ticks: about eight per row, on a multiple of 2 MiB."""
    for step in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        if row_mib / step <= 8:
            return step
    return 2048


# ---------------------------------------------------------------------------------------------
# info --png


def anonymous_mmap_lengths(table) -> np.ndarray:
    """Page-rounded lengths of the trace's successful anonymous mmaps (as ``info`` counts them)."""
    codes = op_names(table)
    ok = (codes == OP_CODE["mmap"]) & (column_np(table, "errno") == 0)
    anon = (column_np(table, "flags") & MAP_ANONYMOUS).astype(bool) | (column_np(table, "fd", -1) < 0)
    return page_round(column_np(table, "length")[ok & anon])


def live_bytes_series(table) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since the first event, live anonymous bytes) after every mmap/munmap/mremap."""
    series: list[tuple[int, int]] = []
    walk_live_bytes(table, series)
    ts = column_np(table, "ts_ns").astype(np.int64)
    if not series:
        return np.zeros(0), np.zeros(0)
    rows, live = (np.array(v, dtype=np.float64) for v in zip(*series))
    seconds = (ts[rows.astype(np.int64)] - ts.min()) / 1e9
    return seconds, live


def plot_trace(table, summary: dict, path, title: str | None = None,
               size_px: tuple[int, int] = TRACE_SIZE_PX) -> None:
    """Two panels: the anonymous mmap length histogram (log-scale bins, 2 MiB marked) and live
    anonymous bytes over time."""
    figure = _figure(size_px)  # first: says how to install matplotlib when it is missing
    from matplotlib.ticker import NullFormatter

    name = Path(title).name if title else "trace"
    pt = _font_points(size_px, TRACE_SIZE_PX)
    meta = summary.get("metadata") or {}
    host = meta.get("host") if isinstance(meta.get("host"), dict) else {}
    figure.suptitle(_fit(f"{name}: {summary['events']:,} events, {summary['anon_mmaps']:,} "
                         f"anonymous mmaps, peak {fmt_bytes(summary['peak_live_bytes'])} live",
                         size_px, pt * 1.4), fontsize=pt * 1.4, fontweight="bold")
    recorded = f"source {meta.get('source', 'unknown')}"
    if host:
        recorded += f", recorded on Linux {host.get('kernel', '?')}, THP {describe_thp(host)}"
    figure.supxlabel(_fit(recorded, size_px, pt * 0.9), fontsize=pt * 0.9, color="#333333")
    sizes, live = figure.subplots(1, 2, width_ratios=[1, 1.15])
    for ax in (sizes, live):
        ax.tick_params(labelsize=pt * 0.9)

    # Panel 1: how big the anonymous mmaps are, split by what 6.7+ kernels do with them.
    lengths = anonymous_mmap_lengths(table).astype(np.float64)
    lengths = lengths[lengths > 0]
    sizes.set_title("anonymous mmap lengths", fontsize=pt * 1.1)
    if len(lengths):
        # Always show 1 MiB to 4 MiB, so the 2 MiB mark has context on both sides.
        low = min(np.floor(np.log2(lengths.min())), 20.0)
        high = max(np.ceil(np.log2(lengths.max()) + 0.5), 22.0)
        edges = 2.0 ** np.arange(low, high + 0.25, 0.5)  # half-octave bins; 2 MiB is an edge
        pmd = float(PMD_SIZE)
        multiple = (lengths >= pmd) & (np.mod(lengths, pmd) == 0)
        groups = [(lengths[lengths < pmd], "< 2 MiB (never aligned)", "#7f9fc4"),
                  (lengths[(lengths >= pmd) & ~multiple],
                   ">= 2 MiB, not a multiple (aligned by 6.7-6.11 only)", "#ef8636"),
                  (lengths[multiple], "exact multiples of 2 MiB (aligned by 6.7+)", "#3b75af")]
        counts, _, _ = sizes.hist([g[0] for g in groups], bins=edges, stacked=True,
                                  color=[g[2] for g in groups], label=[g[1] for g in groups],
                                  edgecolor="white", linewidth=0.5)
        totals = np.asarray(counts)[-1]  # stacked: the last row holds the bar heights
        # Thousands of small mmaps would flatten the few large ones the story is about.
        log_counts = totals.max() > 20 * totals[totals > 0].min()
        sizes.set_xscale("log", base=2)
        sizes.set_xlim(edges[0], edges[-1])
        octaves = np.arange(low, high + 1)
        every = max(1, int(np.ceil(len(octaves) / 10)))
        ticks = set((2.0 ** octaves[::every]).tolist())
        if every > 1:  # keep the 2 MiB label clear of crowded neighbours
            ticks -= {pmd / 2, pmd * 2}
        ticks = sorted(ticks | {pmd})
        sizes.set_xticks(ticks, [_size_label(t) for t in ticks])
        sizes.xaxis.set_minor_formatter(NullFormatter())
        for tick, label in zip(ticks, sizes.get_xticklabels()):
            if tick == pmd:
                label.set_color(MARK_COLOUR)
                label.set_fontweight("bold")
        sizes.axvline(pmd, color=MARK_COLOUR, linestyle="--", linewidth=1.2,
                      label="2 MiB (PMD size)")
        sizes.legend(fontsize=pt * 0.85, loc="upper left", framealpha=0.9, edgecolor="#dddddd")
        if log_counts:
            sizes.set_yscale("log")
            sizes.set_ylim(0.7, totals.max() * 40)  # room for the legend above the bars
        else:
            sizes.set_ylim(0, totals.max() * 1.45)
    else:
        sizes.text(0.5, 0.5, "no successful anonymous mmap", ha="center", fontsize=pt,
                   transform=sizes.transAxes)
    sizes.set_xlabel("length, page-rounded (log scale, two bins per doubling)", fontsize=pt * 0.95)
    sizes.set_ylabel("anonymous mmaps (count" + (", log scale)" if len(lengths) and log_counts
                                                  else ")"), fontsize=pt * 0.95)
    sizes.grid(axis="y", alpha=0.3)

    # Panel 2: live anonymous bytes after every mmap/munmap/mremap.
    seconds, live_bytes = live_bytes_series(table)
    live.set_title("live anonymous bytes over time", fontsize=pt * 1.1)
    if len(seconds):
        unit, scale = ("GiB", 1 << 30) if live_bytes.max() >= 4 << 30 else ("MiB", MIB)
        x = np.concatenate([[seconds[0]], seconds])
        y = np.concatenate([[0.0], live_bytes]) / scale
        live.step(x, y, where="post", color=REPLAY_COLOUR, linewidth=1.4)
        live.fill_between(x, y, step="post", color=REPLAY_COLOUR, alpha=0.2, linewidth=0)
        peak = int(np.argmax(live_bytes))
        live.plot([seconds[peak]], [live_bytes[peak] / scale], "o", color=MARK_COLOUR)
        event = summary.get("peak_live_event")
        live.annotate(f"peak {fmt_bytes(live_bytes[peak])}"
                      + (f" (event {event})" if event is not None else ""),
                      (seconds[peak], live_bytes[peak] / scale), xytext=(8, 6),
                      textcoords="offset points", color=MARK_COLOUR, fontsize=pt * 0.9)
        live.set_ylim(0, live_bytes.max() / scale * 1.12 or 1)
        live.set_ylabel(f"live anonymous memory ({unit})", fontsize=pt * 0.95)
    else:
        live.text(0.5, 0.5, "no successful mmap, munmap or mremap", ha="center", fontsize=pt,
                  transform=live.transAxes)
    live.set_xlabel("seconds since the first event", fontsize=pt * 0.95)
    live.grid(alpha=0.3)
    _save(figure, path)
