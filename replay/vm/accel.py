"""KVM or TCG: which accelerator the guest gets, and why, decided cheaply and remembered per host.

KVM needs /dev/kvm and a CPU that exposes vmx (Intel) or svm (AMD) to this kernel. Where the
machine is itself a VM without nested virtualization, /dev/kvm may exist and answer while the
CPU flags show neither, and KVM guests then abort ("failed to set MSR 0x10a" with -cpu host) or
hang early in boot: that case is decided from the flags, without booting anything. Where the
flags are there, the first guest tries KVM; if it fails or shows no progress, the runner falls
back to TCG once and the verdict is cached (``vm-accel.json`` in the mmreplay cache directory),
so later commands do not try again.
"""

from __future__ import annotations

import json
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

from traces.host import cpu_flags, cpu_model

from replay.vm.cache import cache_dir

ACCEL_CHOICES = ("auto", "kvm", "tcg")


@dataclass
class Accel:
    name: str           # "kvm" or "tcg"
    reason: str         # why this one, in words
    probe: bool = False  # an untried KVM: fall back to TCG if the guest fails to come up

    def as_dict(self) -> dict:
        return {"accel": self.name, "accel_reason": self.reason}


def kvm_unusable_reason() -> str | None:
    """Why KVM cannot work here, from cheap checks; None when it may."""
    if not os.path.exists("/dev/kvm"):
        return "no /dev/kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    if not cpu_flags() & {"vmx", "svm"}:
        return ("the host CPU flags show neither vmx nor svm (no nested virtualization), "
                "so KVM guests abort or hang")
    return None


def _verdict_file() -> Path:
    return cache_dir() / "vm-accel.json"


def _host_key() -> str:
    return f"{socket.gethostname()} {platform.release()} {cpu_model()}"


def cached_kvm_failure() -> str | None:
    try:
        verdicts = json.loads(_verdict_file().read_text())
    except (OSError, ValueError):
        return None
    entry = verdicts.get(_host_key()) if isinstance(verdicts, dict) else None
    return entry.get("failed") if isinstance(entry, dict) else None


def remember_kvm(failed: str | None) -> None:
    """Cache the verdict of a real KVM boot on this host (None: KVM worked)."""
    path = _verdict_file()
    try:
        verdicts = json.loads(path.read_text())
        verdicts = verdicts if isinstance(verdicts, dict) else {}
    except (OSError, ValueError):
        verdicts = {}
    verdicts[_host_key()] = {"failed": failed}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(verdicts, indent=1))
        os.replace(temporary, path)
    except OSError:
        pass  # a cache: losing it only costs one more probe


def choose_accel(requested: str = "auto") -> Accel:
    if requested == "tcg":
        return Accel("tcg", "TCG asked for (--vm-accel tcg)")
    unusable = kvm_unusable_reason()
    if requested == "kvm":
        if unusable and not os.path.exists("/dev/kvm"):
            from traces.errors import MmreplayError
            raise MmreplayError(f"--vm-accel kvm: {unusable}")
        return Accel("kvm", "KVM asked for (--vm-accel kvm)")
    if unusable:
        return Accel("tcg", f"KVM not used: {unusable}")
    failed = cached_kvm_failure()
    if failed:
        return Accel("tcg", f"KVM not used: it failed on this host before ({failed}; "
                            f"cached in {_verdict_file()})")
    return Accel("kvm", "/dev/kvm is usable and the CPU has vmx/svm", probe=True)
