"""How much of each replay's THP is in thread stacks (docs/findings.md, "THP, corrected"): under
no-align (<= 6.6, where MAP_STACK did nothing) `--thp always` gives stacks huge pages; since
6.7.5 a MAP_STACK mapping is VM_NOHUGEPAGE. Reads which 2 MiB blocks are mapped huge at the peak
(PAGEMAP_SCAN, Linux 6.7+) in the replay's MAP_STACK mappings.

    python docs/findings-data/stacks.py traces/data/bert-torch.arrow traces/data/bert-onnxruntime.arrow
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from replay.running.config import ReplayConfig  # noqa: E402
from replay.running.layout import capture_layout  # noqa: E402
from traces import read_trace  # noqa: E402
from traces.format import column_np, op_names  # noqa: E402
from traces.schema import MAP, OP_CODE  # noqa: E402

MIB = 1 << 20


def stack_lengths(path: str) -> set[int]:
    table = read_trace(path)
    stack = (op_names(table) == OP_CODE["mmap"]) & (column_np(table, "flags") & MAP["MAP_STACK"] != 0)
    return set(column_np(table, "length")[stack].tolist())


def main(paths: list[str]) -> None:
    for path in paths:
        lengths = stack_lengths(path)
        for policy in ("no-align", "align-ge-pmd", "align-pmd-multiple"):
            layout = capture_layout(path, ReplayConfig(policy=policy, thp="always"), at="peak")
            if layout.huge_source != "pagemap":
                sys.exit("needs PAGEMAP_SCAN (Linux 6.7+) to see which blocks are huge")
            huge = 0
            for start, length in zip(layout.mapping_start.tolist(), layout.mapping_length.tolist()):
                if length in lengths:
                    low = np.maximum(layout.huge[:, 0], start)
                    high = np.minimum(layout.huge[:, 1], start + length)
                    huge += int(np.maximum(high - low, 0).sum())
            print(f"{Path(path).name} --policy {policy} --thp always: huge pages in thread stacks "
                  f"(mappings of a MAP_STACK length) at the peak: {huge / MIB:.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1:])
