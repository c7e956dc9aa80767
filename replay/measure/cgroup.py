"""A memory cgroup of the replay's own, so that its THP and fault figures are its own.

/proc/vmstat counts every process on the machine: a THP fault elsewhere during a replay shows up
in its thp_fault_alloc. A memory cgroup counts only the tasks inside it. For the length of one
run the replay process moves into a new child of its current memory cgroup (limits of the
parent still apply), then moves back and removes it.

What the kernel offers differs by hierarchy:
- cgroup v2 memory.stat: ``thp_fault_alloc``, ``thp_collapse_alloc`` (events), ``anon_thp``
  (bytes now), ``pgfault``;
- cgroup v1 memory.stat: ``rss_huge`` (bytes of anonymous THP now), ``pgfault``; no THP event
  counts.
Counters start at zero in a new cgroup, so values read at the end are the run's own. Memory the
process had before the move stays charged where it was: the figures are those of the run.

Where no memory controller is reachable (not root, no controller, cgroup v2 without memory
delegated to our cgroup) ``OwnCgroup.unavailable`` says why, and the run goes on without.
"""

from __future__ import annotations

import errno
import itertools
import os
from pathlib import Path

# memory.stat keys kept, by hierarchy version: events (counted from zero) and gauges (bytes now).
V2_EVENTS = ("thp_fault_alloc", "thp_collapse_alloc", "pgfault")
V2_GAUGES = {"anon_thp": "anon_thp_bytes"}
V1_EVENTS = ("pgfault",)
V1_GAUGES = {"rss_huge": "anon_thp_bytes"}
_serial = itertools.count()


def _mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str, str, set]]:
    """(fstype, mount root, mount point, super options) of every cgroup mount."""
    found = []
    with open(mountinfo) as handle:
        for line in handle:
            fields = line.split()
            dash = fields.index("-")
            fstype, options = fields[dash + 1], set(fields[dash + 3].split(","))
            if fstype in ("cgroup", "cgroup2"):
                found.append((fstype, fields[3], fields[4], options))
    return found


def memory_cgroup_dir() -> tuple[Path | None, int, str]:
    """(folder of this process's memory cgroup, hierarchy version, why not when None)."""
    try:
        mounts = _mounts()
        with open("/proc/self/cgroup") as handle:
            lines = [line.rstrip("\n").split(":", 2) for line in handle]
    except OSError as exc:
        return None, 0, f"cannot read the cgroup tables ({exc.strerror})"
    for fstype, root, point, options in mounts:
        for hierarchy, controllers, path in lines:
            v1 = fstype == "cgroup" and "memory" in options and "memory" in controllers.split(",")
            v2 = fstype == "cgroup2" and hierarchy == "0"
            if not (v1 or v2):
                continue
            relative = os.path.relpath(path, root) if path.startswith(root) else None
            if relative is None or relative.startswith(".."):
                continue  # our cgroup is outside what this mount shows
            folder = Path(point) / relative
            if v2 and "memory" not in _read(folder / "cgroup.controllers").split():
                continue  # the unified hierarchy without the memory controller here
            return folder, 1 if v1 else 2, ""
    return None, 0, "no memory controller for this process's cgroup (cgroup v1 memory or v2)"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def read_memory_stat(folder: Path) -> dict:
    stats = {}
    for line in _read(folder / "memory.stat").splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            stats[name] = int(value)
    return stats


class OwnCgroup:
    """``with OwnCgroup() as group:`` runs the body inside a fresh child memory cgroup.

    ``group.stats()`` gives the figures counted there so far (keys of the ``cgroup`` block of a
    run); ``group.unavailable`` is None or why there is no cgroup (then ``stats()`` is empty).
    """

    def __init__(self) -> None:
        self.unavailable: str | None = None
        self.folder: Path | None = None
        self.version = 0
        self._home: Path | None = None

    def __enter__(self) -> "OwnCgroup":
        home, version, why = memory_cgroup_dir()
        if home is None:
            self.unavailable = why
            return self
        child = home / f"mmreplay-{os.getpid()}-{next(_serial)}"
        try:
            child.mkdir()
        except OSError as exc:
            self.unavailable = f"cannot create a memory cgroup in {home} ({exc.strerror})"
            return self
        if not (child / "memory.stat").exists():
            self._remove(child)
            self.unavailable = (f"{home} does not give its children the memory controller "
                                "(cgroup v2: memory is not in its cgroup.subtree_control)")
            return self
        try:
            (child / "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            self._remove(child)
            self.unavailable = f"cannot move the replay into {child} ({exc.strerror})"
            return self
        self.folder, self.version, self._home = child, version, home
        return self

    def stats(self) -> dict:
        if self.folder is None:
            return {}
        raw = read_memory_stat(self.folder)
        events, gauges = (V2_EVENTS, V2_GAUGES) if self.version == 2 else (V1_EVENTS, V1_GAUGES)
        out = {name: raw.get(name) for name in events}
        out.update({key: raw.get(name) for name, key in gauges.items()})
        return out

    def __exit__(self, *exc_info) -> None:
        if self.folder is None:
            return
        try:
            (self._home / "cgroup.procs").write_text(f"{os.getpid()}\n")
        finally:
            self._remove(self.folder)
            self.folder = None

    @staticmethod
    def _remove(folder: Path) -> None:
        for _ in range(100):
            try:
                folder.rmdir()
                return
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return  # left behind (empty): harmless, and removable by anyone later
