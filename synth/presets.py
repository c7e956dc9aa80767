"""Named workloads people discuss on linux-mm, each with the source it comes from."""

from __future__ import annotations

import dataclasses
import textwrap
from dataclasses import dataclass

from traces.errors import MmreplayError

from .spec import Spec, read_spec, validate_spec


@dataclass(frozen=True)
class Preset:
    name: str
    spec: Spec
    summary: str
    source: str
    # Replay options the workload needs to show its effect (written into the trace's metadata;
    # `mmreplay replay` uses them unless told otherwise), and why.
    replay: tuple = ()
    replay_why: str = ""


PRESETS = {
    preset.name: preset
    for preset in (
        Preset(
            "seed-buffers",
            Spec(count=1000, size="uniform:512K,1536K", malloc_overhead=True, lifetime="fifo"),
            "1000 buffers of 512 KiB-1.5 MiB requested from malloc, all alive together, then freed",
            "the workload reported in the LKML thread 'mm: limit THP alignment - performance gain "
            "observed in AI inference workloads' (Siddhartha Sharma, 27-30 Jun 2025)",
        ),
        Preset(
            "cactusbssn",
            Spec(count=128, size="const:4632K", malloc_overhead=False, lifetime="fifo"),
            "128 mappings of 4632 KiB alive together, then unmapped",
            "SPEC CPU cactusBSSN, SUSE bz 1229012: up to 600% slower once 6.7 (efa7df3e3bb5) "
            "2 MiB-aligned each of its 4632 KiB mappings; fixed by d4148aeab412 in 6.12-rc6",
        ),
        Preset(
            "malloc1",
            Spec(count=1000, size="const:128M", malloc_overhead=True, live=1, lifetime="fifo"),
            "will-it-scale malloc1: malloc(128 MiB) then free, 1000 times; glibc maps 128 MiB + "
            "4 KiB, one alive at a time",
            "Intel LKP report on d4148aeab412 (malloc1 +3888.9% on Cooper Lake once the 128 MiB + "
            "4 KiB chunk was no longer 2 MiB-aligned)",
            replay=(("touch", "first"), ("thp", "always")),
            replay_why="malloc1 writes only the chunk header after each malloc, and the LKP runs "
                       "had THP enabled=always: the cost is one fault that zeroes a whole huge page "
                       "when the chunk starts 2 MiB-aligned",
        ),
    )
}


def preset_spec(name: str) -> Spec:
    try:
        return validate_spec(PRESETS[name].spec)
    except KeyError:
        raise MmreplayError(f"unknown preset {name!r} (expected one of {', '.join(PRESETS)})") from None


def preset_replay_settings(name: str | None) -> dict:
    """The trace metadata block of a preset's recommended replay options ({} for none)."""
    preset = PRESETS.get(name) if name else None
    if preset is None or not preset.replay:
        return {}
    return {"replay_settings": dict(preset.replay),
            "replay_settings_why": f"preset {preset.name}: {preset.replay_why}"}


def presets_help() -> str:
    """The presets paragraph of ``mmreplay synth --help`` (click's \\b keeps the lines)."""
    lines = ["\b", "Presets (--preset NAME; options given with it override its keys):"]
    for preset in PRESETS.values():
        lines += textwrap.wrap(f"{preset.name}: {preset.summary}.", 78, initial_indent="  ",
                               subsequent_indent="    ")
        lines += textwrap.wrap(f"Source: {preset.source}.", 78, initial_indent="    ",
                               subsequent_indent="    ")
        if preset.replay:
            options = " ".join(f"--{key} {value}" for key, value in preset.replay)
            lines += textwrap.wrap(f"Replayed with {options} unless told otherwise "
                                   f"({preset.replay_why}).", 78, initial_indent="    ",
                                   subsequent_indent="    ")
    return "\n".join(lines)


def resolve_spec(spec_file: str | None, preset: str | None, options: dict) -> Spec:
    """The spec ``mmreplay synth`` runs: preset or spec file (not both), then the options given.

    ``options`` maps spec keys to command-line values, None for options not given. A relative
    ``empirical:`` path is taken from the spec file's folder when the file names it (read_spec
    resolves it), from the current folder when an option does.
    """
    if spec_file and preset:
        raise MmreplayError("give a spec file or --preset, not both")
    if preset:
        spec = preset_spec(preset)
    elif spec_file:
        spec = read_spec(spec_file)
    else:
        spec = Spec()
    given = {key: value for key, value in options.items() if value is not None}
    return validate_spec(dataclasses.replace(spec, **given))
