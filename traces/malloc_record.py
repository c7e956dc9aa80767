"""Read what the allocation recorder (``traces/shim/mmreplay_malloc.c``) wrote, and turn it into
trace rows next to the mm syscalls strace recorded in the same run.

The recorder writes one file per process image, ``<pid>-<n>.mmalloc`` (n: the images a pid
exec'd before, 0 first). All numbers are little-endian.

- A header of 512 bytes: ``MMRMALC1``; uint32 version, header bytes, record bytes, block
  bytes, pid, ppid, clock (0: TSC ticks, 1: CLOCK_MONOTONIC ns), buffer bytes; uint64 t0,
  mono0_ns, real0_ns (one reading of the tick counter, CLOCK_MONOTONIC and CLOCK_REALTIME taken
  together); the executable's path (256 bytes, NUL-padded).
- Blocks, each one thread's buffer as written: uint32 magic ``BLK1``, tid, count, flags
  (1 thread exit, 2 process exit, 4 written after the process-exit flush); uint64 t, mono_ns
  (the tick counter and CLOCK_MONOTONIC when written: they calibrate the ticks), nested (calls
  of this thread passed on unrecorded so far); then ``count`` records.
- A record (40 bytes): uint64 t (ticks: when an allocation returned, when a free was called),
  size, ptr (pointer returned, or freed), aux (realloc: the old pointer; memalign family: the
  alignment); uint8 op, err; 6 bytes of padding. Op 64 announces one of the recorder's own
  buffers (ptr, size): an mmap the syscall trace must not keep.

A file ``lost`` next to them means a write failed (a full disk): records are missing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import MmreplayError
from .format import build_table, column_np, op_names
from .schema import OP_CODE, SCHEMA
from .strace_assemble import clamp_per_thread

FILE_MAGIC = b"MMRMALC1"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8s8I3Q256s")
BLOCK_MAGIC = 0x314B4C42
RECORD = np.dtype([("t", "<u8"), ("size", "<u8"), ("ptr", "<u8"), ("aux", "<u8"), ("op", "u1"),
                   ("err", "u1"), ("pad", "V6")])
BLOCK = np.dtype([("magic", "<u4"), ("tid", "<u4"), ("count", "<u4"), ("flags", "<u4"),
                  ("t", "<u8"), ("mono_ns", "<u8"), ("nested", "<u8")])
BLOCK_LATE = 4
CLOCKS = {0: "tsc", 1: "monotonic"}
# The recorder's op numbers -> trace ops (reallocarray is a realloc of the product).
SHIM_OPS = {1: "malloc", 2: "free", 3: "calloc", 4: "realloc", 5: "posix_memalign",
            6: "aligned_alloc", 7: "memalign", 8: "valloc", 9: "pvalloc", 10: "realloc"}
OWN_MAP = 64
LOST_MARKER = "lost"
SUFFIX = ".mmalloc"


@dataclass
class ProcessImage:
    """One process image's recorded calls, in the order its threads made them."""

    path: Path
    pid: int
    ppid: int
    generation: int
    exe: str
    clock: str
    ops: np.ndarray          # int8 trace op codes
    tid: np.ndarray          # int32
    time_ns: np.ndarray      # int64 CLOCK_REALTIME ns
    size: np.ndarray         # uint64
    ptr: np.ndarray          # uint64
    aux: np.ndarray          # uint64
    err: np.ndarray          # int32
    own_maps: list = field(default_factory=list)  # (address, length) of the recorder's buffers
    nested: int = 0          # calls passed on unrecorded (made inside the recorder)
    late: int = 0            # calls written one by one after the process-exit flush
    truncated_bytes: int = 0

    @property
    def calls(self) -> int:
        return len(self.ops)

    def describe(self) -> dict:
        return {"pid": self.pid, "image": self.generation, "exe": self.exe, "calls": self.calls,
                "unrecorded_nested_calls": self.nested, "truncated_bytes": self.truncated_bytes}


def _fail(path: Path, problem: str) -> MmreplayError:
    return MmreplayError(f"{path}: {problem}")


