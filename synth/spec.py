"""The synthetic workload spec: one dataclass, its TOML file form, its command-line form.

Every key of a spec file is also a ``mmreplay synth`` option (``live_bytes`` <-> ``--live-bytes``),
so a spec can always be written out as the exact command that regenerates a trace.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from traces.errors import MmreplayError
from traces.schema import MADV
from traces.units import fmt_size_short, parse_size

from .distributions import parse_distribution

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

LIFETIMES = ("fifo", "lifo", "random", "exp")
LEVELS = ("mmap", "malloc")
MAX_COUNT = 1 << 31  # mapping ids and event counts stay well inside int64 arrays
MAX_THREADS = 1 << 16
MAX_MADVISE_RATE = 64.0
SEED_LIMIT = 1 << 64

# madvise advice names accepted by --madvise (MADV_HUGEPAGE -> "hugepage"). Memory-failure
# injection (MADV_HWPOISON, MADV_SOFT_OFFLINE) is left out: a replay as root would really do it.
UNSAFE_ADVICE = ("MADV_HWPOISON", "MADV_SOFT_OFFLINE")
ADVICE = {name[len("MADV_"):].lower(): number for name, number in MADV.items()
          if name not in UNSAFE_ADVICE}
ADVICE_NAME = {number: name for name, number in ADVICE.items()}


@dataclass(frozen=True)
class Spec:
    """What ``mmreplay synth`` generates. Sizes are bytes; ``None`` means "no limit"."""

    count: int = 1000
    size: str = "uniform:512K,1536K"
    level: str = "mmap"
    malloc_overhead: bool = True
    live: int | None = None
    live_bytes: int | None = None
    lifetime: str = "fifo"
    keep_at_end: int = 0
    threads: int = 1
    madvise: str = "none"
    guard_pages: float = 0.0
    brk_calls: int = 0
    brk_step: int = 132 << 10
    seed: int = 0

    # -- derived views ---------------------------------------------------------------------

    def lifetime_policy(self) -> tuple[str, float]:
        """('exp', MEAN) or (policy, 0.0)."""
        kind, _, mean = self.lifetime.partition(":")
        return kind, float(mean) if mean else 0.0

    def madvise_rates(self) -> list[tuple[str, float]]:
        """[(advice name, calls per mapping)] in the order given."""
        return parse_madvise(self.madvise)

    def to_dict(self) -> dict:
        """Canonical, JSON- and TOML-friendly form (sizes as exact short strings)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "level" and value == "mmap"):
                continue  # level: only when not the default, as specs were before it
            if f.name in SIZE_KEYS:
                value = fmt_size_short(value)
            out[f.name] = value
        return out

    def replace(self, **changes) -> "Spec":
        return validate_spec(dataclasses.replace(self, **changes))


SIZE_KEYS = ("live_bytes", "brk_step")
KEYS = tuple(f.name for f in dataclasses.fields(Spec))
KEY_HELP = {
    "count": "mappings to create",
    "size": "request size distribution (see --size)",
    "level": "mmap (mmap/munmap calls) or malloc (malloc/free calls, for replay --allocator)",
    "malloc_overhead": "map what glibc maps for a request (true) or the size itself (false)",
    "live": "most mappings alive at once",
    "live_bytes": "most mapped bytes alive at once",
    "lifetime": "fifo | lifo | random | exp:MEAN (which live mapping is unmapped next)",
    "keep_at_end": "mappings left alive when the trace ends (the rest are unmapped)",
    "threads": "worker streams (tid 0..threads-1, mapping i belongs to i mod threads)",
    "madvise": "none | ADVICE[:RATE],... madvise calls after each mmap (RATE calls per mmap)",
    "guard_pages": "fraction of mappings whose first page gets mprotect(PROT_NONE)",
    "brk_calls": "brk calls (the first queries the break, the others grow it)",
    "brk_step": "bytes each brk call grows the heap by",
    "seed": "random seed (same spec and seed: identical events)",
}


