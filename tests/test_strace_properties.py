"""Property tests of the strace importer: the fast path agrees with the reference parser; random
interleavings of unfinished/resumed pairs across threads reassemble into the right calls, placed
where the replay can run them; junk lines never crash it and never go uncounted."""

from __future__ import annotations

import collections

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from traces.schema import MADV, MAP, MREMAP, PROT
from traces.strace import import_logs
from traces.strace_grammar import (F_KIND, F_POS, K_BLANK, K_CALL, K_IGNORED, K_IGNORED_RESUMED,
                                   K_REF, K_RESUMED, K_SIGNAL, K_UNFINISHED, parse_line)
from traces.strace_fast import tokenize_lines

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
U64 = (1 << 64) - 1

# --- a grammar of strace lines ----------------------------------------------------------------

u64 = st.one_of(st.integers(0, 1 << 16), st.integers(0, U64))


def number(value_strategy=u64):
    return value_strategy.flatmap(lambda v: st.sampled_from([f"{v:#x}" if v else "0", str(v)]))


addr = st.one_of(st.just("NULL"), number())
pid_part = st.one_of(
    st.just(""),
    st.integers(1, (1 << 31) - 1).flatmap(
        lambda p: st.sampled_from([f"{p} ", f"{p}  ", f"[pid {p}] ", f"[pid {p:>6}] "])))
epoch = st.tuples(st.integers(0, 9_000_000_000), st.integers(1, 9)).flatmap(
    lambda t: st.integers(0, 10 ** t[1] - 1).map(lambda f: f"{t[0]}.{f:0{t[1]}d} "))
wall = st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 60),
                 st.one_of(st.just(""), st.integers(0, 999999).map(lambda f: f".{f:06d}"))).map(
    lambda t: f"{t[0]:02d}:{t[1]:02d}:{t[2]:02d}{t[3]} ")
ts_part = st.one_of(st.just(""), epoch, wall)


def flag_expr(names: dict, numeric_max: int):
    symbolic = st.lists(st.sampled_from(sorted(names)), min_size=1, max_size=4)
    extra = st.integers(0, numeric_max)
    terms = st.tuples(symbolic, st.lists(extra, max_size=1)).map(
        lambda t: "|".join(t[0] + [f"{v:#x}" if v else "0" for v in t[1]]))
    verbose = st.tuples(st.integers(0, numeric_max), symbolic).map(
        lambda t: f"{t[0]:#x} /* {'|'.join(t[1])} */" if t[0] else f"0 /* {t[1][0]} */")
    unknown = st.integers(0, numeric_max).map(lambda v: f"{v:#x} /* ??? */")
    return st.one_of(terms, verbose, unknown, st.integers(0, numeric_max).map(hex))


prot = flag_expr({k: v for k, v in PROT.items()}, 0x7FFFFFFF)
mmap_flags = st.one_of(
    flag_expr(MAP, 0xFFFFFFFF),
    st.tuples(st.sampled_from(["MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB", "MAP_SHARED"]),
              st.integers(0, 63)).map(lambda t: f"{t[0]}|{t[1]}<<MAP_HUGE_SHIFT"))
mremap_flags = flag_expr(MREMAP, 0xFFFFFFFF)
advice = st.one_of(st.sampled_from(sorted(MADV)), st.integers(0, 0x7FFFFFFF).map(
    lambda v: f"{v:#x} /* MADV_??? */"), st.integers(0, 200).map(str))
fd = st.one_of(st.sampled_from(["-1", "0xffffffff", "0xffffffffffffffff"]),
               st.integers(0, (1 << 31) - 1).map(str))
