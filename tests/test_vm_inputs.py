"""--kernel and the guest options: bad input is refused in one line before anything boots."""

from __future__ import annotations

import pytest

from replay.vm.image import resolve_kernel
from replay.vm.runner import VmOptions, parse_guest_sysfs, plan_memory
from traces import MmreplayError



def test_a_file_that_is_not_a_kernel_is_refused_without_booting(tmp_path, run_cli, bundled_trace):
    not_a_kernel = tmp_path / "vmlinuz"
    not_a_kernel.write_bytes(b"\x7fELF" + bytes(8192))
    for command in ("replay", "layout", "compare"):
        done = run_cli(command, bundled_trace, "--kernel", not_a_kernel)
        assert done.exit_code == 2, command
        assert done.stderr.strip().splitlines() == [
            f"Error: --kernel {not_a_kernel}: not an x86 kernel image (no bzImage boot header); "
            "give a bzImage/vmlinuz file or a built kernel tree"], command


def test_a_directory_must_be_a_built_tree(tmp_path):
    with pytest.raises(MmreplayError, match="not a built kernel tree"):
        resolve_kernel(str(tmp_path))
    with pytest.raises(MmreplayError, match="no such file"):
        resolve_kernel(str(tmp_path / "missing"))


def test_a_real_bzimage_header_gives_its_release():
    import glob

    images = sorted(glob.glob("/boot/vmlinuz-*"))
    if not images:
        pytest.skip("no kernel image in /boot to read")
    kernel = resolve_kernel(images[-1])
    assert images[-1].endswith(kernel.release)


@pytest.mark.parametrize("setting", ["../../../etc/passwd=x", "/proc/sys/vm/overcommit=1",
                                     "transparent_hugepage/enabled", "=always"])
def test_guest_sysfs_outside_sys_kernel_mm_is_refused(setting):
    with pytest.raises(MmreplayError, match="under /sys/kernel/mm"):
        parse_guest_sysfs([setting])


def test_guest_sysfs_accepts_paths_relative_or_absolute_under_sys_kernel_mm():
    assert parse_guest_sysfs(["transparent_hugepage/enabled=always",
                              "/sys/kernel/mm/transparent_hugepage/defrag = never"]) == (
        ("transparent_hugepage/enabled", "always"), ("transparent_hugepage/defrag", "never"))


def test_guest_sysfs_without_a_kernel_is_a_usage_error(run_cli, bundled_trace):
    done = run_cli("replay", bundled_trace, "--guest-sysfs", "transparent_hugepage/enabled=always")
    assert done.exit_code == 2
    assert done.stderr.strip() == ("Error: --guest-sysfs and --vm-append apply to a guest: give "
                                   "--kernel too")


def test_a_trace_bigger_than_the_guest_is_refused_before_booting():
    with pytest.raises(MmreplayError, match="give --vm-memory 2560M or more"):
        plan_memory(2 << 30, VmOptions(memory_mib=1024))
    memory, budget = plan_memory(100 << 20, VmOptions())
    assert memory == 1024 and budget == (1024 - 512) << 20


def test_compare_refuses_a_bad_kernels_list_before_anything_runs(run_cli, bundled_trace):
    images = sorted(__import__("glob").glob("/boot/vmlinuz-*"))
    image = images[-1] if images else "/boot/vmlinuz"
    refused = {
        ("--kernels", "host"): "Error: --kernels needs two or more entries, e.g. "
                               "host,/boot/vmlinuz-6.1.0-50-amd64",
        ("--kernels", "host,host"): "Error: --kernels: the same kernel is listed twice",
        ("--kernels", f"host,{image}", "--kernel", image):
            "Error: give --kernel (every configuration in one kernel) or --kernels (one column "
            "per kernel), not both",
    }
    for options, line in refused.items():
        done = run_cli("compare", bundled_trace, *options)
        assert done.exit_code == 2, options
        assert done.stderr.strip().splitlines() == [line], options
