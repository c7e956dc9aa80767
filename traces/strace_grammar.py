"""The strace vocabulary and the reference grammar: what one line of an strace log means.

The line forms (every one is handled):

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

``parse_line`` is the reference parser: plain Python, one compiled regex per line form, the
definition of what a line means. Its records (kinds, fields, name tables) are the vocabulary
the fast path (``strace_fast``) shares: both import them from here.
"""

from __future__ import annotations

import errno as _errno
import re
import signal as _signal
from typing import NamedTuple

import numpy as np

from .schema import MADV, MAP, MM_OPS, MREMAP, OP_CODE, OPS, PROT

U64_MAX = (1 << 64) - 1
I64_MAX = (1 << 63) - 1
I32_MAX = (1 << 31) - 1
MAX_SECONDS = 9_000_000_000  # epoch seconds and durations above this would overflow int64 ns
NS = 1_000_000_000
DAY_NS = 86_400 * NS
FIRST_LINES_KEPT = 10

MMAP, MUNMAP, MREMAP_OP, MADVISE, MPROTECT, BRK = (OP_CODE[name] for name in MM_OPS)
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
