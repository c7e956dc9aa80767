"""Bytes per event of the bundled BERT traces against `xz -9e` of their own raw strace logs.

For each bundled trace with a raw log in tests/data/strace/, measured in this run:

  trace      the bundled file as it is (format v2), and the same events written the way
             mmreplay 0.1 wrote them (format v1: the logical columns, zstd at pyarrow's default
             level, 65,536-row batches, metadata in the schema)
  xz -9e     the raw log, decompressed, then compressed with liblzma's preset 9 + extreme
             (Python's lzma module: the same bytes as `xz -9e`; the xz command is run too when
             it is installed, and the two sizes must agree)

Target (issue 13): each bundled trace is at most the size of `xz -9e` of its raw log, with every
field at the recorded precision (the events' content hash is printed; the format tests check
the round trip).

It also prints the size of each trace's `mmreplay share` block (the limit commonly cited for
vger.kernel.org lists is 100,000 characters) and the two choices behind it, measured on the
same trace file: its payload compressed as a whole with xz, against the zstd-compressed v2 file
as it is; and base64, against base85 as git's binary patches use it (one length character and
up to 65 characters per 52 bytes).

With --columns it also prints where the bytes go, column by column: each stored column's
buffers compressed on their own with the file's zstd level, for v1 and v2, and the variants
measured while choosing v2's form (zstd levels, dictionary encoding, addresses in pages).

    python benchmarks/trace_size.py [--columns]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import lzma
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from traces import read_trace, trace_metadata  # noqa: E402
from traces.encoding import encode  # noqa: E402
from traces.format import events_sha256, trace_file_bytes, validate, zstd_level  # noqa: E402
from traces.format import parse_trace  # noqa: E402
from traces.share import XZ_PRESET as SHARE_PRESET, find_blocks  # noqa: E402
from traces.share_trace import share_block  # noqa: E402

TRACES = ROOT / "traces" / "data"
LOGS = ROOT / "tests" / "data" / "strace"
XZ_PRESET = 9 | lzma.PRESET_EXTREME


def v1_bytes(table: pa.Table) -> bytes:
    """The file mmreplay 0.1 wrote for these events (format v1)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as w:
        for batch in table.to_batches(max_chunksize=1 << 16):
            w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def xz_9e(raw: bytes, scratch: Path) -> int:
    size = len(lzma.compress(raw, preset=XZ_PRESET))
    if shutil.which("xz"):
        path = scratch / "raw.log"
        path.write_bytes(raw)
        out = subprocess.run(["xz", "-9e", "-c", str(path)], capture_output=True, check=True).stdout
        if len(out) != size:
            raise SystemExit(f"xz -9e gave {len(out)} bytes, Python's lzma {size}: not the same "
                             "compressor, the comparison would be unfair")
    return size


def column_bytes(table: pa.Table, level: int) -> dict[str, int]:
    """Each column's buffers compressed on their own (what its part of the file body costs)."""
    codec = pa.Codec("zstd", compression_level=level)
    sizes = {}
    for name in table.column_names:
        total = 0
        for chunk in table.column(name).chunks:
            arrays = [chunk.indices, chunk.dictionary] if isinstance(chunk, pa.DictionaryArray) else [chunk]
            for array in arrays:
                for buffer in array.buffers():
                    if buffer is not None and buffer.size:
                        total += len(codec.compress(buffer))
        sizes[name] = total
    return sizes


