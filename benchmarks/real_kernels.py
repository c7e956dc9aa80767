"""The emulated placement policies against the real kernels they stand for (issue 11, part 3).

Each real kernel boots once under QEMU (virtme-ng) and replays every input with
``--policy kernel`` and its THP setting ``enabled=always``; the host replays the same inputs
with the policy that emulates that kernel, once with ``--thp as-recorded`` (placement: the same
madvise calls as in the guest) and once with ``--thp always`` (THP: MADV_HUGEPAGE everywhere,
the host's stand-in for enabled=always). The tables compare 2 MiB-aligned mappings per size
bucket, holes, peak VMAs, AnonHugePages and THP faults. Raw results go to
docs/real-kernels-data/, the tables into docs/real-kernels.md.

    python benchmarks/real_kernels.py guest debian-6.1     # boot one kernel, replay all inputs
    python benchmarks/real_kernels.py guest all            # every kernel whose image exists
    python benchmarks/real_kernels.py host                 # the host's emulated replays
    python benchmarks/real_kernels.py tables --write docs/real-kernels.md

Kernels: Debian's 6.1 image (/boot/vmlinuz-6.1.0-50-amd64) and the three built by
kernels/build.sh (~/.cache/mmreplay/kernels/<name>/bzImage). Under TCG (KVM does not work on
these machines) times are not comparable with native runs; counts are. A guest replays with this
checkout's .venv, shared read-write so that numba's cache for the guest's CPU is kept between
boots; inputs made by ``mmreplay synth --preset`` are regenerated into WORK/inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "real-kernels-data"
WORK = Path(os.environ.get("MMREPLAY_REAL_KERNELS_WORK",
                           Path.home() / ".cache" / "mmreplay" / "real-kernels"))
KERNEL_CACHE = Path(os.environ.get("MMREPLAY_KERNEL_CACHE",
                                   Path.home() / ".cache" / "mmreplay" / "kernels"))
MMREPLAY = ROOT / ".venv" / "bin" / "mmreplay"
VNG = ROOT / ".venv" / "bin" / "vng"

# name -> (image, emulating policy, what it is)
KERNELS = {
    "debian-6.1": (Path("/boot/vmlinuz-6.1.0-50-amd64"), "no-align",
                   "Debian's linux-image-6.1.0-50-amd64"),
    "6.1-plain": (KERNEL_CACHE / "6.1-plain" / "bzImage", "no-align",
                  "linux-source-6.1 as shipped (kernels/build.sh)"),
    "6.1-align-ge-pmd": (KERNEL_CACHE / "6.1-align-ge-pmd" / "bzImage", "align-ge-pmd",
                         "+ efa7df3e3bb5 + the 6.8 top-down fix (kernels/build.sh)"),
    "6.1-align-pmd-multiple": (KERNEL_CACHE / "6.1-align-pmd-multiple" / "bzImage",
                               "align-pmd-multiple", "+ d4148aeab412 as well (kernels/build.sh)"),
}
# name -> (trace or "preset:NAME", --touch). malloc1 maps 128 MiB 1000 times: only the first
# byte is touched, as will-it-scale's malloc1 writes only the chunk header.
INPUTS = {
    "bert-torch": ("traces/data/bert-torch.arrow", "pages"),
    "bert-onnxruntime": ("traces/data/bert-onnxruntime.arrow", "pages"),
    "seed-buffers": ("preset:seed-buffers", "pages"),
    "cactusbssn": ("preset:cactusbssn", "pages"),
    "malloc1": ("preset:malloc1", "first"),
}
HOST_POLICIES = ("no-align", "align-ge-pmd", "align-pmd-multiple")
# The ONNX Runtime trace keeps 3.1 GiB mapped at its peak (2.4 GiB of it touched with --touch
# pages): more than the default budget (half of MemAvailable) in the guest.
MAX_LIVE = "6G"
GUEST_SYSFS = {"transparent_hugepage/enabled": "always"}
VM = {"memory": "6G", "cpus": "2"}


def input_path(name: str) -> Path:
    source, _ = INPUTS[name]
    if not source.startswith("preset:"):
        return ROOT / source
    path = WORK / "inputs" / f"{name}.arrow"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(MMREPLAY), "synth", "--preset", source.split(":", 1)[1], "-o",
                        str(path)], check=True, capture_output=True)
    return path


def replay_command(name: str, policy: str, thp: str, json_out: Path) -> list[str]:
    return [str(MMREPLAY), "replay", str(input_path(name)), "--policy", policy, "--thp", thp,
            "--touch", INPUTS[name][1], "--max-live", MAX_LIVE, "-o", str(json_out),
            "--no-progress"]


def layout_command(name: str, policy: str, json_out: Path) -> list[str]:
    """The address space at the peak, every VMA (to explain a VMA or hole count that differs)."""
    return [str(MMREPLAY), "layout", str(input_path(name)), "--policy", policy, "--touch",
            INPUTS[name][1], "--max-live", MAX_LIVE, "--json", "-o", str(json_out)]


def guest_script(kernel: str, out: Path, inputs: list[str], layouts: list[str]) -> str:
    """The shell script one guest runs: its facts, its sysfs settings, then every replay."""
    lines = ["#!/bin/sh", "# written by benchmarks/real_kernels.py", f"cd {shlex.quote(str(ROOT))}",
             f"OUT={shlex.quote(str(out))}", 'mkdir -p "$OUT"',
             'echo "# boot $(date -u +%FT%TZ): $(uname -r)" >> "$OUT/status.txt"',
             'uname -r > "$OUT/uname.txt"',
             'cat /proc/cmdline > "$OUT/cmdline.txt"',
             'for f in enabled defrag shmem_enabled khugepaged/max_ptes_none; do '
             'echo "$f $(cat /sys/kernel/mm/transparent_hugepage/$f)"; done > "$OUT/thp-boot.txt"']
    for key, value in GUEST_SYSFS.items():
        lines.append(f"echo {value} > /sys/kernel/mm/{key}")
    lines.append('for f in enabled defrag shmem_enabled khugepaged/max_ptes_none; do '
                 'echo "$f $(cat /sys/kernel/mm/transparent_hugepage/$f)"; done > "$OUT/thp.txt"')
    # One Python process replays every input: under TCG, starting Python and loading the
    # engine takes minutes, the replays themselves much less.
    python = ROOT / ".venv" / "bin" / "python"
    lines.append(shlex.join([str(python), str(Path(__file__).resolve()), "in-guest", str(out),
                             "--inputs", ",".join(inputs), "--layouts", ",".join(layouts)])
                 + ' >> "$OUT/status.txt" 2>&1')
    return "\n".join(lines) + "\n"


def run_guest(kernel: str, inputs: list[str], layouts: list[str]) -> None:
    image, _, _ = KERNELS[kernel]
    if not image.exists():
        print(f"{kernel}: no image at {image} (kernels/build.sh builds it)", file=sys.stderr)
        return
    for name in inputs:
        input_path(name)  # regenerate presets on the host, before the guest needs them
    out = WORK / "guest" / kernel
    out.mkdir(parents=True, exist_ok=True)
    script = WORK / f"guest-{kernel}.sh"
    script.write_text(guest_script(kernel, out, inputs, layouts))
    command = [str(VNG), "--run", str(image), "--user", "root", "--disable-kvm",
               "--memory", VM["memory"], "--cpus", VM["cpus"], "--rwdir", str(ROOT),
               "--rwdir", str(WORK), "--", "sh", str(script)]
    started = time.time()
    done = subprocess.run(command, capture_output=True, text=True,
                          env=dict(os.environ, PATH=f"{VNG.parent}:{os.environ['PATH']}"))
    seconds = time.time() - started
    (out / "vng.log").write_text(done.stdout + done.stderr)
    target = DATA / kernel
    target.mkdir(parents=True, exist_ok=True)
    for path in out.iterdir():
        if path.suffix in (".json", ".txt") and not path.name.startswith("layout-"):
            (target / path.name).write_text(path.read_text())
    tag = "all" if len(inputs) == len(INPUTS) else "-".join(inputs)
    (target / f"boot-{tag}.json").write_text(json.dumps(
        {"kernel": kernel, "image": str(image), "vng": shlex.join(command),
         "script": guest_script(kernel, out, inputs, layouts), "wall_s": round(seconds, 1),
         "exit": done.returncode}, indent=1) + "\n")
    print(f"{kernel}: {seconds:.0f} s, exit {done.returncode}; "
          f"{(out / 'status.txt').read_text() if (out / 'status.txt').exists() else 'no status'}")


def replay_here(out: Path, inputs: list[str], layouts: list[str]) -> None:
    """Inside a guest: ``mmreplay replay INPUT --policy kernel ...`` for each input (and
    ``mmreplay layout`` for each of ``layouts``), in this process (the CLI's own code, called in
    turn), each result and printed table kept in OUT."""
    import contextlib
    import io

    from replay.cli import cli

    jobs = [(name, replay_command(name, "kernel", "as-recorded", out / f"{name}.json"))
            for name in inputs]
    jobs += [(f"layout-{name}", layout_command(name, "kernel", out / f"layout-{name}.json"))
             for name in layouts if name]
    for name, command in jobs:
        args = command[1:]
        text = io.StringIO()
        started = time.time()
        try:
            with contextlib.redirect_stdout(text), contextlib.redirect_stderr(text):
                status = cli.main(args=args, prog_name="mmreplay", standalone_mode=False) or 0
        except SystemExit as exc:
            status = exc.code
        except Exception as exc:  # noqa: BLE001 - reported, and the next input still runs
            status = f"{type(exc).__name__}: {exc}"
        (out / f"{name}.txt").write_text(text.getvalue())
        print(f"{name} exit={status} seconds={time.time() - started:.0f}", flush=True)


def run_host(inputs: list[str], layouts: list[str]) -> None:
    target = DATA / "host"
    target.mkdir(parents=True, exist_ok=True)
    for name in layouts:
        for policy in HOST_POLICIES:
            out = WORK / "host" / f"layout-{name}-{policy}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(layout_command(name, policy, out), check=True, capture_output=True)
    for name in inputs:
        for policy in HOST_POLICIES:
            for thp in ("as-recorded", "always"):
                out = target / f"{name}-{policy}-{thp}.json"
                command = replay_command(name, policy, thp, out)
                subprocess.run(command, check=True, capture_output=True)
                print(f"host {name} {policy} --thp {thp}")


BEGIN, END = "<!-- real_kernels.py tables begin -->", "<!-- real_kernels.py tables end -->"
MIB = 1 << 20


def load(path: Path) -> dict | None:
    """The first run of a result document, with the document's vm/host facts beside it."""
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    run = document["runs"][0]
    run["_document"] = document
    return run


