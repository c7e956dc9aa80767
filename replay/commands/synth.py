"""mmreplay synth: a synthetic trace from a spec file, a preset and/or options."""

from __future__ import annotations

import json

import click

from synth.presets import presets_help

from replay.commands.common import check_outputs, emit, invoked_argv
from replay.commands.options import json_option, output_option

HELP = f"""Write a synthetic trace: COUNT anonymous mmaps with sizes from a distribution,
unmapped by a lifetime policy under live limits, at consistent addresses (live mappings never
overlap, every munmap names a live mapping, freed ranges are reused top-down as Linux does).

SPEC.toml holds the same keys as the options (live_bytes for --live-bytes); options given on
the command line override the spec file or preset. The trace's metadata keeps the full spec
and seed, and `mmreplay info` prints the exact command that regenerates it.

\b
Size distributions (--size; default uniform:512K,1536K; sizes take K, M,
G, T suffixes, powers of 1024: 4632K is 4632 KiB):
  uniform:LOW,HIGH             every size in [LOW, HIGH] equally likely
  lognormal:MEDIAN,SIGMA[,MIN,MAX]
                               log-normal truncated to [MIN, MAX]
                               (default 1 byte, 16T)
  choice:A,B,...[@WA,WB,...]   one of the sizes, optional relative weights
  const:SIZE                   always SIZE
  empirical:TRACE.arrow        resample the trace's anonymous mmap lengths
                               (--no-malloc-overhead keeps them as recorded)
  quantiles:Q0,Q1,...,Qm       piecewise linear between evenly spaced
                               quantiles (what `mmreplay fit` writes)
Sizes are drawn stratified: even a short trace follows its distribution.

\b
Lifetimes (--lifetime): which live mapping goes when a live limit is reached
  fifo   the oldest       lifo   the newest       random   any, uniformly
  exp:MEAN  each mapping also dies after an exponential number of later
            mmaps (mean MEAN); the earliest death goes first at a limit
After the last mmap all but --keep-at-end mappings are unmapped, in order.

{presets_help()}

\b
Examples:
  mmreplay synth --count 1000 --seed 1 -o buffers.arrow
  mmreplay synth --preset cactusbssn --madvise hugepage -o cactus.arrow
  mmreplay synth --preset malloc1 --count 10000 -o malloc1.arrow
  mmreplay synth --size lognormal:1M,0.8,4K,64M --live-bytes 2G \\
      --lifetime exp:500 --threads 4 --count 1000000 -o stress.arrow
  mmreplay fit bert.arrow -o bert.toml
  mmreplay synth bert.toml --seed 7 -o bert-like.arrow
  mmreplay synth --preset seed-buffers --print-spec > my.toml
  mmreplay synth --level malloc --count 1000 --size uniform:512K,1536K \
      --live 64 -o buffers-malloc.arrow   # then: replay --allocator jemalloc
"""


@click.command("synth", help=HELP,
               short_help="Write a synthetic trace from a spec, a preset or options.")
@click.argument("spec_file", metavar="[SPEC.toml]", required=False,
                type=click.Path(dir_okay=False, path_type=str))
@output_option("Trace to write (.arrow)")
@click.option("--preset", metavar="NAME", help="Start from a named workload (see above).")
@click.option("--count", type=int, help="Mappings to create. [default: 1000]")
@click.option("--size", metavar="DIST", help="Request size distribution (see above).")
@click.option("--level", type=click.Choice(["mmap", "malloc"]), default=None,
              help="mmap: mmap/munmap calls (default); malloc: malloc/free calls of the same "
                   "sizes and lifetimes, for `replay --allocator`.")
@click.option("--malloc-overhead/--no-malloc-overhead", default=None,
              help="Map what glibc maps for malloc(SIZE): SIZE + chunk header, rounded up to "
                   "4 KiB (default), or SIZE itself.")
@click.option("--live", type=int, help="Most mappings alive at once. [default: no limit]")
@click.option("--live-bytes", metavar="BYTES",
              help="Most mapped bytes alive at once, e.g. 2G (GiB). [default: no limit]")
@click.option("--lifetime", metavar="POLICY", help="fifo | lifo | random | exp:MEAN. [default: fifo]")
@click.option("--keep-at-end", type=int, help="Mappings left alive at the end. [default: 0]")
@click.option("--threads", type=int, help="Worker streams: tid 0..T-1, mapping i on i mod T. "
                                          "[default: 1]")
@click.option("--madvise", metavar="ADVICE",
              help="hugepage | nohugepage | none, or ADVICE[:RATE],... with RATE calls per mmap "
                   "(any MADV_* name): madvise of the whole mapping after each mmap. "
                   "[default: none]")
@click.option("--guard-pages", type=float, metavar="FRACTION",
              help="Share of mappings whose first page gets mprotect(PROT_NONE), as glibc "
                   "does for thread stacks. [default: 0]")
@click.option("--brk-calls", type=int, help="brk calls spread among the events. [default: 0]")
@click.option("--brk-step", metavar="BYTES", help="Heap growth per brk call (K = KiB). [default: 132K]")
@click.option("--seed", type=int, help="Random seed; same spec and seed, same events. [default: 0]")
@click.option("--print-spec", is_flag=True, help="Print the resulting spec as TOML and exit.")
@json_option("what was written")
def command(spec_file: str | None, output: str | None, preset: str | None, print_spec: bool,
            as_json: bool, **options) -> None:
    from traces.errors import MmreplayError
    from traces.units import fmt_bytes

    from synth.generate import write_synth
    from synth.presets import resolve_spec
    from synth.spec import spec_to_toml

    spec = resolve_spec(spec_file, preset, options)
    if print_spec:
        click.echo(spec_to_toml(spec), nl=False)
        return
    if not output:
        raise MmreplayError("no output: give -o OUT.arrow (or --print-spec to see the spec)")
    check_outputs(output)
    from synth.presets import preset_replay_settings

    written = write_synth(spec, output, argv=invoked_argv(),
                          extra_metadata=preset_replay_settings(preset))
    if as_json:
        emit(json.dumps(written, indent=2) + "\n", None, output)
        return
    ops = ", ".join(f"{op} {n}" for op, n in written["ops"].items())
    emit(f"wrote        {output} ({written['events']} events: {ops})\n"
         f"peak live    {fmt_bytes(written['peak_live_bytes'])} "
         f"{'requested' if spec.level == 'malloc' else 'mapped'}\n"
         f"regenerate   {written['regenerate']}\n", None, output)
