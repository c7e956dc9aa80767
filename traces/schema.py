"""The trace table: the Arrow schema, the syscall vocabulary and the Linux constants it uses.

A trace is a table with one row per mm syscall in recorded order: the columns below (the
*logical* table, format v1's columns). Files store it in format v2's compact columns
(``traces/encoding.py``); version 1 files still read. This module is the single place that knows
the column names, their types and the numbers behind the symbolic PROT_*/MAP_*/MREMAP_*/MADV_*
names (x86-64 Linux values).
"""

from __future__ import annotations

FORMAT_MAJOR = 2
# Minor 1 added the allocation-level ops (ALLOC_OPS): a reader of minor 0 refuses them by name.
FORMAT_MINOR = 1
READABLE_MAJORS = (1, 2)
METADATA_KEY = b"mmreplay"

# Order fixes the dictionary codes written by mmreplay; readers map by name, not by code.
# MM_OPS are the mm syscalls; ALLOC_OPS the calls of the malloc family (``record --malloc``),
# appended so that the codes of the mm ops never change. reallocarray is recorded as realloc
# (its two factors multiplied).
MM_OPS = ("mmap", "munmap", "mremap", "madvise", "mprotect", "brk")
ALLOC_OPS = ("malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign",
             "valloc", "pvalloc")
OPS = MM_OPS + ALLOC_OPS
OP_CODE = {name: code for code, name in enumerate(OPS)}
# Allocation ops whose hint column holds the alignment asked for.
ALIGNED_ALLOC_OPS = ("posix_memalign", "aligned_alloc", "memalign")

# (name, Arrow type, nullable). Non-nullable columns are required on every row. The Arrow types
# (OP_TYPE, COLUMNS, SCHEMA) are built on first use, by __getattr__ below, so that code needing
# only the constants of this module (the replay engine inside a VM guest) does not import pyarrow.
_COLUMN_SPECS = (
    ("ts_ns", "int64", False),
    ("tid", "int32", False),
    ("op", "op", False),
    ("addr", "uint64", False),
    ("length", "uint64", False),
    ("new_addr", "uint64", True),
    ("new_length", "uint64", True),
    ("hint", "uint64", True),
    ("prot", "int32", True),
    ("flags", "int32", True),
    ("fd", "int32", True),
    ("offset", "int64", True),
    ("advice", "int32", True),
    ("errno", "int32", False),
    ("duration_ns", "int64", True),
)
COLUMN_NAMES = tuple(name for name, _, _ in _COLUMN_SPECS)
NULLABLE_COLUMNS = tuple(name for name, _, nullable in _COLUMN_SPECS if nullable)