def guest_run(kernel: str, name: str) -> dict | None:
    return load(DATA / kernel / f"{name}.json")


def host_run(name: str, policy: str, thp: str) -> dict | None:
    return load(DATA / "host" / f"{name}-{policy}-{thp}.json")


def buckets(run: dict) -> str:
    """'512K-1.5M 13/162, >=16M 15/64': aligned/mappings for every bucket with mappings."""
    return ", ".join(f"{label} {b['pmd_aligned']}/{b['mappings']}"
                     for label, b in run["pmd_aligned_by_size"].items() if b["mappings"])


def pair(real, emulated, scale: float = 1, decimals: int = 0) -> str:
    def fmt(value):
        if value is None:
            return "n/a"
        return f"{value / scale:,.{decimals}f}"
    return f"{fmt(real)} / {fmt(emulated)}"


def within(real, emulated, fraction: float = 0.02) -> bool:
    if real is None or emulated is None:
        return False
    return abs(real - emulated) <= fraction * max(abs(real), 1)


def guest_release(kernel: str) -> str:
    path = DATA / kernel / "uname.txt"
    return path.read_text().strip() if path.exists() else "?"


def placement_table(kernel: str) -> list[str]:
    _, policy, what = KERNELS[kernel]
    lines = [f"#### {kernel} (`{guest_release(kernel)}`, {what}) against `--policy {policy}`", "",
             "| input | 2 MiB-aligned / mappings per size bucket, real | emulated | same | "
             "peak VMAs real / emulated | holes real / emulated | hole MiB real / emulated |",
             "|---|---|---|---|---|---|---|"]
    for name in INPUTS:
        real, emulated = guest_run(kernel, name), host_run(name, policy, "as-recorded")
        if real is None or emulated is None:
            lines.append(f"| {name} | {'not run' if real is None else buckets(real)} | "
                         f"{'not run' if emulated is None else buckets(emulated)} | | | | |")
            continue
        same = real["pmd_aligned_by_size"] == emulated["pmd_aligned_by_size"]
        vmas_ok = within(real["peak_vmas"], emulated["peak_vmas"])
        holes_ok = within(real["holes"], emulated["holes"])
        lines.append(
            f"| {name} | {buckets(real)} | {'(same)' if same else buckets(emulated)} | "
            f"{'yes' if same else '**no**'} | "
            f"{pair(real['peak_vmas'], emulated['peak_vmas'])}{'' if vmas_ok else ' **>2%**'} | "
            f"{pair(real['holes'], emulated['holes'])}{'' if holes_ok else ' **>2%**'} | "
            f"{pair(real['hole_bytes'], emulated['hole_bytes'], MIB, 2)} |")
    return lines


