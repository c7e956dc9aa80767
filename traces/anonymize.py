"""What `mmreplay share` takes out of a trace before it goes to a public list.

- ``hostname``: the host's name, in ``host.hostname`` and wherever it appears as a whole word in
  the metadata's strings (names shorter than 4 characters only in ``host.hostname``: they would
  match ordinary words).
- ``paths``: absolute paths in the metadata's strings (the command, the strace command line,
  log file names, anything else) keep only their last component (``.../python``), except under
  the system folders every machine has (``/usr``, ``/bin``, ``/lib``, ``/etc``, ``/proc``, ...).
  ``~/...`` paths too.
- ``tids``: thread and process ids, renumbered 1, 2, 3... in order of first appearance in the
  trace, consistently in the ``tid`` column and in every metadata field named ``pid``/``tid``
  (or ``pids``/``tids``, ``*_pid``...).

Addresses, lengths, flags and times are what the trace is for and stay. What was taken out is
listed in the metadata (``shared.anonymised``).
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from .format import trace_metadata, with_metadata

WHAT = ("hostname", "paths", "tids")
SYSTEM_FOLDERS = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib32/", "/lib64/", "/libx32/", "/etc/",
                  "/proc/", "/sys/", "/dev/", "/run/", "/var/lib/", "/boot/", "/opt/local/")
# An absolute or home-relative path inside a string: after a start, space, quote, '=' or ':'.
PATH = re.compile(r"(?:(?<=^)|(?<=[\s='\":,(]))(~?/[^\s'\":,;()]+)")
ID_KEY = re.compile(r"(?:^|_)(?:pid|tid)s?$")


def parse_keep(text: str | None) -> set[str]:
    """``--keep hostname,paths`` -> {'hostname', 'paths'} (unknown names are an error)."""
    from .errors import MmreplayError

    keep = {item.strip() for item in (text or "").split(",") if item.strip()}
    unknown = sorted(keep - set(WHAT))
    if unknown:
        raise MmreplayError(f"--keep {','.join(unknown)}: unknown; what can be kept: "
                            f"{', '.join(WHAT)}")
    return keep


def scrub_path(path: str) -> str:
    if path.startswith(SYSTEM_FOLDERS):
        return path
    tail = path.rstrip("/").rsplit("/", 1)[-1]
    return f".../{tail}" if tail and tail != "~" else "..."


def anonymise(table: pa.Table, keep: set[str] = frozenset()) -> tuple[pa.Table, list[str]]:
    """(the table with what is not kept taken out, the names of what was taken out)."""
    meta = trace_metadata(table)
    removed = [what for what in WHAT if what not in keep]
    hostname = str((meta.get("host") or {}).get("hostname") or "")
    mapping: dict[int, int] = {}
    if "tids" in removed:
        table, mapping = _renumber_tids(table)

    def scrub(value, key: str = ""):
        if isinstance(value, dict):
            return {k: scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v, key) for v in value]
        if "tids" in removed and ID_KEY.search(key.lower()) and isinstance(value, int) \
                and not isinstance(value, bool):
            return _new_id(mapping, value)
        if isinstance(value, str):
            if "hostname" in removed and hostname:
                if value == hostname:
                    return "(hostname removed)"
                if len(hostname) >= 4:
                    value = re.sub(rf"\b{re.escape(hostname)}\b", "HOST", value)
            if "paths" in removed:
                value = PATH.sub(lambda m: scrub_path(m.group(1)), value)
        return value

    meta = scrub(meta)
    if "hostname" in removed and isinstance(meta.get("host"), dict) and hostname:
        meta["host"]["hostname"] = "(hostname removed)"
    return with_metadata(table, meta), removed


def _new_id(mapping: dict[int, int], old: int) -> int:
    if old not in mapping:
        mapping[old] = len(mapping) + 1
    return mapping[old]


def _renumber_tids(table: pa.Table) -> tuple[pa.Table, dict[int, int]]:
    tid = table.column("tid").to_numpy()
    distinct, first = np.unique(tid, return_index=True)
    order = distinct[np.argsort(first)]  # by first appearance
    mapping = {int(old): new for new, old in enumerate(order.tolist(), start=1)}
    lookup = np.searchsorted(distinct, tid)
    renumbered = np.empty(len(distinct), np.int32)
    renumbered[np.searchsorted(distinct, order)] = np.arange(1, len(order) + 1, dtype=np.int32)
    column = pa.array(renumbered[lookup], pa.int32())
    index = table.schema.get_field_index("tid")
    return table.set_column(index, table.schema.field("tid"), column), mapping
