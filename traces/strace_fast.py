"""The strace importer's fast path: a numba tokenizer over the raw bytes of a chunk of lines.

It understands the forms that make up nearly every line of a real log (complete mm calls with a
result, ``<unfinished ...>`` starts, ``<... resumed>`` ends, other syscalls, signals, blank
lines) and fills the same record fields as ``strace.parse_line``. Any line it is not certain of
is marked ``K_REF`` and handed to the reference parser, so the fast path can only be faster,
never different (tests/test_strace_properties.py checks the agreement).

Symbolic names (PROT_*, MAP_*, MADV_*, errno names, syscall names) are found through an
open-addressing table of their FNV-1a hashes, and confirmed byte by byte.
"""

from __future__ import annotations

import numpy as np

from .jit import njit
from .strace_grammar import (BRK, CLS_ERRNO, CLS_MADV, CLS_MAP, CLS_MREMAP, CLS_PROT, CLS_SHIFT,
                             CLS_SYSCALL, F_ADDR, F_ADVICE, F_DUR, F_ERRNO, F_FD, F_FLAGS,
                             F_HAS_HINT, F_HINT, F_KIND, F_LEN, F_NEW_LEN, F_OFFSET, F_OP, F_PID,
                             F_POS, F_PROT, F_RES, F_RET, F_TS, F_TS_KIND, I32_MAX, K_BLANK,
                             K_CALL, K_IGNORED, K_IGNORED_RESUMED, K_REF, K_RESUMED, K_SIGNAL,
                             K_UNFINISHED, MADVISE, MAX_SECONDS, MMAP, MPROTECT, MUNMAP,
                             NAME_TABLES, NFIELDS, RES_ERROR, RES_OK, TS_EPOCH, TS_WALL, parse_line)

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3


