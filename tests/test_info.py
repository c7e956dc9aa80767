"""summarize()/format_summary(): exact, hand-computed figures on small hand-made traces."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import (GIB, KIB, MIB, brk, madvise, mmap, mmap_fixed, mprotect,
                        mremap, munmap, table_from_rows)
from traces import new_metadata, read_trace
from traces.schema import (MAP_ANONYMOUS, MAP_SHARED, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE,
                           MM_OPS, OPS)
from traces.summary import SIZE_BUCKETS, format_summary, summarize

A, B, C, D, E, F = (0x7F00_0000_0000 + i * (1 << 32) for i in range(6))
BUCKETS = [label for label, _ in SIZE_BUCKETS]
ZERO_HISTOGRAM = {label: {"count": 0, "bytes": 0} for label in BUCKETS}
STABLE_KEYS = {"events", "ops", "failed", "threads", "duration_ns", "peak_live_bytes",
               "peak_live_event", "anon_mmaps", "file_mmaps", "pmd_multiple_mmaps",
               "pmd_unaligned_large_mmaps", "size_histogram", "partial_munmaps", "metadata"}


def histogram(**cells) -> dict:
    """Expected histogram: zero everywhere except the given (count, bytes) cells."""
    names = {"lt128k": "<128K", "k128_512": "128K-512K", "k512_1m5": "512K-1.5M",
             "m1_5_2": "1.5M-2M", "m2_4": "2M-4M", "m4_16": "4M-16M", "ge16m": ">=16M"}
    expected = {label: dict(cell) for label, cell in ZERO_HISTOGRAM.items()}
    for key, (count, size) in cells.items():
        expected[names[key]] = {"count": count, "bytes": size}
    return expected


def test_counts_failures_threads_and_duration():
    rows = [
        mmap(A, 1 * MIB, tid=10, ts_ns=1000),
        mmap(F, 64 * KIB, anon=False, tid=10, ts_ns=2000),
        mmap(0, 8 * MIB, errno=12, tid=11, ts_ns=1500),  # ENOMEM: counted as failed, maps nothing
        munmap(F, 64 * KIB, tid=11, ts_ns=3000),
        madvise(A, 1 * MIB, 14, tid=12, ts_ns=500),
        mprotect(A, 4 * KIB, 0, tid=10, ts_ns=9000),
        brk(0, 0x5555_5555_9000, tid=12, ts_ns=2500),
        munmap(0x1000, 4 * KIB, errno=22, tid=12, ts_ns=7500),
        mremap(A, 1 * MIB, C, 2 * MIB, tid=11, ts_ns=4000),  # moves and grows
    ]
    summary = summarize(table_from_rows(rows))
    assert summary["events"] == 9
    assert summary["ops"] == {"mmap": 3, "munmap": 2, "mremap": 1, "madvise": 1, "mprotect": 1,
                              "brk": 1}
    assert summary["failed"] == 2
    assert summary["failed_by_op"] == {"mmap": 1, "munmap": 1}
    assert summary["threads"] == 3
    assert summary["duration_ns"] == 9000 - 500
    assert (summary["anon_mmaps"], summary["file_mmaps"]) == (1, 1)
    assert (summary["peak_live_bytes"], summary["peak_live_event"]) == (2 * MIB, 8)
    assert summary["end_live_bytes"] == 2 * MIB
    assert summary["partial_munmaps"] == 0
    assert (summary["pmd_multiple_mmaps"], summary["pmd_unaligned_large_mmaps"]) == (0, 0)
    assert summary["size_histogram"] == histogram(k512_1m5=(1, 1 * MIB))
    assert STABLE_KEYS <= set(summary)


def test_size_histogram_bucket_boundaries_and_pmd_counts():
    lengths = [
        4 * KIB, 124 * KIB,                           # <128K
        128 * KIB, 508 * KIB, 128 * KIB - 1,          # 128K-512K (the last rounds up to 128K)
        512 * KIB, 1532 * KIB,                        # 512K-1.5M
        1536 * KIB, 2044 * KIB,                       # 1.5M-2M
        2 * MIB, 4092 * KIB, 2 * MIB - 100,           # 2M-4M (2M - 100 rounds up to 2M)
        4 * MIB, 16380 * KIB, 4632 * KIB,             # 4M-16M
        16 * MIB, 1 * GIB,                            # >=16M
    ]
    rows = [mmap(0x5000_0000_0000 + i * 2 * GIB, length) for i, length in enumerate(lengths)]
    rows.insert(5, mmap(E, 2 * MIB, anon=False))             # file-backed: not in the histogram
    rows.insert(9, mmap(0, 2 * MIB, errno=12))               # failed: maps nothing
    rows.append(mmap(F, 6 * MIB, flags=MAP_SHARED | MAP_ANONYMOUS))  # shared anonymous is anonymous
    summary = summarize(table_from_rows(rows))
    assert summary["size_histogram"] == histogram(
        lt128k=(2, 128 * KIB), k128_512=(3, 764 * KIB), k512_1m5=(2, 2044 * KIB),
        m1_5_2=(2, 3580 * KIB), m2_4=(3, 8188 * KIB), m4_16=(4, 31252 * KIB),
        ge16m=(2, 16 * MIB + GIB))
    assert (summary["anon_mmaps"], summary["file_mmaps"], summary["failed"]) == (18, 1, 1)
    # 2M, 2M - 100, 4M, 6M, 16M and 1G are whole multiples of 2 MiB once page-rounded ...
    assert summary["pmd_multiple_mmaps"] == 6
    # ... 4092K, 16380K and 4632K are >= 2 MiB and not (the ones kernels 6.7-6.11 aligned).
    assert summary["pmd_unaligned_large_mmaps"] == 3
    assert summary["peak_live_bytes"] == 1110916 * KIB  # everything stays mapped
    assert summary["peak_live_event"] == len(rows) - 1


def test_partial_munmaps():
    rows = [
        mmap(A, 4 * MIB),                   # 0
        mmap(B, 1 * MIB),                   # 1
        mmap(B + 1 * MIB, 1 * MIB),         # 2  adjacent to 1
        mmap(D, 2 * MIB),                   # 3  peak: 8 MiB anonymous
        mmap(E, 1 * MIB, anon=False),       # 4
        munmap(A + 1 * MIB, 1 * MIB),       # 5  cuts the middle of 0: partial
        munmap(B, 2 * MIB),                 # 6  covers 1 and 2 whole: not partial
        munmap(D + 1 * MIB, 1 * MIB),       # 7  cuts the end of 3: partial
        munmap(D + 1 * MIB, 1 * MIB),       # 8  nothing left there: not partial
        munmap(E, 512 * KIB),               # 9  head of a file mapping: partial
        munmap(A, 1 * MIB, errno=22),       # 10 failed: not counted
        munmap(A, 1 * MIB),                 # 11 head of 0, whose tail stays alive: partial
        munmap(A + 2 * MIB, 2 * MIB),       # 12 the rest of 0: not partial
        munmap(F, 8 * MIB),                 # 13 never mapped: not partial
        munmap(D - 4 * KIB, 1 * MIB + 8 * KIB),  # 14 what is left of 3, and the holes around it
    ]
    summary = summarize(table_from_rows(rows))
    assert summary["partial_munmaps"] == 4
    assert (summary["peak_live_bytes"], summary["peak_live_event"]) == (8 * MIB, 3)
    assert summary["end_live_bytes"] == 0
    assert summary["ops"]["munmap"] == 10 and summary["failed"] == 1


def test_mremap_grow_move_shrink_and_dontunmap():
    rows = [
        mmap(A, 1 * MIB),                                            # 0  1M
        mremap(A, 1 * MIB, A, 3 * MIB),                              # 1  grows in place: 3M
        mremap(A, 3 * MIB, B, 3 * MIB, flags=MREMAP_MAYMOVE | MREMAP_FIXED, hint=B),  # 2 moves: 3M
        mremap(B, 3 * MIB, B, 1 * MIB, flags=0),                     # 3  shrinks: 1M
        mmap(C, 2 * MIB),                                            # 4  3M
        mremap(C, 2 * MIB, D, 2 * MIB, flags=MREMAP_MAYMOVE | MREMAP_DONTUNMAP),  # 5 old stays: 5M
        mremap(B, 1 * MIB, 0, 100 * MIB, errno=12),                  # 6  failed: nothing changes
        mmap(E, 1 * MIB, anon=False),                                # 7  file-backed
        mremap(E, 1 * MIB, F, 4 * MIB),                              # 8  stays file-backed: 5M
        munmap(B, 1 * MIB),                                          # 9  4M
        mmap(B, 1 * MIB),                                            # 10 5M again, not a new peak
        munmap(A, 3 * MIB),                                          # 11 moved away at 2: no-op
        brk(0, 0x5555_5557_a000),                                    # 12 the heap is not counted
        brk(0x5555_5600_0000, 0x5555_5600_0000),                     # 13
    ]
    summary = summarize(table_from_rows(rows))
    assert (summary["peak_live_bytes"], summary["peak_live_event"]) == (5 * MIB, 5)
    assert summary["end_live_bytes"] == 5 * MIB
    assert summary["partial_munmaps"] == 0
    assert summary["ops"] == {"mmap": 4, "munmap": 2, "mremap": 6, "madvise": 0, "mprotect": 0,
                              "brk": 2}
    assert (summary["anon_mmaps"], summary["file_mmaps"], summary["failed"]) == (3, 1, 1)


def test_map_fixed_over_a_live_mapping_replaces_it():
    rows = [
        mmap(A, 4 * MIB),                               # 0  4M
        mmap_fixed(A + 1 * MIB, 1 * MIB),               # 1  replaces part of 0: still 4M
        mmap_fixed(A + 2 * MIB, 1 * MIB, anon=False),   # 2  a file over anonymous memory: 3M
        munmap(A + 1 * MIB, 1 * MIB),                   # 3  all of 1 (0's pieces untouched): 2M
        mmap_fixed(A + 1 * MIB, 2 * MIB),               # 4  over the hole and the file: 4M
        munmap(A, 4 * MIB),                             # 5  everything, each mapping whole
    ]
    summary = summarize(table_from_rows(rows))
    assert (summary["peak_live_bytes"], summary["peak_live_event"]) == (4 * MIB, 0)
    assert summary["end_live_bytes"] == 0
    assert summary["partial_munmaps"] == 0
    assert (summary["anon_mmaps"], summary["file_mmaps"]) == (3, 1)
    assert (summary["pmd_multiple_mmaps"], summary["pmd_unaligned_large_mmaps"]) == (2, 0)
    assert summary["size_histogram"] == histogram(k512_1m5=(1, 1 * MIB), m2_4=(1, 2 * MIB),
                                                  m4_16=(1, 4 * MIB))


def test_an_empty_trace():
    summary = summarize(table_from_rows([]))
    assert summary["events"] == summary["failed"] == summary["threads"] == 0
    assert summary["ops"] == dict.fromkeys(MM_OPS, 0)
    assert (summary["peak_live_bytes"], summary["peak_live_event"]) == (0, None)
    assert summary["duration_ns"] == 0 and summary["size_histogram"] == ZERO_HISTOGRAM
    assert "events       0 (none)" in format_summary(summary)


def test_a_zero_length_mmap_is_no_pmd_multiple():
    summary = summarize(table_from_rows([mmap(A, 0)]))
    assert summary["pmd_multiple_mmaps"] == 0 and summary["pmd_unaligned_large_mmaps"] == 0
    assert summary["size_histogram"] == histogram(lt128k=(1, 0))


def test_the_bundled_trace(bundled_trace):
    """64 x 4632 KiB buffers alive together: the cactusBSSN shape from the LKML thread."""
    summary = summarize(read_trace(bundled_trace))
    assert summary["ops"]["mmap"] == summary["anon_mmaps"] == 64
    assert summary["pmd_unaligned_large_mmaps"] == 64 and summary["pmd_multiple_mmaps"] == 0
    assert summary["peak_live_bytes"] == 64 * 4632 * KIB
    assert summary["size_histogram"]["4M-16M"] == {"count": 64, "bytes": 64 * 4632 * KIB}


# ---------------------------------------------------------------------------------------------
# The live-bytes walk against a page model, on random mmap/munmap/mremap sequences.

PAGE = 4096
SPACE_PAGES = 12

pages = st.integers(0, SPACE_PAGES)
walk_ops = st.one_of(
    st.tuples(st.just("mmap"), pages, st.integers(0, 8), st.integers(0, PAGE - 1), st.booleans(),
              st.booleans()),
    st.tuples(st.just("munmap"), pages, st.integers(0, 8), st.integers(0, PAGE - 1)),
    st.tuples(st.just("mremap"), pages, st.integers(0, 8), pages, st.integers(0, 8),
              st.booleans()),
)


def walk_rows_and_model(ops, errnos):
    """Rows for ``ops`` and what a page-granular model of the kernel says about them."""
    rows, live = [], {}  # live: page -> (row of the call that mapped it, anonymous?)
    peak, peak_row, partial = 0, None, 0
    for row, (op, errno) in enumerate(zip(ops, errnos)):
        name, start, *rest = op
        address = A + start * PAGE
        if name == "mmap":
            count, short_by, anon, fixed = rest
            length = max(count * PAGE - short_by, 0)  # the kernel rounds up to whole pages
            rows.append((mmap_fixed if fixed else mmap)(address, length, anon=anon, errno=errno))
            if not errno:
                for page in range(start, start + count):
                    live[page] = (row, anon)
        elif name == "munmap":
            count, short_by = rest
            rows.append(munmap(address, max(count * PAGE - short_by, 0), errno=errno))
            if not errno:
                gone = {page: live.pop(page) for page in range(start, start + count) if page in live}
                touched = {owner for owner, _ in gone.values()}
                partial += any(owner in touched for owner, _ in live.values())
        else:
            count, new_start, new_count, dontunmap = rest
            flags = MREMAP_MAYMOVE | (MREMAP_DONTUNMAP if dontunmap else 0)
            rows.append(mremap(address, count * PAGE, A + new_start * PAGE, new_count * PAGE,
                               flags=flags, errno=errno))
            if not errno:
                old = [live[p] for p in range(start, start + count) if p in live]
                anon = old[0][1] if old else True
                if not dontunmap:
                    for page in range(start, start + count):
                        live.pop(page, None)
                for page in range(new_start, new_start + new_count):
                    live[page] = (row, anon)
        if not errno:
            live_anon = PAGE * sum(anon for _, anon in live.values())
            if live_anon > peak:
                peak, peak_row = live_anon, row
    end = PAGE * sum(anon for _, anon in live.values())
    return rows, {"peak_live_bytes": peak, "peak_live_event": peak_row, "partial_munmaps": partial,
                  "end_live_bytes": end}


@settings(max_examples=200)
@given(st.lists(walk_ops, max_size=30).flatmap(
    lambda ops: st.tuples(st.just(ops), st.lists(st.sampled_from([0, 0, 0, 12]), min_size=len(ops),
                                                 max_size=len(ops)))))
def test_live_bytes_and_partial_munmaps_match_a_page_model(ops_and_errnos):
    ops, errnos = ops_and_errnos
    rows, expected = walk_rows_and_model(ops, errnos)
    summary = summarize(table_from_rows(rows))
    assert {key: summary[key] for key in expected} == expected
    histogram_counts = sum(cell["count"] for cell in summary["size_histogram"].values())
    assert histogram_counts == summary["anon_mmaps"]
    assert summary["anon_mmaps"] + summary["file_mmaps"] == sum(
        1 for op, errno in zip(ops, errnos) if op[0] == "mmap" and not errno)
    assert sum(summary["ops"].values()) == summary["events"] == len(rows)


# ---------------------------------------------------------------------------------------------
# The text form: 80 columns, whatever the numbers and whatever a stranger put in the metadata.

def test_text_fits_80_columns_with_huge_numbers_and_long_metadata():
    rows = [mmap(A, 1 * MIB), munmap(A, 4096), mremap(A + 4096, 4096, B, 8192), madvise(B, 4096, 4),
            mprotect(B, 4096, 1), brk(0, 0x5555_5555_9000), mmap(0, 4096, errno=12)]
    meta = new_metadata("strace" * 20, command=["python", "-c", "x" * 200, "--flag"],
                        regenerate="mmreplay synth " + "--size 512K-1.5M " * 12,
                        host={"hostname": "h" * 90, "kernel": "6.18.0-" + "rc" * 40,
                              "machine": "x86_64", "cpu_model": "Intel(R) Xeon(R) " * 8,
                              "thp": {"enabled": "madvise", "defrag": "madvise"}})
    summary = summarize(table_from_rows(rows, meta))
    huge = 10**15
    summary["ops"] = dict.fromkeys(OPS, huge)
    summary["failed_by_op"] = dict.fromkeys(OPS, huge)
    summary.update(events=6 * huge, failed=6 * huge, threads=huge, anon_mmaps=huge, file_mmaps=huge,
                   pmd_multiple_mmaps=huge, pmd_unaligned_large_mmaps=huge, partial_munmaps=huge,
                   peak_live_event=huge)
    text = format_summary(summary, "/very/long/folder/" * 8 + "trace.arrow")
    assert max(len(line) for line in text.splitlines()) <= 80, text
    flat = " ".join(text.split())
    for op in OPS:  # wrapped, not cut
        assert f"{op} {huge}" in flat
    assert "x" * 50 in text.replace("\n", "").replace(" ", "")


def test_hostile_metadata_is_shown_safely():
    meta = new_metadata("line one\nline two\x1b[2J", command=5, created=["a"],
                        host="not a dict")
    text = format_summary(summarize(table_from_rows([mmap(A, 4096)], meta)))
    assert "\x1b" not in text
    assert all(line.isprintable() for line in text.splitlines())
    assert max(len(line) for line in text.splitlines()) <= 80
    for host in [{"thp": "x"}, {"thp": {"khugepaged": [1]}}, [1, 2], {"cpu_model": 7}]:
        text = format_summary(summarize(table_from_rows([mmap(A, 4096)],
                                                        new_metadata("test", host=host))))
        assert "events       1 (mmap 1)" in text