def system_thp_faults(run: dict):
    """thp_fault_alloc, the /proc/vmstat delta (``vmstat`` in results made before issue 19)."""
    return (run.get("vmstat_system_wide") or run.get("vmstat") or {}).get("thp_fault_alloc")


def thp_table() -> list[str]:
    lines = ["| kernel | input | peak AnonHugePages MiB, real (enabled=always) / host "
             "(`--thp always`) | end AnonHugePages MiB | thp_fault_alloc real / host "
             "(system-wide) | minor faults real / host |", "|---|---|---|---|---|---|"]
    for kernel, (_, policy, _) in KERNELS.items():
        for name in INPUTS:
            real, emulated = guest_run(kernel, name), host_run(name, policy, "always")
            if real is None or emulated is None:
                continue
            lines.append(
                f"| {kernel} | {name} | "
                f"{pair(real['peak_anon_huge_bytes'], emulated['peak_anon_huge_bytes'], MIB, 1)} | "
                f"{pair(real['end_anon_huge_bytes'], emulated['end_anon_huge_bytes'], MIB, 1)} | "
                f"{pair(system_thp_faults(real), system_thp_faults(emulated))} | "
                f"{pair(real['minflt'], emulated['minflt'])} |")
    return lines


def malloc1_table() -> list[str]:
    """malloc1 in each real kernel (enabled=always), and the host's emulation of that kernel
    with ``--thp always`` (native: its times are comparable with each other, not with TCG's)."""
    lines = ["| kernel | 128 MiB + 4 KiB chunks 2 MiB-aligned | thp_fault_alloc | per iteration | "
             "minor faults | replay time (s, TCG) | host emulation: thp_fault_alloc "
             "(system-wide) | host emulation: replay time (s, native) |",
             "|---|---|---|---|---|---|---|---|"]
    for kernel, (_, policy, _) in KERNELS.items():
        run = guest_run(kernel, "malloc1")
        if run is None:
            continue
        host = host_run("malloc1", policy, "always")
        iterations = run["ops"]["mmap"]["count"] or 1
        thp = system_thp_faults(run)
        lines.append(
            f"| {kernel} | {run['pmd_aligned_large_mappings']} of {run['large_mappings']} | "
            f"{thp} | {thp / iterations:.2f} | {run['minflt']:,} | {run['engine_s']:.2f} | "
            + (f"{system_thp_faults(host)} (`--policy {policy}`) | "
               f"{host['engine_s']:.3f} |" if host else "not run | |"))
    return lines


