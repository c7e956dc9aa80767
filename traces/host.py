"""Describe the machine a trace or result comes from: kernel, CPU, page sizes and THP settings,
and what it allows this process (memory available, vm.max_map_count, huge page sizes).

Everything is read from /proc and /sys; a missing file becomes ``None`` rather than an error so
that the description works in containers and on kernels built without THP.
"""

from __future__ import annotations

import os
import platform
import resource
import socket
from pathlib import Path

THP_SYSFS = Path("/sys/kernel/mm/transparent_hugepage")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def selected(setting: str | None) -> str | None:
    """'always [madvise] never' -> 'madvise'; plain values pass through."""
    if setting is None:
        return None
    if "[" in setting and "]" in setting:
        return setting[setting.index("[") + 1 : setting.index("]")]
    return setting


def _int_or_text(value: str | None):
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def thp_settings(root: Path = THP_SYSFS) -> dict:
    """The THP knobs a linux-mm reader asks for first, with the selected value of each."""
    settings: dict = {
        "enabled": selected(_read(root / "enabled")),
        "defrag": selected(_read(root / "defrag")),
        "shmem_enabled": selected(_read(root / "shmem_enabled")),
        "use_zero_page": _int_or_text(_read(root / "use_zero_page")),
        "shrink_underused": _int_or_text(_read(root / "shrink_underused")),
        "khugepaged": {},
        "sizes": {},
    }
    khugepaged = root / "khugepaged"
    if khugepaged.is_dir():
        for item in sorted(khugepaged.iterdir()):
            if item.is_file():
                settings["khugepaged"][item.name] = _int_or_text(_read(item))
    for size_dir in sorted(root.glob("hugepages-*kB")):
        settings["sizes"][size_dir.name] = selected(_read(size_dir / "enabled"))
    settings["sysfs"] = sysfs_tree(root)
    return settings


MAX_SYSFS_FILES = 2000


def sysfs_tree(root: Path = THP_SYSFS) -> dict:
    """Every file under ``root``, by relative path, as the kernel prints it (numbers as ints):
    knobs this code does not know (a vendor's anon_beside_full, a newer kernel's) included, and
    the per-size counters under hugepages-*/stats."""
    tree: dict = {}
    if not root.is_dir():
        return tree
    for path in sorted(root.rglob("*"))[:MAX_SYSFS_FILES]:
        if path.is_file():
            tree[str(path.relative_to(root))] = _int_or_text(_read(path))
    return tree


def _cpuinfo(field: str) -> str | None:
    """The first CPU's ``field`` in /proc/cpuinfo; None where it is missing."""
    for line in (_read(Path("/proc/cpuinfo")) or "").splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str | None:
    model = _cpuinfo("model name")
    return model if model is not None else (platform.processor() or None)


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``vmx``, ``svm``, ...); empty where /proc/cpuinfo is unreadable."""
    return set((_cpuinfo("flags") or "").split())


def kernel_cmdline() -> str | None:
    """The running kernel's command line (/proc/cmdline)."""
    return _read(Path("/proc/cmdline"))


def meminfo_bytes(field: str) -> int | None:
    """A /proc/meminfo field ('MemAvailable', 'MemTotal') in bytes."""
    text = _read(Path("/proc/meminfo")) or ""
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def available_memory_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, or less under an address-space limit
    (RLIMIT_AS). None when neither is known."""
    available = meminfo_bytes("MemAvailable")
    limit, _ = resource.getrlimit(resource.RLIMIT_AS)
    if limit != resource.RLIM_INFINITY:
        try:
            with open("/proc/self/statm") as handle:
                used = int(handle.read().split()[0]) * resource.getpagesize()
        except (OSError, ValueError, IndexError):
            used = 0
        room = max(0, limit - used)
        available = room if available is None else min(available, room)
    return available


def vm_max_map_count() -> int:
    """vm.max_map_count: how many VMAs a process may have."""
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return 65530  # the kernel's default


def hugetlb_page_sizes() -> tuple[int, frozenset]:
    """(default huge page size, every huge page size this kernel has) in bytes, from
    /proc/meminfo and /sys/kernel/mm/hugepages: what the kernel rounds hugetlb lengths to."""
    default = meminfo_bytes("Hugepagesize") or 0
    sizes = set()
    try:
        for entry in os.listdir("/sys/kernel/mm/hugepages"):
            if entry.startswith("hugepages-") and entry.endswith("kB"):
                sizes.add(int(entry[len("hugepages-"):-2]) * 1024)
    except (OSError, ValueError):
        pass
    if default:
        sizes.add(default)
    return default, frozenset(sizes)


def glibc_version() -> str | None:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):
        return None


def host_metadata() -> dict:
    """The host block stored in every trace and result."""
    pmd = _read(THP_SYSFS / "hpage_pmd_size")
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "kernel_version": platform.version(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "mem_total_bytes": meminfo_bytes("MemTotal"),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "hpage_pmd_size": int(pmd) if pmd and pmd.isdigit() else None,
        "thp": thp_settings(),
        "glibc": glibc_version(),
    }


def describe_thp(host: dict) -> str:
    """One line: 'enabled=madvise defrag=madvise shmem=never max_ptes_none=511'."""
    # A trace's host block comes from its sender: tolerate any JSON shape.
    thp = host.get("thp") if isinstance(host, dict) else None
    thp = thp if isinstance(thp, dict) else {}
    parts = [f"enabled={thp.get('enabled')}", f"defrag={thp.get('defrag')}"]
    if thp.get("shmem_enabled") is not None:
        parts.append(f"shmem={thp.get('shmem_enabled')}")
    khp = thp.get("khugepaged") if isinstance(thp.get("khugepaged"), dict) else {}
    if "max_ptes_none" in khp:
        parts.append(f"max_ptes_none={khp['max_ptes_none']}")
    return " ".join(parts)