def fnv1a(data: bytes) -> int:
    value = FNV_OFFSET
    for byte in data:
        value = ((value ^ byte) * FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return value


def build_name_table():
    """(hashes, classes, values, name offsets, name lengths, name bytes, slots): entry arrays
    sorted by hash, and the open-addressing slots (entry index or -1) that find them."""
    entries = []
    for cls, names in NAME_TABLES.items():
        for name, value in names.items():
            entries.append((fnv1a(name.encode()), cls, value, name.encode()))
    entries.sort()
    hashes = [entry[0] for entry in entries]
    if len(set(hashes)) != len(hashes):
        raise RuntimeError("two strace names share an FNV-1a hash; the lookup table needs a "
                                   "different hash")
    blob = b"".join(entry[3] for entry in entries)
    offsets = np.cumsum([0] + [len(entry[3]) for entry in entries[:-1]])
    # Open addressing, a quarter full: most lookups hit on the first probe.
    size = 1 << max(6, (4 * len(entries) - 1).bit_length())
    slots = np.full(size, -1, np.int64)
    for index, value in enumerate(hashes):
        slot = value & (size - 1)
        while slots[slot] >= 0:
            slot = (slot + 1) & (size - 1)
        slots[slot] = index
    return (np.array(hashes, np.uint64), np.array([e[1] for e in entries], np.int64),
            np.array([e[2] for e in entries], np.int64), offsets.astype(np.int64),
            np.array([len(e[3]) for e in entries], np.int64), np.frombuffer(blob, np.uint8).copy(),
            slots)


# Module globals: numba freezes them into the compiled code, which makes a lookup five times
# cheaper than passing the arrays down. _check_frozen_table() guards the on-disk cache.
# The helpers below never allocate, so they run without numba's reference counting
# (_nrt=False): counting the array arguments of every call cost ~20-35 ns per call and kept
# LLVM from inlining them; only _tokenize, which allocates its output, keeps it.
TABLE = build_name_table()
_TH, _TC, _TV, _TO, _TL, _TB, _SLOTS = TABLE

_U0 = np.uint64(0)
_U10 = np.uint64(10)
_U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)
_U64_DIV10 = np.uint64(0xFFFFFFFFFFFFFFFF // 10)
_U5 = np.uint64(5)


@njit(cache=True, _nrt=False)
def _frozen_table_fingerprint():
    """Aggregates of the name table as compiled (and cached) into this module's functions."""
    folded = np.uint64(0)
    for k in range(_TH.size):
        folded ^= _TH[k] * np.uint64(k + 1)
    slots = np.int64(0)
    for k in range(_SLOTS.size):
        slots += _SLOTS[k] * (k + 1)
    return folded, _TV.sum(), _TC.sum(), _TO.sum(), _TL.sum(), _TB.sum(), slots


def _table_fingerprint():
    folded = np.uint64(0)
    for k, value in enumerate(_TH):
        folded ^= np.uint64((int(value) * (k + 1)) & 0xFFFFFFFFFFFFFFFF)
    slots = int((_SLOTS * np.arange(1, _SLOTS.size + 1)).sum())
    return (folded, _TV.sum(), _TC.sum(), _TO.sum(), _TL.sum(), _TB.astype(np.uint64).sum(),
            slots)


@njit(cache=True, _nrt=False)
def _lookup(buf, s, e, cls):
    """(found, value) of the name buf[s:e] in class ``cls``."""
    h = np.uint64(FNV_OFFSET)
    for k in range(s, e):
        h = (h ^ np.uint64(buf[k])) * np.uint64(FNV_PRIME)
    return _lookup_hashed(buf, s, e, cls, h)


@njit(cache=True, _nrt=False)
def _scan_upper_name(buf, p, e):
    """End of the [A-Z0-9_]* run starting at p, and the FNV-1a hash of buf[p:end]."""
    h = np.uint64(FNV_OFFSET)
    q = p
    while q < e and _is_upper_name(buf[q]):
        h = (h ^ np.uint64(buf[q])) * np.uint64(FNV_PRIME)
        q += 1
    return q, h


@njit(cache=True, _nrt=False)
def _lookup_hashed(buf, s, e, cls, h):
    """(found, value) of the name buf[s:e], whose FNV-1a hash is ``h``, in class ``cls``."""
    mask = np.uint64(_SLOTS.size - 1)
    slot = h & mask
    while True:
        i = _SLOTS[slot]
        if i < 0:
            return False, 0
        if _TH[i] == h:
            break
        slot = (slot + np.uint64(1)) & mask
    if _TC[i] != cls or _TL[i] != e - s:
        return False, 0
    o = _TO[i]
    for k in range(e - s):
        if _TB[o + k] != buf[s + k]:
            return False, 0
    return True, _TV[i]


@njit(cache=True, _nrt=False)
def _unum(buf, p, e):
    """An unsigned number, 0x-hex or decimal: (ok, value as uint64, end)."""
    if p >= e:
        return False, _U0, p
    if buf[p] == 48 and p + 1 < e and buf[p + 1] == 120:  # 0x
        q = p + 2
        v = _U0
        while q < e:
            c = buf[q]
            if 48 <= c <= 57:
                d = c - 48
            elif 97 <= c <= 102:
                d = c - 87
            else:
                break
            if (v >> np.uint64(60)) != _U0:
                return False, _U0, p
            v = (v << np.uint64(4)) | np.uint64(d)
            q += 1
        if q == p + 2:
            return False, _U0, p
        return True, v, q
    q = p
    v = _U0
    while q < e and 48 <= buf[q] <= 57:
        d = np.uint64(buf[q] - 48)
        # v * 10 + d overflows exactly when v > (2**64 - 1) // 10, or v equals it and d > 5
        if v > _U64_DIV10 or (v == _U64_DIV10 and d > _U5):
            return False, _U0, p
        v = v * _U10 + d
        q += 1
    if q == p:
        return False, _U0, p
    return True, v, q


@njit(cache=True, _nrt=False)
def _digits(buf, p, e, limit):
    """A run of at most ``limit`` decimal digits (limit <= 18): (ok, value, end, count)."""
    q = p
    v = 0
    while q < e and 48 <= buf[q] <= 57:
        if q - p >= limit:
            return False, 0, q, q - p
        v = v * 10 + (buf[q] - 48)
        q += 1
    return q > p, v, q, q - p


@njit(cache=True, _nrt=False)
def _fraction_ns(buf, p, e):
    """Digits after a decimal point, 1 to 9 of them, as nanoseconds: (ok, ns, end)."""
    q = p
    v = 0
    while q < e and 48 <= buf[q] <= 57:
        if q - p >= 9:
            return False, 0, q
        v = v * 10 + (buf[q] - 48)
        q += 1
    n = q - p
    if n == 0:
        return False, 0, q
    for _ in range(9 - n):
        v *= 10
    return True, v, q


@njit(cache=True, _nrt=False)
def _addr(buf, p, e):
    if p + 4 <= e and buf[p] == 78 and buf[p + 1] == 85 and buf[p + 2] == 76 and buf[p + 3] == 76:
        return True, _U0, p + 4  # NULL
    return _unum(buf, p, e)


@njit(cache=True, _nrt=False)
def _sep(buf, p, e):
    """', ' -> position after it, else -1."""
    if p + 1 < e and buf[p] == 44 and buf[p + 1] == 32:
        return p + 2
    return -1


@njit(cache=True, _nrt=False)
def _is_upper_name(c):
    return (65 <= c <= 90) or (48 <= c <= 57) or c == 95


@njit(cache=True, _nrt=False)
def _comment_char(c):
    """What strace writes inside /* */ after a flag value: names, hex, '|', '?', '<<', spaces."""
    return ((65 <= c <= 90) or (97 <= c <= 122) or (48 <= c <= 57) or c == 95 or c == 124
            or c == 63 or c == 60 or c == 32)


@njit(cache=True, _nrt=False)
def _expr(buf, p, e, cls):
    """NAME|NAME|0x10|21<<MAP_HUGE_SHIFT, then an optional ' /* ... */': (ok, value, end)."""
    v = _U0
    while True:
        if p >= e:
            return False, _U0, p
        c = buf[p]
        if 65 <= c <= 90:
            q, h = _scan_upper_name(buf, p, e)
            found, value = _lookup_hashed(buf, p, q, cls, h)
            if not found:
                return False, _U0, p
            v |= np.uint64(value)
            p = q
        elif 48 <= c <= 57:
            ok, num, q = _unum(buf, p, e)
            if not ok:
                return False, _U0, p
            if q + 1 < e and buf[q] == 60 and buf[q + 1] == 60:  # <<NAME
                r = q + 2
                if r >= e or not (65 <= buf[r] <= 90):
                    return False, _U0, p
                while r < e and _is_upper_name(buf[r]):
                    r += 1
                found, shift = _lookup(buf, q + 2, r, np.int64(CLS_SHIFT))
                if not found:
                    return False, _U0, p
                if (num >> np.uint64(64 - shift)) != _U0:
                    return False, _U0, p
                num = num << np.uint64(shift)
                q = r
            v |= num
            p = q
        else:
            return False, _U0, p
        if p < e and buf[p] == 124:  # |
            p += 1
            continue
        break
    if p + 2 < e and buf[p] == 32 and buf[p + 1] == 47 and buf[p + 2] == 42:  # ' /*'
        q = p + 3
        while q < e and _comment_char(buf[q]):
            q += 1
        if q + 1 >= e or buf[q] != 42 or buf[q + 1] != 47:
            return False, _U0, p
        p = q + 2
    return True, v, p


@njit(cache=True, _nrt=False)
def _result(buf, p, e, out, i):
    """') = RESULT [<DUR>]' up to the line end: fills ret/errno/result/duration; ok."""
    if p >= e or buf[p] != 41:  # )
        return False
    p += 1
    q = p
    while q < e and buf[q] == 32:
        q += 1
    if q == p or q + 1 >= e or buf[q] != 61 or buf[q + 1] != 32:  # '= '
        return False
    p = q + 2
    if p < e and buf[p] == 45:  # -1 ENAME (description)
        if p + 3 >= e or buf[p + 1] != 49 or buf[p + 2] != 32 or buf[p + 3] != 69:
            return False
        s = p + 3
        q, h = _scan_upper_name(buf, s, e)
        found, value = _lookup_hashed(buf, s, q, np.int64(CLS_ERRNO), h)
        if not found or q + 1 >= e or buf[q] != 32 or buf[q + 1] != 40:
            return False
        q += 2
        while q < e and buf[q] != 41:
            q += 1
        if q >= e:
            return False
        p = q + 1
        out[F_ERRNO, i] = value
        out[F_RES, i] = RES_ERROR
        out[F_RET, i] = 0
    else:
        ok, v, q = _unum(buf, p, e)
        if not ok:
            return False
        out[F_RET, i] = np.int64(v)
        out[F_RES, i] = RES_OK
        p = q
    if p == e:
        return True
    if p + 1 >= e or buf[p] != 32 or buf[p + 1] != 60 or buf[e - 1] != 62:  # ' <' ... '>'
        return False
    ok, seconds, q, count = _digits(buf, p + 2, e, np.int64(18))
    if not ok or q >= e or buf[q] != 46 or seconds > MAX_SECONDS:
        return False
    ok, frac, q = _fraction_ns(buf, q + 1, e)
    if not ok or q != e - 1:
        return False
    out[F_DUR, i] = seconds * 1_000_000_000 + frac
    return True


_UNFINISHED = np.frombuffer(b" <unfinished ...>", np.uint8)


@njit(cache=True, _nrt=False)
def _ends_unfinished(buf, p, e):
    n = _UNFINISHED.size
    if e - p != n:
        return False
    for k in range(n):
        if buf[p + k] != _UNFINISHED[k]:
            return False
    return True


@njit(cache=True, _nrt=False)
def _sep_unum(buf, p, e):
    """', ' then an unsigned number: (ok, value, end)."""
    q = _sep(buf, p, e)
    if q < 0:
        return False, _U0, p
    return _unum(buf, q, e)


@njit(cache=True, _nrt=False)
def _sep_expr(buf, p, e, cls, limit):
    """', ' then a symbolic value of class ``cls`` (see _expr) no larger than ``limit``:
    (ok, value, end)."""
    q = _sep(buf, p, e)
    if q < 0:
        return False, _U0, p
    ok, value, q = _expr(buf, q, e, cls)
    return ok and value <= limit, value, q


@njit(cache=True, _nrt=False)
def _mm_args(buf, p, e, op, out, i):
    """The arguments of an mm call; returns the position after them or -1."""
    ok, addr, p = _addr(buf, p, e)
    if not ok:
        return -1
    out[F_ADDR, i] = np.int64(addr)
    if op == BRK:
        return p
    ok, length, p = _sep_unum(buf, p, e)
    if not ok:
        return -1
    out[F_LEN, i] = np.int64(length)
    if op == MUNMAP:
        return p
    if op == MPROTECT or op == MMAP:
        ok, prot, p = _sep_expr(buf, p, e, np.int64(CLS_PROT), np.uint64(I32_MAX))
        if not ok:
            return -1
        out[F_PROT, i] = np.int64(prot)
        if op == MPROTECT:
            return p
        ok, flags, p = _sep_expr(buf, p, e, np.int64(CLS_MAP), np.uint64(0xFFFFFFFF))
        if not ok:
            return -1
        out[F_FLAGS, i] = np.int64(np.int32(np.uint32(flags)))
        p = _sep(buf, p, e)
        if p < 0 or p >= e:
            return -1
        if buf[p] == 45:  # '-' digits
            ok, value, q, count = _digits(buf, p + 1, e, np.int64(18))
            if not ok or value > 1:
                return -1
            out[F_FD, i] = -value
        else:
            ok, fd, q = _unum(buf, p, e)
            if not ok:
                return -1
            if fd == np.uint64(0xFFFFFFFF) or fd == _U64_MAX:
                out[F_FD, i] = -1
            elif fd > np.uint64(I32_MAX):
                return -1
            else:
                out[F_FD, i] = np.int64(fd)
        ok, offset, p = _sep_unum(buf, q, e)
        if not ok or offset > np.uint64(0x7FFFFFFFFFFFFFFF):
            return -1
        out[F_OFFSET, i] = np.int64(offset)
        return p
    if op == MADVISE:
        ok, advice, p = _sep_expr(buf, p, e, np.int64(CLS_MADV), np.uint64(I32_MAX))
        if not ok:
            return -1
        out[F_ADVICE, i] = np.int64(advice)
        return p
    # mremap: new length, flags, optional new address
    ok, new_length, p = _sep_unum(buf, p, e)
    if not ok:
        return -1
    out[F_NEW_LEN, i] = np.int64(new_length)
    ok, flags, p = _sep_expr(buf, p, e, np.int64(CLS_MREMAP), np.uint64(0xFFFFFFFF))
    if not ok:
        return -1
    out[F_FLAGS, i] = np.int64(np.int32(np.uint32(flags)))
    q = _sep(buf, p, e)
    if q >= 0:
        ok, hint, q = _addr(buf, q, e)
        if not ok:
            return -1
        out[F_HINT, i] = np.int64(hint)
        out[F_HAS_HINT, i] = 1
        return q
    return p


@njit(cache=True, _nrt=False)
def _line(buf, s, e, out, i):
    """Tokenize buf[s:e] (one line, newline excluded) into column ``i`` of ``out``; return its
    kind."""
    while e > s and buf[e - 1] == 13:
        e -= 1
    blank = True
    for k in range(s, e):
        if buf[k] != 32 and buf[k] != 9:
            blank = False
            break
    if blank:
        return K_BLANK
    p = s
    # pid: '[pid  N] ' or a pid column 'N  '
    if (e - p > 5 and buf[p] == 91 and buf[p + 1] == 112 and buf[p + 2] == 105
            and buf[p + 3] == 100 and buf[p + 4] == 32):
        p += 5
        while p < e and buf[p] == 32:
            p += 1
        ok, pid, q, count = _digits(buf, p, e, np.int64(10))
        if not ok or pid > I32_MAX or q + 1 >= e or buf[q] != 93 or buf[q + 1] != 32:
            return K_REF
        out[F_PID, i] = pid
        p = q + 2
    elif 48 <= buf[p] <= 57:
        q = p
        while q < e and 48 <= buf[q] <= 57:
            q += 1
        if q < e and buf[q] == 32:
            ok, pid, q, count = _digits(buf, p, e, np.int64(10))
            if not ok or pid > I32_MAX:
                return K_REF
            out[F_PID, i] = pid
            p = q
            while p < e and buf[p] == 32:
                p += 1
    # timestamp: epoch 'S.F ' or wall clock 'HH:MM:SS[.F] '
    if p < e and 48 <= buf[p] <= 57:
        ok, seconds, q, count = _digits(buf, p, e, np.int64(18))
        if not ok or q >= e:
            return K_REF
        if buf[q] == 46:
            if seconds > MAX_SECONDS:
                return K_REF
            ok, frac, q = _fraction_ns(buf, q + 1, e)
            if not ok:
                return K_REF
            out[F_TS, i] = seconds * 1_000_000_000 + frac
            out[F_TS_KIND, i] = TS_EPOCH
        elif buf[q] == 58:
            if count != 2 or q + 6 > e or buf[q + 3] != 58:
                return K_REF
            ok1, minutes, q1, n1 = _digits(buf, q + 1, e, np.int64(2))
            ok2, secs, q2, n2 = _digits(buf, q + 4, e, np.int64(2))
            if not (ok1 and ok2) or n1 != 2 or n2 != 2:
                return K_REF
            if seconds > 23 or minutes > 59 or secs > 60:
                return K_REF
            frac = 0
            q = q2
            if q < e and buf[q] == 46:
                ok, frac, q = _fraction_ns(buf, q + 1, e)
                if not ok:
                    return K_REF
            out[F_TS, i] = ((seconds * 60 + minutes) * 60 + secs) * 1_000_000_000 + frac
            out[F_TS_KIND, i] = TS_WALL
        else:
            return K_REF
        if q >= e or buf[q] != 32:
            return K_REF
        p = q + 1
    if p >= e:
        return K_REF
    c = buf[p]
    if c == 60:  # '<... NAME resumed>'
        if (e - p < 15 or buf[p + 1] != 46 or buf[p + 2] != 46 or buf[p + 3] != 46
                or buf[p + 4] != 32):
            return K_REF
        s2 = p + 5
        if not ((97 <= buf[s2] <= 122) or buf[s2] == 95):
            return K_REF
        q = s2 + 1
        while q < e and ((97 <= buf[q] <= 122) or (48 <= buf[q] <= 57) or buf[q] == 95):
            q += 1
        # ' resumed>'
        if (q + 9 > e or buf[q] != 32 or buf[q + 1] != 114 or buf[q + 2] != 101
                or buf[q + 3] != 115 or buf[q + 4] != 117 or buf[q + 5] != 109
                or buf[q + 6] != 101 or buf[q + 7] != 100 or buf[q + 8] != 62):
            return K_REF
        found, op = _lookup(buf, s2, q, np.int64(CLS_SYSCALL))
        if not found:
            return K_IGNORED_RESUMED
        out[F_OP, i] = op
        if not _result(buf, q + 9, e, out, i):
            return K_REF
        return K_RESUMED
    if c == 45:  # '--- ... ---'
        if (e - p >= 8 and buf[p + 1] == 45 and buf[p + 2] == 45 and buf[p + 3] == 32
                and buf[e - 4] == 32 and buf[e - 3] == 45 and buf[e - 2] == 45
                and buf[e - 1] == 45):
            return K_SIGNAL
        return K_REF
    if (97 <= c <= 122) or c == 95:
        q = p + 1
        while q < e and ((97 <= buf[q] <= 122) or (48 <= buf[q] <= 57) or buf[q] == 95):
            q += 1
        if q >= e or buf[q] != 40:  # (
            return K_REF
        found, op = _lookup(buf, p, q, np.int64(CLS_SYSCALL))
        if not found:
            return K_IGNORED
        out[F_OP, i] = op
        p = _mm_args(buf, q + 1, e, op, out, i)
        if p < 0:
            return K_REF
        if _ends_unfinished(buf, p, e):
            return K_UNFINISHED
        if not _result(buf, p, e, out, i):
            return K_REF
        return K_CALL
    return K_REF


@njit(cache=True, nogil=True)  # nogil: the importer tokenizes in a worker thread
def _tokenize(buf, ends):
    """Records for the lines of ``buf`` that end at ``ends`` (newline offsets); F_POS holds
    each line's start offset until the caller numbers the lines."""
    n = ends.size
    out = np.zeros((NFIELDS, n), np.int64)  # one contiguous array per field
    out[F_PID] = -1
    out[F_OP] = -1
    out[F_DUR] = -1
    s = np.int64(0)
    for i in range(n):
        e = ends[i]
        out[F_POS, i] = s
        out[F_KIND, i] = _line(buf, s, e, out, i)
        s = e + 1
    return out


def _check_frozen_table() -> None:
    """numba keys its disk cache by this file, not by the globals frozen into the code: when the
    PROT/MAP/MADV/errno tables (strace.py, schema.py) change, drop the stale compiled code."""
    frozen = tuple(int(v) for v in _frozen_table_fingerprint())
    if frozen == tuple(int(v) for v in _table_fingerprint()):
        return
    dispatchers = [value for value in globals().values() if hasattr(value, "_cache")
                   and hasattr(value, "py_func")]
    for dispatcher in dispatchers:
        dispatcher._cache.flush()
    _frozen_table_fingerprint.recompile()


_check_frozen_table()


def tokenize_chunk(chunk: bytes) -> np.ndarray:
    """Records for every line of ``chunk`` (which ends with a newline)."""
    buf = np.frombuffer(chunk, np.uint8)
    ends = np.flatnonzero(buf == 10)  # vectorized: far cheaper than a byte loop
    out = _tokenize(buf, ends)
    hard = np.flatnonzero(out[F_KIND] == K_REF)
    if hard.size:
        starts = out[F_POS]
        for i in hard.tolist():
            out[:F_POS, i] = parse_line(chunk[starts[i]:ends[i]].decode("latin-1"))
    return out


def tokenize_lines(lines: list[str]) -> np.ndarray:
    """Fast-path records for individual lines, with K_REF left in place (for tests)."""
    buf = np.frombuffer(("\n".join(lines) + "\n").encode("latin-1"), np.uint8)
    return _tokenize(buf, np.flatnonzero(buf == 10))


__all__ = ["tokenize_chunk", "tokenize_lines", "build_name_table", "fnv1a"]