def read_image(path: str | Path) -> ProcessImage:
    """One ``.mmalloc`` file; a last block cut short (the process was killed while writing) is
    dropped and counted."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < HEADER.size or not data.startswith(FILE_MAGIC):
        raise _fail(path, "not an allocation recording (bad header)")
    (_, version, header_bytes, record_bytes, block_bytes, pid, ppid, clock, _buffer, t0, mono0,
     real0, exe) = HEADER.unpack_from(data)
    if version != FORMAT_VERSION or record_bytes != RECORD.itemsize or block_bytes != BLOCK.itemsize:
        raise _fail(path, f"recording format {version} ({record_bytes}-byte records) is not "
                          f"the one this mmreplay reads ({FORMAT_VERSION})")
    if clock not in CLOCKS:
        raise _fail(path, f"unknown clock {clock}")
    name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    try:
        generation = int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        generation = 0
    parts, tids, calibration = [], [], [(t0, mono0)]
    nested_by_tid: dict[int, int] = {}
    late = 0
    offset = header_bytes
    truncated = 0
    while offset < len(data):
        if offset + BLOCK.itemsize > len(data):
            truncated = len(data) - offset
            break
        block = np.frombuffer(data, BLOCK, 1, offset)[0]
        if int(block["magic"]) != BLOCK_MAGIC:
            raise _fail(path, f"damaged recording: no block at byte {offset}")
        count = int(block["count"])
        end = offset + BLOCK.itemsize + count * RECORD.itemsize
        if end > len(data):
            truncated = len(data) - offset
            break
        records = np.frombuffer(data, RECORD, count, offset + BLOCK.itemsize)
        tid = int(block["tid"])
        parts.append(records)
        tids.append(np.full(count, tid, np.int32))
        calibration.append((int(block["t"]), int(block["mono_ns"])))
        nested_by_tid[tid] = max(nested_by_tid.get(tid, 0), int(block["nested"]))
        if int(block["flags"]) & BLOCK_LATE:
            late += count
        offset = end
    records = np.concatenate(parts) if parts else np.zeros(0, RECORD)
    tid = np.concatenate(tids) if tids else np.zeros(0, np.int32)
    own = records["op"] == OWN_MAP
    own_maps = list(zip(records["ptr"][own].tolist(), records["size"][own].tolist()))
    known = np.isin(records["op"], list(SHIM_OPS))
    if not np.all(known | own):
        bad = int(records["op"][~(known | own)][0])
        raise _fail(path, f"damaged recording: unknown call number {bad}")
    records, tid = records[known], tid[known]
    mono = _ticks_to_mono_ns(records["t"], calibration, CLOCKS[clock])
    lookup = np.zeros(256, np.int8)
    for number, op in SHIM_OPS.items():
        lookup[number] = OP_CODE[op]
    return ProcessImage(
        path=path, pid=pid, ppid=ppid, generation=generation,
        exe=exe.split(b"\0", 1)[0].decode(errors="replace"), clock=CLOCKS[clock],
        ops=lookup[records["op"]], tid=tid, time_ns=mono + np.int64(real0 - mono0),
        size=records["size"].copy(), ptr=records["ptr"].copy(), aux=records["aux"].copy(),
        err=records["err"].astype(np.int32), own_maps=own_maps,
        nested=sum(nested_by_tid.values()), late=late, truncated_bytes=truncated)


def _ticks_to_mono_ns(ticks: np.ndarray, calibration: list, clock: str) -> np.ndarray:
    """CLOCK_MONOTONIC ns for each tick value: exact for a monotonic clock; for TSC ticks,
    piecewise linear between the (ticks, monotonic) pairs the recorder wrote with every block,
    extended at both ends with the slope over all of them."""
    if clock == "monotonic" or not len(ticks):
        return ticks.astype(np.int64)
    pairs = sorted(set(calibration))
    t = np.array([p[0] for p in pairs], np.float64)
    m = np.array([p[1] for p in pairs], np.float64)
    t0, m0 = t[0], m[0]
    if len(pairs) < 2 or t[-1] == t0:
        raise MmreplayError("an allocation recording with TSC times but a single calibration "
                            "point: its times cannot be converted")
    slope = (m[-1] - m0) / (t[-1] - t0)
    x = ticks.astype(np.float64)
    mono = np.interp(x - t0, t - t0, m - m0)
    before, after = x < t0, x > t[-1]
    mono[before] = (x[before] - t0) * slope
    mono[after] = (m[-1] - m0) + (x[after] - t[-1]) * slope
    return np.int64(m0) + np.rint(mono).astype(np.int64)


def read_recording(folder: str | Path) -> tuple[list[ProcessImage], bool]:
    """Every process image recorded in ``folder`` (by pid, then image), and whether the recorder
    reported lost records."""
    folder = Path(folder)
    images = [read_image(path) for path in folder.glob(f"*{SUFFIX}")]
    images.sort(key=lambda image: (image.pid, image.generation))
    return images, (folder / LOST_MARKER).exists()


def choose_image(images: list[ProcessImage], parent_pid: int) -> ProcessImage | None:
    """The recorded command: the last image of the process ``parent_pid`` started (a wrapper
    that execs the real program leaves that program last)."""
    mine = [image for image in images if image.ppid == parent_pid]
    if not mine:
        return None
    pid = min(image.pid for image in mine)
    return max((image for image in images if image.pid == pid), key=lambda i: i.generation)


def allocation_table(image: ProcessImage) -> pa.Table:
    """The image's calls as logical trace rows (``ts_ns`` = CLOCK_REALTIME ns, made relative
    later), in the order its threads made them."""
    ops = image.ops
    is_realloc = ops == OP_CODE["realloc"]
    aligned = np.isin(ops, [OP_CODE[o] for o in ("posix_memalign", "aligned_alloc", "memalign")])
    is_free = ops == OP_CODE["free"]
    zeros = np.zeros(len(ops), np.uint64)
    columns = {
        "ts_ns": image.time_ns,
        "tid": image.tid,
        "op": ops,
        # realloc: addr is the old pointer, new_addr the one returned
        "addr": np.where(is_realloc, image.aux, image.ptr),
        "length": np.where(is_free, zeros, image.size),
        "new_addr": pa.array(image.ptr, pa.uint64(), mask=~is_realloc),
        "hint": pa.array(image.aux, pa.uint64(), mask=~aligned),
        "errno": image.err,
    }
    return build_table(columns)


def drop_own_mappings(mm: pa.Table, own_maps: list) -> tuple[pa.Table, int]:
    """The syscall rows without the recorder's own buffer mmaps (matched by address and length,
    the first successful mmap of each)."""
    if not own_maps or not mm.num_rows:
        return mm, 0
    wanted = {}
    for address, length in own_maps:
        wanted[(address, length)] = wanted.get((address, length), 0) + 1
    codes = op_names(mm)
    candidates = np.flatnonzero((codes == OP_CODE["mmap"]) & (column_np(mm, "errno") == 0))
    addr = column_np(mm, "addr")[candidates].tolist()
    length = column_np(mm, "length")[candidates].tolist()
    drop = []
    for row, key in zip(candidates.tolist(), zip(addr, length)):
        if wanted.get(key):
            wanted[key] -= 1
            drop.append(row)
    if not drop:
        return mm, 0
    keep = np.ones(mm.num_rows, bool)
    keep[drop] = False
    return mm.filter(pa.array(keep)), len(drop)


def merge_levels(mm: pa.Table, mm_origin_ns: int | None, image: ProcessImage) -> tuple[pa.Table, dict]:
    """One trace of both levels: the syscall rows (``ts_ns`` relative to ``mm_origin_ns``, the
    CLOCK_REALTIME ns strace's first call stands for) and the image's allocation calls, ordered
    by time (a syscall first on a tie: an allocation's time is when it returned), each thread's
    clock kept monotonic. Returns the table and what was adjusted."""
    mm, dropped = drop_own_mappings(mm, image.own_maps)
    alloc = allocation_table(image)
    if mm.num_rows and mm_origin_ns is None:
        raise MmreplayError("the syscall log has no absolute timestamps (strace -ttt): the two "
                            "levels cannot be put on one clock")
    mm_abs = column_np(mm, "ts_ns").astype(np.int64) + np.int64(mm_origin_ns or 0)
    alloc_abs = image.time_ns
    times = np.concatenate([mm_abs, alloc_abs])
    level = np.concatenate([np.zeros(len(mm_abs), np.int8), np.ones(len(alloc_abs), np.int8)])
    position = np.concatenate([np.arange(len(mm_abs)), np.arange(len(alloc_abs))])
    # Within a thread the recorder's order is the call order: keep it where clock readings tie
    # or the calibrated times wobble by a few ns.
    alloc_order = _thread_order(image.tid, alloc_abs)
    position[len(mm_abs):] = alloc_order
    order = np.lexsort((position, level, times))
    both = pa.concat_tables([mm.select(SCHEMA.names).cast(SCHEMA),
                             alloc.select(SCHEMA.names)]).unify_dictionaries()
    merged = both.take(pa.array(order))
    ts = times[order]
    ts = ts - (ts.min() if len(ts) else 0)
    tid = column_np(merged, "tid").astype(np.int32)
    clamped = clamp_per_thread(tid, ts)
    merged = merged.set_column(merged.schema.get_field_index("ts_ns"), SCHEMA.field("ts_ns"),
                               pa.array(ts, pa.int64()))
    return merged.combine_chunks(), {"recorder_mmaps_removed": dropped,
                                     "clamped_timestamps": int(clamped)}


def _thread_order(tid: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Per row, its rank in its thread's recorded order (ties in time keep that order)."""
    rank = np.zeros(len(tid), np.int64)
    if len(tid):
        by_thread = np.argsort(tid, kind="stable")
        rank[by_thread] = np.arange(len(tid))
    return rank


def allocation_report(images: list[ProcessImage], chosen: ProcessImage | None, lost: bool,
                      merge_notes: dict | None = None) -> dict:
    """What the metadata says about the allocation level of a recording."""
    return {
        "recorder": "mmreplay LD_PRELOAD (traces/shim/mmreplay_malloc.c)",
        "clock": chosen.clock if chosen else None,
        "included": chosen.describe() if chosen else None,
        "not_included": [image.describe() for image in images if image is not chosen],
        "records_lost": lost,
        **(merge_notes or {}),
    }