def vma_diffs() -> list[str]:
    """For every layout dumped (--layouts): the VMA-by-VMA comparison's first line; the full
    list is kept in DATA/<kernel>/vmas-<input>.txt."""
    lines = []
    for kernel, (_, policy, _) in KERNELS.items():
        for name in INPUTS:
            if not ((WORK / "guest" / kernel / f"layout-{name}.json").exists()
                    and (WORK / "host" / f"layout-{name}-{policy}.json").exists()):
                continue
            diff = diff_vmas(kernel, name)
            (DATA / kernel / f"vmas-{name}.txt").write_text("\n".join(diff) + "\n")
            lines.append(f"- {diff[0]}; {len(diff) - 1} listed in "
                         f"[{kernel}/vmas-{name}.txt](real-kernels-data/{kernel}/vmas-{name}.txt)")
    return lines


def render_tables() -> str:
    out = [BEGIN, "", "### Placement: real kernels against their emulation", ""]
    for kernel in KERNELS:
        out += placement_table(kernel) + [""]
    diffs = vma_diffs()
    if diffs:
        out += ["VMA by VMA at the peak (`mmreplay layout --json` on both sides, compared by "
                "`benchmarks/real_kernels.py diff-vmas KERNEL INPUT`):", ""] + diffs + [""]
    out += ["### THP with enabled=always: real kernels against the host's `--thp always`", ""]
    out += thp_table() + [""]
    out += ["### malloc1 on the real kernels (enabled=always)", ""]
    out += malloc1_table() + ["", END]
    return "\n".join(out) + "\n"


