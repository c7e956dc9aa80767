"""Click options shared by the commands: the replay configuration (replay, compare, layout),
--progress, --json and -o/--output (one meaning each, on every command)."""

from __future__ import annotations

import click

from traces import MmreplayError
from traces.units import parse_size


SIZE_UNITS = "K, M, G, T are powers of 1024 (KiB, MiB, GiB, TiB)"


class SizeType(click.ParamType):
    name = "BYTES"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except MmreplayError as exc:
            self.fail(str(exc), param, ctx)


SIZE = SizeType()


def replay_options(multi: bool = False):
    """--policy/--thp/--touch/--access/--files/--collapse/--max-live; with ``multi`` (compare)
    --policies and each of the others takes a comma list, and --policies has no fixed default
    (``replay.running.compare.DEFAULT_POLICIES``)."""
    from replay.running.config import FILE_MODES, THP_MODES, TOUCH_MODES
    from replay.engine.policy import POLICIES

    def choice(values):
        return str if multi else click.Choice(values)

    plural = "Comma-separated list; " if multi else ""
    options = [
        click.option("--policies" if multi else "--policy", "policy",
                     default=None if multi else "kernel", show_default=not multi,
                     type=choice(POLICIES),
                     help=f"{plural}placement rule of which kernel for anonymous mappings "
                          "(see 'Placement policies' above), emulated with this kernel's own "
                          "search (and MAP_STACK as a no-op under no-align); VMA merging and THP "
                          "stay this kernel's (docs/real-kernels.md)."
                          + ("  [default: kernel,align-ge-pmd; kernel alone when another option "
                             "varies or with --kernels]" if multi else "")),
        click.option("--thp", default="as-recorded", show_default=True, type=choice(THP_MODES),
                     help=f"{plural}as-recorded, always or never (see 'THP' above)."),
        click.option("--touch", default="pages", show_default=True, type=choice(TOUCH_MODES),
                     help=f"{plural}how new memory is used: none, first byte, one byte per page, "
                          "or every byte (written; read if read-only). It is touched when the "
                          "workload would first use it: after the madvise and mprotect calls "
                          "its thread makes before that thread's next mmap, munmap, mremap or "
                          "brk."),
        click.option("--access", default="none", show_default=True,
                     help=f"{plural}reads: none, stream:N (N passes before unmap), random:K (K reads "
                          "per MiB) or lockstep:N (sweeps over all live mappings per chunk)."),
        click.option("--files", default="anon", show_default=True, type=choice(FILE_MODES),
                     help=f"{plural}file-backed mmaps: replay as anonymous (keeping the 2 MiB "
                          "alignment the recording host gave them), or skip."),
        click.option("--collapse", default="none", show_default=True,
                     help=f"{plural}after fault-in, at the peak (layout: at --at), collapse the "
                          "replay's memory into huge pages: none, madvise (MADV_COLLAPSE on every "
                          "live range) or khugepaged:SECONDS (wait for a full khugepaged scan, at "
                          "most SECONDS); THP before and after are reported apart."),
        click.option("--max-live", type=SIZE, default=None,
                     help="Refuse traces keeping more than this mapped (default: half of "
                          f"MemAvailable); {SIZE_UNITS}."),
    ]

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def replay_config(values: dict):
    """The ``ReplayConfig`` of the replay options in ``values`` (a command's parameters; other
    keys are left out)."""
    from dataclasses import fields

    from replay.running.config import Access, ReplayConfig

    given = {f.name: values[f.name] for f in fields(ReplayConfig) if f.name in values}
    return ReplayConfig(**{**given, "access": Access.parse(given["access"])})


def threads_option(multi: bool = False):
    """--threads: how the recorded threads run (replay); with ``multi`` a comma list (compare)."""
    return click.option("--threads", default="1", show_default=True,
                        help="1 (serial), recorded (one OS thread per recorded thread, at most "
                             "64) or N threads (1 to 64)" + (", or a comma list." if multi
                                                               else "."))


def perf_faults_option(func):
    """--perf-faults (replay, compare)."""
    return click.option("--perf-faults", is_flag=True,
                        help="Also count page faults with a perf_event_open software counter (it "
                             "slows each fault by ~3%; minor faults from getrusage are always "
                             "reported).")(func)


def pick_option(func):
    """--pick N: which trace, when the input (a mail, an mbox, a text) holds several."""
    return click.option("--pick", type=click.IntRange(min=1), metavar="N", default=None,
                        help="When TRACE is a mail, an mbox or a text holding several traces, "
                             "use the Nth (mmreplay lists them when this is missing).")(func)


def trace_in_one_out(output_help: str):
    """TRACE, --pick and -o/--output: a command that reads one trace (a file, a mail, an mbox)
    and writes one thing (share, slice)."""
    def decorate(func):
        return click.argument("trace", type=str)(pick_option(output_option(output_help)(func)))

    return decorate


