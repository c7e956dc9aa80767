"""info on the allocation level: calls, request sizes, peak live requested bytes, lifetimes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from traces import build_table
from traces.summary import format_summary, summarize

A, B, C, D, X = 0x1000, 0x2000, 0x3000, 0x4000, 0x9000


def allocation_trace(rows):
    """rows: (ts_ns, op, addr, length, new_addr, hint, errno)."""
    ts, op, addr, length, new_addr, hint, errno = map(list, zip(*rows))
    return build_table({"ts_ns": ts, "tid": [7] * len(rows), "op": op, "addr": addr,
                        "length": length, "new_addr": pa.array(new_addr, pa.uint64()),
                        "hint": pa.array(hint, pa.uint64()), "errno": errno})


def test_peak_requests_lifetimes_and_unknown_frees():
    table = allocation_trace([
        (0, "malloc", A, 100, None, None, 0),
        (1000, "malloc", B, 200, None, None, 0),
        (3000, "free", A, 0, None, None, 0),
        (4000, "realloc", B, 5000, C, None, 0),        # B ends, C begins
        (5000, "posix_memalign", 0, 1 << 30, None, 64, 12),  # failed: nothing allocated
        (10000, "free", C, 0, None, None, 0),
        (11000, "free", X, 0, None, None, 0),          # never allocated in the trace
        (12000, "aligned_alloc", D, 600 << 10, None, 4096, 0),  # never freed
    ])
    block = summarize(table)["allocations"]
    assert block["calls"] == 8 and block["failed"] == 1
    assert block["ops"]["free"] == 3 and block["ops"]["realloc"] == 1
    assert block["frees_of_unknown_pointers"] == 1
    assert block["requests"] == 4 and block["requested_bytes"] == 100 + 200 + 5000 + (600 << 10)
    assert block["request_histogram"]["64-512"] == {"count": 2, "bytes": 300}
    assert block["request_histogram"]["4K-32K"] == {"count": 1, "bytes": 5000}
    assert block["request_histogram"]["512K-1.5M"] == {"count": 1, "bytes": 600 << 10}
    assert block["peak_live_requested_bytes"] == 600 << 10
    assert block["peak_live_requested_event"] == 7
    assert block["end_live_requested_bytes"] == 600 << 10
    # A lived 3 us, B 3 us (until its realloc), C 6 us; D was never freed
    assert block["lifetime_histogram"]["1-10us"] == {"count": 3, "bytes": 100 + 200 + 5000}
    assert block["lifetime_histogram"]["never freed"] == {"count": 1, "bytes": 600 << 10}
    assert block["lifetime_ns"]["max"] == 6000
    text = format_summary(summarize(table), "t.arrow")
    assert "allocations  8 calls (malloc 2, free 3, realloc 1," in text
    assert "512K-1.5M" in text.split("request sizes")[1]


def test_a_trace_without_allocations_has_no_allocation_block():
    table = build_table({"ts_ns": [0], "tid": [1], "op": ["mmap"], "addr": [0x7f0000000000],
                         "length": [4096], "prot": [3], "flags": [0x22], "fd": [-1],
                         "errno": [0]})
    summary = summarize(table)
    assert "allocations" not in summary and "malloc" not in summary["ops"]


def test_synth_at_the_malloc_level_and_fit_it_back():
    """512 KiB-1.5 MiB buffers as malloc requests, 64 alive at a time: the fit recovers them."""
    from synth.fit import fit_trace
    from synth.generate import generate
    from synth.spec import Spec
    from traces.format import column_np, op_names
    from traces.schema import OPS

    spec = Spec(count=500, size="uniform:512K,1536K", level="malloc", live=64, seed=3)
    table = generate(spec)
    codes = op_names(table)
    assert set(OPS[c] for c in codes.tolist()) == {"malloc", "free"}
    sizes = column_np(table, "length")[codes == OPS.index("malloc")]
    assert len(sizes) == 500 and sizes.min() >= 512 << 10 and sizes.max() <= 1536 << 10
    block = summarize(table)["allocations"]
    assert block["request_histogram"]["512K-1.5M"]["count"] == 500
    assert block["frees_of_unknown_pointers"] == 0  # every free names a live pointer
    result = fit_trace(table, "buffers", level="malloc")
    assert result.spec.level == "malloc" and result.spec.count == 500
    assert result.spec.lifetime == "fifo"
    assert result.quality["peak_live_ratio"] == pytest.approx(1.0, abs=0.03)
    assert result.quality["ks_mmap_lengths"] < 0.05


def test_the_malloc_level_takes_no_mm_only_keys():
    from synth.spec import Spec, validate_spec
    from traces import MmreplayError

    with pytest.raises(MmreplayError, match="madvise = 'hugepage': the malloc level"):
        validate_spec(Spec(level="malloc", madvise="hugepage"))