def variants(table: pa.Table, stored: pa.Table, level: int) -> list[tuple[str, int]]:
    """(what, compressed bytes) for the alternatives measured while choosing v2's form."""
    codec = pa.Codec("zstd", compression_level=level)

    def z(values: np.ndarray) -> int:
        return len(codec.compress(np.ascontiguousarray(values).tobytes()))

    ts = table.column("ts_ns").to_numpy()
    dt_name = "dt_us" if "dt_us" in stored.column_names else "dt_ns"
    dt = stored.column(dt_name).to_numpy()
    out = [("ts_ns absolute int64 (v1)", z(ts)),
           (f"{dt_name} {dt.dtype} (v2)", z(dt)),
           (f"{dt_name} as int64", z(dt.astype(np.int64)))]
    values, inverse = np.unique(dt, return_inverse=True)
    out.append((f"{dt_name} as dictionary<int16>",
                z(inverse.astype(np.int16 if len(values) < 32768 else np.int32)) + z(values)))
    for name in ("addr", "new_addr", "hint", "offset"):
        raw = stored.column(name).to_numpy().astype(np.uint64)
        aligned = not np.any(raw % 4096)
        out.append((f"{name} bytes (v2)", z(raw)))
        if aligned:
            out.append((f"{name} in 4 KiB pages (not used)", z(raw >> np.uint64(12))))
    bitmaps = sum(len(codec.compress(table.column(name).combine_chunks().buffers()[0]))
                  for name in ("new_addr", "new_length", "hint", "prot", "flags", "fd", "offset",
                               "advice", "duration_ns")
                  if table.column(name).null_count)
    out += [("null bitmaps of the 9 nullable columns (v1)", bitmaps),
            ("null_flips (v2)", z(stored.column("null_flips").to_numpy()))]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--columns", action="store_true", help="where the bytes go, per column")
    args = parser.parse_args(argv)
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for log in sorted(LOGS.glob("*.log.xz")):
            name = log.name[: -len(".log.xz")]
            path = TRACES / f"{name}.arrow"
            if not path.exists():
                continue
            table = read_trace(path)
            events = table.num_rows
            raw = lzma.decompress(log.read_bytes())
            rows.append((name, events, path.stat().st_size, len(v1_bytes(validate(table))),
                         xz_9e(raw, Path(folder)), len(raw), events_sha256(table), table))
    print("Bundled traces against xz -9e of their raw strace logs (bytes; B/ev = bytes per event)")
    print(f"{'trace':<18} {'events':>7} {'v2 file':>9} {'B/ev':>5} {'v1 file':>9} {'B/ev':>5} "
          f"{'raw log':>9} {'xz -9e':>8} {'B/ev':>5} {'v2/xz':>6}  target <= 1.00")
    met = True
    for name, events, v2, v1, xz, raw, _, _ in rows:
        ratio = v2 / xz
        met &= ratio <= 1.0
        print(f"{name:<18} {events:>7,} {v2:>9,} {v2 / events:>5.2f} {v1:>9,} {v1 / events:>5.2f} "
              f"{raw:>9,} {xz:>8,} {xz / events:>5.2f} {ratio:>6.3f}  "
              f"{'met' if ratio <= 1.0 else 'NOT met'}")
    print("events' content hash (every logical column, values and nulls):")
    for name, *_, digest, _ in rows:
        print(f"  {name:<18} {digest}")
    if args.columns:
        for name, events, v2, v1, xz, raw, digest, table in rows:
            level = zstd_level(events)
            meta = trace_metadata(table)
            stored = encode(validate(table))
            print(f"\n{name}: bytes per event by column, each column's buffers compressed alone "
                  f"(v1: pyarrow's default zstd level; v2: level {level})")
            old = column_bytes(validate(table), 1)
            new = column_bytes(stored, level)
            for column, size in old.items():
                print(f"  v1 {column:<14} {size / events:6.3f}")
            for column, size in new.items():
                print(f"  v2 {column:<14} {size / events:6.3f}")
            print(f"  v2 metadata JSON in the footer: {len(trace_file_bytes(table)) - len(trace_file_bytes(table.replace_schema_metadata(None), {}))} bytes "
                  f"of {v2} (source {meta.get('source')})")
            print(f"  zstd level (whole v2 file): " + ", ".join(
                f"{lvl}: {len(_file_at_level(table, lvl)):,}" for lvl in (1, 3, 9, 19, 22)))
            print("  alternatives (one column or group, compressed alone):")
            for what, size in variants(table, stored, level):
                print(f"    {what:<44} {size:>7,} B {size / events:6.3f} B/ev")
    print(f"target: {'met' if met else 'NOT met'} for every bundled trace")
    print("\nmmreplay share blocks (characters; the payload is the v2 trace file, anonymised)")
    print(f"{'trace':<18} {'block':>8} {'xz payload':>11} {'zstd file':>10} {'base64':>8} "
          f"{'base85 (git)':>13}  limit 100,000")
    for name, events, *_, table in rows:
        source = (TRACES / f"{name}.arrow").read_bytes()
        text, info = share_block(table, f"{name}.arrow",
                                 shared_from=hashlib.sha256(source).hexdigest())
        trace_file = find_blocks(text)[0].data  # the anonymised v2 file, uncompressed buffers
        payload = lzma.compress(trace_file, preset=SHARE_PRESET)
        zstd_file = trace_file_bytes(parse_trace(pa.py_buffer(trace_file), name))
        encoded = len(base64.b64encode(payload))
        b64 = encoded + -(-encoded // 72)  # with a newline every 72 characters
        git85 = -(-len(payload) // 52) * 67
        print(f"{name:<18} {info['characters']:>8,} {len(payload):>11,} {len(zstd_file):>10,} "
              f"{b64:>8,} {git85:>13,}  {'under' if info['characters'] <= 100_000 else 'OVER'}")
    return 0


def _file_at_level(table: pa.Table, level: int) -> bytes:
    import traces.format as fmt

    saved = fmt.zstd_level
    fmt.zstd_level = lambda rows: level
    try:
        return trace_file_bytes(table)
    finally:
        fmt.zstd_level = saved


if __name__ == "__main__":
    sys.exit(main())
