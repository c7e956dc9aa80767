"""Import strace logs into a trace (format v1).

strace writes one line per event. The forms that matter here (every one is handled):

    4414  1795826565.085056 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS,
          -1, 0) = 0x7f67c81ec000 <0.000037>                        (one line in the log)
    [pid  4508] 1795826589.804855 mmap(NULL, 2097152, ..., -1, 0 <unfinished ...>
    [pid  4508] 1795826589.804903 <... mmap resumed>) = 0x7fd4f2761000 <0.000040>
    00:44:14.230529 munmap(0x1001, 4096)    = -1 EINVAL (Invalid argument)
    mremap(0x7f.., 1048576, 2097152, MREMAP_MAYMOVE|MREMAP_FIXED, 0x7f..) = 0x7f..
    madvise(0x7f.., 4096, 0x42 /* MADV_??? */) = -1 EINVAL (Invalid argument)
    mmap(... <unfinished ...>) = ?          <... mmap resumed>) = ?
    --- SIGCHLD {si_signo=SIGCHLD, ...} ---     +++ exited with 0 +++     +++ killed by SIGKILL +++
    strace: Process 4508 attached           openat(AT_FDCWD, "x", O_RDONLY) = 3   (other calls)

Prefixes: a pid column (``-f -o``), ``[pid N]`` (``-f`` to stderr) or none (no ``-f``, or ``-ff``
files named ``LOG.PID``); ``-ttt`` epoch, ``-tt``/``-t`` wall-clock or no timestamps; ``-T``
durations or none; ``-i``/``-n`` brackets; ``-y`` fd paths; ``-X verbose``/``-X raw``/``-e raw=all``
numeric arguments.

Two tokenizers produce the same per-line records (a row of ``NFIELDS`` int64 values):

* the **reference parser** ``parse_line``: plain Python, one compiled regex per line form, the
  definition of what a line means;
* the **fast path** (``strace_fast``, numba) that handles the common complete forms over the raw
  bytes of a chunk and hands every other line to ``parse_line``. A property test checks that the
  two agree on every line the fast path accepts.

Both feed one vectorized assembly (``_FileImport``) that pairs ``<unfinished ...>`` with
``<... resumed>`` lines per thread, places each call where the replay can safely run it, and
counts every line into exactly one category of the import report: nothing is silently dropped.
"""

from __future__ import annotations

import bz2
import errno as _errno
import gzip
import lzma
import queue
import re
import signal as _signal
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import pyarrow as pa

from .errors import MmreplayError
from .files import open_input
from .ipc_guard import available_memory_bytes
from .units import fmt_bytes
from .format import build_table, new_metadata
from .schema import MADV, MAP, MREMAP, OP_CODE, OPS, PROT

U64_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1
I32_MAX = (1 << 31) - 1
MAX_SECONDS = 9_000_000_000  # epoch seconds and durations above this would overflow int64 ns
NS = 1_000_000_000
DAY_NS = 86_400 * NS
CHUNK_BYTES = 8 << 20
# A log whose first chunk is smaller than this is parsed by the reference parser alone: loading
# the numba tokenizer costs more than it saves on a log of a few ten thousand lines.
FAST_MIN_BYTES = 4 << 20
FIRST_LINES_KEPT = 10

MMAP, MUNMAP, MREMAP_OP, MADVISE, MPROTECT, BRK = (OP_CODE[name] for name in OPS)
# Calls that take memory away: safe to replay where they started. Calls that create a mapping
# (mmap, mremap) are placed where they completed, since the kernel may reuse a range another
# thread freed between the two lines of an unfinished/resumed pair. brk reports its result on
# completion too.
REMOVAL_OPS = np.array([MUNMAP, MADVISE, MPROTECT], np.int64)

# Line kinds (one per line; the report counts each).
(K_UNPARSED, K_CALL, K_UNFINISHED, K_RESUMED, K_IGNORED, K_IGNORED_RESUMED, K_SIGNAL, K_EXIT,
 K_MESSAGE, K_ATTACH, K_STACK, K_BLANK, K_REF) = range(13)
N_KINDS = 13
KIND_NAMES = ("unparsed", "mm_call", "mm_unfinished", "mm_resumed", "non_mm_call",
              "non_mm_resumed", "signal", "exit", "strace_message", "strace_message",
              "stack_frame", "blank", "unparsed")

# Timestamp kinds and result states.
TS_NONE, TS_EPOCH, TS_WALL = 0, 1, 2
TS_NAMES = {TS_NONE: "none", TS_EPOCH: "epoch", TS_WALL: "wall-clock"}
RES_UNKNOWN, RES_OK, RES_ERROR = 0, 1, 2
_SIGNAL_VALUES = {int(s) for s in _signal.Signals}

# Fields of a parsed line, in matrix column order. u64 values are stored as their int64 bit
# pattern. F_HINT/F_HAS_HINT: mremap's fifth argument. F_RET: the result (or, for an exit line,
# the exit status; for an attach message, the attached pid).
(F_KIND, F_PID, F_TS, F_TS_KIND, F_OP, F_ADDR, F_LEN, F_NEW_LEN, F_PROT, F_FLAGS, F_FD, F_OFFSET,
 F_ADVICE, F_HINT, F_HAS_HINT, F_RET, F_ERRNO, F_RES, F_DUR, F_POS) = range(20)
NFIELDS = 20


class ParsedLine(NamedTuple):
    """What one strace line says (the first 19 matrix fields; the line number is added later)."""

    kind: int = K_UNPARSED
    pid: int = -1
    ts_ns: int = 0
    ts_kind: int = TS_NONE
    op: int = -1
    addr: int = 0
    length: int = 0
    new_length: int = 0
    prot: int = 0
    flags: int = 0
    fd: int = 0
    offset: int = 0
    advice: int = 0
    hint: int = 0
    has_hint: int = 0
    ret: int = 0
    errno: int = 0
    result: int = RES_UNKNOWN
    duration_ns: int = -1


# ---------------------------------------------------------------------------------------------
# Symbolic names strace prints. Class ids are shared with the fast path's lookup table.
CLS_PROT, CLS_MAP, CLS_MREMAP, CLS_MADV, CLS_ERRNO, CLS_SYSCALL, CLS_SHIFT = range(1, 8)

# Names newer than (or outside) the schema's uapi tables that strace may print.
_HUGE_SHIFTS = {"64KB": 16, "512KB": 19, "1MB": 20, "2MB": 21, "8MB": 23, "16MB": 24, "32MB": 25,
                "256MB": 28, "512MB": 29, "1GB": 30, "2GB": 31, "16GB": 34}
