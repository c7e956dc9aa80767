"""The options of one replay configuration, parsed and checked once."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from traces import MmreplayError

from .policy import POLICIES

THP_MODES = ("as-recorded", "always", "never")
TOUCH_MODES = ("none", "first", "pages", "full")
FILE_MODES = ("anon", "skip")
ACCESS_KINDS = ("none", "stream", "random", "lockstep")
ORDER_MODES = ("deps", "strict")

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
        match = re.fullmatch(r"(stream|random|lockstep):(\d+)", text)
        if not match or int(match.group(2)) < 1:
            raise MmreplayError(f"bad --access {text!r} (expected none, stream:N, random:K or "
                                "lockstep:N with N, K >= 1)")
        return cls(match.group(1), int(match.group(2)))

    def __str__(self) -> str:
        return "none" if self.kind == "none" else f"{self.kind}:{self.amount}"


@dataclass(frozen=True)
class ReplayConfig:
    policy: str = "kernel"
    thp: str = "as-recorded"
    touch: str = "pages"
    access: Access = Access()
    files: str = "anon"
    threads: str = "1"        # "recorded", "1" or a count
    order: str = "deps"

    def __post_init__(self):
        for value, allowed, option in ((self.policy, POLICIES, "--policy"),
                                       (self.thp, THP_MODES, "--thp"),
                                       (self.touch, TOUCH_MODES, "--touch"),
                                       (self.files, FILE_MODES, "--files"),
                                       (self.order, ORDER_MODES, "--order")):
            if value not in allowed:
                raise MmreplayError(f"bad {option} {value!r} (expected one of {', '.join(allowed)})")
        if self.threads != "recorded" and not (str(self.threads).isdigit() and int(self.threads) >= 1):
            raise MmreplayError(f"bad --threads {self.threads!r} (expected recorded or a count >= 1)")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["access"] = str(self.access)
        return data

    def label(self, fields=("policy", "thp", "touch", "access", "files", "threads")) -> str:
        data = self.as_dict()
        return " ".join(f"{name}={data[name]}" for name in fields)
