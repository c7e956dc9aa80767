"""Collapse the replay's live memory into huge pages, as khugepaged or MADV_COLLAPSE would later.

A replay measures THP at fault time. Afterwards the kernel can still collapse 2 MiB ranges into
huge pages: khugepaged in the background (ranges of VMAs THP may use: advised ones under
enabled=madvise), or MADV_COLLAPSE on request (Linux 6.1+, whatever the sysfs setting, but not
in MADV_NOHUGEPAGE ranges). Neighbouring mappings that merged into one VMA can then get huge pages
across their boundaries, which alignment padding prevents: the "collapse ceiling" of a layout.

``--collapse`` values:
- ``none``: nothing (the default);
- ``madvise``: MADV_COLLAPSE over every live range of the replay;
- ``khugepaged:SECONDS``: wait until khugepaged has completed a full scan that began after the
  wait did (full_scans advanced by 2), at most SECONDS.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import time

import numpy as np

from traces import MmreplayError
from traces.schema import MADV

from replay.measure.probes import (KHUGEPAGED, khugepaged_counter, merge_ranges, read_vmstat,
                                   vmstat_delta)

MADV_COLLAPSE = MADV["MADV_COLLAPSE"]
POLL_S = 0.2


def parse_collapse(text: str | None) -> str:
    """Check a --collapse value; returns it normalized."""
    text = (text or "none").strip()
    if text in ("none", "madvise"):
        return text
    match = re.fullmatch(r"khugepaged:(\d+(?:\.\d+)?)", text)
    if match and float(match.group(1)) > 0:
        return text
    raise MmreplayError(f"bad --collapse {text!r} (expected none, madvise or khugepaged:SECONDS "
                        "with SECONDS > 0)")


_libc = None


def _madvise():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        _libc.madvise.restype = ctypes.c_int
    return _libc.madvise


def collapse(how: str, ranges: np.ndarray, interrupt=None) -> dict:
    """Collapse the replay's live ``ranges`` (its own memory only) as ``how`` says.

    Returns what was done: calls and their errors (MADV_COLLAPSE), khugepaged's scans and
    collapsed pages while waiting, the time it took and the system-wide /proc/vmstat deltas.
    """
    started = time.perf_counter()
    before = read_vmstat()
    done: dict = {"how": how}
    if how == "madvise":
        madvise = _madvise()
        calls, errors = 0, {}
        for start, end in merge_ranges(ranges).tolist():
            calls += 1
            if madvise(start, end - start, MADV_COLLAPSE) != 0:
                name = {22: "EINVAL", 11: "EAGAIN", 12: "ENOMEM", 14: "EFAULT"}.get(
                    ctypes.get_errno(), str(ctypes.get_errno()))
                errors[name] = errors.get(name, 0) + 1
        done.update(calls=calls, failed=sum(errors.values()), errors=errors)
    else:
        limit_s = float(how.split(":", 1)[1])
        scans0, collapsed0 = khugepaged_counter("full_scans"), khugepaged_counter("pages_collapsed")
        if scans0 is None:
            done["unavailable"] = f"{KHUGEPAGED} cannot be read"
        else:
            deadline = started + limit_s
            while (khugepaged_counter("full_scans") or 0) < scans0 + 2 and time.perf_counter() < deadline:
                if interrupt:
                    break
                time.sleep(POLL_S)
            scans = (khugepaged_counter("full_scans") or scans0) - scans0
            done.update(full_scans=scans, complete_scan=scans >= 2,
                        pages_collapsed=(khugepaged_counter("pages_collapsed") or collapsed0) - collapsed0,
                        limit_s=limit_s)
    done["seconds"] = time.perf_counter() - started
    done["vmstat_system_wide"] = vmstat_delta(before, read_vmstat())
    return done