def parse_madvise(text: str) -> list[tuple[str, float]]:
    text = re.sub(r"\s+", "", str(text)).lower()
    if text in ("", "none"):
        return []
    rates = []
    for part in text.split(","):
        name, colon, rate_text = part.partition(":")
        name = name.removeprefix("madv_")
        if name not in ADVICE:
            raise MmreplayError(f"--madvise {text}: unknown advice {name!r} (expected hugepage, "
                                "nohugepage, none, or another MADV_* name such as dontneed)")
        rate = 1.0
        if colon:
            try:
                rate = float(rate_text)
            except ValueError:
                raise MmreplayError(f"--madvise {text}: rate {rate_text!r} is not a number") from None
            if not (0 <= rate <= MAX_MADVISE_RATE):
                raise MmreplayError(f"--madvise {text}: rate {rate_text} is outside 0..{MAX_MADVISE_RATE:g}"
                                    " calls per mmap")
        if any(name == seen for seen, _ in rates):
            raise MmreplayError(f"--madvise {text}: advice {name} given twice")
        rates.append((name, rate))
    return rates


def _fmt_rate(rate: float) -> str:
    return str(int(rate)) if rate == int(rate) else repr(rate)


def format_madvise(rates: list[tuple[str, float]]) -> str:
    if not rates:
        return "none"
    return ",".join(name if rate == 1 else f"{name}:{_fmt_rate(rate)}" for name, rate in rates)


