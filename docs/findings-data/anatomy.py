"""Where the memory of the bundled BERT traces comes from: the anonymous mmaps by kind, the glibc
arenas and the brk heap (docs/findings.md, "What the mappings are"; output in anatomy.txt).

    python docs/findings-data/anatomy.py traces/data/bert-torch.arrow traces/data/bert-onnxruntime.arrow

Kinds, by what made the call (the strace logs in tests/data/strace/ show each in context):
- 16 KiB: CPython 3.11's frame data-stack chunks (_PyObject_VirtualAlloc, DATA_STACK_CHUNK_SIZE);
- 1 MiB: CPython's object-allocator arenas (obmalloc: ARENA_BITS 20 on 64-bit builds);
- 64 and 128 MiB PROT_NONE: glibc reserving a heap for a thread's arena (128 MiB mapped, trimmed
  to an aligned 64 MiB), which mprotect makes usable as the arena grows;
- >= 32 MiB read-write: glibc mmapped chunks (at and above 32 MiB, DEFAULT_MMAP_THRESHOLD_MAX on
  64-bit, malloc always uses mmap);
- the rest: other read-write mmaps below 32 MiB (malloc'd chunks while the dynamic mmap
  threshold was still below their size, and libraries' own).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from traces import read_trace  # noqa: E402
from traces.format import column_np, op_names  # noqa: E402
from traces.schema import MAP_ANONYMOUS, OP_CODE  # noqa: E402
from traces.summary import heap_summary  # noqa: E402
from traces.units import fmt_bytes  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20


def anatomy(path: str) -> str:
    table = read_trace(path)
    codes = op_names(table)
    ok = column_np(table, "errno") == 0
    addr, length = column_np(table, "addr"), column_np(table, "length")
    prot, flags = column_np(table, "prot"), column_np(table, "flags")
    tid, fd = column_np(table, "tid"), column_np(table, "fd", -1)
    anon = ok & (codes == OP_CODE["mmap"]) & ((flags & MAP_ANONYMOUS).astype(bool) | (fd < 0))
    main_tid = tid[0]
    unmapped = set(zip(addr[ok & (codes == OP_CODE["munmap"])].tolist(),
                       length[ok & (codes == OP_CODE["munmap"])].tolist()))
    kinds = [
        ("16 KiB read-write (CPython data-stack chunks)", anon & (length == 16 * KIB) & (prot == 3)),
        ("1 MiB read-write (CPython obmalloc arenas)", anon & (length == MIB) & (prot == 3)),
        ("64/128 MiB PROT_NONE (glibc thread-arena heaps)",
         anon & np.isin(length, [64 * MIB, 128 * MIB]) & (prot == 0)),
        (">= 32 MiB read-write (glibc mmapped chunks)", anon & (length >= 32 * MIB) & (prot == 3)),
    ]
    rest = anon.copy()
    for _, chosen in kinds:
        rest &= ~chosen
    kinds.append(("other anonymous mmaps", rest))
    lines = [f"{Path(path).name}: {int(anon.sum())} successful anonymous mmaps",
             f"  {'kind':<48} {'mmaps':>6} {'bytes':>11} {'unmapped':>9} {'main thread':>12}"]
    for label, chosen in kinds:
        rows = np.flatnonzero(chosen)
        gone = sum((int(addr[r]), int(length[r])) in unmapped for r in rows)
        lines.append(f"  {label:<48} {len(rows):>6} {fmt_bytes(int(length[rows].sum())):>11} "
                     f"{gone:>9} {int((tid[rows] == main_tid).sum()):>12}")
    mid = np.flatnonzero(anon & (length >= 512 * KIB) & (length < 1536 * KIB))
    lines.append(f"  of the {len(mid)} mmaps of 512 KiB-1.5 MiB, "
                 f"{int((length[mid] == MIB).sum())} are exactly 1,048,576 bytes")
    grow = ok & (codes == OP_CODE["mprotect"]) & (prot == 3)
    lines.append(f"  mprotect to read-write (arenas growing into their heaps): {int(grow.sum())} "
                 f"calls, {fmt_bytes(int(length[grow].sum()))}")
    heap = heap_summary(table)
    lines.append(f"  brk heap (main arena): {heap['brk_calls']} brk calls, at most "
                 f"{fmt_bytes(heap['peak_bytes'])} above the first break; grew {heap['grows']} "
                 f"times ({fmt_bytes(heap['grown_bytes'])} in all), shrank {heap['shrinks']} "
                 f"times ({fmt_bytes(heap['shrunk_bytes'])})")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(anatomy(path) for path in sys.argv[1:]))