offset = number(st.integers(0, (1 << 63) - 1))
args = {
    "mmap": st.tuples(addr, number(), prot, mmap_flags, fd, offset).map(", ".join),
    "munmap": st.tuples(addr, number()).map(", ".join),
    "mremap": st.tuples(addr, number(), number(), mremap_flags,
                        st.one_of(st.just(None), addr)).map(
        lambda t: ", ".join(x for x in t if x is not None)),
    "madvise": st.tuples(addr, number(), advice).map(", ".join),
    "mprotect": st.tuples(addr, number(), prot).map(", ".join),
    "brk": addr,
}
mm_name = st.sampled_from(sorted(args))
errno_name = st.sampled_from(["ENOMEM", "EINVAL", "EAGAIN", "EFAULT", "EPERM", "EBADF"])
result = st.one_of(number(), errno_name.map(lambda e: f"-1 {e} (Some description)"))
duration = st.one_of(st.just(""), st.tuples(st.integers(0, 100), st.integers(1, 9)).flatmap(
    lambda t: st.integers(0, 10 ** t[1] - 1).map(lambda f: f" <{t[0]}.{f:0{t[1]}d}>")))
padding = st.sampled_from([" ", "  ", " " * 12])


@st.composite
def common_body(draw):
    """Forms the fast path must take itself."""
    name = draw(mm_name)
    form = draw(st.sampled_from(["call", "unfinished", "resumed", "other", "other_resumed",
                                 "signal"]))
    if form == "call":
        return f"{name}({draw(args[name])}){draw(padding)}= {draw(result)}{draw(duration)}"
    if form == "unfinished":
        return f"{name}({draw(args[name])} <unfinished ...>"
    if form == "resumed":
        return f"<... {name} resumed>){draw(padding)}= {draw(result)}{draw(duration)}"
    if form == "other":
        return draw(st.sampled_from(['openat(AT_FDCWD, "/etc/x", O_RDONLY) = 3',
                                     "futex(0x7f00, FUTEX_WAIT, 0, NULL <unfinished ...>",
                                     "read(3, \"\\177ELF\", 832) = 832 <0.000011>"]))
    if form == "other_resumed":
        return "<... futex resumed>) = 0 <0.000100>"
    return "--- SIGCHLD {si_signo=SIGCHLD, si_code=CLD_EXITED, si_pid=4417} ---"


rare_body = st.sampled_from([
    "mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, -1, 0 <unfinished ...>) = ?",
    "<... munmap resumed> <unfinished ...>) = ?",
    "mprotect(0x7f0000000000, 4096, PROT_READ) = ?",
    "mmap(NULL, 4096, PROT_READ, MAP_SHARED, 3</etc/passwd>, 0) = 0x7f0000000000",
    "+++ exited with 0 +++", "+++ killed by SIGKILL +++", "+++ killed by SIGSEGV (core dumped) +++",
    "strace: Process 4508 attached", "/usr/bin/strace: Process 4508 detached",
    " > /usr/lib/libc.so.6(mmap64+0x26) [0xfb5a6]", "brk(NULL) = ? <unavailable>",
    "[00007f968ffa49b3] munmap(0x1000, 4096) = 0", "[  11] munmap(0x1000, 4096) = 0",
])
MUTATION_CHARS = st.sampled_from(list("0123456789abcdefx ,()<>|=-./*?[]:_ADEFMNOPRSTUWL\t\r\xff\x00"))


@st.composite
def mutated(draw, line_strategy):
    line = draw(line_strategy)
    for _ in range(draw(st.integers(1, 3))):
        if not line:
            break
        at = draw(st.integers(0, len(line) - 1))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(MUTATION_CHARS)
        if action == "insert":
            line = line[:at] + char + line[at:]
        elif action == "delete":
            line = line[:at] + line[at + 1:]
        else:
            line = line[:at] + char + line[at + 1:]
    return line


common_line = st.tuples(pid_part, ts_part, common_body()).map("".join)
any_line = st.one_of(common_line, st.tuples(pid_part, ts_part, rare_body).map("".join),
                     mutated(common_line), st.text(st.characters(max_codepoint=255,
                                                                 blacklist_characters="\n")))


def fast_record(line: str):
    return tokenize_lines([line])[:, 0]


