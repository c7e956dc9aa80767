"""`--thp always` respects what enabled=always respects (issue 19, item 3), measured on the
replay's own mappings with PAGEMAP_SCAN (which 2 MiB blocks the kernel mapped huge).

enabled=always gives no huge pages to a range advised MADV_NOHUGEPAGE, nor (since 6.7.5) to a
MAP_STACK mapping; an mremap keeps the VMA's advice. The replay emulates enabled=always on a
`madvise` host by advising new mappings MADV_HUGEPAGE, so it must leave those out, and give the
advice to the mapping that emulates an mremap as well.
"""

from __future__ import annotations

import numpy as np
import pytest

from replay.running.config import ReplayConfig
from replay.running.layout import capture_layout
from strategies import madvise, mmap, mremap, table_from_rows
from traces import write_trace
from traces.schema import MAP, MAP_ANONYMOUS, MAP_PRIVATE

MIB = 1 << 20
MAP_STACK = MAP["MAP_STACK"]
A, B, C, D, E = (0x7F00_0000_0000 + n * (64 * MIB) for n in range(5))
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15


def huge_bytes_by_mapping(layout) -> dict[int, int]:
    """Bytes of each live replay mapping (by its length, unique in these traces) mapped huge."""
    out = {}
    for start, length in zip(layout.mapping_start.tolist(), layout.mapping_length.tolist()):
        lo = np.maximum(layout.huge[:, 0], start)
        hi = np.minimum(layout.huge[:, 1], start + length)
        out[length] = int(np.maximum(hi - lo, 0).sum())
    return out


@pytest.fixture
def capture(tmp_path):
    def run(rows, thp, policy="kernel"):
        path = write_trace(table_from_rows(rows), tmp_path / f"t-{thp}-{policy}.arrow")
        layout = capture_layout(str(path), ReplayConfig(thp=thp, policy=policy), at="end")
        if layout.huge_source != "pagemap":
            pytest.skip("PAGEMAP_SCAN (Linux 6.7+) is needed to see which blocks are huge")
        return huge_bytes_by_mapping(layout)
    return run


def test_always_leaves_nohugepage_and_stacks_alone(capture):
    rows = [mmap(A, 8 * MIB),                                      # plain: huge under always
            mmap(B, 10 * MIB), madvise(B, 10 * MIB, MADV_NOHUGEPAGE),
            mmap(C, 12 * MIB, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK),
            mmap(D, 14 * MIB), madvise(D, 14 * MIB, MADV_HUGEPAGE)]  # the trace's own advice
    always = capture(rows, "always")
    assert always[8 * MIB] >= 2 * MIB          # whole aligned blocks inside it are huge
    assert always[10 * MIB] == 0               # MADV_NOHUGEPAGE kept
    assert always[12 * MIB] == 0               # MAP_STACK: VM_NOHUGEPAGE
    assert always[14 * MIB] >= 2 * MIB
    recorded = capture(rows, "as-recorded")    # a madvise host: only the advised one
    assert recorded[8 * MIB] == recorded[10 * MIB] == recorded[12 * MIB] == 0
    assert recorded[14 * MIB] >= 2 * MIB


def test_always_gives_stacks_huge_pages_as_kernels_before_6_7_did(capture):
    # Before 6.7.5 MAP_STACK was a no-op: a 6.1 kernel's enabled=always gives stacks THP.
    rows = [mmap(C, 12 * MIB, flags=MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK),
            mmap(B, 10 * MIB), madvise(B, 10 * MIB, MADV_NOHUGEPAGE)]
    always = capture(rows, "always", policy="no-align")
    assert always[12 * MIB] >= 2 * MIB
    assert always[10 * MIB] == 0


def test_an_emulated_mremap_gets_the_advice_and_keeps_the_traces(capture):
    # Two neighbouring mappings of the trace (merged there) are remapped as one: the replay made
    # them separately, so it emulates the mremap with a new mapping.
    rows = [mmap(A, 2 * MIB), mmap(A + 2 * MIB, 2 * MIB), mremap(A, 4 * MIB, C, 16 * MIB),
            mmap(B, 4 * MIB), mmap(B + 4 * MIB, 4 * MIB), madvise(B, 8 * MIB, MADV_HUGEPAGE),
            mremap(B, 8 * MIB, D, 18 * MIB),
            mmap(E, 4 * MIB), mmap(E + 4 * MIB, 4 * MIB), madvise(E, 8 * MIB, MADV_NOHUGEPAGE),
            mremap(E, 8 * MIB, E + 32 * MIB, 20 * MIB)]
    always = capture(rows, "always")
    assert always[16 * MIB] >= 2 * MIB         # the run's advice, as on a fresh mapping
    assert always[18 * MIB] >= 2 * MIB
    assert always[20 * MIB] == 0               # the trace's MADV_NOHUGEPAGE moved with it
    recorded = capture(rows, "as-recorded")
    assert recorded[16 * MIB] == 0
    assert recorded[18 * MIB] >= 2 * MIB       # the trace's MADV_HUGEPAGE moved with it
    assert recorded[20 * MIB] == 0