EXTRA_MAP = {"MAP_DROPPABLE": 0x08, "MAP_ABOVE4G": 0x80,
             **{f"MAP_HUGE_{size}": shift << 26 for size, shift in _HUGE_SHIFTS.items()}}
# Kernel-internal errors strace shows for interrupted calls (include/linux/errno.h).
KERNEL_ERRNO = {"ERESTARTSYS": 512, "ERESTARTNOINTR": 513, "ERESTARTNOHAND": 514,
                "ENOIOCTLCMD": 515, "ERESTART_RESTARTBLOCK": 516, "EPROBE_DEFER": 517,
                "EOPENSTALE": 518, "ENOPARAM": 519, "EBADHANDLE": 521, "ENOTSYNC": 522,
                "EBADCOOKIE": 523, "ENOTSUPP": 524, "ETOOSMALL": 525, "ESERVERFAULT": 526,
                "EBADTYPE": 527, "EJUKEBOX": 528, "EIOCBQUEUED": 529, "ERECALLCONFLICT": 530,
                "ENOGRACE": 531}
ERRNO = {name: value for name, value in vars(_errno).items()
         if name.startswith("E") and isinstance(value, int) and 0 < value <= 4095}
ERRNO.update(KERNEL_ERRNO)

NAME_TABLES = {
    CLS_PROT: dict(PROT),
    CLS_MAP: {**MAP, **EXTRA_MAP},
    CLS_MREMAP: dict(MREMAP),
    CLS_MADV: dict(MADV),
    CLS_ERRNO: ERRNO,
    CLS_SYSCALL: dict(OP_CODE),
    CLS_SHIFT: {"MAP_HUGE_SHIFT": 26},
}


class _Unparsed(Exception):
    """Internal: the line does not follow the form it started like."""


def _i64(value: int) -> int:
    """A u64 value as the int64 bit pattern the record matrix stores."""
    return value - (1 << 64) if value > I64_MAX else value


def _unum(text: str) -> int:
    value = int(text[2:], 16) if text.startswith("0x") else int(text)
    if value > U64_MAX:
        raise _Unparsed
    return value


def _addr(text: str) -> int:
    return 0 if text == "NULL" else _unum(text)


def _fd(text: str) -> int:
    if text.startswith("-"):
        value = -int(text[1:])
    else:
        value = _unum(text)
        if value in (0xFFFFFFFF, U64_MAX):  # raw modes print the int -1 as an unsigned register
            value = -1
    if value < -1 or value > I32_MAX:
        raise _Unparsed
    return value


_TERM = re.compile(r"(?:(?P<name>[A-Z][A-Z0-9_]*)|(?P<num>0x[0-9a-f]+|[0-9]+)"
                   r"(?:<<(?P<shift>[A-Z][A-Z0-9_]*))?)\Z", re.ASCII)
# The comment strace appends to numeric values ('0x3 /* PROT_READ|PROT_WRITE */', '0x42 /*
# MADV_??? */') holds names, hex, '|', '?' and '<<' only.
_EXPR = re.compile(r"(?P<terms>[^ ,/]+)(?: /\*[A-Za-z0-9_|?< ]*\*/)?\Z", re.ASCII)


def _expr(text: str, cls: int) -> int:
    """'PROT_READ|PROT_WRITE', 'MAP_HUGETLB|21<<MAP_HUGE_SHIFT', '0x3 /* PROT_READ|... */'."""
    match = _EXPR.match(text)
    if not match:
        raise _Unparsed
    names = NAME_TABLES[cls]
    value = 0
    for term in match.group("terms").split("|"):
        part = _TERM.match(term)
        if not part:
            raise _Unparsed
        if part.group("name"):
            if part.group("name") not in names:
                raise _Unparsed
            value |= names[part.group("name")]
        else:
            number = _unum(part.group("num"))
            if part.group("shift"):
                if part.group("shift") not in NAME_TABLES[CLS_SHIFT]:
                    raise _Unparsed
                number <<= NAME_TABLES[CLS_SHIFT][part.group("shift")]
                if number > U64_MAX:
                    raise _Unparsed
            value |= number
    return value


def _int31(value: int) -> int:
    """prot and advice: non-negative C ints."""
    if value > I32_MAX:
        raise _Unparsed
    return value


def _int32(value: int) -> int:
    """flags: a C int, so bit 31 makes it negative, as the kernel sees it."""
    if value > 0xFFFFFFFF:
        raise _Unparsed
    return value - (1 << 32) if value > I32_MAX else value


_A = r"(?:NULL|0x[0-9a-f]+|[0-9]+)"
_N = r"(?:0x[0-9a-f]+|[0-9]+)"
_X = r"[^,]+"
_ARGS = {
    MMAP: re.compile(rf"(?P<a>{_A}), (?P<l>{_N}), (?P<p>{_X}), (?P<f>{_X}), "
                     rf"(?P<fd>-?[0-9]+|0x[0-9a-f]+)(?:<.*>)?, (?P<o>{_N})\Z", re.ASCII),
    MUNMAP: re.compile(rf"(?P<a>{_A}), (?P<l>{_N})\Z", re.ASCII),
    MREMAP_OP: re.compile(rf"(?P<a>{_A}), (?P<l>{_N}), (?P<nl>{_N}), (?P<f>{_X})"
                          rf"(?:, (?P<h>{_A}))?\Z", re.ASCII),
    MADVISE: re.compile(rf"(?P<a>{_A}), (?P<l>{_N}), (?P<adv>{_X})\Z", re.ASCII),
    MPROTECT: re.compile(rf"(?P<a>{_A}), (?P<l>{_N}), (?P<p>{_X})\Z", re.ASCII),
    BRK: re.compile(rf"(?P<a>{_A})\Z", re.ASCII),
}


def _args(op: int, text: str) -> dict:
    match = _ARGS[op].match(text)
    if not match:
        raise _Unparsed
    g = match.group
    fields = {"addr": _i64(_addr(g("a")))}
    if op != BRK:
        fields["length"] = _i64(_unum(g("l")))
    if op == MMAP:
        offset = _unum(g("o"))
        if offset > I64_MAX:
            raise _Unparsed
        fields.update(prot=_int31(_expr(g("p"), CLS_PROT)), flags=_int32(_expr(g("f"), CLS_MAP)),
                      fd=_fd(g("fd")), offset=offset)
    elif op == MREMAP_OP:
        fields.update(new_length=_i64(_unum(g("nl"))), flags=_int32(_expr(g("f"), CLS_MREMAP)))
        if g("h") is not None:
            fields.update(hint=_i64(_addr(g("h"))), has_hint=1)
    elif op == MADVISE:
        fields["advice"] = _int31(_expr(g("adv"), CLS_MADV))
    elif op == MPROTECT:
        fields["prot"] = _int31(_expr(g("p"), CLS_PROT))
    return fields