def __getattr__(name):
    """OP_TYPE (dictionary<int8, utf8>), COLUMNS ((name, type, nullable), ...) and SCHEMA."""
    if name not in ("OP_TYPE", "COLUMNS", "SCHEMA"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import pyarrow as pa

    op_type = pa.dictionary(pa.int8(), pa.utf8())
    columns = tuple((column, op_type if kind == "op" else getattr(pa, kind)(), nullable)
                    for column, kind, nullable in _COLUMN_SPECS)
    globals().update(OP_TYPE=op_type, COLUMNS=columns,
                     SCHEMA=pa.schema([pa.field(n, t, nullable=z) for n, t, z in columns]))
    return globals()[name]

# Fields each op must carry (beyond the always-required columns), as recorded by strace.
REQUIRED_BY_OP = {
    "mmap": ("prot", "flags", "fd"),
    "mremap": ("new_length", "flags"),
    "madvise": ("advice",),
    "mprotect": ("prot",),
    "realloc": ("new_addr",),
    **{op: ("hint",) for op in ALIGNED_ALLOC_OPS},
}

# Format v2: the ops that take each nullable argument. A v2 file stores no null bitmaps: a value
# is null where its op does not take it, unless the row's ``null_flips`` bit for that column
# (bit i = NULLABLE_COLUMNS[i]) says the opposite (a failed mremap has no new_addr, a trace
# without -T has no durations, an mremap with MREMAP_FIXED has a hint).
OP_TAKES = {
    "new_addr": ("mremap", "brk", "realloc"),
    "new_length": ("mremap",),
    "hint": ("mmap",) + ALIGNED_ALLOC_OPS,
    "prot": ("mmap", "mprotect"),
    "flags": ("mmap", "mremap"),
    "fd": ("mmap",),
    "offset": ("mmap",),
    "advice": ("madvise",),
    "duration_ns": OPS,
}

PAGE_SIZE = 4096
PMD_SIZE = 2 << 20

# PROT_* (asm-generic/mman-common.h)
PROT = {"PROT_NONE": 0x0, "PROT_READ": 0x1, "PROT_WRITE": 0x2, "PROT_EXEC": 0x4,
        "PROT_SEM": 0x8, "PROT_GROWSDOWN": 0x01000000, "PROT_GROWSUP": 0x02000000}
PROT_READ, PROT_WRITE = PROT["PROT_READ"], PROT["PROT_WRITE"]

# MAP_* (x86-64: asm-generic/mman-common.h, mman.h)
MAP = {
    "MAP_SHARED": 0x01, "MAP_PRIVATE": 0x02, "MAP_SHARED_VALIDATE": 0x03, "MAP_FIXED": 0x10,
    "MAP_ANONYMOUS": 0x20, "MAP_32BIT": 0x40, "MAP_GROWSDOWN": 0x0100, "MAP_DENYWRITE": 0x0800,
    "MAP_EXECUTABLE": 0x1000, "MAP_LOCKED": 0x2000, "MAP_NORESERVE": 0x4000,
    "MAP_POPULATE": 0x8000, "MAP_NONBLOCK": 0x10000, "MAP_STACK": 0x20000,
    "MAP_HUGETLB": 0x40000, "MAP_SYNC": 0x80000, "MAP_FIXED_NOREPLACE": 0x100000,
    "MAP_UNINITIALIZED": 0x4000000,
}
MAP["MAP_ANON"] = MAP["MAP_ANONYMOUS"]
MAP["MAP_FILE"] = 0
MAP_SHARED, MAP_PRIVATE, MAP_FIXED = MAP["MAP_SHARED"], MAP["MAP_PRIVATE"], MAP["MAP_FIXED"]
MAP_ANONYMOUS, MAP_FIXED_NOREPLACE = MAP["MAP_ANONYMOUS"], MAP["MAP_FIXED_NOREPLACE"]
MAP_HUGE_SHIFT = 26  # MAP_HUGE_2MB etc. encode log2(size) in bits 26..31

MREMAP = {"MREMAP_MAYMOVE": 1, "MREMAP_FIXED": 2, "MREMAP_DONTUNMAP": 4}
MREMAP_MAYMOVE, MREMAP_FIXED, MREMAP_DONTUNMAP = 1, 2, 4

MADV = {
    "MADV_NORMAL": 0, "MADV_RANDOM": 1, "MADV_SEQUENTIAL": 2, "MADV_WILLNEED": 3,
    "MADV_DONTNEED": 4, "MADV_FREE": 8, "MADV_REMOVE": 9, "MADV_DONTFORK": 10,
    "MADV_DOFORK": 11, "MADV_MERGEABLE": 12, "MADV_UNMERGEABLE": 13, "MADV_HUGEPAGE": 14,
    "MADV_NOHUGEPAGE": 15, "MADV_DONTDUMP": 16, "MADV_DODUMP": 17, "MADV_WIPEONFORK": 18,
    "MADV_KEEPONFORK": 19, "MADV_COLD": 20, "MADV_PAGEOUT": 21, "MADV_POPULATE_READ": 22,
    "MADV_POPULATE_WRITE": 23, "MADV_DONTNEED_LOCKED": 24, "MADV_COLLAPSE": 25,
    "MADV_GUARD_INSTALL": 102, "MADV_GUARD_REMOVE": 103,
    "MADV_HWPOISON": 100, "MADV_SOFT_OFFLINE": 101,
}
MADV_NAME = {v: k for k, v in MADV.items()}
MADV_HUGEPAGE, MADV_NOHUGEPAGE = MADV["MADV_HUGEPAGE"], MADV["MADV_NOHUGEPAGE"]


def is_anonymous(flags: int | None, fd: int | None) -> bool:
    """True for a mapping with no file behind it (MAP_ANONYMOUS, or fd -1 when flags are unknown)."""
    if flags is not None:
        return bool(flags & MAP_ANONYMOUS)
    return fd is None or fd < 0


def empty_table():
    """An empty pyarrow.Table with the format's schema."""
    return (globals().get("SCHEMA") or __getattr__("SCHEMA")).empty_table()