@SETTINGS
@given(common_line)
def test_fast_path_takes_the_common_forms_itself(line):
    record = fast_record(line)
    assert record[F_KIND] != K_REF, line
    assert record[F_KIND] in (K_CALL, K_UNFINISHED, K_RESUMED, K_IGNORED, K_IGNORED_RESUMED,
                              K_SIGNAL, K_BLANK)
    assert tuple(int(v) for v in record[:F_POS]) == tuple(parse_line(line)), line


@settings(max_examples=1500, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(any_line)
def test_fast_path_agrees_with_the_reference_parser(line):
    """On every line the fast path accepts, it says exactly what the reference parser says."""
    record = fast_record(line)
    reference = parse_line(line)
    if record[F_KIND] != K_REF:
        assert tuple(int(v) for v in record[:F_POS]) == tuple(reference), line


# --- interleavings ----------------------------------------------------------------------------

CREATION = {"mmap", "mremap", "brk"}


@st.composite
def mm_call(draw):
    op = draw(st.sampled_from(["mmap", "munmap", "mremap", "madvise", "mprotect", "brk"]))
    a = draw(st.integers(1, 1 << 40)) * 4096
    length = draw(st.integers(1, 4096)) * 4096
    fails = draw(st.booleans()) and op != "brk"
    ret = "-1 ENOMEM (Cannot allocate memory)" if fails else (
        hex(draw(st.integers(1, 1 << 40)) * 4096) if op in CREATION else "0")
    text = {
        "mmap": f"mmap(NULL, {length}, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0",
        "munmap": f"munmap({a:#x}, {length}",
        "mremap": f"mremap({a:#x}, {length}, {2 * length}, MREMAP_MAYMOVE",
        "madvise": f"madvise({a:#x}, {length}, MADV_DONTNEED",
        "mprotect": f"mprotect({a:#x}, {length}, PROT_READ",
        "brk": f"brk({a:#x}",
    }[op]
    row = {"op": op, "length": 0 if op == "brk" else length, "errno": 12 if fails else 0}
    ret_value = None if fails else int(ret, 16)
    if op == "mmap":
        row["addr"] = 0 if fails else ret_value
    else:
        row["addr"] = a
    if op in ("mremap", "brk"):
        row["new_addr"] = ret_value
    return text, ret, row


@st.composite
def interleaved_log(draw):
    """Threads with sequential calls, their start/end events merged in a random order and written
    as strace does: a complete line when nothing comes between start and end, else an
    <unfinished ...> line and a later <... resumed> line."""
    threads = draw(st.integers(1, 4))
    calls = {100 + t: draw(st.lists(mm_call(), min_size=1, max_size=6)) for t in range(threads)}
    pending = {tid: [(kind, i) for i in range(len(c)) for kind in ("start", "end")]
               for tid, c in calls.items()}
    events = []
    while any(pending.values()):
        tid = draw(st.sampled_from(sorted(t for t, left in pending.items() if left)))
        events.append((tid, *pending[tid].pop(0)))
        if draw(st.integers(0, 5)) == 0:
            events.append((tid, "noise", 0))  # another syscall or a signal of that thread
    lines, expected, placed_at = [], [], []
    start_line = {}
    k = 0
    while k < len(events):
        tid, kind, i = events[k]
        ts = f"1000.{len(lines):06d}"
        text, ret, row = calls[tid][i] if kind != "noise" else (None, None, None)
        if kind == "noise":
            lines.append(f"{tid}  {ts} " + ("getpid() = 1" if len(lines) % 2 else
                                            "--- SIGURG {si_signo=SIGURG} ---"))
        elif kind == "start" and k + 1 < len(events) and events[k + 1] == (tid, "end", i):
            lines.append(f"{tid}  {ts} {text}) = {ret} <0.000001>")
            expected.append(dict(row, tid=tid, ts=len(lines) - 1))
            placed_at.append(len(lines) - 1)
            k += 1
        elif kind == "start":
            lines.append(f"{tid}  {ts} {text} <unfinished ...>")
            start_line[(tid, i)] = len(lines) - 1
        else:
            start = start_line[(tid, i)]
            op = row["op"]
            lines.append(f"{tid}  {ts} <... {op} resumed>) = {ret} <0.000001>")
            expected.append(dict(row, tid=tid, ts=start))
            placed_at.append(start if op not in CREATION else len(lines) - 1)
        k += 1
    order = sorted(range(len(expected)), key=lambda n: placed_at[n])
    return "\n".join(lines) + "\n", [expected[n] for n in order]


@SETTINGS
@given(interleaved_log(), st.integers(64, 4096), st.booleans())
def test_interleaved_pairs_reassemble_in_replay_order(tmp_path_factory, case, chunk_bytes, fast):
    text, expected = case
    path = tmp_path_factory.mktemp("interleaved") / "log"
    path.write_text(text)
    result = import_logs([path], fast=fast, chunk_bytes=chunk_bytes)
    got = result.table.to_pylist()
    assert len(got) == len(expected)
    first_ts = min(e["ts"] for e in expected)
    for row, want in zip(got, expected):
        for key, value in want.items():
            if key == "ts":
                assert row["ts_ns"] == (value - first_ts) * 1000
            else:
                assert row[key] == value, (key, row, want)
    assert result.report["unmatched"]["unfinished"] == result.report["unmatched"]["resumed"] == 0
    assert result.report["clamped_timestamps"] == 0


# --- junk -------------------------------------------------------------------------------------

VALID = [
    "7  100.000001 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000 <0.000001>",
    "7  100.000002 munmap(0x7f0000000000, 8192) = 0 <0.000001>",
    "8  100.000003 madvise(0x7f1000000000, 4096, MADV_DONTNEED) = 0 <0.000001>",
    "8  100.000004 brk(NULL) = 0x5594d7e2d000 <0.000001>",
    "9  100.000005 mprotect(0x7f2000000000, 4096, PROT_NONE) = -1 EINVAL (Invalid argument) <0.000001>",
]
VALID_ROWS = {  # (op, addr, length, errno) of each valid line
    VALID[0]: ("mmap", 0x7F0000000000, 8192, 0), VALID[1]: ("munmap", 0x7F0000000000, 8192, 0),
    VALID[2]: ("madvise", 0x7F1000000000, 4096, 0), VALID[3]: ("brk", 0, 0, 0),
    VALID[4]: ("mprotect", 0x7F2000000000, 4096, 22),
}
junk_line = st.one_of(
    st.binary(max_size=120).map(lambda b: b.replace(b"\n", b" ")),
    st.text(st.characters(max_codepoint=255, blacklist_characters="\n"), max_size=120).map(
        lambda t: t.encode("latin-1")),
    mutated(st.sampled_from(VALID)).map(lambda t: t.encode("latin-1")),
)


@SETTINGS
@given(st.lists(st.one_of(st.sampled_from(VALID).map(str.encode), junk_line), min_size=1,
                max_size=40), st.integers(64, 2048))
def test_junk_never_crashes_and_every_line_is_counted(tmp_path_factory, lines, chunk_bytes):
    lines = [VALID[0].encode()] + lines  # at least one real strace line
    path = tmp_path_factory.mktemp("junk") / "log"
    path.write_bytes(b"\n".join(lines) + b"\n")
    fast = import_logs([path], fast=True, chunk_bytes=chunk_bytes)
    reference = import_logs([path], fast=False, chunk_bytes=chunk_bytes)
    report = fast.report
    assert report["lines"] == len(lines)
    assert sum(report["line_kinds"].values()) == len(lines)
    assert fast.table.equals(reference.table)
    assert {k: v for k, v in report.items() if k != "parser"} == \
        {k: v for k, v in reference.report.items() if k != "parser"}
    # every valid line is imported, whatever junk surrounds it
    valid_rows = collections.Counter(VALID_ROWS[line.decode("latin-1")] for line in lines
                                     if line.decode("latin-1") in VALID_ROWS)
    got = collections.Counter((r["op"], r["addr"], r["length"], r["errno"])
                              for r in fast.table.to_pylist())
    assert not valid_rows - got


@pytest.mark.parametrize("line", VALID)
def test_valid_sample_lines_are_fast(line):
    assert fast_record(line)[F_KIND] == K_CALL
