"""mmreplay fit: a synth spec fitted to a recorded trace."""

from __future__ import annotations

import json

import click

from replay.commands.common import check_outputs, emit, is_stdout
from replay.commands.options import json_option, output_option, pick_option


@click.command("fit", short_help="Fit a synth spec (TOML) to a trace's anonymous memory.")
@click.argument("trace", type=click.Path(dir_okay=False, path_type=str))
@pick_option
@output_option("Spec file to write (.toml); without it the spec is printed")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed written into the spec (and used for the quality check).")
@click.option("--level", type=click.Choice(["mmap", "malloc"]), default="mmap", show_default=True,
              help="Fit the anonymous mmaps, or the allocation calls (record --malloc): request "
                   "sizes, peak live requested bytes, free order and lifetimes.")
@json_option("the spec and the quality figures")
def command(trace: str, pick: int | None, output: str | None, seed: int, level: str,
            as_json: bool) -> None:
    """Fit a synth spec (at most 4 KiB of TOML) to TRACE's anonymous memory.

    TRACE is a trace file, or a saved mail, an mbox or any text holding one (a `mmreplay
    share` block, quoted or not, or the trace attached).

    The spec holds the anonymous mmap length distribution (the exact count of each distinct
    length when that fits, else up to 129 quantiles), their count and peak live bytes, the
    lifetime policy, threads, madvise and mprotect rates and brk calls. File-backed mappings
    are not modelled.
    `mmreplay synth SPEC.toml` then yields a statistically similar trace; fit checks this by
    synthesizing it once and prints the comparison: Kolmogorov-Smirnov distance of the
    anonymous mmap lengths, mmap counts, peak live bytes and the op mix of anonymous-memory
    calls.

    \b
    Examples:
      mmreplay fit bert.arrow -o bert.toml
      mmreplay synth bert.toml --count 100000 --seed 3 -o bert-x100.arrow
      mmreplay fit traces/data/buffers-4632k.arrow --json | jq .quality
      mmreplay fit bert-malloc.arrow --level malloc -o bert-malloc.toml
    """
    from traces import read_trace
    from traces.units import fmt_bytes

    from synth.fit import fit_trace

    check_outputs(output)
    result = fit_trace(read_trace(trace, pick), trace, seed=seed, level=level)
    if output:
        emit(result.toml, output)
    q = result.quality
    if as_json:
        emit(json.dumps({"spec": result.spec.to_dict(), "toml": result.toml,
                         "spec_bytes": len(result.toml.encode()), "quality": q}, indent=2) + "\n",
             None, output)
        return
    if not output:
        click.echo(result.toml, nl=False)
        click.echo("")
    to_file = output and not is_stdout(output)
    what, unit = (("allocation request sizes", "allocations") if level == "malloc"
                  else ("anonymous mmap lengths", "mmaps"))
    lines = [
        f"wrote        {output} ({len(result.toml.encode())} bytes)" if to_file else None,
        f"sizes        KS distance {q['ks_mmap_lengths']:.4f} between the "
        f"{what} of the trace and of one synthesis",
        f"{unit:<13}{q['mmaps'][0]} in the trace, {q['mmaps'][1]} synthesized",
        f"peak live    {fmt_bytes(q['peak_live_bytes'][0])} in the trace, "
        f"{fmt_bytes(q['peak_live_bytes'][1])} synthesized ({q['peak_live_ratio']:.3f}x)",
        f"op mix       largest difference {100 * q['op_mix_max_difference']:.2f} percentage points "
        f"({q['op_mix_worst_op']})",
        f"threads      {q['threads'][0]} in the trace, {q['threads'][1]} synthesized",
    ]
    click.echo("\n".join(line for line in lines if line), err=not to_file)