# Line forms. The prefix: pid column or [pid N], then the timestamp, then -n / -i brackets.
_BLANK = re.compile(r"[ \t]*\Z")
_PREFIX = re.compile(
    r"(?:\[pid +(?P<bpid>[0-9]+)\] |(?P<pid>[0-9]+) +)?"
    r"(?:(?P<es>[0-9]+)\.(?P<ef>[0-9]+) |(?P<hh>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<ss>[0-9]{2})"
    r"(?:\.(?P<tf>[0-9]+))? )?"
    r"(?:\[ *[0-9]+\] )?(?:\[(?:[0-9a-f]{16}|[0-9a-f]{8}|\?{16}|\?{8})\] )?", re.ASCII)
_RESULT = (r"(?:(?P<hex>0x[0-9a-f]+)|(?P<dec>[0-9]+)|-1 (?P<err>E[A-Z0-9_]+) \([^)]*\))"
           r"(?: <(?P<ds>[0-9]+)\.(?P<df>[0-9]+)>)?\Z")
_CALL_HEAD = re.compile(r"(?P<name>[a-z_][a-z0-9_]*)\(", re.ASCII)
_CALL_DEAD = re.compile(r".* <unfinished \.\.\.>\) += \?.*\Z", re.ASCII | re.DOTALL)
_CALL_UNFINISHED = re.compile(r"(?P<args>.*) <unfinished \.\.\.>\Z", re.ASCII | re.DOTALL)
_CALL_UNKNOWN = re.compile(r"(?P<args>.*)\) += \?(?: .*)?\Z", re.ASCII | re.DOTALL)
_CALL_DONE = re.compile(r"(?P<args>.*)\) += " + _RESULT, re.ASCII | re.DOTALL)
_RESUMED_HEAD = re.compile(r"<\.\.\. (?P<name>[a-z_][a-z0-9_]*) resumed>", re.ASCII)
_RESUMED_DEAD = re.compile(r" <unfinished \.\.\.>\) += \?.*\Z", re.ASCII | re.DOTALL)
_RESUMED_UNKNOWN = re.compile(r"\) += \?(?: .*)?\Z", re.ASCII | re.DOTALL)
_RESUMED_DONE = re.compile(r"\) += " + _RESULT, re.ASCII)
_SIGNAL = re.compile(r"--- .* ---\Z", re.ASCII | re.DOTALL)
_EXIT = re.compile(r"\+\+\+ (?P<what>.*) \+\+\+\Z", re.ASCII | re.DOTALL)
_EXITED = re.compile(r"exited with (?P<status>[0-9]{1,3})\Z", re.ASCII)
_KILLED = re.compile(r"killed by (?P<sig>SIG[A-Z0-9_]+)(?: \(core dumped\))?\Z", re.ASCII)
# strace names itself by its argv[0]: "strace: ..." or "/usr/bin/strace: ...".
_ATTACH = re.compile(r"(?:[^ ]*/)?strace: Process (?P<pid>[0-9]{1,10}) attached\Z", re.ASCII)
_MESSAGE = re.compile(r"(?:(?:[^ ]*/)?strace: .*|\[ Process PID=[0-9]+ runs in .* mode\. \])\Z",
                      re.ASCII | re.DOTALL)
_STACK = re.compile(r" *> .*\Z", re.ASCII | re.DOTALL)
_MM_MENTION = re.compile(r"\b(mmap|munmap|mremap|madvise|mprotect|brk)\(|"
                         r"<\.\.\. (mmap|munmap|mremap|madvise|mprotect|brk) resumed>", re.ASCII)


def _seconds_ns(seconds: str, fraction: str) -> int:
    if len(fraction) > 9 or int(seconds) > MAX_SECONDS:
        raise _Unparsed
    return int(seconds) * NS + int(fraction.ljust(9, "0"))


def _result(match: re.Match) -> dict:
    g = match.group
    fields: dict = {"result": RES_OK}
    if g("hex") is not None:
        fields["ret"] = _i64(_unum(g("hex")))
    elif g("dec") is not None:
        fields["ret"] = _i64(_unum(g("dec")))
    else:
        if g("err") not in ERRNO:
            raise _Unparsed
        fields.update(errno=ERRNO[g("err")], result=RES_ERROR)
    if g("ds") is not None:
        fields["duration_ns"] = _seconds_ns(g("ds"), g("df"))
    return fields


def _signal_number(name: str) -> int:
    try:
        return int(_signal.Signals[name])
    except KeyError:
        return 0


def parse_line(text: str) -> ParsedLine:
    """The reference parser: what one strace line (without its newline) means."""
    text = text.rstrip("\r")
    if _BLANK.match(text):
        return ParsedLine(K_BLANK)
    try:
        return _parse_prefixed(text)
    except (_Unparsed, ValueError):
        mention = _MM_MENTION.search(text)
        op = OP_CODE[mention.group(1) or mention.group(2)] if mention else -1
        return ParsedLine(K_UNPARSED, op=op)