def write_between_markers(path: Path, text: str) -> None:
    """Replace what lies between the markers of ``path`` (or append) with ``text``."""
    current = path.read_text() if path.exists() else ""
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        updated = head + text.rstrip("\n") + tail
    else:
        updated = current + ("\n" if current else "") + text
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(updated)
    temporary.replace(path)


def diff_vmas(kernel: str, name: str) -> list[str]:
    """The replay's VMAs at the peak that only one side has (guest ``kernel`` against the host's
    emulation). The replay's region sits at another address on each side (ASLR): the shift is
    the most common distance between VMAs of equal size; granted literal hints of the trace keep
    their addresses. Offsets are printed from the top of the real side's shifted VMAs."""
    from collections import Counter

    _, policy, _ = KERNELS[kernel]
    real, emulated = (
        {(v["start"], v["end"]) for v in json.loads(path.read_text())["vmas"]
         if v["owner"] == "replay"}
        for path in (WORK / "guest" / kernel / f"layout-{name}.json",
                     WORK / "host" / f"layout-{name}-{policy}.json"))
    by_length = Counter()
    for start, end in emulated:
        by_length[end - start] += 1
    shifts = Counter(a - b for a, a_end in real for b, b_end in emulated
                     if a_end - a == b_end - b and by_length[b_end - b] < 64)
    shift = shifts.most_common(1)[0][0] if shifts else 0
    matched_real, shifted, emulated_only = set(), [], []
    for start, end in emulated:
        if (start + shift, end + shift) in real:
            matched_real.add((start + shift, end + shift))
            shifted.append(end + shift)
        elif (start, end) in real:
            matched_real.add((start, end))
        else:
            emulated_only.append((start + shift, end + shift))
    real_only = sorted(real - matched_real)
    top = max(shifted, default=0)
    def spans(ranges):  # adjacent VMAs joined: what is mapped, whatever the boundaries
        joined = []
        for start, end in sorted(ranges):
            if joined and joined[-1][1] == start:
                joined[-1] = (joined[-1][0], end)
            else:
                joined.append((start, end))
        return joined

    same_spans = spans(real_only) == spans(emulated_only)
    lines = [f"{kernel} {name}: {len(real)} VMAs real, {len(emulated)} emulated, "
             f"{len(matched_real)} identical (same offsets in the replay's region); the others "
             + ("cover the same address ranges, split at other boundaries" if same_spans
                else "differ in the address ranges they cover")]
    for label, only in (("real only", real_only), ("emulated only", sorted(emulated_only))):
        for start, end in only:
            lines.append(f"  {label:13} top{(start - top) / MIB:+11.3f} MiB .. "
                         f"top{(end - top) / MIB:+11.3f} MiB ({(end - start) // 1024} KiB)")
    return lines

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    guest = sub.add_parser("guest", help="boot kernels and replay every input inside")
    guest.add_argument("kernels", nargs="+", help=f"all, or some of: {', '.join(KERNELS)}")
    host = sub.add_parser("host", help="the host's emulated replays of every input")
    here = sub.add_parser("in-guest", help="(run by the guest) replay the inputs here")
    here.add_argument("out", type=Path)
    for command in (guest, host, here):
        command.add_argument("--inputs", default=",".join(INPUTS),
                             help=f"comma-separated, some of: {', '.join(INPUTS)}")
        command.add_argument("--layouts", default="",
                             help="also dump the address space at the peak (mmreplay layout "
                                  "--json, kept in WORK) for these inputs")
    diff = sub.add_parser("diff-vmas", help="VMAs only one side has (needs --layouts runs)")
    diff.add_argument("kernel")
    diff.add_argument("input")
    tables = sub.add_parser("tables", help="print the tables (markdown)")
    tables.add_argument("--write", type=Path, help="replace the tables in this markdown file")
    args = parser.parse_args(argv)
    layouts = [name for name in getattr(args, "layouts", "").split(",") if name]
    if args.what == "guest":
        for kernel in (list(KERNELS) if args.kernels == ["all"] else args.kernels):
            run_guest(kernel, args.inputs.split(","), layouts)
    elif args.what == "host":
        run_host(args.inputs.split(","), layouts)
    elif args.what == "diff-vmas":
        print("\n".join(diff_vmas(args.kernel, args.input)))
    elif args.what == "in-guest":
        replay_here(args.out, args.inputs.split(","), layouts)
    else:
        text = render_tables()
        if args.write:
            write_between_markers(args.write, text)
        else:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
