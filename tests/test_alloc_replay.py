"""replay --allocator on traces from strangers: pointers the replay never got are never passed
to the allocator; what could not be replayed is counted."""

from __future__ import annotations

import contextlib
import json
import os
import signal

import pyarrow as pa

from traces import build_table, write_trace

from processes import PATIENCE_S, mmreplay

A, B, C = 0x5000_0000_1000, 0x5000_0000_2000, 0x5000_0000_3000


def test_frees_of_pointers_the_replay_never_got_are_skipped_and_counted(tmp_path):
    rows = [  # (op, addr, length, new_addr, hint, errno)
        ("posix_memalign", A, 100, None, 3, 0),  # "succeeded" in the trace; EINVAL here
        ("free", A, 0, None, None, 0),            # so the replay never got A
        ("free", B, 0, None, None, 0),            # B was never allocated in the trace
        ("malloc", C, 64, None, None, 0),
        ("realloc", C, 1 << 20, C, None, 0),
        ("malloc", 0, 1 << 40, None, None, 12),   # failed in the trace: not replayed
        ("free", C, 0, None, None, 0),
    ]
    op, addr, length, new_addr, hint, errno = map(list, zip(*rows))
    trace = tmp_path / "hostile.arrow"
    write_trace(build_table({"ts_ns": list(range(0, 7000, 1000)), "tid": [1] * 7, "op": op,
                             "addr": addr, "length": length,
                             "new_addr": pa.array(new_addr, pa.uint64()),
                             "hint": pa.array(hint, pa.uint64()), "errno": errno}), trace)
    result = tmp_path / "r.json"
    child = mmreplay("replay", trace, "--allocator", "glibc", "-o", result)
    _, stderr = child.communicate(timeout=PATIENCE_S)
    assert child.returncode == 0, stderr.decode()
    run = json.loads(result.read_text())["runs"][0]
    assert run["skipped"] == {"failed_in_trace": 1, "free_of_unknown_pointer": 1,
                              "free_of_allocation_failed_here": 1}
    assert run["failed_in_replay"] == 1
    assert run["ops"]["posix_memalign"] == {**run["ops"]["posix_memalign"], "count": 1, "failed": 1}
    assert run["ops"]["free"]["count"] == 1  # free(C): free(A) was skipped at run time
    assert run["ops"]["realloc"]["count"] == 1 and run["ops"]["realloc"]["failed"] == 0
    assert "libc.so" in run["providers"]["malloc"]


def test_a_replay_child_never_outlives_its_replay(tmp_path):
    """mmreplay killed outright (no chance to clean up) takes its allocation replay child with
    it, even a stopped one."""
    from processes import assert_gone, descendants, wait_for, wait_until_replaying
    from synth.generate import generate
    from synth.spec import Spec

    trace = tmp_path / "long.arrow"
    # --touch full writes every byte of 20 GiB of requests: far longer than this test's steps
    write_trace(generate(Spec(count=20000, size="const:1M", level="malloc", live=8, seed=1)),
                trace)
    parent = mmreplay("replay", trace, "--allocator", "glibc", "--touch", "full", "--progress",
                      "-o", tmp_path / "r.json")
    replay_child = {}
    try:
        wait_until_replaying(parent)  # the child has run its first chunk: its set-up is done

        def found() -> bool:
            for pid, started in descendants(parent.pid).items():
                try:
                    if b"replay.alloc.alloc_child" in open(f"/proc/{pid}/cmdline", "rb").read():
                        replay_child[pid] = started
                except OSError:
                    pass
            return bool(replay_child)

        wait_for(found, "the allocation replay child")
        for pid in replay_child:
            os.kill(pid, signal.SIGSTOP)  # a stopped orphan would stay forever
        parent.kill()
        parent.wait()
        assert_gone(replay_child)
    finally:
        parent.kill()
        for pid in replay_child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
