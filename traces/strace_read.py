"""Reading strace logs: decompression by magic bytes, bounded chunks that end on a newline,
and tokenizing them (reference parser or fast path) one or two chunks ahead in a worker thread.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import queue
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from .errors import MmreplayError
from .files import open_input
from .inputs import COMPRESSION_MAGIC  # one table: info names a compressed log by it too
from .strace_grammar import F_POS, NFIELDS, parse_line

CHUNK_BYTES = 8 << 20
# A log whose first chunk is smaller than this is parsed by the reference parser alone: loading
# the numba tokenizer costs more than it saves on a log of a few ten thousand lines.
FAST_MIN_BYTES = 4 << 20

COMPRESSED_SUFFIXES = (".gz", ".xz", ".zst", ".zstd", ".bz2")


class CountingReader:
    """A binary file that counts the bytes read from it: progress without tell(), which pipes
    (`mmreplay import <(xzcat app.log.xz)`) do not have."""

    def __init__(self, raw):
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def readinto(self, buffer) -> int:
        done = self.raw.readinto(buffer)
        self.count += done or 0
        return done

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    @property
    def closed(self) -> bool:
        return self.raw.closed

    def close(self) -> None:
        self.raw.close()


class LogReader:
    """Yields (chunk of whole lines, compressed bytes consumed) from a possibly compressed log,
    a plain file or a pipe."""

    def __init__(self, path: Path, chunk_bytes: int, interrupted: Callable[[], bool] | None = None):
        self.path = path
        self.chunk_bytes = chunk_bytes
        raw = open_input(path, "an strace log", pipes=True, interrupted=interrupted)
        try:
            head = raw.peek(8)[:8]  # sniff without consuming: a pipe cannot seek back
        except OSError as exc:
            raw.close()
            raise MmreplayError(f"{path}: cannot read: {exc.strerror}") from None
        if not head:
            raw.close()
            raise MmreplayError(f"{path}: empty file, not an strace log")
        if head.startswith(b"ARROW1"):
            raw.close()
            raise MmreplayError(f"{path}: already an mmreplay trace (Arrow file), not an strace "
                                "log; use `mmreplay info`")
        self.raw = CountingReader(raw)
        self.compression = None
        for magic, name in COMPRESSION_MAGIC:
            if head.startswith(magic):
                self.compression = name
        if self.compression == "gzip":
            self.stream = gzip.GzipFile(fileobj=self.raw)
        elif self.compression == "xz":
            self.stream = lzma.LZMAFile(self.raw)
        elif self.compression == "bzip2":
            self.stream = bz2.BZ2File(self.raw)
        elif self.compression == "zstd":
            self.stream = pa.CompressedInputStream(pa.PythonFile(self.raw, mode="r"), "zstd")
        else:
            self.stream = self.raw

    def _read(self, size: int) -> bytes:
        try:
            return self.stream.read(size)
        except (OSError, EOFError, lzma.LZMAError, zlib.error, pa.ArrowException) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise MmreplayError(f"{self.path}: damaged {self.compression or 'log'} data "
                                f"({detail[:160]})") from None

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        """(whole lines, compressed bytes consumed since the previous item); the last item may
        carry no lines, only the bytes of the end of the stream."""
        rest = b""
        consumed = 0
        try:
            while True:
                data = self._read(self.chunk_bytes)
                position = self.raw.count
                delta, consumed = position - consumed, position
                if not data:
                    break
                data = rest + data
                cut = data.rfind(b"\n")
                if cut < 0 and len(data) < 4 * self.chunk_bytes:
                    rest = data  # a line longer than a chunk: keep reading
                    consumed -= delta  # report these bytes with the chunk that holds them
                    continue
                if cut < 0:
                    # A "line" of tens of MB is not strace output; hand it on as one line
                    # rather than buffering without bound.
                    yield data + b"\n", delta
                    rest = b""
                    continue
                yield data[:cut + 1], delta
                rest = data[cut + 1:]
            yield (rest + b"\n" if rest else b""), delta
        finally:
            self.raw.close()


def tokenize_reference(chunk: bytes) -> np.ndarray:
    lines = chunk.decode("latin-1").split("\n")
    lines.pop()  # the chunk ends with a newline
    records = np.empty((NFIELDS, len(lines)), np.int64)
    if lines:
        records[:F_POS] = np.array([parse_line(line) for line in lines], dtype=np.int64).T
    return records


def tokenize_fast(chunk: bytes) -> np.ndarray:
    from .strace_fast import tokenize_chunk

    return tokenize_chunk(chunk)


def tokenized_chunks(reader: LogReader, fast: bool | str, parsers: set[str]):
    """(records or None, compressed bytes consumed) per chunk.

    Reading, decompressing and tokenizing run one or two chunks ahead in a worker thread (numba,
    zlib and lzma release the GIL) while the caller assembles: two cores, bounded memory.
    """
    results: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def work() -> None:
        tokenize = None
        try:
            for chunk, consumed in reader:
                if stop.is_set():
                    return
                if chunk and tokenize is None:
                    use_fast = fast is True or (fast == "auto" and len(chunk) >= FAST_MIN_BYTES)
                    tokenize = tokenize_fast if use_fast else tokenize_reference
                    parsers.add("fast" if use_fast else "reference")
                results.put((tokenize(chunk) if chunk else None, consumed))
            results.put(None)
        except BaseException as exc:  # handed to the caller, who raises it
            results.put(exc)

    worker = threading.Thread(target=work, name="strace-tokenizer", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = results.get(timeout=0.1)
            except queue.Empty:
                if worker.is_alive():
                    continue
                # Died without a word (MemoryError while reporting one): never wait forever.
                item = results.get_nowait() if not results.empty() else MmreplayError(
                    f"{reader.path}: the log reader stopped unexpectedly (out of memory?)")
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # let a worker blocked on a full queue finish
            try:
                results.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()