def _parse_prefixed(text: str) -> ParsedLine:
    prefix = _PREFIX.match(text)
    g = prefix.group
    pid = -1
    if g("bpid") is not None or g("pid") is not None:
        pid = int(g("bpid") if g("bpid") is not None else g("pid"))
        if pid > I32_MAX:
            raise _Unparsed
    ts, ts_kind = 0, TS_NONE
    if g("es") is not None:
        ts, ts_kind = _seconds_ns(g("es"), g("ef")), TS_EPOCH
    elif g("hh") is not None:
        hours, minutes, seconds = int(g("hh")), int(g("mi")), int(g("ss"))
        if hours > 23 or minutes > 59 or seconds > 60:
            raise _Unparsed
        ts = _seconds_ns(str((hours * 60 + minutes) * 60 + seconds), g("tf") or "")
        ts_kind = TS_WALL
    body = text[prefix.end():]
    common = {"pid": pid, "ts_ns": ts, "ts_kind": ts_kind}

    head = _CALL_HEAD.match(body)
    if head:
        return _parse_call(body, head, common)
    if body.startswith("<... "):
        head = _RESUMED_HEAD.match(body)
        if not head:
            raise _Unparsed
        op = OP_CODE.get(head.group("name"), -1)
        if op < 0:
            return ParsedLine(K_IGNORED_RESUMED, **common)
        rest = head.end()
        if done := _RESUMED_DONE.match(body, rest):
            return ParsedLine(K_RESUMED, op=op, **_result(done), **common)
        if _RESUMED_DEAD.match(body, rest) or _RESUMED_UNKNOWN.match(body, rest):
            return ParsedLine(K_RESUMED, op=op, result=RES_UNKNOWN, **common)
        raise _Unparsed
    if body.startswith("--- "):
        if not _SIGNAL.match(body):
            raise _Unparsed
        return ParsedLine(K_SIGNAL, **common)
    if body.startswith("+++ "):
        exit_line = _EXIT.match(body)
        if not exit_line:
            raise _Unparsed
        what = exit_line.group("what")
        if (exited := _EXITED.match(what)) and int(exited.group("status")) <= 255:
            return ParsedLine(K_EXIT, ret=int(exited.group("status")), result=RES_OK, **common)
        if killed := _KILLED.match(what):
            return ParsedLine(K_EXIT, errno=_signal_number(killed.group("sig")), result=RES_ERROR,
                              **common)
        return ParsedLine(K_EXIT, **common)
    if attach := _ATTACH.match(body):
        return ParsedLine(K_ATTACH, ret=int(attach.group("pid")), **common)
    if _MESSAGE.match(body):
        return ParsedLine(K_MESSAGE, **common)
    if _STACK.match(body):
        return ParsedLine(K_STACK, **common)
    raise _Unparsed


def _parse_call(body: str, head: re.Match, common: dict) -> ParsedLine:
    op = OP_CODE.get(head.group("name"), -1)
    if op < 0:
        return ParsedLine(K_IGNORED, **common)
    rest = head.end()
    if "<unfinished ...>" in body:  # a cheap guard before the two regexes that need it
        if _CALL_DEAD.match(body, rest):
            return ParsedLine(K_CALL, op=op, result=RES_UNKNOWN, **common)
        if unfinished := _CALL_UNFINISHED.match(body, rest):
            return ParsedLine(K_UNFINISHED, op=op, **_args(op, unfinished.group("args")),
                              **common)
    if done := _CALL_DONE.match(body, rest):
        return ParsedLine(K_CALL, op=op, **_args(op, done.group("args")), **_result(done),
                          **common)
    if _CALL_UNKNOWN.match(body, rest):
        return ParsedLine(K_CALL, op=op, result=RES_UNKNOWN, **common)
    raise _Unparsed


# ---------------------------------------------------------------------------------------------
# Reading: decompression by magic bytes, bounded chunks that end on a newline.

_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
          (b"BZh", "bzip2"))
_COMPRESSED_SUFFIXES = (".gz", ".xz", ".zst", ".zstd", ".bz2")


class _CountingReader:
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


class _LogReader:
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
        self.raw = _CountingReader(raw)
        self.compression = None
        for magic, name in _MAGIC:
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


def _tokenize_reference(chunk: bytes) -> np.ndarray:
    lines = chunk.decode("latin-1").split("\n")
    lines.pop()  # the chunk ends with a newline
    records = np.empty((NFIELDS, len(lines)), np.int64)
    if lines:
        records[:F_POS] = np.array([parse_line(line) for line in lines], dtype=np.int64).T
    return records


def _tokenize_fast(chunk: bytes) -> np.ndarray:
    from .strace_fast import tokenize_chunk

    return tokenize_chunk(chunk)


# ---------------------------------------------------------------------------------------------
# Assembly: one file's records -> rows, per chunk, with unfinished calls carried across chunks.

# Row columns, with the dtype each is kept in. pos: the line the row is placed at; place_ts:
# when the call took effect (orders rows across -ff files); tid stays int64 until pid-less
# lines are resolved.
ROW_DTYPES = {
    "pos": np.int64, "place_ts": np.int64, "tid": np.int64, "op": np.int8,
    "addr": np.uint64, "length": np.uint64, "new_addr": np.uint64, "new_addr_ok": np.bool_,
    "new_length": np.uint64, "hint": np.uint64, "hint_ok": np.bool_, "prot": np.int32,
    "flags": np.int32, "fd": np.int32, "offset": np.int64, "advice": np.int32,
    "errno": np.int32, "ts": np.int64, "duration": np.int64,
}
_CALL_LIKE = np.zeros(N_KINDS, bool)
_CALL_LIKE[[K_CALL, K_UNFINISHED, K_RESUMED, K_IGNORED, K_IGNORED_RESUMED, K_SIGNAL,
            K_EXIT]] = True
_REMOVAL = np.zeros(len(OPS) + 1, bool)  # indexed by op code (-1 wraps to the last slot)
_REMOVAL[REMOVAL_OPS] = True
_FF_SUFFIX = re.compile(r"\.([0-9]{1,10})\Z")


def ff_pid_of(path: str | Path) -> int | None:
    """The PID of an `strace -ff -o LOG` file named LOG.PID (compression suffix allowed)."""
    name = Path(path).name
    for suffix in _COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    match = _FF_SUFFIX.search(name)
    return int(match.group(1)) if match and int(match.group(1)) <= I32_MAX else None


def _empty_rows() -> dict:
    return {name: np.empty(0, dtype) for name, dtype in ROW_DTYPES.items()}


def _concat_rows(parts: list[dict]) -> dict:
    if not parts:
        return _empty_rows()
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in ROW_DTYPES}


def _take_rows(rows: dict, index: np.ndarray) -> dict:
    return {name: values[index] for name, values in rows.items()}


