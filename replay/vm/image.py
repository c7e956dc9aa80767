"""Which kernel to boot: a bzImage/vmlinuz file or a built kernel tree, checked before booting.

An x86 bzImage carries a setup header (Documentation/arch/x86/boot.rst): the boot-sector
signature 0xAA55 at 0x1FE, the magic "HdrS" at 0x202 and, at 0x20E, a pointer to the kernel's
version string. Reading it tells a real kernel from any other file without booting, and gives
the release ("6.1.0-50-amd64") the guest will report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from traces.errors import MmreplayError

TREE_IMAGE = Path("arch/x86/boot/bzImage")
HEADER_BYTES = 0x1000


@dataclass(frozen=True)
class KernelImage:
    given: str          # as the user wrote it
    boot_path: Path     # what virtme-ng boots: the image file, or the tree (its modules come along)
    image: Path         # the bzImage file itself
    version: str        # the header's version string: "6.1.0-50-amd64 (debian-kernel@...) #1 ..."

    @property
    def release(self) -> str:
        return self.version.split()[0] if self.version else "?"

    def as_dict(self) -> dict:
        return {"given": self.given, "image": str(self.image), "header_release": self.release,
                "header_version": self.version}


def _bzimage_version(path: Path) -> str | None:
    """The version string of a bzImage, or None when ``path`` is not one."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(HEADER_BYTES)
            if len(head) < 0x210 or head[0x1FE:0x200] != b"\x55\xaa" or head[0x202:0x206] != b"HdrS":
                return None
            pointer = int.from_bytes(head[0x20E:0x210], "little")
            if not pointer:
                return ""
            handle.seek(pointer + 0x200)
            raw = handle.read(256).split(b"\0", 1)[0]
    except OSError:
        return None
    return raw.decode("ascii", "replace").strip()


def resolve_kernel(text: str) -> KernelImage:
    """``--kernel`` / a ``--kernels`` entry -> the image to boot. Raises MmreplayError (one line)."""
    path = Path(text).expanduser()
    if not path.exists():
        raise MmreplayError(f"--kernel {text}: no such file or directory")
    if path.is_dir():
        image = path / TREE_IMAGE
        if not image.is_file():
            raise MmreplayError(f"--kernel {text}: a directory but not a built kernel tree "
                                f"(no {TREE_IMAGE}; run make bzImage there first)")
        boot_path = path
    else:
        image = boot_path = path
    if not os.access(image, os.R_OK):
        raise MmreplayError(f"--kernel {text}: cannot read {image}")
    version = _bzimage_version(image)
    if version is None:
        raise MmreplayError(f"--kernel {text}: not an x86 kernel image (no bzImage boot header); "
                            "give a bzImage/vmlinuz file or a built kernel tree")
    return KernelImage(given=text, boot_path=boot_path.resolve(), image=image.resolve(),
                       version=version)


def resolve_kernels(kernels: str | None, kernel: str | None) -> list:
    """compare's --kernels host,IMAGE,... or --kernel IMAGE -> ["host" | KernelImage, ...], each
    image checked before anything runs ([] for neither)."""
    if kernels and kernel:
        raise MmreplayError("give --kernel (every configuration in one kernel) or --kernels "
                            "(one column per kernel), not both")
    if kernel:
        return [resolve_kernel(kernel)]
    if not kernels:
        return []
    entries = [entry.strip() for entry in kernels.split(",") if entry.strip()]
    if len(entries) < 2:
        raise MmreplayError("--kernels needs two or more entries, e.g. host,/boot/vmlinuz-6.1.0-50-amd64")
    if len(set(entries)) != len(entries):
        raise MmreplayError("--kernels: the same kernel is listed twice")
    return [entry if entry == "host" else resolve_kernel(entry) for entry in entries]
