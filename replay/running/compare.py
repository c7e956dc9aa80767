"""Replay one trace under several configurations, interleaved, and keep one result per config.

Runs alternate A B C A B C ... so that drift of the machine (other load, THP compaction, page
cache) hits every configuration alike.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from traces import MmreplayError

from replay.running.config import CHOICES, Access, ReplayConfig, check_choice
from replay.running.execute import run_prepared
from replay.results.result_types import OMITTED, CompareDocument
from replay.running.runs import prepare

AXES = ("policy", "thp", "touch", "access", "files", "threads", "collapse")
COMPARE_VERSION = 1
# The option that gives each axis on the command line (policy is plural: it usually varies).
OPTION = {"policy": "--policies", "thp": "--thp", "touch": "--touch", "access": "--access",
          "files": "--files", "threads": "--threads"}
# Without --policies: these two when nothing else varies, else the first alone.
DEFAULT_POLICIES = "kernel,align-ge-pmd"


def split_axis(values: dict) -> tuple[str | None, list[str], dict]:
    """From {option: 'a,b' or 'a'} find the one option given several values.

    Returns (axis, its values, the fixed options). More than one varying option is an error:
    the table compares one thing at a time.
    """
    lists = {name: [v.strip() for v in str(value).split(",") if v.strip()]
             for name, value in values.items() if value is not None}
    for name, items in lists.items():
        if not items:
            raise MmreplayError(f"{OPTION.get(name, '--' + name)} needs at least one value")
    if values.get("policy", "") is None:  # not given: see DEFAULT_POLICIES
        others_vary = any(len(items) > 1 for items in lists.values())
        lists["policy"] = DEFAULT_POLICIES.split(",")[: 1 if others_vary else None]
    varying = [name for name, items in lists.items() if len(items) > 1]
    if len(varying) > 1:
        raise MmreplayError("compare varies one option at a time; several values were given for "
                            + " and ".join(OPTION.get(name, f"--{name}") for name in varying))
    fixed = {name: items[0] for name, items in lists.items()}
    if not varying:
        return None, [], fixed
    axis = varying[0]
    if len(set(lists[axis])) != len(lists[axis]):
        raise MmreplayError(f"{OPTION.get(axis, '--' + axis)}: the same value is listed twice")
    return axis, lists[axis], fixed


def configurations(values: dict) -> tuple[str, list[ReplayConfig]]:
    axis, choices, fixed = split_axis(values)
    for name in ("policy", "thp", "touch", "files"):
        for value in choices if axis == name else [fixed[name]]:
            check_choice(value, CHOICES[name], OPTION[name])
    base = ReplayConfig(policy=fixed["policy"], thp=fixed["thp"], touch=fixed["touch"],
                        access=Access.parse(fixed["access"]), files=fixed["files"],
                        threads=fixed.get("threads", "1"), collapse=fixed.get("collapse", "none"))
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
                  perf_faults: bool = False, pick: int | None = None,
                  kernels: list | None = None, vm_options=None, notify=None,
                  copies: list[int] | None = None) -> dict:
    """Run every configuration ``repeat`` times, interleaved, after ``warmup`` uncounted rounds
    (the first touches of fresh memory cost more on a VM); return the compare document.

    ``copies`` (copy counts, see copies.py) runs each configuration in that many processes at
    once; each result's runs are then the sums over the largest count's copies.

    ``kernels``: "host" or ``vm.image.KernelImage`` entries. One image runs every configuration
    in that kernel (one guest); two or more entries are the compared axis, one column each (the
    host natively, each image in a guest of its own running all of that column's runs)."""
    if repeat < 1 or warmup < 0:
        raise MmreplayError("--repeat must be at least 1 and --warmup at least 0")
    kernels = list(kernels or [])
    if len(kernels) > 1:
        return _compare_kernels(trace_path, values, repeat, max_live_bytes, progress, argv,
                                warmup, perf_faults, kernels, vm_options, notify, pick, copies)
    axis, configs = configurations(values)
    prepared = prepare(trace_path, configs, max_live_bytes, pick, copies=copies)
    position = run_position(len(configs), warmup + repeat, copies)
    on_run = None
    if progress is not None:
        def on_run(index, round_index, n):
            progress(*position(index, round_index, n))
    results, interrupted = run_prepared(
        prepared, repeat, warmup, argv, {"interleaved": True, "warmup": warmup},
        kernels[0] if kernels and kernels[0] != "host" else None, vm_options, perf_faults,
        copies, on_run=on_run, notify=notify)
    values_list = [str(getattr(c, axis)) for c in configs]
    return CompareDocument(mmreplay_compare=COMPARE_VERSION, axis=axis, values=values_list,
                           labels=values_list[: len(results)], repeat=repeat, warmup=warmup,
                           interleaved=True, interrupted=interrupted, results=results, failed=[],
                           copies=copies or OMITTED).as_dict()


def run_position(items: int, rounds: int, copies: list[int] | None):
    """(runs done, runs in all) after item ``index`` of round ``round_index`` ran with ``n``
    copies: the progress of compare, one step per configuration (and copy count) and round."""
    counts = list(copies or [None])

    def position(index: int, round_index: int, n=None) -> tuple[int, int]:
        per_round = items * len(counts)
        return (round_index * per_round + counts.index(n) * items + index + 1,
                rounds * per_round)

    return position


def kernel_labels(kernels: list) -> list[str]:
    """Column names: 'host', then each image's release ('6.1.0-50-amd64'), or what the user
    wrote when two images share a release."""
    releases = [k if k == "host" else k.release for k in kernels]
    return [label if releases.count(label) == 1 or kernel == "host" else kernel.given
            for label, kernel in zip(releases, kernels)]


def _compare_kernels(trace_path, values, repeat, max_live_bytes, progress, argv, warmup,
                     perf_faults, kernels, vm_options, notify, pick=None, copies=None) -> dict:
    """--kernels host,IMAGE,...: one configuration, one column per kernel. A column whose guest
    fails is listed with its reason; the others are kept."""
    from replay.vm.runner import VmInterrupted

    if values.get("policy") is None:
        values = {**values, "policy": "kernel"}  # not DEFAULT_POLICIES: kernels are the axis
    axis, choices, fixed = split_axis(values)
    if axis is not None:
        raise MmreplayError(f"compare varies one option at a time; several values were given "
                            f"for --kernels and {OPTION[axis]}")
    config = ReplayConfig(policy=fixed["policy"], thp=fixed["thp"], touch=fixed["touch"],
                          access=Access.parse(fixed["access"]), files=fixed["files"],
                          threads=fixed.get("threads", "1"))
    [prepared] = prepare(trace_path, [config], max_live_bytes, pick, copies=copies)
    labels = kernel_labels(kernels)
    rounds = warmup + repeat
    position = run_position(1, rounds, copies)
    per_column = rounds * len(copies or [None])
    total = per_column * len(kernels)
    extra = {"interleaved": False, "warmup": warmup}
    results, shown, failed, interrupted = [], [], [], None
    for column, (label, kernel) in enumerate(zip(labels, kernels)):
        def on_run(_item, round_index, n, column=column):
            if progress is not None:
                progress(column * per_column + position(0, round_index, n)[0], total)

        try:
            column_results, interrupted = run_prepared(
                [prepared], repeat, warmup, argv, extra, None if kernel == "host" else kernel,
                vm_options, perf_faults, copies, on_run=on_run, notify=notify)
        except VmInterrupted as exc:
            failed.append({"value": label, "reason": str(exc)})
            interrupted = exc.reason
            break
        except MmreplayError as exc:  # this kernel's column only: the others are kept
            if kernel == "host":
                raise
            failed.append({"value": label, "reason": " ".join(str(exc).split())})
            continue
        results += column_results
        shown += [label] * len(column_results)
        if interrupted:
            break
    return CompareDocument(mmreplay_compare=COMPARE_VERSION, axis="kernel", values=labels,
                           labels=shown, repeat=repeat, warmup=warmup, interleaved=False,
                           interrupted=interrupted, results=results, failed=failed,
                           copies=copies or OMITTED).as_dict()


def require_results(document: dict) -> None:
    """Refuse a compare document in which no column has a result (each failure named)."""
    if not document["results"]:
        raise MmreplayError("no column has a result: " + "; ".join(
            f"{f['value']}: {f['reason']}" for f in document["failed"]))
