"""Replay one trace under several configurations, interleaved, and keep one result per config.

Runs alternate A B C A B C ... so that drift of the machine (other load, THP compaction, page
cache) hits every configuration alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from traces import MmreplayError, read_trace

from .config import Access, ReplayConfig
from .result import build_result
from .runs import Prepared, resolve_trace
from .session import Interrupt, catch_signals, run_program

AXES = ("policy", "thp", "touch", "access", "files", "threads")
COMPARE_VERSION = 1


def split_axis(values: dict) -> tuple[str | None, list[str], dict]:
    """From {option: 'a,b' or 'a'} find the one option given several values.

    Returns (axis, its values, the fixed options). More than one varying option is an error:
    the table compares one thing at a time.
    """
    lists = {name: [v.strip() for v in str(value).split(",") if v.strip()]
             for name, value in values.items()}
    for name, items in lists.items():
        if not items:
            raise MmreplayError(f"--{name} needs at least one value")
    varying = [name for name, items in lists.items() if len(items) > 1]
    if len(varying) > 1:
        raise MmreplayError("compare varies one option at a time; several values were given for "
                            + " and ".join(f"--{name}" for name in varying))
    fixed = {name: items[0] for name, items in lists.items()}
    if not varying:
        return None, [], fixed
    axis = varying[0]
    if len(set(lists[axis])) != len(lists[axis]):
        raise MmreplayError(f"--{axis}: the same value is listed twice")
    return axis, lists[axis], fixed


def configurations(values: dict) -> tuple[str, list[ReplayConfig]]:
    axis, choices, fixed = split_axis(values)
    base = ReplayConfig(policy=fixed["policy"], thp=fixed["thp"], touch=fixed["touch"],
                        access=Access.parse(fixed["access"]), files=fixed["files"],
                        threads=fixed.get("threads", "1"))
    if axis is None:
        raise MmreplayError("nothing to compare: give two or more values to one option, e.g. "
                            "--policies kernel,align-ge-pmd")
    configs = []
    for choice in choices:
        value = Access.parse(choice) if axis == "access" else choice
        configs.append(replace(base, **{axis: value}))
    return axis, configs


def compare_trace(trace_path: str | None, values: dict, repeat: int = 5,
                  max_live_bytes: int | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  argv: list[str] | None = None, warmup: int = 1,
                  perf_faults: bool = False, pick: int | None = None) -> dict:
    """Run every configuration ``repeat`` times, interleaved, after ``warmup`` uncounted rounds
    (the first touches of fresh memory cost more on a VM); return the compare document."""
    if repeat < 1 or warmup < 0:
        raise MmreplayError("--repeat must be at least 1 and --warmup at least 0")
    axis, configs = configurations(values)
    path = resolve_trace(trace_path)
    table = read_trace(path, pick)
    prepared = [Prepared(path, config, max_live_bytes, table=table, pick=pick)
                for config in configs]
    runs: list[list] = [[] for _ in configs]
    interrupt = Interrupt()
    total = (warmup + repeat) * len(configs)
    with catch_signals(interrupt):
        for round_index in range(warmup + repeat):
            this_round = []
            for index, item in enumerate(prepared):
                run = run_program(item.program, item.config, item.alignment, interrupt,
                                  item.max_live_bytes, plan=item.plan,
                                  recorded_duration_ns=item.recorded_duration_ns,
                                  perf_faults=perf_faults)
                this_round.append(run)
                if round_index >= warmup:
                    runs[index].append(run)
                if progress is not None:
                    progress(round_index * len(configs) + index + 1, total)
                if interrupt:
                    break
            if interrupt:
                if round_index < warmup:
                    # Stopped while warming up: keep this round's runs (marked), so the partial
                    # document has results, for the first configurations in order.
                    for index, run in enumerate(this_round):
                        runs[index].append({**run, "warmup": True})
                break
    results = [build_result(item.identity, item.config_info(repeat), item_runs,
                            item.program_info(), {**item.extra_info(), "interleaved": True, "warmup": warmup}, argv)
               for item, item_runs in zip(prepared, runs) if item_runs]
    return {"mmreplay_compare": COMPARE_VERSION, "axis": axis,
            "values": [str(getattr(c, axis)) for c in configs], "repeat": repeat,
            "warmup": warmup,
            "interleaved": True, "interrupted": interrupt.reason, "results": results}
