"""Write the small synthetic trace bundled as traces/data/buffers-4632k.arrow.

64 mappings of 4632 KiB (the SPEC cactusBSSN size that regressed under 6.7's THP alignment) are
created one after another, all alive together, then unmapped in creation order. The addresses
follow top-down placement (each mapping directly below the previous one), as Linux <= 6.6 and
6.12+ place them. `mmreplay synth --preset cactusbssn` makes bigger ones.
"""

import sys

import numpy as np

from traces import build_table, new_metadata, write_trace

KIB = 1024
COUNT, LENGTH = 64, 4632 * KIB
TOP = 0x7F0000000000

addresses = TOP - LENGTH * np.arange(1, COUNT + 1, dtype=np.uint64)
n = 2 * COUNT
table = build_table(
    {
        "ts_ns": np.arange(n, dtype=np.int64) * 10_000,
        "tid": np.ones(n, np.int32),
        "op": ["mmap"] * COUNT + ["munmap"] * COUNT,
        "addr": np.concatenate([addresses, addresses]),
        "length": np.full(n, LENGTH, np.uint64),
        "hint": [0] * COUNT + [None] * COUNT,
        "prot": [3] * COUNT + [None] * COUNT,
        "flags": [0x22] * COUNT + [None] * COUNT,
        "fd": [-1] * COUNT + [None] * COUNT,
        "offset": [0] * COUNT + [None] * COUNT,
        "errno": np.zeros(n, np.int32),
    }
)
out = sys.argv[1] if len(sys.argv) > 1 else "traces/data/buffers-4632k.arrow"
write_trace(table, out, new_metadata("synth", command=["python", "examples/make_buffers_trace.py"],
                                     description="64 x 4632 KiB anonymous buffers, alive together"))
print(out)