class _FileImport:
    """Streaming state for one log file."""

    def __init__(self, name: str):
        self.name = name
        self.counts = np.zeros(N_KINDS, np.int64)
        self.lines = 0
        self.ts_kind: int | None = None
        self.durations = False
        self.prev_wall_ns: int | None = None
        self.days = 0
        self.carry = np.empty((NFIELDS, 0), np.int64)
        self.parts: list[dict] = []
        self.row_count = 0  # rows in parts
        self.rows = _empty_rows()
        self.first = {"unparsed": [], "unknown": [], "unmatched": []}
        self.unparsed_mm = 0
        self.unknown_by_op = np.zeros(len(OPS), np.int64)
        self.unmatched_unfinished = 0
        self.unmatched_resumed = 0
        self.seen_pids: set[int] = set()
        self.attached: set[int] = set()
        self.leader: int | None = None
        self.first_pid: int | None = None
        self.exits: dict[int, tuple[int, int]] = {}  # pid -> (result state, status or signal)
        self.default_tid: tuple[int, str] | None = None

    def _note(self, which: str, positions: np.ndarray) -> None:
        """Keep the first few line numbers of each kind of problem, for the report."""
        if positions.size:
            kept = self.first[which]
            kept.extend(np.sort(positions)[:FIRST_LINES_KEPT].tolist())
            kept.sort()
            del kept[FIRST_LINES_KEPT:]

    def feed(self, m: np.ndarray) -> None:
        """Take one chunk's records (NFIELDS x lines, F_POS holding line numbers)."""
        kind = m[F_KIND]
        call_like = _CALL_LIKE[kind]
        if call_like.any():
            if self.ts_kind is None:
                self.ts_kind = int(m[F_TS_KIND, np.argmax(call_like)])
            # A file keeps one timestamp format; a line in another one is not understood.
            odd = call_like & (m[F_TS_KIND] != self.ts_kind)
            if odd.any():
                kind[odd] = K_UNPARSED
                call_like &= ~odd
        counts = np.bincount(kind, minlength=N_KINDS)
        self.counts += counts
        self.lines += m.shape[1]
        if counts[K_UNPARSED]:
            unparsed = kind == K_UNPARSED
            self.unparsed_mm += int((unparsed & (m[F_OP] >= 0)).sum())
            self._note("unparsed", m[F_POS, unparsed])
        if counts[K_EXIT] or counts[K_ATTACH] or self.leader is None:
            self._track_processes(m, kind, call_like)
        if self.ts_kind == TS_WALL and call_like.any():
            self._unwrap_midnight(m, call_like)
        self._assemble(m, kind, counts)

    def _track_processes(self, m, kind, call_like) -> None:
        """First pid, exit statuses, and the leader of a `strace -f` log written to stderr.

        There, lines without a [pid N] prefix belong to the traced command's first process
        (strace omits the prefix while it traces one process): the leader is the prefixed pid
        that strace never announced as 'Process N attached'.
        """
        for i in np.flatnonzero(kind == K_EXIT).tolist():
            # pid -1: a log without pids, or the last process of a [pid N] log
            value = m[F_RET, i] if m[F_RES, i] == RES_OK else m[F_ERRNO, i]
            self.exits.setdefault(int(m[F_PID, i]), (int(m[F_RES, i]), int(value)))
        with_pid = call_like & (m[F_PID] >= 0)
        attach = np.flatnonzero(kind == K_ATTACH)
        if not with_pid.any() and not attach.size:
            return
        pids, first_rows = np.unique(m[F_PID, with_pid], return_index=True)
        positions = m[F_POS, with_pid][first_rows]
        events = [(int(pos), 1, int(pid)) for pid, pos in zip(pids, positions)
                  if int(pid) not in self.seen_pids]
        events += [(int(m[F_POS, i]), 0, int(m[F_RET, i])) for i in attach.tolist()]
        for _, is_line, pid in sorted(events):
            if not is_line:
                self.attached.add(pid)
                continue
            self.seen_pids.add(pid)
            if self.first_pid is None:
                self.first_pid = pid
            if self.leader is None and pid not in self.attached:
                self.leader = pid

    def _unwrap_midnight(self, m, call_like) -> None:
        lines = np.flatnonzero(call_like)
        wall = m[F_TS, lines]
        previous = np.empty_like(wall)
        previous[0] = wall[0] if self.prev_wall_ns is None else self.prev_wall_ns
        previous[1:] = wall[:-1]
        # A clock that jumps back by more than half a day crossed midnight.
        days = self.days + np.cumsum(wall < previous - DAY_NS // 2)
        m[F_TS, lines] = wall + days * DAY_NS
        self.prev_wall_ns = int(wall[-1])
        self.days = int(days[-1])

    def _assemble(self, m: np.ndarray, kind: np.ndarray, counts: np.ndarray) -> None:
        if counts[K_CALL]:
            # Complete calls need no pairing: straight from the chunk to rows.
            calls = m if counts[K_CALL] == m.shape[1] else m[:, kind == K_CALL]
            self._emit(calls, calls, paired=False)
        if not (counts[K_UNFINISHED] or counts[K_RESUMED] or self.carry.shape[1]):
            return
        # The split calls are few: copy them, after the ones still waiting from earlier chunks.
        split = m[:, (kind == K_UNFINISHED) | (kind == K_RESUMED)]
        if self.carry.shape[1]:
            split = np.concatenate([self.carry, split], axis=1)
        key = split[F_PID].copy()  # thread of each line, for pairing
        if self.leader is not None:
            key[key < 0] = self.leader
        order = np.argsort(key, kind="stable")  # per thread, in line order
        k, kd, op = key[order], split[F_KIND, order], split[F_OP, order]
        same = k[1:] == k[:-1]
        match = same & (kd[:-1] == K_UNFINISHED) & (kd[1:] == K_RESUMED) & (op[:-1] == op[1:])
        matched = np.zeros(len(order), bool)
        matched[:-1] |= match
        matched[1:] |= match
        last_of_thread = np.ones(len(order), bool)
        last_of_thread[:-1] = ~same
        waiting = ~matched & (kd == K_UNFINISHED)
        self.carry = split[:, np.sort(order[waiting & last_of_thread])]  # may resume later
        lost = order[(waiting & ~last_of_thread) | (~matched & (kd == K_RESUMED))]
        if lost.size:
            self.unmatched_unfinished += int((split[F_KIND, lost] == K_UNFINISHED).sum())
            self.unmatched_resumed += int((split[F_KIND, lost] == K_RESUMED).sum())
            self._note("unmatched", split[F_POS, lost])
        if match.any():
            self._emit(split[:, order[:-1][match]], split[:, order[1:][match]], paired=True)

    def _emit(self, a: np.ndarray, b: np.ndarray, paired: bool) -> None:
        """Rows from argument records ``a`` and result records ``b`` (the same for complete
        calls); calls whose result is '?' are counted, not imported."""
        unknown = b[F_RES] == RES_UNKNOWN
        if unknown.any():
            np.add.at(self.unknown_by_op, a[F_OP, unknown], 1)
            self._note("unknown", b[F_POS, unknown])
            a = a[:, ~unknown]
            b = a if not paired else b[:, ~unknown]
        if a.shape[1]:
            self.parts.append(_rows(a, b, paired))
            self.row_count += a.shape[1]

    def finish(self, tid: int | None, path: Path) -> dict:
        if self.carry.shape[1]:
            self.unmatched_unfinished += self.carry.shape[1]
            self._note("unmatched", self.carry[F_POS])
            self.carry = self.carry[:, :0]
        rows = _concat_rows(self.parts)
        self.parts = []
        if len(rows["pos"]) > 1 and (np.diff(rows["pos"]) < 0).any():
            rows = _take_rows(rows, np.argsort(rows["pos"], kind="stable"))
        pidless = rows["tid"] < 0
        if pidless.any():
            if tid is not None:
                value, source = tid, "--tid"
            elif self.leader is not None:
                value, source = self.leader, "leader of the [pid N] lines"
            elif (suffix := ff_pid_of(path)) is not None:
                value, source = suffix, "file name suffix (strace -ff)"
            else:
                value, source = 0, "unknown (no pid in the log; pass --tid)"
            rows["tid"][pidless] = value
            self.default_tid = (value, source)
        self.rows = rows
        self.durations = bool((rows["duration"] >= 0).any())
        return {"tid_for_lines_without_pid": None if self.default_tid is None
                else {"tid": self.default_tid[0], "source": self.default_tid[1]}}


def _rows(a: np.ndarray, b: np.ndarray, paired: bool) -> dict:
    """Trace rows (typed columns) from argument records ``a`` and result records ``b``."""
    op = a[F_OP]
    ok = b[F_RES] == RES_OK
    is_mmap = op == MMAP
    removal = _REMOVAL[op]
    ts, dur = a[F_TS], b[F_DUR]
    if paired:
        place_pos = np.where(removal, a[F_POS], b[F_POS])
        place_ts = np.where(removal, ts, b[F_TS])
    else:
        place_pos = a[F_POS].copy()
        place_ts = np.where(removal, ts, ts + np.maximum(dur, 0))
    return {
        "pos": place_pos,
        "place_ts": place_ts,
        "tid": a[F_PID].copy(),
        "op": op.astype(np.int8),
        # np.where makes new arrays: reinterpret their int64 bit patterns in place
        "addr": np.where(is_mmap, np.where(ok, b[F_RET], 0), a[F_ADDR]).view(np.uint64),
        "length": np.where(op == BRK, 0, a[F_LEN]).view(np.uint64),
        "new_addr": b[F_RET].astype(np.uint64),
        "new_addr_ok": ((op == MREMAP_OP) | (op == BRK)) & ok,
        "new_length": a[F_NEW_LEN].astype(np.uint64),
        "hint": np.where(is_mmap, a[F_ADDR], a[F_HINT]).view(np.uint64),
        "hint_ok": is_mmap | ((op == MREMAP_OP) & (a[F_HAS_HINT] == 1)),
        "prot": a[F_PROT].astype(np.int32),
        "flags": a[F_FLAGS].astype(np.int32),
        "fd": a[F_FD].astype(np.int32),
        "offset": a[F_OFFSET].copy(),
        "advice": a[F_ADVICE].astype(np.int32),
        "errno": b[F_ERRNO].astype(np.int32),
        "ts": ts.copy(),
        "duration": dur.copy(),
    }


# ---------------------------------------------------------------------------------------------
# Whole import.

class ImportResult(NamedTuple):
    table: pa.Table  # validated trace rows, no metadata yet
    report: dict


def _order_rows(files: list[_FileImport], ts_kind: int) -> dict:
    """All rows in replay order: line order within a file; across files (strace -ff), by the
    time each call took effect (start for removals, completion for creations)."""
    if len(files) <= 1:
        return files[0].rows if files else _empty_rows()
    rows = _concat_rows([state.rows for state in files])
    if ts_kind == TS_NONE:
        return rows  # files in the order given, each in line order
    file_index = np.concatenate([np.full(len(state.rows["pos"]), index, np.int64)
                                 for index, state in enumerate(files)])
    # Placement times, made non-decreasing within each file so a file's own order survives.
    place = np.concatenate([np.maximum.accumulate(state.rows["place_ts"])
                            if len(state.rows["pos"]) else state.rows["place_ts"]
                            for state in files])
    return _take_rows(rows, np.lexsort((rows["pos"], file_index, place)))


def _clamp_per_thread(tid: np.ndarray, ts: np.ndarray) -> int:
    """Make each thread's timestamps non-decreasing in row order (in place); return rows moved.

    strace's clock can step back slightly between the lines of different threads' calls that
    the assembly puts in a new order; the replay needs a monotonic clock per thread.
    """
    if len(ts) < 2:
        return 0
    order = np.argsort(tid, kind="stable")
    grouped_tid = tid[order]
    bounds = np.flatnonzero(grouped_tid[1:] != grouped_tid[:-1]) + 1
    moved = 0
    for segment in np.split(order, bounds):
        values = ts[segment]
        fixed = np.maximum.accumulate(values)
        changed = fixed != values
        if changed.any():
            moved += int(changed.sum())
            ts[segment] = fixed
    return moved


def _table(rows: dict, ts_kind: int) -> tuple[pa.Table, int]:
    n = len(rows["pos"])
    op = rows["op"]
    if ts_kind == TS_NONE or not n:
        ts = np.arange(n, dtype=np.int64)
    else:
        ts = rows["ts"] - rows["ts"].min()
    tid = rows["tid"].astype(np.int32)
    clamped = _clamp_per_thread(tid, ts)

    def masked(values, valid, typ):
        return pa.array(values, typ, mask=~valid)

    is_mmap, is_mremap = op == MMAP, op == MREMAP_OP
    duration = rows["duration"]
    columns = {
        "ts_ns": ts,
        "tid": tid,
        "op": op,
        "addr": rows["addr"],
        "length": rows["length"],
        "new_addr": masked(rows["new_addr"], rows["new_addr_ok"], pa.uint64()),
        "new_length": masked(rows["new_length"], is_mremap, pa.uint64()),
        "hint": masked(rows["hint"], rows["hint_ok"], pa.uint64()),
        "prot": masked(rows["prot"], is_mmap | (op == MPROTECT), pa.int32()),
        "flags": masked(rows["flags"], is_mmap | is_mremap, pa.int32()),
        "fd": masked(rows["fd"], is_mmap, pa.int32()),
        "offset": masked(rows["offset"], is_mmap, pa.int64()),
        "advice": masked(rows["advice"], op == MADVISE, pa.int32()),
        "errno": rows["errno"],
        "duration_ns": masked(duration, duration >= 0, pa.int64()),
    }
    return build_table(columns), clamped


# At most this many mm calls by default (--max-events): a replay of more needs gigabytes.
DEFAULT_MAX_EVENTS = 10_000_000
# Memory an imported call takes until the trace is written: its row (~100 bytes) about three
# times over (the chunks' parts, their concatenation, the ordered table).
IMPORT_BYTES_PER_EVENT = 320


def _check_import_size(path: Path, state: "_FileImport", rows: int, max_events: int) -> None:
    if rows > max_events:
        raise MmreplayError(f"{path}: more than {max_events} mm calls by line {state.lines}; "
                            "refusing to import them (raise --max-events if this machine can "
                            "take it)")
    available = available_memory_bytes()
    if available is not None and rows * IMPORT_BYTES_PER_EVENT > available // 2:
        raise MmreplayError(f"{path}: {rows} mm calls by line {state.lines} would need about "
                            f"{fmt_bytes(rows * IMPORT_BYTES_PER_EVENT)} to import, more than half "
                            f"of the {fmt_bytes(available)} available; refusing to import them")


def import_logs(paths: Sequence[str | Path], *, tid: int | None = None, fast: bool | str = "auto",
                chunk_bytes: int = CHUNK_BYTES, progress: Callable[[int], None] | None = None,
                names: Sequence[str] | None = None,
                interrupted: Callable[[], bool] | None = None,
                max_events: int = DEFAULT_MAX_EVENTS) -> ImportResult:
    """Parse strace logs (plain, .gz, .xz, .zst, .bz2) into trace rows and an import report.

    Several files are one recording split by ``strace -ff`` (or several processes): their rows
    are merged by time. ``tid`` names the thread of lines that carry no pid. ``fast``: True,
    False (reference parser only) or "auto" (fast path for logs over ``FAST_MIN_BYTES``).
    ``progress`` is called with the compressed bytes consumed so far (all files) after each
    chunk. ``names``: how
    the report calls each file (default: its path). When ``interrupted()`` turns true, reading
    stops at the next chunk and the calls imported so far are returned (report "interrupted").
    More than ``max_events`` calls, or more than half the memory available for the rows kept
    (checked after each bounded chunk), is refused: a few kilobytes of zstd can hold a log of
    tens of millions of lines.
    """
    _check_inputs(paths)
    if tid is not None and not 0 <= tid <= I32_MAX:
        raise MmreplayError(f"--tid {tid}: a thread id is between 0 and {I32_MAX}")
    files: list[_FileImport] = []
    file_notes = []
    parsers: set[str] = set()
    stopped = False
    consumed_total = 0  # compressed bytes read, all files
    kept = 0  # rows of the files before this one
    for index, path in enumerate(map(Path, paths)):
        state = _FileImport(names[index] if names else str(path))
        for records, consumed in _tokenized_chunks(_LogReader(path, chunk_bytes, interrupted), fast,
                                                    parsers):
            if records is not None:
                records[F_POS] = np.arange(state.lines + 1, state.lines + 1 + records.shape[1])
                state.feed(records)
                _check_import_size(path, state, kept + state.row_count, max_events)
            consumed_total += consumed
            if progress is not None:
                progress(consumed_total)
            if interrupted is not None and interrupted():
                stopped = True
                break
        file_notes.append(state.finish(tid, path))
        recognized = state.lines - int(state.counts[K_UNPARSED] + state.counts[K_BLANK])
        if state.lines and recognized == 0:
            first = state.first["unparsed"][0] if state.first["unparsed"] else 1
            raise MmreplayError(f"{path}: not an strace log (no line looks like strace output; "
                                f"first line that does not: {path}:{first})")
        files.append(state)
        kept += state.row_count
        if stopped:
            break

    kinds = {state.ts_kind for state in files if state.ts_kind is not None}
    if len(kinds) > 1:
        described = ", ".join(f"{state.name}: {TS_NAMES[state.ts_kind]}" for state in files
                              if state.ts_kind is not None)
        raise MmreplayError(f"the logs use different timestamp formats ({described}); "
                            "import them separately")
    ts_kind = kinds.pop() if kinds else TS_NONE
    rows = _order_rows(files, ts_kind)
    table, clamped = _table(rows, ts_kind)
    report = _report(files, file_notes, rows, ts_kind, clamped, parsers)
    report["interrupted"] = stopped
    return ImportResult(table, report)


def _tokenized_chunks(reader: _LogReader, fast: bool | str, parsers: set[str]):
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
                    tokenize = _tokenize_fast if use_fast else _tokenize_reference
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


def _check_inputs(paths: Sequence[str | Path]) -> None:
    """Every log exists and is a file, before any work (or any output) is done."""
    if not paths:
        raise MmreplayError("no strace log given")
    for path in map(Path, paths):
        if path.is_dir():
            raise MmreplayError(f"{path}: is a folder, not an strace log")
        if not path.exists():
            raise MmreplayError(f"{path}: no such file")


def _report(files, file_notes, rows, ts_kind, clamped, parsers) -> dict:
    counts = sum((state.counts for state in files), np.zeros(N_KINDS, np.int64))
    line_kinds: dict[str, int] = {}
    for kind, name in enumerate(KIND_NAMES):
        line_kinds[name] = line_kinds.get(name, 0) + int(counts[kind])
    op = rows["op"]
    failed = rows["errno"] != 0
    unknown = sum((state.unknown_by_op for state in files), np.zeros(len(OPS), np.int64))

    def first(which):
        return [f"{state.name}:{line}" for state in files
                for line in state.first[which]][:FIRST_LINES_KEPT]

    exit_info = None
    if files:
        # The traced command's first process: the leader of the first file.
        state = files[0]
        leader = state.leader if state.leader is not None else state.first_pid
        found = state.exits.get(leader) if leader is not None else None
        if found is None:
            found = state.exits.get(-1)  # its exit line carried no pid
        if found is not None:
            result, value = found
            exit_info = {"pid": leader}
            if result == RES_OK:
                exit_info["exit_status"] = value
            elif result == RES_ERROR:
                exit_info["signal"] = (_signal.Signals(value).name if value in _SIGNAL_VALUES
                                       else f"signal {value}")
    tid_notes = [dict(note["tid_for_lines_without_pid"], file=state.name)
                 for state, note in zip(files, file_notes) if note["tid_for_lines_without_pid"]]
    return {
        "files": [state.name for state in files],
        "parser": "+".join(sorted(parsers)) or "none",
        "lines": int(sum(state.lines for state in files)),
        "line_kinds": line_kinds,
        "mm_calls": {name: int(n) for name, n in zip(OPS, np.bincount(op, minlength=len(OPS)))},
        "mm_calls_total": int(len(op)),
        "failed_calls": {name: int(n) for name, n in
                         zip(OPS, np.bincount(op[failed], minlength=len(OPS))) if n},
        "ignored_calls": line_kinds["non_mm_call"],
        "signal_lines": line_kinds["signal"],
        "exit_lines": line_kinds["exit"],
        "unknown_results": {
            "count": int(unknown.sum()),
            "by_op": {name: int(unknown[code]) for code, name in enumerate(OPS) if unknown[code]},
            "first_lines": first("unknown"),
            "meaning": "result '?' (the process died or the call was restarted); not imported",
        },
        "unmatched": {
            "unfinished": int(sum(state.unmatched_unfinished for state in files)),
            "resumed": int(sum(state.unmatched_resumed for state in files)),
            "first_lines": first("unmatched"),
        },
        "unparsed": {
            "count": line_kinds["unparsed"],
            "mm": int(sum(state.unparsed_mm for state in files)),
            "first_lines": first("unparsed"),
        },
        "threads": int(len(np.unique(rows["tid"]))) if len(op) else 0,
        "timestamps": TS_NAMES[ts_kind],
        "durations": any(state.durations for state in files),
        "clamped_timestamps": int(clamped),
        "tid_for_lines_without_pid": tid_notes,
        "first_process": exit_info,
    }


def import_metadata(report: dict, **fields) -> dict:
    """Trace metadata for an import; ``fields`` (command, host, ...) come from ``record``."""
    fields.setdefault("host", None)
    if fields["host"] is None:
        fields.setdefault("host_note", "imported from an strace log: the recording host's "
                                       "kernel, CPU and THP settings are unknown")
    return new_metadata("strace", timestamps=report["timestamps"], strace_files=report["files"],
                        **{"import": report}, **fields)


def default_output(log: str | Path) -> Path:
    """bert.log.xz -> bert.arrow, trace.4412 (strace -ff) -> trace.arrow, next to the log."""
    path = Path(log)
    name = path.name
    for suffix in _COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    name = _FF_SUFFIX.sub("", name)
    for suffix in (".log", ".strace", ".txt", ".out"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return path.with_name((name or "trace") + ".arrow")


class SignalNotes:
    """While a long job runs: note SIGINT/SIGTERM/SIGHUP instead of dying, so the job can stop
    at a safe point and still write what it has (marked interrupted)."""

    SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)

    def __init__(self):
        self.pending: list[int] = []
        self.first: int | None = None
        self._saved: dict = {}

    @property
    def received(self) -> bool:
        return self.first is not None

    @property
    def name(self) -> str | None:
        return _signal.Signals(self.first).name if self.first is not None else None

    def _note(self, signum, frame) -> None:
        if self.first is None:
            self.first = signum
        self.pending.append(signum)

    def __enter__(self) -> "SignalNotes":
        if threading.current_thread() is threading.main_thread():  # signal() needs it
            for signum in self.SIGNALS:
                self._saved[signum] = _signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> bool:
        for signum, handler in self._saved.items():
            _signal.signal(signum, handler)
        return False


def import_to_file(paths: Sequence[str | Path], output: str | Path, *, tid: int | None = None,
                   progress: Callable[[int], None] | None = None,
                   max_events: int = DEFAULT_MAX_EVENTS) -> dict:
    """Import strace logs and write the trace; return the import report.

    SIGINT/SIGTERM stop the import at the next chunk: the calls read so far are written, with
    ``interrupted: true`` and the signal in the metadata (report["interrupted"] names it).
    """
    from .files import check_writable
    from .format import write_trace

    _check_inputs(paths)
    check_writable(output)
    with SignalNotes() as notes:
        result = import_logs(paths, tid=tid, progress=progress,
                             interrupted=lambda: notes.received, max_events=max_events)
        report = result.report
        report["interrupted"] = notes.name if report["interrupted"] else None
        fields = {"interrupted": True, "signal": notes.name} if report["interrupted"] else {}
        write_trace(result.table, output, import_metadata(report, **fields))
    return report


def format_report(report: dict) -> str:
    """The import report as text (each figure says what it counts)."""
    ops = ", ".join(f"{op} {n}" for op, n in report["mm_calls"].items() if n) or "none"
    failed = ", ".join(f"{op} {n}" for op, n in report["failed_calls"].items())
    lines = [
        f"logs         {', '.join(report['files'])}",
        f"lines        {report['lines']} read",
        f"mm calls     {report['mm_calls_total']} imported ({ops})",
        f"failed       {sum(report['failed_calls'].values())} of them failed, kept with errno"
        + (f" ({failed})" if failed else ""),
        f"ignored      {report['ignored_calls']} non-mm calls, {report['signal_lines']} signal "
        f"lines, {report['exit_lines']} exit lines, "
        f"{report['line_kinds']['strace_message']} strace messages",
    ]
    unknown = report["unknown_results"]
    if unknown["count"]:
        by_op = ", ".join(f"{op} {n}" for op, n in unknown["by_op"].items())
        lines.append(f"unknown      {unknown['count']} calls returned '?' ({by_op}), not imported; "
                     f"lines {', '.join(unknown['first_lines'])}")
    unmatched = report["unmatched"]
    if unmatched["unfinished"] or unmatched["resumed"]:
        lines.append(f"unmatched    {unmatched['unfinished']} unfinished calls never resumed, "
                     f"{unmatched['resumed']} resumed lines without a start; lines "
                     f"{', '.join(unmatched['first_lines'])}")
    unparsed = report["unparsed"]
    lines.append(f"unparsed     {unparsed['count']} lines ({unparsed['mm']} mention an mm call)"
                 + (f"; first at {', '.join(unparsed['first_lines'][:5])}"
                    if unparsed["count"] else ""))
    lines.append(f"threads      {report['threads']}")
    lines.append(f"timestamps   {report['timestamps']}"
                 + (", durations from -T" if report["durations"] else ", no durations (no -T)")
                 + (f"; {report['clamped_timestamps']} moved forward to keep each thread's "
                    "clock monotonic" if report["clamped_timestamps"] else ""))
    for note in report["tid_for_lines_without_pid"]:
        lines.append(f"tid          lines without a pid in {note['file']} -> thread "
                     f"{note['tid']} ({note['source']})")
    return "\n".join(lines) + "\n"