def replay_help_sections() -> str:
    """The part of the replay, compare and layout help that says what the policies and THP
    modes are (click keeps the \\b paragraphs as written)."""
    from replay.engine.policy import POLICY_HELP

    policies = "\n".join(f"  {name:<19} {text}" for name, text in POLICY_HELP.items())
    return f"""\b
Placement policies (--policy; --policies in compare): the rule for a
private anonymous mmap without an address hint, emulated in user space:
{policies}

\b
THP (--thp):
  as-recorded  the trace's own madvise calls, nothing more
  always       MADV_HUGEPAGE on every new anonymous mapping of the replay,
               but what enabled=always leaves out: MAP_STACK mappings
               (VM_NOHUGEPAGE since 6.7.5; under no-align, an older
               kernel, stacks are advised too) and ranges the trace
               advised MADV_NOHUGEPAGE; an mremap the replay emulates
               keeps the advice. On a host with enabled=madvise this makes
               the replay's mappings THP-eligible, as sysfs enabled=always
               would make every process's mappings. With defrag=madvise
               their faults also reclaim and compact memory directly,
               which enabled=always does not do for mappings without
               MADV_HUGEPAGE. No effect when enabled=never.
  never        MADV_NOHUGEPAGE on every new anonymous mapping of the
               replay; the trace's MADV_HUGEPAGE dropped

\b
Sizes (--max-live): {SIZE_UNITS}.
"""


def progress_option(func):
    """--progress/--no-progress, on every command that draws a bar (see common.Progress)."""
    return click.option("--progress/--no-progress", default=None,
                        help="Progress bar on stderr (default: when stderr is a terminal).")(func)


def json_option(what: str):
    """--json: a flag, always "print JSON instead of text"."""
    return click.option("--json", "as_json", is_flag=True,
                        help=f"Print {what} as JSON instead of text.")


def output_option(what: str):
    """-o/--output FILE: the file the command writes; '-' is stdout, never a file named '-'."""
    return click.option("-o", "--output", metavar="FILE",
                        type=click.Path(dir_okay=False, allow_dash=True, path_type=str),
                        help=f"{what} ('-' writes it to stdout; reports then go to stderr).")


def copies_option(func):
    """--copies N, A..B or a list: replays at once, as separate processes (replay, compare)."""
    return click.option(
        "--copies", metavar="N|A..B|N,M,...", default=None,
        help="Stress: run N copies of the replay at once, as separate processes that start "
             "every run together; the result gives each copy's own figures and their sums. "
             "A list (1,2,4,8) or range (1..4) runs each count and adds a scalability table "
             "(events/s per copy and its ratio to the smallest count). --max-live covers all "
             "copies together.")(func)


VM_OPTION_NAMES = ("kernel", "vm_memory", "vm_cpus", "vm_timeout", "vm_accel", "guest_sysfs",
                   "vm_append")


def vm_options(kernel_help: str | None = None):
    """--kernel and the options of the guest it boots (replay, layout, compare)."""
    options = [
        click.option("--kernel", metavar="IMAGE", default=None,
                     help=kernel_help or "Replay inside this kernel, booted in a QEMU guest with "
                     "virtme-ng: a bzImage/vmlinuz file or a built kernel tree. The guest sees "
                     "this machine's files read-only and runs the same mmreplay."),
        click.option("--vm-memory", type=SIZE, default=None, metavar="BYTES",
                     help="Guest memory, e.g. 2G (default: the trace's peak live bytes plus "
                          "512 MiB, at least 1 GiB). A trace that cannot fit is refused before "
                          "booting."),
        click.option("--vm-cpus", type=click.IntRange(1, 64), default=2, show_default=True,
                     help="Guest CPUs."),
        click.option("--vm-timeout", type=click.FloatRange(1), default=600, show_default=True,
                     metavar="SECONDS",
                     help="Stop a guest that shows no progress for this long (booting, "
                          "starting Python or replaying)."),
        click.option("--vm-accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto",
                     show_default=True,
                     help="auto: KVM where it works here (else TCG, saying why), else force one."),
        click.option("--guest-sysfs", multiple=True, metavar="PATH=VALUE",
                     help="Write a setting under /sys/kernel/mm in the guest before replaying "
                          "(repeatable), e.g. transparent_hugepage/enabled=always."),
        click.option("--vm-append", multiple=True, metavar="ARGS",
                     help="Extra guest kernel command-line arguments (repeatable)."),
    ]

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def vm_settings(values: dict, guest: bool | None = None):
    """(KernelImage or None, VmOptions) from the vm_options values; the image is checked here,
    before any work. ``values`` may hold other keys. ``guest``: whether a guest will run (by
    default: whether --kernel was given; compare's --kernels boots guests without it)."""
    from replay.vm.image import resolve_kernel
    from replay.vm.runner import VmOptions, parse_guest_sysfs

    kernel = resolve_kernel(values["kernel"]) if values.get("kernel") else None
    options = VmOptions(memory_mib=(values["vm_memory"] >> 20) if values.get("vm_memory") else None,
                        cpus=values.get("vm_cpus") or 2, timeout_s=values.get("vm_timeout") or 600,
                        accel=values.get("vm_accel") or "auto",
                        sysfs=parse_guest_sysfs(values.get("guest_sysfs")),
                        append=tuple(values.get("vm_append") or ()))
    if not (kernel is not None if guest is None else guest) and (options.sysfs or options.append):
        raise MmreplayError("--guest-sysfs and --vm-append apply to a guest: give --kernel too")
    return kernel, options


def options_given(ctx: click.Context) -> frozenset:
    """Names of the parameters given on the command line (or by environment), not defaulted."""
    from click.core import ParameterSource

    return frozenset(name for name in ctx.params
                     if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                                           ParameterSource.ENVIRONMENT))
