"""The options of one replay configuration, parsed and checked once."""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass

from traces import MmreplayError
from traces.text import escape

from replay.engine.policy import POLICIES

THP_MODES = ("as-recorded", "always", "never")
TOUCH_MODES = ("none", "first", "pages", "full")
FILE_MODES = ("anon", "skip")
ACCESS_KINDS = ("none", "stream", "random", "lockstep")
ORDER_MODES = ("deps", "strict")
# More OS threads than this measure the scheduler, not mm: recorded threads beyond it share them
# (round-robin by first appearance), and --threads N above it is refused.
MAX_OS_THREADS = 64
# Passes (stream, lockstep) or reads per MiB (random): past this a replay would run for years.
MAX_ACCESS_AMOUNT = 1_000_000

# engine codes
TOUCH_CODE = {name: code for code, name in enumerate(TOUCH_MODES)}
ACCESS_CODE = {name: code for code, name in enumerate(ACCESS_KINDS)}


@dataclass(frozen=True)
class Access:
    kind: str = "none"
    amount: int = 0   # passes (stream, lockstep) or reads per MiB (random)

    @classmethod
    def parse(cls, text: str) -> "Access":
        text = (text or "none").strip()
        if text == "none":
            return cls()
        match = re.fullmatch(r"(stream|random|lockstep):(\d{1,12})", text)
        if not match or not 1 <= int(match.group(2)) <= MAX_ACCESS_AMOUNT:
            raise MmreplayError(f"bad --access {escape(text, 40)} (expected none, stream:N, "
                                f"random:K or lockstep:N with N, K from 1 to {MAX_ACCESS_AMOUNT})")
        return cls(match.group(1), int(match.group(2)))

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.amount}"


CHOICES = {"policy": POLICIES, "thp": THP_MODES, "touch": TOUCH_MODES, "files": FILE_MODES,
           "order": ORDER_MODES}


def check_choice(value: str, allowed, option: str) -> None:
    """One line for a value that is not one of ``allowed``, naming the option as typed and the
    nearest allowed value."""
    if value in allowed:
        return
    near = difflib.get_close_matches(value, allowed, n=1)
    raise MmreplayError(f"bad {option} value '{escape(value, 40)}'" + (f": did you mean {near[0]}?" if near
                                                           else "")
                        + f" (expected one of {', '.join(allowed)})")


@dataclass(frozen=True)
class ReplayConfig:
    policy: str = "kernel"
    thp: str = "as-recorded"
    touch: str = "pages"
    access: Access = Access()
    files: str = "anon"
    threads: str = "1"        # "recorded", "1" or a count
    order: str = "deps"
    collapse: str = "none"    # none, madvise or khugepaged:SECONDS (replay/measure/collapse.py)

    def __post_init__(self):
        for name in ("policy", "thp", "touch", "files", "order"):
            check_choice(getattr(self, name), CHOICES[name], f"--{name}")
        from replay.measure.collapse import parse_collapse
        parse_collapse(self.collapse)
        if self.threads != "recorded" and not (
                str(self.threads).isdigit() and 1 <= int(self.threads) <= MAX_OS_THREADS):
            raise MmreplayError(f"bad --threads {escape(str(self.threads)[:40])} (expected recorded "
                                f"or a count from 1 to {MAX_OS_THREADS})")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["access"] = str(self.access)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ReplayConfig":
        """The inverse of ``as_dict`` (a VM guest receives its configuration this way)."""
        return cls(**{**data, "access": Access.parse(data.get("access", "none"))})

    def label(self, fields=("policy", "thp", "touch", "access", "files", "threads", "collapse")) -> str:
        data = self.as_dict()
        return " ".join(f"{name}={data[name]}" for name in fields)
