"""PNG pictures (`layout --png`, `info --png`): real images read back, of the size asked for,
coloured by what the kernel reported."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from processes import PATIENCE_S
from replay.running.config import ReplayConfig
from replay.running.layout import capture_layout
from replay.reporters.pictures import (ALIGNED_COLOUR, HUGE_COLOUR, LAYOUT_SIZE_PX, MARK_COLOUR,
                             REPLAY_COLOUR, UNALIGNED_COLOUR,
                             TRACE_SIZE_PX, live_bytes_series, plot_layout, plot_trace)
from strategies import mmap, munmap, table_from_rows
from tracegen import buffers_trace, random_trace
from traces import MmreplayError, new_metadata, read_trace, write_trace
from traces.host import thp_settings
from traces.summary import summarize

mpimg = pytest.importorskip("matplotlib.image")

KIB, MIB = 1 << 10, 1 << 20
COUNT = 16


def read_png(path) -> np.ndarray:
    """(height, width, channels) floats in [0, 1]."""
    return mpimg.imread(str(path))


def pixels_of(image: np.ndarray, colour: str) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image[:, :, :3] - rgb).max(axis=2) < 0.02).sum())


@pytest.fixture(scope="module")
def buffers_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pictures") / "buffers.arrow"
    write_trace(buffers_trace(COUNT, 4632 * KIB), path, new_metadata("test"))
    return path


@pytest.fixture(scope="module")
def thp_layout(buffers_path):
    if thp_settings().get("enabled") not in ("always", "madvise"):
        pytest.skip("THP is disabled on this machine")
    return capture_layout(str(buffers_path), ReplayConfig(policy="align-ge-pmd", thp="always"))


@pytest.fixture(scope="module")
def small_pages_layout(buffers_path):
    return capture_layout(str(buffers_path), ReplayConfig(policy="align-ge-pmd", thp="never"))


@pytest.mark.parametrize("size", [LAYOUT_SIZE_PX, (1234, 567), (640, 480)])
def test_layout_png_has_the_size_asked_for(small_pages_layout, tmp_path, size):
    path = tmp_path / "layout.png"
    plot_layout(small_pages_layout, path, size_px=size)
    image = read_png(path)
    assert (image.shape[1], image.shape[0]) == size


def test_layout_png_colours_follow_the_kernel(thp_layout, small_pages_layout, tmp_path):
    assert thp_layout.metrics["anon_huge_bytes"] > 0
    assert small_pages_layout.metrics["anon_huge_bytes"] == 0
    plot_layout(thp_layout, tmp_path / "thp.png")
    plot_layout(small_pages_layout, tmp_path / "small.png")
    thp, small = read_png(tmp_path / "thp.png"), read_png(tmp_path / "small.png")
    assert pixels_of(thp, HUGE_COLOUR) > 10_000     # the huge-page blocks
    assert pixels_of(small, HUGE_COLOUR) < 500      # only the legend's swatch
    assert pixels_of(small, REPLAY_COLOUR) > 10_000
    # Most replay memory is THP-backed in one and none in the other.
    assert pixels_of(thp, HUGE_COLOUR) > pixels_of(thp, REPLAY_COLOUR)


def test_empty_layout_png(buffers_path, tmp_path):
    layout = capture_layout(str(buffers_path), ReplayConfig(), at="end")
    assert layout.empty
    plot_layout(layout, tmp_path / "empty.png", size_px=(800, 400))
    assert read_png(tmp_path / "empty.png").shape[:2] == (400, 800)


@pytest.mark.parametrize("size", [TRACE_SIZE_PX, (999, 601)])
def test_trace_png_has_the_size_asked_for(buffers_path, tmp_path, size):
    table = read_trace(buffers_path)
    plot_trace(table, summarize(table), tmp_path / "trace.png", title=str(buffers_path),
               size_px=size)
    image = read_png(tmp_path / "trace.png")
    assert (image.shape[1], image.shape[0]) == size
    assert pixels_of(image, MARK_COLOUR) > 50  # the 2 MiB line and the peak


@pytest.mark.parametrize("rows", [
    [],
    [munmap(0x7F00_0000_0000, 4096)],
    [mmap(0, 8 * MIB, errno=12)],
    [mmap(0x7F00_0000_0000, 3 * 1024 * MIB), munmap(0x7F00_0000_0000, 3 * 1024 * MIB)],
], ids=["no events", "no mmap", "failed mmap", "one 3 GiB mmap"])
def test_trace_png_of_odd_traces(tmp_path, rows):
    table = table_from_rows(rows)
    plot_trace(table, summarize(table), tmp_path / "odd.png", title="odd.arrow")
    assert read_png(tmp_path / "odd.png").shape[:2] == TRACE_SIZE_PX[::-1]


def test_live_bytes_series_follows_the_trace():
    table = random_trace(7, 200)
    seconds, live = live_bytes_series(table)
    summary = summarize(table)
    assert live.max() == summary["peak_live_bytes"]
    assert live[-1] == summary["end_live_bytes"]
    assert (np.diff(seconds) >= 0).all() and seconds[0] >= 0


def test_bad_png_size_is_refused(small_pages_layout, tmp_path):
    with pytest.raises(MmreplayError, match="PNG size 10x10"):
        plot_layout(small_pages_layout, tmp_path / "tiny.png", size_px=(10, 10))
    assert not (tmp_path / "tiny.png").exists()


# ---------------------------------------------------------------------------------------------
# Through the CLI.


def test_cli_info_png(run_cli, buffers_path, tmp_path):
    png = tmp_path / "info.png"
    result = run_cli("info", buffers_path, "--png", png)
    assert result.exit_code == 0, result.output
    assert read_png(png).shape[:2] == TRACE_SIZE_PX[::-1]


def test_cli_layout_png(run_cli, buffers_path, tmp_path):
    png = tmp_path / "layout.png"
    result = run_cli("layout", buffers_path, "--policy", "align-pmd-multiple", "--png", png)
    assert result.exit_code == 0, result.output
    assert read_png(png).shape[:2] == LAYOUT_SIZE_PX[::-1]
    assert f"wrote {png}" in result.stderr


@pytest.mark.parametrize("command", ["layout", "info"])
def test_missing_matplotlib_is_one_line(buffers_path, tmp_path, command):
    """A Python where matplotlib cannot be imported (sys.modules entry None blocks it)."""
    png = tmp_path / "x.png"
    code = ("import sys; sys.modules['matplotlib'] = None; from replay.cli import main; "
            f"sys.argv = ['mmreplay', {command!r}, {str(buffers_path)!r}, '--png', {str(png)!r}];"
            " main()")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PATIENCE_S)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "pip install '.[plot]'" in lines[0] and "mmreplay[" not in lines[0], done.stderr
    assert not png.exists()


# ---------------------------------------------------------------------------------------------
# What a reader must see without reading the footer (issue 14 item 11).


def test_aligned_and_unaligned_starts_are_told_apart_at_a_glance(tmp_path):
    """Starts of mappings >= 2 MiB on a 2 MiB boundary are filled triangles, off it hollow red
    ones; neither looks like the (dotted) 2 MiB grid. The same eight 4 MiB mappings, aligned,
    then moved 512 KiB off the boundary."""
    from test_layout import made_up_layout

    a = 0x7F00_0000_0000
    pictures = {}
    for name, shift in (("aligned", 0), ("unaligned", 512 * KIB)):
        layout = made_up_layout([(a + shift + i * 6 * MIB, a + shift + i * 6 * MIB + 4 * MIB)
                                 for i in range(8)])
        assert layout.large_mappings() == (8, 8 if shift == 0 else 0)
        plot_layout(layout, tmp_path / f"{name}.png")
        pictures[name] = read_png(tmp_path / f"{name}.png")
    aligned, unaligned = pictures["aligned"], pictures["unaligned"]
    # Eight markers each (the legend's swatches are in both pictures).
    assert pixels_of(aligned, ALIGNED_COLOUR) - pixels_of(unaligned, ALIGNED_COLOUR) > 8 * 20
    assert pixels_of(unaligned, UNALIGNED_COLOUR) - pixels_of(aligned, UNALIGNED_COLOUR) > 8 * 10


def test_rows_without_replay_memory_are_one_break_line(tmp_path):
    """Other memory of the process between two replay mappings (closer than a segment break)
    used to fill whole grey rows; such rows are now one line saying what they hold."""
    from test_layout import made_up_layout

    from replay.reporters.layout_geometry import plan_segments
    from replay.reporters.layout_text import ascii_row_bytes
    from replay.reporters.pictures import OTHER_COLOUR, plan_png_rows

    a = 0x7F00_0000_0000
    layout = made_up_layout([(a, a + 6 * MIB), (a + 26 * MIB, a + 32 * MIB)],
                            others=[(a + 6 * MIB, a + 26 * MIB)])
    row_bytes = ascii_row_bytes(layout)
    assert row_bytes == 8 * MIB  # two whole rows [a+8M, a+24M) hold other memory only
    segments = plan_segments(layout.replay, row_bytes)
    assert len(segments) == 1
    plan = plan_png_rows(layout, row_bytes, segments, segments)
    assert plan == [a, "~ 16.00 MiB without replay memory (1 other VMA) ~", a + 24 * MIB]
    plot_layout(layout, tmp_path / "x.png")
    image = read_png(tmp_path / "x.png")
    rgb = np.array([int(OTHER_COLOUR[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    grey = (np.abs(image[:, :, :3] - rgb).max(axis=2) < 0.02).mean(axis=1)
    assert grey.max() < 0.5  # no pixel row grey from edge to edge