def _want_int(key: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MmreplayError(f"{key} = {value!r}: expected a whole number")
    if not low <= value <= high:
        raise MmreplayError(f"{key} = {value}: expected {low}..{high}")
    return value


def _want_size(key: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise MmreplayError(f"{key} = {value!r}: expected a size such as 1G or 4096")
    negative = value.strip().startswith("-") if isinstance(value, str) else value < 0
    if negative:
        raise MmreplayError(f"{key} = {value}: sizes cannot be negative")
    try:
        number = value if isinstance(value, int) else parse_size(str(value))
    except MmreplayError as exc:
        raise MmreplayError(f"{key} = {value!r}: {exc}") from None
    if number <= 0:
        raise MmreplayError(f"{key} = {value}: must be at least 1 byte")
    return number


def validate_spec(spec: Spec, base_dir: str | os.PathLike | None = None) -> Spec:
    """Check every field; return the spec in canonical form (raises MmreplayError, one line)."""
    count = _want_int("count", spec.count, 1, MAX_COUNT)
    if not isinstance(spec.size, str):
        raise MmreplayError(f"size = {spec.size!r}: expected a string such as 'uniform:512K,1536K'")
    size = parse_distribution(spec.size, base_dir).text
    if not isinstance(spec.malloc_overhead, bool):
        raise MmreplayError(f"malloc_overhead = {spec.malloc_overhead!r}: expected true or false")
    live = None if spec.live is None else _want_int("live", spec.live, 1, MAX_COUNT)
    live_bytes = None if spec.live_bytes is None else _want_size("live_bytes", spec.live_bytes)
    lifetime = _check_lifetime(spec.lifetime)
    keep = _want_int("keep_at_end", spec.keep_at_end, 0, MAX_COUNT)
    threads = _want_int("threads", spec.threads, 1, MAX_THREADS)
    if not isinstance(spec.madvise, str):
        raise MmreplayError(f"madvise = {spec.madvise!r}: expected a string such as 'hugepage'")
    madvise = format_madvise(parse_madvise(spec.madvise))
    guard = spec.guard_pages
    if isinstance(guard, bool) or not isinstance(guard, (int, float)) or not 0 <= guard <= 1:
        raise MmreplayError(f"guard_pages = {guard!r}: expected a fraction 0..1")
    brk_calls = _want_int("brk_calls", spec.brk_calls, 0, MAX_COUNT)
    brk_step = _want_size("brk_step", spec.brk_step)
    seed = _want_int("seed", spec.seed, 0, SEED_LIMIT - 1)
    if spec.level not in LEVELS:
        raise MmreplayError(f"level = {spec.level!r}: expected {' or '.join(LEVELS)}")
    if spec.level == "malloc":
        for key, value, default in (("madvise", madvise, "none"), ("guard_pages", guard, 0),
                                    ("brk_calls", brk_calls, 0)):
            if value != default:
                raise MmreplayError(f"{key} = {value!r}: the malloc level has only malloc and "
                                    "free calls (the allocator replayed decides the mm calls)")
    return Spec(count=count, size=size, level=spec.level,
                malloc_overhead=spec.malloc_overhead, live=live,
                live_bytes=live_bytes, lifetime=lifetime, keep_at_end=keep, threads=threads,
                madvise=madvise, guard_pages=float(guard), brk_calls=brk_calls, brk_step=brk_step,
                seed=seed)


def _check_lifetime(text) -> str:
    if not isinstance(text, str):
        raise MmreplayError(f"lifetime = {text!r}: expected fifo, lifo, random or exp:MEAN")
    kind, colon, mean_text = text.strip().lower().partition(":")
    if kind not in LIFETIMES or (kind == "exp") != bool(colon):
        raise MmreplayError(f"lifetime {text!r}: expected fifo, lifo, random or exp:MEAN "
                            "(MEAN = mean lifetime in later mmaps)")
    if kind != "exp":
        return kind
    try:
        mean = float(mean_text)
    except ValueError:
        raise MmreplayError(f"lifetime {text!r}: MEAN {mean_text!r} is not a number") from None
    if not (mean > 0 and math.isfinite(mean)):
        raise MmreplayError(f"lifetime {text!r}: MEAN must be a positive number of mmaps")
    return f"exp:{_fmt_rate(mean)}"


def spec_from_dict(data: dict, where: str = "spec", base: Spec | None = None,
                   base_dir: str | os.PathLike | None = None) -> Spec:
    """A validated Spec from a dict (a parsed TOML file); unknown keys are an error."""
    if not isinstance(data, dict):
        raise MmreplayError(f"{where}: expected a table of keys")
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise MmreplayError(f"{where}: unknown key {unknown[0]!r} (known keys: {', '.join(KEYS)})")
    try:
        spec = dataclasses.replace(base or Spec(), **data)
        return validate_spec(spec, base_dir)
    except MmreplayError as exc:
        raise MmreplayError(f"{where}: {exc}") from None


def read_spec(path: str | os.PathLike, base: Spec | None = None) -> Spec:
    """Read a TOML spec file. Relative ``empirical:`` paths are taken from the file's folder."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MmreplayError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise MmreplayError(f"{path}: is a folder, expected a TOML spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MmreplayError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise MmreplayError(f"{path}: not valid TOML ({exc})") from None
    nested = [key for key, value in data.items() if isinstance(value, dict)]
    if nested:
        raise MmreplayError(f"{path}: unknown table [{nested[0]}] (a spec is flat key = value lines)")
    return spec_from_dict(data, str(path), base, path.parent)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if len(text) > 76 and re.fullmatch(r"[A-Za-z0-9:,.@]+", text):
        # A TOML multi-line string whose line-ending backslashes join the lines back together.
        lines, line = [], ""
        for token in re.split(r"(?<=[,:@])", text):
            if line and len(line) + len(token) > 76:
                lines.append(line)
                line = ""
            line += token
        lines.append(line)
        return '"""\\\n    ' + "\\\n    ".join(lines) + '"""'
    return json.dumps(text)  # JSON string escapes are valid TOML basic-string escapes


def spec_to_toml(spec: Spec, comments: list[str] | tuple = ()) -> str:
    """The spec as a TOML file (plain text; tomllib reads it back to the same spec)."""
    lines = [f"# {c}" if c else "#" for c in comments]
    width = max(len(k) for k in KEYS)
    for key, value in spec.to_dict().items():
        lines.append(f"{key:<{width}} = {_toml_value(value)}  # {KEY_HELP[key]}"
                     if not isinstance(value, str) or len(str(value)) <= 76
                     else f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def spec_to_args(spec: Spec) -> list[str]:
    """The ``mmreplay synth`` options that give exactly this spec, every key spelled out."""
    args = []
    for key, value in spec.to_dict().items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            args += [flag, _fmt_rate(value) if isinstance(value, float) else str(value)]
    return args


def regenerate_command(spec: Spec, output: str) -> str:
    return shlex.join(["mmreplay", "synth", *spec_to_args(spec), "-o", str(output)])
