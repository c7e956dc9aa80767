"""Set a replay up: read the trace, take its recommended settings, check the memory budget and
compile it for one configuration (``Prepared``, ``prepare``). ``execute.py`` runs the items."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import pyarrow.compute as pc

from traces import MmreplayError, read_trace, trace_metadata
from traces.bundled import default_trace
from traces.host import meminfo_bytes

from replay.engine.compile import compile_trace
from replay.running.config import Access, ReplayConfig
from replay.measure.probes import probe_kernel_alignment
from replay.results.result import trace_identity


def pc_max(column) -> int:
    return int(pc.max(column).as_py())


def pc_min(column) -> int:
    return int(pc.min(column).as_py())


def default_budget_bytes() -> int:
    """Half of MemAvailable: the most live memory a replay may keep mapped by default."""
    available = meminfo_bytes("MemAvailable")
    return (available or 1 << 30) // 2


def resolve_trace(path: str | None) -> Path:
    return Path(path) if path else default_trace()


# Options a trace's metadata may recommend (``replay_settings``, e.g. from a synth preset).
TRACE_SETTINGS = ("touch", "thp", "access", "files")


def recommended_settings(path, table, config: ReplayConfig,
                         given: frozenset | None) -> tuple[ReplayConfig, dict, str]:
    """``config`` with the trace's recommended replay settings for the options not ``given``
    on the command line (None: everything was given, as for library callers).

    Returns (config, the settings taken from the trace, why the trace recommends them)."""
    if given is None:
        return config, {}, ""
    meta = trace_metadata(table)
    wanted = meta.get("replay_settings")
    if not isinstance(wanted, dict):
        return config, {}, ""
    taken = {}
    for key, value in wanted.items():
        if key in TRACE_SETTINGS and key not in given:
            taken[key] = Access.parse(str(value)) if key == "access" else str(value)
    try:
        config = replace(config, **taken)
    except MmreplayError as exc:
        raise MmreplayError(f"{path}: the trace recommends a setting that is not valid ({exc})"
                            ) from None
    why = meta.get("replay_settings_why")
    return config, {k: str(v) for k, v in taken.items()}, str(why) if why else ""


class Prepared:
    """A trace read, checked against the budget and compiled for one configuration.

    ``given``: the options given on the command line; the trace's recommended settings fill
    in the others (None: use ``config`` as it is)."""

    def __init__(self, trace_path, config: ReplayConfig, max_live_bytes: int | None = None,
                 table=None, stop_event: int | None = None, pick: int | None = None,
                 given: frozenset | None = None):
        self.path = resolve_trace(trace_path)
        self.table = table if table is not None else read_trace(self.path, pick)
        config, self.from_trace, self.from_trace_why = recommended_settings(
            self.path, self.table, config, given)
        self.config = config
        self.max_live_bytes = max_live_bytes if max_live_bytes is not None else default_budget_bytes()
        self.alignment = probe_kernel_alignment()
        try:
            self.program = compile_trace(self.table, config, self.max_live_bytes, stop_event)
        except MmreplayError as exc:
            raise MmreplayError(f"{self.path}: {exc}") from None
        self.identity = trace_identity(self.path, self.table, pick)
        self.plan = None
        if config.threads != "1":
            if config.access.kind == "lockstep":
                raise MmreplayError("--access lockstep sweeps all live mappings between chunks and "
                                    "needs --threads 1")
            from replay.engine.threads import plan_threads
            self.plan = plan_threads(self.program, self.table, config.threads, config.order)
        ts = self.table.column("ts_ns")
        self.recorded_duration_ns = (pc_max(ts) - pc_min(ts)) if self.table.num_rows else 0

    def program_info(self) -> dict:
        p = self.program
        return {"ops": p.ops, "mappings": p.ids, "events": p.events,
                "program_bytes": p.nbytes(),
                "bytes_per_event": p.nbytes() / p.events if p.events else None,
                "peak_live_bytes": p.peak_live_bytes, "skipped": p.skipped,
                "replayed_differently": p.notes}

    def config_info(self, repeat: int, copies: list[int] | None = None) -> dict:
        """``copies``: the counts of --copies; the runs are those of the largest."""
        info = self.config.as_dict()
        info.update(repeat=repeat, max_live_bytes=self.max_live_bytes)
        if copies:
            info["copies"] = max(copies)
        if self.from_trace:
            info["from_trace"] = self.from_trace
            info["from_trace_why"] = self.from_trace_why
        if self.plan is not None:
            info["os_threads"] = self.plan.threads
        return info

    def extra_info(self) -> dict:
        return {"kernel_alignment": self.alignment.as_dict(),
                "policy_emulation": self.alignment.emulation(self.config.policy)}


def prepare(trace_path, configs: list[ReplayConfig], max_live_bytes: int | None = None,
            pick: int | None = None, given: frozenset | None = None,
            stop_event: int | None = None, copies: list[int] | None = None,
            check: Callable[[Path, object], None] | None = None) -> list[Prepared]:
    """The trace read once and prepared for each configuration (see ``Prepared``); with
    ``copies`` (the counts of --copies) the memory budget is checked for all copies at once.
    ``check(path, table)`` may refuse the trace before anything is compiled (layout's --at).
    ``execute.run_prepared`` runs the items; ``layout.capture_layout`` captures one."""
    path = resolve_trace(trace_path)
    table = read_trace(path, pick)
    if check is not None:
        check(path, table)
    items = [Prepared(path, config, max_live_bytes, table=table, stop_event=stop_event,
                      pick=pick, given=given) for config in configs]
    if copies:
        from replay.running.copies import check_budget

        check_budget(items, copies)
    return items
